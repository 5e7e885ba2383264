"""The adaptive sampler (`--sampler tpe`, fmtransfer.sampler): Optuna's TPE through ask-and-tell,
seeded and fed the history, so its suggestions are reproducible; a journal file beside them for
optuna-dashboard that never changes a suggestion. Nothing here trains."""

from __future__ import annotations

import math
import statistics
import sys

import optuna  # the tune extra, which `make install` installs: these tests need it and never skip
import pytest

from fmtransfer import sampler
from fmtransfer.errors import ConfigError
from fmtransfer.sampler import available, distribution, record, sampler_seed, suggest
from fmtransfer.space import Choice, IntRange, LogUniform, Uniform


SPACE = {
    "transfer.frozen_learning_rate": LogUniform(1e-4, 1e-1),
    "transfer.frozen_epochs": IntRange(1, 20),
    "reinit.depth": IntRange(1, 16, log=True),
    "l2_sp.beta": Uniform(0.0, 2.5),
    "transfer.reuse": Choice(("all", "top:1", 3, True)),
}


def toy(settings: dict) -> float:
    """A validation accuracy peaked at learning rate 1e-2: -(log10(lr) + 2)^2."""
    return -(math.log10(settings["transfer.frozen_learning_rate"]) + 2) ** 2


def run_toy(n: int, study_seed: int = 0, space=None, cell: str = "pair5v6-n200", contender: str = "transfer"):
    """n sequential TPE trials on the toy: [(settings, value)]."""
    history: list[tuple[dict, float]] = []
    for i in range(n):
        settings = suggest(space or SPACE, history, sampler_seed(study_seed, cell, contender, i))
        history.append((settings, toy(settings)))
    return history


def test_every_space_kind_maps_to_its_optuna_distribution():
    d = optuna.distributions
    assert distribution(LogUniform(1e-4, 1e-1)) == d.FloatDistribution(1e-4, 1e-1, log=True)
    assert distribution(Uniform(0.0, 2.5)) == d.FloatDistribution(0.0, 2.5, log=False)
    assert distribution(IntRange(1, 20)) == d.IntDistribution(1, 20, log=False)
    assert distribution(IntRange(4, 40, log=True)) == d.IntDistribution(4, 40, log=True)
    assert distribution(Choice(("all", "top:1", 3, True))) == d.CategoricalDistribution(("all", "top:1", 3, True))


def test_suggestions_lie_inside_their_spaces_with_their_types_and_keys_in_the_space_order():
    history = run_toy(14)  # past the 10 random startup trials, into TPE's own
    for settings, _ in history:
        assert list(settings) == list(SPACE)
        for key, space in SPACE.items():
            assert space.contains(settings[key]), (key, settings[key])
        assert isinstance(settings["transfer.frozen_epochs"], int)
        assert isinstance(settings["l2_sp.beta"], float)


def test_the_same_space_history_and_seed_give_the_same_suggestion_whatever_ran_before():
    history = run_toy(12)
    seed = sampler_seed(0, "pair5v6-n200", "transfer", 12)
    first = suggest(SPACE, history, seed)
    assert suggest(SPACE, history, seed) == first
    run_toy(7, study_seed=3)  # unrelated studies in the same process
    suggest({"x": Uniform(0.0, 1.0)}, [({"x": 0.5}, 0.9)], 99)
    assert suggest(SPACE, history, seed) == first
    # Neither the order a caller lists the keys in, nor another seed's suggestion, is the same thing.
    assert suggest(dict(reversed(SPACE.items())), history, seed) == first
    assert suggest(SPACE, history, seed + 1) != first


def test_the_journal_never_changes_a_suggestion_new_or_resumed(tmp_path):
    history = run_toy(12)
    seed = sampler_seed(0, "pair5v6-n200", "transfer", 12)
    without = suggest(SPACE, history, seed)
    journal = tmp_path / "study" / "tune" / "shard-0-of-1.journal"
    assert suggest(SPACE, history, seed, journal, "pair5v6-n200/transfer") == without  # journal made now
    assert suggest(SPACE, history, seed, journal, "pair5v6-n200/transfer") == without  # journal exists


def test_recorded_trials_read_back_from_the_journal_with_their_values_and_a_diverged_one_as_failed(tmp_path):
    journal = tmp_path / "study" / "tune" / "shard-0-of-1.journal"
    history = run_toy(4)
    history[2] = (history[2][0], None)  # diverged: no accuracy
    for i, (settings, value) in enumerate(history):
        assert record(journal, "pair5v6-n200/transfer", SPACE, settings, value, number=i)
    # A resumed runner records again: nothing is written twice.
    assert not record(journal, "pair5v6-n200/transfer", SPACE, *history[1], number=1)
    suggest(SPACE, history, 7, journal, "pair5v6-n200/transfer")
    assert journal.is_file()

    from optuna.storages.journal import JournalFileBackend

    storage = optuna.storages.JournalStorage(JournalFileBackend(str(journal)))
    trials = optuna.load_study(study_name="pair5v6-n200/transfer", storage=storage).get_trials()
    assert len(trials) == 4
    states = optuna.trial.TrialState
    assert [t.state for t in trials] == [states.COMPLETE, states.COMPLETE, states.FAIL, states.COMPLETE]
    for t, (settings, value) in zip(trials, history):
        assert t.params == settings
        assert t.value == value


def test_suggest_brings_the_journal_up_to_the_history_so_a_resumed_study_leaves_every_trial(tmp_path):
    journal = tmp_path / "tune" / "shard-1-of-2.journal"
    history = run_toy(3)
    record(journal, "cell/transfer", SPACE, *history[0], number=0)
    suggest(SPACE, history, 1, journal, "cell/transfer")
    from optuna.storages.journal import JournalFileBackend

    storage = optuna.storages.JournalStorage(JournalFileBackend(str(journal)))
    trials = optuna.load_study(study_name="cell/transfer", storage=storage).get_trials()
    assert [t.value for t in trials] == [v for _, v in history]


def test_a_diverged_trial_is_told_to_tpe_as_accuracy_zero_below_any_real_one():
    space = {"lr": LogUniform(1e-4, 1e-1)}
    told = [({"lr": 1e-4 * 10 ** (3 * i / 11)}, None if i > 7 else 0.9) for i in range(12)]
    # The same history with those trials told as scoring 0 gives the same suggestion: None is 0.
    zeros = [(s, 0.0 if v is None else v) for s, v in told]
    assert suggest(space, told, 5) == suggest(space, zeros, 5)
    assert suggest(space, [(told[0][0], float("nan"))], 5) == suggest(space, [(told[0][0], None)], 5)


def test_tpe_adapts_thirty_sequential_trials_close_in_on_the_toy_optimum():
    history = run_toy(30, space={"transfer.frozen_learning_rate": LogUniform(1e-4, 1e-1)}, cell="toy", contender="tpe")
    values = [v for _, v in history]
    assert max(values) > max(values[:5])
    # Random draws over log10(lr) in [-4, -1] lie on average 0.83 decades from the optimum at -2;
    # the 20 trials TPE models lie much closer.
    distance = [abs(math.log10(s["transfer.frozen_learning_rate"]) + 2) for s, _ in history]
    assert statistics.mean(distance[10:]) < 0.5
    assert statistics.mean(distance[10:]) < statistics.mean(distance[:10])


def test_a_past_value_outside_its_space_is_refused_naming_the_key():
    with pytest.raises(ConfigError) as e:
        suggest(SPACE, [({"transfer.frozen_epochs": 99}, 0.9)], 0)
    assert e.value.key == "transfer.frozen_epochs"


def test_without_optuna_tpe_is_refused_naming_the_sampler_key(monkeypatch, tmp_path):
    assert available()
    monkeypatch.setitem(sys.modules, "optuna", None)  # `import optuna` raises ImportError
    assert not available()
    for call in (lambda: suggest(SPACE, [], 0),
                 lambda: record(tmp_path / "x.journal", "s", SPACE, {}, 0.5, number=0)):
        with pytest.raises(ConfigError) as e:
            call()
        assert e.value.key == "tune.sampler"
        assert "pip install -e '.[tune]'" in str(e.value)
    assert not (tmp_path / "x.journal").exists()


def test_the_sampler_module_imports_without_optuna(monkeypatch):
    monkeypatch.setitem(sys.modules, "optuna", None)
    monkeypatch.delitem(sys.modules, "fmtransfer.sampler")
    import importlib

    assert importlib.import_module("fmtransfer.sampler").KEY == sampler.KEY == "tune.sampler"


def test_each_shard_has_its_own_journal_named_like_its_results_file(tmp_path):
    from fmtransfer.sampler import journal_path

    assert journal_path(tmp_path) == tmp_path / "tune" / "tpe.journal"
    assert journal_path(tmp_path, 2, 4) == tmp_path / "tune" / "tpe-2of4.journal"
    assert len({journal_path(tmp_path, i, 4) for i in range(4)}) == 4
