"""The torture run, short: a `study --jobs 2` sent SIGTERM, SIGKILL and SIGINT at random times,
at the parent, a worker or the whole group, resumed after each, ends with the records of a study
never interrupted, no run recorded twice and no temporary file left; all the while `study
report`, `study claims` and `study report --html` (a page outside the study) poll it, and none of
them crashes, hangs or writes inside the study. bench/torture.py runs the long version (20
signals) and says what each round did.
"""

from __future__ import annotations

import importlib.util
import json

import pytest

from conftest import REPO, run_cli

pytestmark = pytest.mark.skipif(not __import__("os").path.exists("/proc/self/stat"),
                                reason="finds worker processes in /proc")

# Two seeds of two runs each, so that each worker has a seed and is mid-seed when a run is recorded.
ARGS = ["--seeds", "2", "--reuse-layers", "1,all", "--b-train-sizes", "20", "--valid-size", "100", "--no-verify",
        "--hidden", "16,8", "--a-epochs", "1", "--b-epochs", "2", "--freeze-epochs", "1", "--fine-tune-epochs", "1"]
KILLS = 3


def _bench():
    spec = importlib.util.spec_from_file_location("torture", REPO / "bench" / "torture.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_a_study_killed_at_random_resumes_to_the_uninterrupted_records(tiny_data, tmp_path):
    torture = _bench()
    args = [*ARGS, "--data-dir", str(tiny_data)]
    reference = tmp_path / "uninterrupted"
    whole = run_cli("study", *args, "--run", reference, "--no-plots", "--json")  # in-process: TensorFlow is loaded
    assert whole.code == 0, whole.err
    result = torture.torture(args, tmp_path, kills=KILLS, seed=3, max_delay=5.0, reference=reference,
                             log=lambda line: None)
    assert result["ok"], json.dumps(result["problems"], indent=1)
    assert result["records_equal"] and result["recorded_once"] and result["runs"] == 4
    assert sum(result["signals"].values()) == KILLS
    # Polled all the while, and read once more at the end: each command ran, and read the whole
    # study at least once (exit 0); any other outcome than 0, or 2 in one line before the study
    # began, is among the problems above, as is a file in the study it does not write.
    assert all(result["polls"][name].get("0", 0) >= 1 for name in ("report", "claims", "html")), result["polls"]
