"""BSS, batch spectral shrinkage (Chen et al., NeurIPS 2019): the book's two phases, with the k
smallest singular values of each batch's feature matrix penalised.

Fine-tuning on few images transfers the pretrained features' small spectral components too, the
ones least useful to the new task and most likely to carry task A's specifics. BSS adds
eta * sum_{i=1..k} sigma_{-i}^2 to every batch's loss, where sigma_{-1} <= sigma_{-2} <= ... are
the smallest singular values of the batch's features F (batch x width): the input of the new
head's output layer.
"""

from __future__ import annotations

from dataclasses import dataclass

from fmtransfer.config import MAX_UNITS, Bounds, Section, reuse_count, setting
from fmtransfer.contenders.base import register
from fmtransfer.contenders.transfer import TransferFromA
from fmtransfer.errors import ConfigError
from fmtransfer.space import IntRange, LogUniform, capped


@register
class Bss(TransferFromA):
    name = "bss"
    title = "BSS"
    description = ("The book's two phases with eta * (sum of the k smallest squared singular values of each "
                   "batch's features) added to its loss (Chen et al. 2019).")
    artifact = "bss"
    order = 54  # after reinit, with the other fine-tuning strategies; the pretraining ones follow
    strengths = ("bss.eta",)

    @dataclass(frozen=True)
    class Settings(Section):
        """BSS, batch spectral shrinkage (Chen et al., NeurIPS 2019): shrink the batch features' smallest
        singular values."""

        NAME = "bss"
        # The paper's defaults: eta 0.001 and k 1, which it finds enough across its tasks. Eta two
        # decades either side; k up to 4 of the 32 singular values of a batch (the paper finds
        # more than a few shrinks useful components too). A trial never draws k above the batch
        # or the features' width (`space`).
        eta: float = setting(1e-3, "Strength eta of eta * sum of the k smallest squared singular values of a "
                                   "batch's features.", bounds=Bounds(0), space=LogUniform(1e-5, 1e-1))
        k: int = setting(1, "How many of the smallest singular values are shrunk (at most the batch size and the "
                            "features' width).", bounds=Bounds(1, MAX_UNITS, why=" singular values"),
                         space=IntRange(1, 4))

    def space(self, cfg):
        """Its space, with k drawn no larger than a batch or the features' width."""
        most = min(cfg.batch_size, feature_width(cfg.model, reuse_count(cfg.transfer.reuse_layers, cfg.model.blocks)))
        return capped(super().space(cfg), "bss.k", most)

    def check_settings(self, cfg):
        reused = reuse_count(cfg.transfer.reuse_layers, cfg.model.blocks)
        _check_k(cfg.bss.k, cfg.batch_size, feature_width(cfg.model, reused))

    def feature_penalty(self, cfg, model, reused):
        # Here too, on the model itself: a study's reuse depths are its grid's, and model A may be a file.
        _check_k(cfg.bss.k, cfg.batch_size, int(model.layers[-1].kernel.shape[0]))
        return shrinkage(cfg.bss.eta, cfg.bss.k)


def shrinkage(eta: float, k: int):
    """features (batch x width) -> eta * the sum of its k smallest squared singular values; a
    batch with fewer than k (the last, short one) has all of its own shrunk."""
    from fmtransfer.training import tf

    def penalty(features):
        # TensorFlow's SVD has no gradient for a batch of unknown size (the step's, whose last
        # batch is short), so the SVD is held constant and sigma_i is taken as u_i^T F v_i: the
        # same value, and the same gradient, 2 sigma_i u_i v_i^T, as differentiating the SVD.
        _, u, v = tf.linalg.svd(tf.stop_gradient(features), full_matrices=False)  # largest first
        sigma = tf.reduce_sum(u[:, -k:] * tf.matmul(features, v[:, -k:]), axis=0)
        return eta * tf.reduce_sum(tf.square(sigma))

    return penalty


def feature_width(model, reused: int) -> int:
    """How many features the head takes on the top of `reused` blocks of a network of `model`
    (ModelConfig): a dense layer's units, or a conv block's filters on its pooled map."""
    if model.arch == "dense":
        return model.hidden[reused - 1]
    if reused > len(model.hidden):
        return model.cnn_dense
    side = 28
    for _ in range(reused):
        side //= 2  # each block pools by 2
    return model.hidden[reused - 1] * side * side


def _check_k(k: int, batch: int, width: int) -> None:
    if k > min(batch, width):
        what = f"a batch has {batch} images" if batch < width else f"the features are {width} wide"
        raise ConfigError("bss.k", f"shrinks {k} singular values, but {what}, so a batch's feature matrix has at "
                                   f"most {min(batch, width)}; use {min(batch, width)} or fewer")
