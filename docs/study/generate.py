"""Write the project's findings from its committed studies: nothing in them is typed by hand.

    python docs/study/generate.py [--from NAME=DIR ...]

Each committed study is a folder docs/study/records/NAME holding the study's study.json, its
results files (its records, the runs' scores and fingerprints) and the runs' stored test
predictions, a few KB each (the models are not kept). From
them this script writes:

- docs/study/report-NAME.json: `fmtransfer study report --json` of the study;
- docs/study/records/NAME/plots/: the study's summary plots;
- docs/study/claims.json: `fmtransfer study claims --json` over every committed study;
- docs/study/claims/ID.svg: each claim's evidence as a forest plot;
- docs/findings.md: the claims (verdict, where each holds and where not, its plot), then each
  study's `study report --markdown`;
- README.md: the claims table, between its `<!-- claims:start -->` and `<!-- claims:end -->`.

`--from NAME=DIR` first copies a finished study's records and predictions from DIR (a `--run` directory) into
docs/study/records/NAME. Every source is checked before anything is written: it must be the
study NAME stands for (the grid and settings of its command, `Committed.settings`), finished,
made on the committed studies' data and distinct from them, its records consistent with its
stored predictions, and not docs/study/records/NAME itself; otherwise one line says why and the
script exits 2 with nothing changed. Each is copied into a new folder, then renamed into place.
tests/test_findings.py regenerates everything in memory and checks that the committed files are
what this script writes; tests/test_evidence_checks.py checks the refusals.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
STUDY = ROOT / "docs" / "study"
RECORDS = STUDY / "records"
FOREST = STUDY / "claims"  # a forest plot per claim, ID.svg
START, END = "<!-- claims:start -->", "<!-- claims:end -->"
# Said wherever the verdicts are shown: their rules were written after these studies were seen.
EXPLORATORY = ("These verdicts are exploratory. The rules that give them (version 1, "
               "[docs/claims.md]({claims})) and the choice of contenders they judge were written and revised "
               "after the committed studies' results had been seen, so they describe these studies; they are "
               "not a confirmatory test of the chapter's claims.")
BOOK_TOML = ROOT / "configs" / "book.toml"  # every committed study's --config
SEEDS, TEN = "study.seeds", list(range(42, 52))  # --seeds 10


@dataclass(frozen=True)
class Committed:
    name: str
    title: str
    command: str  # what made it, run from the repository's root
    plots: tuple[str, ...]  # the summary plots kept (per-cell plots are left in the run directory)
    # What the command sets beyond configs/book.toml: the grid (and settings) the name stands for,
    # which a study given with --from must have (`check_source`).
    settings: dict = field(default_factory=dict)
    # Whether `study claims` judges it. Rules version 1 know untuned cells only, and the studies
    # added after them (tuned cells, the literature's methods) wait for rules written before
    # their data is seen (docs/claims.md); their reports are on docs/findings.md all the same.
    judged: bool = True


FIVE = ["transfer", "bss", "surgical", "lwf", "co-tuning", "soup"]
STUDIES = (
    Committed("study-book", "Transfer from A over pairs, sizes and presets (dense)",
              "fmtransfer study --config configs/book.toml --run runs/study-book --seeds 10 \\\n"
              "    --pairs 5:6,0:2,7:9 --b-train-sizes 50,200,1000 --presets book,notebook",
              ("gain-vs-size.png",),
              {SEEDS: TEN, "study.pairs": [[5, 6], [0, 2], [7, 9]], "study.b_train_sizes": [50, 200, 1000],
               "study.presets": ["book", "notebook"]}),
    Committed("study-book-draws", "Transfer from A over pairs, sizes and presets, seeds x draws of the labelled sample (dense)",
              "fmtransfer study --config configs/book.toml --run runs/study-book-draws --seeds 10 --data-seeds 3 \\\n"
              "    --pairs 5:6,0:2,7:9 --b-train-sizes 50,200,1000 --presets book,notebook",
              ("gain-vs-size.png",),
              {SEEDS: TEN, "study.data_seeds": [0, 1, 2], "study.pairs": [[5, 6], [0, 2], [7, 9]],
               "study.b_train_sizes": [50, 200, 1000], "study.presets": ["book", "notebook"]}),
    Committed("leaderboard-dense-draws", "Every contender on the book's cell, seeds x draws of the labelled sample (dense)",
              "fmtransfer study --config configs/book.toml --run runs/leaderboard-dense-draws --seeds 10 --data-seeds 5 \\\n"
              "    --presets book,notebook --contenders all",
              ("contenders.png",),
              {SEEDS: TEN, "study.data_seeds": [0, 1, 2, 3, 4], "study.presets": ["book", "notebook"],
               "contenders": ["all"]}),
    Committed("cnn-draws", "Transfer from A, the contenders built on model A, autoencoder, greedy and GAN pretraining, "
              "on the book's cell, seeds x draws of the labelled sample (cnn)",
              "fmtransfer study --config configs/book.toml --arch cnn --run runs/cnn-draws --seeds 10 --data-seeds 5 \\\n"
              "    --presets book,notebook --contenders transfer,lp-ft,l2-sp,gradual,reinit,autoencoder,greedy,gan",
              ("contenders.png",),
              {"model.arch": "cnn", SEEDS: TEN, "study.data_seeds": [0, 1, 2, 3, 4],
               "study.presets": ["book", "notebook"],
               "contenders": ["transfer", "lp-ft", "l2-sp", "gradual", "reinit", "autoencoder", "greedy", "gan"]}),
    Committed("tuned-book-valid", "The book's cell, the baseline and transfer from A each tuned with 16 trials a "
              "seed, selected on task B's validation images (dense)",
              "fmtransfer study --config configs/book.toml --run runs/tuned-book-valid --seeds 10 --tune 16 "
              "--tune-on valid",
              ("budget-pair5v6-n200-reuseall-book.png",),
              {SEEDS: TEN, "tune.trials": 16, "tune.on": "valid"}, judged=False),
    Committed("tuned-book-cv5", "The book's cell, the baseline and transfer from A each tuned with 16 trials a "
              "seed, selected by 5-fold cross-validation inside the 200 labelled images (dense)",
              "fmtransfer study --config configs/book.toml --run runs/tuned-book-cv5 --seeds 10 --tune 16 "
              "--tune-on cv:5 --jobs 2",
              ("budget-pair5v6-n200-reuseall-book.png",),
              {SEEDS: TEN, "tune.trials": 16, "tune.on": "cv:5"}, judged=False),
    Committed("methods-dense-draws", "Five fine-tuning methods from the transfer literature (BSS, surgical fine-tuning, "
              "LwF, Co-Tuning, greedy soup) beside transfer from A, seeds x draws of the labelled sample (dense)",
              "fmtransfer study --config configs/book.toml --run runs/methods-dense-draws --seeds 10 --data-seeds 5 \\\n"
              "    --presets book,notebook --contenders " + ",".join(FIVE) + " --jobs 2",
              ("contenders.png",),
              {SEEDS: TEN, "study.data_seeds": [0, 1, 2, 3, 4], "study.presets": ["book", "notebook"],
               "contenders": FIVE}, judged=False),
)


def committed() -> list[Committed]:
    """The studies whose records are committed, in STUDIES' order."""
    return [s for s in STUDIES if (RECORDS / s.name / "study.json").is_file()]


def relative(path: Path) -> str:
    return path.resolve().relative_to(ROOT).as_posix()


def reports() -> dict[str, dict]:
    """Each committed study's report, as `study report --json` prints it."""
    from fmtransfer.study import report

    return {s.name: report(relative(RECORDS / s.name)).to_dict() for s in committed()}


def claims():
    from fmtransfer.study.claims import judge

    return judge([relative(RECORDS / s.name) for s in committed() if s.judged])


def forest_plots(found) -> dict[str, str]:
    """Each judged claim's forest plot: its file name in docs/study/claims/ -> the SVG."""
    from fmtransfer.study.forest import svg

    return {f"{c.id}.svg": svg(c) + "\n" for c in found.claims}


def readme_block(found) -> str:
    """The README's claims table: each claim's verdict, where it holds and where not, and its
    forest plot; the rules and each study's report are on docs/findings.md."""
    from fmtransfer.study.claims import sentence

    rows = ["| the chapter says | verdict: where it holds, where it does not | evidence (95% intervals) |",
            "|---|---|---|"]
    for c in found.claims:
        rows.append(f"| {c.claim} ({c.section}, `{c.id}`) | **{c.verdict}**: {sentence(c)} | "
                    f'<img src="docs/study/claims/{c.id}.svg" width="300" alt="forest plot: {c.id}"> |')
    rows += [""] + [f"Not judged: `{k}` ({why})." for k, why in found.not_judged.items()]
    return (START + "\n" + "\n".join(rows) + "\n\nGenerated by `python docs/study/generate.py`: `fmtransfer "
            "study claims` over the committed studies, by the rules of [docs/claims.md](docs/claims.md); "
            "the evidence for each verdict, and each study's report, are in [docs/findings.md](docs/findings.md). "
            + EXPLORATORY.format(claims="docs/claims.md") + "\n" + END)


def claims_markdown(found) -> list[str]:
    """The claims on docs/findings.md: per claim its verdict, where it holds and where not, and its forest plot."""
    from fmtransfer.study.claims import sentence

    out = ["Each claim's verdict by its rule, where it holds and where it does not, and the figures the rule "
           "read: each with its 95% interval, blue where the interval lies above no effect, red below it, grey "
           "across it.", ""]
    for c in found.claims:
        out += [f"### {c.claim}", "", f"Section {c.section}, `{c.id}`: **{c.verdict}**. {sentence(c)}", "",
                f"![forest plot: {c.id}](study/claims/{c.id}.svg)", "", f"Rule: {c.rule}", ""]
    out += [f"Not judged: `{k}` ({why})." for k, why in found.not_judged.items()]
    return out


def findings(found) -> str:
    """docs/findings.md: the claims, then every committed study's report in Markdown."""
    from fmtransfer.study import markdown as report_markdown, report

    out = ["# What we found", "",
           "Everything on this page is written by `python docs/study/generate.py` from the studies "
           "committed under `docs/study/records/` (each study's `study.json` and its records: every "
           "run's scores and fingerprints). Nothing here is typed by hand; `tests/test_findings.py` "
           "checks that this page is what the script writes. The verdicts follow the rules "
           "of [the claims page](claims.md), the statistics those of [the statistics page](statistics.md).",
           "", EXPLORATORY.format(claims="claims.md"),
           "", "## The chapter's claims", "", *claims_markdown(found), ""]
    for s in committed():
        result = report(relative(RECORDS / s.name))
        d = result.to_dict()
        out += [f"## {s.title}", "",
                f"Study `docs/study/records/{s.name}`: {d['runs_finished']} of {d['runs_in_grid']} runs; "
                f"report [`docs/study/report-{s.name}.json`](study/report-{s.name}.json). Made by:", "",
                "```sh", "# (not run by the tests: a full study, an hour or more on a 2-core CPU)",
                s.command, f"fmtransfer study report runs/{s.name} --markdown    # the tables below", "```", "",
                report_markdown(result).strip(), ""]
        out += [f"![{s.title}: {p}](study/records/{s.name}/plots/{p})" for p in s.plots
                if (RECORDS / s.name / "plots" / p).is_file()]
        out += [""]
    out += ["## Earlier reports", "",
            "Reports made by fmtransfer 0.4 with one draw of the labelled sample and the statistics of "
            "that version (Wilcoxon's p, Holm within a setting), kept as they were: "
            + ", ".join(f"[`{p.name}`](study/{p.name})" for p in sorted(STUDY.glob("report*.json"))
                        if not any(p.name == f"report-{s.name}.json" for s in committed())) + ".", ""]
    out += [f"![{p.stem} (fmtransfer 0.4)](study/{p.name})" for p in sorted(STUDY.glob("*.png"))] + [""]
    return "\n".join(out)


def _plots(s: Committed) -> None:
    from fmtransfer.study import report
    from fmtransfer.study.reporting import save_figure, study_figures

    study_dir = relative(RECORDS / s.name)
    out = RECORDS / s.name / "plots"
    if out.exists():
        shutil.rmtree(out)
    out.mkdir()
    for name, fig in study_figures(study_dir, report(study_dir)):
        if name in s.plots:
            save_figure(fig, out / name)


class Refused(Exception):
    """A --from source this script will not copy: its message is the one line printed."""


def expected(s: Committed):
    """The config the name stands for: configs/book.toml with the command's options."""
    from fmtransfer.config import load_config

    return load_config(BOOK_TOML, s.settings)


# The config keys that decide a study's runs and their verdicts, said first when they differ;
# `study.stack`, `study.max_seeds` and `study.target_halfwidth` say only how it was run.
_GRID_KEYS = ("model.arch", "contenders", "study.seeds", "study.data_seeds", "study.pairs", "study.b_train_sizes",
              "study.reuse_layers", "study.presets", "study.equivalence_margin")
_HOW = ("study.stack", "study.max_seeds", "study.target_halfwidth")


def _grid(cfg) -> tuple[set[str], dict[str, str]]:
    """A config's run ids, and what each contender's runs depend on beyond them."""
    from fmtransfer.study.axes import grid, study_contenders
    from fmtransfer.study.records import run_fingerprint

    names = study_contenders(cfg)
    return {k.run_id(c) for k in grid(cfg) for c in names}, {c: run_fingerprint(cfg, c) for c in names}


def check_source(s: Committed, directory: Path) -> None:
    """A --from study is the study the name stands for (its grid and settings), in a directory
    that is not the one it would replace; `Refused` says why not."""
    from fmtransfer.config import flatten
    from fmtransfer.study.records import config_from, read_meta, recorded_dataset

    target = (RECORDS / s.name).resolve()
    here = directory.resolve()
    if here == target or target in here.parents or here in target.parents:
        how = "is" if here == target else "lies inside" if target in here.parents else "holds"
        raise Refused(f"it {how} docs/study/records/{s.name}, the folder --from would replace: give the "
                      f"study's own --run directory, or leave --from out to regenerate from the committed records")
    meta = read_meta(directory)
    theirs, ours = config_from(meta["config"], directory), expected(s)
    if _grid(theirs) != _grid(ours):
        a, b = flatten(theirs.to_dict()), flatten(ours.to_dict())
        keys = [*_GRID_KEYS, *(k for k in b if k not in _GRID_KEYS and k not in _HOW)]
        key = next((k for k in keys if a.get(k) != b.get(k)), None)
        said = f"{key} {a.get(key)!r}, {s.name} has {b.get(key)!r}" if key else "other runs"
        raise Refused(f"{directory} is not the {s.name} study: it has {said} (made by: {' '.join(s.command.split())})")
    if recorded_dataset(directory) is None:
        raise Refused(f"{directory}/study.json records no dataset: its runs' data cannot be checked")


def check_records(s: Committed, directory: Path) -> None:
    """A --from study's records are every run of its grid, each consistent with its stored
    predictions; `Refused` (or the library's DataError) says why not."""
    from fmtransfer.study import report

    result = report(directory)  # reads every record against its stored predictions
    if result.skipped:
        why = ", ".join(f"{n} {reason}" for reason, n in result.skipped.items())
        raise Refused(f"{directory}: results lines that are not runs of its study ({why}); remove them first")
    if result.runs_finished != result.runs_in_grid:
        raise Refused(f"{directory} holds {result.runs_finished} of the {result.runs_in_grid} runs of {s.name}: "
                      "finish the study first (run its command again: it resumes)")


def _install(name: str, directory: Path) -> None:
    """Copy a checked study into docs/study/records/NAME whole or not at all: into a new folder
    beside it, then renamed over the old one."""
    import tempfile

    target = RECORDS / name
    RECORDS.mkdir(parents=True, exist_ok=True)
    new = Path(tempfile.mkdtemp(prefix=f".{name}.new-", dir=RECORDS))
    try:
        for f in [directory / "study.json", *sorted(directory.glob("results*.jsonl"))]:
            shutil.copy2(f, new / f.name)
        if (directory / "predictions").is_dir():  # the test-image statistics read them
            shutil.copytree(directory / "predictions", new / "predictions")
    except BaseException:
        shutil.rmtree(new, ignore_errors=True)
        raise
    old = None
    if target.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{name}.old-", dir=RECORDS))
        target.rename(old / name)
    try:
        new.rename(target)
    except BaseException:
        if old is not None:
            (old / name).rename(target)  # the committed study back where it was
        shutil.rmtree(new, ignore_errors=True)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def sources(given: list[str]) -> dict[str, Path]:
    """The --from arguments by name, every one checked before any is copied: its grid
    (`check_source`), its data and distinctness beside the committed studies it joins
    (`records.check_pooled`), its records (`check_records`); `Refused` names the first that fails."""
    from fmtransfer.errors import FmtError
    from fmtransfer.study.records import check_pooled

    by_name = {s.name: s for s in STUDIES}
    chosen: dict[str, Path] = {}
    for source in given:
        name, _, directory = source.partition("=")
        if name not in by_name or not directory or not Path(directory, "study.json").is_file():
            raise Refused(f"--from {source}: want NAME=DIR, NAME one of {', '.join(sorted(by_name))} and DIR a study")
        if name in chosen:
            raise Refused(f"--from {source}: {name} is given twice")
        chosen[name] = Path(directory)

    def each(check) -> None:
        for name, directory in chosen.items():
            try:
                check(by_name[name], directory)
            except (Refused, FmtError) as e:
                raise Refused(f"--from {name}={directory}: {e}") from None

    # The cheap checks of every source first, then their data, and last the reading of every record.
    each(check_source)
    if chosen:
        try:
            check_pooled([chosen.get(s.name, RECORDS / s.name) for s in STUDIES
                          if s.name in chosen or (RECORDS / s.name / "study.json").is_file()])
        except FmtError as e:
            raise Refused(f"--from: {e}") from None
    each(check_records)
    return chosen


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--from", dest="sources", action="append", default=[], metavar="NAME=DIR",
                        help="copy a finished study's study.json, results files and predictions from DIR first")
    args = parser.parse_args(argv)
    from fmtransfer.errors import FmtError

    try:
        chosen = sources(args.sources)
    except Refused as e:
        print(f"generate.py: {e}", file=sys.stderr)
        return 2
    for name, directory in chosen.items():
        _install(name, directory)
    os.chdir(ROOT)  # the reports name their study by its path from the repository's root
    try:
        write_all()
    except FmtError as e:
        print(f"generate.py: {e}", file=sys.stderr)
        return e.exit_code
    return 0


def write_all() -> None:
    """Every generated file, from the committed studies."""
    from fmtransfer.io import write_text_atomic

    for s in committed():
        _plots(s)
    for name, d in reports().items():
        write_text_atomic(STUDY / f"report-{name}.json", json.dumps(d, indent=2) + "\n")
    found = claims()
    write_text_atomic(STUDY / "claims.json", json.dumps(found.to_dict(), indent=2) + "\n")
    FOREST.mkdir(exist_ok=True)
    plots = forest_plots(found)
    for stale in set(p.name for p in FOREST.glob("*.svg")) - set(plots):
        (FOREST / stale).unlink()
    for name, text in plots.items():
        write_text_atomic(FOREST / name, text)
    write_text_atomic(ROOT / "docs" / "findings.md", findings(found))
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    head, _, rest = readme.partition(START)
    _, _, tail = rest.partition(END)
    write_text_atomic(ROOT / "README.md", head + readme_block(found) + tail)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
