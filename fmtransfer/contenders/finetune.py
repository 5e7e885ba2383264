"""Fine-tuning strategies beyond the book's recipe, each on model A's lower layers.

Each keeps transfer from A's model and changes one thing, so a paired study isolates it:
- lp-ft: the head is fitted exactly as a linear probe, then everything is fine-tuned
  (Kumar et al., ICLR 2022: fine-tuning a random head distorts the pretrained features).
- l2-sp: the two phases, with the reused weights pulled toward model A's and the head toward
  zero (Li et al., ICML 2018).
- gradual: one more reused layer unfrozen per epoch from the top, each layer's rate the one
  above's divided by 2.6 (ULMFiT; Howard & Ruder, 2018).
- reinit: the top reused layer re-initialised, trained with the head, then everything
  fine-tuned (the top layers of a pretrained network are the most specific to its task).
"""

from __future__ import annotations

from fmtransfer.contenders.base import Phase, register
from fmtransfer.contenders.transfer import TransferFromA, fine_tune_phase


@register
class LpFt(TransferFromA):
    name = "lp-ft"
    title = "LP-FT"
    description = ("Fit the new head as a linear probe on model A's frozen features, then fine-tune all at the "
                   "fine-tuning rate (Kumar et al. 2022).")
    sections = ("lp_ft", "transfer")
    artifact = "lp_ft"

    def prepare(self, cfg, model, reused, features):
        from fmtransfer import probe

        x, y = features
        fitted = probe.fit(x, y, cfg.lp_ft.c)
        model.layers[-1].set_weights(list(fitted.as_dense()))
        return [{"name": "linear probe", "epochs": 0, "learning_rate": None, "c": cfg.lp_ft.c,
                 "train_accuracy": fitted.accuracy(x, y), "history": []}]

    def phases(self, cfg, reused):
        return [fine_tune_phase(cfg.transfer)]


@register
class L2Sp(TransferFromA):
    name = "l2-sp"
    title = "L2-SP"
    description = ("The book's two phases with alpha/2 ||w - w_A||^2 on the reused layers and beta/2 ||w||^2 "
                   "on the head (Li et al. 2018).")
    sections = ("l2_sp", "transfer")
    artifact = "l2_sp"

    def penalty(self, cfg, model, reused):
        from fmtransfer import models
        from fmtransfer.training import tf

        alpha, beta = cfg.l2_sp.alpha, cfg.l2_sp.beta
        reused_weights = [w for block in models.blocks(model)[1] for layer in block for w in layer.weights]
        # Copies of the starting point, as variables: a captured constant would outlive the run.
        anchors = [tf.Variable(w.numpy(), trainable=False) for w in reused_weights]
        head = model.layers[-1].weights

        def penalty(value):
            pull = tf.add_n([tf.reduce_sum(tf.square(value(w) - a)) for w, a in zip(reused_weights, anchors)])
            shrink = tf.add_n([tf.reduce_sum(tf.square(value(w))) for w in head])
            return 0.5 * alpha * pull + 0.5 * beta * shrink

        return penalty


@register
class Gradual(TransferFromA):
    name = "gradual"
    title = "gradual unfreezing"
    description = ("The head alone, then one more reused layer per epoch from the top, each lower layer's rate "
                   "divided by 2.6 (ULMFiT, Howard & Ruder 2018).")
    sections = ("gradual", "transfer")
    artifact = "gradual"

    def phases(self, cfg, reused):
        """As many epochs in all as the book's two phases, all at the phase-1 rate scaled per layer."""
        t, g = cfg.transfer, cfg.gradual
        left = t.freeze_epochs + t.fine_tune_epochs
        # Block i of n (from the bottom) sits n - i layers below the head: rate / factor^(n - i).
        rates = tuple(g.factor ** -(reused - i) for i in range(reused))
        phases = []
        for top in range(reused + 1):
            epochs = min(left, g.epochs_per_layer) if top < reused else left
            if epochs <= 0:
                break
            phases.append(Phase("head" if top == 0 else f"top {top}", epochs, t.frozen_learning_rate,
                                trainable=top > 0, top=top or None, key="transfer.frozen_learning_rate",
                                rates=rates))
            left -= epochs
        return phases


@register
class Reinit(TransferFromA):
    name = "reinit"
    title = "re-initialised top"
    description = "Re-initialise the top reused layer, train it with the head, then fine-tune all."
    artifact = "reinit"

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
