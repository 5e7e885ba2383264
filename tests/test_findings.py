"""The project's findings come from the tool: the README's claims table, docs/findings.md and the
committed reports are exactly what docs/study/generate.py writes from the committed studies."""

import importlib.util
import json
import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def generate():
    spec = importlib.util.spec_from_file_location("generate", ROOT / "docs" / "study" / "generate.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["generate"] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def found(generate):
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(ROOT)
        yield generate.claims()


def test_there_are_committed_studies_and_claims_judged_on_them(generate, found):
    assert [s.name for s in generate.committed()], "no study committed under docs/study/records"
    assert found.claims, "no claim judged"


def test_the_committed_claims_are_what_study_claims_gives_on_the_committed_studies(found):
    committed = json.loads((ROOT / "docs" / "study" / "claims.json").read_text())
    assert committed == json.loads(json.dumps(found.to_dict()))


def test_the_readme_claims_table_is_the_generated_one(generate, found):
    readme = (ROOT / "README.md").read_text()
    start, end = readme.index(generate.START), readme.index(generate.END) + len(generate.END)
    assert readme[start:end] == generate.readme_block(found)


def test_the_readme_verdicts_match_the_claims(generate, found):
    readme = (ROOT / "README.md").read_text()
    block = readme[readme.index(generate.START):readme.index(generate.END)]
    for claim in found.claims:
        row = next(line for line in block.splitlines() if f"`{claim.id}`" in line)
        assert f"**{claim.verdict}**" in row


def test_findings_page_is_the_generated_one(generate, found, monkeypatch):
    monkeypatch.chdir(ROOT)
    assert (ROOT / "docs" / "findings.md").read_text() == generate.findings(found)


def test_each_committed_report_is_the_report_of_its_committed_study(generate, monkeypatch):
    monkeypatch.chdir(ROOT)
    for name, made in generate.reports().items():
        committed = json.loads((ROOT / "docs" / "study" / f"report-{name}.json").read_text())
        assert committed == json.loads(json.dumps(made)), name


def test_every_figure_in_the_readme_findings_stands_in_the_findings_page(generate):
    """The README quotes nothing the generated page does not hold."""
    readme = (ROOT / "README.md").read_text()
    block = readme[readme.index(generate.START):readme.index(generate.END)]
    page = (ROOT / "docs" / "findings.md").read_text()
    figures = set(re.findall(r"[-+]?\d+\.\d+", block))
    assert figures and all(f in page for f in figures)


def test_each_claims_forest_plot_is_the_generated_one_and_the_pages_show_it(generate, found):
    plots = generate.forest_plots(found)
    assert set(plots) == {f"{c.id}.svg" for c in found.claims}
    committed = {p.name: p.read_text() for p in (ROOT / "docs" / "study" / "claims").glob("*.svg")}
    assert committed == plots
    page = (ROOT / "docs" / "findings.md").read_text()
    readme = (ROOT / "README.md").read_text()
    for c in found.claims:
        assert f"](study/claims/{c.id}.svg)" in page and f'src="docs/study/claims/{c.id}.svg"' in readme


def test_the_findings_give_each_claim_its_verdict_and_sentence_not_a_wall_of_numbers(generate, found, monkeypatch):
    from fmtransfer.study.claims import sentence

    monkeypatch.chdir(ROOT)
    page = generate.findings(found)
    claims = page[page.index("## The chapter's claims"):page.index("\n## ", page.index("## The chapter's claims") + 1)]
    for c in found.claims:
        assert f"**{c.verdict}**. {sentence(c)}" in claims
    assert max(len(line) for line in claims.splitlines()) < 700  # the old evidence cells ran to 3,000


def test_the_home_page_shows_a_figure_the_generator_draws(generate, found):
    """docs/index.md shows today's evidence, not a picture of an earlier version."""
    images = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", (ROOT / "docs" / "index.md").read_text())
    assert images and all(i.startswith("study/claims/") and i[len("study/claims/"):] in generate.forest_plots(found)
                          for i in images)


def test_every_table_on_the_findings_page_ends_before_its_notes():
    """A note right under a Markdown table is read as one more row, one word wide: the notes under
    the leaderboards made the page 87,000 px tall. A blank line must end each table."""
    lines = (ROOT / "docs" / "findings.md").read_text().splitlines()
    assert any(line.startswith("|") for line in lines)
    for above, line in zip(lines, lines[1:]):
        if above.startswith("|"):
            assert line.startswith("|") or not line.strip(), line
