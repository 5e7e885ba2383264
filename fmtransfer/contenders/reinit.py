"""Re-initialised top: the top reused layer drawn afresh, trained with the head, then everything
fine-tuned (the top layers of a pretrained network are the most specific to its own task).
"""

from __future__ import annotations

from fmtransfer.contenders.base import Phase, register
from fmtransfer.contenders.transfer import TransferFromA, fine_tune_phase


@register
class Reinit(TransferFromA):
    name = "reinit"
    title = "re-initialised top"
    description = "Re-initialise the top reused layer, train it with the head, then fine-tune all."
    artifact = "reinit"
    order = 50

    def prepare(self, cfg, model, reused, features):
        from fmtransfer import models

        top = next(layer for layer in reversed(models.blocks(model)[1][-1]) if layer.weights)
        # Its own initializers, drawing from the generators seeded for this run.
        top.kernel.assign(top.kernel_initializer(top.kernel.shape))
        top.bias.assign(top.bias_initializer(top.bias.shape))
        return [{"name": f"re-initialise {top.name}", "epochs": 0, "learning_rate": None, "history": []}]

    def phases(self, cfg, reused):
        t = cfg.transfer
        return [Phase("head and top layer", t.freeze_epochs, t.frozen_learning_rate, trainable=True, top=1,
                      key="transfer.frozen_learning_rate"),
                fine_tune_phase(t)]
