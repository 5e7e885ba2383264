"""RBM-pretrained: model B on a stack of restricted Boltzmann machines trained greedily (ch. 11.2.2).

The historical way to pretrain without labels: one Bernoulli RBM per hidden layer of
`model.hidden`, each trained by contrastive divergence on the hidden probabilities of the one
below (the maths and the guide's settings are in `fmtransfer.rbm`). Model B is then built on the
stack as on model A: the RBM weights are the kernels, the hidden biases the biases.

How this differs from the SELU stack the other contenders use:
- the hidden units are sigmoids, in [0, 1] and not zero-centred: an RBM's hidden units are
  binary, and their probability is a sigmoid. Such a stack is not self-normalising as SELU with
  LeCun initialisation is, and its units saturate, where gradients vanish, so deep sigmoid
  stacks fine-tune slowly.
- model B built on it therefore has sigmoid hidden layers while the baseline has SELU ones: the
  comparison mixes the pretraining with the activation function.
- the fine-tuning learning rates (`transfer.*`) were chosen for SELU networks and may suit a
  sigmoid stack less; tune them before concluding that RBM pretraining does not help.

Dense networks only: convolutional RBMs (Lee et al. 2009) are out of scope.
"""

from __future__ import annotations

from dataclasses import dataclass

from fmtransfer.config import BATCH, FRACTION, RATE, SOME_EPOCHS, Bounds, Section, setting
from fmtransfer.contenders.base import register
from fmtransfer.contenders.pretrained import PretrainedEncoder
from fmtransfer.report import figures, save_figure

FILTERS_SHOWN = 64  # of the first layer's filters, an 8x8 grid


@register
class Rbm(PretrainedEncoder):
    name = "rbm"
    title = "RBM-pretrained"
    description = "B on a stack of RBMs trained greedily by contrastive divergence, sigmoid units (dense only)."
    sections = ("pretrain", "rbm", "transfer")  # pretrain: unlabelled_size
    archs = ("dense",)
    companion = "autoencoder"  # the unrolled stack, scored and pictured like an autoencoder
    picture = "filters"
    order = 80

    @dataclass(frozen=True)
    class Settings(Section):
        """Greedy pretraining with restricted Boltzmann machines (ch. 11.2.2), dense networks only.

        Defaults follow Hinton's practical guide to training RBMs: CD-1, small random weights,
        momentum 0.5 then 0.9, L2 weight decay.
        """

        NAME = "rbm"
        # 10 per RBM keeps the whole stack under 2x model A's 20 epochs here (docs/pretrain.md).
        epochs: int = setting(10, "Epochs per RBM (one RBM per hidden layer).", bounds=SOME_EPOCHS)
        batch_size: int = setting(100, "RBM mini-batch size (the guide suggests 10 to 100).", bounds=BATCH)
        learning_rate: float = setting(0.1, "Contrastive-divergence learning rate.", bounds=RATE)
        # Each Gibbs step is a full pass up and down the RBM: CD-1 is the guide's, a thousand is days.
        cd_k: int = setting(1, "Gibbs steps of contrastive divergence (CD-k).", bounds=Bounds(1, 1000))
        momentum: float = setting(0.9, "Momentum from the 6th epoch of each RBM on.", bounds=FRACTION)
        initial_momentum: float = setting(0.5, "Momentum for the first 5 epochs of each RBM.", bounds=FRACTION)
        weight_decay: float = setting(2e-4, "L2 weight decay on the weights.", bounds=Bounds(0))

    def pretrain(self, cfg, x, x_valid, reporter):
        from fmtransfer import rbm

        flat = x.reshape(len(x), -1)
        # No validation images (data.valid_size 0): no validation loss, as for the other methods.
        flat_valid = x_valid.reshape(len(x_valid), -1) if len(x_valid) else None
        rbms, steps = rbm.train_stack(flat, cfg.model.hidden, cfg.rbm, seed=cfg.seed, x_valid=flat_valid,
                                      reporter=reporter)
        encoder = rbm.encoder(rbms)
        return rbm.unrolled(encoder, rbms), encoder, steps

    def draw(self, made, path, title: str) -> None:
        """The first RBM's filters: the weights into each of its first hidden units as a 28x28
        image, each on its own symmetric colour scale (needs matplotlib)."""
        import numpy as np

        weights = made.encoder.get_layer("hidden1").get_weights()[0]
        shown = min(FILTERS_SHOWN, weights.shape[1])
        side = int(np.ceil(np.sqrt(shown)))
        fig, axes = figures("--plot").subplots(side, side, figsize=(1.0 * side, 1.0 * side + 0.4), squeeze=False)
        for j, ax in enumerate(axes.flat):
            ax.set_xticks([])
            ax.set_yticks([])
            if j >= shown:
                ax.axis("off")
                continue
            filt = weights[:, j].reshape(28, 28)
            bound = float(np.abs(filt).max()) or 1.0
            ax.imshow(filt, cmap="RdBu_r", vmin=-bound, vmax=bound)
        loss = made.scores.get("reconstruction_loss")
        fig.suptitle(f"{title}: first-layer filters ({shown} of {weights.shape[1]}); "
                     f"unrolled test reconstruction loss {loss:.4f}", fontsize=8)
        fig.tight_layout()
        save_figure(fig, path, dpi=100)
