"""Model building: model A, the from-scratch baseline B, and model B built on A's lower layers.

A model is a stem (weightless reshaping: Flatten, Reshape), then hidden *blocks* (a layer with
weights plus the weightless layers after it, such as pooling), then an output head. Reuse depth
and freezing count blocks, so they mean the same for dense and convolutional models, and for
legacy `.h5` files such as the book's `my_model_A.h5`.
"""

from __future__ import annotations

from pathlib import Path

from fmtransfer import UsageError
from fmtransfer.config import ModelConfig
from fmtransfer.runtime import start

keras = start()
layers = keras.layers

INPUT_SHAPE = (28, 28)


def hidden_stack(cfg: ModelConfig) -> list:
    """The stem and hidden blocks shared by models A and B, freshly initialised."""
    if cfg.arch == "dense":
        stack = [layers.Flatten(name="flatten")]
        stack += [layers.Dense(n, activation=cfg.activation, name=f"hidden{i + 1}")
                  for i, n in enumerate(cfg.hidden)]
        return stack
    stack = [layers.Reshape((28, 28, 1), name="reshape")]
    for i, filters in enumerate(cfg.hidden):
        stack += [layers.Conv2D(filters, 3, padding="same", activation=cfg.activation, name=f"conv{i + 1}"),
                  layers.MaxPooling2D(2, name=f"pool{i + 1}")]
    return stack


def _head(units: int, activation: str, flatten: bool) -> list:
    head = [layers.Flatten(name="head_flatten")] if flatten else []
    return head + [layers.Dense(units, activation=activation, name="output")]


def build_model_a(cfg: ModelConfig, n_classes: int = 8):
    return keras.Sequential([keras.Input(INPUT_SHAPE), *hidden_stack(cfg),
                             *_head(n_classes, "softmax", cfg.arch == "cnn")], name="model_A")


def build_model_b(cfg: ModelConfig):
    return keras.Sequential([keras.Input(INPUT_SHAPE), *hidden_stack(cfg),
                             *_head(1, "sigmoid", cfg.arch == "cnn")], name="model_B")


def blocks(model) -> tuple[list, list[list]]:
    """Split every layer but the output into (stem, hidden blocks)."""
    stem, found = [], []
    for layer in model.layers[:-1]:
        if layer.weights:
            found.append([layer])
        elif not found:
            stem.append(layer)
        elif not isinstance(layer, layers.Flatten):  # a head's Flatten is not part of a block
            found[-1].append(layer)
    return stem, found


def clone_with_weights(model):
    """An independent copy: clone_model copies the structure only, so copy the weights too."""
    clone = keras.models.clone_model(model)
    clone.set_weights(model.get_weights())
    return clone


def build_b_on_a(model_a, reuse: int | str = "all"):
    """model_B_on_A: a clone of A's stem and lowest `reuse` blocks, then a new sigmoid output.

    Works on a clone, so training B never changes model A (RECIPE.md, pitfalls).
    """
    clone = clone_with_weights(model_a)
    stem, hidden = blocks(clone)
    n = len(hidden) if reuse == "all" else int(reuse)
    if not 1 <= n <= len(hidden):
        raise UsageError(f"option --reuse-layers: model A has {len(hidden)} hidden layers, asked for {reuse}")
    reused = [layer for block in hidden[:n] for layer in block]
    model = keras.Sequential([keras.Input(INPUT_SHAPE), *stem, *reused], name="model_B_on_A")
    needs_flatten = len(model.compute_output_shape((None, *INPUT_SHAPE))) > 2
    for layer in _head(1, "sigmoid", needs_flatten):
        model.add(layer)
    return model


def set_reused_trainable(model, trainable: bool, top: int | None = None) -> None:
    """Freeze (or unfreeze) the reused blocks; with `top`, unfreeze only the top `top` of them.

    Takes effect for Keras' own fit only after compiling again; fmtransfer's training loop reads
    `trainable_variables` afresh each phase.
    """
    _, hidden = blocks(model)
    for i, block in enumerate(hidden):
        wanted = trainable and (top is None or i >= len(hidden) - top)
        for layer in block:
            layer.trainable = wanted


def load_model(path: str | Path):
    """Load a `.keras` or legacy `.h5` model A, or fail with a one-line error."""
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"model file {path} not found; run `fmtransfer train-a` first or pass --model-a FILE")
    try:
        model = keras.models.load_model(path, compile=False)
    except Exception as e:  # Keras raises many types for a bad file
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UsageError(f"model file {path} cannot be loaded ({first[:200]}); "
                         "retrain it with `fmtransfer train-a`") from None
    shape = tuple(model.input_shape[1:]) if hasattr(model, "input_shape") else None
    if shape != INPUT_SHAPE:
        raise UsageError(f"model file {path} takes inputs of shape {shape}, not 28x28 images")
    if not blocks(model)[1]:
        raise UsageError(f"model file {path} has no hidden layers to reuse")
    return model


def save_model(model, path: Path) -> None:
    from fmtransfer.data import atomic_path

    with atomic_path(path) as tmp:
        model.save(tmp)
