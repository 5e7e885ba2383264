"""What a contender builds on, as a typed value: model A, or the encoder a pretraining method makes.

Contenders have declared their needs as strings ("model_a", "encoder:gan"); `parse` turns either
form into a `Need` and `str()` turns it back, so records, results lines and dict keys keep
today's spelling; a need also equals its string, so a dict keyed either way answers to both.
Imports nothing of fmtransfer's, so a contender's module may import it.

    >>> parse("encoder:gan")
    Encoder(method='gan')
    >>> str(MODEL_A), MODEL_A == "model_a", {"model_a": 1}[MODEL_A]
    ('model_a', True, 1)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Union


class _Need:
    """A need equals its string and hashes as it does, so a mapping keyed by either spelling
    answers to both: contenders' `deps` have been keyed by "model_a" since 0.1."""

    def __eq__(self, other: object) -> bool:
        return isinstance(other, (_Need, str)) and str(other) == str(self)

    def __hash__(self) -> int:
        return hash(str(self))


@dataclass(frozen=True, eq=False)
class ModelA(_Need):
    """Model A, trained on task A's eight classes of the split."""

    def __str__(self) -> str:
        return "model_a"


@dataclass(frozen=True, eq=False)
class Encoder(_Need):
    """The encoder `method`'s unsupervised pretraining makes, shaped like model A."""

    method: str

    def __post_init__(self) -> None:
        if not self.method:
            raise ValueError("Encoder: method must be a pretraining method's name, got ''")

    def __str__(self) -> str:
        return f"encoder:{self.method}"


Need = Union[ModelA, Encoder]
MODEL_A = ModelA()


def parse(need: "str | Need") -> Need:
    """A need from today's string ("model_a", "encoder:METHOD") or a Need itself.

    Raises:
        ValueError: for anything else, naming it.
    """
    if isinstance(need, _Need):
        return need
    if need == "model_a":
        return MODEL_A
    if isinstance(need, str) and need.startswith("encoder:") and need != "encoder:":
        return Encoder(need[len("encoder:"):])
    raise ValueError(f"need: expected 'model_a' or 'encoder:METHOD', got {need!r}")


def needs_of(contender) -> tuple[Need, ...]:
    """A contender's needs, typed, whether it declares them as strings or as Needs."""
    return tuple(parse(n) for n in contender.needs)
