"""TensorFlow's set-up: one explicit call, `setup()`, for thread pools, determinism and logging.

Importing any fmtransfer module changes no TensorFlow state. The CLI calls `setup()` before a
stage; the library's entry points (`run_experiment`, `run_study`) call `ensure_setup()`, which
does nothing if you called `setup()` yourself first, so your choice wins:

    import fmtransfer
    fmtransfer.setup(threads=(2, 2), deterministic=False)   # before anything trains
    fmtransfer.run_experiment(fmtransfer.load_config())
"""

from __future__ import annotations

import contextlib
import os
import platform
import sys
import warnings
from typing import Any

from fmtransfer.config import ARCHS
from fmtransfer.errors import ArgumentError, FmtError, UsageError, check_argument
from fmtransfer.version import __version__

_configured: dict | None = None
_pending: dict | None = None  # setup(lazy=True)'s choice, applied at the first ensure_setup


def check_environment() -> None:
    """Check fmtransfer's environment variables before TensorFlow's slow import."""
    threads()


def import_keras():
    """Keras on TensorFlow, imported without changing any TensorFlow setting.

    fmtransfer trains with TensorFlow graphs, so it always uses Keras' TensorFlow backend.
    """
    if "keras" not in sys.modules:
        os.environ["KERAS_BACKEND"] = "tensorflow"
    quiet = bool((_pending or _configured or {}).get("quiet"))
    with _stderr_silenced(quiet and "tensorflow" not in sys.modules):
        import keras

    if keras.backend.backend() != "tensorflow":
        raise FmtError(f"Keras was imported with the {keras.backend.backend()} backend; fmtransfer needs "
                       "TensorFlow: import fmtransfer before keras, or set KERAS_BACKEND=tensorflow")
    return keras


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


def _check_setup(arch: Any, threads: Any, **flags: Any) -> None:
    """`setup`'s arguments, each named where it cannot work: before TensorFlow is touched."""
    if arch not in ARCHS:
        raise ArgumentError("setup", "arch", " or ".join(map(repr, ARCHS)), arch)
    if threads is not None and not (isinstance(threads, (tuple, list)) and len(threads) == 2 and all(
            isinstance(t, int) and not isinstance(t, bool) and t >= 0 for t in threads)):
        raise ArgumentError("setup", "threads", "(intra-op, inter-op), two whole numbers of 0 or more, or None",
                            threads)
    for name, value in flags.items():
        check_argument("setup", name, value, bool, "True or False")


def setup(*, arch: str = "dense", threads: tuple[int, int] | None = None, deterministic: bool = True,
          quiet: bool = True, lazy: bool = False) -> None:
    """Configure TensorFlow for fmtransfer: call once, before anything trains.

    Args:
        arch: the network family to size thread pools for (see `threads`).
        threads: (intra-op, inter-op) pool sizes; None chooses as `threads(arch)` does; an
            intra-op 0 is every core this process may run on (TensorFlow's own choice), made explicit.
        deterministic: bit-identical reruns (TensorFlow's op determinism); costs a few percent.
        quiet: hide TensorFlow's and Keras' log lines and warnings.
        lazy: only record these choices; TensorFlow is imported and configured when first needed
            (the CLI: a stage that refuses at once never waits for TensorFlow).

    Thread pools are fixed once TensorFlow has run an op; a later call cannot change them.
    """
    global _configured, _pending
    _check_setup(arch, threads, deterministic=deterministic, quiet=quiet, lazy=lazy)
    if lazy:
        _pending = {"arch": arch, "threads": threads, "deterministic": deterministic, "quiet": quiet}
        if quiet:
            os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
        return
    intra, inter = threads if threads is not None else globals()["threads"](arch)
    intra = intra or schedulable_cores()  # TensorFlow's 0, said as the number it means: fingerprints record it
    if quiet:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    with _stderr_silenced(quiet):
        import_keras()
        import tensorflow as tf
    if quiet:
        tf.get_logger().setLevel("ERROR")
        warnings.filterwarnings("ignore", module="keras")
        with contextlib.suppress(ImportError):
            import absl.logging

            absl.logging.set_verbosity(absl.logging.ERROR)
    with contextlib.suppress(RuntimeError):  # already fixed by an earlier op: the first choice stays
        tf.config.threading.set_intra_op_parallelism_threads(intra)
        tf.config.threading.set_inter_op_parallelism_threads(inter)
    if deterministic:
        tf.config.experimental.enable_op_determinism()
    _configured = {"arch": arch, "threads": (intra, inter), "deterministic": deterministic, "quiet": quiet}


def ensure_setup(arch: str = "dense") -> None:
    """`setup(arch=arch)` unless `setup` was already called (by you, or the CLI): what every path
    that builds, loads or trains a model calls first."""
    if _configured is None:
        setup(**(_pending or {"arch": arch}))


# A cnn's intra-op threads when $FMTRANSFER_THREADS does not say: a fixed number, never the
# machine's cores, since a convolution's sums (and so every number after it) depend on how many
# threads split them; the number is in the fingerprints (docs/architecture.md, "Threads").
# Two, as many as TensorFlow took on the 2-core machine that made the benches and the cnn studies.
CNN_THREADS = 2


def threads(arch: str = "dense") -> tuple[int, int]:
    """(intra-op, inter-op) thread counts for training a model of `arch`.

    `$FMTRANSFER_THREADS` ("N" or "INTRA,INTER"; 0 leaves TensorFlow's choice, every core)
    decides when set. Otherwise a dense model gets one of each: a batch-32 step of these small
    layers is many tiny ops, and handing them between threads costs more than splitting them
    saves (bench/README.md measures it). A cnn's convolutions are big enough to split, over a
    fixed `CNN_THREADS`, never the machine's cores: their results depend on the intra-op count
    (the inter-op count changes no number), so a fixed count gives the same numbers on any machine.
    """
    value = os.environ.get("FMTRANSFER_THREADS", "").strip()
    if not value:
        return (1, 1) if arch == "dense" else (CNN_THREADS, CNN_THREADS)
    try:
        parts = [int(v) for v in value.split(",")]
        if len(parts) not in (1, 2) or min(parts) < 0:
            raise ValueError
    except ValueError:
        raise UsageError(f"FMTRANSFER_THREADS: expected N or INTRA,INTER (0: TensorFlow's default), "
                         f"got {value!r}") from None
    most = max_threads()
    if max(parts) > most:
        raise UsageError(f"FMTRANSFER_THREADS: at most {most} threads a pool on this machine of "
                         f"{os.cpu_count() or 1} cores (more only queue for the same cores), got {value!r}")
    return parts[0], parts[-1]


def max_threads() -> int:
    """The most threads a pool may have (`FMTRANSFER_THREADS`, `--jobs`): a few per core of this
    machine, so a study made on one with up to that many cores can be rerun here with its own
    count (a cnn's numbers depend on it), while a typo of 100000 is refused before TensorFlow
    starts as many threads, each with its own stack, and stops answering signals."""
    return 4 * max(os.cpu_count() or 1, CNN_THREADS)


def schedulable_cores() -> int:
    """The cores this process may run on (its CPU affinity, as `taskset` sets it): what
    TensorFlow's intra-op 0 means."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except (AttributeError, OSError):  # not Linux
        return os.cpu_count() or 1


def training_threads(arch: str = "dense") -> tuple[int, int]:
    """The (intra-op, inter-op) threads this process trains `arch` with: those `setup` applied,
    else those it will apply; an intra-op 0 as the cores it means. A study records the intra-op
    count in its fingerprints (`fingerprints.How`)."""
    chosen = (_configured or _pending or {}).get("threads")
    intra, inter = chosen if chosen is not None else threads((_configured or _pending or {}).get("arch", arch))
    return intra or schedulable_cores(), inter


def seed_everything(seed: int | list[int]) -> None:
    """Seed Python, numpy and TensorFlow, so a model depends only on its settings, not on what
    ran before it in the process. Every model is built right after this, so it sets up first."""
    ensure_setup()
    import_keras().utils.set_random_seed(seed)


def versions() -> dict[str, str]:
    import keras
    import numpy
    import tensorflow as tf

    return {"fmtransfer": __version__, "python": platform.python_version(), "tensorflow": tf.__version__,
            "keras": keras.__version__, "numpy": numpy.__version__, "platform": platform.platform()}
