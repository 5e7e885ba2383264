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
