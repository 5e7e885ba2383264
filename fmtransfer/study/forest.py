"""A claim's evidence as a forest plot: one row per figure (a cell's gain, a gap between two cells,
a share of runs), its 95% interval as a bar, coloured by direction: the interval above no effect,
below it, or across it. Written as SVG text, so it needs no matplotlib, stays sharp on a projector
and goes into a page as it is (the HTML report) or into a file (docs/findings.md).

The rows are narrow on purpose: each row's label stands on a line of its own above its bar, so
the plot reads on a phone as well as on a projector.

    >>> from fmtransfer.study.forest import ticks
    >>> ticks(-2.1, 3.3)
    [-2.0, -1.0, 0.0, 1.0, 2.0, 3.0]
"""

from __future__ import annotations

import math
from html import escape

from fmtransfer.study.claims import Claim, Point, points, telling_apart

WIDTH = 400  # narrow, so that on a phone's 360 px the text stays near its size
LINE, BAR = 18, 30  # a label's line; a bar's line, below the label's
PLOT_LEFT, PLOT_RIGHT = 172, WIDTH - 12  # the bars' area; left of it, each figure's text
CHAR = 0.56  # a character's mean width in ems: where a label wraps, as no font is measured here
COLOURS = {"above": "#1565c0", "below": "#c62828", "across": "#6b6b6b"}
FONT = "system-ui, -apple-system, 'Segoe UI', Roboto, 'DejaVu Sans', sans-serif"


def ticks(lo: float, hi: float, most: int = 7) -> list[float]:
    """Round values spanning [lo, hi], at most `most` of them, a step of 1, 2 or 5 times a power of 10."""
    span = hi - lo or 1.0
    for step in sorted(m * 10.0 ** e for e in range(math.floor(math.log10(span / most)) - 1,
                                                     math.ceil(math.log10(span)) + 1) for m in (1, 2, 5)):
        first, last = math.ceil(lo / step - 1e-9), math.floor(hi / step + 1e-9)
        if last - first + 1 <= most:
            return [round(k * step, 10) + 0.0 for k in range(first, last + 1)]
    return [lo, hi]


def _reference_words(reference: float) -> str:
    return f"{reference:g}"


def svg(claim: Claim, standalone: bool = True) -> str:
    """The forest plot of `claim`'s evidence as one <svg> element; "" where it has no figure.
    `standalone`: with its namespace, as a file needs; inside an HTML page it goes without (the
    page names no address at all)."""
    rows = points(claim)
    if not rows:
        return ""
    reference = rows[0].reference
    threshold = claim.threshold
    marks = [reference] + ([threshold[0]] if threshold else [])
    for p in rows:
        marks += [p.value, *(p.ci95 or ())]
    lo, hi = min(marks), max(marks)
    pad = 0.04 * (hi - lo or 1.0)
    lo, hi = lo - pad, hi + pad
    steps = ticks(lo, hi)
    lo, hi = min(lo, steps[0]), max(hi, steps[-1])

    def x(v: float) -> float:
        return PLOT_LEFT + (v - lo) / (hi - lo) * (PLOT_RIGHT - PLOT_LEFT)

    studies = {p.study for p in rows}
    keys = telling_apart(rows)
    same = [words for k, words in rows[0].where if k not in keys]
    labels = [_wrap(_label(p, keys, len(studies) > 1), 14) for p in rows]
    top = 22 if threshold else 6
    tops = [top]
    for lines in labels:
        tops.append(tops[-1] + LINE * len(lines) + BAR)
    axis = tops[-1] + 4
    notes = _wrap(claim.measure, 12) + (_wrap("every row: " + ", ".join(same), 12) if same else [])
    legend_y = axis + 36 + 16 * len(notes)
    height = legend_y + 12
    xmlns = ' xmlns="http://www.w3.org/2000/svg"' if standalone else ""
    out = [f'<svg{xmlns} class="forest" viewBox="0 0 {WIDTH} {height}" '
           f'width="{WIDTH}" height="{height}" role="img" font-family="{escape(FONT)}" font-size="14">',
           f"<title>{escape(claim.id)}: {escape(claim.verdict)}; {escape(claim.measure)}, with 95% intervals</title>",
           f'<rect width="{WIDTH}" height="{height}" fill="#fff"/>']
    for t in steps:
        out.append(f'<line x1="{x(t):.1f}" x2="{x(t):.1f}" y1="{top}" y2="{axis}" stroke="#e6e6e6"/>')
        out.append(f'<text x="{x(t):.1f}" y="{axis + 16}" text-anchor="middle" font-size="12" fill="#444">'
                   f"{_tick(t, reference)}</text>")
    out.append(f'<line x1="{x(reference):.1f}" x2="{x(reference):.1f}" y1="{top}" y2="{axis}" stroke="#222"/>')
    if threshold:
        tx = x(threshold[0])
        anchor = "end" if tx > (PLOT_LEFT + PLOT_RIGHT) / 2 else "start"
        out.append(f'<line x1="{tx:.1f}" x2="{tx:.1f}" y1="{top - 4}" y2="{axis}" stroke="#8a5a00" '
                   'stroke-dasharray="4 3"/>')
        out.append(f'<text x="{tx:.1f}" y="{top - 8}" text-anchor="{anchor}" font-size="12" fill="#8a5a00">'
                   f"{escape(threshold[1])} {threshold[0]:+.2f}</text>")
    out.append(f'<line x1="{PLOT_LEFT}" x2="{PLOT_RIGHT}" y1="{axis}" y2="{axis}" stroke="#444"/>')
    for p, y, lines in zip(rows, tops, labels):
        out.append(_row(p, y, x, lines))
    for i, line in enumerate(notes):
        out.append(f'<text x="8" y="{axis + 36 + 16 * i}" font-size="12" fill="#444">{escape(line)}</text>')
    legend = (("above", f"95% interval above {_reference_words(reference)}"),
              ("below", f"below {_reference_words(reference)}"), ("across", "across it, or none"))
    lx = 8
    for direction, words in legend:
        out.append(f'<circle cx="{lx + 5}" cy="{legend_y - 4}" r="5" fill="{COLOURS[direction]}"/>'
                   f'<text x="{lx + 14}" y="{legend_y}" font-size="12" fill="#444">{escape(words)}</text>')
        lx += 24 + int(12 * CHAR * len(words))
    out.append("</svg>")
    return "\n".join(out)


def _tick(t: float, reference: float) -> str:
    if reference != 0.0:  # a share
        return f"{t:g}"
    return "0" if t == 0 else f"{t:+g}"


def _label(p: Point, keys: list[str], name_study: bool) -> str:
    where = ", ".join(words for k, words in p.where if k in keys)
    study = p.study if name_study and p.study else ""
    label = " · ".join(x for x in (where, study) if x)
    return (f"{label}: {p.what}" if label else p.what) if p.what else label or "the setting measured"


def _wrap(text: str, size: float) -> list[str]:
    """`text` in lines that fit the plot's width at `size` px, broken at spaces."""
    most = int((WIDTH - 16) / (size * CHAR))
    lines = [""]
    for word in text.split(" "):
        if lines[-1] and len(lines[-1]) + 1 + len(word) > most:
            lines.append(word)
        else:
            lines[-1] = f"{lines[-1]} {word}".strip()
    return lines


def _row(p: Point, y: float, x, lines: list[str]) -> str:
    label = " ".join(lines)
    colour = COLOURS[p.direction]
    bar_y = y + LINE * len(lines) + 14
    parts = [f'<g class="point" data-stance="{escape(p.stance)}" data-direction="{p.direction}">',
             f"<title>{escape(label)}: {escape(p.text)} ({escape(p.stance)})</title>",
             *(f'<text x="8" y="{y + 15 + LINE * i}" fill="#222">{escape(line)}</text>' for i, line in enumerate(lines)),
             f'<text class="figure" x="8" y="{bar_y + 5}" font-size="13" fill="{colour}">{escape(p.text)}</text>']
    if p.ci95:
        parts.append(f'<line x1="{x(p.ci95[0]):.1f}" x2="{x(p.ci95[1]):.1f}" y1="{bar_y}" y2="{bar_y}" '
                     f'stroke="{colour}" stroke-width="3" stroke-linecap="round"/>')
    # A piece the rule did not judge is drawn hollow: it is shown, and counts for nothing.
    fill, stroke = ("#fff", colour) if p.stance == "not judged" else (colour, "#fff")
    parts.append(f'<circle cx="{x(p.value):.1f}" cy="{bar_y}" r="5.5" fill="{fill}" stroke="{stroke}" '
                 'stroke-width="2"/>')
    parts.append("</g>")
    return "".join(parts)
