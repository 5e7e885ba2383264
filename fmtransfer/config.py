"""The experiment's settings: one typed, frozen, self-validating object.

Every key defaults to the book's value (docs/experiment.md), so `Config()` and an empty TOML file
are the book's experiment. Keys are addressed as `section.key` (`transfer.freeze_epochs`) in
files, in overrides and in errors. Each section checks its own values when it is built, however
it is built (directly, from a dict, from TOML), converting values by the fields' type hints; the
whole `Config` then checks what spans sections (reuse depth against the model's depth).

The defaults and help texts live in the sections' fields only: the CLI builds its options from them.

Which sections exist is known only at run time. The core sections (data, model, train_a,
baseline, transfer, pretrain, study) are `Config`'s own dataclass fields. Every other section
belongs to a contender and is declared beside it, in its module or its package; the contenders'
registry hands each one to `register_section` when it registers the contender. This module
imports no contender: it keeps a registry of section classes that others fill (dependency
inversion), and `find_sections_with` lets the contenders' registry load its plug-ins the first
time every section is needed, not at import. A `Config` holds the registered sections' values
in one tuple field (`registered`), so it stays frozen, hashable and equal by value; attribute
access (`cfg.gan`), `replace`, `to_dict` (core sections, registered ones, then study),
`from_dict`, `field_info` and the unknown-section checks all read the same registry.

Example:
    >>> cfg = Config().replace(**{"transfer.freeze_epochs": 2})
    >>> cfg.transfer.freeze_epochs
    2
    >>> ModelConfig(arch="cnn").hidden
    (16, 32, 64)
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
import re
import sys
import typing
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Callable, ClassVar, Iterable, Literal, Mapping, Union

from fmtransfer.errors import ConfigError, UsageError, check_argument
from fmtransfer.space import Choice, IntRange, LogUniform, Space, spaces

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib

CLASS_NAMES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)


class ClassId(int):
    """A Fashion-MNIST class, typed as its id (0-9) or its name as the dataset spells it: a field
    of this type takes "Sandal", "t-shirt/top", "T-shirt" or "ankle-boot" as well as 5, 0 or 9."""


def _class_key(text: str) -> str:
    # Case, spaces, hyphens and underscores vary with how a name was typed ("Ankle boot" needs
    # quoting on a command line; ankle-boot or ankle_boot does not).
    return "".join(c for c in text.lower() if c not in " -_")


# Each name, and each half of "T-shirt/top", as _class_key folds it.
_CLASS_BY_KEY = {key: k for k, name in enumerate(CLASS_NAMES)
                 for key in {_class_key(name), *(_class_key(part) for part in name.split("/"))}}


def class_list() -> str:
    """Every class as `0 T-shirt/top, 1 Trouser, ...`, for messages that refuse a class."""
    return ", ".join(f"{k} {name}" for k, name in enumerate(CLASS_NAMES))

# The two learning-rate pairs (phase 1 frozen, phase 2 fine-tune) the chapter's sources use.
LR_PRESETS = {
    "book": (1e-2, 1e-4),  # the book text: plain "sgd" (1e-2), then 1e-4
    "notebook": (1e-3, 1e-3),  # the book's notebook
}

# Each family's default `model.hidden`: `ModelConfig(arch="cnn")` is a working network.
DEFAULT_HIDDEN = {"dense": (300, 100, 50, 50, 50), "cnn": (16, 32, 64)}
ARCHS = tuple(DEFAULT_HIDDEN)  # model.arch's values
ACTIVATIONS = ("selu", "relu", "elu", "tanh", "sigmoid", "gelu", "swish", "leaky_relu")
INITIALIZERS = ("glorot_uniform", "glorot_normal", "he_normal", "he_uniform", "lecun_normal", "lecun_uniform")
Reuse = Union[int, Literal["all"]]
# Bounds on the counts that reach TensorFlow, whose graphs hold them as 32-bit integers: a batch
# larger than the 60,000 training images is one batch of all of them; a layer is at most this wide.
MAX_BATCH = 60_000
MAX_UNITS = 65_536
MAX_INT = 2**63 - 1  # any integer setting: what NumPy and TensorFlow can hold at all
# Task B's labelled sample: the book's first N images, or a data seed that draws N at random.
BSample = Union[int, Literal["first"]]


# The most epochs any training loop takes: the book trains 20; more is a typo, not an experiment,
# and would hold a study's slot for days.
MAX_EPOCHS = 10_000
MAX_SEED = 2**32 - 1  # NumPy's and Keras' seeds are 32-bit


@dataclass(frozen=True)
class Bounds:
    """The range a numeric setting must lie in (each number of a list setting): from `low` to
    `high`, an end excluded where `open_low`/`open_high` says so; `why` says where an end comes
    from. Every section checks its fields' bounds when built (`Section.__post_init__`), before
    its own `check`, so a range is declared once, beside the setting, and said the same way."""

    low: float
    high: float = math.inf
    open_low: bool = False
    open_high: bool = False
    why: str = ""

    def holds(self, value: float) -> bool:
        above = self.low < value if self.open_low else self.low <= value
        below = value < self.high if self.open_high or self.high == math.inf else value <= self.high
        return above and below  # NaN is neither

    def problem(self, value: Any) -> str:
        if self.high == math.inf:
            said = f"a finite number {'more than' if self.open_low else 'of'} {_number(self.low)}" + (
                "" if self.open_low else " or more")
            finite = isinstance(value, (int, float)) and math.isfinite(value)
            said = ("positive" if finite else "positive and finite") if (self.low, self.open_low) == (0, True) else said
        elif not (self.open_low or self.open_high):
            said = f"from {_number(self.low)} to {_number(self.high)}"
        else:
            said = (f"{'more than' if self.open_low else 'at least'} {_number(self.low)} and "
                    f"{'less than' if self.open_high else 'at most'} {_number(self.high)}")
        return f"must be {said}{self.why}, got {value!r}"


def _number(x: float) -> str:
    """A bound as a reader types it: 4294967295, not 4.29497e+09."""
    return str(int(x)) if float(x).is_integer() else f"{x:g}"


def setting(default: Any, help: str, *, option: str | None = None, show: str | None = None,
            bounds: Bounds | None = None, space: Space | None = None) -> Any:
    """A config field: its default, the help text the CLI shows, and optionally its option name
    (default: `--` + the key with dashes), how `--help` shows the default, the range its numbers
    must lie in (`bounds`), and the search space a tuned study's trials draw it from
    (`fmtransfer.space`)."""
    return field(default=default, metadata={"help": help, "option": option, "show": show, "bounds": bounds,
                                            "space": space})


# The ranges most settings share.
EPOCHS = Bounds(0, MAX_EPOCHS)
SOME_EPOCHS = Bounds(1, MAX_EPOCHS)
RATE = Bounds(0, open_low=True)  # a learning rate or strength: any positive finite step (huge ones diverge, and say so)
BATCH = Bounds(1, MAX_BATCH, why=" (a larger batch is one batch of all 60,000 training images)")
SEED = Bounds(0, MAX_SEED, why=" (seeds are 32-bit)")
UNITS = Bounds(1, MAX_UNITS)
FRACTION = Bounds(0, 1, open_high=True)  # a dropout rate, a momentum
CLASS = Bounds(0, 9, why=f" (an id, or a name: {class_list()})")
# Accuracy points (an equivalence margin): a gain lies within +-100 points, so a
# margin of 100 or more would call every contender equivalent, whatever it scored.
POINTS = Bounds(0, 100, open_low=True, open_high=True, why=" accuracy points")
MAX_STACK = 256  # seeds in one stacked graph: each holds its own copy of every layer
MAX_STUDY_SEEDS = 10_000  # seeds a study runs: each is a whole experiment per grid point


# ----------------------------------------------------------------------------- coercion by type hint

def coerce(value: Any, hint: Any, key: str) -> Any:
    """`value` (from TOML, an option string or Python) as the type `hint` names, or ConfigError."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is Union:
        if value is None and type(None) in args:
            return None
        errors = []
        for member in (a for a in args if a is not type(None)):
            try:
                return coerce(value, member, key)
            except ConfigError as e:
                errors.append(e.problem)
        raise ConfigError(key, " or ".join(dict.fromkeys(e.split(", got")[0] for e in errors)) + f", got {value!r}")
    if origin is Literal:
        found = value.strip().lower() if isinstance(value, str) else value
        if found in args:
            return found
        raise ConfigError(key, f"must be one of {', '.join(map(str, args))}, got {value!r}")
    if origin is tuple:
        return _tuple(value, args, key)
    if hint is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in ("true", "false"):
            return value.strip().lower() == "true"
        raise ConfigError(key, f"expected true or false, got {value!r}")
    if hint is ClassId:
        if isinstance(value, str) and _class_key(value) in _CLASS_BY_KEY:
            return _CLASS_BY_KEY[_class_key(value)]
        if isinstance(value, str) and not value.strip().lstrip("-").isdigit():
            raise ConfigError(key, f"{value!r} is not a Fashion-MNIST class; give an id or a name: {class_list()}")
        return coerce(value, int, key)
    if hint is int:
        if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
            raise ConfigError(key, f"expected an integer, got {value!r}")
        try:
            number = int(value.strip() if isinstance(value, str) else value)
        except (TypeError, ValueError, OverflowError):
            raise ConfigError(key, f"expected an integer, got {value!r}") from None
        if abs(number) > MAX_INT:
            raise ConfigError(key, f"is too large to be a count of anything, got {value!r}")
        return number
    if hint is float:
        if isinstance(value, bool):
            raise ConfigError(key, f"expected a number, got {value!r}")
        try:
            return float(value.strip() if isinstance(value, str) else value)
        except (TypeError, ValueError):
            raise ConfigError(key, f"expected a number, got {value!r}") from None
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(key, f"expected a string, got {value!r}")
        return value
    raise TypeError(f"no coercion for {key}: {hint!r}")  # pragma: no cover - a new field's type


def _tuple(value: Any, args: tuple, key: str) -> tuple:
    variadic = len(args) == 2 and args[1] is Ellipsis
    if isinstance(value, str):
        value = _split_list(value, ":" if not variadic and ":" in value else ",", key)
    if isinstance(value, range):
        value = list(value)
    if not isinstance(value, (list, tuple)):
        raise ConfigError(key, f"expected a list, got {value!r}")
    if variadic:
        return tuple(coerce(v, args[0], key) for v in value)
    if len(value) != len(args):
        raise ConfigError(key, f"must be {len(args)} values, got {list(value)}")
    return tuple(coerce(v, a, key) for v, a in zip(value, args))


def _split_list(text: str, sep: str, key: str) -> list[str]:
    """The one parser of list values typed as text ("5:6" a pair; "5:6,0:2" pairs; "300,100"
    sizes): items separated by `sep`, spaces around them allowed, anything else refused, since
    "42 43" read as one item would silently become 4243."""
    if not text.strip():
        raise ConfigError(key, f"is empty; give at least one value, separated by '{sep}'")
    items = [item.strip() for item in text.split(sep)]
    if any(item == "" for item in items):
        raise ConfigError(key, f"has an empty item; separate values with single '{sep}', got {text!r}")
    if any(len(item.split()) > 1 for item in items):
        raise ConfigError(key, f"separate values with '{sep}', not spaces, got {text!r}")
    return items


@functools.lru_cache(maxsize=None)
def _hints(cls: type) -> dict[str, Any]:
    """A class's resolved type hints: resolving them is slow, and every config built needs them."""
    return typing.get_type_hints(cls)


class Section:
    """A frozen config section that converts and checks its own fields when built."""

    NAME: ClassVar[str] = ""

    def __post_init__(self) -> None:
        hints = _hints(type(self))
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, Section) or f.metadata.get("sections"):
                continue
            if value is not None or type(None) not in typing.get_args(hints[f.name]):
                object.__setattr__(self, f.name, coerce(value, hints[f.name], self.key(f.name)))
            bounds = f.metadata.get("bounds")
            if bounds is not None:
                for number in _numbers(getattr(self, f.name)):  # each of a list's, by the same bounds
                    self.fail_unless(bounds.holds(number), f.name, bounds.problem(number))
        self.check()

    def check(self) -> None:
        """Reject impossible values; override in each section."""

    def key(self, name: str) -> str:
        return f"{self.NAME}.{name}" if self.NAME else name

    def fail_unless(self, ok: bool, name: str, problem: str) -> None:
        if not ok:
            raise ConfigError(self.key(name), problem)

    def fail_unless_within(self, name: str, bounds: "Bounds") -> None:
        """`name` within `bounds`: what a field's `setting(bounds=...)` declares, for a range that
        depends on other keys (a plug-in section written before `bounds` may call the helpers below)."""
        value = getattr(self, name)
        self.fail_unless(bounds.holds(value), name, bounds.problem(value))

    def fail_unless_between(self, name: str, low: int, high: int, why: str = "") -> None:
        """`name` an integer from `low` to `high`; `why` says where the upper bound comes from."""
        self.fail_unless_within(name, Bounds(low, high, why=why))

    def fail_unless_batch(self, name: str = "batch_size") -> None:
        self.fail_unless_within(name, BATCH)

    def fail_unless_positive(self, *names: str) -> None:
        """Each of `names` a positive finite number (learning rates, strengths)."""
        for name in names:
            self.fail_unless_within(name, RATE)

    def to_dict(self) -> dict[str, Any]:
        return {f.name: _plain(getattr(self, f.name)) for f in fields(self)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]):
        if not isinstance(d, Mapping):
            raise ConfigError(cls.NAME, f"must be a table of keys, got {d!r}")
        known = {f.name for f in fields(cls)}
        for name in d:
            if name not in known:
                raise ConfigError(f"{cls.NAME}.{name}" if cls.NAME else name, "unknown key")
        return cls(**d)


def _numbers(value: Any) -> Iterable[float]:
    """The numbers in a setting's value (each of a list's): what its bounds apply to; not
    True/False, nor a word such as "all" or "first"."""
    if isinstance(value, (tuple, list)):
        for v in value:
            yield from _numbers(v)
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        yield value


def _plain(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    if isinstance(value, Section):
        return value.to_dict()
    return value


# ----------------------------------------------------------------------------- the sections

@dataclass(frozen=True)
class DataConfig(Section):
    """Where the data is and the book's split (docs/experiment.md, "Split")."""

    NAME = "data"
    dir: str = setting("", "Folder holding the four Fashion-MNIST .gz files (empty: search).", option="--data-dir",
                       show="search")
    b_classes: tuple[ClassId, ClassId] = setting((5, 6), "Task B's two classes, negative,positive (label 1.0 = positive), "
                                                                "each an id or a name: 5,6 or Sandal,Shirt.", bounds=CLASS)
    b_train_size: int = setting(200, "Task-B training images kept.", bounds=Bounds(1, 60_000, why=" training images"))
    b_sample: BSample = setting("first", "Which task-B training images: first (the book's, the first "
                                         "b_train_size), or a data seed N drawing them at random from the "
                                         "training images outside the validation set.", bounds=SEED)
    valid_size: int = setting(5000, "Training images held out for validation.",
                              bounds=Bounds(0, 59_999, why=" (of the 60,000 training images)"))
    valid_from: Literal["first", "last"] = setting("first", "Which training images validate: the first "
                                                            "valid_size (2nd edition) or the last (3rd edition).")
    verify_checksums: bool = setting(True, "Check the files against the published SHA-256 sums.")

    def __post_init__(self) -> None:
        try:
            super().__post_init__()
        except ConfigError as e:
            if e.key != self.key("b_sample") or "a data seed" in e.problem:
                raise
            raise ConfigError(e.key, f"must be first or a data seed (an integer from 0 to 2**32 - 1), "
                                     f"got {self.b_sample!r}") from None

    def check(self) -> None:
        check_pair(self.b_classes, self.key("b_classes"))


@dataclass(frozen=True)
class ModelConfig(Section):
    """The network family and its hidden stack; models A and B share it."""

    NAME = "model"
    arch: Literal["dense", "cnn"] = setting("dense", "Network family.")
    hidden: Union[tuple[int, ...], None] = setting(
        None, "Hidden layer sizes (dense), or filters per conv-pool block (cnn).",
        show="300,100,50,50,50 (dense), 16,32,64 (cnn)", bounds=Bounds(1, MAX_UNITS, why=" units (or filters) a layer"))
    activation: str = setting("selu", f"Hidden activation: {', '.join(ACTIVATIONS)}.")
    cnn_dense: int = setting(64, "cnn only: units of the dense block on the conv blocks (0: none).",
                             bounds=Bounds(0, MAX_UNITS, why=" units (0: none)"))
    # The 2nd edition keeps Keras' default; the 3rd edition's ReLU networks use he_normal.
    initializer: str = setting("glorot_uniform", f"Hidden layers' kernel initializer: {', '.join(INITIALIZERS)}.")

    def __post_init__(self) -> None:
        if self.hidden is None:
            arch = coerce(self.arch, Literal["dense", "cnn"], self.key("arch"))
            object.__setattr__(self, "hidden", DEFAULT_HIDDEN[arch])
        super().__post_init__()

    def check(self) -> None:
        self.fail_unless(len(self.hidden) >= 1, "hidden", "must list at least one layer size")
        if self.arch == "cnn":
            self.fail_unless(len(self.hidden) <= 3, "hidden",
                             "a cnn has at most 3 conv-pool blocks on 28x28 images (pooling halves each side)")
        self.fail_unless(self.activation in ACTIVATIONS, "activation",
                         f"must be one of {', '.join(ACTIVATIONS)}, got {self.activation!r}")
        self.fail_unless(self.initializer in INITIALIZERS, "initializer",
                         f"must be one of {', '.join(INITIALIZERS)}, got {self.initializer!r}")

    @property
    def stacks(self) -> bool:
        """Whether seeds of this network can train as one stack (`study.stack`): only Flatten and
        Dense layers become one batched matmul over the seeds, so dense networks only."""
        return self.arch == "dense"

    @property
    def blocks(self) -> int:
        """How many hidden blocks the network has: what reuse depth and freezing count."""
        return len(self.hidden) + (1 if self.arch == "cnn" and self.cnn_dense else 0)


@dataclass(frozen=True)
class TrainAConfig(Section):
    """Model A on task A's eight classes."""

    NAME = "train_a"
    # No search spaces: model A is made once per seed and shared by every trial and contender
    # (docs/contenders.md, "Search spaces").
    epochs: int = setting(20, "Model A epochs.", option="--a-epochs", bounds=EPOCHS)
    learning_rate: float = setting(1e-3, "Model A SGD learning rate.", option="--a-learning-rate", bounds=RATE)


@dataclass(frozen=True)
class BaselineConfig(Section):
    """Model B from scratch on task B's few images."""

    NAME = "baseline"
    # Tuned with the same budget as every contender, so a gain is not the baseline's bad luck.
    # Epochs: the chapter's 20, from a quarter of it to 2.5 times. Rate: the chapter's plain SGD
    # rates from scratch are 1e-2 (the text) and 1e-3 (the notebook); a decade beyond each.
    epochs: int = setting(20, "Baseline epochs.", option="--b-epochs", bounds=EPOCHS, space=IntRange(5, 50))
    learning_rate: float = setting(1e-3, "Baseline SGD learning rate.", option="--b-learning-rate", bounds=RATE,
                                   space=LogUniform(1e-4, 1e-1))


@dataclass(frozen=True)
class TransferConfig(Section):
    """The two phases of building model B on pretrained layers (model A's or an encoder's)."""

    NAME = "transfer"
    reuse_layers: Reuse = setting("all", "How many of the pretrained hidden layers to reuse (from the bottom), or all.",
                                  bounds=Bounds(1, MAX_UNITS, why=" layers, or all"))
    # The spaces: epochs around the chapter's 4 + 16 (a total from 5 to 50, as the baseline's);
    # the frozen phase trains a new head from scratch, so its rate ranges as the baseline's; the
    # fine-tuning rate around the chapter's 1e-4 (text) and 1e-3 (notebook), a decade beyond
    # each, and never above the phases' largest usual rate, 1e-2, where fine-tuning stops being
    # gentle. A pretraining contender's B phase is these same keys: its encoder stays fixed.
    freeze_epochs: int = setting(4, "Phase 1 epochs, reused layers frozen.", bounds=EPOCHS, space=IntRange(1, 10))
    fine_tune_epochs: int = setting(16, "Phase 2 epochs, reused layers unfrozen.", bounds=EPOCHS,
                                    space=IntRange(4, 40))
    frozen_learning_rate: float = setting(1e-2, "Phase 1 SGD learning rate.", bounds=RATE,
                                          space=LogUniform(1e-4, 1e-1))
    fine_tune_learning_rate: float = setting(1e-4, "Phase 2 SGD learning rate.", bounds=RATE,
                                             space=LogUniform(1e-5, 1e-2))
    unfreeze: str = setting("all", "Phase 2 unfreezes all reused layers, or the top K: top:K.")

    def check(self) -> None:
        top = self.unfreeze_top
        self.fail_unless(top is None or top >= 1, "unfreeze", "top:0 unfreezes nothing; use top:1 or more, or all")

    @property
    def unfreeze_top(self) -> int | None:
        """None to unfreeze every reused layer, K for only the top K."""
        if self.unfreeze == "all":
            return None
        head, _, k = self.unfreeze.partition(":")
        if head == "top" and k.isdigit():
            return int(k)
        raise ConfigError(self.key("unfreeze"), f"must be 'all' or 'top:K' (K >= 1), got {self.unfreeze!r}")


@dataclass(frozen=True)
class PretrainConfig(Section):
    """Unsupervised pretraining of the hidden stack (ch. 11.2.2)."""

    NAME = "pretrain"
    # No search spaces here, nor in a pretraining method's own section: an encoder is made once
    # per seed and shared by every trial (docs/contenders.md, "Search spaces").
    method: str = setting("autoencoder", "What `pretrain` trains: autoencoder (the whole stack at once), greedy "
                                         "(one hidden layer at a time), gan (a GAN's discriminator) or rbm (a "
                                         "stack of RBMs; dense only).")
    unlabelled_size: int = setting(0, "Unlabelled images: the first N training images, labels ignored (0: all).",
                                   show="0: all", bounds=Bounds(0, 60_000, why=" training images (0: all)"))
    epochs: int = setting(10, "Autoencoder pretraining epochs; greedy, gan and rbm have their own.",
                          option="--p-epochs", bounds=EPOCHS)
    # SGD on a per-pixel cross-entropy needs a larger step than the classifiers (docs/pretrain.md).
    learning_rate: float = setting(0.1, "Autoencoder pretraining SGD learning rate; greedy, gan and rbm have "
                                        "their own.", option="--p-learning-rate", bounds=RATE)
    # `method` names a contender: the registry checks it where contenders are resolved
    # (`contenders.pretraining_method`). unlabelled_size's bound is the training set's; pretraining
    # checks it against the split it uses.


@dataclass(frozen=True)
class StudyConfig(Section):
    """The grid `study` runs; every run is a complete experiment."""

    NAME = "study"
    seeds: tuple[int, ...] = setting((), "Seeds to run (empty: the top-level seed only).", show="--seed", bounds=SEED)
    # Empty: data.b_sample's one sample. Crossed with the seeds: model A and the encoders are made
    # once per seed and shared by its draws; only task B's runs multiply.
    data_seeds: tuple[int, ...] = setting((), "Data seeds, each drawing task B's training images at random "
                                              "(empty: data.b_sample).", show="data.b_sample: first", bounds=SEED)
    # Empty: the experiment's own, so a config that sets [data] (configs/ml3.toml) studies its task.
    pairs: tuple[tuple[ClassId, ClassId], ...] = setting((), "Task-B class pairs, e.g. 5:6,0:2,7:9 or Sandal:Shirt "
                                                             "(empty: data.b_classes).",
                                                         show="data.b_classes: 5:6", bounds=CLASS)
    b_train_sizes: tuple[int, ...] = setting((), "Task-B training sizes, e.g. 50,200,1000 (empty: "
                                                 "data.b_train_size).", show="data.b_train_size: 200",
                                             bounds=Bounds(1, 60_000, why=" training images"))
    reuse_layers: tuple[Reuse, ...] = setting(("all",), "Reuse depths, e.g. 1,3,all.", option="--reuse-depths",
                                              bounds=Bounds(1, MAX_UNITS, why=" layers, or all"))
    presets: tuple[Literal["book", "notebook"], ...] = setting(
        ("book",), "Transfer learning-rate presets: book (1e-2, 1e-4), notebook (1e-3, 1e-3).")
    # 1 by default: unstacked, a study's run gives the same numbers to the bit as `fmtransfer run`;
    # stacked, to float precision (bench/README.md measures both).
    stack: Union[int, Literal["auto"]] = setting(
        1, "Train up to K seeds of a (pair, size) as one graph (dense model A, baseline, transfer from A); "
           "auto: 10. Faster; numbers agree with 1 to float precision, not to the bit.",
        bounds=Bounds(1, MAX_STACK, why=" seeds in one graph (1: unstacked), or auto"))
    # `--seeds auto`: in accuracy points, as the report shows gains, on the CLI as in a file.
    target_halfwidth: Union[float, None] = setting(
        None, "With --seeds auto: add seeds until every cell's 95% t-interval half-width of the paired "
              "difference is at most this many accuracy points (e.g. 0.5).", show="none",
        # Gains lie within +-100 points, but a t interval over a few seeds may be wider still.
        bounds=Bounds(0, 1000, open_low=True, why=" accuracy points"))
    max_seeds: int = setting(50, "With --seeds auto: stop at this many seeds, however wide the intervals.",
                             bounds=Bounds(2, MAX_STUDY_SEEDS, why=" (a t interval needs two seeds)"))
    # Points, as the report shows gains; recorded when a study is made, before its runs (docs/statistics.md).
    equivalence_margin: float = setting(
        0.5, "Equivalence margin in accuracy points: the report's TOST calls a contender equivalent to the "
             "baseline when its gain is shown to lie within +-this.", bounds=POINTS)

    # Empty: the spaces declared beside the settings (`fmtransfer contenders` lists them). An item
    # moves one declared space's bounds and keeps its kind (log stays log, integers integers).
    space: tuple[str, ...] = setting(
        (), "Search spaces for tuning, replacing a setting's declared bounds: KEY=LOW..HIGH (a choice: "
            "KEY=A|B), e.g. l2_sp.alpha=1e-3..1,transfer.fine_tune_epochs=8..32.", show="as declared")

    def check(self) -> None:
        for name in ("seeds", "data_seeds", "pairs", "b_train_sizes", "reuse_layers", "presets"):
            values = getattr(self, name)
            self.fail_unless(len(set(values)) == len(values), name, f"lists a value twice: {_plain(values)}")
            if name not in ("seeds", "data_seeds", "pairs", "b_train_sizes"):
                self.fail_unless(len(values) >= 1, name, "must list at least one value")
        for pair in self.pairs:
            check_pair(pair, self.key("pairs"))


TUNE_ON = re.compile(r"valid|cv:(\d+)")
MAX_TRIALS = 4096  # trials a contender per (cell, seed, draw): a budget beyond any curve worth drawing
MAX_FOLDS = 20


@dataclass(frozen=True)
class TuneConfig(Section):
    """Tuning with an equal budget (docs/statistics.md, "Tuned with an equal budget"): every
    contender and the baseline get the same number of trials in each cell and (seed, draw), each
    trial's settings drawn from the search spaces declared beside the settings, the selection
    made on validation data alone."""

    NAME = "tune"
    # None: untuned, every run at the settings given. A budget of 0 trials would select nothing.
    trials: Union[int, None] = setting(
        None, "Tune: N trials for every contender and the baseline, in each cell and (seed, draw), each drawing its "
              "settings from the search spaces; the one best on validation data is reported.",
        option="--tune", show="untuned", bounds=Bounds(1, MAX_TRIALS, why=" trials (omit it for an untuned run)"))
    on: str = setting("valid", "What selects a trial: valid (task B's validation images) or cv:K (K-fold "
                               "cross-validation inside the labelled sample, then the chosen settings retrained "
                               "on all of it).", option="--tune-on")
    # Random search: Dodge's budget curves need independent trials. TPE (Optuna) adapts to the
    # trials before it, so its studies get the selection but no budget curves.
    sampler: Literal["random", "tpe"] = setting(
        "random", "How trials draw their settings: random (independent draws; budget curves) or tpe (Optuna's TPE, "
                  "needs fmtransfer[tune]).", option="--sampler")

    @property
    def tuned(self) -> bool:
        return self.trials is not None

    @property
    def folds(self) -> int | None:
        """K of cv:K; None for valid."""
        m = TUNE_ON.fullmatch(self.on)
        return int(m.group(1)) if m and m.group(1) else None

    def check(self) -> None:
        # Spaces around it, as typed, are no other protocol: kept without them, so that `folds`,
        # fingerprints and a resume's comparison read the one form.
        object.__setattr__(self, "on", self.on.strip())
        m = TUNE_ON.fullmatch(self.on)
        self.fail_unless(m is not None, "on", f"must be valid or cv:K (K folds, e.g. cv:5), got {self.on!r}")
        if m.group(1):
            k = int(m.group(1))
            self.fail_unless(2 <= k <= MAX_FOLDS, "on", f"cv:K needs from 2 to {MAX_FOLDS} folds (cv:1 holds nothing "
                                                        f"out), got {self.on!r}")


# ----------------------------------------------------------------------------- the sections in force

# The core sections, in the order `to_dict` gives them; registered sections come before [study].
CORE_SECTIONS: dict[str, type[Section]] = {
    "data": DataConfig, "model": ModelConfig, "train_a": TrainAConfig, "baseline": BaselineConfig,
    "transfer": TransferConfig, "pretrain": PretrainConfig, "study": StudyConfig, "tune": TuneConfig}
_REGISTERED: dict[str, type[Section]] = {}  # name -> class, in registration order
_finders: list[Callable[[], None]] = []
# Option names taken by what is not a config key's own option (--run, --json, an alias such as
# --epochs), declared by whoever makes options of these keys (`reserve_options`).
_RESERVED_OPTIONS: dict[str, str] = {}


def option_name(key: str) -> str:
    """The one option name of config key `key`: its field's `option`, else `--` + the key's last
    part with dashes; a registered section's key, `--SECTION-KEY`."""
    section, _, name = key.rpartition(".")
    cls = sections()[section] if section else Config
    return _option(section, next(f for f in fields(cls) if f.name == name))


def _option(section: str, f: dataclasses.Field) -> str:
    if f.metadata.get("option"):
        return f.metadata["option"]
    if section and section not in CORE_SECTIONS:
        return f"--{section}-{f.name}".replace("_", "-")
    return "--" + f.name.replace("_", "-")


def reserve_options(taken: Mapping[str, str]) -> None:
    """Declare option names (-> what takes each) that no registered section's key may take."""
    _RESERVED_OPTIONS.update(taken)


def _taken_options() -> dict[str, str]:
    """Every option name in force -> what takes it: a config key, or what reserved it."""
    taken = dict(_RESERVED_OPTIONS)
    for section, cls in [("", Config), *CORE_SECTIONS.items(), *_REGISTERED.items()]:
        for f in fields(cls):
            if "help" in f.metadata:  # a setting, not Config's own bookkeeping
                taken[_option(section, f)] = f"config key {section + '.' if section else ''}{f.name}"
    return taken


def register_section(cls: type[Section]) -> type[Section]:
    """Make `cls` a section of every Config built from now on: `[NAME]` in TOML, `NAME.key` in
    overrides and errors, `cfg.NAME` in code. Registering the same class again changes nothing.

    Raises:
        ValueError: `cls` is not a frozen dataclass Section with a NAME, or NAME is taken (by a core
            section, another registered class, or an attribute of Config).
    """
    name = getattr(cls, "NAME", "")
    if not (isinstance(cls, type) and issubclass(cls, Section) and dataclasses.is_dataclass(cls)):
        raise ValueError(f"{cls!r} is not a dataclass subclass of config.Section")
    if not name.isidentifier() or name.startswith("_"):
        raise ValueError(f"section {cls.__qualname__} needs a NAME that is a Python identifier, got {name!r}")
    if _REGISTERED.get(name) is cls:
        return cls
    if name in CORE_SECTIONS or name in _REGISTERED or hasattr(Config, name):
        owner = _REGISTERED.get(name) or CORE_SECTIONS.get(name)
        raise ValueError(f"section [{name}] is taken" + (f" by {owner.__module__}.{owner.__qualname__}" if owner
                                                         else " by an attribute of Config"))
    if "__" in name:  # `section__key=` keyword overrides and option destinations split at "__"
        raise ValueError(f"section [{name}] needs a NAME without a double underscore")
    taken = _taken_options()
    for f in fields(cls):
        if (option := _option(name, f)) in taken:  # the CLI would set one of them through the other's option
            raise ValueError(f"section [{name}]'s key {f.name} would take option {option}, which is taken by "
                             f"{taken[option]}; rename the section or the key")
    try:
        cls()
    except ConfigError as e:  # its own defaults must pass its own checks, or no Config could be built
        raise ValueError(f"section [{name}]'s defaults are refused: {e}") from None
    for key, space in spaces(cls).items():  # and a trial must never draw a value its checks refuse
        try:
            check_space(cls, key, space)
        except ConfigError as e:
            raise ValueError(f"section [{name}]'s search space is refused: {e}") from None
    _REGISTERED[name] = cls
    _defaults.cache_clear()
    return cls


def unregister_section(name: str) -> None:
    """Undo `register_section` (for a contender defined on the fly, in a test or a notebook)."""
    _REGISTERED.pop(name, None)
    _defaults.cache_clear()


def order_sections(names: Iterable[str]) -> None:
    """List the registered sections in this order, any not named after them: the order of
    `sections()`, of `to_dict` and of the Configs built from now on."""
    first = [n for n in dict.fromkeys(names) if n in _REGISTERED]
    ordered = {n: _REGISTERED[n] for n in [*first, *_REGISTERED]}
    _REGISTERED.clear()
    _REGISTERED.update(ordered)
    _defaults.cache_clear()


def find_sections_with(finder: Callable[[], None]) -> None:
    """Have `finder()` register sections the first time every section is needed (the contenders'
    registry loads its plug-ins there), so that importing does not load them."""
    _finders.append(finder)


def sections() -> dict[str, type[Section]]:
    """Every section in force, name -> class: the core ones, then the registered ones, [study] and [tune] last."""
    while _finders:
        _finders.pop(0)()  # popped first: a finder that builds a Config does not call itself again
    core = {k: v for k, v in CORE_SECTIONS.items() if k not in ("study", "tune")}
    return {**core, **_REGISTERED, "study": StudyConfig, "tune": TuneConfig}


@dataclass(frozen=True)
class Config(Section):
    """Every setting of an experiment, a study and the pretraining; the book's by default.

    Sections may be given as section objects or as dicts, the registered ones too
    (`Config(gan={"epochs": 3})`), and are read as attributes (`cfg.gan.epochs`). `contenders`
    names the ways to build model B to compare (`fmtransfer.contenders.select` resolves them);
    the baseline is always one, and an empty tuple means the book's pair, baseline and transfer
    from model A.

    Example:
        >>> Config(seed=7, transfer={"freeze_epochs": 2}).transfer.freeze_epochs
        2
    """

    seed: int = setting(42, "Seed for every random number generator.", bounds=SEED)
    batch_size: int = setting(32, "Mini-batch size.", bounds=BATCH)
    contenders: tuple[str, ...] = setting((), "Ways to build model B, e.g. transfer,autoencoder,greedy, or all.",
                                          show="baseline,transfer")
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train_a: TrainAConfig = field(default_factory=TrainAConfig)
    baseline: BaselineConfig = field(default_factory=BaselineConfig)
    transfer: TransferConfig = field(default_factory=TransferConfig)
    pretrain: PretrainConfig = field(default_factory=PretrainConfig)
    study: StudyConfig = field(default_factory=StudyConfig)
    tune: TuneConfig = field(default_factory=TuneConfig)
    # The registered sections' values, in the order of `sections()`: a tuple, so that a Config
    # stays hashable and compares equal by value.
    registered: tuple[Section, ...] = field(default=(), repr=False, metadata={"sections": True})

    def __init__(self, **given: Any) -> None:
        known = sections()
        for f in fields(self):
            if f.name == "registered":
                continue
            value = given.pop(f.name) if f.name in given else (
                f.default_factory() if f.default is dataclasses.MISSING else f.default)
            object.__setattr__(self, f.name, value)
        held = {s.NAME: s for s in given.pop("registered", ())}
        for name in given:
            if name not in known:
                raise ConfigError(name, f"unknown section [{name}]" if isinstance(given[name], Mapping)
                                  else "unknown key")
        values = []
        for name, cls in known.items():
            if name in CORE_SECTIONS:
                continue
            value = given.get(name, held.get(name))
            values.append(value if isinstance(value, cls) else cls() if value is None else cls.from_dict(value))
        # Held sections no longer registered (`dataclasses.replace` of an older Config) are kept.
        values += [s for name, s in held.items() if name not in known]
        object.__setattr__(self, "registered", tuple(values))
        self.__post_init__()

    def __post_init__(self) -> None:
        for name, cls in CORE_SECTIONS.items():
            value = getattr(self, name)
            if not isinstance(value, cls):
                object.__setattr__(self, name, cls.from_dict(value))
        super().__post_init__()

    def __getattr__(self, name: str) -> Any:
        # Only called when ordinary lookup fails: a registered section, by its name.
        for section in self.__dict__.get("registered", ()):
            if section.NAME == name:
                return section
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def to_dict(self) -> dict[str, Any]:
        """Plain data: top-level keys, the core sections, the registered ones, then [study] and [tune]."""
        d = {f.name: _plain(getattr(self, f.name)) for f in fields(self)
             if f.name not in ("registered", "study", "tune")}
        d.update({s.NAME: s.to_dict() for s in self.registered})
        d["study"] = self.study.to_dict()
        d["tune"] = self.tune.to_dict()
        return d

    def check(self) -> None:
        blocks = self.model.blocks
        check_reuse(self.transfer.reuse_layers, blocks, "transfer.reuse_layers")
        check_unfreeze(self.transfer, self.transfer.reuse_layers, blocks)
        for reuse in self.study.reuse_layers:
            check_reuse(reuse, blocks, "study.reuse_layers")
        if self.study.space:
            spaces_in_force(self)  # each override names a declared space and stays within its setting
        # A preset fixes the rates a tuned study's trials draw from their spaces: the two would
        # compare one set of draws under two names.
        self.fail_unless(not self.tune.tuned or self.study.presets == ("book",), "study.presets",
                         "a tuned study draws the learning rates from their search spaces, so presets mean nothing "
                         "there; drop --presets, or --tune")
        # Whether each name is a contender, and builds model.arch, the registry says (`contenders.select`).
        self.fail_unless(len(set(self.contenders)) == len(self.contenders), "contenders",
                         f"lists a contender twice: {list(self.contenders)}")

    @property
    def study_seeds(self) -> tuple[int, ...]:
        return self.study.seeds or (self.seed,)

    @property
    def study_data_seeds(self) -> tuple[BSample, ...]:
        """The task-B samples a study crosses with its seeds: its data seeds, else data.b_sample."""
        return self.study.data_seeds or (self.data.b_sample,)

    @property
    def study_pairs(self) -> tuple[tuple[int, int], ...]:
        return self.study.pairs or (tuple(self.data.b_classes),)

    @property
    def study_sizes(self) -> tuple[int, ...]:
        return self.study.b_train_sizes or (self.data.b_train_size,)

    def replace(self, **dotted: Any) -> "Config":
        """A validated copy with `section.key` (or top-level) values replaced.

        Example:
            >>> Config().replace(**{"model.arch": "cnn"}).model.hidden
            (16, 32, 64)
        """
        return merge([(None, dotted)], base=self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Config":
        return merge([(None, flatten(d))])


# ----------------------------------------------------------------------------- checks spanning keys

def check_pair(pair: tuple[int, ...], key: str) -> None:
    # Each class's range is its bounds' (CLASS), checked before this.
    if len(pair) != 2:
        raise ConfigError(key, f"must be two classes, got {list(pair)}")
    if pair[0] == pair[1]:
        raise ConfigError(key, f"the two classes must differ, got {pair[0]} twice")


def check_reuse(reuse: Reuse, blocks: int, key: str) -> None:
    if reuse != "all" and not 1 <= reuse <= blocks:
        raise ConfigError(key, f"model A has {blocks} hidden layers; reuse between 1 and {blocks}, or 'all', got {reuse}")


def check_unfreeze(t: TransferConfig, reuse: Reuse, blocks: int) -> None:
    """`top:K` must not unfreeze more layers than `reuse` keeps."""
    top, kept = t.unfreeze_top, reuse_count(reuse, blocks)
    if top is not None and top > kept:
        raise ConfigError("transfer.unfreeze",
                          f"top:{top} unfreezes more than the {kept} reused layers; use top:{kept} or fewer")


def reuse_count(reuse: Reuse, blocks: int) -> int:
    return blocks if reuse == "all" else int(reuse)


# ----------------------------------------------------------------------------- smoke-test settings

def below_chapter(settings: Mapping[str, Any], sections: Iterable[str] | None = None) -> tuple[str, ...]:
    """The settings of `settings` (a config as `Config.to_dict` writes it, or a study.json's) that
    are below the chapter's, each said as `key value (the chapter's: default)`: what makes a run a
    smoke test whose numbers say nothing about transfer. Empty for the chapter's experiment.

    Below means fewer epochs than the default in any section (every `epochs` or `*_epochs` key,
    a plug-in's too), or fewer images: a part of the unlabelled images, a smaller validation set.
    Task B's training size is not counted: it is what a study varies on purpose. `sections`: only
    those sections' settings (and [data]'s) count, the ones a run's contenders read; None: all.

    Example:
        >>> below_chapter({"train_a": {"epochs": 2}})
        ("train_a.epochs 2 (the chapter's: 20)",)
    """
    given, defaults = flatten(settings), flatten(_defaults().to_dict())
    used = None if sections is None else {*sections, "data", ""}
    found = []
    for key, default in defaults.items():
        section, _, name = key.rpartition(".")
        value = given.get(key, default)
        if (used is not None and section not in used) or isinstance(value, bool) or not isinstance(value, int):
            continue
        if name == "epochs" or name.endswith("_epochs") or key == "data.valid_size":
            if value < default:
                found.append(f"{key} {value} (the chapter's: {default})")
        elif key == "pretrain.unlabelled_size" and value != 0:
            found.append(f"{key} {value} (the chapter's: 0, every training image)")
    return tuple(found)


# ----------------------------------------------------------------------------- search spaces

def declared_spaces() -> dict[str, Space]:
    """Every search space the sections in force declare, by dotted key, in the sections' order."""
    return {key: space for cls in sections().values() for key, space in spaces(cls).items()}


def check_space(cls: type[Section], key: str, space: Space) -> None:
    """The one place a space is checked against its setting: its kind must suit the setting's
    type, and each of its bounds (each choice) must be a value the section itself accepts, so
    that no trial can draw a value its own checks would refuse. The section's checks are the
    setting's valid range, so a range added to them later (a bound on `setting`) is enforced
    here with no edit. A ConfigError naming `key` otherwise."""
    name = key.rpartition(".")[2]
    hint = _hints(cls)[name]
    # Bounds alone cannot tell: a uniform space between two integers still draws fractions.
    if hint is int and not isinstance(space, (IntRange, Choice)):
        raise ConfigError(key, f"an integer setting needs an integer space (IntRange or Choice), "
                               f"got {space.describe()}")
    for value in space.bounds():
        try:
            cls(**{name: value})
        except ConfigError as e:
            raise ConfigError(key, f"the space {space.describe()} reaches {value!r}, which the setting refuses: "
                                   f"{e.problem}") from None


def spaces_in_force(cfg: Config) -> dict[str, Space]:
    """The declared spaces, with `study.space`'s overrides of their bounds applied and checked.

    Raises:
        ConfigError: on `study.space`, naming the item: not KEY=LOW..HIGH, a key with no declared
            space, a key given twice, a low bound above the high one, a log range reaching 0, or
            a bound outside what the setting accepts.

    Example:
        >>> spaces_in_force(Config(study={"space": ("l2_sp.alpha=1e-3..1",)}))["l2_sp.alpha"].describe()
        'log-uniform 1e-3..1'
    """
    declared = declared_spaces()
    found = dict(declared)
    given: set[str] = set()
    for item in cfg.study.space:
        key, sep, bounds = (part.strip() for part in item.partition("="))
        try:
            if not sep or not key:
                raise ConfigError(key, "give KEY=LOW..HIGH, e.g. l2_sp.alpha=1e-3..1")
            if key not in declared:
                raise ConfigError(key, f"{key} has no search space to replace; those that do: {', '.join(declared)}")
            if key in given:
                raise ConfigError(key, f"{key}'s space is given twice")
            given.add(key)
            found[key] = declared[key].rebound(bounds, key)
            check_space(sections()[key.rpartition(".")[0]], key, found[key])
        except ConfigError as e:
            raise ConfigError("study.space", f"{item.strip()}: {e.problem}") from None
    return found


# ----------------------------------------------------------------------------- loading and merging

def flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"transfer": {"freeze_epochs": 4}} -> {"transfer.freeze_epochs": 4}."""
    flat: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, Mapping):
            flat.update(flatten(v, f"{prefix}{k}."))
        else:
            flat[f"{prefix}{k}"] = v
    return flat


def merge(layers: Iterable[tuple[str | None, Mapping[str, Any]]], base: Config | None = None) -> Config:
    """`base` (default `Config()`) with each layer's `section.key` values applied in turn.

    A layer is (source, values); `source` (a config file, a run directory's config.json) is named
    in any error about a key that layer set. A value of None means "not given". Setting
    `model.arch` without `model.hidden` brings the new family's default sizes, unless the hidden
    sizes in force were chosen on purpose (not the old family's default).
    """
    known = sections()
    # A base made before a section was registered takes that section's defaults.
    values = flatten(_defaults().to_dict())
    if base is not None:
        values.update(flatten(base.to_dict()))
    origin: dict[str, str | None] = {}
    for source, layer in layers:
        given = {k: v for k, v in flatten(layer).items() if v is not None}
        for key in given:
            if key not in values:
                section = key.partition(".")[0]
                if "." in key and section not in known:
                    raise ConfigError(key, f"unknown section [{section}]", source=source)
                raise ConfigError(key, "unknown key" if key not in known else
                                  f"is a section; set its keys, e.g. {key}.epochs", source=source)
        if "model.arch" in given and "model.hidden" not in given:
            old_default = DEFAULT_HIDDEN.get(str(values["model.arch"]))
            if old_default is not None and tuple(values["model.hidden"]) == old_default:
                values["model.hidden"] = None
        values.update(given)
        origin.update(dict.fromkeys(given, source))
    nested: dict[str, Any] = {}
    for key, value in values.items():
        section, _, name = key.rpartition(".")
        (nested.setdefault(section, {}) if section else nested)[name] = value
    try:
        return Config(**nested)
    except ConfigError as e:
        raise e.with_source(origin.get(e.key)) from None


def read_toml(path: str | Path) -> dict[str, Any]:
    """A TOML file's settings as `section.key` values, or a ConfigError-free UsageError naming it."""
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UsageError(f"config file {path} not found; pass an existing TOML file", path=path) from None
    except (OSError, UnicodeDecodeError) as e:
        raise UsageError(f"config file {path} cannot be read: {e}", path=path) from None
    except tomllib.TOMLDecodeError as e:
        raise UsageError(f"config file {path} is not valid TOML: {e}", path=path) from None
    known = sections()
    for key, value in raw.items():
        if isinstance(value, dict) and key not in known:
            raise ConfigError(key, f"unknown section [{key}]", source=f"config file {path}")
    flat = flatten(raw)
    for key, value in flat.items():
        problem = _toml_type_problem(key, value)
        if problem:
            raise ConfigError(key, problem, source=f"config file {path}")
    return flat


def _toml_type_problem(key: str, value: Any) -> str | None:
    """Why a TOML value has the wrong type for `key`, or None. TOML has typed values, so a file
    says what it means: "1" is a string, 1e9 a float; neither is an integer, as an option's text
    would be. Unknown keys are left to `merge`, which names them."""
    try:
        hint = field_info(key)[1]
    except (KeyError, StopIteration):
        return None
    return None if _has_type(value, hint) else f"expected {_type_name(hint)}, got {value!r}"


def _has_type(value: Any, hint: Any) -> bool:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is Union:
        return any(_has_type(value, a) for a in args if a is not type(None))
    if origin is Literal:
        return value in args
    if origin is tuple:
        if isinstance(value, str):  # a list written as text: the list parser refuses what is not one
            return True
        if not isinstance(value, list):
            return False
        if len(args) == 2 and args[1] is Ellipsis:
            return all(_has_type(v, args[0]) for v in value)
        # A wrong count is for the section's own check to say ("must be 2 values").
        return len(value) != len(args) or all(_has_type(v, a) for v, a in zip(value, args))
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    return True


def _type_name(hint: Any) -> str:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is Union:
        return " or ".join(_type_name(a) for a in args if a is not type(None))
    if origin is Literal:
        return "one of " + ", ".join(map(repr, args))
    if origin is tuple:
        return "a list"
    return {bool: "true or false", int: "an integer", float: "a number", str: "a string"}.get(hint, str(hint))


def load_config(path: str | Path | None = None, overrides: Mapping[str, Any] | None = None, /,
                **kwargs: Any) -> Config:
    """The defaults, then the TOML file's values, then `overrides`, then keyword overrides; validated.

    Args:
        path: a TOML file (sections as in configs/book.toml), or None for the book's defaults.
        overrides: `section.key` -> value (None values are ignored).
        **kwargs: top-level keys (`seed=7`), whole sections as dicts (`transfer={"freeze_epochs": 2}`),
            or `section__key=value`.

    Example:
        >>> cfg = load_config("configs/book.toml", seed=7, transfer__freeze_epochs=2)
        >>> (cfg.seed, cfg.transfer.freeze_epochs)
        (7, 2)
    """
    check_argument("load_config", "path", path, (str, os.PathLike, type(None)),
                   "a TOML file's path (str or os.PathLike), or None for the book's defaults")
    check_argument("load_config", "overrides", overrides, (Mapping, type(None)),
                   "a mapping of section.key to value, or None")
    layers: list[tuple[str | None, Mapping[str, Any]]] = []
    if path is not None:
        layers.append((f"config file {path}", read_toml(path)))
    if overrides:
        layers.append((None, dict(overrides)))
    if kwargs:
        layers.append((None, {k.replace("__", "."): v for k, v in kwargs.items()}))
    return merge(layers)


def field_info(key: str) -> tuple[dataclasses.Field, Any, Any]:
    """(field, type hint, default) of a dotted key: what the CLI builds an option from."""
    section, _, name = key.rpartition(".")
    cls = sections()[section] if section else Config
    f = next(f for f in fields(cls) if f.name == name)
    defaults = _defaults()
    default = getattr(getattr(defaults, section) if section else defaults, name)
    return f, _hints(cls)[name], default


@functools.lru_cache(maxsize=None)
def _defaults() -> Config:
    """`Config()`, built once: it is frozen, so the CLI's ~80 options can share it."""
    return Config()
