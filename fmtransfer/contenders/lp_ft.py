"""LP-FT (Kumar et al., ICLR 2022): the head is fitted exactly as a linear probe on model A's
frozen features, then everything is fine-tuned. Fine-tuning a random head first distorts the
pretrained features while the head is still wrong.
"""

from __future__ import annotations

from dataclasses import dataclass

from fmtransfer.config import RATE, Section, setting
from fmtransfer.space import LogUniform
from fmtransfer.contenders.base import register
from fmtransfer.contenders.transfer import TransferFromA, fine_tune_phase
from fmtransfer.loop import check_finite


@register
class LpFt(TransferFromA):
    name = "lp-ft"
    title = "LP-FT"
    description = ("Fit the new head as a linear probe on model A's frozen features, then fine-tune all at the "
                   "fine-tuning rate (Kumar et al. 2022).")
    artifact = "lp_ft"
    order = 20
    strengths = ("lp_ft.c",)
    untuned = ("transfer.freeze_epochs", "transfer.frozen_learning_rate")  # the probe replaces phase 1

    @dataclass(frozen=True)
    class Settings(Section):
        """LP-FT (Kumar et al., ICLR 2022): fit the new head as a linear probe, then fine-tune all."""

        NAME = "lp_ft"
        # The paper tunes the probe's L2 strength on held-out data over a log grid. Five decades
        # around scikit-learn's 1: from a probe held near zero to one that all but interpolates
        # task B's few standardised images.
        c: float = setting(1.0, "Inverse L2 strength of the linear probe on standardised features (scikit-learn's C).",
                           bounds=RATE, space=LogUniform(1e-3, 1e2))

    def prepare(self, cfg, model, reused, features):
        from fmtransfer import probe

        x, y = features
        fitted = probe.fit(x, y, cfg.lp_ft.c)
        head = fitted.as_dense()
        # Computed in closed form, not by the loop, so nothing else would see a head that is not
        # finite: fine-tuning would then diverge at once and blame its learning rate.
        check_finite(head, "LP-FT's linear probe", "lp_ft.c", "the head it fitted has weights that are not finite")
        model.layers[-1].set_weights(list(head))
        return [{"name": "linear probe", "epochs": 0, "learning_rate": None, "c": cfg.lp_ft.c,
                 "train_accuracy": fitted.accuracy(x, y), "history": []}]

    def phases(self, cfg, reused):
        return [fine_tune_phase(cfg.transfer)]
