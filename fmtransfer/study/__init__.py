"""`fmtransfer study`: is a gain real? A grid of complete experiments, and its statistics.

A *run* is one contender at one point of the grid: seed x task-B class pair x task-B training
size x reuse depth x learning-rate preset, paired with the baseline of the same seed, pair and
size (same split, same seed, same test images). A *cell* is every run sharing all but the seed;
its statistics are paired over seeds.

What runs share is made once and kept in the study directory: model A per (seed, pair), each
pretrained encoder per seed (pretraining never sees labels, so it does not depend on the pair),
the baseline per (seed, pair, size). Each finished run is appended as one JSON line, so an
interrupted study resumes where it stopped. `shard` gives each job of an array every N-th (seed,
pair) group, written to its own results file; `report` merges them.

One job per module: `axes` (the grid's axes, each declared once; its points and shards),
`records` (typed results lines, read and appended; their fingerprints; study.json), `cache`
(model A and encoders shared by runs), `runner` (running the grid here or in workers), `pool`
(the worker processes, which never hang), `stats` (which tests a cell gets, Holm, max-T, the
best set), `inference` (the tests and intervals), `reporting` (the report, its Markdown and
plots), `claims` (the chapter's claims judged on the report), `export` (one tidy CSV row per run).
"""

from fmtransfer.study.axes import (
    Axis, RunKey, check_grid, declare, declared, grid, parse_shard, shard, study_contenders, withdraw,
)
from fmtransfer.study.records import (
    STUDY_JSON, BadRecord, RunRecord, Scores, append_record, append_result, check_study_dir,
    load_records, load_results, read_records, read_results, run_fingerprint, settings_fingerprint,
)
from fmtransfer.study.reporting import StudyResult, leaderboard, markdown, plot, report, table
from fmtransfer.study.runner import (
    STACK_AUTO, Precision, parse_jobs, resolve_stack, run_study, run_until_precise,
)
from fmtransfer.study.stats import BOOK, Cell, book_placement, holm, paired_stats

__all__ = ["Axis", "RunKey", "check_grid", "declare", "declared", "grid", "parse_shard", "shard", "study_contenders",
           "withdraw", "STUDY_JSON", "BadRecord", "RunRecord", "Scores", "append_record", "append_result",
           "check_study_dir", "load_records", "load_results", "read_records", "read_results",
           "run_fingerprint", "settings_fingerprint", "StudyResult", "leaderboard", "markdown", "plot", "report",
           "table", "STACK_AUTO", "Precision", "run_until_precise", "parse_jobs", "resolve_stack", "run_study",
           "BOOK", "Cell", "book_placement", "holm",
           "paired_stats"]
