"""`fmtransfer study report DIR --html FILE`: one self-contained page, checked as written and in a
real headless Chromium (Debian's chromium and chromium-driver, driven by selenium): it loads with
no console error, fetches nothing, and its tables hold the report's numbers.

The browser is a part of the system: installed with apt when root, else the browser test skips
saying why; under FMTRANSFER_REQUIRE_SYSTEM=1 (CI) it fails instead.
"""

from __future__ import annotations

import re
from html import unescape

import pytest

from conftest import run_cli, system_commands
from fmtransfer import study as studies
from fmtransfer.study import html_report
from fmtransfer.study.reporting import gain_text


@pytest.fixture(scope="module")
def page(tiny_study, tmp_path_factory):
    path = tmp_path_factory.mktemp("html") / "report.html"
    result = run_cli("study", "report", tiny_study, "--html", path)
    assert result.code == 0, result.err
    assert "Classes 5 vs 6" in result.out and f"html: {path}" in result.err
    return path


def test_the_page_fetches_nothing_and_embeds_its_plots(page, tiny_study):
    text = page.read_text(encoding="utf-8")
    assert not re.search(r"""(src|href)\s*=\s*["'](?!data:|#)""", text), "the page links something outside it"
    assert "<script" not in text and "http://" not in text and "https://" not in text
    result = studies.report(tiny_study)
    images = re.findall(r'<img alt="([^"]+)" src="data:image/png;base64,', text)
    assert len(images) == len(result.cells) + 2  # one per cell, gain against size, the contenders
    for c in result.to_dict()["cells"]:
        assert gain_text(c) in _text(text) and f"{100 * c['accuracies'][0]:.2f}" in text
    assert "model.hidden" in text and '<span class="nw">16,</span> <span class="nw">8</span>' in text  # the settings
    assert re.search(r'<td>tensorflow</td><td class="n"><span class="nw">\d', text)  # the versions
    assert "<td>fmtransfer</td>" in text


def test_without_matplotlib_the_page_says_plots_need_the_plot_extra(tiny_study, monkeypatch):
    monkeypatch.setattr(html_report, "plotting_available", lambda: False)
    text = html_report.page(studies.report(tiny_study), tiny_study)
    assert "<img" not in text and "Plots need the <code>plot</code> extra" in text
    assert "<table class=\"leaderboard\">" in text


def test_the_claims_are_on_the_page_as_study_claims_judges_them(tiny_study):
    from fmtransfer.study import claims, forest

    found = claims.judge([tiny_study])
    text = html_report.page(studies.report(tiny_study), tiny_study, plots=False)
    assert "<h2>Claims</h2>" in text
    for c in found.claims:
        assert f'<span class="verdict">{c.shown_verdict}</span> ' in text  # the study's few epochs: (SMOKE TEST)
        assert claims.sentence(c) in _text(text) and forest.svg(c, standalone=False) in text  # where it holds, and the plot
    for k in found.not_judged:
        assert f"Not judged: {k}" in text
    assert found.claims or found.not_judged


def test_the_page_judges_its_claims_on_its_own_report_read_once(tiny_study, monkeypatch):
    """The claims are judged on the report the page shows (with that report's margin), not on
    the study read a second time."""
    from fmtransfer.study import claims, forest

    result = studies.report(tiny_study, equivalence_margin=40.0)
    judged = claims.judge_reports([(str(tiny_study), result)])
    reads = []
    monkeypatch.setattr(claims, "report", lambda *a, **k: reads.append(a))
    text = html_report.page(result, tiny_study, plots=False)
    assert reads == []
    assert judged.claims
    for c in judged.claims:
        assert f'<span class="verdict">{c.shown_verdict}</span> ' in text
        assert forest.svg(c, standalone=False) in text


def _text(page: str) -> str:
    """The page's text without its tags, as a reader sees it ("+0.66 (+0.23, +1.08)")."""
    return unescape(re.sub(r"<[^>]+>", "", page))


def test_a_cell_wraps_its_words_but_never_a_number_and_gives_a_long_path_places_to_break():
    html = html_report._table(["where", "gain"], [["transfer from A", "+0.66 (+0.23, +1.08)"],
                                                  ["/a/long/path/to/the_study-folder", "-"]], cls="t")
    assert '<span class="nw">+0.66</span> <span class="nw">(+0.23,</span> <span class="nw">+1.08)</span>' in html
    assert "<td>transfer from A</td>" in html and '<td class="n">' not in html.split("</tr>")[1].split("<td")[1]
    assert "/<wbr>a/<wbr>long/<wbr>path/<wbr>to/<wbr>the_<wbr>study-<wbr>folder" in html


@pytest.mark.parametrize("where", ["missing", "folder"])
def test_html_where_it_cannot_be_written_is_one_line_after_the_report(tiny_study, tmp_path, where):
    target = tmp_path / "no" / "report.html" if where == "missing" else tmp_path
    result = run_cli("study", "report", tiny_study, "--no-plots", "--html", target)
    assert result.code == 2 and "Traceback" not in result.err
    lines = result.err_lines
    assert len(lines) == 1 and lines[0].startswith("fmtransfer: error: option --html:") and str(target) in lines[0]
    assert "Classes 5 vs 6" in result.out  # the terminal report was still printed
    assert not (tmp_path / "no").exists()


def _browser():
    paths = system_commands("headless Chromium", ["chromium", "chromedriver"], ["chromium", "chromium-driver"])
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = paths["chromium"]
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(executable_path=paths["chromedriver"]), options=options)


def test_the_page_in_headless_chromium(page, tiny_study):
    from selenium.webdriver.common.by import By

    driver = _browser()
    try:
        driver.get(page.as_uri())
        assert driver.title.startswith("SMOKE TEST: fmtransfer study")  # the tiny study's few epochs
        errors = [e for e in driver.get_log("browser") if e["level"] in ("SEVERE", "WARNING")]
        assert not errors, errors
        boards = driver.find_elements(By.CSS_SELECTOR, "table.leaderboard")
        cells = studies.report(tiny_study).to_dict()["cells"]
        assert len(boards) == len({c["b_train_size"] for c in cells})
        shown = [[td.text for td in tr.find_elements(By.TAG_NAME, "td")]
                 for board in boards for tr in board.find_elements(By.CSS_SELECTOR, "tbody tr")]
        for c in cells:
            row = next(r for r in shown if r[1] == c["title"] and r[2] == gain_text(c))
            assert row[3] == f"{c['wins']}/{c['ties']}/{c['losses']}"
        wide = [[td.get_attribute("textContent") for td in tr.find_elements(By.TAG_NAME, "td")]
                for tr in driver.find_elements(By.CSS_SELECTOR, "table.leaderboard-wide tbody tr")]
        assert len(wide) == len(shown) and all(len(r) > len(shown[0]) for r in wide)  # the rest, a click away
        seeds = driver.find_elements(By.CSS_SELECTOR, "table.seeds tbody tr")
        assert len(seeds) == sum(c["n"] for c in cells)
        loaded = driver.execute_script(
            "return Array.from(document.images).map(i => i.complete && i.naturalWidth > 0)")
        assert loaded and all(loaded)
    finally:
        driver.quit()


@pytest.mark.parametrize("width, height", [(1280, 800), (390, 844)], ids=["projector", "phone"])
def test_the_page_fits_a_projector_and_a_phone(page, tiny_study, width, height):
    """At a projector's 1,280 x 800 and a phone's 390 x 844 the page never scrolls sideways, no
    table cell is narrower than its longest word, every image loads, and the numbers a reader
    sees are the report's; with every "all columns" box opened too, as their wide tables scroll
    in their own box."""
    from selenium.webdriver.common.by import By

    driver = _browser()
    try:
        driver.set_window_size(width, height)
        inner = driver.execute_script("return [window.innerWidth, window.innerHeight]")
        driver.set_window_size(2 * width - inner[0], 2 * height - inner[1])
        driver.get(page.as_uri())
        for opened in (False, True):
            if opened:
                driver.execute_script("document.querySelectorAll('details').forEach(d => d.open = true)")
            layout = driver.execute_script(html_report.LAYOUT_PROBE)
            assert layout["innerWidth"] == width
            assert layout["scrollWidth"] <= width, (opened, layout["scrollWidth"])
            assert layout["cells"] > 20 and layout["tight"] == [], layout["tight"]
            assert layout["images"] and all(layout["images"])
        result = studies.report(tiny_study).to_dict()
        seen = [td.text for td in driver.find_elements(By.CSS_SELECTOR, "table.leaderboard tbody td")]
        assert sorted(t for t in seen if t.startswith(("+", "-")) and "(" in t) == \
            sorted(gain_text(c) for c in result["cells"])
        from fmtransfer.study import claims

        for claim, section in zip(claims.judge([tiny_study]).claims,
                                  driver.find_elements(By.CSS_SELECTOR, "section.claim")):
            figures = [t.get_attribute("textContent") for t in section.find_elements(By.CSS_SELECTOR, "text.figure")]
            assert figures == [p.text for p in claims.points(claim)]
            assert claim.verdict in section.text and claims.sentence(claim) in section.text
    finally:
        driver.quit()
