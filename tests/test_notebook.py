"""examples/chapter11.ipynb runs top to bottom, in quick mode, on a kernel of this environment.

The notebook reads FMTRANSFER_NOTEBOOK_QUICK=1 from the kernel's environment, which the kernel
inherits from this process: quick.toml's few epochs and a 3-seed study (about a minute). Its
numbers mean nothing; what is checked is that every cell runs and shows what it should.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

import fmtransfer

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "examples"
NOTEBOOK = EXAMPLES / "chapter11.ipynb"
QUICK_SEEDS = 3
PRESETS = ("book", "notebook")


def _same_environment(argv0: str) -> bool:
    """Whether a kernelspec's interpreter is this environment's (same sys.prefix)."""
    if argv0 in {"python", f"python{sys.version_info[0]}", "python{}.{}".format(*sys.version_info[:2])}:
        return True  # jupyter_client starts these as sys.executable
    try:
        out = subprocess.run([argv0, "-c", "import sys; print(sys.prefix)"], capture_output=True, text=True,
                             timeout=60)
    except OSError:
        return False
    return out.returncode == 0 and Path(out.stdout.strip()).resolve() == Path(sys.prefix).resolve()


def _kernel_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """`python3` if it runs this environment's interpreter, else a spec made for it in tmp_path."""
    from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel

    try:
        if _same_environment(KernelSpecManager().get_kernel_spec("python3").argv[0]):
            return "python3"
    except NoSuchKernel:
        pass
    from ipykernel.kernelspec import install  # writes argv[0] = sys.executable

    prefix = tmp_path / "jupyter-prefix"
    name = "fmtransfer-test"
    install(kernel_name=name, prefix=str(prefix))
    monkeypatch.setenv("JUPYTER_PATH", str(prefix / "share" / "jupyter"))
    assert _same_environment(KernelSpecManager().get_kernel_spec(name).argv[0])
    return name


def _cell(nb, tag: str):
    found = [c for c in nb.cells if tag in c.get("metadata", {}).get("tags", [])]
    assert len(found) == 1, f"expected one cell tagged {tag!r}, found {len(found)}"
    return found[0]


def _stdout(cell) -> str:
    return "".join(o.get("text", "") for o in cell.outputs if o.output_type == "stream" and o.name == "stdout")


def _all_text(cell) -> str:
    parts = []
    for o in cell.outputs:
        parts.append(o.get("text", ""))
        parts.append(o.get("data", {}).get("text/plain", ""))
    return "".join(parts)


def _has_png(cell) -> bool:
    return any("image/png" in o.get("data", {}) for o in cell.outputs)


def test_committed_notebook_has_no_outputs():
    import nbformat

    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    assert nb.metadata["kernelspec"]["name"] == "python3"
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, f"stored output in:\n{cell.source[:200]}"


@pytest.mark.slow
def test_notebook_runs_in_quick_mode(tmp_path, monkeypatch):
    import nbformat
    from nbclient import NotebookClient

    kernel = _kernel_name(tmp_path, monkeypatch)
    monkeypatch.setenv("FMTRANSFER_NOTEBOOK_QUICK", "1")
    monkeypatch.setenv("TMPDIR", str(tmp_path))  # the notebook's quick study folder lands here
    nb = nbformat.read(NOTEBOOK, as_version=4)
    client = NotebookClient(nb, timeout=600, kernel_name=kernel, resources={"metadata": {"path": str(EXAMPLES)}})
    started = time.perf_counter()
    client.execute()  # raises CellExecutionError on the first cell that fails
    print(f"notebook executed in {time.perf_counter() - started:.1f} s on kernel {kernel!r}")

    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(c.execution_count is not None for c in code)
    everything = "".join(_all_text(c) for c in code)
    assert "Traceback" not in everything
    assert 'install "ipywidgets"' not in everything, "rich's progress bars showed nothing in the notebook"

    params = _stdout(_cell(nb, "parameters"))
    assert "configs/quick.toml" in params and "QUICK" in params

    # Section 1: both accuracies, their error rates and the ratio, consistent with each other.
    table = _stdout(_cell(nb, "experiment"))
    rows = {}
    for name in ("baseline (from scratch)", "transfer from A", "book: baseline", "book: transfer from A"):
        m = re.search(rf"^{re.escape(name)}\s+(\d+\.\d\d)%\s+(\d+\.\d\d)%\s+(\S+)$", table, re.M)
        assert m, f"no row {name!r} in:\n{table}"
        rows[name] = m.groups()
    for name, (accuracy, error, _) in rows.items():
        assert 0 < float(accuracy) <= 100
        assert float(accuracy) + float(error) == pytest.approx(100, abs=0.011), name
    assert rows["book: baseline"][:2] == ("97.05", "2.95") and rows["book: transfer from A"][:2] == ("99.25", "0.75")
    assert rows["book: transfer from A"][2] == "3.93x"
    base_error, transfer_error = float(rows["baseline (from scratch)"][1]), float(rows["transfer from A"][1])
    shown = rows["transfer from A"][2]
    if transfer_error > 0:
        assert float(shown.rstrip("x")) == pytest.approx(base_error / transfer_error, rel=0.02), shown
    assert rows["baseline (from scratch)"][2] == "-"

    # The plots: learning curves and the study's, drawn inline.
    assert _has_png(_cell(nb, "learning-curves"))
    assert _has_png(_cell(nb, "study-plot"))

    # The study: one row per preset, each over the quick seeds; seed 42 reruns section 1 exactly.
    study = _stdout(_cell(nb, "study-table"))
    for preset in PRESETS:
        m = re.search(rf"^{preset}\s+\S+, \S+\s+(\d+)\s+(\d+\.\d\d)\s+(\d+\.\d\d)\s+[+-]\d+\.\d\d \(.*\)\s+"
                      r"(\d+)/(\d+)/(\d+)\s+(\S+)\s+(\d\.\d\d) \((\d\.\d\d), (\d\.\d\d)\)\s+(\S+)$", study, re.M)
        assert m, f"no row for preset {preset!r} in:\n{study}"
        n, wins, ties, losses = int(m[1]), int(m[4]), int(m[5]), int(m[6])
        assert n == QUICK_SEEDS and wins + ties + losses == QUICK_SEEDS
        assert 0.25 <= float(m[7]) <= 1  # the exact sign-flip test on 3 seeds: p is never below 2/8
        p_win, low, high = float(m[8]), float(m[9]), float(m[10])
        assert p_win == pytest.approx((wins + ties / 2) / n, abs=0.006) and low <= p_win <= high
        assert m[11] in ("equivalent", "different", "inconclusive", "-")
    assert f"{QUICK_SEEDS * len(PRESETS)} of {QUICK_SEEDS * len(PRESETS)} runs" in study
    assert "reruns section 1" in study and study.rstrip().endswith("identical."), study

    # Quick mode studies a fresh temporary folder: exactly this run's results are in it.
    folders = list(tmp_path.glob("fmtransfer-nb-study-*"))
    assert len(folders) == 1, folders
    lines = (folders[0] / "results.jsonl").read_text().splitlines()
    first = fmtransfer.load_config(REPO / "configs" / "quick.toml").seed
    assert sorted((r["seed"], r["preset"]) for r in map(json.loads, lines)) == sorted(
        (s, p) for s in range(first, first + QUICK_SEEDS) for p in PRESETS)
    assert list((folders[0] / "plots").glob("*.png"))

    # Section 5: the committed studies' verdicts, as docs/study/claims.json has them.
    verdicts = _stdout(_cell(nb, "claims"))
    committed = json.loads((REPO / "docs" / "study" / "claims.json").read_text())
    claims = committed["claims"] if isinstance(committed, dict) else committed
    assert claims
    for claim in claims:
        assert re.search(rf"^{re.escape(claim['verdict'].upper())}\s+{re.escape(claim['id'])} ", verdicts, re.M), \
            f"{claim['id']}: {claim['verdict']} not in:\n{verdicts}"

