"""Search spaces, declared beside the settings they tune (issue 25, item 1).

Nothing here trains: spaces are data, checked when declared, overridden or drawn from.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

import numpy as np
import pytest

from conftest import assert_usage_error, run_cli
from fmtransfer import contenders, fingerprints
from fmtransfer.config import (
    BaselineConfig, Config, PretrainConfig, Section, TrainAConfig, check_space, declared_spaces, sections, setting,
    spaces_in_force,
)
from fmtransfer.contenders import Contender, register, trial_settings, unregister
from fmtransfer.contenders.transfer import TransferFromA
from fmtransfer.errors import ConfigError
from fmtransfer.space import (
    Choice, IntRange, LogUniform, Space, Uniform, draw, space_from_dict, spaces, trial_seed,
)

# What the issue asks to tune: every phase's rate and epochs (the baseline's included), L2-SP's
# alpha and beta, LP-FT's C, gradual's schedule, the reinit depth.
TUNED = {"baseline.epochs", "baseline.learning_rate", "transfer.freeze_epochs", "transfer.fine_tune_epochs",
         "transfer.frozen_learning_rate", "transfer.fine_tune_learning_rate", "l2_sp.alpha", "l2_sp.beta",
         "lp_ft.c", "gradual.factor", "gradual.epochs_per_layer", "reinit.depth"}
PRETRAINING = ("autoencoder", "greedy", "gan", "rbm")
SAMPLES = [LogUniform(1e-4, 10.0), Uniform(1.0, 5.0), IntRange(4, 40), IntRange(1, 64, log=True),
           Choice(("all", "top:1", "top:2"))]


# ----------------------------------------------------------------------------- declared

def test_every_setting_the_issue_names_declares_a_space():
    assert TUNED <= set(declared_spaces())


def test_model_a_and_the_encoders_training_have_no_space():
    for section in (TrainAConfig, PretrainConfig):
        assert spaces(section) == {}
    for name in PRETRAINING:
        own = contenders.get(name).Settings
        assert own is None or spaces(own) == {}, name


def test_each_declared_space_lies_within_what_its_setting_accepts():
    known = sections()
    for key, space in declared_spaces().items():
        check_space(known[key.partition(".")[0]], key, space)  # raises if a bound is refused
        assert space.contains(Config().to_dict()[key.partition(".")[0]][key.partition(".")[2]]), \
            f"{key}'s default lies outside its space {space.describe()}"


def test_each_pretraining_contender_tunes_its_b_phase_and_not_its_encoder():
    for name in PRETRAINING:
        tuned = set(contenders.get(name).space(Config()))
        assert tuned == {"transfer.freeze_epochs", "transfer.fine_tune_epochs", "transfer.frozen_learning_rate",
                         "transfer.fine_tune_learning_rate"}, name


def test_a_contender_draws_only_the_keys_its_training_reads():
    cfg = Config()
    assert set(contenders.get("baseline").space(cfg)) == {"baseline.epochs", "baseline.learning_rate"}
    lp_ft = set(contenders.get("lp-ft").space(cfg))
    assert "lp_ft.c" in lp_ft and "transfer.frozen_learning_rate" not in lp_ft  # the probe is its phase 1
    assert "transfer.fine_tune_learning_rate" not in contenders.get("gradual").space(cfg)
    assert {"l2_sp.alpha", "l2_sp.beta"} <= set(contenders.get("l2-sp").space(cfg))


def test_the_reinit_depth_is_drawn_no_deeper_than_the_layers_reused():
    assert contenders.get("reinit").space(Config())["reinit.depth"] == IntRange(1, 3)
    shallow = Config().replace(**{"transfer.reuse_layers": 2})
    assert contenders.get("reinit").space(shallow)["reinit.depth"] == IntRange(1, 2)


def test_a_depth_of_one_leaves_every_fingerprint_made_before_as_it_was():
    """reinit.depth came after the committed studies: at 1 it is what they were made with."""
    cfg = Config()
    assert fingerprints.own_sections_fingerprint(cfg, "reinit") is None
    assert "reinit.depth" not in fingerprints.contender(cfg, {}, "reinit", {})
    deeper = cfg.replace(**{"reinit.depth": 2})
    assert fingerprints.run_fingerprint(deeper, "reinit") != fingerprints.run_fingerprint(cfg, "reinit")


# ----------------------------------------------------------------------------- each space checks itself

@pytest.mark.parametrize("make, problem", [
    (lambda: LogUniform(1.0, 0.1), "low bound 1 exceeds its high bound 0.1"),
    (lambda: LogUniform(0.0, 1.0), "must lie above 0"),
    (lambda: LogUniform(-1.0, 1.0), "must lie above 0"),
    (lambda: Uniform(0.0, math.inf), "must be finite"),
    (lambda: Uniform("a", 1.0), "must be a number"),
    (lambda: IntRange(5, 4), "low bound 5 exceeds its high bound 4"),
    (lambda: IntRange(0, 4, log=True), "at 1 or above"),
    (lambda: IntRange(1.5, 4), "must be an integer"),
    (lambda: Choice(()), "at least one value"),
    (lambda: Choice(("a", "a")), "twice"),
])
def test_a_space_that_cannot_be_drawn_from_is_a_config_error(make, problem):
    with pytest.raises(ConfigError, match=problem):
        make()


def test_a_space_read_from_data_names_the_key_it_was_given_for():
    with pytest.raises(ConfigError) as e:
        space_from_dict({"kind": "log-uniform", "low": 0, "high": 1}, "l2_sp.alpha")
    assert e.value.key == "l2_sp.alpha" and "above 0" in e.value.problem
    with pytest.raises(ConfigError, match="kind must be one of"):
        space_from_dict({"kind": "normal", "low": 0, "high": 1}, "l2_sp.alpha")
    with pytest.raises(ConfigError, match="has no step"):
        space_from_dict({"kind": "uniform", "low": 0, "high": 1, "step": 2}, "gradual.factor")


@pytest.mark.parametrize("space", SAMPLES, ids=lambda s: s.describe())
def test_a_space_round_trips_through_plain_data(space: Space):
    data = json.loads(json.dumps(space.to_dict()))
    assert space_from_dict(data) == space and Space.from_dict(data) == space


def test_a_space_describes_itself_in_a_few_words():
    assert LogUniform(1e-4, 10.0).describe() == "log-uniform 1e-4..10"
    assert LogUniform(1e-5, 1e-2).describe() == "log-uniform 1e-5..0.01"
    assert Uniform(1.0, 5.0).describe() == "uniform 1..5"
    assert IntRange(4, 40).describe() == "integers 4..40"
    assert IntRange(1, 64, log=True).describe() == "log-integers 1..64"
    assert Choice(("all", "top:1")).describe() == "one of all, top:1"


def test_new_bounds_keep_the_kind_of_the_declared_space():
    assert LogUniform(1e-4, 10.0).rebound("1e-3..1", "k") == LogUniform(1e-3, 1.0)
    assert IntRange(1, 64, log=True).rebound("2..8", "k") == IntRange(2, 8, log=True)
    assert Choice((1, 2, 4)).rebound("2|8", "k") == Choice((2, 8))
    assert Choice((0.1, 0.5)).rebound("0.2|1", "k") == Choice((0.2, 1.0))
    assert Choice(("all", "top:1")).rebound("top:2|all", "k") == Choice(("top:2", "all"))
    with pytest.raises(ConfigError, match="like the declared ones") as e:
        Choice((1, 2)).rebound("a|b", "k")
    assert e.value.key == "k"
    with pytest.raises(ConfigError, match="LOW..HIGH"):
        Uniform(1.0, 2.0).rebound("3", "k")


def test_a_space_that_reaches_a_value_its_setting_refuses_is_named():
    with pytest.raises(ConfigError) as e:
        check_space(BaselineConfig, "baseline.epochs", IntRange(-1, 5))
    assert e.value.key == "baseline.epochs" and "reaches -1" in e.value.problem
    with pytest.raises(ConfigError, match="integer space"):
        check_space(BaselineConfig, "baseline.epochs", Uniform(1.0, 5.0))


# ----------------------------------------------------------------------------- drawing

@pytest.mark.parametrize("space", SAMPLES, ids=lambda s: s.describe())
def test_sampling_stays_in_the_space_and_spreads_over_it(space: Space):
    rng = np.random.default_rng(0)
    values = [space.sample(rng) for _ in range(2000)]
    assert all(space.contains(v) for v in values)
    if isinstance(space, Choice):
        assert set(values) == set(space.values)
    elif isinstance(space, IntRange):
        assert min(values) == space.low and max(values) == space.high
    elif isinstance(space, LogUniform):  # every decade drawn about equally often
        decades = np.histogram(np.log10(values), bins=5, range=(-4, 1))[0]
        assert decades.min() > 300
    else:
        assert space.low <= min(values) < space.low + 0.1 and space.high - 0.1 < max(values) <= space.high


def test_a_trial_is_the_same_draw_whoever_draws_it_and_in_any_order():
    space = declared_spaces()
    seed = trial_seed(42, "pair5v6-n200-reuseall-book", "l2-sp", 3)
    first = draw(space, seed)
    assert draw(dict(reversed(list(space.items()))), trial_seed(42, "pair5v6-n200-reuseall-book", "l2-sp", 3)) == first
    alone = draw({"l2_sp.alpha": space["l2_sp.alpha"]}, seed)
    assert alone == {"l2_sp.alpha": first["l2_sp.alpha"]}  # one key's draw ignores the others
    assert all(space[k].contains(v) for k, v in first.items())


def test_another_trial_index_seed_cell_or_contender_draws_otherwise():
    space = {"l2_sp.alpha": LogUniform(1e-4, 10.0)}
    base = draw(space, trial_seed(42, "cell", "l2-sp", 3))
    for other in (trial_seed(42, "cell", "l2-sp", 4), trial_seed(43, "cell", "l2-sp", 3),
                  trial_seed(42, "cell2", "l2-sp", 3), trial_seed(42, "cell", "transfer", 3)):
        assert draw(space, other) != base


def test_a_trial_draws_the_contenders_space_and_the_baselines_shared_by_every_contender():
    kwargs = dict(study_seed=7, cell="pair5v6-n200", trial=2)
    cfg = Config()
    l2_sp = trial_settings(cfg, "l2-sp", **kwargs)
    assert set(l2_sp) == set(contenders.get("l2-sp").space(cfg)) | set(contenders.get("baseline").space(cfg))
    transfer = trial_settings(cfg, "transfer", **kwargs)
    baseline = {k: v for k, v in transfer.items() if k.startswith("baseline.")}
    assert baseline == {k: v for k, v in l2_sp.items() if k.startswith("baseline.")}  # trained once per trial
    assert trial_settings(cfg, "l2-sp", **kwargs) == l2_sp
    assert trial_settings(cfg, "l2-sp", **{**kwargs, "trial": 3}) != l2_sp


def test_every_trial_of_every_contender_is_a_valid_config():
    cfg = Config()
    for name in contenders.names():
        for trial in range(5):
            drawn = trial_settings(cfg, name, study_seed=0, cell="c", trial=trial)
            made = cfg.replace(**drawn)
            assert all(made.to_dict()[k.partition(".")[0]][k.partition(".")[2]] == v for k, v in drawn.items())


# ----------------------------------------------------------------------------- overriding the bounds

def test_study_space_moves_a_declared_spaces_bounds_and_keeps_its_kind():
    cfg = Config(study={"space": ("l2_sp.alpha=1e-3..1", "transfer.fine_tune_epochs=8..32")})
    found = spaces_in_force(cfg)
    assert found["l2_sp.alpha"] == LogUniform(1e-3, 1.0)
    assert found["transfer.fine_tune_epochs"] == IntRange(8, 32)
    assert contenders.get("l2-sp").space(cfg)["l2_sp.alpha"] == LogUniform(1e-3, 1.0)
    assert spaces_in_force(Config()) == declared_spaces()


@pytest.mark.parametrize("item, problem", [
    ("l2_sp.alpha=1..0.1", "low bound 1 exceeds its high bound 0.1"),
    ("transfer.frozen_learning_rate=0..0.1", "must lie above 0"),
    ("gradual.factor=0.5..2", "reaches 0.5, which the setting refuses"),
    ("baseline.epochs=-3..10", "reaches -3, which the setting refuses"),
    ("transfer.freeze_epochs=1.5..4", "integers"),
    ("transfer.unfreeze=all..top:1", "has no search space"),
    ("l2_sp.alpha", "KEY=LOW..HIGH"),
])
def test_a_bad_override_is_a_config_error_on_study_space_naming_the_item(item, problem):
    with pytest.raises(ConfigError) as e:
        Config(study={"space": (item,)})
    assert e.value.key == "study.space" and item in e.value.problem and problem in e.value.problem


def test_a_bad_override_on_the_command_line_is_one_line_exit_2():
    assert_usage_error(run_cli("contenders", "--space", "l2_sp.alpha=1..0.1"), "--space", "l2_sp.alpha", "exceeds")
    assert_usage_error(run_cli("contenders", "--space", "transfer.fine_tune_learning_rate=0..1e-2"),
                       "--space", "transfer.fine_tune_learning_rate", "above 0")


def test_a_bad_override_in_a_config_file_is_one_line_naming_the_file_and_key(tmp_path):
    path = tmp_path / "tune.toml"
    path.write_text('[study]\nspace = ["lp_ft.c=10..1"]\n')
    assert_usage_error(run_cli("contenders", "--config", path), str(path), "study.space", "lp_ft.c")
    assert_usage_error(run_cli("run", "--run", tmp_path / "r", "--config", path), str(path), "study.space")


# ----------------------------------------------------------------------------- shown

def test_fmtransfer_contenders_shows_each_space():
    shown = run_cli("contenders")
    assert shown.code == 0, shown.err
    assert "l2_sp.alpha log-uniform 1e-4..10" in shown.out
    assert "baseline.epochs integers 5..50" in shown.out
    rows = {r["name"]: r for r in json.loads(run_cli("contenders", "--json").out)["contenders"]}
    assert rows["lp-ft"]["space"]["lp_ft.c"] == {"kind": "log-uniform", "low": 1e-3, "high": 100.0}
    assert set(rows["gan"]["space"]) == set(contenders.get("gan").space(Config()))
    moved = json.loads(run_cli("contenders", "--json", "--space", "l2_sp.alpha=1e-2..1").out)["contenders"]
    assert next(r for r in moved if r["name"] == "l2-sp")["space"]["l2_sp.alpha"]["low"] == 1e-2


def test_docs_show_each_declared_space():
    from conftest import REPO

    text = (REPO / "docs" / "contenders.md").read_text()
    for key, space in declared_spaces().items():
        assert f"`{key}` {space.describe()}" in text, key
    assert "fixed" in text and "shared" in text


# ----------------------------------------------------------------------------- a plug-in's own

def test_a_plug_in_declares_a_space_the_same_way():
    @register
    class Scaled(TransferFromA):
        name = "scaled-test"
        title = "scaled (test)"
        description = "The book's phases, rates scaled."
        order = 2000

        @dataclass(frozen=True)
        class Settings(Section):
            NAME = "scaled_test"
            scale: float = setting(1.0, "Multiplies both rates.", space=LogUniform(0.1, 10.0))

    try:
        assert declared_spaces()["scaled_test.scale"] == LogUniform(0.1, 10.0)
        assert contenders.get("scaled-test").space(Config())["scaled_test.scale"] == LogUniform(0.1, 10.0)
        drawn = trial_settings(Config(), "scaled-test", study_seed=0, cell="c", trial=0)
        assert 0.1 <= drawn["scaled_test.scale"] <= 10.0
        assert spaces_in_force(Config(study={"space": ("scaled_test.scale=0.5..2",)}))["scaled_test.scale"] \
            == LogUniform(0.5, 2.0)
        shown = run_cli("contenders")
        assert "scaled_test.scale log-uniform 0.1..10" in shown.out
    finally:
        unregister("scaled-test")


def test_a_plug_in_whose_space_its_own_setting_refuses_is_not_registered():
    class Bad(Contender):
        name = "bad-space-test"
        title = "bad"
        description = "A space below what its setting accepts."

        @dataclass(frozen=True)
        class Settings(Section):
            NAME = "bad_space_test"
            strength: float = setting(1.0, "A strength.", space=Uniform(-1.0, 1.0))

            def check(self) -> None:
                self.fail_unless_positive("strength")

    with pytest.raises(ValueError, match="bad_space_test.strength.*reaches -1"):
        register(Bad)
    assert "bad-space-test" not in contenders.names()


def test_a_pretraining_plug_in_may_not_tune_its_encoder():
    from fmtransfer.contenders.pretrained import PretrainedEncoder

    class Tuned(PretrainedEncoder):
        name = "tuned-encoder-test"
        title = "tuned encoder"
        description = "An encoder whose pretraining would be drawn per trial."

        @dataclass(frozen=True)
        class Settings(Section):
            NAME = "tuned_encoder_test"
            epochs: int = setting(5, "Pretraining epochs.", space=IntRange(1, 10))

    with pytest.raises(ValueError, match="made once per seed and shared by every trial"):
        register(Tuned)
    assert "tuned-encoder-test" not in contenders.names()
