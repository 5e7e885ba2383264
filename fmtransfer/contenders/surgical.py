"""Surgical fine-tuning (Lee et al., ICLR 2023): the book's frozen phase, then one chosen reused
block fine-tuned with the head while every other reused block stays frozen.

Lee et al. find that which block to tune depends on the shift between the tasks: the first
block for a shift in the inputs (corrupted images), later ones for a shift in the features or
the labels, and that tuning that block alone can beat tuning all.
"""

from __future__ import annotations

from dataclasses import dataclass

from fmtransfer.config import MAX_UNITS, Bounds, Section, reuse_count, setting
from fmtransfer.contenders.base import Phase, register
from fmtransfer.contenders.transfer import TransferFromA
from fmtransfer.errors import ConfigError
from fmtransfer.space import IntRange, capped


@register
class Surgical(TransferFromA):
    name = "surgical"
    title = "surgical fine-tuning"
    description = ("The head alone, then one chosen reused block fine-tuned with the head, the others frozen "
                   "(Lee et al. 2023).")
    artifact = "surgical"
    order = 56

    @dataclass(frozen=True)
    class Settings(Section):
        """Surgical fine-tuning (Lee et al., ICLR 2023): which reused block phase 2 fine-tunes."""

        NAME = "surgical"
        # The paper picks the block per task, on held-out data: a tuned setting. The first block,
        # its choice for shifts in the inputs, by default, as it exists at every reuse depth. The
        # space spans the dense network's five blocks; a trial never draws one above the reused
        # depth (`space`).
        block: int = setting(1, "The reused block phase 2 fine-tunes with the head (1 = the bottom one; at most "
                                "the reused depth).", bounds=Bounds(1, MAX_UNITS, why=" (a block, from the bottom)"),
                             space=IntRange(1, 5))

    def space(self, cfg):
        """Its space, with the block drawn no higher than the layers reused."""
        return capped(super().space(cfg), "surgical.block", reuse_count(cfg.transfer.reuse_layers, cfg.model.blocks))

    def check_settings(self, cfg):
        _check_block(cfg.surgical.block, reuse_count(cfg.transfer.reuse_layers, cfg.model.blocks))

    def phases(self, cfg, reused):
        t, block = cfg.transfer, cfg.surgical.block
        _check_block(block, reused)  # here too: a study's reuse depths are its grid's
        return [Phase("frozen", t.freeze_epochs, t.frozen_learning_rate, trainable=False,
                      key="transfer.frozen_learning_rate"),
                Phase(f"block {block}", t.fine_tune_epochs, t.fine_tune_learning_rate, trainable=True,
                      blocks=(block,), key="transfer.fine_tune_learning_rate")]


def _check_block(block: int, reused: int) -> None:
    if block > reused:
        raise ConfigError("surgical.block", f"fine-tunes block {block}, but only {reused} are reused; use {reused} "
                                            "or lower, or reuse more layers")
