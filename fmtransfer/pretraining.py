"""Unsupervised pretraining (Hands-On ML 11.2.2): an autoencoder learns the hidden stack from
unlabelled images, so that task B can be built on its encoder when no similar labelled task exists.

Two methods, one architecture (`models.autoencoder_parts`): the encoder is models A and B's hidden
stack, each decoder block mirrors an encoder block.
- autoencoder: train the whole stacked autoencoder at once (today's usual way).
- greedy: the historical layer-wise way. Train the one-hidden-block autoencoder; freeze it; insert
  the next encoder block and its decoder block in the middle; train again (only the new pair
  moves); repeat. Every step reconstructs the pixels, so the same loss measures every step.
  Its settings are its own ([greedy]): a step costs more than an epoch of the whole autoencoder
  (it runs through every frozen pair too), so it affords fewer epochs per step.

Each step records digests of every encoder block before and after it trains, so anyone can
check that greedy pretraining really froze the blocks below the one it was training.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from fmtransfer import contenders, runtime
from fmtransfer.config import CLASS_NAMES, Config
from fmtransfer.errors import ConfigError
from fmtransfer.report import Reporter, figures, save_figure


@dataclass
class Pretrained:
    """What pretraining made: the encoder model B builds on, the method's companion model (the
    whole autoencoder, a GAN's generator), and its held-out scores."""

    method: str
    encoder: object
    companion: object
    steps: list[dict]
    unlabelled_size: int
    scores: dict  # e.g. reconstruction_loss: on the test images, binary cross-entropy per pixel
    seconds: float
    test_images: np.ndarray = field(repr=False, default=None)
    test_labels: np.ndarray = field(repr=False, default=None)

    @property
    def reconstruction_loss(self) -> float | None:
        return self.scores.get("reconstruction_loss")


def images(split, size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(unlabelled training images, validation images, test images, test classes), scaled.

    The first `size` (0: all) training images, labels ignored; never validation images (they
    give the per-epoch loss) nor test images (they give the final loss and the picture). Task A's
    and task B's parts of a set hold all its images between them, so none of this depends on
    which pair task B is.
    """
    available = len(split.unlabelled)
    if size > available:
        raise ConfigError("pretrain.unlabelled_size", f"the split has {available} training images, asked for {size}")
    x = split.unlabelled[:size or available].astype(np.float32) / 255.0
    x_valid = np.concatenate([split.a_valid[0], split.b_valid[0]]).astype(np.float32) / 255.0
    x_test = np.concatenate([split.a_test[0], split.b_test[0]]).astype(np.float32) / 255.0
    labels = np.concatenate([np.array(split.a_classes)[split.a_test[1]],
                             np.array(split.b_classes)[split.b_test[1].astype(int)]])
    return x, x_valid, x_test, labels


def pretrain(cfg: Config, split, method: str, reporter: Reporter | None = None) -> Pretrained:
    """Pretrain `method`'s encoder on `split`'s unlabelled images with `cfg.seed`."""
    reporter = reporter or Reporter(quiet=True)
    contender = contenders.get(contenders.pretraining_method(cfg, method))
    if cfg.model.arch not in contender.archs:
        raise ConfigError("model.arch", f"{method} pretrains {' and '.join(contender.archs)} networks only, "
                                        f"not {cfg.model.arch}")
    x, x_valid, x_test, labels = images(split, cfg.pretrain.unlabelled_size)
    started = time.perf_counter()
    runtime.seed_everything(cfg.seed)
    companion, encoder, steps = contender.pretrain(cfg, x, x_valid, reporter)
    return Pretrained(method, encoder, companion, steps, len(x), contender.scores(companion, x_test, x_valid),
                      round(time.perf_counter() - started, 3), x_test, labels)


def train(cfg: Config, x: np.ndarray, x_valid: np.ndarray, reporter: Reporter | None = None, *,
          greedy: bool = False):
    """Pretrain the stacked autoencoder on scaled images, whole or greedily; return
    (autoencoder, encoder, steps)."""
    from fmtransfer import models, training

    reporter = reporter or Reporter(quiet=True)
    p, section = (cfg.greedy, "greedy") if greedy else (cfg.pretrain, "pretrain")
    parts = models.autoencoder_parts(cfg.model)
    _, hidden, decoders = parts
    n = len(hidden)
    # The whole autoencoder is one step at full depth; greedy is n steps, one per depth.
    depths = range(1, n + 1) if greedy else [n]
    steps = []
    for depth in depths:
        model = models.stack_autoencoder(parts, depth)
        for i in range(depth):
            # Greedy moves only the newest encoder/decoder pair; the whole autoencoder moves all.
            trainable = not greedy or i == depth - 1
            for layer in hidden[i] + decoders[i]:
                layer.trainable = trainable
        trains = [layer.name for layer in model.layers if layer.trainable and layer.weights]
        before = [_digest(block) for block in hidden[:depth]]
        label = f"greedy {depth}/{n}" if greedy else "autoencoder"
        name = f"depth {depth}" if greedy else "whole"
        with reporter.training(label, p.epochs) as on_epoch:
            history = training.fit(model, x, x, task=training.RECONSTRUCTION, epochs=p.epochs,
                                   learning_rate=p.learning_rate, batch_size=cfg.batch_size,
                                   seed=[cfg.seed, depth], validation=(x_valid, x_valid), on_epoch=on_epoch,
                                   what=label, key=f"{section}.learning_rate")
        steps.append({"name": name, "depth": depth, "trains": trains, "history": training.records(history),
                      "block_digests_before": before,
                      "block_digests_after": [_digest(block) for block in hidden[:depth]]})
    # Saved models carry their layers' trainable flags; transfer sets its own, but start clean.
    for block in hidden + decoders:
        for layer in block:
            layer.trainable = True
    return models.stack_autoencoder(parts), models.build_encoder(parts), steps


def _digest(block: list) -> str:
    from fmtransfer import models

    return models.weights_digest([w for layer in block for w in layer.get_weights()])


def one_per_class(x: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, list[int]]:
    """The first image of each class present, in class order: a picture that shows every class."""
    classes = [int(k) for k in np.unique(labels)]
    return np.stack([x[np.flatnonzero(labels == k)[0]] for k in classes]), classes


def plot_reconstructions(images: np.ndarray, reconstructions: np.ndarray, classes: list[int], path,
                         title: str) -> None:
    """A PNG grid: the test images on the top row, their reconstructions below (needs matplotlib)."""
    figs = figures("--plot")
    n = len(images)
    fig, axes = figs.subplots(2, n, figsize=(1.2 * n, 3.0), squeeze=False)
    for j in range(n):
        for row, picture in enumerate((images[j], reconstructions[j])):
            ax = axes[row][j]
            ax.imshow(picture, cmap="binary", vmin=0.0, vmax=1.0)
            ax.set_xticks([])
            ax.set_yticks([])
        axes[0][j].set_title(CLASS_NAMES[classes[j]], fontsize=7)
    axes[0][0].set_ylabel("test image", fontsize=8)
    axes[1][0].set_ylabel("reconstructed", fontsize=8)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    save_figure(fig, path, dpi=100)

