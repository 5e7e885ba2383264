"""Re-initialised top: the top reused layers drawn afresh, trained with the head, then everything
fine-tuned (the top layers of a pretrained network are the most specific to its own task).
"""

from __future__ import annotations

from dataclasses import dataclass

from fmtransfer.config import MAX_UNITS, Bounds, Section, reuse_count, setting
from fmtransfer.contenders.base import Phase, register
from fmtransfer.contenders.transfer import TransferFromA, fine_tune_phase
from fmtransfer.errors import ConfigError
from fmtransfer.space import IntRange, capped


@register
class Reinit(TransferFromA):
    name = "reinit"
    title = "re-initialised top"
    description = ("Re-initialise the top reused layer (or the top reinit.depth), train it with the head, then "
                   "fine-tune all.")
    artifact = "reinit"
    order = 50

    @dataclass(frozen=True)
    class Settings(Section):
        """Re-initialised top: how many reused layers, from the top, are drawn afresh."""

        NAME = "reinit"
        # One, the layer most specific to task A, by default. Re-initialising the top few is the
        # usual range (Zhang et al., ICLR 2021, re-initialise up to a handful of BERT's top
        # layers); 3 of the dense network's 5 keeps two of model A's layers. A trial never draws
        # more than the reused depth (`space`).
        depth: int = setting(1, "Reused layers drawn afresh, from the top (at most the reused depth).",
                             bounds=Bounds(1, MAX_UNITS, why=" layers"), space=IntRange(1, 3))

    def space(self, cfg):
        """Its space, with the depth drawn no deeper than the layers reused."""
        return capped(super().space(cfg), "reinit.depth", reuse_count(cfg.transfer.reuse_layers, cfg.model.blocks))

    def check_settings(self, cfg):
        _check_depth(cfg.reinit.depth, reuse_count(cfg.transfer.reuse_layers, cfg.model.blocks))

    def prepare(self, cfg, model, reused, features):
        from fmtransfer import models

        depth = cfg.reinit.depth
        _check_depth(depth, reused)  # here too: a study's reuse depths are its grid's, not transfer.reuse_layers
        drawn = []
        for block in reversed(models.blocks(model)[1][-depth:]):  # from the top: depth 1 draws as it always did
            top = next(layer for layer in reversed(block) if layer.weights)
            # Its own initializers, drawing from the generators seeded for this run.
            top.kernel.assign(top.kernel_initializer(top.kernel.shape))
            top.bias.assign(top.bias_initializer(top.bias.shape))
            drawn.append(top.name)
        return [{"name": f"re-initialise {', '.join(drawn)}", "epochs": 0, "learning_rate": None, "history": []}]

    def phases(self, cfg, reused):
        t, depth = cfg.transfer, cfg.reinit.depth
        return [Phase("head and top layer" if depth == 1 else f"head and top {depth} layers", t.freeze_epochs,
                      t.frozen_learning_rate, trainable=True, top=depth, key="transfer.frozen_learning_rate"),
                fine_tune_phase(t)]


def _check_depth(depth: int, reused: int) -> None:
    if depth > reused:
        raise ConfigError("reinit.depth", f"re-initialises {depth} layers, but only {reused} are reused; "
                                          f"use {reused} or fewer, or reuse more layers")
