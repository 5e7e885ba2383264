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
        _started = True
        if not verbose:
            tf.get_logger().setLevel("ERROR")
            warnings.filterwarnings("ignore", module="keras")
            with contextlib.suppress(ImportError):
                import absl.logging

                absl.logging.set_verbosity(absl.logging.ERROR)
        if deterministic:
            tf.config.experimental.enable_op_determinism()
    return keras


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
