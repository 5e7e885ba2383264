"""What every contender is (a name, what it needs, its settings, `fit`), and the registry of them.

A contender builds and trains task B's model on a split and a seed, given what it needs
(`needs`: model A, a pretrained encoder), and returns the model and a typed result. It imports
TensorFlow only when it trains, so the registry can answer `--help` and validate a config at once.

The registry holds the built-in contenders (every module of this package, found by
`pkgutil`, registers its own with `@register`) and, from its first use on (`names`, `get`,
`select`, ...), the installed plug-ins: each entry point of the group `fmtransfer.contenders`
names a Contender subclass, e.g. `example = fmtransfer_example:Example`. A plug-in that fails to
load, or takes a name or a section already taken, is left out with one warning line on stderr;
selecting it is a ConfigError on `contenders` that says why. Registering a contender registers
its settings section (`Settings`) with `fmtransfer.config`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import numbers
import re
import sys
from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar, Iterable, Mapping

from fmtransfer import config
from fmtransfer.errors import ArgumentError, ConfigError, ContenderError, DivergedError, reason
from fmtransfer.needs import needs_of
from fmtransfer.space import Space, draw, spaces, trial_seed

ENTRY_POINTS = "fmtransfer.contenders"  # the entry-point group plug-ins register in
SHARED_SECTIONS = ("transfer", "pretrain")  # read by every contender of a kind, not one's own
PLUGIN_ORDER = 1000  # plug-ins are listed after the built-ins
# A name goes into `--contenders a,b`, run ids and file names; an artifact is a file stem in a run directory.
NAME = re.compile(r"[a-z][a-z0-9_-]*")

_REGISTRY: dict[str, type["Contender"]] = {}
_FAILED: dict[str, str] = {}  # a plug-in left out -> why, said when it is selected
_plugins_loaded = False


@dataclass(frozen=True)
class Phase:
    """One training phase of model B: which reused layers move, for how long, how fast.

    `top` None with `trainable` True unfreezes every reused layer; K unfreezes the top K. `key`
    is the config key the learning rate came from, named if the phase diverges. `rates`, one per
    reused block from the bottom, multiply the learning rate of that block (discriminative rates).
    `blocks`, with `trainable`, names the reused blocks that move (1 = the bottom one) in place
    of `top`: the others stay frozen (surgical fine-tuning).
    """

    name: str
    epochs: int
    learning_rate: float
    trainable: bool
    top: int | None = None
    key: str | None = None
    rates: tuple[float, ...] | None = None
    blocks: tuple[int, ...] | None = None


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
        title: what tables and `compare --json` call it (and the title of its `--help` group).
        description: one line for `--help`.
        needs: what it builds on (`fmtransfer.needs`): MODEL_A, or Encoder(METHOD) for a pretrained encoder.
        Settings: its own config section, a frozen dataclass subclass of `config.Section` whose
            `NAME` is the section's name (`[gan]` in TOML, `--gan-epochs` on the CLI), or None.
        sections: the config sections it reads; its own is added when it registers.
        artifact: the run directory's file stem for it (model_b_on_ARTIFACT.keras).
        archs: the network families (`model.arch`) it can build.
        order: where tables, `--help` and `all` list it: the built-ins by tens, then the rest
            (plug-ins, in their names' order). Like `artifact`, read from the class itself, never
            inherited, so a subclass of TransferFromA does not take transfer's place or files.
        strengths: config keys besides a phase's learning rate that shape its loss or the weights
            it starts from (L2-SP's alpha and beta, LP-FT's C): a divergence names each of them.
        stack_unsupported: why its seeds cannot train as one stack (`study.stack`), or None
            where they can, through `fit_seeds`. A study trains a contender that cannot one
            seed at a time, and says so.
        untuned: keys with a search space in its sections that its training never reads (LP-FT
            has no frozen phase): a trial of it does not draw them.
    """

    name: ClassVar[str]
    title: ClassVar[str]
    description: ClassVar[str]
    needs: ClassVar[tuple] = ()  # of fmtransfer.needs.Need
    Settings: ClassVar[type[config.Section] | None] = None
    sections: ClassVar[tuple[str, ...]] = ()
    artifact: ClassVar[str] = ""
    archs: ClassVar[tuple[str, ...]] = ("dense", "cnn")
    order: ClassVar[int] = PLUGIN_ORDER
    strengths: ClassVar[tuple[str, ...]] = ()
    stack_unsupported: ClassVar[str | None] = ("it trains model B by its own `fit`, not by a schedule a stack of "
                                               "seeds can run")
    untuned: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def own_sections(cls) -> tuple[str, ...]:
        """Its sections that no other kind of contender reads ([gan], [l2_sp], ...): `transfer`
        and `pretrain` are shared, and fingerprinted with everything shared."""
        return tuple(s for s in cls.sections if s not in SHARED_SECTIONS)

    def check_settings(self, cfg) -> None:
        """Refuse, with a ConfigError naming the key, settings of its own that cannot work with
        the rest of `cfg` (reinit's depth against the layers reused): checked when it is
        selected, before anything trains."""

    def fixed_sections(self) -> tuple[str, ...]:
        """Its sections that make what it builds on (an encoder's [pretrain] and own section):
        made once per seed and shared by every trial, so never tuned."""
        return ()

    def space(self, cfg) -> dict[str, Space]:
        """What a trial of it draws, key -> space, with `study.space`'s bounds: the spaces of
        the sections it reads, less its fixed sections and the keys it leaves `untuned`.

        Example:
            >>> tuple(get("lp-ft").space(config.Config()))
            ('transfer.fine_tune_epochs', 'transfer.fine_tune_learning_rate', 'lp_ft.c')
        """
        tuned = [s for s in self.sections if s not in self.fixed_sections()]
        return {k: s for k, s in config.spaces_in_force(cfg).items()
                if k.partition(".")[0] in tuned and k not in self.untuned}

    def settings(self, cfg) -> dict[str, Any]:
        """The settings this contender's result depends on, for fingerprints and reports."""
        d = cfg.to_dict()
        return {s: d[s] for s in self.sections}

    def fit(self, cfg, split, deps: Mapping[str, Any], reporter) -> tuple[Any, ContenderResult]:
        """Build and train the model on `split` with `cfg.seed`; return (model, result)."""
        raise NotImplementedError

    def train(self, cfgs: list, split, bases: list, reporter) -> list:
        """`fit` for each config at once, config k on `bases[k]` (what `needs[0]` names, None if
        it needs nothing): per config (model, result) or the DivergedError that stopped it. The
        configs differ in their seed, or are trials (which may share one seed) that differ in
        their tuned settings: the built-ins stack what a slot can hold on its own (learning
        rates, epochs, penalty strengths) and group the rest (docs/speed.md). One config alone
        raises its DivergedError, as `fit` does. Only where `stack_unsupported` is None."""
        raise NotImplementedError(f"{self.name} cannot stack: {self.stack_unsupported}")

    def fit_seeds(self, cfgs: list, split, bases: list, reporter) -> list:
        """`train`'s results alone: per seed a ContenderResult or the DivergedError that stopped it."""
        try:
            made = self.train(cfgs, split, bases, reporter)
        except DivergedError as e:  # one seed alone raises, as `fit` does
            made = [e]
        return [m if isinstance(m, DivergedError) else m[1] for m in made]


# ----------------------------------------------------------------------------- checking what one gives back

def checked_fit(name: str, made: Any) -> tuple[Any, ContenderResult]:
    """What contender `name`'s `fit` gave back, (model, result), its result checked (`checked_result`)."""
    if not (isinstance(made, tuple) and len(made) == 2):
        raise ContenderError(name, f"fit gave back {type(made).__name__}, not (model, result)")
    return made[0], checked_result(name, made[1])


def checked_result(name: str, result: Any) -> ContenderResult:
    """`result`, as contender `name` gave it back, checked like any value from outside before it is
    recorded or compared: a ContenderResult whose test accuracy (and linear probe, if any) is a
    finite number from 0 to 1 and whose test loss a finite number of 0 or more, each made a plain
    float (a NumPy scalar would not go into JSON as one).

    Raises:
        ContenderError: naming the contender and the value; the run failed and is not recorded.
    """
    if not isinstance(result, ContenderResult):
        raise ContenderError(name, f"gave back {type(result).__name__}, not a ContenderResult")
    accuracy = _number(name, "test_accuracy", result.test_accuracy, 1.0)
    loss = _number(name, "test_loss", result.test_loss, math.inf)
    details = result.details
    if not isinstance(details, dict):
        raise ContenderError(name, f"gave back details of type {type(details).__name__}, not a dict")
    if details.get("linear_probe") is not None:
        details = {**details, "linear_probe": _number(name, "linear_probe", details["linear_probe"], 1.0)}
    return dataclasses.replace(result, test_accuracy=accuracy, test_loss=loss, details=details)


def _number(name: str, what: str, value: Any, high: float) -> float:
    if isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value) \
            and 0 <= value <= high:
        return float(value)
    wanted = "a number from 0 to 1" if high == 1.0 else "a finite number of 0 or more"
    # A NumPy scalar said as the number it is: nan, not np.float32(nan).
    shown = float(value) if isinstance(value, numbers.Real) and not isinstance(value, bool) else value
    raise ContenderError(name, f"{what} {shown!r} is not {wanted}")


# ----------------------------------------------------------------------------- registering

def register(cls: type[Contender]) -> type[Contender]:
    """Class decorator: make a contender selectable by its `name`, and its `Settings` a config section.

    Registering the same class again changes nothing.

    Raises:
        ArgumentError: `cls` is not a Contender subclass.
        ValueError: the name or the section is taken, or a name, title, description, artifact or
            `Settings` cannot work (see docs/contenders.md).
    """
    if not (isinstance(cls, type) and issubclass(cls, Contender)):
        raise ArgumentError("register", "cls", "a subclass of fmtransfer.Contender", cls)
    name = getattr(cls, "name", None)
    if not isinstance(name, str) or not NAME.fullmatch(name) or name == "all":
        raise ValueError(f"{cls.__qualname__} needs a name other than 'all' of lower-case letters, digits, - and _ "
                         f"(it is typed in --contenders and names files), got {name!r}")
    if _REGISTRY.get(name) is cls:
        return cls
    if name in _REGISTRY:
        raise ValueError(f"contender name {name!r} is taken by {_describe(_REGISTRY[name])}")
    for text in ("title", "description"):  # shown in tables and --help, as text: one printable line
        value = getattr(cls, text, None)
        if not isinstance(value, str) or not value.strip() or not value.isprintable():
            raise ValueError(f"{name!r} needs a {text} that is one line of printable text, got {value!r}")
    archs, order = getattr(cls, "archs", None), cls.__dict__.get("order", PLUGIN_ORDER)
    if not (isinstance(archs, tuple) and archs and set(archs) <= set(config.ARCHS)):
        raise ValueError(f"{name!r} needs archs, a tuple of some of {', '.join(config.ARCHS)}, got {archs!r}")
    if not isinstance(order, int) or isinstance(order, bool):
        raise ValueError(f"{name!r} needs an order that is a whole number, got {order!r}")
    needs_of(cls)  # raises ValueError naming a need that is none
    artifact = cls.__dict__.get("artifact") or name
    if not isinstance(artifact, str) or not NAME.fullmatch(artifact.lower()):
        raise ValueError(f"{name!r} needs an artifact that is a plain file stem, got {artifact!r}")
    sharing = next((c for c in _REGISTRY.values() if c.artifact == artifact), None)
    if sharing is not None:
        raise ValueError(f"{name!r} would write the run directory's files of {_describe(sharing)} "
                         f"(artifact {artifact!r}); give it an artifact of its own")
    own = cls.Settings
    if own is not None and getattr(cls, "pretrain", None) is not None and spaces(own):
        raise ValueError(f"{name!r} pretrains an encoder, made once per seed and shared by every trial, so its "
                         f"section [{own.NAME}] cannot be tuned; drop the spaces of {', '.join(spaces(own))}")
    if own is not None:
        section = getattr(own, "NAME", "")
        holder = next((c for c in _REGISTRY.values() if c.Settings is not None and c.Settings.NAME == section
                       and c.Settings is not own), None)
        if holder is not None:
            raise ValueError(f"section [{section}] of {name!r} is taken by {_describe(holder)}")
        config.register_section(own)  # raises ValueError for a core section's name or a bad class
        if section not in cls.sections:
            cls.sections = (section, *cls.sections)
    cls.artifact = artifact
    _REGISTRY[name] = cls
    ordered = sorted(_REGISTRY.items(), key=lambda item: item[1].__dict__.get("order", PLUGIN_ORDER))  # stable
    _REGISTRY.clear()
    _REGISTRY.update(ordered)
    config.order_sections(c.Settings.NAME for c in _REGISTRY.values() if c.Settings is not None)  # as listed
    return cls


def unregister(name: str) -> None:
    """Undo `register` (for a contender defined on the fly, in a test or a notebook)."""
    cls = _REGISTRY.pop(name, None)
    own = cls.Settings if cls is not None else None
    if own is not None and not any(c.Settings is own for c in _REGISTRY.values()):
        config.unregister_section(own.NAME)


def _describe(cls: type[Contender]) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def load_plugins() -> None:
    """Register every installed plug-in, once; those that cannot be are left out with a warning."""
    global _plugins_loaded
    if _plugins_loaded:
        return
    _plugins_loaded = True
    from importlib import metadata  # some 20 ms, and `import fmtransfer` alone never needs it

    for ep in sorted(metadata.entry_points(group=ENTRY_POINTS), key=lambda ep: ep.name):
        package = ep.dist.name if ep.dist is not None else ep.value.partition(":")[0]
        try:  # someone else's code: whatever it raises, SystemExit too, leaves it out and fmtransfer working
            with contextlib.redirect_stdout(sys.stderr):  # what it prints never corrupts a --json answer
                cls = ep.load()
            if not (isinstance(cls, type) and issubclass(cls, Contender)):
                raise ValueError(f"{ep.value} is not a Contender subclass")
            if getattr(cls, "name", None) != ep.name:
                raise ValueError(f"its entry point is {ep.name!r} but its class is named {getattr(cls, 'name', None)!r}"
                                 "; give both one name")
            register(cls)
        except BaseException as e:
            if isinstance(e, KeyboardInterrupt):  # the user's Ctrl-C, not the plug-in's failure
                raise
            first = reason(e)  # its reason in whole sentences, not a traceback's first line
            why = f"{type(e).__name__}: {first}" if not isinstance(e, ValueError) else first
            if ep.name not in _REGISTRY:
                _FAILED[ep.name] = f"plug-in {ep.name!r} of package {package} failed to load ({why})"
            sys.stderr.write(f"fmtransfer: warning: plug-in contender {ep.name!r} of package {package} is left "
                             f"out: {why}\n")


def _ready() -> dict[str, type[Contender]]:
    load_plugins()
    return _REGISTRY


config.find_sections_with(load_plugins)  # a plug-in's section is a config section too


# ----------------------------------------------------------------------------- looking up

def get(name: str) -> Contender:
    """The contender registered as `name`, or a ConfigError on `contenders`."""
    registry = _ready()
    if name not in registry:
        if name in _FAILED:
            raise ConfigError("contenders", _FAILED[name])
        raise ConfigError("contenders", f"unknown contender {name!r}; choose among {', '.join(registry)}")
    return registry[name]()


def names() -> tuple[str, ...]:
    """Every registered contender's name, in the order tables list them."""
    return tuple(_ready())


def failed() -> dict[str, str]:
    """The plug-ins left out, name -> why."""
    _ready()
    return dict(_FAILED)


def pretraining_methods() -> tuple[str, ...]:
    """The contenders that pretrain their own encoder: `pretrain --method` takes these."""
    return tuple(n for n, c in _ready().items() if getattr(c, "pretrain", None) is not None)


def select(cfg) -> tuple[str, ...]:
    """The contenders `cfg.contenders` names, baseline first: the book's pair unless it says
    otherwise; `all` is every registered one that builds `cfg.model.arch`.

    Raises:
        ConfigError: on `contenders`, for a name that is not registered (or a plug-in that failed
            to load), or a contender that cannot build `cfg.model.arch`.
    """
    known = names()
    for name in cfg.contenders:
        if name == "all":
            continue
        if name in _FAILED and name not in known:
            raise ConfigError("contenders", _FAILED[name])
        if name not in known:
            raise ConfigError("contenders", f"unknown contender {name!r}; choose among {', '.join(known)}, or all")
    arch = cfg.model.arch
    for name in cfg.contenders:
        archs = _REGISTRY[name].archs if name != "all" else (arch,)
        if arch not in archs:
            raise ConfigError("contenders", f"{name} builds {' and '.join(archs)} networks only, not {arch}; "
                                            f"drop it, or use model.arch {archs[0]}")
    chosen = cfg.contenders or ("transfer",)
    if "all" in chosen:
        chosen = [n for n in known if arch in _REGISTRY[n].archs]
    return ("baseline", *[c for c in chosen if c != "baseline"])


def sections_read(chosen: Iterable[str]) -> tuple[str, ...] | None:
    """The config sections the contenders `chosen` read, [train_a] where one builds on model A;
    None where one is not registered (an uninstalled plug-in), whose sections are unknown."""
    if any(name not in _ready() for name in chosen):
        return None
    found = []
    for name in chosen:
        cls = _REGISTRY[name]
        found += [*cls.sections, *(["train_a"] if any(str(n) == "model_a" for n in cls.needs) else [])]
    return tuple(dict.fromkeys(found))


def smoke(cfg) -> tuple[str, ...]:
    """What in `cfg` is below the chapter's settings, for the contenders it selects
    (`config.below_chapter`): empty for a run whose numbers can be read as the chapter's."""
    return config.below_chapter(cfg.to_dict(), sections_read(select(cfg)))


def pretraining_method(cfg, method: str | None = None) -> str:
    """`method` (default `cfg.pretrain.method`), checked to be a pretraining method, or a
    ConfigError on `pretrain.method`."""
    methods = pretraining_methods()
    method = method or cfg.pretrain.method
    if method not in methods:
        raise ConfigError("pretrain.method", f"must be one of {', '.join(methods)}, got {method!r}")
    return method


def trial_settings(cfg, name: str, *, study_seed: int, cell: str, trial: int,
                   baseline_cell: str | None = None) -> dict[str, Any]:
    """One trial's settings, key -> value, for contender `name` and the baseline paired with it:
    a pure function of (study seed, cell, contender, trial index), so any runner, in any order,
    draws the same trials. `cfg.replace(**drawn)` is the trial's config.

    The baseline's keys come from the baseline's own stream (`space.trial_seed(..., "baseline",
    trial)`, named by `baseline_cell`, default `cell`): its trial k is one configuration beside
    every contender, trained once and shared by every cell whose baseline it is, and each
    contender has as many trials as the baseline (the equal budget).

    Example:
        >>> drawn = trial_settings(config.Config(), "l2-sp", study_seed=0, cell="pair5v6-n200", trial=3)
        >>> tuple(sorted(drawn)[:2])
        ('baseline.epochs', 'baseline.learning_rate')
    """
    baseline = get("baseline").space(cfg)
    own = {k: s for k, s in get(name).space(cfg).items() if k not in baseline}
    return {**draw(baseline, trial_seed(study_seed, baseline_cell or cell, "baseline", trial)),
            **draw(own, trial_seed(study_seed, cell, name, trial))}


def check(cfg) -> None:
    """Every name `cfg` gives a contender resolves (what `select` and `pretraining_method`
    check), and each selected contender accepts its settings (`check_settings`)."""
    for name in select(cfg):
        _REGISTRY[name]().check_settings(cfg)
    pretraining_method(cfg)
