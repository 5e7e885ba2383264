"""TensorFlow start-up: a quiet import, thread settings for small machines, determinism.

Kept apart so that nothing imports TensorFlow until a stage needs it.
"""

from __future__ import annotations

import contextlib
import os
import platform
import sys
import warnings

_started = False


@contextlib.contextmanager
def _stderr_silenced(enabled: bool):
    """Send file descriptor 2 to /dev/null: TF's C++ start-up lines bypass Python's logging."""
    if not enabled:
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def start(verbose: bool = False, deterministic: bool = True):
    """Import TensorFlow and Keras once, quietly unless `verbose`; return the `keras` module."""
    global _started
    if not verbose:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    with _stderr_silenced(not verbose):
        import tensorflow as tf
        import keras
    if not _started:
        if not verbose:
            tf.get_logger().setLevel("ERROR")
            warnings.filterwarnings("ignore", module="keras")
            with contextlib.suppress(ImportError):
                import absl.logging

                absl.logging.set_verbosity(absl.logging.ERROR)
        _set_threads(tf)
        if deterministic:
            # Bit-identical reruns, for 6-7% of an epoch: sparse cross-entropy then takes TF's
            # deterministic formulation (bench/README.md).
            tf.config.experimental.enable_op_determinism()
        _started = True  # last: a failure above (a bad $FMTRANSFER_THREADS) is raised again next time
    return keras


def threads(arch: str = "dense") -> tuple[int, int]:
    """(intra-op, inter-op) thread counts for training a model of `arch`.

    `$FMTRANSFER_THREADS` ("N" or "INTRA,INTER"; 0 leaves TensorFlow's choice, every core)
    decides when set. Otherwise a dense model gets one of each: a batch-32 step of these small
    layers is ~150 ops of a few to ~50 microseconds, and handing them between threads costs more
    than splitting them saves (TensorFlow's choice is 1.6-2x slower on 2 cores; bench/README.md).
    A cnn's convolutions are big enough to split, so it keeps TensorFlow's choice.
    """
    value = os.environ.get("FMTRANSFER_THREADS", "").strip()
    if not value:
        return (1, 1) if arch == "dense" else (0, 0)
    try:
        parts = [int(v) for v in value.split(",")]
        if len(parts) not in (1, 2) or min(parts) < 0:
            raise ValueError
    except ValueError:
        from fmtransfer import UsageError

        raise UsageError(f"FMTRANSFER_THREADS: expected N or INTRA,INTER (0: TensorFlow's default), "
                         f"got {value!r}") from None
    return parts[0], parts[-1]


def use_threads_for(arch: str) -> None:
    """Size TensorFlow's thread pools for training `arch` (see `threads`).

    Takes effect only before TensorFlow runs its first op, so call it at the start of a stage,
    before a model is built or loaded; `start` alone sizes them for a dense model.
    """
    start()
    import tensorflow as tf

    _set_threads(tf, arch)


def _set_threads(tf, arch: str = "dense") -> None:
    intra, inter = threads(arch)
    # The pools are fixed once TensorFlow has run an op; then the first choice stays.
    with contextlib.suppress(RuntimeError):
        tf.config.threading.set_intra_op_parallelism_threads(intra)
        tf.config.threading.set_inter_op_parallelism_threads(inter)


def prepare(seed: int, arch: str = "dense") -> None:
    """Before a stage builds or loads a model: thread pools sized for `arch`, every RNG seeded."""
    use_threads_for(arch)
    seed_everything(seed)


def seed_everything(seed: int) -> None:
    """Seed Python, numpy and TensorFlow, so a stage gives the same numbers on the same machine."""
    keras = start()
    keras.utils.set_random_seed(seed)


def versions() -> dict[str, str]:
    import numpy
    import tensorflow as tf
    import keras

    from fmtransfer import __version__

    return {"fmtransfer": __version__, "python": platform.python_version(), "tensorflow": tf.__version__,
            "keras": keras.__version__, "numpy": numpy.__version__, "platform": platform.platform()}
