"""L2-SP (Li et al., ICML 2018): the book's two phases, with the reused weights pulled toward
model A's and the head toward zero.
"""

from __future__ import annotations

from dataclasses import dataclass

from fmtransfer.config import Bounds, Section, setting
from fmtransfer.space import LogUniform
from fmtransfer.contenders.base import register
from fmtransfer.contenders.transfer import TransferFromA


@register
class L2Sp(TransferFromA):
    name = "l2-sp"
    title = "L2-SP"
    description = ("The book's two phases with alpha/2 ||w - w_A||^2 on the reused layers and beta/2 ||w||^2 "
                   "on the head (Li et al. 2018).")
    artifact = "l2_sp"
    order = 30
    strengths = ("l2_sp.alpha", "l2_sp.beta")

    @dataclass(frozen=True)
    class Settings(Section):
        """L2-SP (Li et al., ICML 2018): pull the reused weights toward the pretrained ones."""

        NAME = "l2_sp"
        # The paper picks both strengths on held-out data from powers of ten, mostly settling on 0.1
        # and 0.01 (the defaults). The spaces reach from almost no pull (1e-4) to a pull that
        # outweighs the data loss; with SGD the pull is stable while rate x alpha < 2, and no
        # phase's space draws a rate above 0.1, so alpha 10 stays stable.
        alpha: float = setting(0.1, "Strength of alpha/2 * ||w - w_pretrained||^2 on the reused layers.",
                               bounds=Bounds(0), space=LogUniform(1e-4, 10.0))
        beta: float = setting(0.01, "Strength of beta/2 * ||w||^2 on the new head.", bounds=Bounds(0),
                              space=LogUniform(1e-4, 1.0))

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
