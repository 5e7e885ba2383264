"""TensorBoard event files of trained models, written from their epoch records (`curves.Curves`).

Events are written after a model (or a study's run) has finished, from the same records its JSON
keeps, so training never sees a writer: stacked and unstacked models, every contender, write the
same events, and no trained number or fingerprint depends on `--tensorboard` (it is an output,
not a setting).

A model is one TensorBoard run, a folder of one event file: per epoch, a scalar of each score
its record carries (`loss`, `accuracy`, `val_loss`, `val_accuracy`, a method's own), its phase's
`learning_rate` and `phase` (the phase's index), steps counting the epochs across phases; and
at each phase's first epoch, the phase's name as text (`phase_name`).

Runs are named so that TensorBoard's run filter finds them:
- a run directory's models: DIR/model_a, DIR/baseline, DIR/<contender>, DIR/pretrain_<method>;
- a study's: DIR/<cell>/<unit>/<model>, the cell the run id's parts of every axis but the pooled
  ones (pair5v6-n200-reuseall-book), the unit those of the pooled ones (seed42, seed42-draw3).

TensorFlow writes the files itself (`tf.summary.write`), with the metadata TensorBoard's
scalar and text dashboards read; TensorBoard itself (the [tensorboard] extra) is needed only to
look at them. Each folder's event file is written beside it and renamed into place, replacing
the folder's earlier events: a model written again shows once, never twice.
"""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from fmtransfer.curves import Curves, is_number, from_phases, from_record, of_run_dir
from fmtransfer.errors import UsageError
from fmtransfer.io import atomic_path, marked_folder

EVENTS = "events.out.tfevents.*"


def check_target(directory: str | Path) -> Path:
    """`directory` as a place for event files: a writable folder, made if missing. Checked before
    anything trains, so that a bad target costs no training."""
    directory = Path(directory)
    if directory.exists() and not directory.is_dir():
        raise UsageError(f"{directory} is not a folder; give a folder for TensorBoard's event files (it is made "
                         "if missing)", path=directory)
    study = marked_folder(directory)
    if study is not None:  # a study's folder is written by the study alone
        raise UsageError(f"{directory} is inside the study {study}, whose files only fmtransfer's own writers "
                         "change; give a folder for TensorBoard's event files outside it", path=directory)
    try:
        directory.mkdir(parents=True, exist_ok=True)
        if not os.access(directory, os.W_OK):
            raise PermissionError(errno.EACCES, "not writable")
    except OSError as e:
        raise UsageError(f"cannot write TensorBoard's event files to {directory} ({e.strerror}); choose a writable "
                         "folder", path=directory) from None
    return directory


def write(folder: str | Path, curves: Curves) -> Path:
    """Write `curves` as one TensorBoard run in `folder`, replacing its earlier events; return the
    event file's path."""
    import tensorflow as tf

    folder = check_target(folder)
    scratch = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", suffix=".tmp", dir=folder))
    try:
        writer = tf.summary.create_file_writer(str(scratch))
        with writer.as_default():
            scores, step = set(curves.scores()), 0
            for index, phase in enumerate(curves.phases):
                for i, record in enumerate(phase.history):
                    step += 1
                    if i == 0:  # say which phase begins
                        tf.summary.write("phase_name", tf.constant(phase.name), step=step, metadata=_metadata("text"))
                    values: dict[str, Any] = {k: v for k, v in record.items() if k in scores and is_number(v)}
                    values["phase"] = index
                    if phase.learning_rate is not None:
                        values["learning_rate"] = phase.learning_rate
                    for tag, value in values.items():
                        tf.summary.write(tag, tf.constant(float(value), tf.float32), step=step,
                                         metadata=_metadata("scalars"))
        writer.close()
        (made,) = scratch.glob(EVENTS)
        old = [p for p in folder.glob(EVENTS) if p.name != made.name]
        with atomic_path(folder / made.name) as tmp:
            os.replace(made, tmp)
        for p in old:  # only once the new file is in place: a kill before leaves the old events
            p.unlink(missing_ok=True)
        return folder / made.name
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _metadata(plugin: str):
    """What TensorBoard's `plugin` dashboard (scalars, text) needs to read a summary as its own:
    the plugin's name; its content, a version 0 proto, serialises to nothing."""
    from tensorflow.core.framework import summary_pb2

    return summary_pb2.SummaryMetadata(plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name=plugin))


def write_run_dir(run_dir: str | Path, directory: str | Path) -> list[Path]:
    """Every model a run directory's records describe (`curves.of_run_dir`), one run each:
    DIR/model_a, DIR/baseline, DIR/<contender>, DIR/pretrain_<method>."""
    directory = Path(directory)
    return [write(directory / c.name, c) for c in of_run_dir(Path(run_dir))]


class Board:
    """Where a study writes its runs' events: DIR/<cell>/<unit>/<model> (see the module's
    docstring). Each folder belongs to one seed, so workers and shards, which never share a
    seed, never share a folder."""

    def __init__(self, directory: str | Path):
        self.directory = Path(directory)
        self.written: set[Path] = set()  # a cell's baseline and model A, once for all its contenders

    def folder(self, key) -> Path:
        """The folder of a grid point's models: DIR/<cell>/<unit>."""
        return self.directory / (key.cell_id or "all") / key.unit_id

    def run(self, key, contender: str, phases: list[dict] | None, baseline: list[dict] | None,
            made: dict | None = None) -> None:
        """A finished run's models: the contender, its baseline, and what it was built on that
        was trained in this process (`made`: need -> a `ModelAResult` or `pretraining.Pretrained`;
        one loaded from the study's models/ has no history left to write)."""
        folder = self.folder(key)
        found = [from_phases(contender, phases or []), from_phases("baseline", baseline or [])]
        for need, result in (made or {}).items():
            name = str(need) if str(need) == "model_a" else f"pretrain_{getattr(result, 'method', need)}"
            found.append(from_record(name, {"history": result.history, "learning_rate": result.learning_rate}
                                     if hasattr(result, "history") else {"steps": getattr(result, "steps", None)}))
        for i, curves in enumerate(found):
            if curves is not None and (i == 0 or folder / curves.name not in self.written):
                write(folder / curves.name, curves)
                self.written.add(folder / curves.name)
