"""Unsupervised pretraining (ch. 11.2.2): model B built on an encoder trained without labels.

Each method is one contender: how it pretrains (`pretrain`), then the same two phases as
transfer from A on the encoder it made. The encoder has model A's shape (its hidden stack and
an Identity where A has its output), so everything that builds on A builds on it.
"""

from __future__ import annotations

from dataclasses import dataclass

from fmtransfer.config import RATE, SOME_EPOCHS, Section, setting
from fmtransfer.contenders.base import register
from fmtransfer.contenders.transfer import TransferFromA
from fmtransfer.needs import Encoder


class PretrainedEncoder(TransferFromA):
    """Base of the pretraining contenders: needs `encoder:NAME`, made by its `pretrain`.

    Besides the encoder, pretraining makes a companion model worth keeping (the autoencoder, a
    GAN's generator), saved as COMPANION_NAME.keras, and a picture, PICTURE_NAME.png.
    """

    sections = ("pretrain", "transfer")
    companion = "autoencoder"
    picture = "reconstructions"

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if "name" in cls.__dict__:
            cls.needs = (Encoder(cls.name),)
            cls.artifact = cls.source = cls.name

    def fixed_sections(self) -> tuple[str, ...]:
        return ("pretrain", *self.own_sections())

    def pretrain(self, cfg, x, x_valid, reporter):
        """Train on unlabelled images `x` (validation loss on `x_valid`); return (companion,
        encoder, steps), the encoder shaped like model A, each step {"name", "trains", "history"}."""
        raise NotImplementedError

    def scores(self, companion, x_test, x_valid) -> dict[str, float | None]:
        """Held-out scores of what pretraining made; the autoencoders' is their reconstruction loss."""
        from fmtransfer import training

        test = training.evaluate(companion, x_test, x_test, task=training.RECONSTRUCTION)
        valid = training.evaluate(companion, x_valid, x_valid, task=training.RECONSTRUCTION) if len(x_valid) else {}
        return {"reconstruction_loss": test["loss"], "valid_reconstruction_loss": valid.get("loss")}

    def draw(self, made, path, title: str) -> None:
        """The picture: one test image per class above its reconstruction (needs matplotlib)."""
        from fmtransfer import pretraining, training

        images, classes = pretraining.one_per_class(made.test_images, made.test_labels)
        loss = made.scores.get("reconstruction_loss")
        pretraining.plot_reconstructions(images, training.predict(made.companion, images), classes, path,
                                         f"{title}: test reconstruction loss {loss:.4f}")


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
    order = 60


@register
class Greedy(StackedAutoencoder):
    name = "greedy"
    title = "greedy-pretrained"
    description = "B on an autoencoder's encoder trained greedily, one hidden layer at a time, lower ones frozen."
    sections = ("pretrain", "greedy", "transfer")  # pretrain: unlabelled_size
    order = 70
    greedy = True

    @dataclass(frozen=True)
    class Settings(Section):
        """Greedy layer-wise pretraining (ch. 11.2.2) of the stacked autoencoder: one step per hidden
        layer, each training only the newest encoder/decoder pair to reconstruct the pixels."""

        NAME = "greedy"
        # A step runs through every frozen pair below the new one, so it costs more than an epoch of
        # the whole autoencoder: 5 epochs per step keep the five steps under 3x model A's 20 epochs,
        # 10 did not (docs/pretrain.md).
        epochs: int = setting(5, "Greedy pretraining epochs per step (one step per hidden layer).", bounds=SOME_EPOCHS)
        learning_rate: float = setting(0.1, "Greedy pretraining SGD learning rate.", bounds=RATE)
