"""The experiment's settings: one typed object, loaded from TOML and overridden by options.

Every key has the book's value as its default (RECIPE.md), so an empty file is the book's
experiment. Keys are addressed as `section.key` (`transfer.freeze_epochs`) in files, in
overrides and in error messages.
"""

from __future__ import annotations

import dataclasses
import json
import math
import sys
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from fmtransfer import UsageError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib

CLASS_NAMES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)

# The two learning-rate pairs (phase 1 frozen, phase 2 fine-tune) the chapter's sources use.
LR_PRESETS = {
    "book": (1e-2, 1e-4),  # the book text: plain "sgd" (1e-2), then 1e-4
    "notebook": (1e-3, 1e-3),  # the book's notebook
}


@dataclass
class DataConfig:
    dir: str = ""  # empty: search the usual places (see data.find_data_dir)
    b_classes: tuple[int, int] = (5, 6)  # task B: (negative, positive); 1.0 = the second
    b_train_size: int = 200
    valid_size: int = 5000
    verify_checksums: bool = True


# Each family's default `model.hidden`. Switching `model.arch` without giving `model.hidden`
# swaps the other family's default for this one's, so `--arch cnn` alone is a working network.
DEFAULT_HIDDEN = {"dense": (300, 100, 50, 50, 50), "cnn": (16, 32, 64)}


@dataclass
class ModelConfig:
    arch: str = "dense"  # dense | cnn
    hidden: tuple[int, ...] = DEFAULT_HIDDEN["dense"]  # dense units, or cnn filters per conv-pool block
    activation: str = "selu"
    cnn_dense: int = 64  # cnn only: units of the dense hidden layer on the conv blocks (0: none)


def hidden_blocks(m: ModelConfig) -> int:
    """How many hidden blocks the network has: what reuse depth and freezing count."""
    return len(m.hidden) + (1 if m.arch == "cnn" and m.cnn_dense else 0)


@dataclass
class TrainAConfig:
    epochs: int = 20
    learning_rate: float = 1e-3


@dataclass
class BaselineConfig:
    epochs: int = 20
    learning_rate: float = 1e-3


@dataclass
class TransferConfig:
    reuse_layers: int | str = "all"  # how many of A's hidden layers (from the bottom), or "all"
    freeze_epochs: int = 4
    fine_tune_epochs: int = 16
    frozen_learning_rate: float = 1e-2
    fine_tune_learning_rate: float = 1e-4
    unfreeze: str = "all"  # all | top:K


@dataclass
class PretrainConfig:
    method: str = "autoencoder"  # autoencoder | greedy
    unlabelled_size: int = 55000  # taken from the training images, labels ignored
    epochs: int = 10  # per layer, for greedy
    # SGD on a per-pixel cross-entropy needs a larger step than the classifiers: at 1e-2 the dense
    # reconstruction loss was 0.55 after 3 epochs on 10,000 images, 0.37 at 0.1 (0.69: all grey).
    # Larger steps (0.5, or the 1.5 of the book's shallower ch. 17 autoencoder) made it jump back up.
    learning_rate: float = 0.1


@dataclass
class StudyConfig:
    seeds: tuple[int, ...] = (42,)
    pairs: tuple[tuple[int, int], ...] = ((5, 6),)
    b_train_sizes: tuple[int, ...] = (200,)
    reuse_layers: tuple[int | str, ...] = ("all",)
    presets: tuple[str, ...] = ("book",)


@dataclass
class Config:
    seed: int = 42
    batch_size: int = 32
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train_a: TrainAConfig = field(default_factory=TrainAConfig)
    baseline: BaselineConfig = field(default_factory=BaselineConfig)
    transfer: TransferConfig = field(default_factory=TransferConfig)
    pretrain: PretrainConfig = field(default_factory=PretrainConfig)
    study: StudyConfig = field(default_factory=StudyConfig)

    def to_dict(self) -> dict[str, Any]:
        return json.loads(json.dumps(dataclasses.asdict(self)))

    def replace(self, **dotted: Any) -> "Config":
        """A copy with `section.key` (or top-level) values replaced, validated."""
        return apply_overrides(self, dotted)


SECTIONS = {f.name: f for f in fields(Config) if dataclasses.is_dataclass(f.default_factory)}


def _coerce(key: str, value: Any, default: Any) -> Any:
    """Convert a TOML or option value to the type of the key's default, or raise naming the key."""
    if isinstance(default, tuple):
        if isinstance(value, str):
            value = [v for v in value.replace(" ", "").split(",") if v]
        if not isinstance(value, (list, tuple)):
            raise UsageError(f"config key {key}: expected a list, got {value!r}")
        if key in ("data.b_classes",):
            value = [_coerce(key, v, 0) for v in value]
        elif key == "study.pairs":
            value = [_parse_pair(key, v) for v in value]
        elif key == "study.reuse_layers":
            value = [_reuse(key, v) for v in value]
        elif key == "study.presets":
            value = [_coerce(key, v, "") for v in value]
        else:
            value = [_coerce(key, v, 0) for v in value]
        return tuple(value)
    if key.endswith("reuse_layers"):
        return _reuse(key, value)
    if isinstance(default, bool):
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
        raise UsageError(f"config key {key}: expected true or false, got {value!r}")
    if isinstance(default, int):
        if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
            raise UsageError(f"config key {key}: expected an integer, got {value!r}")
        try:
            return int(value)
        except (TypeError, ValueError):
            raise UsageError(f"config key {key}: expected an integer, got {value!r}") from None
    if isinstance(default, float):
        if isinstance(value, bool):
            raise UsageError(f"config key {key}: expected a number, got {value!r}")
        try:
            return float(value)
        except (TypeError, ValueError):
            raise UsageError(f"config key {key}: expected a number, got {value!r}") from None
    if isinstance(default, str):
        if not isinstance(value, str):
            raise UsageError(f"config key {key}: expected a string, got {value!r}")
        return value
    raise AssertionError(f"no coercion for {key}")  # pragma: no cover


def _reuse(key: str, value: Any) -> int | str:
    if isinstance(value, str) and value.strip().lower() == "all":
        return "all"
    try:
        if isinstance(value, bool):
            raise ValueError
        return int(value)
    except (TypeError, ValueError):
        raise UsageError(f"config key {key}: expected a layer count or 'all', got {value!r}") from None


def _parse_pair(key: str, value: Any) -> tuple[int, int]:
    if isinstance(value, str):
        value = value.split(":")
    if not isinstance(value, (list, tuple)) or len(value) != 2:
        raise UsageError(f"config key {key}: a class pair is two classes such as 5:6, got {value!r}")
    return tuple(_coerce(key, v, 0) for v in value)  # type: ignore[return-value]


def apply_overrides(config: Config, overrides: dict[str, Any]) -> Config:
    """Return a validated copy of `config` with `section.key` values replaced (None = keep)."""
    new = dataclasses.replace(
        config, **{name: dataclasses.replace(getattr(config, name)) for name in SECTIONS}
    )
    arch_before = new.model.arch
    given = {dotted for dotted, value in overrides.items() if value is not None}
    for dotted, value in overrides.items():
        if value is None:
            continue
        section, _, key = dotted.rpartition(".")
        target = getattr(new, section) if section else new
        if (section and section not in SECTIONS) or key not in {f.name for f in fields(target)}:
            raise UsageError(f"unknown config key {dotted!r}")
        if not section and key in SECTIONS:
            raise UsageError(f"config key {dotted!r} is a section; set its keys, e.g. {key}.epochs")
        setattr(target, key, _coerce(dotted, value, getattr(target, key)))
    m = new.model
    if m.arch != arch_before and "model.hidden" not in given and m.hidden == DEFAULT_HIDDEN.get(arch_before):
        m.hidden = DEFAULT_HIDDEN.get(m.arch, m.hidden)
    validate(new)
    return new


def load_config(path: str | Path | None = None, overrides: dict[str, Any] | None = None) -> Config:
    """The defaults, then the TOML file's values, then `overrides`; validated."""
    flat: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        try:
            raw = tomllib.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise UsageError(f"config file {path} not found; pass an existing TOML file to --config") from None
        except (OSError, UnicodeDecodeError) as e:
            raise UsageError(f"config file {path} cannot be read: {e}") from None
        except tomllib.TOMLDecodeError as e:
            raise UsageError(f"config file {path} is not valid TOML: {e}") from None
        for key, value in raw.items():
            if isinstance(value, dict):
                if key not in SECTIONS:
                    raise UsageError(f"config file {path}: unknown section [{key}]")
                flat.update({f"{key}.{k}": v for k, v in value.items()})
            else:
                flat[key] = value
    try:
        config = apply_overrides(Config(), flat)
    except UsageError as e:
        raise UsageError(f"config file {path}: {e}" if path else str(e)) from None
    return apply_overrides(config, overrides or {})


def _check(ok: bool, key: str, message: str) -> None:
    if not ok:
        raise UsageError(f"config key {key}: {message}")


def validate(c: Config) -> None:
    """Reject impossible values, naming the key, before any work starts."""
    _check(c.batch_size >= 1, "batch_size", f"must be at least 1, got {c.batch_size}")
    _check(0 <= c.seed < 2**32, "seed", f"must be an integer from 0 to 2**32 - 1, got {c.seed}")
    _check_pair(c.data.b_classes, "data.b_classes")
    _check(c.data.b_train_size >= 1, "data.b_train_size", f"must be at least 1, got {c.data.b_train_size}")
    _check(0 <= c.data.valid_size < 60000, "data.valid_size",
           f"must be between 0 and 59999 (of the 60,000 training images), got {c.data.valid_size}")
    _check(c.model.arch in ("dense", "cnn"), "model.arch", f"must be dense or cnn, got {c.model.arch!r}")
    _check(len(c.model.hidden) >= 1 and all(h >= 1 for h in c.model.hidden), "model.hidden",
           f"must list at least one positive layer size, got {list(c.model.hidden)}")
    if c.model.arch == "cnn":
        _check(len(c.model.hidden) <= 3, "model.hidden",
               "a cnn has at most 3 conv-pool blocks on 28x28 images (pooling halves each side)")
    _check(c.model.cnn_dense >= 0, "model.cnn_dense", f"must be 0 (none) or more units, got {c.model.cnn_dense}")
    _check(c.model.activation in ACTIVATIONS, "model.activation",
           f"must be one of {', '.join(ACTIVATIONS)}, got {c.model.activation!r}")
    for name in ("train_a", "baseline", "pretrain"):
        section = getattr(c, name)
        _check(section.epochs >= 0, f"{name}.epochs", f"must be 0 or more, got {section.epochs}")
        _check(0 < section.learning_rate < math.inf, f"{name}.learning_rate",
               f"must be positive, got {section.learning_rate}")
    t = c.transfer
    for key in ("freeze_epochs", "fine_tune_epochs"):
        _check(getattr(t, key) >= 0, f"transfer.{key}", f"must be 0 or more, got {getattr(t, key)}")
    for key in ("frozen_learning_rate", "fine_tune_learning_rate"):
        _check(0 < getattr(t, key) < math.inf, f"transfer.{key}", f"must be positive, got {getattr(t, key)}")
    _check_reuse(t.reuse_layers, hidden_blocks(c.model), "transfer.reuse_layers")
    _check_top(t.unfreeze, [t.reuse_layers], hidden_blocks(c.model))
    _check(c.pretrain.method in ("autoencoder", "greedy"), "pretrain.method",
           f"must be autoencoder or greedy, got {c.pretrain.method!r}")
    # The upper bound depends on the split; `pretrain` checks it against the one it uses.
    _check(c.pretrain.unlabelled_size >= 1, "pretrain.unlabelled_size",
           f"must be at least 1, got {c.pretrain.unlabelled_size}")
    s = c.study
    _check(len(s.seeds) >= 1 and all(0 <= x < 2**32 for x in s.seeds), "study.seeds",
           "must list at least one seed, each from 0 to 2**32 - 1")
    for key in ("seeds", "pairs", "b_train_sizes", "reuse_layers", "presets"):
        values = getattr(s, key)
        _check(len(set(values)) == len(values), f"study.{key}", f"lists a value twice: {list(values)}")
    _check(len(s.pairs) >= 1, "study.pairs", "must list at least one class pair")
    for pair in s.pairs:
        _check_pair(pair, "study.pairs")
    _check(len(s.b_train_sizes) >= 1 and all(n >= 1 for n in s.b_train_sizes), "study.b_train_sizes",
           "must list at least one positive size")
    _check(len(s.reuse_layers) >= 1, "study.reuse_layers", "must list at least one value")
    for r in s.reuse_layers:
        _check_reuse(r, hidden_blocks(c.model), "study.reuse_layers")
    _check_top(t.unfreeze, s.reuse_layers, hidden_blocks(c.model))
    _check(len(s.presets) >= 1 and all(p in LR_PRESETS for p in s.presets), "study.presets",
           f"must list presets among {', '.join(LR_PRESETS)}, got {list(s.presets)}")


ACTIVATIONS = ("selu", "relu", "elu", "tanh", "sigmoid", "gelu", "swish", "leaky_relu")


def _check_pair(pair: tuple[int, ...], key: str) -> None:
    _check(len(pair) == 2, key, f"must be two classes, got {list(pair)}")
    for k in pair:
        _check(0 <= k <= 9, key, f"class {k} is outside 0..9 ({', '.join(f'{i} {n}' for i, n in enumerate(CLASS_NAMES))})")
    _check(pair[0] != pair[1], key, f"the two classes must differ, got {pair[0]} twice")


def _check_reuse(reuse: int | str, n_hidden: int, key: str) -> None:
    if reuse == "all":
        return
    _check(1 <= int(reuse) <= n_hidden, key,
           f"model A has {n_hidden} hidden layers; reuse between 1 and {n_hidden}, or 'all', got {reuse}")


def _check_top(unfreeze: str, reuses, n_hidden: int) -> None:
    top = unfreeze_top(unfreeze)  # raises on a bad value
    if top is None:
        return
    fewest = min(reuse_count(r, n_hidden) for r in reuses)
    _check(top <= fewest, "transfer.unfreeze",
           f"top:{top} unfreezes more than the {fewest} reused layers; use top:{fewest} or fewer")


def reuse_count(reuse: int | str, n_hidden: int) -> int:
    return n_hidden if reuse == "all" else int(reuse)


def unfreeze_top(unfreeze: str) -> int | None:
    """Parse `transfer.unfreeze`: None for all reused layers, K for only the top K."""
    if unfreeze == "all":
        return None
    head, _, k = unfreeze.partition(":")
    if head == "top" and k.isdigit() and int(k) >= 0:
        return int(k)
    raise UsageError(f"config key transfer.unfreeze: must be 'all' or 'top:K' (K >= 0), got {unfreeze!r}")
