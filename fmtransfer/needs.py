"""What a contender builds on, as a typed value: model A, or the encoder a pretraining method makes.

Contenders have declared their needs as strings ("model_a", "encoder:gan"); `parse` turns either
form into a `Need` and `str()` turns it back, so records, results lines and dict keys keep
today's spelling. Imports nothing of fmtransfer's, so a contender's module may import it.

    >>> parse("encoder:gan")
    Encoder(method='gan')
    >>> str(MODEL_A), needs_of(contenders.get("autoencoder"))
    ('model_a', (Encoder(method='autoencoder'),))
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Union


@dataclass(frozen=True)
class ModelA:
    """Model A, trained on task A's eight classes of the split."""

    def __str__(self) -> str:
        return "model_a"


@dataclass(frozen=True)
class Encoder:
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
    if isinstance(need, (ModelA, Encoder)):
        return need
    if need == "model_a":
        return MODEL_A
    if isinstance(need, str) and need.startswith("encoder:") and need != "encoder:":
        return Encoder(need[len("encoder:"):])
    raise ValueError(f"need: expected 'model_a' or 'encoder:METHOD', got {need!r}")


def needs_of(contender) -> tuple[Need, ...]:
    """A contender's needs, typed, whether it declares them as strings or as Needs."""
    return tuple(parse(n) for n in contender.needs)


class NeedMap(dict):
    """A dict keyed by needs that takes their strings too: `m["model_a"] is m[MODEL_A]`."""

    def __getitem__(self, need: Any) -> Any:
        return super().__getitem__(parse(need))

    def __setitem__(self, need: Any, value: Any) -> None:
        super().__setitem__(parse(need), value)

    def __delitem__(self, need: Any) -> None:
        super().__delitem__(parse(need))

    def __contains__(self, need: Any) -> bool:
        try:
            return super().__contains__(parse(need))
        except ValueError:
            return False

    def get(self, need: Any, default: Any = None) -> Any:
        return self[need] if need in self else default

    def pop(self, need: Any, *default: Any) -> Any:
        if need in self:
            return super().pop(parse(need))
        if default:
            return default[0]
        raise KeyError(need)
