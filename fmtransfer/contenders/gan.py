"""GAN pretraining (ch. 11.2.2): model B built on the hidden layers of a GAN's discriminator.

The discriminator is models A and B's hidden stack (`models.hidden_stack`: 300-100-50-50-50
SELU for dense, the conv blocks and the dense block for cnn) with a Dropout after each hidden
block and a one-logit output. It learns to tell the unlabelled training images from a
generator's, so its hidden layers learn features of the images without any label; the encoder
B builds on shares those layers, without the dropouts (B trains as the book's B does).

The recipe is the one usually found stable for small GANs on (Fashion-)MNIST:
- Adam at learning rate 2e-4 with beta_1 0.5 for both networks (DCGAN, Radford et al. 2016):
  the default beta_1 0.9 carries momentum across the two players' moving targets and oscillates.
- One-sided label smoothing (Salimans et al. 2016, "Improved techniques for training GANs"):
  real images are labelled `gan.real_label` (0.9), generated ones 0, so the discriminator is
  never pushed to extreme logits on real images and keeps giving the generator a gradient.
  Smoothing the fake label too would reward the generator for samples the data does not have.
- Dropout in the discriminator (`gan.dropout`, 0.3): it is the bigger network here (SELU
  300-100-... against a 100-150 generator), and without it it wins the game too early.
- The generator's non-saturating loss, -log D(G(z)) (Goodfellow et al. 2014): early on, when D
  rejects every sample, log(1 - D(G(z))) has no gradient.
- The generator is the book's ch. 17 dense one (codings -> 100 -> 150 -> 784 sigmoid -> 28x28)
  for both architectures: it is only a sparring partner, and a sigmoid keeps its images in [0, 1]
  like the real ones, the range model B sees (never [-1, 1] with tanh).

Both networks step together, as in TensorFlow's DCGAN tutorial: one generated batch gives both
losses and both updates (simultaneous gradient steps), which costs about half the forward
passes of alternating steps; docs/pretrain.md gives the time against model A's. The whole
epoch is one graph call of `fmtransfer.loop`, as every training's.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from fmtransfer.config import BATCH, FRACTION, RATE, SOME_EPOCHS, UNITS, Bounds, Section, setting
from fmtransfer.contenders.base import register
from fmtransfer.contenders.pretrained import PretrainedEncoder
from fmtransfer.report import Reporter, figures, save_figure

SAMPLE_GRID = (4, 8)  # rows, columns of the picture of generated images
PICTURE_SEED = 2024  # the picture's noise: the same codings for every run, so pictures compare


@register
class Gan(PretrainedEncoder):
    name = "gan"
    title = "GAN-pretrained"
    description = "B on the hidden layers of a GAN's discriminator trained on unlabelled images (ch. 11.2.2)."
    sections = ("pretrain", "gan", "transfer")  # pretrain: unlabelled_size
    companion = "generator"
    picture = "samples"
    order = 90

    @dataclass(frozen=True)
    class Settings(Section):
        """GAN pretraining (ch. 11.2.2): the discriminator's hidden stack becomes B's lower layers.

        The recipe is the one usually found stable for small GANs on (Fashion-)MNIST: Adam at 2e-4
        with beta_1 0.5, one-sided label smoothing, dropout in the discriminator (docs/pretrain.md).
        """

        NAME = "gan"
        # 10 epochs of 64 take about 1.7x model A's 20 epochs here; after 5, B built on the features
        # was worse than the baseline in one seed, after 10 better (docs/pretrain.md).
        epochs: int = setting(10, "GAN epochs over the unlabelled images.", bounds=SOME_EPOCHS)
        batch_size: int = setting(64, "GAN mini-batch size (real images; as many generated).", bounds=BATCH)
        learning_rate: float = setting(2e-4, "Adam learning rate of both networks.", bounds=RATE)
        beta_1: float = setting(0.5, "Adam beta_1 of both networks.", bounds=FRACTION)
        codings: int = setting(30, "Size of the generator's random input.", bounds=UNITS)
        real_label: float = setting(0.9, "Target for real images (one-sided label smoothing; 1: none).",
                                    bounds=Bounds(0.5, 1, open_low=True))
        dropout: float = setting(0.3, "Dropout rate after each discriminator hidden layer.", bounds=FRACTION)

    def pretrain(self, cfg, x, x_valid, reporter):
        return train(cfg, x, x_valid, reporter)

    def scores(self, companion, x_test, x_valid) -> dict[str, float | None]:
        """None: a generator has no held-out loss, and the discriminator that could score test
        images against samples is not kept (its features are, in the encoder)."""
        return {}

    def draw(self, made, path, title: str) -> None:
        """A grid of generated images from fixed noise (needs matplotlib)."""
        import numpy as np

        from fmtransfer import training

        rows, cols = SAMPLE_GRID
        codings = made.companion.input_shape[-1]
        z = np.random.default_rng(PICTURE_SEED).normal(size=(rows * cols, codings)).astype(np.float32)
        plot_samples(training.predict(made.companion, z), path, f"{title}: generated images", rows, cols)


def build(cfg):
    """(discriminator, encoder, generator), fresh; the encoder shares the discriminator's
    stem and hidden layers and has `models.build_encoder`'s shape."""
    from fmtransfer import models

    keras = models.keras
    layers = keras.layers
    stack = models.hidden_stack(cfg.model)
    keras.Sequential([keras.Input(models.INPUT_SHAPE), *stack])  # builds the layers, so blocks can be told apart
    stem, hidden = models.split_blocks(stack)
    encoder = models.build_encoder((stem, hidden, []))
    body = []
    for i, block in enumerate(hidden):
        body += [*block, layers.Dropout(cfg.gan.dropout, name=f"dropout{i + 1}")]
    # A cnn without its dense block ends in feature maps: the logit needs a vector.
    tail = [layers.Flatten(name="logit_flatten")] if len(encoder.output_shape) > 2 else []
    discriminator = keras.Sequential([keras.Input(models.INPUT_SHAPE), *stem, *body, *tail,
                                      layers.Dense(1, name="logit")], name="discriminator")
    generator = keras.Sequential([keras.Input((cfg.gan.codings,)),
                                  layers.Dense(100, activation="selu", name="gen1"),
                                  layers.Dense(150, activation="selu", name="gen2"),
                                  layers.Dense(math.prod(models.INPUT_SHAPE), activation="sigmoid", name="pixels"),
                                  layers.Reshape(models.INPUT_SHAPE, name="image")], name="generator")
    return discriminator, encoder, generator


def train(cfg, x: np.ndarray, x_valid: np.ndarray, reporter=None):
    """Train the GAN on scaled images `x`; return (generator, encoder, steps).

    Each epoch's record: the discriminator's mean loss over real and generated images (`loss`),
    the generator's (`g_loss`), the discriminator's accuracy on real and on generated training
    images, and on the validation images (`val_real_accuracy`: real ones it calls real; far
    below `real_accuracy`, it memorises the training images instead of learning features).
    """
    import numpy as np  # here, not at the top: the registry imports this module for `fmtransfer --help`

    from fmtransfer import loop, models, training

    tf = training.tf
    keras = models.keras
    reporter = reporter or Reporter(quiet=True)
    g = cfg.gan
    discriminator, encoder, generator = build(cfg)
    d_vars, g_vars = discriminator.trainable_variables, generator.trainable_variables
    d_opt = keras.optimizers.Adam(learning_rate=g.learning_rate, beta_1=g.beta_1)
    g_opt = keras.optimizers.Adam(learning_rate=g.learning_rate, beta_1=g.beta_1)
    d_opt.build(d_vars)
    g_opt.build(g_vars)
    codings, real_label = g.codings, g.real_label

    def bce(target, logits):  # per-sample binary cross-entropy on logits: stable where sigmoid saturates
        return tf.nn.sigmoid_cross_entropy_with_logits(labels=tf.fill(tf.shape(logits), target), logits=logits)

    def step(indices, batch, x_all, epoch_seed):
        real = tf.gather(x_all, indices)
        size = tf.shape(indices)[0]
        # Stateless noise from (epoch seed, batch): a run is reproducible whatever ran before it.
        noise_seed = tf.random.experimental.stateless_fold_in(epoch_seed, batch)
        z = tf.random.stateless_normal([size, codings], seed=noise_seed)
        with tf.GradientTape() as d_tape, tf.GradientTape() as g_tape:
            fake = generator(z, training=True)
            real_logits = discriminator(real, training=True)
            fake_logits = discriminator(fake, training=True)
            d_real, d_fake = bce(real_label, real_logits), bce(0.0, fake_logits)
            d_loss = (tf.reduce_mean(d_real) + tf.reduce_mean(d_fake)) / 2
            g_loss = tf.reduce_mean(bce(1.0, fake_logits))  # non-saturating: -log D(G(z))
        d_opt.apply(d_tape.gradient(d_loss, d_vars), d_vars)
        g_opt.apply(g_tape.gradient(g_loss, g_vars), g_vars)
        w = tf.cast(size, tf.float32)
        return (d_loss * w, g_loss * w, tf.reduce_sum(tf.cast(real_logits > 0, tf.float32)),
                tf.reduce_sum(tf.cast(fake_logits < 0, tf.float32)))

    def inputs(epoch, rngs):  # the epoch's noise seed, drawn after its shuffle from the same generator
        return (tf.constant(rngs[0].integers(0, 2**31 - 1, size=2), dtype=tf.int64),), {}

    def validate():
        logits = training.predict(discriminator, x_valid)
        return {"val_real_accuracy": float(np.mean(logits > 0)) if np.isfinite(logits).all() else math.nan}

    with reporter.training("GAN", g.epochs) as on_epoch:
        history = loop.run(step, (tf.constant(x, dtype=tf.float32),), size=len(x),
                           columns=("loss", "g_loss", "real_accuracy", "fake_accuracy"), epochs=g.epochs,
                           batch_size=g.batch_size, seed=[cfg.seed, 17],  # 17: GAN pretraining's own stream
                           what="GAN pretraining", key="gan.learning_rate", inputs=inputs,
                           validate=validate if len(x_valid) else None, on_epoch=on_epoch)
    return generator, encoder, [{"name": "gan", "trains": ["discriminator", "generator"],
                                 "history": [e.to_dict() for e in history]}]


def plot_samples(images: np.ndarray, path, title: str, rows: int, cols: int) -> None:
    """A PNG grid of `rows` x `cols` images in [0, 1] (needs matplotlib)."""
    fig, axes = figures("--plot").subplots(rows, cols, figsize=(1.0 * cols, 1.0 * rows + 0.4), squeeze=False)
    for k, ax in enumerate(axes.flat):
        ax.imshow(images[k], cmap="binary", vmin=0.0, vmax=1.0)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    save_figure(fig, path, dpi=100)
