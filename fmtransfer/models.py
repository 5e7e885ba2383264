"""Model building: model A, the from-scratch baseline B, model B built on pretrained lower layers,
and the autoencoders that pretrain those layers without labels (ch. 11.2.2).

A model is a stem (weightless reshaping: Flatten, Reshape), then hidden *blocks* (a layer with
weights plus the weightless layers after it, such as pooling; a Flatten belongs to the dense layer
it feeds), then an output head. Reuse depth and freezing count blocks, so they mean the same for
dense and convolutional models, and for legacy `.h5` files such as the book's `my_model_A.h5`.

The two architectures (`model.arch`):
- dense: Flatten, then one Dense block per `model.hidden` size (the book's 300, 100, 50, 50, 50).
- cnn: Reshape to 28x28x1, one Conv2D(3x3) + MaxPool(2) block per `model.hidden` filter count
  (default 16, 32, 64), then a dense block of `model.cnn_dense` units (default 64; 0 for none).
  The conv blocks and the dense block all count as hidden blocks: 4 by default.
"""

from __future__ import annotations

import hashlib
import math
import zipfile
from pathlib import Path

import numpy as np

from fmtransfer.config import ModelConfig
from fmtransfer.errors import ConfigError, DataError, reason
from fmtransfer.io import atomic_path
from fmtransfer.runtime import ensure_setup, import_keras

keras = import_keras()
layers = keras.layers

INPUT_SHAPE = (28, 28)


def hidden_stack(cfg: ModelConfig) -> list:
    """The stem and hidden blocks shared by models A and B, freshly initialised."""
    if cfg.arch == "dense":
        stack = [layers.Flatten(name="flatten")]
        stack += [layers.Dense(n, activation=cfg.activation, kernel_initializer=cfg.initializer, name=f"hidden{i + 1}")
                  for i, n in enumerate(cfg.hidden)]
        return stack
    stack = [layers.Reshape((28, 28, 1), name="reshape")]
    for i, filters in enumerate(cfg.hidden):
        stack += [layers.Conv2D(filters, 3, padding="same", activation=cfg.activation,
                                kernel_initializer=cfg.initializer, name=f"conv{i + 1}"),
                  layers.MaxPooling2D(2, name=f"pool{i + 1}")]
    if cfg.cnn_dense:
        stack += [layers.Flatten(name="flatten"),
                  layers.Dense(cfg.cnn_dense, activation=cfg.activation, kernel_initializer=cfg.initializer,
                               name="dense")]
    return stack


def _flat_output(cfg: ModelConfig) -> bool:
    """Whether the hidden stack already ends in a vector (else the head flattens first)."""
    return cfg.arch == "dense" or bool(cfg.cnn_dense)


def _head(units: int, activation: str, flatten: bool) -> list:
    head = [layers.Flatten(name="head_flatten")] if flatten else []
    return head + [layers.Dense(units, activation=activation, name="output")]


def build_model_a(cfg: ModelConfig, n_classes: int = 8):
    return keras.Sequential([keras.Input(INPUT_SHAPE), *hidden_stack(cfg),
                             *_head(n_classes, "softmax", not _flat_output(cfg))], name="model_A")


def build_model_b(cfg: ModelConfig):
    return keras.Sequential([keras.Input(INPUT_SHAPE), *hidden_stack(cfg),
                             *_head(1, "sigmoid", not _flat_output(cfg))], name="model_B")


def blocks(model) -> tuple[list, list[list]]:
    """Split every layer below the output into (stem, hidden blocks).

    The output is the last layer (an encoder's is its weightless `code`), and where that is an
    activation or a dropout, the layer below it too: a model A whose softmax is a separate
    `Activation` layer has its 8-unit logits layer as its output, never as a hidden layer."""
    end = len(model.layers) - 1
    while end > 0 and isinstance(model.layers[end], OUTPUT_TAILS):
        end -= 1
    return split_blocks(model.layers[:end])


# Weightless layers that finish the output layer below them rather than stand for one.
OUTPUT_TAILS = (layers.Activation, layers.Softmax, layers.Dropout)


def split_blocks(layer_list: list) -> tuple[list, list[list]]:
    """Split layers into (stem, hidden blocks).

    A Flatten after the first block opens the next block: a dense layer on conv features cannot
    be reused without it. With no weighted layer after it, it is the output head's and is dropped.
    """
    stem, found, pending = [], [], []
    for layer in layer_list:
        if layer.weights:
            found.append([*pending, layer])
            pending = []
        elif not found:
            stem.append(layer)
        elif pending or isinstance(layer, layers.Flatten):
            pending.append(layer)
        else:
            found[-1].append(layer)
    return stem, found


def arch_of(model) -> str:
    """The family a (possibly loaded) model belongs to: cnn if it convolves at all."""
    return "cnn" if any(isinstance(layer, layers.Conv2D) for layer in model.layers) else "dense"


def clone_with_weights(model):
    """An independent copy: clone_model copies the structure only, so copy the weights too."""
    clone = keras.models.clone_model(model)
    clone.set_weights(model.get_weights())
    return clone


def build_b_on_a(model_a, reuse: int | str = "all", name: str = "model A"):
    """model_B_on_A: a clone of A's stem and lowest `reuse` blocks, then a new sigmoid output.

    Works on a clone, so training B never changes model A (docs/experiment.md, pitfalls).
    """
    clone = clone_with_weights(model_a)
    stem, hidden = blocks(clone)
    n = len(hidden) if reuse == "all" else int(reuse)
    if not 1 <= n <= len(hidden):
        raise ConfigError("transfer.reuse_layers", f"{name} has {len(hidden)} hidden layers, asked for {reuse}")
    reused = [layer for block in hidden[:n] for layer in block]
    model = keras.Sequential([keras.Input(INPUT_SHAPE), *stem, *reused], name="model_B_on_A")
    needs_flatten = len(model.compute_output_shape((None, *INPUT_SHAPE))) > 2
    for layer in _head(1, "sigmoid", needs_flatten):
        model.add(layer)
    return model


def autoencoder_parts(cfg: ModelConfig) -> tuple[list, list[list], list[list]]:
    """Fresh (stem, encoder blocks, decoder blocks) of a stacked autoencoder for ch. 11.2.2.

    The encoder is exactly models A and B's hidden stack, so B can be built on it as on A.
    Decoder block i undoes encoder block i (maps its output back to its input shape), so the
    autoencoder of depth k is: stem, encoder blocks 1..k, decoder blocks k..1. Greedy
    pretraining grows it one depth at a time; the whole autoencoder is depth n.
    """
    encoder = keras.Sequential([keras.Input(INPUT_SHAPE), *hidden_stack(cfg)])  # builds the layers
    stem, hidden = split_blocks(encoder.layers)
    shape = (None, *INPUT_SHAPE)
    for layer in stem:
        shape = layer.compute_output_shape(shape)
    decoders = []
    for i, block in enumerate(hidden):
        # The first decoder block outputs pixels, which lie in [0, 1] like a sigmoid.
        activation = "sigmoid" if i == 0 else cfg.activation
        decoders.append(_decoder_block(block, shape[1:], activation, f"decode{i + 1}"))
        for layer in block:
            shape = layer.compute_output_shape(shape)
    return stem, hidden, decoders


def _decoder_block(block: list, target: tuple, activation: str, name: str) -> list:
    """Layers mapping `block`'s output back to `target`, the shape of its input."""
    if len(target) == 1:  # a dense layer on a vector
        return [layers.Dense(target[0], activation=activation, name=name)]
    if isinstance(block[0], layers.Flatten):  # a dense layer on conv features
        return [layers.Dense(math.prod(target), activation=activation, name=name),
                layers.Reshape(target, name=f"{name}_reshape")]
    # A conv-pool block halved the side (rounding down): a stride-2 transposed convolution doubles
    # it, and with "valid" padding and a 3x3 kernel gives 2n + 1 for the odd sides (7 -> 3 -> 7).
    padding = "same" if target[0] % 2 == 0 else "valid"
    return [layers.Conv2DTranspose(target[-1], 3, strides=2, padding=padding, activation=activation, name=name)]


def stack_autoencoder(parts: tuple[list, list[list], list[list]], depth: int | None = None):
    """The autoencoder of the given depth on `parts`' layers (shared, not copied)."""
    stem, hidden, decoders = parts
    depth = len(hidden) if depth is None else depth
    chosen = [layer for block in hidden[:depth] for layer in block]
    chosen += [layer for block in reversed(decoders[:depth]) for layer in block]
    return keras.Sequential([keras.Input(INPUT_SHAPE), *stem, *chosen,
                             layers.Reshape(INPUT_SHAPE, name="reconstruction")], name=f"autoencoder_depth{depth}")


def build_encoder(parts: tuple[list, list[list], list[list]]):
    """The encoder as a model A look-alike: stem, hidden blocks, then an output layer.

    The output is an Identity, which passes the code through: `blocks()` drops a model's last
    layer as its head, so everything that builds B on model A (`build_b_on_a`, `load_model`,
    `transfer --reuse-layers`) takes this file unchanged.
    """
    stem, hidden, _ = parts
    return keras.Sequential([keras.Input(INPUT_SHAPE), *stem, *[layer for block in hidden for layer in block],
                             layers.Identity(name="code")], name="encoder")


def set_reused_trainable(model, trainable: bool, top: int | None = None,
                         only: tuple[int, ...] | None = None) -> None:
    """Freeze (or unfreeze) the reused blocks; with `top`, unfreeze only the top `top` of them;
    with `only`, only those blocks (1 = the bottom one).

    Takes effect for Keras' own fit only after compiling again; fmtransfer's training loop reads
    `trainable_variables` afresh each phase.
    """
    _, hidden = blocks(model)
    for i, block in enumerate(hidden):
        wanted = trainable and (i + 1 in only if only is not None else top is None or i >= len(hidden) - top)
        for layer in block:
            layer.trainable = wanted


def load_model(path: str | Path, remedy: str = "give a complete model file"):
    """Load a `.keras` or legacy `.h5` model (model A, an encoder), or fail with one line naming
    the file and `remedy`: what makes it again (`pretrain --method gan` for a GAN's encoder), or
    that it is the user's own file. Only the caller knows which file it is, so the default names
    no command."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"model file {path} not found; {remedy}", path=path)
    ensure_setup()  # loading runs ops, which fix TensorFlow's thread pools
    if path.suffix == ".keras" and not zipfile.is_zipfile(path):
        raise DataError(f"model file {path} is not a .keras (zip) file; {remedy}", path=path)
    try:
        model = keras.models.load_model(path, compile=False)
    except Exception as e:  # Keras raises many types for a bad file
        raise DataError(f"model file {path} cannot be loaded ({reason(e)}); {remedy}", path=path) from None
    if not isinstance(model, keras.Sequential):
        # Reuse takes "the lower layers": only a stack of layers has them in one order.
        raise DataError(f"model file {path} is a {type(model).__name__} model, not a Sequential stack of layers; "
                        "fmtransfer reuses the lower layers of a Sequential model (as the book's model A is)",
                        path=path)
    shape = tuple(model.input_shape[1:]) if hasattr(model, "input_shape") else None
    if shape != INPUT_SHAPE:
        raise DataError(f"model file {path} takes inputs of shape {shape}, not 28x28 images", path=path)
    if not blocks(model)[1]:
        raise DataError(f"model file {path} has no hidden layers to reuse", path=path)
    return model


def weights_digest(weights: list) -> str:
    """A short hash of weight arrays: proof that a model or block did (not) change."""
    h = hashlib.sha256()
    for w in weights:
        h.update(np.ascontiguousarray(w).tobytes())
    return h.hexdigest()[:16]


def save_model(model, path: Path) -> None:
    with atomic_path(path) as tmp:
        model.save(tmp)
