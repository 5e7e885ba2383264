"""fmtransfer: run, and honestly audit, the Fashion-MNIST A->B transfer experiment (Hands-On ML, 11.2).

The Python API:

    import fmtransfer
    cfg = fmtransfer.load_config("configs/book.toml", seed=7)     # overrides as keyword arguments
    result = fmtransfer.run_experiment(cfg)                       # in memory
    result.baseline.test_accuracy
    result.contenders["transfer from A"].error_rate_ratio
    study = fmtransfer.run_study(cfg.replace(**{"study.seeds": [1, 2, 3]}), "runs/my-study")
    study.cell("transfer").p_value

Importing the package, or any module of it, changes no TensorFlow setting: `setup()` does that
(threads, determinism, logging), and the entry points call it for you unless you did first.
"""

from fmtransfer.version import __version__  # noqa: F401  (fmtransfer.__version__)
from fmtransfer.errors import (
    ArgumentError, ConfigError, ContenderError, DataError, DivergedError, FmtError, UsageError,
)
from fmtransfer.config import Config, load_config
from fmtransfer.contenders import Contender, ContenderResult, register
from fmtransfer.runtime import setup

# Imported on first use (numpy, rich, scipy), so that `fmtransfer --help` answers at once.
_LAZY = {"run_experiment": "pipeline", "ExperimentResult": "results", "run_study": "study",
         "StudyResult": "study", "Cell": "study"}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f"fmtransfer.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'fmtransfer' has no attribute {name!r}")

__all__ = ["Config", "load_config", "run_experiment", "run_study", "setup", "ExperimentResult", "StudyResult",
           "Cell", "ContenderResult", "Contender", "register", "FmtError", "UsageError", "ConfigError", "DataError",
           "DivergedError", "ArgumentError", "ContenderError"]
