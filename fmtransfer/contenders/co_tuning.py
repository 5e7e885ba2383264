"""Co-Tuning (You et al., NeurIPS 2020): model A's head is kept as the source head, and trained
on task B's images against soft source labels, p(source class | B's label), learned from A.

The relation is the paper's direct approach: for each of B's classes y, the mean of model A's
softmax over held-out images of class y (a `held_out` fraction of B's training images, drawn
per class and per seed). The paper's reverse approach fits a classifier from A's outputs to B's
labels and inverts it by Bayes' rule; with task B's two classes and few images the mean is the
estimate the images support. Model A never saw task B's images, so the held-out part is not
kept out of training: B trains on all of them, with the loss
L = BCE(y, B(x)) + lambda * CE(p(. | y), softmax(A's head(x))).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fmtransfer.config import Bounds, Section, setting
from fmtransfer.contenders.base import register
from fmtransfer.contenders.transfer import TransferFromA, soft_label_guide, source_head
from fmtransfer.space import LogUniform


@register
class CoTuning(TransferFromA):
    name = "co-tuning"
    title = "Co-Tuning"
    description = ("The book's two phases with model A's head kept on the reused layers and trained on soft "
                   "labels p(A's class | B's label) learned from A (You et al. 2020).")
    artifact = "co_tuning"
    order = 53
    strengths = ("co_tuning.weight",)
    stack_unsupported = ("its kept head of model A and the soft labels per image are a batch term a stack has no "
                         "slot for")

    @dataclass(frozen=True)
    class Settings(Section):
        """Co-Tuning (You et al., NeurIPS 2020): train model A's head on soft source labels."""

        NAME = "co_tuning"
        # The authors' scripts weigh the source term 2.3 (their trade-off). The space reaches from
        # a term B's loss outweighs a hundredfold to one that outweighs it tenfold. The held-out
        # fraction only says how many images estimate the relation, so it is not tuned.
        weight: float = setting(2.3, "Weight lambda of the source head's loss on the soft source labels.",
                                bounds=Bounds(0), space=LogUniform(0.01, 10.0))
        held_out: float = setting(0.2, "Fraction of B's training images (per class) the relation is learned on.",
                                  bounds=Bounds(0, 1, open_low=True))

    def guide(self, cfg, model, base, reused, data):
        from fmtransfer import training

        x, y = data
        source, head = source_head(model, base, reused)
        chosen = held_out(y, cfg.co_tuning.held_out, np.random.default_rng([cfg.seed, 2020]))
        relation = relationship(softmax(training.predict(source, x[chosen])), y[chosen])
        return soft_label_guide(source, head, relation[np.asarray(y, dtype=np.int64)], 1.0, cfg.co_tuning.weight)


def held_out(y: np.ndarray, fraction: float, rng: np.random.Generator) -> np.ndarray:
    """Indices of a `fraction` of each class's images in `y`, at least one of each class present."""
    chosen = []
    for label in np.unique(y):
        members = np.flatnonzero(y == label)
        chosen.append(rng.choice(members, max(1, round(fraction * len(members))), replace=False))
    return np.sort(np.concatenate(chosen))


def relationship(probabilities: np.ndarray, y: np.ndarray, n_target: int = 2) -> np.ndarray:
    """p(source class | target class), (n_target, n_source): row t is the mean of `probabilities`
    (model A's softmax, one row per image) over the images labelled t; a class with no image
    gets the mean over all images."""
    p = np.asarray(probabilities, dtype=np.float64)
    y = np.asarray(y, dtype=np.int64)
    rows = [p[y == t].mean(axis=0) if np.any(y == t) else p.mean(axis=0) for t in range(n_target)]
    return np.stack(rows).astype(np.float32)


def softmax(logits: np.ndarray) -> np.ndarray:
    z = np.asarray(logits, dtype=np.float64)
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)
