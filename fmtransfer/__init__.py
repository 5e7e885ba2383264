"""fmtransfer: run, and honestly audit, the Fashion-MNIST A->B transfer experiment (Hands-On ML, 11.2).

The package imports no TensorFlow at the top level, so the command line answers `--help` and
reports usage errors at once; the modules that train (`models`, `training`, `experiment`) import
it when they are first used.
"""

__version__ = "0.1.0"


class FmtError(Exception):
    """An error the user can act on: printed as one line, never as a traceback."""

    exit_code = 1


class UsageError(FmtError):
    """Bad options, bad configuration, bad input files, or a stage run too early."""

    exit_code = 2
