"""A study's runs as one tidy table: a CSV row per run, a column per axis, score and fingerprint.

Tidy: one header row, one value per cell, every row the same columns, so pandas
(`pd.read_csv`), R or a spreadsheet reads it as it is. The runs are those the report counts
(`records.read_records` under the study's own settings, every shard merged). Columns, in order:

- `id`, then one column per declared axis (`axes.declared()`: seed, pair, b_train_size,
  data_seed, reuse_layers, preset, and any axis declared later), then `contender`;
- the contender's scores (`test_accuracy`, `test_loss`, any other its results line carries, e.g.
  `linear_probe`, `diverged`), the baseline's with a `baseline_` prefix, and `gain` (the
  contender's test accuracy less the baseline's);
- `frozen_learning_rate`, `fine_tune_learning_rate`; `seconds_PART` per part timed;
  `finished`;
- `fingerprint`, `settings_fingerprint`, `b_indices_sha256`, `built_on_NEED_fingerprint` per
  need; `threads`, `stack_slot`;
- `sha256_FILE` per dataset file study.json records (the same on every row).

A value a run lacks is empty. A list is written as its items joined by ":" (a pair: 5:6); a
boolean as true or false; a number as Python writes it, so it reads back exactly.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

from fmtransfer.io import output_file, write_text_atomic
from fmtransfer.study.axes import declared
from fmtransfer.study.records import RunRecord, config_from, read_meta, read_records


def cell(value: Any) -> str:
    """A value as one CSV cell (see the module's docstring)."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return ":".join(cell(v) for v in value)
    if isinstance(value, dict):
        return json.dumps(value, sort_keys=True)
    return str(value)


def _scalars(d: Any) -> dict[str, Any]:
    return {k: v for k, v in (d or {}).items() if not isinstance(v, (dict, list))} if isinstance(d, dict) else {}


def rows(study_dir: str | Path) -> tuple[list[str], list[dict[str, str]]]:
    """(columns, rows) of the study in `study_dir`: one row per run the report counts."""
    study_dir = Path(study_dir)
    meta = read_meta(study_dir)
    records, _ = read_records(study_dir, config_from(meta["config"], study_dir))
    dataset = meta.get("dataset") if isinstance(meta.get("dataset"), dict) else {}
    hashes = dataset.get("sha256") if isinstance(dataset.get("sha256"), dict) else {}
    axes = [a.name for a in declared()]
    made = [_row(r, axes) for r in records]
    for row in made:
        row.update({f"sha256_{name}": digest for name, digest in sorted(hashes.items())})
    fixed = ["id", *axes, "contender"]
    seen: dict[str, None] = {}
    for row in made:
        seen.update({k: None for k in row if k not in fixed})
    order = ["test_accuracy", "test_loss", "baseline_test_accuracy", "baseline_test_loss", "gain"]
    rest = [k for k in seen if k not in order]
    columns = fixed + order + sorted(rest, key=_rank)  # a stable sort: first seen first within a family
    return columns, [{c: cell(row.get(c)) for c in columns} for row in made]


# Column families after the scores, in this order; within one, as first seen.
_FAMILIES = ("baseline_", "frozen_", "fine_tune_", "seconds_", "finished", "fingerprint", "settings_",
             "b_indices", "built_on_", "threads", "stack_slot", "sha256_")


def _rank(column: str) -> int:
    return next((i for i, prefix in enumerate(_FAMILIES) if column.startswith(prefix)), -1)


def _row(r: RunRecord, axes: list[str]) -> dict[str, Any]:
    key = r.key.to_json()
    row: dict[str, Any] = {"id": r.id, **{name: key.get(name) for name in axes}, "contender": r.contender}
    row.update(_scalars(r.result.to_dict()))
    row.update({f"baseline_{k}": v for k, v in _scalars(r.baseline.to_dict()).items()})
    row["gain"] = r.gain
    if isinstance(r.learning_rates, list) and len(r.learning_rates) == 2:
        row["frozen_learning_rate"], row["fine_tune_learning_rate"] = r.learning_rates
    row.update({f"seconds_{part}": v for part, v in _scalars(r.seconds).items()})
    row["finished"] = r.finished
    row["fingerprint"] = r.fingerprint
    row["settings_fingerprint"] = r.settings
    row["b_indices_sha256"] = r.b_indices_sha256
    for need, record in (r.built_on or {}).items() if isinstance(r.built_on, dict) else ():
        if isinstance(record, dict) and record.get("fingerprint") is not None:
            row[f"built_on_{need.replace(':', '_')}_fingerprint"] = record["fingerprint"]
    if isinstance(r.trained_with, dict):
        row.update({k: v for k, v in r.trained_with.items() if k in ("threads", "stack_slot")})
    return row


def to_csv(study_dir: str | Path) -> tuple[str, int]:
    """The study's table as CSV text, and its number of rows."""
    columns, found = rows(study_dir)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(found)
    return buffer.getvalue(), len(found)


def export_csv(study_dir: str | Path, path: str | Path) -> int:
    """Write the study's table to `path` atomically (`io.write_text_atomic`), through the output
    guard (`io.output_file`: never over or inside the study, nor onto a folder, FIFO or device);
    return its rows."""
    target = output_file(path, keep_out=[study_dir])
    text, count = to_csv(study_dir)
    write_text_atomic(target, text)
    return count
