"""The chapter's claims (Hands-On ML 11.2), each judged on one or more studies by its rule.

`judge(dirs)` reports every study directory, then gives each claim the grid can speak to a
verdict: "supported", "contradicted", "equivalent" or "no evidence" (with the gain the grid
could have detected). A claim no study can speak to is left out of the list and named in
`Claims.not_judged`, with what it needs. docs/claims.md states every rule; the rules read only
the cells' statistics, so the same records always give the same verdicts. The rules (version 1)
were written after the committed studies' results were seen, so their verdicts are exploratory
(docs/claims.md).
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
from rich.console import Group
from rich.table import Table

from fmtransfer import contenders
from fmtransfer.errors import ArgumentError
from fmtransfer.report import SMOKE, framed, smoke_note, smoke_title
from fmtransfer.study import inference
from fmtransfer.study.axes import cell_axes
from fmtransfer.study.records import check_pooled
from fmtransfer.study.reporting import StudyResult, report
from fmtransfer.study.stats import ALPHA, BOOK, MIN_INTERVAL_UNITS, POWER, Cell, p_floor

VERDICTS = ("supported", "contradicted", "equivalent", "no evidence")
BOOK_PAIR, BOOK_SIZE = list(BOOK["pair"]), BOOK["b_train_size"]
BOOK_GAIN_POINTS = 100 * (BOOK["transfer"] - BOOK["baseline"])
TYPICAL = 0.5  # a result is typical when at least half the runs reach it


@dataclass(frozen=True)
class Claim:
    """One claim of the chapter and its verdict on the studies given.

    Args:
        id: stable, e.g. "transfer-helps".
        claim: the chapter's words, paraphrased; `section` where they stand.
        verdict: one of `VERDICTS`.
        evidence: the cells (or comparisons of cells) the rule read, with their figures.
        mde: with "no evidence", the smallest true effect (points) the best-powered piece of
            evidence would have detected with 80% power; None otherwise, or for a claim about a
            share of runs rather than a gain.
        rule: the rule, in one sentence.
        measure: what each piece of evidence's figure is, as a plot's axis names it.
        threshold: besides no gain, the figure the rule compares each piece with (the book's gain),
            with its name; None where the rule reads only the direction.
        smoke: for each study of its evidence whose settings are below the chapter's, the study
            and those settings (`config.below_chapter`): a verdict on a smoke test where any.
    """

    id: str
    claim: str
    section: str
    verdict: str
    evidence: list[dict]
    mde: float | None
    rule: str
    measure: str = "gain over the baseline, points"
    threshold: tuple[float, str] | None = None
    smoke: tuple[str, ...] = ()

    def __post_init__(self):
        if self.verdict not in VERDICTS:
            raise ValueError(f"verdict must be one of {', '.join(VERDICTS)}, got {self.verdict!r}")

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "claim": self.claim, "section": self.section, "verdict": self.verdict,
                "evidence": self.evidence, "mde": self.mde, "rule": self.rule, "smoke": list(self.smoke)}

    @property
    def shown_verdict(self) -> str:
        """The verdict as tables show it: never a bare one on smoke-test settings."""
        return f"{self.verdict} ({SMOKE})" if self.smoke else self.verdict


@dataclass(frozen=True)
class Claims:
    """The verdicts, and the claims the studies could not speak to (id -> what it needs)."""

    claims: tuple[Claim, ...]
    not_judged: dict[str, str] = field(default_factory=dict)
    studies: tuple[str, ...] = ()

    def __getitem__(self, claim_id: str) -> Claim:
        for c in self.claims:
            if c.id == claim_id:
                return c
        raise KeyError(claim_id)

    def to_dict(self) -> list[dict[str, Any]]:
        """What `study claims --json` prints: the list of judged claims."""
        return [c.to_dict() for c in self.claims]


@dataclass(frozen=True)
class _Study:
    path: str
    arch: str
    result: StudyResult

    def cells(self, contender: str | None = None, where: Callable[[Cell], bool] = lambda c: True) -> list[int]:
        return [i for i, c in enumerate(self.result.cells)
                if (contender is None or c.contender == contender) and where(c)]


def judge(study_dirs: list[str | Path], *, equivalence_margin: float | None = None) -> Claims:
    """Report each study directory and judge every claim its grid can speak to.

    The studies must be distinct and made on the same data (`records.check_pooled`): a
    UsageError names the two that are not.

    Raises:
        ArgumentError: `study_dirs` is not a non-empty list (or tuple) of paths; one path alone is
            no list of them (a string's characters are no directories).
    """
    wanted = "a non-empty list of study directories' paths, e.g. ['runs/study']"
    if not isinstance(study_dirs, (list, tuple)) or not study_dirs:
        raise ArgumentError("claims.judge", "study_dirs", wanted, study_dirs)
    for d in study_dirs:
        if not isinstance(d, (str, os.PathLike)):
            raise ArgumentError("claims.judge", "study_dirs", wanted, d)
    check_pooled(study_dirs)
    return judge_reports([(str(d), report(d, equivalence_margin=equivalence_margin)) for d in study_dirs])


def judge_reports(reported: list[tuple[str, StudyResult]]) -> Claims:
    """`judge` on studies already reported (`report`), each with the path its evidence names: a
    page that has its study's report judges by it, rather than reading the study again (and with
    the margin that report was made with)."""
    studies = [_Study(path, result.config.get("model", {}).get("arch", "dense"), result) for path, result in reported]
    margin = studies[0].result.equivalence_margin
    judged, not_judged = [], {}
    for rule in _RULES:
        claim = rule(studies, margin)
        if isinstance(claim, str):
            not_judged[rule.__name__.strip("_").replace("_", "-")] = claim
        else:
            used = dict.fromkeys(e.get("study") for e in claim.evidence)
            judged.append(dataclasses.replace(claim, smoke=tuple(
                f"{s.path}: {', '.join(s.result.smoke)}" for s in studies if s.path in used and s.result.smoke)))
    return Claims(tuple(judged), not_judged, tuple(path for path, _ in reported))


# ----------------------------------------------------------------------------- evidence and aggregation

def _cell_evidence(s: _Study, c: Cell) -> dict[str, Any]:
    return {"study": s.path, "arch": s.arch, "contender": c.contender, **c.point,
            "gain_points": 100 * c.mean_difference, "ci95_points": [100 * x for x in c.ci95] if c.ci95 else None,
            "p_max_t": c.p_max_t, "p_holm": c.p_holm, "n_seeds": c.n_seeds, "n_draws": c.n_draws,
            "mde_points": c.mde_points, "p_floor": c.p_floor, "equivalence": c.equivalence["verdict"] if c.equivalence else None,
            "verdict": c.verdict}


def _aggregate(verdicts: list[str], mdes: list[float | None], every: bool) -> tuple[str, float | None]:
    """Cell verdicts (better / worse / equivalent / no evidence) -> the claim's.

    A gain anywhere and a loss nowhere supports; a loss anywhere and a gain nowhere contradicts.
    Both: a claim about every setting (`every`) is contradicted, one about some setting
    supported. All equivalent: equivalent. Otherwise no evidence, with the smallest MDE.
    """
    better, worse = "better" in verdicts, "worse" in verdicts
    if better and worse:
        return ("contradicted" if every else "supported"), None
    if better:
        return "supported", None
    if worse:
        return "contradicted", None
    if verdicts and all(v == "equivalent" for v in verdicts):
        return "equivalent", None
    known = [m for m in mdes if m is not None]
    return "no evidence", (min(known) if known else None)


def _holm(ps: list[float]) -> list[float]:
    order = sorted(range(len(ps)), key=lambda i: ps[i])
    out, running = [0.0] * len(ps), 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (len(ps) - rank) * ps[i]))
        out[i] = running
    return out


def _gaps(pieces: list[tuple[dict, dict[Any, float], dict[Any, float]]], margin: float) -> tuple[list[dict], list]:
    """Compare two cells seed by seed (first minus second, on their shared seeds): the exact
    sign-flip test, Holm over all the comparisons of one claim, TOST and the MDE. Returns the
    evidence, and each comparison's verdict and MDE."""
    rows, tests = [], []
    for label, first, second in pieces:
        shared = sorted(set(first) & set(second))
        gaps = np.array([first[s] - second[s] for s in shared])
        row = {**label, "seeds": len(shared), "gap_points": float(100 * gaps.mean()) if len(shared) else None}
        if len(shared) >= 2:
            row["p"] = inference.sign_flip_test(gaps).p_value
            tests.append(len(rows))
        if len(shared) >= MIN_INTERVAL_UNITS:
            # Student t over the shared seeds: a cell's own interval with one draw.
            row["ci95_points"] = [100 * x for x in inference.crossed_interval(gaps[None, :]).ci95]
            row["equivalence"] = inference.tost(gaps, margin).verdict
            row["p_floor"] = p_floor(len(shared))
            if row["p_floor"] <= ALPHA:  # else no gap, however large, could be significant
                row["mde_points"] = inference.minimum_detectable_effect(float(gaps.std(ddof=1)) * 100,
                                                                        len(shared), alpha=ALPHA, power=POWER).mde
        rows.append(row)
    for i, p in zip(tests, _holm([rows[i]["p"] for i in tests])):
        rows[i]["p_holm"] = p
    verdicts = []
    for r in rows:
        if r.get("p_holm") is not None and r["p_holm"] < ALPHA and r["gap_points"]:
            r["verdict"] = "better" if r["gap_points"] > 0 else "worse"
        elif r.get("equivalence") == "equivalent":
            r["verdict"] = "equivalent"
        else:
            r["verdict"] = "no evidence"
        verdicts.append(r["verdict"])
    return rows, verdicts


def _book_task(c: Cell) -> bool:
    return c.point.get("pair") == BOOK_PAIR and c.point.get("b_train_size") == BOOK_SIZE \
        and c.point.get("reuse_layers", "all") == "all"


def _setting(c: Cell) -> tuple:
    return tuple(sorted((k, str(v)) for k, v in c.point.items() if k != "b_train_size"))


# ----------------------------------------------------------------------------- the claims, in the chapter's order

def _transfer_helps(studies: list[_Study], margin: float):
    rule = ("Every transfer-from-A cell on the book's task (classes 5 vs 6, 200 images, every layer reused; any "
            "preset, any study) is judged by its study-wide max-T p and TOST; a significant gain anywhere and a "
            "loss nowhere supports, a significant loss anywhere contradicts.")
    found = [(s, s.result.cells[i]) for s in studies for i in s.cells("transfer", _book_task)]
    if not found:
        return "needs transfer cells on the book's task: classes 5 vs 6, 200 images, reuse all"
    verdict, mde = _aggregate([c.verdict for _, c in found], [c.mde_points for _, c in found], every=True)
    return Claim("transfer-helps", "Reusing the lower layers of a network trained on a similar task (model A) "
                 "improves task B's accuracy over training from scratch.", "11.2.1", verdict,
                 [_cell_evidence(s, c) for s, c in found], mde, rule)


def _book_result_picked(studies: list[_Study], margin: float):
    rule = ("On the book's task with the book's rates (classes 5 vs 6, 200 images, reuse all, preset book), the share "
            "of runs reaching the book's gain (+2.20 points) and error ratio (3.93) with Clopper-Pearson 95% "
            f"intervals: picked (supported) when both upper bounds are below {TYPICAL}, typical (contradicted) when "
            f"both lower bounds are at least {TYPICAL}. Judged on the book's own setting (its network and epochs) "
            "where a study has it, otherwise on every such cell.")
    found = [(s, s.result.cells[i]) for s in studies
             for i in s.cells("transfer", lambda c: _book_task(c) and c.point.get("preset", "book") == "book"
                              and c.book is not None)]
    if not found:
        return "needs a transfer cell on the book's task with the book's rates (5 vs 6, 200 images, preset book)"
    own = [(s, c) for s, c in found if c.book.get("at_book_point")]
    judged = own or found
    verdicts, evidence = [], []
    for s, c in found:
        b = c.book
        picked = b["ci95_gain"][1] < TYPICAL and b["ci95_ratio"][1] < TYPICAL
        typical = b["ci95_gain"][0] >= TYPICAL and b["ci95_ratio"][0] >= TYPICAL
        one = "supported" if picked else "contradicted" if typical else "no evidence"
        is_judged = any(s is t and c is d for t, d in judged)
        evidence.append({"study": s.path, "arch": s.arch, **c.point, "runs": b["n"],
                         "reach_gain": b["seeds_with_gain_at_least_book"], "ci95_gain": b["ci95_gain"],
                         "reach_ratio": b["seeds_with_ratio_at_least_book"], "ci95_ratio": b["ci95_ratio"],
                         "book_setting": bool(b.get("at_book_point")), "judged": is_judged, "verdict": one})
        if is_judged:
            verdicts.append(one)
    verdict = verdicts[0] if len(set(verdicts)) == 1 else "no evidence"
    return Claim("book-result-picked", "The published 97.05% -> 99.25% (error rate divided by 3.9) was picked from "
                 "many runs: a typical seed does not reach it.", "11.2.1", verdict, evidence, None, rule,
                 measure="share of runs reaching the book's result", threshold=None)


def _other_pairs_and_seeds_do_worse(studies: list[_Study], margin: float):
    rule = ("Every transfer cell at the book's size (200 images, every layer reused; any pair, preset or study): "
            "its mean gain is below the book's +2.20 points when the 95% CI's upper end is, at least the book's "
            "when the lower end is. Any cell below supports; every cell at least the book's contradicts.")
    found = [(s, s.result.cells[i]) for s in studies
             for i in s.cells("transfer", lambda c: c.point.get("b_train_size") == BOOK_SIZE
                              and c.point.get("reuse_layers", "all") == "all")]
    found = [(s, c) for s, c in found if c.ci95]
    if not found:
        return f"needs transfer cells at 200 images with at least {MIN_INTERVAL_UNITS} seeds"
    evidence, below, reach = [], [], []
    for s, c in found:
        lo, hi = (100 * x for x in c.ci95)
        e = _cell_evidence(s, c)
        e["verdict"] = "below the book" if hi < BOOK_GAIN_POINTS else \
            "at least the book" if lo >= BOOK_GAIN_POINTS else "no evidence"
        evidence.append(e)
        below.append(hi < BOOK_GAIN_POINTS)
        reach.append(lo >= BOOK_GAIN_POINTS)
    if any(below):
        verdict, mde = "supported", None
    elif all(reach):
        verdict, mde = "contradicted", None
    else:
        verdict, mde = "no evidence", min((c.mde_points for _, c in found if c.mde_points is not None), default=None)
    return Claim("other-pairs-and-seeds-do-worse", "With another seed or other classes for task B, the gain is "
                 "smaller than the published one: it shrinks, vanishes or reverses.", "11.2.1", verdict, evidence,
                 mde, rule, threshold=(BOOK_GAIN_POINTS, "the book's gain"))


def _dense_poor_cnn_good(studies: list[_Study], margin: float):
    rule = ("Transfer cells at the same point (pair, size, reuse, preset) in a dense and a cnn study: the cnn's "
            "gain minus the dense network's, seed by seed on the shared seeds, by the exact sign-flip test with "
            "Holm over the points, and TOST. The cnn's gain larger somewhere and smaller nowhere supports.")
    dense = [s for s in studies if s.arch == "dense"]
    cnn = [s for s in studies if s.arch == "cnn"]
    if not dense or not cnn:
        return "needs a dense and a cnn study: study claims DENSE_DIR CNN_DIR"
    pieces = []
    for d in dense:
        for c in cnn:
            for j in c.cells("transfer"):
                cc = c.result.cells[j]
                for i in d.cells("transfer", lambda x: x.point == cc.point):
                    dc = d.result.cells[i]
                    pieces.append(({"dense_study": d.path, "cnn_study": c.path, **cc.point,
                                    "dense_gain_points": 100 * dc.mean_difference, "dense_verdict": dc.verdict,
                                    "cnn_gain_points": 100 * cc.mean_difference, "cnn_verdict": cc.verdict},
                                   c.result.by_seed[j], d.result.by_seed[i]))
    if not pieces:
        return "needs transfer cells at the same grid point in the dense and the cnn study"
    evidence, verdicts = _gaps(pieces, margin)
    verdict, mde = _aggregate(verdicts, [e.get("mde_points") for e in evidence], every=True)
    return Claim("dense-poor-cnn-good", "Transfer learning does not work well with small dense networks; it works "
                 "best with deep convolutional networks, whose lower layers learn general features.", "11.2.1",
                 verdict, evidence, mde, rule, measure="the cnn's gain minus the dense network's, points")


def _gain_shrinks_with_data(studies: list[_Study], margin: float):
    rule = ("In each study, transfer's gain at the smallest task-B size minus its gain at the largest, for each "
            "(pair, reuse, preset), seed by seed: exact sign-flip test, Holm over the comparisons, TOST. Larger at "
            "the small size somewhere and smaller nowhere supports.")
    pieces = []
    for s in studies:
        groups: dict[tuple, list[int]] = {}
        for i in s.cells("transfer"):
            groups.setdefault(_setting(s.result.cells[i]), []).append(i)
        for members in groups.values():
            if len(members) < 2:
                continue
            members.sort(key=lambda i: s.result.cells[i].point["b_train_size"])
            small, large = s.result.cells[members[0]], s.result.cells[members[-1]]
            pieces.append(({"study": s.path, "arch": s.arch,
                            **{k: v for k, v in small.point.items() if k != "b_train_size"},
                            "small_size": small.point["b_train_size"], "large_size": large.point["b_train_size"],
                            "small_gain_points": 100 * small.mean_difference,
                            "large_gain_points": 100 * large.mean_difference},
                           s.result.by_seed[members[0]], s.result.by_seed[members[-1]]))
    if not pieces:
        return "needs transfer cells at two or more task-B sizes: --b-train-sizes 50,200,1000"
    evidence, verdicts = _gaps(pieces, margin)
    verdict, mde = _aggregate(verdicts, [e.get("mde_points") for e in evidence], every=True)
    return Claim("gain-shrinks-with-data", "The gain from transfer shrinks as the labelled data for task B grows.",
                 "11.2.1", verdict, evidence, mde, rule,
                 measure="gain at the smallest task-B size minus at the largest, points")


def _pretraining_helps_when_scarce(studies: list[_Study], margin: float):
    rule = ("Every cell of an unsupervised pretraining contender (autoencoder, GAN, RBM, greedy layer-wise) at its "
            "study's smallest task-B size, judged by its study-wide max-T p and TOST: a significant gain for some "
            "method supports (any method may help), a significant loss with no gain contradicts.")
    methods = set(contenders.pretraining_methods())
    found = []
    for s in studies:
        mine = [i for i in s.cells() if s.result.cells[i].contender in methods]
        if not mine:
            continue
        smallest = min(s.result.cells[i].point.get("b_train_size", BOOK_SIZE) for i in mine)
        found += [(s, s.result.cells[i]) for i in mine
                  if s.result.cells[i].point.get("b_train_size", BOOK_SIZE) == smallest]
    if not found:
        return "needs a pretraining contender: --contenders transfer,autoencoder,greedy,gan,rbm"
    verdict, mde = _aggregate([c.verdict for _, c in found], [c.mde_points for _, c in found], every=False)
    return Claim("pretraining-helps-when-scarce", "Unsupervised pretraining (an autoencoder, a GAN, RBMs or greedy "
                 "layer-wise pretraining) on unlabelled images helps when labelled data is scarce.", "11.2.2",
                 verdict, [_cell_evidence(s, c) for s, c in found], mde, rule)


_RULES = (_transfer_helps, _book_result_picked, _other_pairs_and_seeds_do_worse, _dense_poor_cnn_good,
          _gain_shrinks_with_data, _pretraining_helps_when_scarce)
CLAIM_IDS = ("transfer-helps", "book-result-picked", "other-pairs-and-seeds-do-worse", "dense-poor-cnn-good",
             "gain-shrinks-with-data", "pretraining-helps-when-scarce")


# ----------------------------------------------------------------------------- the evidence as figures and in a sentence

# What a piece's verdict says of the claim. Any other verdict a rule gives reads as "not shown":
# the evidence neither holds nor reverses the claim there.
_STANCES = {"better": "holds", "supported": "holds", "below the book": "holds",
            "worse": "reversed", "contradicted": "reversed", "at least the book": "reversed",
            "equivalent": "no difference"}
STANCES = ("holds", "reversed", "no difference", "not shown", "not judged")


@dataclass(frozen=True)
class Point:
    """One figure of a claim's evidence, as its forest plot draws it and its sentence reads it.

    Args:
        where: the piece's settings, (key, words) pairs: "arch" ("cnn"), "contender", then the
            grid's axes ("book rates"); a comparison of two sizes as "sizes".
        study: the study (or studies, "A vs B") the piece comes from.
        what: which of a piece's figures this is, where it has several ("" where one).
        value: the figure; `ci95`, its 95% interval or None; `reference`, where no effect lies (0
            points, or a half of the runs for a share).
        stance: what the piece says of the claim, one of `STANCES`.
        text: the figure and its interval as the page prints them.
        primary: the figure the sentence reads (a piece's first).
    """

    where: tuple[tuple[str, str], ...]
    study: str
    what: str
    value: float
    ci95: tuple[float, float] | None
    reference: float
    stance: str
    text: str
    primary: bool = True

    @property
    def direction(self) -> str:
        """Where the interval lies against `reference`: "above", "below", or "across" (no interval counts as across)."""
        if self.ci95 is None:
            return "across"
        return "above" if self.ci95[0] > self.reference else "below" if self.ci95[1] < self.reference else "across"


def _where(e: dict) -> tuple[tuple[str, str], ...]:
    out = [(k, str(e[k])) for k in ("arch", "contender") if k in e]
    out += [(a.name, a.words(a.from_json(e[a.name]))) for a in cell_axes() if a.name in e]
    if "small_size" in e and "large_size" in e:
        out.append(("sizes", f"{e['small_size']} -> {e['large_size']} images"))
    return tuple(out)


def _study_name(e: dict) -> str:
    return " vs ".join(Path(v).name for k, v in e.items() if (k == "study" or k.endswith("_study")) and v)


def _stance(e: dict) -> str:
    if e.get("judged") is False:
        return "not judged"
    return _STANCES.get(e.get("verdict"), "not shown")


def _ci_text(value: float, ci: list | None, fmt: str) -> str:
    return f"{value:{fmt}}" + (f" [{ci[0]:{fmt}}, {ci[1]:{fmt}}]" if ci else "")


def points(claim: Claim) -> list[Point]:
    """The claim's evidence as figures: a gain or a gap in points with its 95% CI, or a share of
    runs with its Clopper-Pearson interval, whatever rule gave it. A piece with no figure (a
    comparison with no shared seeds) has no point."""
    out = []
    for e in claim.evidence:
        where, study, stance = _where(e), _study_name(e), _stance(e)
        for key in ("gain_points", "gap_points"):
            if e.get(key) is not None:
                ci = e.get("ci95_points")
                out.append(Point(where, study, "", e[key], tuple(ci) if ci else None, 0.0, stance,
                                 _ci_text(e[key], ci, "+.2f")))
                break
        else:
            for i, (reach, ci, what) in enumerate((("reach_gain", "ci95_gain", "the book's gain"),
                                                   ("reach_ratio", "ci95_ratio", "its error ratio"))):
                if e.get(reach) is not None and e.get("runs"):
                    share = e[reach] / e["runs"]
                    out.append(Point(where, study, what, share, tuple(e[ci]) if e.get(ci) else None, TYPICAL,
                                     stance, f"{e[reach]}/{e['runs']} runs" + (f" [{e[ci][0]:.2f}, {e[ci][1]:.2f}]"
                                                                               if e.get(ci) else ""), primary=i == 0))
    return out


def telling_apart(pts: list[Point]) -> list[str]:
    """The settings (keys of `Point.where`) whose words differ between the points: what a label
    needs to name; the rest is the same for every point, said once."""
    return [k for k in dict.fromkeys(k for p in pts for k, _ in p.where)
            if len({dict(p.where).get(k) for p in pts}) > 1]


def _patterns(chosen: set[tuple], universe: set[tuple]) -> list[tuple]:
    """`chosen` settings written as few patterns as can be: a position reads None ("any") where
    every setting of `universe` that matches the rest is chosen. Later positions merge first,
    so "cnn, book rates" and "cnn, notebook rates" read "cnn"."""
    def covers(p: tuple, u: tuple) -> bool:
        return all(a is None or a == b for a, b in zip(p, u))

    current = sorted(chosen, key=str)
    width = len(next(iter(universe))) if universe else 0
    for i in reversed(range(width)):
        groups: dict[tuple, list[tuple]] = {}
        for p in current:
            groups.setdefault(p[:i] + (None,) + p[i + 1:], []).append(p)
        current = []
        for wild, members in groups.items():
            if all(any(covers(m, u) for m in members) for u in universe if covers(wild, u)):
                current.append(wild)
            else:
                current += members
    return current


def _range(values: list[float]) -> str:
    lo, hi = min(values), max(values)
    return f"{lo:+.2f}" if f"{lo:+.2f}" == f"{hi:+.2f}" else f"{lo:+.2f} to {hi:+.2f}"


def _and(parts: list[str]) -> str:
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


def sentence(claim: Claim) -> str:
    """Where the claim holds and where it does not, in one sentence built from its evidence:
    the pieces grouped by what they say of it (holds, reversed, no difference, not shown, not
    judged), each group named by the settings that tell the pieces apart, with its figures.
    A setting measured in several studies that disagree is named in each group, "in k of n
    studies"."""
    pts = [p for p in points(claim) if p.primary]
    if not pts:
        return "No piece of evidence has a figure."
    keys = telling_apart(pts)
    at = {id(p): tuple(dict(p.where).get(k) for k in keys) for p in pts}
    universe = set(at.values())
    by_setting: dict[tuple, list[Point]] = {}
    for p in pts:
        by_setting.setdefault(at[id(p)], []).append(p)
    clauses = []
    for stance in STANCES:
        mine = [p for p in pts if p.stance == stance]
        if not mine:
            continue
        pure = {s for s, ps in by_setting.items() if all(p.stance == stance for p in ps)}
        labels = []
        for pattern in _patterns(pure, universe):
            members = [p for p in mine if all(a is None or a == b for a, b in zip(pattern, at[id(p)]))]
            labels.append((_named(pattern, len(universe)), members, ""))
        for s in sorted({at[id(p)] for p in mine} - pure, key=str):
            members = [p for p in mine if at[id(p)] == s]
            labels.append((_named(s, len(universe)), members, f" in {len(members)} of {len(by_setting[s])} studies"))
        clauses.append(f"{stance} for " + _and([f"{label}{some} ({_figures(members)})"
                                               for label, members, some in labels]))
    if claim.threshold:  # "holds" then reads against it, not against no gain
        clauses.append(f"each held against {claim.threshold[1]}, {claim.threshold[0]:+.2f} points")
    text = "; ".join(clauses)
    return text[:1].upper() + text[1:] + _unseen(claim) + "."


def _named(pattern: tuple, settings: int) -> str:
    return " ".join(v for v in pattern if v is not None) or ("every setting" if settings > 1 else "the setting measured")


def _figures(members: list[Point]) -> str:
    if members[0].reference == 0.0:
        return f"{_range([p.value for p in members])} points"
    shares = sorted({f"{100 * p.value:.0f}%" for p in members}, key=lambda t: float(t[:-1]))
    reach = f" reach {members[0].what}" if members[0].what else ""
    return (shares[0] if len(shares) == 1 else f"{shares[0]} to {shares[-1]}") + f" of runs{reach}"


def _unseen(claim: Claim) -> str:
    """With "no evidence": the gains the evidence could have missed."""
    if claim.verdict != "no evidence":
        return ""
    if claim.mde is not None:
        return f"; gains below {claim.mde:.2f} points would have gone unseen"
    floors = [e.get("p_floor") for e in claim.evidence]
    if floors and all(f is not None and f > ALPHA for f in floors):
        return f"; too few seeds for p < {ALPHA:g} (the smallest p possible is {min(floors):.2g})"
    return ""


# ----------------------------------------------------------------------------- output

def _summary(claim: Claim) -> str:
    """The evidence in a few words: the figures the rule read, one piece per clause."""
    parts = []
    studies = {e.get("study") for e in claim.evidence}
    for e in claim.evidence:
        parts.append(_piece(e) if len(studies) < 2 else f"[{Path(e['study']).name}] {_piece(e)}")
    return "; ".join(parts)


def _units(e: dict) -> str:
    seeds, draws = e.get("n_seeds"), e.get("n_draws") or 1
    return "" if seeds is None else f" over {seeds} seeds" + (f" x {draws} draws" if draws > 1 else "")


def _piece(e: dict) -> str:
    """One piece of evidence in a few words."""
    where = ", ".join(str(e[k]) for k in ("arch", "contender") if k in e)
    point = ", ".join(f"{e[k]}" for k in ("preset",) if k in e)
    if "gap_points" in e:
        pair = f"{e['pair'][0]} vs {e['pair'][1]}" if "pair" in e else ""
        size = f"n={e['b_train_size']}" if "b_train_size" in e else f"n={e['small_size']} - n={e['large_size']}"
        where = ", ".join(x for x in (e.get("arch"), pair, size, point) if x)
        p = "" if e.get("p_holm") is None else f", Holm p {e['p_holm']:.2g}"
        return (f"{where}: no shared seeds" if e["gap_points"] is None else
                f"{where}: gap {e['gap_points']:+.2f} points{p} ({e['verdict']})")
    if "reach_gain" in e:
        judged = "" if e["judged"] else " (not judged: not the book's own setting)"
        return (f"{e['arch']}, {point}{judged}: {e['reach_gain']}/{e['runs']} reach the gain "
                f"(CI {e['ci95_gain'][0]:.2f}-{e['ci95_gain'][1]:.2f}), {e['reach_ratio']}/{e['runs']} the "
                f"error ratio (CI {e['ci95_ratio'][0]:.2f}-{e['ci95_ratio'][1]:.2f})")
    pair = e.get("pair")
    p = "" if e["p_max_t"] is None else f", max-T p {e['p_max_t']:.2g}"
    return (f"{where}, {pair[0]} vs {pair[1]}, n={e.get('b_train_size')}, {point}: "
            f"{e['gain_points']:+.2f} points{_units(e)}{p} ({e['verdict']})")


def table(found: Claims) -> Group:
    """The claims as a rich table (verdict, claim, the evidence in a few words), then the notes:
    what could not be judged, and how the verdicts were reached."""
    # Left-justified: off a terminal the console is as wide as the longest line, and a centred
    # title would sit thousands of columns to the right.
    smoke = sorted({s for c in found.claims for s in c.smoke})
    out = Table(title=smoke_title(smoke) + f"The chapter's claims on {', '.join(found.studies)}", title_justify="left")
    for name in ("claim", "verdict", "evidence", "MDE, pts"):
        out.add_column(name, justify="right" if name.startswith("MDE") else "left")
    for c in found.claims:
        out.add_row(f"{c.id} ({c.section}): {c.claim}", c.shown_verdict, _summary(c),
                    "-" if c.mde is None else f"{c.mde:.2f}")
    notes = [smoke_note([s]) for s in smoke]
    notes += [f"Not judged: {k} ({why})." for k, why in found.not_judged.items()]
    notes.append("Exploratory verdicts by the rules of docs/claims.md (written after the committed studies were "
                 "seen); MDE: the smallest gain the grid would have detected with 80% power, where the verdict "
                 "is 'no evidence'.")
    out.caption = "\n".join(notes)
    return framed(out)  # a table of no claims is 40 columns wide: its notes are not folded into it


def markdown(found: Claims) -> str:
    """The claims as a Markdown table, ready for a README: each verdict, and where the claim
    holds and where it does not, with the figures."""
    smoke = sorted({s for c in found.claims for s in c.smoke})
    rows = [f"**{smoke_note([s])}.** Its numbers say nothing about transfer.\n" for s in smoke]
    rows += ["| claim | verdict | where it holds, where it does not |", "|---|---|---|"]
    for c in found.claims:
        rows.append(f"| {c.claim} ({c.section}, `{c.id}`) | **{c.shown_verdict}** | {sentence(c)} |")
    rows += [""] + [f"Not judged: `{k}` ({why})." for k, why in found.not_judged.items()]
    return "\n".join(rows).rstrip() + "\n"
