"""What every contender is: a name, what it needs, its settings, and `fit`.

A contender builds and trains task B's model on a split and a seed, given what it needs
(`needs`: model A, a pretrained encoder), and returns the model and a typed result. It imports
TensorFlow only when it trains, so the registry can answer `--help` and validate a config at once.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar, Mapping

from fmtransfer.errors import ConfigError, DivergedError

_REGISTRY: dict[str, type["Contender"]] = {}
SHARED_SECTIONS = ("transfer", "pretrain")  # read by every contender of a kind, not one's own


@dataclass(frozen=True)
class Phase:
    """One training phase of model B: which reused layers move, for how long, how fast.

    `top` None with `trainable` True unfreezes every reused layer; K unfreezes the top K. `key`
    is the config key the learning rate came from, named if the phase diverges. `rates`, one per
    reused block from the bottom, multiply the learning rate of that block (discriminative rates).
    """

    name: str
    epochs: int
    learning_rate: float
    trainable: bool
    top: int | None = None
    key: str | None = None
    rates: tuple[float, ...] | None = None


@dataclass
class ContenderResult:
    """A trained contender's scores on test B, and how it got there.

    `error_rate_ratio` is the baseline's test error divided by this contender's (above 1: a gain),
    set when the result is compared with a baseline trained on the same images and seed.
    """

    name: str
    title: str
    test_accuracy: float
    test_loss: float
    phases: list[dict] = field(default_factory=list)
    seconds: float = 0.0
    error_rate_ratio: float | None = None
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def error_rate(self) -> float:
        return 1.0 - self.test_accuracy

    @property
    def history(self) -> list[dict]:
        """Every epoch of every phase, in order, each record naming its phase."""
        return [{"phase": p["name"], **record} for p in self.phases for record in p["history"]]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "ContenderResult":
        return cls(**{k: d[k] for k in cls.__dataclass_fields__ if k in d})


class Contender:
    """A way to build task B's model.

    Class attributes:
        name: stable registry key, used by `--contenders` and in study records.
        title: what tables and `compare --json` call it.
        description: one line for `--help`.
        needs: what it builds on: "model_a", or "encoder:METHOD" for a pretrained encoder.
        sections: the config sections holding its settings.
        artifact: the run directory's file stem for it (model_b_on_ARTIFACT.keras).
        archs: the network families (`model.arch`) it can build.
        stack_unsupported: why its seeds cannot train as one stack (`study.stack`), or None
            where they can, through `fit_seeds`. A study trains a contender that cannot one
            seed at a time, and says so.
    """

    name: ClassVar[str]
    title: ClassVar[str]
    description: ClassVar[str]
    needs: ClassVar[tuple[str, ...]] = ()
    sections: ClassVar[tuple[str, ...]] = ()
    artifact: ClassVar[str] = ""
    archs: ClassVar[tuple[str, ...]] = ("dense", "cnn")
    stack_unsupported: ClassVar[str | None] = ("it trains model B by its own `fit`, not by a schedule a stack of "
                                               "seeds can run")

    @classmethod
    def own_sections(cls) -> tuple[str, ...]:
        """Its sections that no other kind of contender reads ([gan], [l2_sp], ...): `transfer`
        and `pretrain` are shared, and fingerprinted with everything shared."""
        return tuple(s for s in cls.sections if s not in SHARED_SECTIONS)

    def settings(self, cfg) -> dict[str, Any]:
        """The settings this contender's result depends on, for fingerprints and reports."""
        d = cfg.to_dict()
        return {s: d[s] for s in self.sections}

    def fit(self, cfg, split, deps: Mapping[str, Any], reporter) -> tuple[Any, ContenderResult]:
        """Build and train the model on `split` with `cfg.seed`; return (model, result)."""
        raise NotImplementedError

    def train(self, cfgs: list, split, bases: list, reporter) -> list:
        """`fit` for each config's seed at once, config k on `bases[k]` (what `needs[0]` names,
        None if it needs nothing): per seed (model, result) or the DivergedError that stopped it.
        The configs differ in their seed only. One seed alone raises its DivergedError, as `fit`
        does. Only where `stack_unsupported` is None."""
        raise NotImplementedError(f"{self.name} cannot stack: {self.stack_unsupported}")

    def fit_seeds(self, cfgs: list, split, bases: list, reporter) -> list:
        """`train`'s results alone: per seed a ContenderResult or the DivergedError that stopped it."""
        try:
            made = self.train(cfgs, split, bases, reporter)
        except DivergedError as e:  # one seed alone raises, as `fit` does
            made = [e]
        return [m if isinstance(m, DivergedError) else m[1] for m in made]


def register(cls: type[Contender]) -> type[Contender]:
    """Class decorator: make a contender selectable by its `name`."""
    if cls.name in _REGISTRY and _REGISTRY[cls.name] is not cls:
        raise ValueError(f"contender name {cls.name!r} is taken by {_REGISTRY[cls.name].__name__}")
    cls.artifact = cls.artifact or cls.name
    _REGISTRY[cls.name] = cls
    return cls


def get(name: str) -> Contender:
    if name not in _REGISTRY:
        raise ConfigError("contenders", f"unknown contender {name!r}; choose among {', '.join(_REGISTRY)}")
    return _REGISTRY[name]()


def names() -> tuple[str, ...]:
    return tuple(_REGISTRY)


def pretraining_methods() -> tuple[str, ...]:
    """The contenders that pretrain their own encoder: `pretrain --method` takes these."""
    return tuple(n for n, c in _REGISTRY.items() if getattr(c, "pretrain", None) is not None)
