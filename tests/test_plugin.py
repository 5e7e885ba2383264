"""Contenders from other packages, through the `fmtransfer.contenders` entry point.

The checkout and examples/plugin are installed, without dependencies, into a temporary folder
with this environment's pip; `python -m fmtransfer.cli` then runs with that folder first on
PYTHONPATH, so the installed copies and their entry-point metadata are what it finds. Broken
plug-ins are written by hand: a module beside a *.dist-info folder whose entry_points.txt names it.

The TensorFlow-free checks (help, option groups, refused settings, broken plug-ins) are quick;
the runs and the study that train the plug-in are marked slow.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO

PLUGIN = REPO / "examples" / "plugin"
GROUP = "example (scaled rates) [example]:"  # the plug-in's option group in --help
TINY = ["--no-verify", "--valid-size", "100"]


def _fmtransfer(site: Path, *args, cwd: Path) -> subprocess.CompletedProcess:
    """`python -m fmtransfer.cli ARGS` with `site` first on the path, from a folder outside the checkout."""
    env = {**os.environ, "PYTHONPATH": str(site), "TF_CPP_MIN_LOG_LEVEL": "3"}
    return subprocess.run([sys.executable, "-m", "fmtransfer.cli", *map(str, args)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=900)


def _python(site: Path, code: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(site)}
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=300)


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    """fmtransfer and the example plug-in, installed by pip into a temporary folder."""
    root = tmp_path_factory.mktemp("plugin-env")
    source = root / "src"  # a copy: building in the checkout would leave build/ and *.egg-info there
    skip = shutil.ignore_patterns("__pycache__", "*.egg-info", "build")
    shutil.copytree(REPO / "fmtransfer", source / "fmtransfer", ignore=skip)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    shutil.copytree(PLUGIN, source / "plugin", ignore=skip)
    target = root / "site"
    proc = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                           "--no-index", "--target", str(target), str(source), str(source / "plugin")],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return target


def _group(help_text: str, title: str) -> list[str]:
    """The lines of `--help` under the group heading `title`, up to the next heading."""
    lines = help_text.splitlines()
    assert title in lines, f"no group {title!r} in:\n{help_text}"
    body = []
    for line in lines[lines.index(title) + 1:]:
        if line and not line.startswith(" "):
            break
        body.append(line)
    return body


# ----------------------------------------------------------------------------- installed: quick checks

def test_the_installed_copies_run_and_importing_fmtransfer_loads_no_plugin(site, tmp_path):
    proc = _python(site, "import sys, fmtransfer\n"
                         "print(fmtransfer.__file__)\n"
                         "print('fmtransfer_example' in sys.modules)\n"
                         "from fmtransfer import contenders\n"
                         "print('fmtransfer_example' in sys.modules)\n"
                         "print(contenders.names()[-1], contenders.get('example').artifact)\n"
                         "print(fmtransfer.Config(example={'scale': 3}).example.scale)\n"
                         "print(contenders.select(fmtransfer.Config(contenders=['all']))[-1])\n"
                         "print(contenders.select(fmtransfer.Config(contenders=['all'], model={'arch': 'cnn'}))[-1])",
                   tmp_path)
    assert proc.returncode == 0, proc.stderr
    where, before, after, listed, scale, every, every_cnn = proc.stdout.splitlines()
    assert Path(where).is_relative_to(site)  # not the checkout's copy
    assert (before, after) == ("False", "False")  # the registry loads plug-ins at its first use
    assert listed == "example example" and scale == "3.0"
    assert every == every_cnn == "example"  # `all` takes it in: it builds both families
    assert proc.stderr == ""
    env = {**os.environ, "PYTHONPATH": str(site)}
    version = subprocess.run([sys.executable, "-m", "fmtransfer", "--version"], cwd=tmp_path, env=env,
                             capture_output=True, text=True, timeout=300)
    assert version.returncode == 0 and version.stdout.startswith("fmtransfer, version"), version.stderr


@pytest.mark.parametrize("command", ["run", "study"])
def test_help_lists_the_plugins_option_in_the_plugins_own_group(site, tmp_path, command):
    proc = _fmtransfer(site, command, "--help", cwd=tmp_path)
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    body = _group(proc.stdout, GROUP)
    assert body[0].split()[:2] == ["--example-scale", "X"] and " ".join(body).strip().endswith("[1]"), body
    assert "--example-scale" not in proc.stdout.replace("\n".join(body), "")  # in that group only
    assert re.search(r"Registered: [^;]*\bexample\b", " ".join(proc.stdout.split()))  # --contenders names it
    assert "--gan-epochs" in "\n".join(_group(proc.stdout, "GAN-pretrained [gan]:"))  # built-ins keep theirs


def test_fmtransfer_contenders_lists_the_plugin_with_its_options(site, tmp_path):
    proc = _fmtransfer(site, "contenders", cwd=tmp_path)
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    text = " ".join(proc.stdout.split())
    assert "example example (scaled rates), builds on model A" in text
    assert "The book's two phases on model A" in text and "--example-scale 1" in text


def test_help_is_fast_and_imports_no_tensorflow_with_a_plugin(site, tmp_path):
    proc = _python(site, "import sys\n"
                         "from fmtransfer.cli import main\n"
                         "try:\n    main(['run', '--help'])\nexcept SystemExit:\n    pass\n"
                         "print('tensorflow' in sys.modules or 'keras' in sys.modules)", tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[-1] == "False" and "--example-scale" in proc.stdout


def test_a_bad_scale_is_one_line_exit_2(site, tmp_path):
    proc = _fmtransfer(site, "run", "--run", tmp_path / "run", "--example-scale", "0", cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.splitlines() == ["fmtransfer: error: option --example-scale (example.scale): must be "
                                        "positive, got 0.0"]
    toml = tmp_path / "bad.toml"
    toml.write_text('contenders = ["example"]\n[example]\nscale = -1\n')
    proc = _fmtransfer(site, "study", "--run", tmp_path / "s", "--config", toml, cwd=tmp_path)
    assert proc.returncode == 2
    (line,) = proc.stderr.splitlines()
    assert "bad.toml" in line and "example.scale" in line and "--example-scale" in line
    assert not (tmp_path / "run").exists()


# ----------------------------------------------------------------------------- installed: training

def _phases(run: Path) -> list[tuple[str, float]]:
    record = json.loads((run / "transfer_example.json").read_text())
    return [(p["name"], p["learning_rate"]) for p in record["phases"]]


@pytest.mark.slow
def test_run_trains_the_plugin_from_options_and_from_a_toml_file(site, tmp_path, tiny_data):
    small = ["--data-dir", tiny_data, *TINY, "--b-train-size", "20", "--hidden", "16,8", "--json"]
    run = tmp_path / "run"
    proc = _fmtransfer(site, "run", "--run", run, "--contenders", "example", "--config", REPO / "configs" / "quick.toml",
                       *small, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    shown = json.loads(proc.stdout)["contenders"]
    assert list(shown) == ["baseline", "example (scaled rates)"]
    assert 0 <= shown["example (scaled rates)"]["test_accuracy"] <= 1
    assert _phases(run) == [("frozen", 1e-2), ("fine-tune", 1e-4)]  # quick.toml keeps the book's rates

    toml = tmp_path / "example.toml"
    toml.write_text('contenders = ["example"]\n[train_a]\nepochs = 1\n[baseline]\nepochs = 1\n'
                    '[transfer]\nfreeze_epochs = 1\nfine_tune_epochs = 1\n[example]\nscale = 2.0\n')
    scaled = tmp_path / "scaled"
    proc = _fmtransfer(site, "run", "--run", scaled, "--config", toml, *small, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "example (scaled rates)" in json.loads(proc.stdout)["contenders"]
    assert _phases(scaled) == [("frozen", 2e-2), ("fine-tune", 2e-4)]
    assert json.loads((scaled / "transfer_example.json").read_text())["config"]["example"] == {"scale": 2.0}


@pytest.mark.slow
def test_a_study_runs_the_plugin(site, tmp_path, tiny_data):
    proc = _fmtransfer(site, "study", "--run", tmp_path / "study", "--contenders", "example", "--seed-list", "1,2",
                       "--data-dir", tiny_data, *TINY, "--b-train-sizes", "20", "--hidden", "16,8", "--a-epochs", "1",
                       "--b-epochs", "1", "--freeze-epochs", "1", "--fine-tune-epochs", "1", "--example-scale", "0.5",
                       "--no-plots", "--json", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    cells = json.loads(proc.stdout)["cells"]
    assert [(c["contender"], c["title"], c["seeds"]) for c in cells] == [("example", "example (scaled rates)", [1, 2])]
    meta = json.loads((tmp_path / "study" / "study.json").read_text())
    assert meta["config"]["example"] == {"scale": 0.5} and "example_fingerprint" in meta


# ----------------------------------------------------------------------------- broken plug-ins

BROKEN = {  # distribution -> (entry point, module source)
    "fmtransfer-broken": ("broken = fmtransfer_broken:Broken",
                          'raise ImportError("needs a package that is not installed")\n'),
    "fmtransfer-clash": ("clash = fmtransfer_clash:Clash", """
from dataclasses import dataclass
from fmtransfer.config import Section, setting
from fmtransfer.contenders.transfer import TransferFromA

class Clash(TransferFromA):
    name = "clash"
    title = "clash"
    description = "Declares a section a built-in has."

    @dataclass(frozen=True)
    class Settings(Section):
        NAME = "gan"
        epochs: int = setting(1, "Clashes with gan.epochs.")
"""),
    "fmtransfer-twin": ("transfer = fmtransfer_twin:Twin", """
from fmtransfer.contenders.transfer import TransferFromA

class Twin(TransferFromA):
    name = "transfer"
    title = "another transfer"
    description = "Takes a built-in's name."
    artifact = "twin"
"""),
}


@pytest.fixture
def broken_site(tmp_path) -> Path:
    """Three plug-ins that cannot be registered, each its own distribution."""
    site = tmp_path / "broken-site"
    for dist, (entry_point, source) in BROKEN.items():
        module = entry_point.split("= ")[1].split(":")[0]
        (site / f"{module}.py").parent.mkdir(parents=True, exist_ok=True)
        (site / f"{module}.py").write_text(source)
        info = site / f"{dist.replace('-', '_')}-0.1.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.1\n")
        (info / "entry_points.txt").write_text(f"[fmtransfer.contenders]\n{entry_point}\n")
    return site


def _warnings(stderr: str) -> dict[str, str]:
    lines = [line for line in stderr.splitlines() if line.startswith("fmtransfer: warning:")]
    found = {dist: line for dist in BROKEN for line in lines if f"of package {dist} " in line}
    assert len(found) == len(lines) == len(BROKEN), lines
    return found


def test_broken_plugins_are_left_out_with_one_warning_line_each(broken_site, tmp_path):
    proc = _fmtransfer(broken_site, "run", "--help", cwd=tmp_path)
    assert proc.returncode == 0 and "Usage:" in proc.stdout
    assert len(proc.stderr.splitlines()) == 3, proc.stderr  # nothing but the warnings
    said = _warnings(proc.stderr)
    assert "'broken'" in said["fmtransfer-broken"] and "ImportError: needs a package" in said["fmtransfer-broken"]
    assert "'clash'" in said["fmtransfer-clash"] and "section [gan]" in said["fmtransfer-clash"]
    assert "'transfer'" in said["fmtransfer-twin"] and "is taken" in said["fmtransfer-twin"]
    assert proc.stdout.count("--gan-epochs") == 1 and "Declares a section" not in proc.stdout


@pytest.mark.parametrize("name,why", [("broken", "ImportError: needs a package that is not installed"),
                                      ("clash", "section [gan]")])
def test_selecting_a_broken_plugin_is_one_error_line_exit_2(broken_site, tmp_path, name, why):
    proc = _fmtransfer(broken_site, "run", "--run", tmp_path / "run", "--contenders", name, cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    _warnings(proc.stderr)
    (error,) = [line for line in proc.stderr.splitlines() if not line.startswith("fmtransfer: warning:")]
    assert error.startswith("fmtransfer: error: option --contenders (contenders): ")
    assert f"plug-in {name!r}" in error and "failed to load" in error and why in error
    assert not (tmp_path / "run").exists()  # refused before anything was written


def test_a_plugin_that_takes_a_builtins_name_leaves_the_builtin_in_place(broken_site, tmp_path):
    proc = _python(broken_site, "from fmtransfer import contenders\n"
                                "print(type(contenders.get('transfer')).__module__, 'clash' in contenders.names())",
                   tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["fmtransfer.contenders.transfer", "False"]


# ----------------------------------------------------------------------------- the registry in process

def test_plugins_that_cannot_work_are_refused_with_the_reason(fresh_registry, monkeypatch, capsys):
    """A value that is no Contender, a name unlike its entry point's, a section whose own defaults
    fail its checks, files another contender writes: each left out, said once, and selecting it
    names why; the registry and Config() are as before."""
    import types
    from dataclasses import dataclass
    from importlib import metadata

    from fmtransfer import Config, ConfigError, contenders
    from fmtransfer.config import Section, setting
    from fmtransfer.contenders.transfer import TransferFromA

    class Misnamed(TransferFromA):
        name, title, description = "other", "other", "Named unlike its entry point."

    class BadDefaults(TransferFromA):
        name, title, description = "bad-defaults", "bad", "Its defaults fail its own check."

        @dataclass(frozen=True)
        class Settings(Section):
            NAME = "bad_defaults"
            rate: float = setting(0.0, "Must be positive, and is not.")

            def check(self):
                self.fail_unless_positive("rate")

    class SameFiles(TransferFromA):
        name, title, description, artifact = "same-files", "same", "Writes transfer's files.", "a"

    module = types.ModuleType("fmtransfer_fake_plugins")
    module.__dict__.update(NotAContender=object, Misnamed=Misnamed, BadDefaults=BadDefaults, SameFiles=SameFiles)
    monkeypatch.setitem(sys.modules, module.__name__, module)
    points = [metadata.EntryPoint(name, f"{module.__name__}:{attr}", base_group)
              for name, attr, base_group in [("not-a-contender", "NotAContender", "fmtransfer.contenders"),
                                             ("misnamed", "Misnamed", "fmtransfer.contenders"),
                                             ("bad-defaults", "BadDefaults", "fmtransfer.contenders"),
                                             ("same-files", "SameFiles", "fmtransfer.contenders")]]
    monkeypatch.setattr(metadata, "entry_points", lambda group: points if group == "fmtransfer.contenders" else [])
    before = tuple(fresh_registry._REGISTRY)

    assert contenders.names() == before
    warned = capsys.readouterr().err.splitlines()
    assert len(warned) == 4 and all(line.startswith("fmtransfer: warning: plug-in contender") for line in warned)
    reasons = contenders.failed()
    assert "not a Contender subclass" in reasons["not-a-contender"]
    assert "'other'" in reasons["misnamed"]
    assert "bad_defaults.rate: must be positive" in reasons["bad-defaults"]
    assert "files of fmtransfer.contenders.transfer.TransferFromA" in reasons["same-files"]
    for name in reasons:
        with pytest.raises(ConfigError, match="failed to load") as e:
            contenders.select(Config(contenders=[name]))
        assert e.value.key == "contenders"
    assert "bad_defaults" not in Config().to_dict()
    contenders.names()
    assert capsys.readouterr().err == ""  # loaded once: said once
