"""Search spaces: the range a tunable setting's trials draw from, declared beside its default.

A space is data, not code that samples: `setting(0.1, "...", space=LogUniform(1e-4, 10.0))`
puts it in the field's metadata, where the trial sampler, `fmtransfer contenders` and the docs
read it (`spaces`). Each space checks itself when built, says what it is in a few words
(`describe`), draws a value from a NumPy generator (`sample`), tells whether a value lies in it
(`contains`) and round-trips through plain data (`to_dict` / `from_dict`).

A trial's configuration is a pure function of (study seed, cell, contender, trial index)
(`trial_seed`, `draw`): each key draws from its own stream, so the draw of one key never depends
on which other keys are drawn, in what order, or by which runner.

This module imports nothing of fmtransfer's but its errors, and NumPy only where it draws.

Example:
    >>> LogUniform(1e-4, 10.0).describe()
    'log-uniform 1e-4..10'
    >>> IntRange(4, 40).contains(16)
    True
    >>> space_from_dict({"kind": "int", "low": 1, "high": 10, "log": False})
    IntRange(low=1, high=10, log=False)
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, fields
from typing import Any, ClassVar, Mapping

from fmtransfer.errors import ConfigError

# Whoever builds a space in code names no key; an error there names it as this.
UNNAMED = "space"


def _number(value: Any, key: str, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(key, f"the space's {what} bound must be a number, got {value!r}")
    if not math.isfinite(value):
        raise ConfigError(key, f"the space's {what} bound must be finite, got {value!r}")
    return float(value)


def _integer(value: Any, key: str, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not float(value).is_integer():
        raise ConfigError(key, f"the space's {what} bound must be an integer, got {value!r}")
    return int(value)


def _g(x: float) -> str:
    """A bound as docs write it: 1e-4, 0.01, 10, 2.6."""
    if x != 0 and not 1e-2 <= abs(x) < 1e4:
        mantissa, exponent = f"{x:.3e}".split("e")
        return f"{mantissa.rstrip('0').rstrip('.')}e{int(exponent)}"
    return f"{x:g}"


class Space:
    """A set of values a trial may give one setting. Subclasses are frozen dataclasses."""

    kind: ClassVar[str] = ""

    def __post_init__(self) -> None:
        self.validate(UNNAMED)

    def validate(self, key: str) -> None:
        """Raise ConfigError naming `key` if the space cannot be drawn from."""

    def sample(self, rng) -> Any:
        """One value, drawn with the NumPy Generator `rng`."""
        raise NotImplementedError

    def contains(self, value: Any) -> bool:
        raise NotImplementedError

    def describe(self) -> str:
        """A few words for tables and docs, e.g. "log-uniform 1e-4..10"."""
        raise NotImplementedError

    def bounds(self) -> tuple:
        """The values that must each be valid for the setting: the two ends, or every choice."""
        raise NotImplementedError

    def rebound(self, text: str, key: str) -> "Space":
        """The same kind of space with the bounds `text` gives ("LOW..HIGH"; for a Choice
        "A|B|C"), checked; a ConfigError naming `key` otherwise."""
        low, sep, high = text.partition("..")
        if not sep or not low.strip() or not high.strip():
            raise ConfigError(key, f"give the bounds as LOW..HIGH, got {text!r}")
        try:
            values = [float(low), float(high)]
        except ValueError:
            raise ConfigError(key, f"the bounds must be numbers, as LOW..HIGH, got {text!r}") from None
        return space_from_dict({**self.to_dict(), "low": values[0], "high": values[1]}, key)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, **{f.name: getattr(self, f.name) for f in fields(self)}}

    @staticmethod
    def from_dict(d: Mapping[str, Any], key: str = UNNAMED) -> "Space":
        """The space `to_dict` wrote (`space_from_dict`)."""
        return space_from_dict(d, key)


@dataclass(frozen=True)
class _Interval(Space):
    low: float
    high: float

    def validate(self, key: str) -> None:
        low, high = _number(self.low, key, "low"), _number(self.high, key, "high")
        object.__setattr__(self, "low", low)
        object.__setattr__(self, "high", high)
        if low > high:
            raise ConfigError(key, f"the space's low bound {_g(low)} exceeds its high bound {_g(high)}")

    def contains(self, value: Any) -> bool:
        return isinstance(value, (int, float)) and not isinstance(value, bool) and self.low <= value <= self.high

    def bounds(self) -> tuple:
        return (self.low, self.high)


@dataclass(frozen=True)
class Uniform(_Interval):
    """Any number from `low` to `high`, each equally likely.

    Args:
        low: a finite number, at most `high` (equal: one value).
        high: a finite number.

    Example:
        >>> Uniform(1.0, 5.0).describe()
        'uniform 1..5'
    """

    kind: ClassVar[str] = "uniform"

    def sample(self, rng) -> float:
        return float(self.low + (self.high - self.low) * rng.random())

    def describe(self) -> str:
        return f"uniform {_g(self.low)}..{_g(self.high)}"


@dataclass(frozen=True)
class LogUniform(_Interval):
    """A positive number from `low` to `high` whose logarithm is uniform: each decade equally
    likely, as for learning rates and penalty strengths.

    Args:
        low: a finite number above 0, at most `high`.
        high: a finite number.

    Example:
        >>> LogUniform(1e-5, 1e-2).contains(1e-4)
        True
    """

    kind: ClassVar[str] = "log-uniform"

    def validate(self, key: str) -> None:
        super().validate(key)
        if self.low <= 0:
            raise ConfigError(key, f"a log-uniform space must lie above 0, got low bound {_g(self.low)}")

    def sample(self, rng) -> float:
        lo, hi = math.log(self.low), math.log(self.high)
        return float(min(self.high, max(self.low, math.exp(lo + (hi - lo) * rng.random()))))

    def describe(self) -> str:
        return f"log-uniform {_g(self.low)}..{_g(self.high)}"


@dataclass(frozen=True)
class IntRange(Space):
    """An integer from `low` to `high`, both included; `log` makes each doubling equally likely.

    Args:
        low: an integer, at most `high`; with `log`, at least 1.
        high: an integer.
        log: draw log-uniformly (for counts spanning decades), else each integer equally likely.

    Example:
        >>> IntRange(4, 40, log=True).describe()
        'log-integers 4..40'
    """

    kind: ClassVar[str] = "int"
    low: int
    high: int
    log: bool = False

    def validate(self, key: str) -> None:
        low, high = _integer(self.low, key, "low"), _integer(self.high, key, "high")
        object.__setattr__(self, "low", low)
        object.__setattr__(self, "high", high)
        if not isinstance(self.log, bool):
            raise ConfigError(key, f"the space's log must be true or false, got {self.log!r}")
        if low > high:
            raise ConfigError(key, f"the space's low bound {low} exceeds its high bound {high}")
        if self.log and low < 1:
            raise ConfigError(key, f"a log integer space must lie at 1 or above, got low bound {low}")

    def sample(self, rng) -> int:
        if not self.log:
            return int(rng.integers(self.low, self.high + 1))
        # Log-uniform over [low, high + 1), floored: each integer gets the share of its unit cell.
        lo, hi = math.log(self.low), math.log(self.high + 1)
        return int(min(self.high, max(self.low, math.floor(math.exp(lo + (hi - lo) * rng.random())))))

    def contains(self, value: Any) -> bool:
        return isinstance(value, int) and not isinstance(value, bool) and self.low <= value <= self.high

    def describe(self) -> str:
        return f"{'log-integers' if self.log else 'integers'} {self.low}..{self.high}"

    def bounds(self) -> tuple:
        return (self.low, self.high)

    def rebound(self, text: str, key: str) -> "Space":
        low, sep, high = text.partition("..")
        try:
            values = [int(low), int(high)] if sep else None
        except ValueError:
            values = None
        if values is None:
            raise ConfigError(key, f"give the bounds as integers LOW..HIGH, got {text!r}")
        return _named(lambda: IntRange(values[0], values[1], self.log), key)


@dataclass(frozen=True)
class Choice(Space):
    """One of `values` (numbers, strings or booleans), each equally likely.

    Args:
        values: a non-empty list of distinct values.

    Example:
        >>> Choice(("all", "top:1")).describe()
        'one of all, top:1'
    """

    kind: ClassVar[str] = "choice"
    values: tuple

    def validate(self, key: str) -> None:
        if isinstance(self.values, (str, bytes)) or not isinstance(self.values, (tuple, list)):
            raise ConfigError(key, f"a choice space needs a list of values, got {self.values!r}")
        values = tuple(self.values)
        object.__setattr__(self, "values", values)
        if not values:
            raise ConfigError(key, "a choice space needs at least one value")
        if any(not isinstance(v, (str, int, float, bool)) for v in values):
            raise ConfigError(key, f"a choice space's values must be numbers, words or booleans, got {list(values)}")
        if len(set(values)) != len(values):
            raise ConfigError(key, f"a choice space lists a value twice: {list(values)}")

    def sample(self, rng) -> Any:
        return self.values[int(rng.integers(len(self.values)))]

    def contains(self, value: Any) -> bool:
        return value in self.values

    def describe(self) -> str:
        return "one of " + ", ".join(map(str, self.values))

    def bounds(self) -> tuple:
        return self.values

    def rebound(self, text: str, key: str) -> "Space":
        items = [item.strip() for item in text.split("|")]
        if any(item == "" for item in items):
            raise ConfigError(key, f"give the choices as A|B|C, got {text!r}")
        # Typed like the declared values: "3" is 3 where the setting's choices are numbers.
        kinds = {type(v) for v in self.values}
        try:
            if kinds == {bool}:
                typed = [{"true": True, "false": False}[i.lower()] for i in items]
            elif kinds == {int}:
                typed = [int(i) for i in items]
            elif kinds <= {int, float}:
                typed = [float(i) for i in items]
            else:
                typed = items
        except (KeyError, ValueError):
            raise ConfigError(key, f"give choices like the declared ones ({self.describe()}), got {text!r}") from None
        return _named(lambda: Choice(tuple(typed)), key)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "values": list(self.values)}


def _named(make, key: str) -> Space:
    """`make()`, with any error it raises naming `key` instead of no key."""
    try:
        return make()
    except ConfigError as e:
        raise ConfigError(key, e.problem) from None


KINDS: dict[str, type[Space]] = {c.kind: c for c in (Uniform, LogUniform, IntRange, Choice)}


def space_from_dict(d: Mapping[str, Any], key: str = UNNAMED) -> Space:
    """The space `to_dict` wrote, checked; a ConfigError naming `key` if it is not one.

    Example:
        >>> space_from_dict({"kind": "log-uniform", "low": 1e-4, "high": 1e-1})
        LogUniform(low=0.0001, high=0.1)
    """
    if not isinstance(d, Mapping):
        raise ConfigError(key, f"a space must be a table with a kind, got {d!r}")
    cls = KINDS.get(d.get("kind"))
    if cls is None:
        raise ConfigError(key, f"a space's kind must be one of {', '.join(KINDS)}, got {d.get('kind')!r}")
    names = {f.name for f in fields(cls)}
    extra = sorted(set(d) - names - {"kind"})
    if extra:
        raise ConfigError(key, f"a {cls.kind} space has no {', '.join(extra)}; it takes {', '.join(sorted(names))}")
    missing = [n for n in names if n not in d and n != "log"]
    if missing:
        raise ConfigError(key, f"a {cls.kind} space needs {', '.join(sorted(missing))}")
    return _named(lambda: cls(**{n: d[n] for n in names if n in d}), key)




def spaces(section: type) -> dict[str, Space]:
    """The spaces a section's fields declare, by dotted key (`l2_sp.alpha`), in field order.

    Example:
        >>> from fmtransfer.config import BaselineConfig
        >>> tuple(spaces(BaselineConfig))
        ('baseline.epochs', 'baseline.learning_rate')
    """
    prefix = f"{section.NAME}." if getattr(section, "NAME", "") else ""
    return {prefix + f.name: f.metadata["space"] for f in fields(section) if f.metadata.get("space") is not None}


# ----------------------------------------------------------------------------- drawing a trial

def _word(value: Any) -> int:
    """A stable 64-bit integer for an int or a string (Python's hash() changes per process)."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    return int.from_bytes(hashlib.sha256(str(value).encode()).digest()[:8], "big")


def trial_seed(study_seed: int, cell: str, contender: str, trial: int):
    """The NumPy SeedSequence of one trial: a pure function of its four coordinates, so any
    runner, in any order, draws the same trials."""
    import numpy as np

    return np.random.SeedSequence([_word(study_seed), _word(cell), _word(contender), _word(trial)])


def draw(space: Mapping[str, Space], seed) -> dict[str, Any]:
    """One value per key of `space`, each from its own stream of `seed` (a SeedSequence):
    a key's value does not depend on the other keys drawn, nor on their order.

    Example:
        >>> draw({"l2_sp.alpha": LogUniform(1e-4, 10.0)}, trial_seed(0, "cell", "l2-sp", 0))["l2_sp.alpha"] > 0
        True
    """
    import numpy as np

    return {key: s.sample(np.random.default_rng(
                np.random.SeedSequence(seed.entropy, spawn_key=(*seed.spawn_key, _word(key)))))
            for key, s in space.items()}


def capped(found: dict[str, Space], key: str, most: int) -> dict[str, Space]:
    """`found` (key -> space) with the integer space of `key`, if any, drawing no more than `most`:
    what a setting bounded by the rest of the config (a block or depth by the layers reused, k by
    the batch) may draw in a trial."""
    space = found.get(key)
    if isinstance(space, IntRange) and space.high > most:
        found = {**found, key: IntRange(min(space.low, most), most, space.log)}
    return found
