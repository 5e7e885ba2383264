"""A study's report as one self-contained HTML page, for sharing with a class: the claims where the
study can judge them (each verdict, where the claim holds and where not in a sentence, and its
evidence as a forest plot), the leaderboard of each setting (its essential columns, the rest a
click away), the per-seed points, the plots (PNG, embedded), the settings and the versions.
Nothing is fetched: no script, font or image from elsewhere, so the file opens anywhere, offline.
It reads on a projector and on a phone: text wraps, numbers never do, and nothing makes the page
scroll sideways (`LAYOUT_PROBE` measures it).

    >>> from fmtransfer.study.html_report import problem
    >>> problem("no/such/folder/report.html")
    'folder no/such/folder does not exist; create it or write the page elsewhere'
"""

from __future__ import annotations

import base64
import io
import os
import platform
import re
from html import escape
from importlib import metadata
from pathlib import Path
from typing import Any

from fmtransfer.config import flatten
from fmtransfer.errors import UsageError
from fmtransfer.io import output_file, write_text_atomic
from fmtransfer.report import SMOKE, plotting_available, smoke_note, smoke_title
from fmtransfer.study.reporting import StudyResult, columns, notes, shown_axes, study_figures
from fmtransfer.version import __version__

PACKAGES = ("tensorflow", "keras", "numpy", "scipy", "matplotlib", "rich")
# Made for a projector (1,280 px) and a phone (390 px): text wraps, numbers never do (each is a
# nowrap span), so a cell is never narrower than its longest word; a leaderboard shows its
# essential columns and keeps the rest one click away, in a box that scrolls by itself rather
# than the page.
CSS = """
body { font: 16px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 1.5rem auto; max-width: 64rem;
       padding: 0 1rem; color: #222; overflow-wrap: break-word; }
h1 { font-size: 1.5rem; line-height: 1.25; } h2 { font-size: 1.2rem; margin-top: 2.2rem; border-bottom: 2px solid #ddd; }
h3 { font-size: 1.02rem; margin: 1.4rem 0 0.4rem; }
table { border-collapse: collapse; margin: 0.5rem 0 1rem; }
th, td { padding: 0.25rem 0.55rem; border-bottom: 1px solid #ddd; text-align: left; vertical-align: top; }
th { background: #f4f4f4; font-weight: 600; }
td.n, th.n { text-align: right; }
.nw { white-space: nowrap; }
svg.forest text { font-variant-numeric: tabular-nums; }
.scroll { overflow-x: auto; max-width: 100%; }
details { margin: 0.25rem 0 1rem; } summary { cursor: pointer; color: #1558b0; }
img { max-width: 100%; height: auto; border: 1px solid #eee; margin: 0.5rem 0; }
figure { margin: 0.5rem 0 1rem; } figcaption { color: #555; font-size: 0.9rem; }
svg.forest { display: block; max-width: 100%; width: 36rem; height: auto; }
section.claim { border-left: 4px solid #ccc; padding: 0.1rem 0 0.1rem 0.9rem; margin: 1.2rem 0 1.8rem; }
section.claim.supported { border-color: #1565c0; } section.claim.contradicted { border-color: #c62828; }
.verdict { font-weight: 700; padding: 0.05rem 0.45rem; border-radius: 0.3rem; background: #eee; white-space: nowrap; }
.supported .verdict { background: #dce8fb; color: #0d47a1; } .contradicted .verdict { background: #fbe0e0; color: #8e1b1b; }
.note { color: #555; } code { background: #f4f4f4; padding: 0 0.2rem; }
@media (max-width: 40rem) {
  body { font-size: 15px; margin: 1rem auto; padding: 0 0.6rem; }
  th, td { padding: 0.2rem 0.3rem; }
  .wide { display: none; }
  section.claim { padding-left: 0.6rem; }
}
"""

# What the page promises, measured in a browser (tests/test_html_report.py and
# docs/screenshots/take.py run it): the viewport's width and the document's, each visible table
# cell's room against its longest word (measured with a Range over each word of its text), and
# whether each image loaded.
LAYOUT_PROBE = """
const range = document.createRange();
const out = {innerWidth: window.innerWidth, scrollWidth: document.documentElement.scrollWidth,
             scrollHeight: document.documentElement.scrollHeight, cells: 0,
             minSlack: null, tight: [], images: Array.from(document.images).map(i => i.complete && i.naturalWidth > 0)};
for (const cell of document.querySelectorAll('td, th')) {
  if (!cell.getClientRects().length) continue;  // not shown (display: none): a column a phone leaves out
  let longest = 0, word = '';
  const walk = document.createTreeWalker(cell, NodeFilter.SHOW_TEXT);
  for (let node = walk.nextNode(); node; node = walk.nextNode()) {
    for (const m of node.data.matchAll(/\\S+/g)) {
      range.setStart(node, m.index); range.setEnd(node, m.index + m[0].length);
      const w = range.getBoundingClientRect().width;
      if (w > longest) { longest = w; word = m[0]; }
    }
  }
  const style = getComputedStyle(cell);
  const room = cell.clientWidth - parseFloat(style.paddingLeft) - parseFloat(style.paddingRight);
  out.cells += 1;
  if (out.minSlack === null || room - longest < out.minSlack) out.minSlack = room - longest;
  if (room + 0.5 < longest) out.tight.push({word: word, longest: longest, room: room, text: cell.textContent});
}
return out;
"""


def problem(path: str | Path) -> str | None:
    """Why the page cannot be written at `path` (a missing or unwritable folder, a folder in the
    way), or None. Checked before anything is written: nothing is created on the way."""
    path = Path(path)
    parent = path.parent
    if path.is_dir():
        return f"{path} is a folder; give a file name, e.g. {path / 'report.html'}"
    if not parent.is_dir():
        return f"folder {parent} does not exist; create it or write the page elsewhere"
    if not os.access(parent, os.W_OK | os.X_OK):
        return f"folder {parent} cannot be written; write the page elsewhere"
    return None


def write(result: StudyResult, study_dir: str | Path, path: str | Path, plots: bool | None = None) -> Path:
    """Write `page(...)` to `path` atomically, through `io.output_file`'s guard: never over a
    study's own file or inside a study, nor onto a folder, FIFO or device; a symbolic link is
    written through.

    Raises:
        UsageError: carrying `path`, where it cannot be written (`problem` says why).
    """
    path = Path(path)
    target = output_file(path, keep_out=[study_dir])
    why = problem(target)
    if why is None:
        text = page(result, study_dir, plots=plots)
        try:
            write_text_atomic(target, text)
        except OSError as e:
            why = f"cannot be written: {e.strerror or e}"
    if why is not None:
        raise UsageError(f"{path}: {why}", path=path)
    return path


def page(result: StudyResult, study_dir: str | Path, plots: bool | None = None) -> str:
    """The whole page as a string; `plots` None: embedded where matplotlib is installed."""
    summary = result.to_dict()
    cells = summary["cells"]
    shown = shown_axes(cells)
    smoke = summary.get("smoke") or []
    parts = [f"<h1>{escape(smoke_title(smoke))}Study {escape(summary['study'])}</h1>",
             *([f'<p class="smoke"><strong>{escape(smoke_note(smoke))}.</strong></p>'] if smoke else []),
             f"<p>{summary['runs_finished']} of {summary['runs_in_grid']} runs finished; test-B accuracy, each "
             "contender paired with the baseline of the same seed. Made by fmtransfer "
             f"{escape(__version__)}.</p>"]
    parts += _claims(study_dir, result)
    parts.append("<h2>Leaderboards</h2>")
    cols = columns(cells)
    blocks: dict[tuple, list[dict]] = {}
    for cell, c in sorted(zip(result.cells, cells), key=lambda p: (p[0].setting, -p[0].mean_difference)):
        blocks.setdefault(cell.setting, []).append(c)
    essential = [c for c in cols if c.essential]
    for block in blocks.values():
        first = block[0]
        where = ", ".join(a.words(a.from_json(first[a.name])) for a in shown if a.name in first)
        parts.append(f"<h3>{escape(where[:1].upper() + where[1:])}</h3>")
        # On a phone the uncorrected p gives way: the corrected one is what a verdict reads.
        parts.append(_table(["rank", *(c.heading for c in essential)],
                            [[str(i), *(c.text(row) for c in essential)] for i, row in enumerate(block, 1)],
                            cls="leaderboard", wide={1 + essential.index(c) for c in essential if c.heading == "p"}))
        parts.append(f"<details><summary>All {len(cols) + 1} columns</summary><div class=\"scroll\">"
                     + _table(["rank", *(c.heading for c in cols)],
                              [[str(i), *(c.text(row) for c in cols)] for i, row in enumerate(block, 1)],
                              cls="leaderboard-wide") + "</div></details>")
    parts.append("<ul class=\"note\">" + "".join(f"<li>{escape(n)}</li>" for n in notes(summary, shown)) + "</ul>")
    parts.append("<h2>Per-seed points</h2>")
    for c in cells:
        where = ", ".join(a.short(a.from_json(c[a.name])) for a in shown if a.name in c)
        rows = [[str(seed), f"{100 * b:.2f}", f"{100 * m:.2f}", f"{100 * (m - b):+.2f}"]
                for seed, b, m in zip(c["seeds"], c["baseline_accuracies"], c["accuracies"])]
        # Folded: a study of 800 runs would otherwise make the page tens of thousands of pixels tall.
        parts.append(f"<details><summary>{escape(c['title'])}, {escape(where)}: {len(rows)} runs</summary>"
                     + _table(["seed", "baseline %", f"{c['title']} %", "gain, pts"], rows, cls="seeds")
                     + "</details>")
    parts.append("<h2>Plots</h2>")
    parts += _plots(result, study_dir, plots)
    parts.append("<h2>Settings</h2>")
    parts.append(_table(["key", "value"], [[k, _value(v)] for k, v in flatten(summary["config"]).items()],
                        cls="settings"))
    parts.append("<h2>Versions</h2>")
    parts.append(_table(["package", "version"], [["python", platform.python_version()], ["fmtransfer", __version__],
                                                  *[[p, _version(p)] for p in PACKAGES]], cls="versions"))
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            "<link rel=\"icon\" href=\"data:,\">"  # no favicon request: the page fetches nothing
            f"<title>{SMOKE + ': ' if smoke else ''}fmtransfer study {escape(summary['study'])}</title><style>{CSS}</style></head>\n<body>\n"
            + "\n".join(parts) + "\n</body></html>\n")


def _claims(study_dir: str | Path, result: StudyResult) -> list[str]:
    """What `fmtransfer study claims` judges on this study's grid (the chapter's claims, by the
    rules of docs/claims.md), from the page's own report: each claim's verdict, where it holds
    and where not in a sentence, and its evidence as a forest plot; then what it could not
    judge, and why."""
    from fmtransfer.study import claims, forest

    found = claims.judge_reports([(str(Path(study_dir)), result)])
    out = ["<h2>Claims</h2>"]
    for c in found.claims:
        out.append(f'<section class="claim {escape(c.verdict.replace(" ", "-"))}" id="claim-{escape(c.id)}">'
                   f"<h3>{_words(c.claim)} <span class=\"note\">({escape(c.section)})</span></h3>"
                   f'<p><span class="verdict">{escape(c.shown_verdict)}</span> {_words(claims.sentence(c))}</p>'
                   f"<figure>{forest.svg(c, standalone=False)}</figure>"
                   f"<details><summary>The rule</summary><p>{_words(c.rule)}</p></details></section>")
    if not found.claims:
        out.append("<p>No claim of the chapter can be judged on this study's grid.</p>")
    if found.not_judged:
        out.append("<ul class=\"note\">" + "".join(f"<li>Not judged: {escape(k)} ({escape(why)}).</li>"
                                                  for k, why in found.not_judged.items()) + "</ul>")
    return out


def _plots(result: StudyResult, study_dir: str | Path, plots: bool | None) -> list[str]:
    if plots is False:
        return ["<p class=\"note\">Plots left out (--no-plots).</p>"]
    if not plotting_available():
        return ["<p class=\"note\">Plots need the <code>plot</code> extra: "
                "<code>pip install -e '.[plot]'</code> (matplotlib).</p>"]
    out = []
    for name, fig in study_figures(Path(study_dir), result, option="--html"):
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
        data = base64.b64encode(buffer.getvalue()).decode("ascii")
        out.append(f"<figure><img alt=\"{escape(name[:-4])}\" src=\"data:image/png;base64,{data}\">"
                   f"<figcaption>{escape(name)}</figcaption></figure>")
    return out


def _table(heads: list[str], rows: list[list[str]], cls: str, wide: set[int] = frozenset()) -> str:
    """A table; a column of numbers is right-aligned, the columns `wide` are left out on a phone."""
    numeric = [all(_NUMBER.fullmatch(str(row[i]).replace(" ", "")) for row in rows) and bool(rows)
               for i in range(len(heads))]
    classes = [" ".join((["n"] if numeric[i] else []) + (["wide"] if i in wide else [])) for i in range(len(heads))]
    align = [f' class="{c}"' if c else "" for c in classes]
    head = "".join(f"<th{align[i]}>{escape(h)}</th>" for i, h in enumerate(heads))
    body = "".join("<tr>" + "".join(f"<td{align[i]}>{_words(str(v))}</td>" for i, v in enumerate(row)) + "</tr>"
                   for row in rows)
    return f"<table class=\"{cls}\"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


# A number, with what sticks to it: a sign, brackets, a unit, a separator ("(+0.23,", "10/0/0", "5x3", "81.2%").
_NUMBER = re.compile(r"[(\[]*[-+−±]?\d[\d.,:/x×%e+-]*[)\],;%]*|-")
_LONG = 24  # a word longer than this (a path) may break after its separators


def _words(text: str) -> str:
    """`text` escaped for the page, each number kept on one line and a long word (a path) given
    places to break after / _ - . , so that neither a number nor a word runs out of its box."""
    out = []
    for token in re.split(r"(\s+)", text):
        if not token or token.isspace():
            out.append(token)
        elif _NUMBER.fullmatch(token) and any(ch.isdigit() for ch in token):
            out.append(f'<span class="nw">{escape(token)}</span>')
        elif len(token) > _LONG:
            out.append("<wbr>".join(escape(part) for part in re.split(r"(?<=[/_\-.,=])", token)))
        else:
            out.append(escape(token))
    return "".join(out)


def _value(v: Any) -> str:
    if isinstance(v, (list, tuple)):
        return ", ".join(_value(x) for x in v) or "(empty)"
    if isinstance(v, bool):
        return str(v).lower()
    return "-" if v is None else str(v)


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"
