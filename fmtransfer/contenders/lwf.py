"""LwF, Learning without Forgetting (Li and Hoiem, TPAMI 2017): model A's head is kept beside
B's on the shared reused layers, and trained to keep giving the outputs it gave on B's images
before training.

The loss is the paper's: B's own loss plus lambda_o times L_old, the cross-entropy between A's
recorded outputs and the kept head's current ones, both softened by the temperature T:
L_old = -1/B sum_i sum_j y'_ij log yhat'_ij, with y' = softmax(z_recorded / T) and
yhat' = softmax(z_now / T). As in the paper (T = 2, lambda_o = 1), there is no T^2 factor
(Hinton et al.'s distillation has one; LwF does not). The paper's warm-up, which trains the new
head alone with the rest frozen, is the book's frozen phase; the kept head trains with the
reused layers.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fmtransfer.config import RATE, Bounds, Section, setting
from fmtransfer.contenders.base import register
from fmtransfer.contenders.transfer import TransferFromA, soft_label_guide, source_head
from fmtransfer.space import LogUniform


@register
class Lwf(TransferFromA):
    name = "lwf"
    title = "LwF"
    description = ("The book's two phases with model A's head kept on the reused layers and distilled toward its "
                   "own outputs on B's images (Li and Hoiem 2017).")
    artifact = "lwf"
    order = 57
    strengths = ("lwf.weight", "lwf.temperature")
    stack_unsupported = "its kept head of model A and the outputs it recorded are a batch term a stack has no slot for"

    @dataclass(frozen=True)
    class Settings(Section):
        """LwF (Li and Hoiem, TPAMI 2017): keep model A's head and its outputs on B's images."""

        NAME = "lwf"
        # The paper sets T = 2 (after Hinton et al.) and lambda_o = 1 throughout. The spaces reach
        # from almost hard targets (T 1) to nearly flat ones (T 8), and from a term B's loss
        # outweighs a hundredfold to one that outweighs it tenfold.
        temperature: float = setting(2.0, "Temperature T softening model A's recorded and current outputs.",
                                     bounds=RATE, space=LogUniform(1.0, 8.0))
        weight: float = setting(1.0, "Weight lambda_o of the distillation loss on model A's kept head.",
                                bounds=Bounds(0), space=LogUniform(0.01, 10.0))

    def guide(self, cfg, model, base, reused, data):
        from fmtransfer import training

        source, head = source_head(model, base, reused)
        temperature = cfg.lwf.temperature
        # Recorded once, before any training: A's own outputs on B's images, as the paper does.
        recorded = softened(training.predict(source, data[0]), temperature)
        return soft_label_guide(source, head, recorded, temperature, cfg.lwf.weight)


def softened(logits: np.ndarray, temperature: float) -> np.ndarray:
    """softmax(logits / T) per row, in float64 then float32."""
    z = np.asarray(logits, dtype=np.float64) / temperature
    z -= z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return (e / e.sum(axis=-1, keepdims=True)).astype(np.float32)
