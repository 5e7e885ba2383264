"""`study --seeds auto` (issue 18, item 6): seeds added to the whole grid in batches until every
cell's 95% t-interval half-width is at most --target-halfwidth points, or --max-seeds."""

import json

import pytest

from conftest import assert_usage_error, run_cli, tiny_settings
from fmtransfer import ConfigError
from fmtransfer import study as studies
from fmtransfer.config import Config
from fmtransfer.study import inference


@pytest.mark.parametrize("args, names", [
    (["--seeds", "auto"], ["--seeds auto", "--target-halfwidth"]),
    (["--seeds", "auto", "--target-halfwidth", "0"], ["--target-halfwidth"]),
    (["--seeds", "auto", "--target-halfwidth", "-0.5"], ["--target-halfwidth"]),
    (["--seeds", "auto", "--target-halfwidth", "0.5", "--shard", "0/2"], ["--shard", "--seeds auto"]),
    (["--seeds", "auto", "--target-halfwidth", "0.5", "--max-seeds", "1"], ["--max-seeds"]),
    (["--seeds", "many"], ["--seeds"]),
])
def test_bad_seeds_auto_options_are_one_line_before_any_work(tmp_path, args, names):
    assert_usage_error(run_cli("study", "--run", tmp_path / "s", *args), *names)
    assert not (tmp_path / "s").exists()


def test_the_half_width_and_the_seed_limit_are_config_keys_in_points():
    cfg = Config().replace(**{"study.target_halfwidth": 0.25, "study.max_seeds": 30})
    assert (cfg.study.target_halfwidth, cfg.study.max_seeds) == (0.25, 30)
    assert Config().study.max_seeds == 50 and Config().study.target_halfwidth is None
    with pytest.raises(ConfigError, match="study.target_halfwidth"):
        Config().replace(**{"study.target_halfwidth": float("inf")})
    with pytest.raises(ConfigError, match="study.target_halfwidth"):
        studies.run_until_precise(Config())


@pytest.mark.slow
def test_seeds_auto_stops_at_the_limit_or_once_precise_and_resumes(tiny_data, tmp_path):
    cfg = Config().replace(**tiny_settings(tiny_data), **{"study.b_train_sizes": [20], "study.reuse_layers": [1, "all"],
                                                           "study.max_seeds": 3, "study.target_halfwidth": 1e-6})
    # A target no grid meets: a first batch of two, one more, then the limit.
    result = studies.run_until_precise(cfg, tmp_path, first=2, batch=1)
    assert result.seeds_auto["seeds"] == 3 and result.seeds_auto["stopped"] == "max_seeds"
    assert result.seeds_auto["batches"] == 2
    assert [c.seeds for c in result.cells] == [[42, 43, 44]] * 2  # the whole grid, the same seeds in every cell
    assert result.seeds_auto["widest_halfwidth"] == pytest.approx(
        max(inference.t_halfwidth([b - a for a, b in zip(c.baseline_accuracies, c.accuracies)])
            for c in result.cells))
    assert json.loads((tmp_path / "study.json").read_text())["seeds_auto"] == result.seeds_auto
    lines = (tmp_path / "results.jsonl").read_text()
    # A target any grid meets, from the command line: the first batch (all three) suffices, and
    # resuming trains nothing.
    done = run_cli("study", "--run", tmp_path, "--seeds", "auto", "--target-halfwidth", "500", "--max-seeds", "3",
                   "--data-dir", tiny_data, "--no-verify", "--valid-size", "100",
                   "--hidden", "16,8", "--a-epochs", "1", "--b-epochs", "2", "--freeze-epochs", "1",
                   "--fine-tune-epochs", "1", "--b-train-sizes", "20", "--reuse-layers", "1,all", "--json", "--no-plots")
    assert done.code == 0, done.err
    out = done.json()
    assert out["seeds_auto"]["stopped"] == "precision" and out["seeds_auto"]["seeds"] == 3
    assert (tmp_path / "results.jsonl").read_text() == lines
