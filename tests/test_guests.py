"""A plug-in is a guest (issue 28, class 5), and the Python API checks what it is given (class 9).

A plug-in's names are checked against every name taken; whatever it raises while loading leaves
it out with one warning; what its `fit` gives back is checked before anything is recorded; its
text is shown as text; and a study it took part in is reported from the records alone once it is
uninstalled. Plug-ins are installed as tests/test_plugin.py does: a module beside a *.dist-info
folder (for the command line, in a subprocess), or monkeypatched entry points (in process).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import make_dataclass
from pathlib import Path

import numpy as np
import pytest

from conftest import REPO, run_cli, tiny_settings
from studyfiles import write_study

import fmtransfer
import fmtransfer.cli  # noqa: F401  (reserves the command line's own option names, as at start-up)
import fmtransfer.study.claims
from fmtransfer import ArgumentError, Config, ContenderError, UsageError
from fmtransfer.config import Section, setting
from fmtransfer.contenders import Contender, ContenderResult, checked_fit, checked_result
from fmtransfer.contenders.transfer import TransferFromA


def _site(root: Path, plugins: dict[str, tuple[str, str]]) -> Path:
    """A folder of installed plug-ins: per distribution, (entry point, module source)."""
    root.mkdir(parents=True, exist_ok=True)
    for dist, (entry_point, source) in plugins.items():
        module = entry_point.split("= ")[1].split(":")[0]
        (root / f"{module}.py").write_text(source)
        info = root / f"{dist.replace('-', '_')}-0.1.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.1\n")
        (info / "entry_points.txt").write_text(f"[fmtransfer.contenders]\n{entry_point}\n")
    return root


def _fmtransfer(site: Path, *args, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), str(REPO)]), "TF_CPP_MIN_LOG_LEVEL": "3"}
    return subprocess.run([sys.executable, "-m", "fmtransfer.cli", *map(str, args)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600)


def _warnings(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("fmtransfer: warning:")]


SECTION_PLUGIN = """
from dataclasses import dataclass
from fmtransfer.config import Section, setting
from fmtransfer.contenders.transfer import TransferFromA

class Guest(TransferFromA):
    name = "{name}"
    title = "{name}"
    description = "Its section's option is the host's."
    artifact = "{name}"

    @dataclass(frozen=True)
    class Settings(Section):
        NAME = "{section}"
        {key}: int = setting(3, "Would take the host's option.")
"""


def _entry_points(monkeypatch, **classes):
    """Install `classes` (entry-point name -> class) as plug-ins of this process."""
    import types
    from importlib import metadata

    module = types.ModuleType("fmtransfer_guest_plugins")
    module.__dict__.update({f"plugin{i}": cls for i, cls in enumerate(classes.values())})
    monkeypatch.setitem(sys.modules, module.__name__, module)
    points = [metadata.EntryPoint(name, f"{module.__name__}:plugin{i}", "fmtransfer.contenders")
              for i, name in enumerate(classes)]
    monkeypatch.setattr(metadata, "entry_points", lambda group: points if group == "fmtransfer.contenders" else [])


# ----------------------------------------------------------------------------- names: checked against all taken

def test_a_plugin_section_that_would_take_the_baselines_option_is_left_out_and_the_option_stays_the_baselines(
        tmp_path):
    """[b] epochs would be --b-epochs, the baseline's: `run --b-epochs` set the plug-in's value and
    left the baseline at its default, selected or not."""
    site = _site(tmp_path / "site", {
        "fm-bee": ("bee = fm_bee:Guest", SECTION_PLUGIN.format(name="bee", section="b", key="epochs")),
        "fm-nov": ("nov = fm_nov:Guest", SECTION_PLUGIN.format(name="nov", section="no", key="verify"))})
    helped = _fmtransfer(site, "run", "--help", cwd=tmp_path)
    assert helped.returncode == 0, helped.stderr
    bee, nov = _warnings(helped.stderr)
    assert "'bee'" in bee and "--b-epochs" in bee and "baseline.epochs" in bee
    assert "'nov'" in nov and "--no-verify" in nov and "the command line itself" in nov  # reserved in time
    assert helped.stdout.count("--b-epochs") == 1 and "Baseline epochs." in helped.stdout
    assert helped.stdout.count("--no-verify") == 1
    refused = _fmtransfer(site, "run", "--run", tmp_path / "run", "--b-epochs", "-1", cwd=tmp_path)
    assert refused.returncode == 2
    error = [line for line in refused.stderr.splitlines() if line not in _warnings(refused.stderr)]
    assert len(error) == 1 and "--b-epochs (baseline.epochs)" in error[0], refused.stderr
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("section,key,option,owner", [
    ("no", "verify", "--no-verify", "taken by the command line itself"),  # an option that sets no key of its own
    ("learning", "rate", "--learning-rate", "taken by the command line itself"),  # an older name, an alias
    ("a", "epochs", "--a-epochs", "taken by config key train_a.epochs"),
    ("reuse", "depths", "--reuse-depths", "taken by config key study.reuse_layers"),
])
def test_a_plugin_section_never_takes_an_option_name_in_use(fresh_registry, monkeypatch, capsys, section, key,
                                                            option, owner):
    from fmtransfer import contenders

    Settings = make_dataclass("Settings", [(key, int, setting(3, "Clashes."))], bases=(Section,), frozen=True,
                              namespace={"NAME": section})
    guest = type("Guest", (TransferFromA,), {"name": "guest", "title": "guest", "description": "Clashes.",
                                             "artifact": "guest", "Settings": Settings})
    _entry_points(monkeypatch, guest=guest)

    assert "guest" not in contenders.names()
    (warning,) = capsys.readouterr().err.splitlines()
    assert option in warning and owner in warning
    assert section not in Config().to_dict()
    with pytest.raises(fmtransfer.ConfigError, match="failed to load"):
        contenders.select(Config(contenders=["guest"]))


def test_every_option_of_the_command_line_is_a_config_key_or_reserved():
    """What keeps the check above whole: an option added to a command without being reserved
    could be taken by a plug-in's section."""
    from fmtransfer import config
    from fmtransfer.cli import CFG, OTHER_OPTIONS, cli

    def options(command):
        for p in command.params:
            own = config.option_name(p.name[len(CFG):].replace("__", ".")) if p.name.startswith(CFG) else None
            yield from (o for o in [*p.opts, *p.secondary_opts] if o.startswith("--") and o != own)
        for sub in getattr(command, "commands", {}).values():
            yield from options(sub)

    assert set(options(cli)) - set(OTHER_OPTIONS) == set()


@pytest.mark.parametrize("attrs,why", [
    ({"name": "../escape"}, "needs a name"),  # a name is a file name and a run id's part
    ({"name": "a,b"}, "needs a name"),  # --contenders a,b could never select it
    ({"title": "two\nlines"}, "title that is one line"),
    ({"description": ""}, "description that is one line"),
    ({"artifact": "../../model"}, "artifact that is a plain file stem"),
    ({"archs": "dense"}, "needs archs"),  # a string, where `arch in archs` would match "den"
    ({"needs": ("model_b",)}, "expected 'model_a' or 'encoder:METHOD'"),
])
def test_a_plugins_names_and_text_must_be_usable_as_such(fresh_registry, monkeypatch, capsys, attrs, why):
    from fmtransfer import contenders

    values = {"name": "guest", "title": "guest", "description": "A guest.", "artifact": "guest", **attrs}
    guest = type("Guest", (TransferFromA,), values)
    _entry_points(monkeypatch, **{values["name"]: guest})
    assert values["name"] not in contenders.names()
    (warning,) = capsys.readouterr().err.splitlines()
    assert why in warning


# ----------------------------------------------------------------------------- whatever it raises at load

@pytest.mark.parametrize("source,said", [
    ("raise SystemExit(3)\n", "SystemExit: 3"),
    ("class Boom(BaseException):\n    pass\n\nraise Boom('its own BaseException')\n", "Boom: its own BaseException"),
])
def test_a_plugin_that_raises_any_baseexception_at_import_is_left_out_and_every_command_works(
        tmp_path, source, said):
    site = _site(tmp_path / "site", {"fm-quits": ("quits = fm_quits:Quits", source)})
    for args in (["--help"], ["run", "--help"], ["contenders"]):
        proc = _fmtransfer(site, *args, cwd=tmp_path)
        assert proc.returncode == 0 and proc.stdout, (args, proc.returncode, proc.stderr)
        assert proc.stderr.splitlines() == _warnings(proc.stderr), proc.stderr
        if args != ["--help"]:  # the group's own --help lists commands, and loads no plug-in
            (warning,) = _warnings(proc.stderr)
            assert "'quits'" in warning and "fm-quits" in warning and said in warning
    selected = _fmtransfer(site, "run", "--run", tmp_path / "run", "--contenders", "quits", cwd=tmp_path)
    assert selected.returncode == 2 and "failed to load" in selected.stderr and said in selected.stderr


def test_what_a_plugin_prints_at_import_goes_to_stderr_and_json_stays_one_object(tmp_path):
    site = _site(tmp_path / "site", {"fm-chatty": ("chatty = fm_chatty:Chatty", """
print("hello from a plug-in")
from fmtransfer.contenders.transfer import TransferFromA

class Chatty(TransferFromA):
    name, title, description, artifact = "chatty", "chatty", "Prints when imported.", "chatty"
""")})
    proc = _fmtransfer(site, "contenders", "--json", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "chatty" in json.dumps(json.loads(proc.stdout))
    assert "hello from a plug-in" in proc.stderr


# ----------------------------------------------------------------------------- what its fit gives back

class _Returns(Contender):
    """A contender that trains nothing and gives back `RESULT`'s fields."""

    name, title, description = "returns", "returns", "Gives back a made-up result."
    RESULT: dict = {}

    def fit(self, cfg, split, deps, reporter):
        r = ContenderResult(self.name, self.title, **{"test_accuracy": 0.9, "test_loss": 0.3, **self.RESULT})
        return None, r


@pytest.mark.parametrize("given,problem", [
    ({"test_accuracy": float("nan")}, "test_accuracy nan is not a number from 0 to 1"),
    ({"test_accuracy": 1.5}, "test_accuracy 1.5 is not a number from 0 to 1"),
    ({"test_accuracy": "0.9"}, "test_accuracy '0.9' is not a number"),
    ({"test_accuracy": True}, "test_accuracy True is not a number"),
    ({"test_loss": float("inf")}, "test_loss inf is not a finite number of 0 or more"),
    ({"details": {"linear_probe": -0.1}}, "linear_probe -0.1 is not a number from 0 to 1"),
])
def test_a_result_no_model_can_have_is_a_contender_error(given, problem):
    r = ContenderResult("guest", "guest", **{"test_accuracy": 0.9, "test_loss": 0.3, **given})
    with pytest.raises(ContenderError) as e:
        checked_result("guest", r)
    assert e.value.contender == "guest" and problem in str(e.value) and "not recorded" in str(e.value)
    assert len(str(e.value).splitlines()) == 1


def test_a_results_numbers_become_plain_floats():
    r = checked_result("guest", ContenderResult("guest", "guest", np.float32(0.75), np.float64(0.5),
                                                details={"linear_probe": np.float32(0.5)}))
    assert (type(r.test_accuracy), type(r.test_loss), type(r.details["linear_probe"])) == (float, float, float)
    assert r.test_accuracy == 0.75
    with pytest.raises(ContenderError, match="not \\(model, result\\)"):
        checked_fit("guest", ContenderResult("guest", "guest", 0.9, 0.3))


@pytest.fixture
def returns(fresh_registry):
    fmtransfer.register(_Returns)
    yield _Returns
    _Returns.RESULT = {}


@pytest.mark.parametrize("accuracy", [float("nan"), np.float32(np.inf)])
def test_a_study_never_records_a_plugins_bad_result_and_a_resume_appends_none(returns, tiny_data, tmp_path,
                                                                                accuracy):
    """A NaN test accuracy was recorded as a finished run, which the reader then skipped: every
    resume ran it again and appended another line."""
    returns.RESULT = {"test_accuracy": accuracy}
    study = tmp_path / "study"
    args = ["study", "--run", study, "--data-dir", tiny_data, "--no-verify", "--valid-size", "100",
            "--hidden", "16,8", "--b-epochs", "1", "--seeds", "1", "--b-train-sizes", "20",
            "--contenders", "returns", "--no-plots"]
    for _ in range(2):  # the second: a resume
        result = run_cli(*args)
        assert result.code == 1, result.err
        (line,) = [line for line in result.err_lines if line.startswith("fmtransfer: error:")]
        assert line.startswith(f"fmtransfer: error: contender 'returns' failed: test_accuracy {float(accuracy)!r} ")
        assert "its run is not recorded" in line
        lines = [l for p in study.glob("results*.jsonl") for l in p.read_text().splitlines()]
        assert lines == []
    # What a report of it would need once the plug-in is gone: study.json keeps its title.
    assert json.loads((study / "study.json").read_text())["titles"] == {"returns": "returns"}


def test_run_experiment_refuses_a_bad_result_too(returns, tiny_data):
    returns.RESULT = {"test_accuracy": float("nan")}
    cfg = Config().replace(**{**tiny_settings(tiny_data), "baseline.epochs": 1, "contenders": ["returns"]})
    with pytest.raises(ContenderError, match="'returns' failed: test_accuracy nan"):
        fmtransfer.run_experiment(cfg)


# ----------------------------------------------------------------------------- its text is text

@pytest.mark.parametrize("title", ["[bold red]guest[/bold red]", "guest [/]"])  # the second: rich's MarkupError
def test_a_plugins_title_is_shown_as_text_in_a_studys_table(tmp_path, title):
    study = write_study(tmp_path / "study", {"transfer": 0.01, "guest": 0.02})
    meta = json.loads((study / "study.json").read_text())
    (study / "study.json").write_text(json.dumps({**meta, "titles": {"guest": title}}))
    result = run_cli("study", "report", study, "--no-plots", "--wide")
    assert result.code == 0, result.err
    assert title in result.out


def test_a_contenders_title_is_shown_as_text_in_the_compare_table():
    from rich.console import Console

    from fmtransfer.report import compare_table

    scores = {"test_accuracy": 0.9, "test_loss": 0.3, "error_rate_ratio": 1.2}
    table = compare_table({"b_classes": [5, 6], "b_train_size": 200, "settings": {"seed": 42},
                           "contenders": {"baseline": scores, "[/]": scores, "[bold]x[/bold]": scores}})
    console = Console(width=200, record=True, force_terminal=False)
    console.print(table)
    text = console.export_text()
    assert "[/]" in text and "[bold]x[/bold]" in text


# ----------------------------------------------------------------------------- records need no code

def _plugin_study(tmp_path: Path, **line_extra) -> Path:
    """A finished study of transfer and a plug-in `guest` (no longer installed), its config with
    the plug-in's section, study.json with its title, as the runner writes them."""
    study = write_study(tmp_path / "study", {"transfer": 0.01, "guest": 0.03})
    meta = json.loads((study / "study.json").read_text())
    meta["config"]["guest"] = {"scale": 2.0}
    meta["titles"] = {"transfer": "transfer from A", "guest": "guest (scaled rates)"}
    (study / "study.json").write_text(json.dumps(meta))
    if line_extra:
        lines = [json.loads(line) for line in (study / "results.jsonl").read_text().splitlines()]
        (study / "results.jsonl").write_text("".join(json.dumps({**line, **line_extra}) + "\n" for line in lines))
    return study


def test_a_study_made_with_an_uninstalled_plugin_is_reported_from_its_records(tmp_path):
    study = _plugin_study(tmp_path)
    result = fmtransfer.study.report(study)
    cells = {c.contender: c for c in result.cells}
    assert set(cells) == {"transfer", "guest"} and cells["guest"].n == 10
    assert cells["guest"].title == "guest (scaled rates)"  # as study.json recorded it
    assert result.runs_finished == result.runs_in_grid == 20
    shown = run_cli("study", "report", study, "--no-plots", "--wide")
    assert shown.code == 0, shown.err
    assert "guest (scaled rates)" in shown.out and "unknown contender" not in shown.err


def test_an_uninstalled_plugins_fingerprinted_records_are_taken_as_recorded(tmp_path):
    """Lines as the runner writes them carry fingerprints of settings that only the plug-in's code
    could recompute: they are taken, not skipped as made with other settings."""
    study = _plugin_study(tmp_path, settings="0" * 16, fingerprint="1" * 16)
    result = fmtransfer.study.report(study)
    assert {c.contender: c.n for c in result.cells}.get("guest") == 10
    assert "guest" not in json.dumps(result.skipped)


# ----------------------------------------------------------------------------- the Python API

@pytest.mark.parametrize("call,argument", [
    (lambda: fmtransfer.load_config(123), "path"),
    (lambda: fmtransfer.load_config(None, ["seed", 7]), "overrides"),
    (lambda: fmtransfer.run_study(Config(), 123), "study_dir"),
    (lambda: fmtransfer.run_study("configs/quick.toml"), "cfg"),
    (lambda: fmtransfer.run_study(Config(), "runs/never", progress="yes"), "progress"),
    (lambda: fmtransfer.run_experiment(Config(), run_dir=5), "run_dir"),
    (lambda: fmtransfer.study.report(123), "study_dir"),
    (lambda: fmtransfer.study.report("runs/never", equivalence_margin="1"), "equivalence_margin"),
    (lambda: fmtransfer.study.claims.judge("runs/study"), "study_dirs"),
    (lambda: fmtransfer.study.claims.judge([]), "study_dirs"),
    (lambda: fmtransfer.setup(arch="mlp"), "arch"),
    (lambda: fmtransfer.setup(threads=4), "threads"),
    (lambda: fmtransfer.setup(deterministic="no"), "deterministic"),
    (lambda: fmtransfer.register(123), "cls"),
])
def test_every_public_function_names_the_argument_it_cannot_take(call, argument, tmp_path):
    with pytest.raises(ArgumentError) as e:
        call()
    assert isinstance(e.value, UsageError) and isinstance(e.value, TypeError)
    assert e.value.argument == argument and f"argument {argument} must be" in str(e.value)
    assert len(str(e.value).splitlines()) == 1
    assert not Path("runs/never").exists()


def test_judge_takes_a_tuple_of_paths(tmp_path):
    study = write_study(tmp_path / "study", {"transfer": 0.01})
    claims = fmtransfer.study.claims.judge((study,))
    assert claims.studies == (str(study),)
