"""A study's report as one self-contained HTML page, for sharing with a class: the leaderboard of
each setting, the per-seed points, the plots (PNG, embedded), the claims where the study can
judge them, the settings and the versions. Nothing is fetched: no script, font or image from
elsewhere, so the file opens anywhere, offline.

    >>> from fmtransfer.study.html_report import problem
    >>> problem("no/such/folder/report.html")
    'folder no/such/folder does not exist; create it or write the page elsewhere'
"""

from __future__ import annotations

import base64
import io
import os
import platform
from html import escape
from importlib import metadata
from pathlib import Path
from typing import Any

from fmtransfer.config import flatten
from fmtransfer.errors import UsageError
from fmtransfer.io import output_file, write_text_atomic
from fmtransfer.report import plotting_available
from fmtransfer.study.axes import cell_axes
from fmtransfer.study.reporting import StudyResult, columns, notes, study_figures
from fmtransfer.version import __version__

PACKAGES = ("tensorflow", "keras", "numpy", "scipy", "matplotlib", "rich")
CSS = """
body { font: 15px/1.45 system-ui, sans-serif; margin: 2rem auto; max-width: 72rem; padding: 0 1rem; color: #222; }
h1 { font-size: 1.5rem; } h2 { font-size: 1.15rem; margin-top: 2rem; } h3 { font-size: 1rem; }
table { border-collapse: collapse; margin: 0.5rem 0 1rem; }
th, td { padding: 0.2rem 0.6rem; border-bottom: 1px solid #ddd; text-align: right; white-space: nowrap; }
th:first-child, td:first-child { text-align: left; white-space: normal; }
th { background: #f4f4f4; }
img { max-width: 100%; border: 1px solid #eee; margin: 0.5rem 0; }
.note { color: #555; } code { background: #f4f4f4; padding: 0 0.2rem; }
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
    shown = [a for a in cell_axes() if any(a.name in c for c in cells)]
    parts = [f"<h1>Study {escape(summary['study'])}</h1>",
             f"<p>{summary['runs_finished']} of {summary['runs_in_grid']} runs finished; test-B accuracy, each "
             "contender paired with the baseline of the same seed. Made by fmtransfer "
             f"{escape(__version__)}.</p>"]
    parts += _claims(study_dir)
    parts.append("<h2>Leaderboards</h2>")
    cols = columns(cells)
    blocks: dict[tuple, list[dict]] = {}
    for cell, c in sorted(zip(result.cells, cells), key=lambda p: (p[0].setting, -p[0].mean_difference)):
        blocks.setdefault(cell.setting, []).append(c)
    for block in blocks.values():
        first = block[0]
        where = ", ".join(a.words(a.from_json(first[a.name])) for a in shown if a.name in first)
        parts.append(f"<h3>{escape(where[:1].upper() + where[1:])}</h3>")
        parts.append(_table(["rank", *(c.heading for c in cols)],
                            [[str(i), *(c.text(row) for c in cols)] for i, row in enumerate(block, 1)],
                            cls="leaderboard"))
    parts.append("<ul class=\"note\">" + "".join(f"<li>{escape(n)}</li>" for n in notes(summary, shown)) + "</ul>")
    parts.append("<h2>Per-seed points</h2>")
    for c in cells:
        where = ", ".join(a.short(a.from_json(c[a.name])) for a in shown if a.name in c)
        rows = [[str(seed), f"{100 * b:.2f}", f"{100 * m:.2f}", f"{100 * (m - b):+.2f}"]
                for seed, b, m in zip(c["seeds"], c["baseline_accuracies"], c["accuracies"])]
        parts.append(f"<h3>{escape(c['title'])}, {escape(where)}</h3>")
        parts.append(_table(["seed", "baseline %", f"{c['title']} %", "gain, pts"], rows, cls="seeds"))
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
            f"<title>fmtransfer study {escape(summary['study'])}</title><style>{CSS}</style></head>\n<body>\n"
            + "\n".join(parts) + "\n</body></html>\n")


def _claims(study_dir: str | Path) -> list[str]:
    """What `fmtransfer study claims` judges on this study's grid (the chapter's claims, by the
    rules of docs/claims.md), where that module exists; and what it could not judge, and why."""
    import importlib

    try:
        claims = importlib.import_module("fmtransfer.study.claims")
    except ModuleNotFoundError as e:
        if e.name != "fmtransfer.study.claims":  # the module is there, and broken: say so
            raise
        return []
    found = claims.judge([Path(study_dir)])
    summary = getattr(claims, "_summary", lambda c: "")
    out = ["<h2>Claims</h2>"]
    if found.claims:
        out.append(_table(["claim", "section", "verdict", "evidence", "MDE, points"],
                          [[c.claim, c.section, c.verdict, summary(c), "-" if c.mde is None else f"{c.mde:.2f}"]
                           for c in found.claims], cls="claims"))
    else:
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


def _table(heads: list[str], rows: list[list[str]], cls: str) -> str:
    head = "".join(f"<th>{escape(h)}</th>" for h in heads)
    body = "".join("<tr>" + "".join(f"<td>{escape(str(v))}</td>" for v in row) + "</tr>" for row in rows)
    return f"<table class=\"{cls}\"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


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
