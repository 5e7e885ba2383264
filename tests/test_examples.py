"""The README's and the docs' examples run as written, on the real Fashion-MNIST, with quick
settings injected: every `sh` and `python` block is extracted and run, in one scratch folder
that holds the repository's configs/ and examples/ (so relative paths work as in a checkout).

Quick settings: each `fmtransfer` command that takes `--config` gets configs/quick.toml layered
over its own config file (or alone), `--seeds` is capped at 2 and an `--*-epochs` option at 2;
a Python block's config path is layered the same way. Everything else is as written.

An example that cannot run here (a GPU, a browser, a cluster, hours of training) says so in its
text: `(not run by the tests: why)`, on its line, or on a comment line that marks the rest of
its block. Exactly those are left out, and listed; any other command this test cannot run fails.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import CONFIGS, REPO, run_cli

MARKER = "(not run by the tests:"
BLOCK = re.compile(r"^```(sh|python)\n(.*?)^```", re.S | re.M)
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]


def blocks(page: Path) -> list[tuple[str, str]]:
    return [(m.group(1), m.group(2)) for m in BLOCK.finditer(page.read_text(encoding="utf-8"))]


def commands(text: str) -> tuple[list[str], list[str]]:
    """A shell block's commands (continuations joined, comments dropped), and those it marks."""
    run, left = [], []
    rest_marked = False
    for line in re.sub(r"\\\n\s*", " ", text).splitlines():
        stripped = line.strip()
        if not stripped:
            continue
        if stripped.startswith("#"):
            rest_marked = rest_marked or MARKER in stripped
            continue
        command = " ".join(shlex.split(stripped, comments=True))
        (left if rest_marked or MARKER in line else run).append(command)
    return run, left


def _toml_value(v) -> str:
    if isinstance(v, bool):
        return str(v).lower()
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return repr(v)


def quick_over(config: str | None, folder: Path) -> Path:
    """configs/quick.toml's keys over `config`'s, as a TOML file in `folder`."""
    from fmtransfer.config import tomllib

    merged: dict = tomllib.loads(Path(config).read_text()) if config else {}
    for key, value in tomllib.loads((CONFIGS / "quick.toml").read_text()).items():
        if isinstance(value, dict):
            merged.setdefault(key, {}).update(value)
        else:
            merged[key] = value
    top = [f"{k} = {_toml_value(v)}" for k, v in merged.items() if not isinstance(v, dict)]
    sections = [f"[{k}]\n" + "\n".join(f"{kk} = {_toml_value(vv)}" for kk, vv in v.items())
                for k, v in merged.items() if isinstance(v, dict)]
    path = folder / f"quick-over-{Path(config).stem if config else 'defaults'}.toml"
    path.write_text("\n".join(top) + "\n\n" + "\n\n".join(sections) + "\n")
    return path


def quick(args: list[str], folder: Path) -> list[str]:
    """`args` of an `fmtransfer` command with the quick settings injected."""
    from fmtransfer.cli import cli

    out, config, i = [], None, 0
    while i < len(args):
        a = args[i]
        if a == "--config":
            config, i = args[i + 1], i + 2
            continue
        if (a == "--seeds" or re.fullmatch(r"--[a-z-]*epochs", a)) and i + 1 < len(args):
            out += [a, str(min(int(args[i + 1]), 2))]
            i += 2
            continue
        out.append(a)
        i += 1
    names = [a for a in out if not a.startswith("-")][:2]
    command = cli.commands.get(names[0]) if names else None
    if command is not None and hasattr(command, "commands") and len(names) > 1 and names[1] in command.commands:
        command = command.commands[names[1]]
    takes_config = command is not None and any("--config" in p.opts for p in command.params)
    if takes_config:
        out += ["--config", str(quick_over(config, folder))]
    return out


@pytest.fixture(scope="module")
def scratch(tmp_path_factory):
    folder = tmp_path_factory.mktemp("examples")
    for name in ("configs", "examples"):
        (folder / name).symlink_to(REPO / name)
    return folder


def _run_shell(command: str, folder: Path) -> None:
    words = shlex.split(command)
    venv = Path(sys.prefix)
    if words[:2] == ["source", ".venv/bin/activate"]:  # the test's own virtualenv stands for .venv
        activate = venv / "bin" / "activate"
        proc = subprocess.run(["bash", "-c", f"source {shlex.quote(str(activate))} && command -v fmtransfer"],
                              capture_output=True, text=True, timeout=60, cwd=folder)
        assert proc.returncode == 0 and proc.stdout.strip().endswith("fmtransfer"), proc.stderr
        return
    if words[0] in ("fmtransfer", ".venv/bin/fmtransfer"):
        result = run_cli(*quick(words[1:], folder))
        assert result.code == 0, f"`{command}` exited {result.code}: {result.err[-2000:]}"
        return
    pytest.fail(f"`{command}`: this test cannot run it; mark it {MARKER} why)")


def _run_python(code: str, folder: Path) -> str:
    def layered(m):
        return repr(str(quick_over(m.group(2), folder)))

    code = re.sub(r"""(["'])(configs/[\w.-]+\.toml)\1""", layered, code)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(code, "<example>", "exec"), {"__name__": "__example__"})
    return out.getvalue()


EXAMPLES = [(page, i, kind, text) for page in PAGES for i, (kind, text) in enumerate(blocks(page))]


def test_the_examples_are_found_and_the_left_out_ones_are_marked():
    found = {kind for _, _, kind, _ in EXAMPLES}
    assert found == {"sh", "python"}
    readme = [e for e in EXAMPLES if e[0].name == "README.md"]
    assert len(readme) >= 8
    left = [c for _, _, kind, text in EXAMPLES if kind == "sh" for c in commands(text)[1]]
    assert any(c.startswith("pip install -e .[gpu]") for c in left)
    assert any(c.startswith("jupyter lab") for c in left)
    assert "make test" in left


@pytest.mark.slow
@pytest.mark.parametrize("page", PAGES, ids=[p.relative_to(REPO).as_posix() for p in PAGES])
def test_every_example_of_the_page_runs(page, scratch, monkeypatch):
    monkeypatch.chdir(scratch)
    for kind, text in blocks(page):
        if kind == "python":
            if MARKER in text:
                continue
            printed = _run_python(text, scratch)
            if page.name == "README.md":  # the front page's example prints what it computes
                assert re.search(r"baseline \d+\.\d\d%, transfer from A \d+\.\d\d%, error divided by", printed)
            continue
        run, _ = commands(text)
        for command in run:
            _run_shell(command, scratch)
    if page.name == "README.md":
        html = scratch / "my-study.html"
        assert html.is_file() and "<table class=\"leaderboard\">" in html.read_text(encoding="utf-8")
