"""The errors fmtransfer raises: each one a user can act on, carrying the config key or file it is about.

The library never speaks of command-line options or exit codes; the CLI turns a `ConfigError`'s
key into the option that set it, and an error's `exit_code` into the process's.
"""

from __future__ import annotations

import re
from pathlib import Path


class FmtError(Exception):
    """An error the user can act on: printed as one line, never as a traceback.

    Args:
        message: what went wrong and what to do about it.
        path: the file or directory it is about, if any.
    """

    exit_code = 1

    def __init__(self, message: str, *, path: str | Path | None = None):
        super().__init__(message)
        self.path = None if path is None else Path(path)


class UsageError(FmtError):
    """Bad settings, bad input files, or a stage run before the one it needs."""

    exit_code = 2


class DataError(UsageError):
    """A data file, run-directory artifact or model file that is missing, corrupt or foreign."""


class ConfigError(UsageError):
    """A setting that cannot work.

    Args:
        key: the dotted config key (`transfer.freeze_epochs`, `seed`).
        problem: what is wrong with its value, e.g. "must be 0 or more, got -1".
        source: where the value came from (a config file, a run directory's config.json), when
            the loader knows it; the CLI fills in option names itself.

    Example:
        >>> str(ConfigError("seed", "must be at least 0, got -1"))
        'config key seed: must be at least 0, got -1'
    """

    def __init__(self, key: str, problem: str, *, source: str | None = None):
        self.key, self.problem, self.source = key, problem, source
        prefix = f"{source}: " if source else ""
        super().__init__(f"{prefix}config key {key}: {problem}")

    def with_source(self, source: str | None) -> "ConfigError":
        return ConfigError(self.key, self.problem, source=source)


class DivergedError(FmtError):
    """Training whose loss (or a weight it computed) became NaN or infinite: nothing it made is
    kept or scored.

    Args:
        what: what was training ("model A", "B on A: frozen", "greedy 2/5").
        epoch: the epoch (from 1) whose loss was not finite; 0 when found outside the epochs (at
            evaluation, or in weights computed in closed form).
        key: the config key to lower, or several (the phase's learning rate and every strength
            that shapes its loss, e.g. L2-SP's alpha and beta): each could have caused it.
        cause: what was found not finite, when not the loss.

    Example:
        >>> str(DivergedError("B on l2_sp: frozen", 1, ("transfer.frozen_learning_rate", "l2_sp.beta")))
        'B on l2_sp: frozen diverged at epoch 1: the loss is not finite; lower transfer.frozen_learning_rate or l2_sp.beta'
    """

    def __init__(self, what: str, epoch: int, key: str | tuple[str, ...] | None = None, *, cause: str | None = None):
        keys = (key,) if isinstance(key, str) else tuple(dict.fromkeys(key or ()))
        self.what, self.epoch, self.keys, self.cause = what, epoch, keys, cause
        self.key = keys[0] if keys else None  # the first: the learning rate, where a phase has one
        super().__init__(self.describe(keys))

    def describe(self, names) -> str:
        """The message with each key shown as `names` gives it (the CLI: as the options typed)."""
        when = f"at epoch {self.epoch}" if self.epoch else "(its predictions are not finite)"
        if self.cause:
            when = f": {self.cause}"
            head = f"{self.what} diverged{when}"
        else:
            head = f"{self.what} diverged {when}: the loss is not finite"
        names = list(names)
        if not names:
            return head
        listed = names[0] if len(names) == 1 else ", ".join(names[:-1]) + " or " + names[-1]
        return f"{head}; lower {listed}"


# A sentence ends at . ! or ? before a space; Keras' own messages are sentences.
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
_OPENS, _CLOSES = "<{[(", ">}])"


def _dump(sentence: str) -> bool:
    """Whether a sentence is a printed object rather than prose: a repr, config or array that
    opens more brackets than it closes (its rest was on lines of its own), or one too long to read."""
    return len(sentence) > 300 or sum(map(sentence.count, _OPENS)) > sum(map(sentence.count, _CLOSES))


def reason(error: BaseException) -> str:
    """An exception's message as one line that keeps its reason, whole sentences only.

    Libraries (Keras above all) write a lead-in line ending in ':' and the reason below it, then
    dump objects, configs and arrays: the first line alone, or its first N characters, would hide
    the reason. Kept: the lines of prose (not indented, not a bracketed dump), joined, up to the
    first sentence that prints an object.
    """
    text = str(error).strip()
    prose = [line.strip() for line in text.splitlines()
             if line.strip() and not line[:1].isspace() and line.strip()[0] not in _OPENS
             and not line.startswith(("Traceback", "File "))]
    kept: list[str] = []
    for sentence in _SENTENCE_END.split(" ".join(prose)):
        if _dump(sentence):  # what follows a dump is the dump's rest, or a list of the objects
            break
        kept.append(sentence)
    while len(kept) > 1 and kept[-1].endswith(":"):  # a lead-in to what was dropped
        kept.pop()
    return " ".join(kept) or (text.splitlines()[0] if text else type(error).__name__)


class ContenderError(FmtError):
    """A contender (an installed plug-in's, most often) that gave back what no trained model can:
    a test accuracy that is not a number from 0 to 1, a loss that is not finite. The run failed:
    nothing of it is recorded, so a study runs it again when resumed.

    Args:
        contender: the contender's name.
        problem: what it gave back, e.g. "test_accuracy nan is not a number from 0 to 1".

    Example:
        >>> str(ContenderError("example", "test_accuracy nan is not a number from 0 to 1"))
        "contender 'example' failed: test_accuracy nan is not a number from 0 to 1; its run is not recorded"
    """

    def __init__(self, contender: str, problem: str):
        self.contender, self.problem = contender, problem
        super().__init__(f"contender {contender!r} failed: {problem}; its run is not recorded")


class ArgumentError(UsageError, TypeError):
    """A function of the Python API called with an argument it cannot take: named, with what it
    takes. A TypeError too, as Python's own would be, but one line that says what to pass.

    Args:
        function: the function's name as called (`load_config`, `claims.judge`).
        argument: the parameter's name.
        wanted: what it takes, in words ("a path (str or os.PathLike)").
        value: what it was given.

    Example:
        >>> str(ArgumentError("report", "study_dir", "a path (str or os.PathLike)", 123))
        'report(): argument study_dir must be a path (str or os.PathLike), got int 123'
    """

    def __init__(self, function: str, argument: str, wanted: str, value: object):
        self.function, self.argument, self.wanted = function, argument, wanted
        shown = repr(value)
        shown = shown if len(shown) <= 60 else shown[:57] + "..."
        super().__init__(f"{function}(): argument {argument} must be {wanted}, got {type(value).__name__} {shown}")


def check_argument(function: str, argument: str, value: object, accepted: type | tuple[type, ...],
                   wanted: str) -> None:
    """Raise ArgumentError unless `value` is an instance of `accepted` (a bool counts as an int
    only where `bool` is named: `jobs=True` is no number of jobs)."""
    accepted = accepted if isinstance(accepted, tuple) else (accepted,)
    if not isinstance(value, accepted) or (isinstance(value, bool) and bool not in accepted
                                           and int in accepted):
        raise ArgumentError(function, argument, wanted, value)
