"""The adaptive sampler of tuned studies (`--sampler tpe`): Optuna's TPE, through ask-and-tell.

Random search (`space.draw`) stays the default: Dodge's budget curves need independent trials.
TPE is for users who want the best configuration rather than a budget curve: each trial's
settings are suggested from the (settings, validation accuracy) of the trials before it, so the
trials of one (cell, unit, contender) run in order.

Nothing of Optuna's runs the study. `suggest` builds a fresh in-memory Optuna study from the
history it is given, with a TPE sampler seeded by the caller, and asks it for one trial; it is
never told the result. So a suggestion is a pure function of (space, history, seed, startup):
the same whatever ran before in the process, and whether or not a journal file exists (resume).
fmtransfer's runner, records and fingerprints stay the single source of truth.

The journal file is only for viewing (`optuna-dashboard FILE`): `record` appends one finished
trial to it, and `suggest` given a journal first appends the history's trials it lacks, so a
resumed or interrupted runner leaves a complete journal. Each trial is written once, keyed by
its index in the history (`number`). Writing the journal never changes a suggestion.

A diverged trial (value None or not finite) has no accuracy. The in-memory study tells TPE it
scored `DIVERGED_VALUE` (0, below any accuracy), so TPE learns to avoid its region; Optuna's
TPE would ignore a failed trial and suggest the same region again. The journal records it as
FAIL, since it has no accuracy to show.

Optuna is an optional extra (`pip install -e '.[tune]'`), imported inside the functions only;
without it `suggest` and `record` raise a ConfigError naming `tune.sampler`.

Example:
    >>> from fmtransfer.space import LogUniform
    >>> lr = {"baseline.learning_rate": LogUniform(1e-4, 1e-1)}
    >>> first = suggest(lr, [], seed=sampler_seed(0, "cell", "baseline", 0))  # doctest: +SKIP
    >>> 1e-4 <= first["baseline.learning_rate"] <= 1e-1  # doctest: +SKIP
    True
"""

from __future__ import annotations

import contextlib
import math
import warnings
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

from fmtransfer.errors import ConfigError
from fmtransfer.space import Choice, IntRange, LogUniform, Space, Uniform, trial_seed

# The config key the CLI turns into --sampler.
KEY = "tune.sampler"
MISSING = "tpe needs Optuna: pip install -e '.[tune]'"

# What the in-memory study is told a diverged trial scored: no accuracy lies below it.
DIVERGED_VALUE = 0.0

# Trials TPE draws at random before it models the history: Optuna's default. A study with this
# many trials or fewer gets random trials from TPE too (Optuna's own draws, not `space.draw`'s).
STARTUP_TRIALS = 10

DEFAULT_STUDY = "fmtransfer"

# The user attribute that keys a journal's trial to its index in fmtransfer's history.
_NUMBER_ATTR = "fmtransfer.trial"


def available() -> bool:
    """Whether Optuna can be imported (the `tune` extra is installed)."""
    try:
        _optuna()
    except ConfigError:
        return False
    return True


def _optuna():
    try:
        import optuna
    except ImportError:
        raise ConfigError(KEY, MISSING) from None
    return optuna


@contextlib.contextmanager
def _quiet(optuna) -> Iterator[None]:
    """Optuna without its INFO lines ("A new study created ...") on fmtransfer's output, nor its
    experimental and deprecation warnings; the caller's verbosity comes back afterwards."""
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            warnings.simplefilter("ignore", FutureWarning)
            yield
    finally:
        optuna.logging.set_verbosity(verbosity)


def sampler_seed(study_seed: int, cell: str, contender: str, trial: int) -> int:
    """The TPE seed of one trial, a 32-bit integer (what Optuna's samplers take): a pure function
    of the trial's four coordinates, like `space.trial_seed` for random trials.

    Example:
        >>> sampler_seed(0, "cell", "baseline", 3) == sampler_seed(0, "cell", "baseline", 3)
        True
    """
    return int(trial_seed(study_seed, cell, contender, trial).generate_state(1)[0])


def journal_path(study_dir: Path, index: int = 0, count: int = 1) -> Path:
    """The journal file of shard `index` of `count`, named like its results file:
    `tune/tpe.journal` unsharded, `tune/tpe-2of4.journal` for shard 2 of 4.

    Example:
        >>> journal_path(Path("runs/study"), 2, 4).as_posix()
        'runs/study/tune/tpe-2of4.journal'
    """
    return Path(study_dir) / "tune" / ("tpe.journal" if count == 1 else f"tpe-{index}of{count}.journal")


def distribution(space: Space):
    """The Optuna distribution of a space: LogUniform and Uniform -> FloatDistribution (log or
    not), IntRange -> IntDistribution, Choice -> CategoricalDistribution."""
    d = _optuna().distributions
    if isinstance(space, LogUniform):
        return d.FloatDistribution(space.low, space.high, log=True)
    if isinstance(space, Uniform):
        return d.FloatDistribution(space.low, space.high)
    if isinstance(space, IntRange):
        return d.IntDistribution(space.low, space.high, log=space.log)
    if isinstance(space, Choice):
        return d.CategoricalDistribution(space.values)
    raise TypeError(f"no Optuna distribution for a {type(space).__name__} space")


def _value(value: float | None) -> float | None:
    """The accuracy, or None for a diverged trial (None, NaN or infinite)."""
    if value is None or not math.isfinite(value):
        return None
    return float(value)


def _frozen(optuna, space: Mapping[str, Space], settings: Mapping[str, Any], value: float | None,
            number: int, *, failed_state: bool):
    """One past trial as Optuna's FrozenTrial, its params the space's keys the settings hold."""
    params, dists = {}, {}
    for key, s in space.items():
        if key not in settings:
            continue
        v = settings[key]
        if not s.contains(v):
            raise ConfigError(key, f"trial {number}'s value {v!r} lies outside its space ({s.describe()}); "
                                   "a tuned study keeps its spaces from start to end")
        params[key], dists[key] = v, distribution(s)
    accuracy = _value(value)
    if accuracy is None and failed_state:
        return optuna.trial.create_trial(state=optuna.trial.TrialState.FAIL, params=params,
                                         distributions=dists, user_attrs={_NUMBER_ATTR: number})
    return optuna.trial.create_trial(params=params, distributions=dists,
                                     value=DIVERGED_VALUE if accuracy is None else accuracy,
                                     user_attrs={_NUMBER_ATTR: number})


def suggest(space: Mapping[str, Space], history: Sequence[tuple[Mapping[str, Any], float | None]], seed: int,
            journal: Path | None = None, study_name: str = DEFAULT_STUDY, *,
            startup: int = STARTUP_TRIALS) -> dict[str, Any]:
    """The next trial's settings, one value per key of `space`, in its order.

    Args:
        space: the search space, by config key (`space.spaces`).
        history: the trials so far, in trial order: (settings, validation accuracy), None where a
            trial diverged. Keys outside `space` are ignored.
        seed: the TPE seed of this trial (`sampler_seed`; reduced modulo 2**32).
        journal: a journal file to bring up to `history` first (`record`), for optuna-dashboard;
            it never changes the suggestion.
        study_name: the journal's study (one per cell, unit and contender).
        startup: trials drawn at random before TPE models the history.

    Raises:
        ConfigError: `tune.sampler` when Optuna is missing; a space's key when a past trial's
            value lies outside its space.
    """
    optuna = _optuna()
    with _quiet(optuna):
        past = [_frozen(optuna, space, settings, value, i, failed_state=False)
                for i, (settings, value) in enumerate(history)]
        if journal is not None:
            _write(optuna, Path(journal), study_name, space, list(enumerate(history)))
        sampler = optuna.samplers.TPESampler(seed=int(seed) % 2**32, n_startup_trials=startup)
        study = optuna.create_study(direction="maximize", sampler=sampler)
        study.add_trials(past)
        # Asked in sorted key order: the sampler's one generator serves the keys in turn, so a
        # suggestion does not depend on the order a caller's dict happens to list them.
        trial = study.ask({key: distribution(space[key]) for key in sorted(space)})
    return {key: _typed(space[key], trial.params[key]) for key in space}


def _typed(space: Space, value: Any) -> Any:
    if isinstance(space, IntRange):
        return int(value)
    if isinstance(space, (Uniform, LogUniform)):
        # Optuna may round a log draw a hair past a bound; the space's own bounds decide.
        return min(space.high, max(space.low, float(value)))
    return value


def _storage(optuna, journal: Path):
    journal.parent.mkdir(parents=True, exist_ok=True)
    # Optuna 4.0's file backend (the extra asks for 4.0 or later); its default lock is a symlink,
    # safe on NFS too, for shards of an array sharing one study directory.
    from optuna.storages.journal import JournalFileBackend

    return optuna.storages.JournalStorage(JournalFileBackend(str(journal)))


def _journal_study(optuna, storage, study_name: str):
    try:
        return optuna.create_study(storage=storage, study_name=study_name, direction="maximize",
                                   load_if_exists=True)
    except optuna.exceptions.DuplicatedStudyError:  # another worker created it meanwhile
        return optuna.load_study(storage=storage, study_name=study_name)


def record(journal: Path, study_name: str, space: Mapping[str, Space], settings: Mapping[str, Any],
           value: float | None, *, number: int) -> bool:
    """Append one finished trial to the journal file `journal` (created with its folders if need
    be), in study `study_name`, for optuna-dashboard. A diverged trial (value None) is recorded as
    FAIL. Each `number` (the trial's index in the history) is written once, whoever writes first:
    a resumed runner may record again. Returns whether it wrote the trial.

    Several processes may append to one journal: Optuna's file backend locks it.
    """
    optuna = _optuna()
    with _quiet(optuna):
        return _write(optuna, Path(journal), study_name, space, [(number, (settings, value))]) > 0


def _write(optuna, journal: Path, study_name: str, space: Mapping[str, Space], trials) -> int:
    """Append the (number, (settings, value)) trials the journal's study lacks; how many."""
    study = _journal_study(optuna, _storage(optuna, journal), study_name)
    have = {t.user_attrs.get(_NUMBER_ATTR) for t in study.get_trials(deepcopy=False)}
    new = [_frozen(optuna, space, settings, value, number, failed_state=True)
           for number, (settings, value) in trials if number not in have]
    study.add_trials(new)
    return len(new)
