"""The documentation is self-contained: every relative link in it points at something inside the
repository, and no tracked text refers to material that lives outside it.

Fast and TensorFlow-free: it only reads files.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# `[text](target)` and `![alt](target)`; the target ends at whitespace (an optional "title"
# may follow) or at the closing parenthesis. `<target>` form is unwrapped below.
LINK = re.compile(r"!?\[[^\]]*\]\(\s*(<[^>]*>|[^)\s]+)(?:\s+\"[^\"]*\")?\s*\)")
FENCE = re.compile(r"^(```|~~~).*?^\1", re.S | re.M)
INLINE_CODE = re.compile(r"`[^`\n]*`")
EXTERNAL = re.compile(r"^(https?:|mailto:)", re.I)

# Built from parts so that this file does not itself contain the strings it looks for.
FORBIDDEN = ("RECIPE" + ".md", ".." + "/shared")


def markdown_files() -> list[Path]:
    files = [ROOT / "README.md", ROOT / "bench" / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
    return [f for f in files if f.is_file()]


def text_files() -> list[Path]:
    patterns = ("fmtransfer/**/*.py", "tests/**/*.py", "bench/*.py", "configs/*.toml")
    files = set(markdown_files())
    for pattern in patterns:
        files.update(ROOT.glob(pattern))
    this = Path(__file__).resolve()
    return sorted(f for f in files if f.is_file() and f.resolve() != this)


def relative_links(md: Path) -> list[str]:
    """The relative link targets in `md`, anchors stripped; code blocks and inline code skipped."""
    text = INLINE_CODE.sub("", FENCE.sub("", md.read_text(encoding="utf-8")))
    targets = []
    for match in LINK.finditer(text):
        target = match.group(1).strip("<>")
        if EXTERNAL.match(target) or target.startswith("#"):
            continue
        target = target.split("#", 1)[0].split("?", 1)[0]
        if target:
            targets.append(target)
    return targets


def resolve(md: Path, target: str) -> Path:
    return (ROOT / target.lstrip("/")).resolve() if target.startswith("/") else (md.parent / target).resolve()


def ids(paths: list[Path]) -> list[str]:
    return [p.relative_to(ROOT).as_posix() for p in paths]


MARKDOWN = markdown_files()
TEXT = text_files()


def test_the_documents_to_check_exist():
    """README.md and the experiment's specification are among the checked documents."""
    checked = set(ids(MARKDOWN))
    assert "README.md" in checked
    assert "docs/experiment.md" in checked


@pytest.mark.parametrize("md", MARKDOWN, ids=ids(MARKDOWN))
def test_every_relative_link_resolves_to_a_file_in_the_repository(md: Path):
    """Each relative link or image in a document names an existing file or directory of the
    repository (a path outside it does not count, even where it exists on this machine)."""
    missing = [t for t in relative_links(md) if not (resolve(md, t).is_relative_to(ROOT) and resolve(md, t).exists())]
    assert not missing, f"{md.relative_to(ROOT)} links to missing paths: {missing}"


@pytest.mark.parametrize("md", MARKDOWN, ids=ids(MARKDOWN))
def test_no_link_leaves_the_repository(md: Path):
    """No relative link reaches above the repository root, even one that happens to exist."""
    outside = [t for t in relative_links(md) if not resolve(md, t).is_relative_to(ROOT)]
    assert not outside, f"{md.relative_to(ROOT)} links outside the repository: {outside}"


@pytest.mark.parametrize("path", TEXT, ids=ids(TEXT))
def test_no_text_refers_to_material_outside_the_repository(path: Path):
    """The repository stands alone: docs/experiment.md is the specification, not an outside file."""
    lines = path.read_text(encoding="utf-8").splitlines()
    hits = [f"{n}: {line.strip()}" for n, line in enumerate(lines, 1) if any(s in line for s in FORBIDDEN)]
    assert not hits, f"{path.relative_to(ROOT)} mentions {' or '.join(FORBIDDEN)}:\n" + "\n".join(hits)


def test_the_link_finder_sees_inline_links_and_images(tmp_path: Path):
    """Sanity check of the parser these tests rely on: links, images, anchors, externals, code."""
    md = tmp_path / "x.md"
    md.write_text(
        "See [a](docs/a.md#part) and ![pic](img/p.png \"title\"), [web](https://example.org),\n"
        "[mail](mailto:x@y.z), [here](#top), `[code](no.md)` and\n```\n[fenced](no2.md)\n```\n",
        encoding="utf-8",
    )
    assert relative_links(md) == ["docs/a.md", "img/p.png"]


def test_the_readme_is_a_front_page():
    """At most 12,000 characters; says how to reach fmtransfer after `make run`, installs extras
    from a checkout, opens the notebook, and keeps the claims table's markers for the generator."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(text) <= 12_000, len(text)
    for needed in ("make run", "make test", "source .venv/bin/activate", ".venv/bin/fmtransfer",
                   "pip install -e '.[gpu]'", "jupyter lab examples/chapter11.ipynb", "study report",
                   "--html", "docs/findings.md"):
        assert needed in text, needed
    start, end = text.index("<!-- claims:start -->"), text.index("<!-- claims:end -->")
    assert start < end
    assert "pip install 'fmtransfer[" not in text  # reads like a package index install; it is a checkout


def test_each_docs_page_is_in_the_sites_navigation():
    import yaml

    nav = yaml.safe_load((ROOT / "mkdocs.yml").read_text(encoding="utf-8"))["nav"]
    listed = {page for entry in nav for page in entry.values()}
    assert listed == {p.name for p in (ROOT / "docs").glob("*.md")}


# A sentence saying the claims' rules or list were fixed before any result: they were written
# after the committed studies' results had been seen (docs/claims.md), so the verdicts are exploratory.
FIXED_IN_ADVANCE = re.compile(r"(fixed|set|chosen|decided)\b[^.]{0,60}\bbefore (any|the|its)? ?results?\b"
                              r"[^.]{0,20}\b(was|were|are|is)? ?seen|pre-?registered before", re.I | re.S)


def prose_files() -> list[Path]:
    """Everything a reader may take as the project's word: the docs, the notebook, the code's text."""
    return [*markdown_files(), ROOT / "examples" / "chapter11.ipynb", ROOT / "docs" / "study" / "generate.py",
            *sorted((ROOT / "fmtransfer").rglob("*.py"))]


def test_no_text_says_the_claims_or_a_margin_were_fixed_before_the_results_were_seen():
    said = [f"{p.relative_to(ROOT)}: {m.group(0)!r}" for p in prose_files()
            for m in FIXED_IN_ADVANCE.finditer(p.read_text(encoding="utf-8"))]
    assert said == []


def test_the_committed_verdicts_are_labelled_exploratory_wherever_they_are_shown():
    claims = (ROOT / "docs" / "claims.md").read_text(encoding="utf-8")
    assert "after the results were seen" in claims and "**exploratory**" in claims
    for commit in ("5961c8f", "91a6f67", "71bb450"):  # the report, the rules, the contenders moved
        assert commit in claims
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    found = readme[readme.index("## What we found"):readme.index("<!-- claims:start -->")]
    assert "Exploratory" in found
    for shown in ("README.md", "docs/findings.md", "examples/chapter11.ipynb"):
        assert "exploratory" in (ROOT / shown).read_text(encoding="utf-8").lower(), shown


# A figure in a Markdown table: a number with optional thousands commas and decimals.
FIGURE = re.compile(r"(?<![\w.])[-+]?\d{1,3}(?:,\d{3})+(?:\.\d+)?(?![\w])|(?<![\w.])[-+]?\d+(?:\.\d+)?(?![\w])")
MEASURED = re.compile(r"bench/measured/([\w.-]+\.json)")


def _numbers(value) -> list[float]:
    if isinstance(value, bool):
        return []
    if isinstance(value, (int, float)):
        return [float(value)]
    if isinstance(value, dict):
        return [x for v in value.values() for x in _numbers(v)]
    if isinstance(value, list):
        return [x for v in value for x in _numbers(v)]
    return []


def _stands_in(figure: str, values: list[float]) -> bool:
    """Whether `figure` (as printed: its decimals say its precision) is one of `values` rounded,
    or one of them as a percentage."""
    number = float(figure.replace(",", "").lstrip("+"))
    half = 0.5 * 10 ** -len(figure.partition(".")[2]) + 1e-9
    return any(abs(v * scale - number) <= half for v in values for scale in (1, 100))


def measured_tables(page: Path):
    """Each Markdown table of `page` with the bench/measured files cited since the section's heading
    above it: [(table lines, {file name: numbers})]."""
    import json

    lines, out, cited, table = page.read_text(encoding="utf-8").splitlines(), [], set(), []
    for line in [*lines, ""]:
        if line.startswith("|"):
            table.append(line)
            continue
        if table and cited:
            out.append((table, {name: _numbers(json.loads((ROOT / "bench" / "measured" / name).read_text()))
                                for name in sorted(cited)}))
        table = []
        if line.startswith("#"):
            cited = set()
        cited |= set(MEASURED.findall(line))
    return out


@pytest.mark.parametrize("page", ["docs/pretrain.md", "docs/speed.md"])
def test_every_figure_in_a_table_citing_a_measured_file_stands_in_that_file(page):
    """The setting column (epochs, steps, workers) says what ran; every other cell is a measurement."""
    tables = measured_tables(ROOT / page)
    assert tables, page
    for table, files in tables:
        values = [v for numbers in files.values() for v in numbers]
        for row in table[2:]:
            cells = [c.strip() for c in row.strip("|").split("|")][1:]
            for figure in FIGURE.findall(" ".join(INLINE_CODE.sub("", c) for c in cells)):
                assert _stands_in(figure, values), f"{page}: {figure} in {row!r} is in none of {sorted(files)}"


def test_the_coverage_figures_on_the_statistics_page_are_the_committed_measurement():
    """Every coverage range it quotes is bench/measured/coverage-0.5.0.json's, as min-max (median)."""
    import json

    text = (ROOT / "docs" / "statistics.md").read_text(encoding="utf-8")
    summary = json.loads((ROOT / "bench" / "measured" / "coverage-0.5.0.json").read_text())["summary"]
    quoted = {f"{round(100 * s['min'])}-{round(100 * s['max'])}% (median {round(100 * s['median'])}%)"
              for s in summary.values()}
    found = re.findall(r"(\d+-\d+%)[^()]{0,20}(\(median \d+%\))", text)
    assert len(found) == 4 and {f"{a} {b}" for a, b in found} <= quoted, found
    assert set(re.findall(r"\d+-\d+%", text)) == {a for a, _ in found}  # no range without its source
