"""Gradual unfreezing with discriminative rates (ULMFiT; Howard & Ruder, 2018): one more reused
layer unfrozen per epoch from the top, each layer's rate the one above's divided by 2.6.
"""

from __future__ import annotations

from dataclasses import dataclass

from fmtransfer.config import SOME_EPOCHS, Bounds, Section, setting
from fmtransfer.space import IntRange, Uniform
from fmtransfer.contenders.base import Phase, register
from fmtransfer.contenders.transfer import TransferFromA


@register
class Gradual(TransferFromA):
    name = "gradual"
    title = "gradual unfreezing"
    description = ("The head alone, then one more reused layer per epoch from the top, each lower layer's rate "
                   "divided by 2.6 (ULMFiT, Howard & Ruder 2018).")
    artifact = "gradual"
    order = 40
    untuned = ("transfer.fine_tune_learning_rate",)  # every step trains at the phase-1 rate, scaled per layer

    @dataclass(frozen=True)
    class Settings(Section):
        """Gradual unfreezing with discriminative rates (ULMFiT; Howard & Ruder, 2018)."""

        NAME = "gradual"
        # The schedule. Factor: 1 is one rate for every layer, ULMFiT's 2.6 lies inside, 5 leaves the
        # bottom of five reused layers at 1/625 of the head's rate. Epochs per layer: ULMFiT's one,
        # up to 4, where unfreezing the dense network's five layers takes the chapter's 20 epochs.
        factor: float = setting(2.6, "Each lower layer's learning rate is the one above divided by this.",
                                bounds=Bounds(1), space=Uniform(1.0, 5.0))
        epochs_per_layer: int = setting(1, "Epochs before the next reused layer (from the top) is unfrozen.",
                                        bounds=SOME_EPOCHS, space=IntRange(1, 4))

    def phases(self, cfg, reused):
        """As many epochs in all as the book's two phases, all at the phase-1 rate scaled per layer;
        the unfreezing stops at the top K reused layers where `transfer.unfreeze` is top:K."""
        t, g = cfg.transfer, cfg.gradual
        left = t.freeze_epochs + t.fine_tune_epochs
        # Block i of n (from the bottom) sits n - i layers below the head: rate / factor^(n - i).
        rates = tuple(g.factor ** -(reused - i) for i in range(reused))
        # --unfreeze top:K stops the unfreezing at the top K reused layers; the rest stay frozen.
        last = min(reused, t.unfreeze_top or reused)
        phases = []
        for top in range(last + 1):
            epochs = min(left, g.epochs_per_layer) if top < last else left
            if epochs <= 0:
                break
            phases.append(Phase("head" if top == 0 else f"top {top}", epochs, t.frozen_learning_rate,
                                trainable=top > 0, top=top or None, key="transfer.frozen_learning_rate",
                                rates=rates))
            left -= epochs
        return phases
