"""The documentation site builds strictly: a broken link between pages, a missing anchor or a
docstring reference mkdocstrings cannot resolve fails the build, and so this test. The built
pages hold the leaderboard plots and the API reference generated from the docstrings.

A few seconds: mkdocs reads the docs and the package's source, imports no TensorFlow.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("site")
    proc = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)], cwd=REPO,
                          capture_output=True, text=True, timeout=300,
                          env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


def test_every_page_is_built(site):
    pages = {p.stem for p in (REPO / "docs").glob("*.md")}
    assert pages <= {p.stem for p in site.glob("*.html")}


def test_the_leaderboard_plots_are_on_the_pages(site):
    shown = set()
    for page in site.glob("*.html"):
        shown.update(re.findall(r'<img[^>]+src="study/([^"]+\.png)"', page.read_text(encoding="utf-8")))
    study = REPO / "docs" / "study"
    assert {p.relative_to(study).as_posix() for p in study.rglob("*.png")} <= shown
    assert all((site / "study" / name).is_file() for name in shown)


def test_the_api_reference_comes_from_the_docstrings(site):
    from fmtransfer.config import load_config

    page = site.joinpath("reference.html").read_text(encoding="utf-8")
    first = load_config.__doc__.strip().splitlines()[0]
    assert "load_config" in page and first.split(",")[0] in page
    assert "run_study" in page and "StudyResult" in page and "ConfigError" in page


def test_a_link_to_a_repository_file_becomes_its_path(site):
    """The site holds docs/ only: bench/README.md is named, not linked to a page that is not there."""
    speed = site.joinpath("speed.html").read_text(encoding="utf-8")
    assert "bench/measured/bench-0.5.0.json" in speed and 'href="../bench' not in speed
