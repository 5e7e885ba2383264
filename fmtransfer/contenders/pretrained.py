"""Unsupervised pretraining (ch. 11.2.2): model B built on an encoder trained without labels.

Each method is one contender: how it pretrains (`pretrain`), then the same two phases as
transfer from A on the encoder it made. The encoder has model A's shape (its hidden stack and
an Identity where A has its output), so everything that builds on A builds on it.
"""

from __future__ import annotations

from fmtransfer.contenders.base import register
from fmtransfer.contenders.transfer import TransferFromA


class PretrainedEncoder(TransferFromA):
    """Base of the pretraining contenders: needs `encoder:NAME`, made by `pretrain`."""

    sections = ("pretrain", "transfer")

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        cls.needs = (f"encoder:{cls.name}",)
        cls.artifact = cls.source = cls.name

    def pretrain(self, cfg, x, x_valid, reporter):
        """Train on unlabelled images `x`; return (autoencoder, encoder, steps)."""
        raise NotImplementedError


@register
class Autoencoder(PretrainedEncoder):
    name = "autoencoder"
    title = "autoencoder-pretrained"
    description = "B on the encoder of a stacked autoencoder trained whole on unlabelled images."

    def pretrain(self, cfg, x, x_valid, reporter):
        from fmtransfer import pretraining

        return pretraining.train(cfg, x, x_valid, reporter, greedy=False)


@register
class Greedy(PretrainedEncoder):
    name = "greedy"
    title = "greedy-pretrained"
    description = "B on an autoencoder's encoder trained greedily, one hidden layer at a time, lower ones frozen."

    def pretrain(self, cfg, x, x_valid, reporter):
        from fmtransfer import pretraining

        return pretraining.train(cfg, x, x_valid, reporter, greedy=True)
