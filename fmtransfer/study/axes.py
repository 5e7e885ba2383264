"""The grid: its axes, each declared once; its points (`RunKey`), their order, and how shards deal them out.

An axis is one `Axis` declaration: where its values come from, what a value sets in a run's
config, how it is written in a run id, in a results line and in the report, and what depends
on it. Run ids, results lines, the report's cells, its headings and plots all read the
declarations, so a new axis is one `declare(Axis(...))`.
"""

from __future__ import annotations

import functools
import itertools
import os
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Sequence, Union

from fmtransfer import contenders
from fmtransfer.config import LR_PRESETS, Config, check_unfreeze
from fmtransfer.errors import ConfigError

# What a value of an axis changes, widest first: model A (and so everything built on it), the
# baseline's run, or only the contenders' runs. The grid varies the widest axes slowest, so the
# runs sharing a model A, then a baseline, are next to each other.
SCOPES = ("model_a", "baseline", "contender")


def _integer(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


class _Required:
    def __repr__(self) -> str:
        return "REQUIRED"


REQUIRED = _Required()  # `Axis.missing`: a results line must carry the axis' field


@dataclass(frozen=True)
class Axis:
    """One axis of a study's grid.

    Args:
        name: the `RunKey` attribute, and the key of results lines and of the report's cells.
        source: the config key listing the values ("study.b_train_sizes"); an empty list there
            means the experiment's own value of `sets`. Or cfg -> values, for an axis with no key.
        sets: the run config's key a value sets ("data.b_train_size"), or value -> {key: value}.
        id: a value's part of the run id (`lambda n: f"n{n}"`); the parts are joined with "-".
        describe: a value as the report's headings write it ("200 images").
        label: a value in a short label: plot legends and panel titles ("n=200").
        column: the heading of the axis in the report's table; `text`, a value in its cells;
            `justify`, "left" or "right".
        valid: whether a results line's (JSON) value is one of this axis.
        to_json: a value as results lines and cells write it (a pair's tuple as a list).
        from_json: the inverse of `to_json`.
        order: a value's sort key in the report ("all" among numbers sorts as text).
        scope: what a value changes besides the contenders' runs (see `SCOPES`): runs differing
            in a "model_a" axis never share a model A, nor in a "baseline" axis a baseline.
        pooled: the cells pair their runs over this axis (the seed, the data seed) instead of
            splitting by it.
        missing: the value of a results line that lacks the field (one written before the axis
            existed); `REQUIRED`, the default, makes such a line unreadable.

    Example, a grid over the fine-tuning epochs in one declaration:
        >>> declare(Axis("fine_tune_epochs", source=lambda cfg: (1, 3), sets="transfer.fine_tune_epochs",
        ...              id=lambda e: f"ft{e}", describe=lambda e: f"{e} fine-tuning epochs",
        ...              valid=lambda v: isinstance(v, int)))
    """

    name: str
    source: Union[str, Callable[[Config], Sequence[Any]]]
    sets: Union[str, Callable[[Any], dict[str, Any]]]
    id: Callable[[Any], str]
    describe: Callable[[Any], str] | None = None
    label: Callable[[Any], str] | None = None
    column: str | None = None
    text: Callable[[Any], str] = str
    justify: str = "right"
    valid: Callable[[Any], bool] = lambda v: v is not None
    to_json: Callable[[Any], Any] = lambda v: v
    from_json: Callable[[Any], Any] = lambda v: v
    order: Callable[[Any], Any] = lambda v: v
    scope: str = "contender"
    pooled: bool = False
    missing: Any = REQUIRED

    def __post_init__(self):
        if not self.name.isidentifier():
            raise ValueError(f"Axis name must be an identifier, got {self.name!r}")
        if self.justify not in ("left", "right"):
            raise ValueError(f"Axis justify must be 'left' or 'right', got {self.justify!r}")
        if self.scope not in SCOPES:
            raise ValueError(f"Axis scope must be one of {', '.join(SCOPES)}, got {self.scope!r}")
        for what in ("source", "sets"):
            if not (isinstance(getattr(self, what), str) or callable(getattr(self, what))):
                raise ValueError(f"Axis {what} must be a config key or a callable, got {getattr(self, what)!r}")

    def values(self, cfg: Config) -> tuple:
        """The axis' values in `cfg`'s grid."""
        if callable(self.source):
            values = tuple(self.source(cfg))
        else:
            values = tuple(_get(cfg, self.source))
            if not values and isinstance(self.sets, str):
                values = (_get(cfg, self.sets),)
        return tuple(self.from_json(self.to_json(v)) for v in values)  # one form, whatever the config holds

    def settings(self, value: Any) -> dict[str, Any]:
        """What `value` sets in a run's config, as dotted keys."""
        return self.sets(value) if callable(self.sets) else {self.sets: value}

    def words(self, value: Any) -> str:
        return self.describe(value) if self.describe else f"{self.name} {value}"

    def short(self, value: Any) -> str:
        return self.label(value) if self.label else self.words(value)

    @property
    def heading(self) -> str:
        return self.column or self.name


def _get(cfg: Config, dotted: str) -> Any:
    return functools.reduce(getattr, dotted.split("."), cfg)


_AXES: list[Axis] = []


def declare(axis: Axis) -> Axis:
    """Add `axis` to every study's grid, after those declared before it; return it."""
    if any(a.name == axis.name for a in _AXES):
        raise ValueError(f"an axis named {axis.name!r} is declared already")
    _AXES.append(axis)
    return axis


def withdraw(name: str) -> None:
    """Remove the axis `name` (a test's, or a plugin's undone)."""
    _AXES[:] = [a for a in _AXES if a.name != name]


def declared() -> tuple[Axis, ...]:
    """Every declared axis, in declaration order (the order of a run id's parts)."""
    return tuple(_AXES)


def axis(name: str) -> Axis:
    for a in _AXES:
        if a.name == name:
            return a
    raise KeyError(f"no study axis {name!r}")


def cell_axes() -> tuple[Axis, ...]:
    """The axes a cell is split by: all but the pooled ones (the seed, the data seed)."""
    return tuple(a for a in _AXES if not a.pooled)


def _pair_json(v: Any) -> bool:
    return isinstance(v, list) and len(v) == 2 and all(_integer(k) for k in v)


# Today's grid. Run ids read seed42-pair5v6-n200-reuseall-book (seed42-pair5v6-n200-draw3-reuseall-book
# with a data seed): the parts, in this order, are
# what committed studies and users' directories hold, so they never change.
declare(Axis("seed", "study.seeds", sets="seed", id=lambda s: f"seed{s}", describe=lambda s: f"seed {s}",
             column="seed", valid=_integer, scope="model_a", pooled=True))
declare(Axis("pair", "study.pairs", sets="data.b_classes", id=lambda p: f"pair{p[0]}v{p[1]}",
             describe=lambda p: f"classes {p[0]} vs {p[1]}", label=lambda p: f"{p[0]} vs {p[1]}", column="B classes",
             text=lambda p: f"{p[0]} vs {p[1]}", justify="left", valid=_pair_json, to_json=list, from_json=tuple,
             scope="model_a"))
declare(Axis("b_train_size", "study.b_train_sizes", sets="data.b_train_size", id=lambda n: f"n{n}",
             describe=lambda n: f"{n} images", label=lambda n: f"n={n}", column="n B", valid=_integer,
             scope="baseline"))
# The labelled sample: "first" (the book's first N images) or a data seed drawing N at random.
# Pooled with the seed: a cell's units are (seed, data seed). Scope "baseline": the baseline
# trains on the draw, while model A and the encoders never see task B's images, so a seed's are
# made once and shared by all its draws. "first" adds no part to a run id, so the ids (and
# fingerprints) of every study made before stay as they were; lines without the field read as it.
declare(Axis("data_seed", "study.data_seeds", sets="data.b_sample", id=lambda d: "" if d == "first" else f"draw{d}",
             describe=lambda d: "the first images" if d == "first" else f"data seed {d}",
             label=lambda d: "first" if d == "first" else f"draw {d}", column="draw",
             valid=lambda v: v == "first" or (_integer(v) and 0 <= v < 2**32),
             order=lambda d: (-1 if d == "first" else d), scope="baseline", pooled=True, missing="first"))
declare(Axis("reuse_layers", "study.reuse_layers", sets="transfer.reuse_layers", id=lambda r: f"reuse{r}",
             describe=lambda r: f"reuse {r}", column="reuse", valid=lambda v: v == "all" or _integer(v), order=str))
declare(Axis("preset", "study.presets", id=lambda p: p, describe=lambda p: f"{p} rates", label=str, column="lr",
             justify="left",
             sets=lambda p: dict(zip(("transfer.frozen_learning_rate", "transfer.fine_tune_learning_rate"),
                                     LR_PRESETS[p])),
             valid=lambda v: isinstance(v, str) and v in LR_PRESETS))
# A tuned study's trial (`tune.trials`): trial t of every contender and of the baseline at each
# (seed, draw). None, an untuned study's only value, adds no part to a run id, so untuned studies
# keep their ids and fingerprints. Scope "baseline": trial t has a baseline of its own. Pooled, not
# a cell: the report selects one trial per (seed, draw) on validation data (`study.tuning`), and
# the cell pairs the selected contender with the selected baseline.
declare(Axis("trial", lambda cfg: range(cfg.tune.trials) if cfg.tune.tuned else (None,), sets=lambda t: {},
             id=lambda t: "" if t is None else f"trial{t}", describe=lambda t: "untuned" if t is None else f"trial {t}",
             column="trial", valid=lambda v: v is None or (_integer(v) and v >= 0),
             order=lambda t: -1 if t is None else t, scope="baseline", pooled=True, missing=None))


@dataclass(frozen=True)
class RunKey:
    """A grid point, one value per axis; each selected contender is one run there.

    `key.seed`, `key.pair`, ... read the axes' values. The values travel with the key (to a
    worker process, say), so a key never depends on which axes its reader has declared.

    Example:
        >>> key = RunKey.at(seed=42, pair=(5, 6), b_train_size=200, reuse_layers="all", preset="book")
        >>> key.run_id("transfer")
        'seed42-pair5v6-n200-reuseall-book-transfer'
    """

    items: tuple[tuple[str, Any], ...]  # (axis name, value), in declaration order

    @classmethod
    def at(cls, **values: Any) -> "RunKey":
        """The key with these values, one for each declared axis (an axis with a `missing`
        value may be left out: it takes that value)."""
        names = [a.name for a in declared()]
        values = {**{a.name: a.missing for a in declared() if a.missing is not REQUIRED}, **values}
        if set(values) != set(names):
            raise ValueError(f"RunKey needs one value for each axis ({', '.join(names)}), got {', '.join(values)}")
        return cls(tuple((n, values[n]) for n in names))

    @classmethod
    def from_json(cls, record: dict) -> "RunKey":
        """The key of a results line; ValueError naming the first axis whose value is bad or
        missing. A line without an axis' field (written before the axis existed) takes its
        `missing` value."""
        values = []
        for a in declared():
            value = record.get(a.name, a.missing)
            if value is REQUIRED or not a.valid(value):
                raise ValueError(f"a bad or missing {a.name!r}")
            values.append((a.name, a.from_json(value)))
        return cls(tuple(values))

    def __getattr__(self, name: str) -> Any:
        for key, value in self.__dict__.get("items", ()):
            if key == name:
                return value
        raise AttributeError(f"RunKey has no axis {name!r}")

    @property
    def values(self) -> dict[str, Any]:
        return dict(self.items)

    def _axes(self) -> list[tuple[Axis, Any]]:
        return [(axis(name), value) for name, value in self.items]

    def to_json(self) -> dict[str, Any]:
        """The axes' values as a results line writes them."""
        return {a.name: a.to_json(v) for a, v in self._axes()}

    @property
    def id(self) -> str:
        """The parts of the axes' values joined by "-"; a value with no part (the book's sample) adds none."""
        return "-".join(part for a, v in self._axes() if (part := a.id(v)))

    def run_id(self, contender: str) -> str:
        return f"{self.id}-{contender}"

    @property
    def cell_id(self) -> str:
        """The run id's parts of every axis but the pooled ones, e.g. pair5v6-n200-reuseall-book:
        the name of the cell the point is in."""
        return "-".join(part for a, v in self._axes() if not a.pooled and (part := a.id(v)))

    @property
    def unit_id(self) -> str:
        """The run id's parts of the pooled axes, e.g. seed42 or seed42-draw3: the point's unit
        within its cell."""
        return "-".join(part for a, v in self._axes() if a.pooled and (part := a.id(v)))

    def _scoped(self, scopes: tuple[str, ...]) -> tuple:
        return tuple(v for a, v in self._axes() if a.scope in scopes)

    @property
    def group(self) -> tuple:
        """The runs sharing a model A: (seed, pair) today."""
        return self._scoped(SCOPES[:1])

    @property
    def baseline_group(self) -> tuple:
        """The runs sharing a baseline: (seed, pair, size, data seed)."""
        return self._scoped(SCOPES[:2])

    @property
    def draw_group(self) -> tuple:
        """The baseline's point but the seed, e.g. ((5, 6), 200, 'first'): the seeds trained as one
        stack share it, since they train on the same images."""
        return tuple(v for a, v in self._axes() if a.scope in SCOPES[:2] and a.name != "seed")

    @property
    def unit(self) -> tuple:
        """The pooled axes' values, e.g. (42, 'first'): a cell's unit of pairing, (seed, data seed).
        A tuned study's trial is pooled too, but it is no unit: a unit selects one of its trials."""
        return tuple(v for a, v in self._axes() if a.pooled and a.name != "trial")

    @property
    def setting(self) -> tuple:
        """The cell's sort and identity key: every axis but the pooled ones (the seed, the data seed),
        e.g. ((5, 6), 200, 'all', 'book')."""
        return tuple(a.order(v) for a, v in self._axes() if not a.pooled)

    @property
    def cell_point(self) -> dict[str, Any]:
        """The cell's axes and their values, as results lines write them (all but the pooled ones)."""
        return {a.name: a.to_json(v) for a, v in self._axes() if not a.pooled}

    def config(self, base: Config, contender: str = "baseline", drawn: dict | None = None) -> Config:
        """The run's config: `base` with what each axis' value sets, and in a tuned study what
        `contender`'s trial draws: `trial_settings`, or under an adaptive sampler (`tune.sampler`
        tpe, whose trials depend on those before them) `drawn`, what the trial was given,
        {"baseline": {key: value}, "result": {...}} as its results line records it."""
        cfg = self.axes_config(base)
        if self.values.get("trial") is None:
            return cfg
        if cfg.tune.sampler != "random":
            return cfg.replace(**(drawn or {}).get("baseline", {}), **(drawn or {}).get("result", {}))
        return cfg.replace(**self.trial_settings(cfg, contender))

    def axes_config(self, base: Config) -> Config:
        """`base` with what each axis' value sets, before any trial's draw: what bounds a trial's
        spaces (a reinit depth by this point's reuse depth)."""
        return base.replace(**{k: v for a, value in self._axes() for k, v in a.settings(value).items()})

    def at_trial(self, trial: int) -> "RunKey":
        """This point's key for another trial."""
        return RunKey(tuple((name, trial if name == "trial" else value) for name, value in self.items))

    def stream(self, scope: str = "contender") -> str:
        """What names this point's trials apart from every other point's, but its seed and trial:
        the axes of `scope` and wider (`SCOPES`), e.g. pair5v6-n200-reuseall-book; "baseline" leaves
        out the contenders' axes, since one baseline serves every reuse depth and preset."""
        widths = SCOPES[:SCOPES.index(scope) + 1]
        return "-".join(part for a, v in self._axes()
                        if a.name not in ("seed", "trial") and a.scope in widths and (part := a.id(v)))

    def trial_settings(self, cfg: Config, contender: str) -> dict[str, Any]:
        """The settings `contender`'s trial at this point draws at random, the baseline's keys
        from the baseline's stream: a pure function of the seed, the point, the contender and
        the trial index, so `--jobs`, `--shard`, `--stack` and a resume draw the same."""
        return contenders.trial_settings(cfg, contender, study_seed=self.seed, cell=self.stream(),
                                         baseline_cell=self.stream("baseline"), trial=self.values["trial"])


def grid(cfg: Config) -> list[RunKey]:
    """Every grid point of the study: the widest axes vary slowest, so the runs sharing a model A
    are next to each other, and within them those sharing a baseline."""
    every = declared()
    by_scope = sorted(every, key=lambda a: SCOPES.index(a.scope))  # stable: declaration order within
    keys = []
    for values in itertools.product(*(a.values(cfg) for a in by_scope)):
        given = {a.name: v for a, v in zip(by_scope, values)}
        keys.append(RunKey(tuple((a.name, given[a.name]) for a in every)))
    return keys


def study_contenders(cfg: Config) -> tuple[str, ...]:
    """The contenders a study pairs against the baseline (every selected one but the baseline)."""
    return tuple(c for c in contenders.select(cfg) if c != "baseline")


def planned_contenders(cfg: Config, ran: Iterable[str] | None = None) -> tuple[str, ...]:
    """`study_contenders` as a report reads them from a study's stored config: with no contender's
    code needed, and none refused. A name no longer registered (an uninstalled plug-in's) stays
    as recorded; `all` is what the study ran (`ran`, the contenders its study.json names), or
    without it what is registered now that builds the study's network: a contender registered
    after the study was made is no run it lacks."""
    chosen = cfg.contenders or ("transfer",)
    if "all" in chosen and ran is not None:
        chosen = [*ran, *(c for c in chosen if c != "all")]
    elif "all" in chosen:
        known = contenders.names()
        every = [n for n in known if cfg.model.arch in contenders.get(n).archs]
        chosen = [*every, *(c for c in chosen if c != "all" and c not in known)]
    return tuple(dict.fromkeys(c for c in chosen if c != "baseline"))


def check_grid(cfg: Config) -> None:
    """Settings every run of the grid must accept: `top:K` fits every reuse depth, and so does
    each contender's own (`check_settings`: reinit's depth), so that no run fails mid-grid after
    others trained; a stack of seeds only where the network stacks (a cnn would drop it unread)."""
    for reuse in cfg.study.reuse_layers:
        check_unfreeze(cfg.transfer, reuse, cfg.model.blocks)
        at = cfg.replace(**{"transfer.reuse_layers": reuse})
        for name in study_contenders(cfg):
            contenders.get(name).check_settings(at)
    if cfg.study.stack not in (1, "auto") and not cfg.model.stacks:
        raise ConfigError("study.stack", f"a {cfg.model.arch} network never stacks seeds (only dense ones do), so "
                                         f"{cfg.study.stack} would be dropped; give 1, or auto")


def parse_shard(text: str | None, environ: dict | None = None) -> tuple[int, int]:
    """`I/N` (I counted from 0, as Slurm array and Kubernetes indexed-job indices are) -> (I, N).

    `auto` takes both from a whole Slurm job array, an even range from 0: I is the task's place
    in it (SLURM_ARRAY_TASK_ID / SLURM_ARRAY_TASK_STEP), N its SLURM_ARRAY_TASK_COUNT. `auto/N`
    takes I as the task's own index (SLURM_ARRAY_TASK_ID, or a Kubernetes Indexed Job's
    JOB_COMPLETION_INDEX) and N as given: what a resubmitted part of an array needs.
    """
    if not text:
        return 0, 1
    if not isinstance(text, str):  # run_study(shard_spec=3): say what was wanted, not AttributeError
        raise ConfigError("shard", f"expected the text I/N (e.g. '0/4'), auto or auto/N, got {text!r}")
    if text == "auto" or text.startswith("auto/"):
        text = _shard_from_environment(text, os.environ if environ is None else environ)
    head, _, tail = text.partition("/")
    if not (head.isdigit() and tail.isdigit()) or int(tail) < 1 or int(head) >= int(tail):
        raise ConfigError("shard", f"expected I/N with 0 <= I < N (e.g. 0/4), got {text!r}")
    if int(tail) > MAX_SHARDS:
        raise ConfigError("shard", f"at most {MAX_SHARDS} shards (a Slurm job array's largest), got {text!r}")
    return int(head), int(tail)


MAX_SHARDS = 4_000_001  # Slurm's largest MaxArraySize; Kubernetes allows fewer completions


def _whole(env, name: str, default: str | None = None) -> int:
    """The environment variable `name` as a whole number 0 or more, or a ConfigError naming it:
    a scheduler's variable the user (or a job script) set by hand may be anything."""
    value = env.get(name, default)
    text = str(value).strip()
    if not text.isdigit():
        raise ConfigError("shard", f"auto reads the environment variable {name}, which is {value!r}, not a whole "
                                   "number; unset or correct it, or give I/N")
    if int(text) > MAX_SHARDS:  # before it is parsed again as I/N, so the variable is the one named
        raise ConfigError("shard", f"auto reads the environment variable {name}, which is {value!r}, more than any "
                                   f"job array holds ({MAX_SHARDS}); unset or correct it, or give I/N")
    return int(text)


def _shard_from_environment(text: str, env) -> str:
    """`auto`: the task's place in a whole Slurm array, an even range from 0 (0-9, 0-18:2): index
    ID/STEP of COUNT. `auto/N`: the task's own ID (Slurm's or a Kubernetes Indexed Job's) is its
    shard, of N, so resubmitting some of an array's tasks (--array=3,7) runs those shards. A list
    of IDs carries no index variable, and `auto` refuses one rather than guess."""
    count = text.partition("/")[2]
    if "SLURM_ARRAY_TASK_ID" in env:
        task = _whole(env, "SLURM_ARRAY_TASK_ID")
        if count:
            return _own_index("SLURM_ARRAY_TASK_ID", task, count)
        if "SLURM_ARRAY_TASK_COUNT" not in env:
            raise ConfigError("shard", "SLURM_ARRAY_TASK_COUNT is not set; give the count: auto/N")
        tasks = _whole(env, "SLURM_ARRAY_TASK_COUNT")
        first, step = _whole(env, "SLURM_ARRAY_TASK_MIN", "0"), _whole(env, "SLURM_ARRAY_TASK_STEP", "1") or 1
        last = _whole(env, "SLURM_ARRAY_TASK_MAX", str(first + step * (tasks - 1)))
        if first != 0:
            raise ConfigError("shard", f"auto takes the shard from the task's place in an array from 0, and "
                                       f"SLURM_ARRAY_TASK_MIN is {first}; resubmitting some tasks (--array=3,7)? give "
                                       "the study's shard count, auto/N: each task's ID is then its shard")
        if tasks < 1 or last != step * (tasks - 1) or task % step:
            raise ConfigError("shard", f"auto needs an evenly spaced array (0-9, 0-18:2), and this one's "
                                       f"SLURM_ARRAY_TASK_COUNT={tasks} tasks from 0 to SLURM_ARRAY_TASK_MAX={last} "
                                       f"by SLURM_ARRAY_TASK_STEP={step} are not; give the shard count, auto/N: "
                                       "each task's ID is then its shard")
        return f"{task // step}/{tasks}"
    if "JOB_COMPLETION_INDEX" in env:
        if not count:
            raise ConfigError("shard", "a Kubernetes Indexed Job does not say how many shards there are; "
                                       "give the Job's completions: auto/N")
        return _own_index("JOB_COMPLETION_INDEX", _whole(env, "JOB_COMPLETION_INDEX"), count)
    raise ConfigError("shard", "auto needs a Slurm job array (SLURM_ARRAY_TASK_ID) or a Kubernetes Indexed "
                               "Job (JOB_COMPLETION_INDEX); outside one, give I/N")


def _own_index(name: str, index: int, count: str) -> str:
    """`auto/N`: the scheduler's index is the shard; one at or past N is the variable's fault,
    not a value the user typed."""
    if count.isdigit() and int(count) >= 1 and index >= int(count):
        raise ConfigError("shard", f"auto/{count} takes the shard from {name}, which is {index}, not below "
                                   f"{count}; give auto/N with N above every task's index")
    return f"{index}/{count}"


def shard(keys: list[RunKey], index: int, count: int, by: Callable[[RunKey], Any] | None = None) -> list[RunKey]:
    """The index-th of `count` disjoint slices: whole groups sharing a model A, dealt round-robin;
    `by`: a coarser group to keep whole (a stacked study's stacks, whose seeds train together)."""
    group = by or (lambda k: k.group)
    groups = list(dict.fromkeys(group(k) for k in keys))
    mine = {g for i, g in enumerate(groups) if i % count == index}
    return [k for k in keys if group(k) in mine]
