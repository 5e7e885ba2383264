"""Unsupervised pretraining (ch. 11.2.2): model B built on an encoder trained without labels.

Each method is one contender: how it pretrains (`pretrain`), then the same two phases as
transfer from A on the encoder it made. The encoder has model A's shape (its hidden stack and
an Identity where A has its output), so everything that builds on A builds on it.
"""

from __future__ import annotations

from fmtransfer.contenders.base import register
from fmtransfer.contenders.transfer import TransferFromA


class PretrainedEncoder(TransferFromA):
    """Base of the pretraining contenders: needs `encoder:NAME`, made by its `pretrain`."""

    sections = ("pretrain", "transfer")

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if "name" in cls.__dict__:
            cls.needs = (f"encoder:{cls.name}",)
            cls.artifact = cls.source = cls.name

    def pretrain(self, cfg, x, x_valid, reporter):
        """Train on unlabelled images `x` (validation loss on `x_valid`); return (autoencoder,
        encoder, steps), the encoder shaped like model A."""
        raise NotImplementedError


class StackedAutoencoder(PretrainedEncoder):
    """The encoder of a stacked autoencoder whose encoder is model A's hidden stack."""

    greedy = False

    def pretrain(self, cfg, x, x_valid, reporter):
        from fmtransfer import pretraining

        return pretraining.train(cfg, x, x_valid, reporter, greedy=self.greedy)


@register
class Autoencoder(StackedAutoencoder):
    name = "autoencoder"
    title = "autoencoder-pretrained"
    description = "B on the encoder of a stacked autoencoder trained whole on unlabelled images."


@register
class Greedy(StackedAutoencoder):
    name = "greedy"
    title = "greedy-pretrained"
    description = "B on an autoencoder's encoder trained greedily, one hidden layer at a time, lower ones frozen."
    greedy = True
