"""fmtransfer.models: the book's architectures, model_B_on_A built on a clone of A, freezing.

docs/experiment.md, "Models" and "Pitfalls": clone A and copy its weights so training B never changes A;
take every layer but A's output; freeze the reused layers, then unfreeze (all, or the top K).
"""

from __future__ import annotations

import numpy as np
import pytest

from fmtransfer import UsageError
from fmtransfer.config import ModelConfig
from fmtransfer import models, runtime, training

pytestmark = pytest.mark.usefixtures("tensorflow_set_up")

SMALL = ModelConfig(hidden=(32, 16, 16))  # three hidden layers: enough to tell them apart, quick to train


@pytest.fixture(scope="module")
def batch():
    """64 random 28x28 images with binary labels (what B trains on) and 8-class labels (for A)."""
    rng = np.random.default_rng(0)
    x = rng.random((64, 28, 28), dtype=np.float32)
    return x, rng.integers(0, 2, 64).astype(np.float32), rng.integers(0, 8, 64)


@pytest.fixture(scope="module")
def model_a(batch):
    """A small model A, trained for one epoch so its weights are not the initial ones.

    Shared by the tests: none of them may change it (that is what they check).
    """
    runtime.seed_everything(0)
    a = models.build_model_a(SMALL)
    x, _, y8 = batch
    training.fit(a, x, y8, task=training.MULTICLASS, epochs=1, learning_rate=1e-2, batch_size=16, seed=0)
    return a


def _dense(model):
    return [layer for layer in model.layers if layer.weights]


def _weights(layer):
    return [w.copy() for w in layer.get_weights()]


def _same(a, b) -> bool:
    return len(a) == len(b) and all(np.array_equal(x, y) for x, y in zip(a, b))


def _train_b(model, batch, epochs=2, lr=0.1):
    x, yb, _ = batch
    return training.fit(model, x, yb, task=training.BINARY, epochs=epochs, learning_rate=lr,
                        batch_size=16, seed=1)


# ============================================================================ architectures

def test_model_a_is_the_books_architecture():
    """Flatten(28x28) -> Dense 300, 100, 50, 50, 50 SELU -> Dense 8 softmax."""
    a = models.build_model_a(ModelConfig())
    assert a.input_shape == (None, 28, 28)
    dense = _dense(a)
    assert [layer.units for layer in dense] == [300, 100, 50, 50, 50, 8]
    assert all(layer.activation.__name__ == "selu" for layer in dense[:-1])
    assert dense[-1].activation.__name__ == "softmax"


def test_model_b_is_the_same_stack_with_one_sigmoid_output():
    """The baseline: the same hidden stack -> Dense 1 sigmoid."""
    b = models.build_model_b(ModelConfig())
    dense = _dense(b)
    assert [layer.units for layer in dense] == [300, 100, 50, 50, 50, 1]
    assert dense[-1].activation.__name__ == "sigmoid"


# ============================================================================ model_B_on_A

def test_training_b_on_a_leaves_model_a_unchanged(model_a, batch):
    """model_B_on_A works on a clone: after training B (all layers trainable), A's weights are
    bit-identical, and B shares no layer or variable with A."""
    before = [w.copy() for w in model_a.get_weights()]
    b = models.build_b_on_a(model_a)
    models.set_reused_trainable(b, True)
    reused_before = _weights(_dense(b)[0])
    _train_b(b, batch)

    assert _same(model_a.get_weights(), before)
    assert not _same(_weights(_dense(b)[0]), reused_before), "B's reused layers did not train"
    assert not {id(layer) for layer in b.layers} & {id(layer) for layer in model_a.layers}
    assert not {id(v) for v in b.weights} & {id(v) for v in model_a.weights}


@pytest.mark.parametrize("reuse", [1, 2, 3, "all"])
def test_b_on_a_reuses_exactly_n_hidden_layers_with_a_weights(model_a, reuse):
    """reuse=N: A's lowest N hidden layers (with A's trained weights), then a new Dense 1 sigmoid."""
    n = 3 if reuse == "all" else reuse
    b = models.build_b_on_a(model_a, reuse)
    a_hidden, b_dense = _dense(model_a)[:-1], _dense(b)
    assert len(b_dense) == n + 1
    for a_layer, b_layer in zip(a_hidden[:n], b_dense[:n]):
        assert _same(a_layer.get_weights(), b_layer.get_weights())
    assert b_dense[-1].units == 1 and b_dense[-1].activation.__name__ == "sigmoid"
    assert b.output_shape == (None, 1)
    assert len(models.blocks(b)[1]) == n


@pytest.mark.parametrize("reuse", [0, 4])
def test_reusing_more_layers_than_a_has_is_a_usage_error(model_a, reuse):
    with pytest.raises(UsageError, match="transfer.reuse_layers"):
        models.build_b_on_a(model_a, reuse)


def test_freezing_keeps_reused_layers_bit_identical_while_the_output_learns(model_a, batch):
    """Phase 1: set_reused_trainable(False); after fit, every reused kernel and bias is unchanged
    and the new output layer moved."""
    b = models.build_b_on_a(model_a)
    models.set_reused_trainable(b, False)
    dense = _dense(b)
    before = [_weights(layer) for layer in dense]
    _train_b(b, batch)
    for layer, w in zip(dense[:-1], before[:-1]):
        assert _same(_weights(layer), w), f"frozen {layer.name} moved"
    assert not _same(_weights(dense[-1]), before[-1]), "the output layer did not train"
    assert len(b.trainable_weights) == 2  # the output's kernel and bias


@pytest.mark.parametrize("top", [1, 2])
def test_unfreezing_top_k_moves_only_the_top_k_reused_layers(model_a, batch, top):
    """Phase 2 with unfreeze top:K: only the K highest reused layers (and the output) move."""
    b = models.build_b_on_a(model_a)
    models.set_reused_trainable(b, True, top=top)
    dense = _dense(b)
    before = [_weights(layer) for layer in dense]
    _train_b(b, batch)
    hidden = dense[:-1]
    for layer, w in zip(hidden[:-top], before[:-top - 1]):
        assert _same(_weights(layer), w), f"{layer.name} is below the top {top} but moved"
    for layer, w in zip(dense[-top - 1:], before[-top - 1:]):
        assert not _same(_weights(layer), w), f"{layer.name} should have trained"


def test_unfreezing_all_moves_every_reused_layer(model_a, batch):
    """Phase 2 with unfreeze all: every reused layer trains again."""
    b = models.build_b_on_a(model_a)
    models.set_reused_trainable(b, False)
    models.set_reused_trainable(b, True)
    dense = _dense(b)
    before = [_weights(layer) for layer in dense]
    _train_b(b, batch)
    for layer, w in zip(dense, before):
        assert not _same(_weights(layer), w), f"{layer.name} did not train"


def test_convolutional_b_on_a_counts_conv_pool_blocks(batch):
    """For a cnn, reuse counts conv-pool blocks, and the head flattens before the output."""
    runtime.seed_everything(0)
    a = models.build_model_a(ModelConfig(arch="cnn", hidden=(4, 8)))
    b = models.build_b_on_a(a, 1)
    names = [layer.name for layer in b.layers]
    assert [n for n in names if n.startswith(("conv", "pool"))] == ["conv1", "pool1"]
    assert b.output_shape == (None, 1)
    models.set_reused_trainable(b, False)
    before = _weights(b.get_layer("conv1"))
    _train_b(b, batch, epochs=1)
    assert _same(_weights(b.get_layer("conv1")), before)


# ============================================================================ model files

def test_legacy_h5_model_a_loads_and_transfers(model_a, batch, tmp_path):
    """A model A saved in the legacy .h5 format (like the book's my_model_A.h5) loads with its
    weights, and B built on it trains without changing it."""
    path = tmp_path / "my_model_A.h5"
    model_a.save(str(path))
    loaded = models.load_model(path)
    assert _same(loaded.get_weights(), model_a.get_weights())

    before = [w.copy() for w in loaded.get_weights()]
    b = models.build_b_on_a(loaded, 2)
    assert _same(_dense(b)[1].get_weights(), _dense(model_a)[1].get_weights())
    models.set_reused_trainable(b, True)
    _train_b(b, batch)
    assert _same(loaded.get_weights(), before)
    assert training.predict(b, batch[0]).shape == (64, 1)


def test_native_keras_model_round_trips(model_a, tmp_path):
    """save_model writes a .keras file that load_model reads back with the same weights."""
    path = tmp_path / "model_a.keras"
    models.save_model(model_a, path)
    assert _same(models.load_model(path).get_weights(), model_a.get_weights())
    assert [p.name for p in tmp_path.iterdir()] == ["model_a.keras"], "temporary file left behind"


def test_unreadable_model_file_is_a_usage_error_naming_it(tmp_path):
    """Garbage bytes named .keras: UsageError naming the file, not a Keras traceback."""
    path = tmp_path / "garbage.keras"
    path.write_bytes(np.random.default_rng(0).bytes(2000))
    with pytest.raises(UsageError, match="garbage.keras"):
        models.load_model(path)


def test_garbage_h5_file_is_a_usage_error_naming_it(tmp_path):
    path = tmp_path / "garbage.h5"
    path.write_bytes(b"not hdf5 at all" * 50)
    with pytest.raises(UsageError, match="garbage.h5"):
        models.load_model(path)


def test_missing_model_file_is_a_usage_error_naming_it(tmp_path):
    with pytest.raises(UsageError, match="absent.keras"):
        models.load_model(tmp_path / "absent.keras")
