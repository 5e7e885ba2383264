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

__version__ = "0.4.0"

from fmtransfer.errors import ConfigError, DataError, DivergedError, FmtError, UsageError  # noqa: E402
from fmtransfer.config import Config, load_config  # noqa: E402
from fmtransfer.contenders import Contender, ContenderResult, register  # noqa: E402
from fmtransfer.runtime import setup  # noqa: E402

# Imported on first use (numpy, rich, scipy), so that `fmtransfer --help` answers at once.
_LAZY = {"run_experiment": "pipeline", "ExperimentResult": "results", "run_study": "study",
         "StudyResult": "study", "Cell": "study"}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f"fmtransfer.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'fmtransfer' has no attribute {name!r}")

__all__ = ["Config", "load_config", "run_experiment", "run_study", "setup", "ExperimentResult", "StudyResult",
           "Cell", "ContenderResult", "Contender", "register", "FmtError", "UsageError", "ConfigError", "DataError", "DivergedError"]
