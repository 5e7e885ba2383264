"""A study's records: one JSON line per finished run (`RunRecord`), read and appended here; the
fingerprints each carries; and study.json."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any


from fmtransfer import contenders, data, fingerprints
from fmtransfer.config import Config, flatten, merge
from fmtransfer.errors import ConfigError, DataError, FmtError, UsageError
from fmtransfer.fingerprints import (  # noqa: F401  (the study's fingerprints: re-exported)
    own_sections_fingerprint, pretrain_fingerprint, run_fingerprint, settings_fingerprint,
)
from fmtransfer.io import (
    STUDY_MARKERS, WRITE_ERRORS, atomic_path, file_sha256, fingerprint, not_a_file, read_bounded,
    write_text_atomic,
)
from fmtransfer.needs import Encoder, needs_of
from fmtransfer.study.axes import SCOPES, RunKey, axis, study_contenders


STUDY_JSON = STUDY_MARKERS[0]  # with the results files, what makes a folder a study's (io.output_file)

# `study.stack = "auto"`: the seeds of a 10-seed cell as one graph. On the 2-core CPU that took
# 0.81x the serial time, and 0.84x of --jobs auto's with it (bench/README.md); a GPU, whose small
# steps leave it idle, is where stacking is meant to pay most.
STACK_AUTO = 10


def resolve_stack(stack: int | str) -> int:
    """`study.stack` as a number of seeds."""
    return STACK_AUTO if stack == "auto" else int(stack)


def stacking(cfg: Config) -> int:
    """How many seeds a stack of this study holds: `study.stack`, or 1 (unstacked) where the
    network cannot stack (`ModelConfig.stacks`)."""
    return resolve_stack(cfg.study.stack) if cfg.model.stacks else 1


def slot(seed: int, stack: int) -> int:
    """A seed's place in any stack of `stack` seeds: fixed by the seed alone, so that whichever
    seeds share a stack (with --jobs, --shard, on resuming), each seed's numbers are the same."""
    return seed % stack


def how(cfg: Config, threads: int | None, contender: str, seed: int, trial: int | None = None) -> fingerprints.How:
    """How the study trains `contender`'s run at `seed`: its threads, and in a stacked study the
    run's slot and what trains in the stack (model A, the baseline, and a contender that stacks;
    never an encoder). A tuned study stacks the trials of one seed instead (`trial`, its slot
    `trial % stack`), the baseline's and each contender's that stacks; model A trains alone."""
    k = stacking(cfg)
    if k == 1:
        return fingerprints.How(threads)
    parts = {"baseline"} if trial is not None else {"model_a", "baseline"}
    if contender in contenders.names() and contenders.get(contender).stack_unsupported is None:
        parts.add(contender)
    return fingerprints.How(threads, slot(seed if trial is None else trial, k), frozenset(parts))


def trained_with(h: fingerprints.How) -> dict[str, Any]:
    """What a results line says of how its run was trained (`RunRecord.trained_with`)."""
    said: dict[str, Any] = {"threads": h.threads}
    if h.slot is not None:
        said.update(stack_slot=h.slot, stacked=sorted(h.stacked))
    return said


def results_path(study_dir: Path, index: int, count: int) -> Path:
    return study_dir / ("results.jsonl" if count == 1 else f"results-{index}of{count}.jsonl")


def _normalised(record: Any) -> Any:
    """A results line of an older fmtransfer (transfer only, no contender field) in today's form."""
    if isinstance(record, dict) and "contender" not in record and isinstance(record.get("transfer"), dict) \
            and isinstance(record.get("id"), str):
        record = {**record, "contender": "transfer", "result": record["transfer"], "id": f"{record['id']}-transfer"}
    return record


class BadRecord(ValueError):
    """A results line that is not a finished run; its message says why (a skipped line's reason)."""


def _accuracy(part: Any) -> bool:
    return (isinstance(part, dict) and isinstance(part.get("test_accuracy"), (int, float))
            and not isinstance(part.get("test_accuracy"), bool) and 0 <= part["test_accuracy"] <= 1)


@dataclass(frozen=True)
class Scores:
    """A model's test-B scores in a results line: its accuracy, and whatever else was measured.

    Args:
        test_accuracy: from 0 to 1; a diverged run's is chance accuracy.
        details: the other keys as written: `test_loss` (None if diverged), `diverged` (the
            message), `linear_probe`, and any a later fmtransfer adds.
    """

    test_accuracy: float
    details: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, d: dict) -> "Scores":
        return cls(d["test_accuracy"], {k: v for k, v in d.items() if k != "test_accuracy"})

    def to_dict(self) -> dict[str, Any]:
        return {"test_accuracy": self.test_accuracy, **self.details}

    @property
    def diverged(self) -> bool:
        return "diverged" in self.details

    @property
    def test_loss(self) -> float | None:
        return self.details.get("test_loss")

    @property
    def linear_probe(self) -> float | None:
        """The probe's test-B accuracy on pretrained features, if the run measured one."""
        probe = self.details.get("linear_probe")
        return probe if isinstance(probe, float) else None


# A results line's fields besides the axes', in the order written; the runner writes every one,
# older fmtransfers only some, so those after `result` are optional (None: not in the line).
_OPTIONAL = ("learning_rates", "settings", "built_on", "seconds", "finished", "fingerprint", "b_indices_sha256",
             "trained_with", "predictions", "drawn")


@dataclass(frozen=True)
class RunRecord:
    """One finished run: a line of a study's results files.

    `from_dict(to_dict())` is the identity, and `to_dict(from_dict(line))` is the line as read
    (an older line's in today's form, see `_normalised`), keys a later fmtransfer adds included.

    Args:
        id: the run id, `key.run_id(contender)` for every line the runner writes.
        key: the grid point, one value per axis.
        contender: the contender's name.
        baseline: the baseline's scores at the same seed and point (the same for every contender).
        result: the contender's scores.
        learning_rates: the (frozen, fine-tune) rates the run used.
        settings: `run_fingerprint` of the settings the run depended on beyond the axes; opaque.
        built_on: per need (model_a, encoder:...), the record of the artifact the run used.
        seconds: time spent, per part; `finished`: when, local time. Neither is a result.
        fingerprint: `fingerprints.run` of everything the run depended on, the data included
            (lines of fmtransfer 0.4 or older have none); opaque.
        b_indices_sha256: the SHA-256 of task B's training rows (`data.indices_sha256`): which
            images the baseline and the contender learnt from (lines before 0.6 have none).
        trained_with: how it was trained beyond its settings (`trained_with`): `threads`, the
            intra-op thread count; in a stacked study `stack_slot`, the seed's place in its
            stack, and `stacked`, what trained in the stack. Both are in `fingerprint` too.
            Lines before 0.6 have none.
        predictions: where the run's test-B predictions are kept, `{"baseline": {"path", "sha256",
            "bytes"}, "result": {...}}` (see `load_predictions`; a path inside the study's
            predictions folder, a size older lines lack); None where it has none (an older line,
            a diverged model).
        drawn: in a tuned study, what the run's trial drew from the search spaces,
            `{"baseline": {key: value}, "result": {...}}`; None untuned. The scores then carry
            `valid_accuracy` and `valid_loss` (what selects a trial) and `steps`.
        extra: keys this fmtransfer does not know, kept as read.
        absent: the axes whose field the line lacked (written before the axis existed, read as
            its `missing` value); left out again when written, so the line keeps its form.
        source: the results file the line was read from (`read_records`), for errors to name;
            not part of the line.

    Example:
        >>> record = RunRecord.from_dict(json.loads(line))
        >>> record.result.test_accuracy - record.baseline.test_accuracy
    """

    id: str
    key: RunKey
    contender: str
    baseline: Scores
    result: Scores
    learning_rates: Any = None
    settings: Any = None
    built_on: Any = None
    seconds: Any = None
    finished: Any = None
    fingerprint: Any = None
    b_indices_sha256: Any = None
    trained_with: Any = None
    predictions: Any = None
    drawn: Any = None
    extra: dict[str, Any] = field(default_factory=dict)
    absent: tuple[str, ...] = ()
    source: Path | None = field(default=None, compare=False, repr=False)

    @classmethod
    def made(cls, key: RunKey, contender: str, run_config: Config, baseline: dict, result: dict, *,
             settings: str, fingerprint: str, built_on: dict, seconds: dict,
             b_indices_sha256: str | None = None, trained_with: dict | None = None,
             predictions: dict | None = None, drawn: dict | None = None) -> "RunRecord":
        """The record of a run the runner just finished, stamped now."""
        t = run_config.transfer
        return cls(key.run_id(contender), key, contender, Scores.from_dict(baseline), Scores.from_dict(result),
                   learning_rates=[t.frozen_learning_rate, t.fine_tune_learning_rate], settings=settings,
                   built_on=built_on, seconds=seconds, finished=time.strftime("%Y-%m-%dT%H:%M:%S"),
                   fingerprint=fingerprint, b_indices_sha256=b_indices_sha256, trained_with=trained_with,
                   predictions=predictions, drawn=drawn,
                   # An axis with no value here (an untuned run's trial) is not written: the line
                   # keeps the form it had before the axis existed.
                   absent=tuple(name for name, value in key.items if value is None and axis(name).missing is None))

    @classmethod
    def from_dict(cls, line: Any) -> "RunRecord":
        """A results line (parsed JSON) as a record; `BadRecord` says why it is not a finished run."""
        line = _normalised(line)
        if not isinstance(line, dict):
            raise BadRecord("not a JSON object")
        if not isinstance(line.get("id"), str):
            raise BadRecord("a bad or missing 'id'")
        try:
            key = RunKey.from_json(line)
        except ValueError as e:
            raise BadRecord(str(e)) from None
        if not isinstance(line.get("contender"), str):
            raise BadRecord("a bad or missing 'contender'")
        for part in ("baseline", "result"):
            if not _accuracy(line.get(part)):
                raise BadRecord(f"a bad or missing {part!r}")
        known = {"id", *key.values, "contender", "baseline", "result"}
        optional = {k: line[k] for k in _OPTIONAL if line.get(k) is not None}
        return cls(line["id"], key, line["contender"], Scores.from_dict(line["baseline"]),
                   Scores.from_dict(line["result"]), **optional,
                   extra={k: v for k, v in line.items() if k not in known and k not in optional},
                   absent=tuple(name for name in key.values if name not in line))

    def to_dict(self) -> dict[str, Any]:
        optional = {k: getattr(self, k) for k in _OPTIONAL if getattr(self, k) is not None}
        axes = {k: v for k, v in self.key.to_json().items() if k not in self.absent}
        return {"id": self.id, **axes, "contender": self.contender,
                **{k: optional.pop(k) for k in _OPTIONAL[:2] if k in optional},
                "baseline": self.baseline.to_dict(), "result": self.result.to_dict(), **optional, **self.extra}

    @property
    def gain(self) -> float:
        """The contender's test-B accuracy less the baseline's."""
        return self.result.test_accuracy - self.baseline.test_accuracy


def read_records(study_dir: Path, cfg: Config | None = None) -> tuple[list[RunRecord], dict[str, int]]:
    """Every finished run in the directory, merged over shards, and how many lines were skipped, by reason.

    A torn last line (a write cut short, without its newline) is no run and is left out silently;
    the file's writer cuts it off when it next appends. A line that is not a finished run (a
    wrong shape, another type) is skipped and counted,
    and so is one made with other settings than `cfg`'s or on other data than study.json records
    (`made_with`); neither can hide a valid record of the same run, which is looked for in every
    line. Lines of an older fmtransfer, which carry no fingerprint, are taken as they are.
    """
    found: dict[str, RunRecord] = {}
    skipped: dict[str, int] = {}
    same = made_with(cfg, recorded_dataset(study_dir), recorded_threads(study_dir)) if cfg is not None else None
    for path in sorted(Path(study_dir).glob("results*.jsonl")):
        if (kind := not_a_file(path)) is not None:  # a FIFO would hang the reader, a device never end
            raise DataError(f"{path} is {kind}, not a results file; move it out of the study", path=path)
        text = path.read_text(encoding="utf-8", errors="replace")
        lines = text.splitlines()
        for i, line in enumerate(lines):
            if not line.strip():
                continue
            try:
                record = RunRecord.from_dict(json.loads(line))
            except json.JSONDecodeError:
                if i == len(lines) - 1 and not text.endswith("\n"):
                    continue  # a write cut short (a kill, a full disk): its run was never finished
                reason = "unreadable JSON"
            except BadRecord as e:
                reason = str(e)
            else:
                reason = None if same is None or same(record) else "made with other settings"
            if reason is not None:
                skipped[reason] = skipped.get(reason, 0) + 1
                continue
            if record.id not in found:
                found[record.id] = replace(record, source=path)
    return list(found.values()), skipped


def load_records(study_dir: Path, cfg: Config | None = None) -> list[RunRecord]:
    """Every finished run in the directory (see `read_records`)."""
    return read_records(study_dir, cfg)[0]


def read_results(study_dir: Path, cfg: Config | None = None) -> tuple[list[dict], dict[str, int]]:
    """`read_records`, each record as its JSON line's dict."""
    records, skipped = read_records(study_dir, cfg)
    return [r.to_dict() for r in records], skipped


def made_with(cfg: Config, sha256: dict[str, str] | None, threads: int | None = None):
    """record -> whether that results line was made with `cfg` on the dataset files `sha256`,
    trained on `threads` intra-op threads (None: a study that recorded none, fmtransfer 0.5 or older).

    A line written after fmtransfer 0.4 carries `fingerprint` (`fingerprints.run`: the data, the
    run's seed, pair, size and rates, every setting its contender and baseline depended on, and
    how it was trained: `how`); an older one only `settings` (`run_fingerprint`), checked as
    then; one with neither is taken. So is a line of a contender no longer registered (an
    uninstalled plug-in): both fingerprints cover its own sections and what it builds on, which
    only its code knows, and reading records never needs a contender's code.
    """
    configs: dict[tuple, Config | None] = {}  # the lines of one untuned grid point share their config

    def same(record: RunRecord) -> bool:
        if record.contender not in contenders.names():
            return True
        if record.fingerprint is not None and sha256 is not None:
            tuned = record.key.values.get("trial") is not None
            point = (record.key, record.contender if tuned else None, json.dumps(record.drawn) if tuned else None)
            if point not in configs:
                try:
                    configs[point] = record.key.config(cfg, record.contender, record.drawn)
                except ConfigError:  # a point this config cannot even express
                    configs[point] = None
            run_config = configs[point]
            return run_config is not None and record.fingerprint == fingerprints.run(
                run_config, sha256, record.contender, how(cfg, threads, record.contender, record.key.seed,
                                                          record.key.values.get("trial")))
        return record.settings is None or record.settings == run_fingerprint(cfg, record.contender)

    return same


def recorded_threads(study_dir: Path) -> int | None:
    """The intra-op thread count study.json records its runs were trained with; None where it
    records none (fmtransfer 0.5 or older: its lines' fingerprints do not carry one either)."""
    try:
        threads = json.loads((Path(study_dir) / STUDY_JSON).read_text(encoding="utf-8"))["threads"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return threads if isinstance(threads, int) and not isinstance(threads, bool) and threads >= 1 else None


def recorded_dataset(study_dir: Path) -> dict[str, str] | None:
    """The dataset hashes study.json records, None where it records none (fmtransfer 0.4 or older)."""
    try:
        meta = json.loads((Path(study_dir) / STUDY_JSON).read_text(encoding="utf-8"))
        sha256 = meta["dataset"]["sha256"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return sha256 if isinstance(sha256, dict) else None


def check_pooled(study_dirs: list[str | Path]) -> None:
    """Studies judged together must be distinct studies of the same data: a UsageError, naming
    both directories, where two of them are one directory, one holds every run of the other (a
    copy: its evidence would count twice), or their study.json files record other dataset files
    (a study of fmtransfer 0.4 or older records none, and is taken as it is)."""
    if len(study_dirs) < 2:  # nothing to pool: its report reads it, and says what is wrong with it
        return
    seen: list[tuple[Path, str | Path, dict | None, set[str]]] = []
    for d in study_dirs:
        here = Path(d).resolve()
        read_meta(Path(d))  # each must be a study
        sha256 = recorded_dataset(Path(d))
        runs = {json.dumps(r, sort_keys=True) for r in comparable(Path(d)).values()}
        for there, name, theirs, their_runs in seen:
            if here == there:
                raise UsageError(f"{d}: given twice (as {name} too); give each study once", path=d)
            if sha256 is not None and theirs is not None and sha256 != theirs:
                files = sorted(k for k in {*sha256, *theirs} if sha256.get(k) != theirs.get(k))
                raise UsageError(f"{d} was made on other data than {name} (their study.json files record another "
                                 f"SHA-256 of {', '.join(files)}); studies judged together must share their data",
                                 path=d)
            if runs and their_runs and (runs <= their_runs or their_runs <= runs):
                small, big = (d, name) if runs <= their_runs else (name, d)
                raise UsageError(f"{big} holds every run of {small}: one study given twice (a copy?), whose "
                                 "evidence would count twice; give it once", path=d)
        seen.append((here, d, sha256, runs))


def load_results(study_dir: Path, cfg: Config | None = None) -> list[dict]:
    """Every finished run in the directory, as dicts (see `read_records`)."""
    return read_results(study_dir, cfg)[0]


# What may differ between two runs of the same study; nothing else may.
TIMING = ("seconds", "finished")


def comparable(study_dir: Path, cfg: Config | None = None) -> dict[str, dict]:
    """Every finished run by id, timing fields left out: two studies made from the same inputs
    (whatever --jobs, --shard or the core count) give equal dicts, ids, scores and fingerprints."""
    return {r["id"]: {k: v for k, v in r.items() if k not in TIMING} for r in load_results(study_dir, cfg)}


def append_record(path: Path, record: RunRecord) -> None:
    """Append a finished run's line to a results file (see `append_result`)."""
    append_result(path, record.to_dict())


def append_result(path: Path, record: dict) -> None:
    """Append one line durably, whole or not at all.

    A last line torn by a crash (a SIGKILL mid-write, a full disk) is this file's own writer's: it
    is cut off first, so that neither it nor this line is lost to the other; one that is a whole
    record lacking only its newline is ended. SIGINT and SIGTERM wait while the line is written.
    A write that fails is undone and names the file.
    """
    line = (json.dumps(record) + "\n").encode()
    with _signals_held(), open(path, "a+b") as f:
        f.seek(0, os.SEEK_END)
        start = f.tell()
        try:
            start = _repair_tail(f, start)
            f.write(line)
            f.flush()
            os.fsync(f.fileno())
        except OSError as e:
            with contextlib.suppress(OSError):
                f.truncate(start)
            if e.errno in WRITE_ERRORS:
                raise FmtError(f"cannot append a finished run to {path}: {e.strerror}; the runs already in it are "
                               "intact, and the study resumes with this run once there is space", path=path) from None
            raise


def _repair_tail(f, end: int) -> int:
    """Where to append in the open file `f` of `end` bytes, after repairing a torn last line."""
    if not end:
        return 0
    f.seek(-1, os.SEEK_END)
    if f.read(1) == b"\n":
        return end
    begin = end  # the last line's first byte: after the last newline, looked for backwards
    while begin > 0:
        chunk_start = max(0, begin - 65536)
        f.seek(chunk_start)
        cut = f.read(begin - chunk_start).rfind(b"\n")
        if cut >= 0:
            begin = chunk_start + cut + 1
            break
        begin = chunk_start
    f.seek(begin)
    last = f.read()
    try:
        json.loads(last)
    except ValueError:  # a torn line: cut it off
        keep = end - len(last)
        f.truncate(keep)
        f.seek(keep)
        return keep
    f.write(b"\n")
    return end + 1


@contextlib.contextmanager
def _signals_held():
    """SIGINT and SIGTERM delivered only after the block: a line is written whole."""
    held = {signal.SIGINT, signal.SIGTERM}
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = signal.pthread_sigmask(signal.SIG_BLOCK, held)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def check_study_dir(cfg: Config, study_dir: Path, threads: int | None = None) -> None:
    """A directory holds one study: runs made with other fixed settings must not be mixed in.

    `threads`: the intra-op thread count this invocation trains with, recorded in study.json (its
    runs' fingerprints carry it); None keeps what study.json records. A study made stacked is not
    continued unstacked, nor with another stack size, or the other way round: its runs would no
    longer count (their fingerprints say how they were trained), so it is refused instead.
    """
    meta_path = study_dir / STUDY_JSON
    meta = {"settings_fingerprint": settings_fingerprint(cfg)}
    if any(isinstance(n, Encoder) for c in study_contenders(cfg) for n in needs_of(contenders.get(c))):
        meta["pretrain_fingerprint"] = pretrain_fingerprint(cfg)
    dataset = fingerprints.dataset(data.dataset_hashes(cfg.data), cfg.data.verify_checksums)
    d = cfg.to_dict()
    owned = {f"{section}_fingerprint": fingerprint(values)
             for c in study_contenders(cfg) for section in contenders.get(c).own_sections()
             if (values := {k: v for k, v in d[section].items() if not fingerprints.later(f"{section}.{k}", v)})}
    meta.update(owned)
    if meta_path.is_file():
        old = read_meta(study_dir)
        if isinstance(old.get("titles"), dict):  # of contenders this invocation does not run: kept
            meta["titles"] = old["titles"]
        has_runs = any(study_dir.glob("results*.jsonl"))
        checks = [("settings_fingerprint", "epochs, model, ..."), ("pretrain_fingerprint", "pretraining"),
                  *((key, f"[{key.removesuffix('_fingerprint')}]") for key in owned)]
        for key, what in checks:
            if key in old and key in meta and old[key] != meta[key]:
                raise UsageError(f"{study_dir} holds a study made with other settings ({what}); "
                                 "use another directory, or the same settings", path=study_dir)
            if key in old:
                meta.setdefault(key, old[key])
        old_config = old.get("config") if isinstance(old.get("config"), dict) else {}
        try:
            old_stack = stacking(config_from(old_config, study_dir)) if old_config else None
        except DataError:
            old_stack = None
        if old_stack is not None and old_stack != stacking(cfg) and has_runs:
            def said(k):
                return "unstacked (study.stack 1)" if k == 1 else f"stacked, study.stack {k}"
            raise UsageError(f"{study_dir} holds runs trained {said(old_stack)}; this run would train them "
                             f"{said(stacking(cfg))}, and the two are never mixed: give --stack "
                             f"{old_stack if old_stack > 1 else 1}, or use another directory", path=study_dir)
        old_threads = recorded_threads(study_dir)
        if threads is None:
            threads = old_threads
        elif old_threads is not None and threads != old_threads and has_runs:
            # Every run's fingerprint carries the count: those trained on the old one would be hidden
            # as "made with other settings" and the grid retrained beside them.
            raise UsageError(f"{study_dir} holds runs trained on {old_threads} intra-op threads; this run would "
                             f"train on {threads} (FMTRANSFER_THREADS), and a cnn's numbers depend on the count: "
                             f"set FMTRANSFER_THREADS={old_threads}, or use another directory", path=study_dir)
        if old_config and has_runs:
            check_same_samples(cfg, old_config, study_dir)
            check_same_tuning(cfg, old_config, study_dir)
            margin = old_config.get("study", {}).get("equivalence_margin")
            if isinstance(margin, (int, float)) and margin != cfg.study.equivalence_margin:
                # The report's verdicts use the study's margin, recorded when the study was made, before its runs.
                raise UsageError(f"{study_dir} holds a study judged with an equivalence margin of {margin:g} points, "
                                 f"recorded when it was made; this run would make it "
                                 f"{cfg.study.equivalence_margin:g}: give --equivalence-margin {margin:g} (`study "
                                 "report --equivalence-margin X` reads it with another), or use another directory",
                                 path=study_dir)
        if isinstance(old.get("seeds_auto"), dict):  # where an earlier --seeds auto stopped: kept
            meta["seeds_auto"] = old["seeds_auto"]
        # A study.json of fmtransfer 0.4 or older records no dataset: it gets this one's.
        theirs = old.get("dataset") if isinstance(old.get("dataset"), dict) else {}
        if theirs and theirs.get("sha256") != dataset["sha256"]:
            why = fingerprints.difference({"data.sha256": theirs.get("sha256")}, {"data.sha256": dataset["sha256"]})
            raise UsageError(f"{study_dir} holds a study {why}; use another directory, or the data it was made "
                             "from", path=study_dir)
    # The grid's axes may grow between invocations; the latest grid is the one to report against.
    study_dir.mkdir(parents=True, exist_ok=True)
    if threads is not None:
        meta["threads"] = threads
    # What a report shows of each contender, read from here once its code is gone (an uninstalled plug-in).
    meta["titles"] = {**meta.get("titles", {}), **{c: contenders.get(c).title for c in study_contenders(cfg)}}
    write_text_atomic(meta_path, json.dumps({**meta, "dataset": dataset, "config": cfg.to_dict()}, indent=2))


def check_same_tuning(cfg: Config, old_config: dict, study_dir: Path) -> None:
    """A tuned study resumes with the same protocol, sampler and spaces, and a budget at least as
    large (its trials are kept, more are added); an untuned study is never continued tuned, nor
    the other way round."""
    old = old_config.get("tune") if isinstance(old_config.get("tune"), dict) else {}
    old_trials, trials = old.get("trials"), cfg.tune.trials
    if (old_trials is None) != (trials is None):
        said = "untuned" if old_trials is None else f"tuned with --tune {old_trials}"
        raise UsageError(f"{study_dir} holds a study {said}; the two are never mixed: "
                         f"{'drop --tune' if old_trials is None else f'give --tune {old_trials} or more'}, or use "
                         "another directory", path=study_dir)
    if trials is None:
        return
    if isinstance(old_trials, int) and trials < old_trials:
        raise UsageError(f"{study_dir} holds a study tuned with --tune {old_trials}; a smaller budget would leave "
                         f"trials out of every selection: give --tune {old_trials} or more, or use another directory",
                         path=study_dir)
    theirs = {"--tune-on": old.get("on", "valid"), "--sampler": old.get("sampler", "random"),
              "--space": list((old_config.get("study") or {}).get("space") or [])}
    ours = {"--tune-on": cfg.tune.on, "--sampler": cfg.tune.sampler, "--space": list(cfg.study.space)}
    for option, value in theirs.items():
        if value != ours[option]:
            shown = ",".join(value) if isinstance(value, list) else value
            raise UsageError(f"{study_dir} holds a study tuned with {option} {shown or '(as declared)'}; its trials were "
                             f"drawn and judged so: give the same {option}, or use another directory", path=study_dir)


def check_same_samples(cfg: Config, old_config: dict, study_dir: Path) -> None:
    """Task B's samples are the book's first N images, or random draws (data seeds): a study holds
    one kind. More draws may join a study of draws, but the first-N sample is no draw, and
    pooled with them it would pass for one in every interval."""
    old = old_config.get("study", {}).get("data_seeds") or [old_config.get("data", {}).get("b_sample", "first")]
    new = list(cfg.study_data_seeds)

    def kind(samples):
        return "first" if samples == ["first"] else "draws"

    if kind(old) == kind(new):
        return
    said = {"first": "the book's first N images of task B (no data seeds)",
            "draws": "random draws of task B's images (data seeds)"}
    redo = (f"give --data-seed-list {','.join(map(str, old))}" if kind(old) == "draws"
            else "give no data seeds")
    raise UsageError(f"{study_dir} holds runs on {said[kind(old)]}; this run would add {said[kind(new)]}, and the "
                     f"two are never pooled: {redo}, or use another directory", path=study_dir)


def record_precision(study_dir: Path, precision: Any) -> None:
    """Note in study.json where `--seeds auto` stopped (`runner.Precision`): how many seeds it needed."""
    meta = read_meta(study_dir)
    write_text_atomic(Path(study_dir) / STUDY_JSON, json.dumps({**meta, "seeds_auto": precision.to_dict()}, indent=2))


def read_meta(study_dir: Path) -> dict:
    path = study_dir / STUDY_JSON
    if not path.is_file():
        raise UsageError(f"{study_dir} is not a study directory (no {STUDY_JSON}); "
                         f"run `fmtransfer study --run {study_dir}` first", path=study_dir)
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
        if isinstance(meta, dict) and isinstance(meta.get("config"), dict):
            return meta
    except (OSError, ValueError):
        pass
    raise DataError(f"{path} is unreadable; delete it and run the study again (finished runs are kept)", path=path)


def config_from(d: dict, study_dir: Path | None = None) -> Config:
    """A study's stored config, keeping only the keys this version knows."""
    known = flatten(Config().to_dict())
    try:
        return merge([(None, {k: v for k, v in flatten(d).items() if k in known})])
    except ConfigError as e:
        where = Path(study_dir or ".") / STUDY_JSON
        raise DataError(f"{where}: unusable settings ({e}); delete it and run the study again "
                        "(finished runs are kept, and checked against the new settings)", path=where) from None



# ----------------------------------------------------------------------------- stored test predictions

PREDICTIONS = "predictions"  # the study directory's folder of them
_PREDICTIONS_FORMAT = 1
# The most read of a predictions file whose line gives no size (written before lines gave one):
# far more than a header and two bytes per test image of any pair of Fashion-MNIST classes.
_UNSIZED_LIMIT = 1 << 20


@dataclass(frozen=True)
class Predictions:
    """One run's predictions on task B's test images, in the test set's order.

    Args:
        y: the images' labels, 0 or 1 (1: `data.b_classes`' second class), uint8.
        baseline: the baseline's P(label 1) per image, float32 in [0, 1], quantised to 1/255
            (each image's predicted class, p > 0.5, is the one the model gave: the accuracies
            they give are the record's).
        result: the contender's, likewise.

    `baseline_correct` and `result_correct` are what `inference.mcnemar_exact` and
    `inference.image_bootstrap` take.
    """

    y: Any
    baseline: Any
    result: Any

    @property
    def baseline_correct(self):
        return (self.baseline > 0.5) == (self.y == 1)

    @property
    def result_correct(self):
        return (self.result > 0.5) == (self.y == 1)


def quantised(p) -> Any:
    """P(label 1) per image as uint8 (p * 255, rounded), each image's class (p > 0.5) kept."""
    import numpy as np

    p = np.asarray(p, dtype=np.float64).reshape(-1)
    q = np.clip(np.rint(p * 255), 0, 255).astype(np.uint8)
    positive = p > 0.5
    q[positive & (q < 128)] = 128
    q[~positive & (q >= 128)] = 127
    return q


def _write_predictions(path: Path, header: dict, *parts) -> dict:
    """A predictions file: one JSON line saying what it is for, then each part's bytes; written
    atomically, and its digest returned for the results line that refers to it."""
    with atomic_path(path) as tmp:
        tmp.write_bytes((json.dumps({"format": _PREDICTIONS_FORMAT, **header}) + "\n").encode()
                        + b"".join(bytes(p) for p in parts))
    return {"path": str(path.relative_to(path.parent.parent)), "sha256": file_sha256(path),
            "bytes": path.stat().st_size}


def write_baseline_predictions(study_dir: Path, key: RunKey, fingerprint_: str, y, p) -> dict:
    """The baseline's predictions of a (seed, pair, size) group, kept once for all its
    contenders, with the test labels; -> what a results line records of the file."""
    import numpy as np

    # Named and headed by the group alone, never by the run that asked first: resumed, the file
    # is written again with the same bytes, so the lines written before still match its digest.
    group = _group(key)
    y = np.asarray(y).reshape(-1).astype(np.uint8)
    return _write_predictions(Path(study_dir) / PREDICTIONS / f"baseline-{group}.bin",
                              {"for": f"baseline of {group}", "fingerprint": fingerprint_, "n": int(y.size),
                               "parts": ["baseline", "y"]}, quantised(p), y)


def write_result_predictions(study_dir: Path, run_id: str, fingerprint_: str, p) -> dict:
    """A contender's predictions, tied to its results line's id and fingerprint."""
    q = quantised(p)
    return _write_predictions(Path(study_dir) / PREDICTIONS / f"{run_id}.bin",
                              {"for": run_id, "fingerprint": fingerprint_, "n": int(q.size), "parts": ["result"]}, q)


class _Unusable(Exception):
    """A predictions file that cannot be what its results line says it is: `why`, in words."""

    def __init__(self, path: Path | None, why: str):
        super().__init__(why)
        self.path, self.why = path, why


def _read_predictions(study_dir: Path, ref: Any, meant_for: str) -> tuple[dict, bytes]:
    """The header and body of the file a results line's `ref` names, which must hold the
    predictions `meant_for` ("baseline of GROUP", or a run id) with the digest `ref` records;
    `_Unusable` says why it does not."""
    if not (isinstance(ref, dict) and isinstance(ref.get("path"), str) and isinstance(ref.get("sha256"), str)):
        raise _Unusable(None, "its 'predictions' entry names no file and digest")
    path = Path(study_dir) / ref["path"]
    # A record is data, not a pointer to follow: its file must be one of this study's
    # predictions, a regular file, no longer than the line says (older lines say nothing).
    size = ref.get("bytes")
    limit = size if isinstance(size, int) and not isinstance(size, bool) and size >= 0 else _UNSIZED_LIMIT
    try:
        raw = read_bounded(path, Path(study_dir) / PREDICTIONS, limit)
    except ValueError as e:
        raise _Unusable(path, str(e)) from None
    import hashlib

    head, _, body = raw.partition(b"\n")
    try:
        header = json.loads(head)
    except ValueError:
        header = None
    # Most specific first: a file of another run or one cut short would fail the digest too.
    if not isinstance(header, dict) or header.get("format") != _PREDICTIONS_FORMAT:
        raise _Unusable(path, "is not a predictions file of this fmtransfer")
    if header.get("for") != meant_for:
        raise _Unusable(path, f"holds the predictions of {header.get('for')!r}, not of {meant_for!r}")
    n, parts = header.get("n"), header.get("parts")
    if not isinstance(n, int) or isinstance(n, bool) or n <= 0 or not isinstance(parts, list) or not parts:
        raise _Unusable(path, "has a header without a positive 'n' and its 'parts'")
    if len(body) != n * len(parts):
        cut = "truncated: " if len(body) < n * len(parts) else ""
        raise _Unusable(path, f"{cut}holds {len(body):,} bytes of predictions, its header declares {n * len(parts):,}")
    if hashlib.sha256(raw).hexdigest() != ref["sha256"]:
        raise _Unusable(path, "has changed since the run wrote it (its SHA-256 is not the one the line records)")
    return header, body


# What a tuned cell's selected run (`tuning.select`) records of the baseline trial paired with it.
BASELINE_TRIAL = "baseline_trial"


def _group(key: RunKey) -> str:
    """A (seed, pair, size) group's name: the baseline's predictions are kept once for it."""
    return "-".join(part for a, v in key.items if axis(a).scope in SCOPES[:2] and (part := axis(a).id(v)))


def load_predictions(study_dir: str | Path, record: RunRecord) -> Predictions | None:
    """`record`'s test-B predictions, checked against it; None where it has none (a line of
    fmtransfer 0.5 or older, a run whose baseline or contender diverged).

    A file that is not the one the line names (missing, of another run, cut short, changed
    since: its SHA-256 differs), or predictions whose accuracies are not the line's, are a
    `DataError` naming the file and the run: the evidence contradicts itself, and neither the
    line nor the file is used in its place.

    Example:
        >>> for r in load_records(study_dir, cfg):
        ...     pred = load_predictions(study_dir, r)
        ...     if pred is not None:
        ...         inference.mcnemar_exact(pred.baseline_correct, pred.result_correct).p_value
    """
    import numpy as np

    refs = record.predictions
    if refs is None:
        return None
    results = str(record.source) if record.source is not None else "its results line"

    def refused(path: Path | None, why: str) -> DataError:
        where = f"{path}: " if path is not None else f"{results}: run {record.id}: "
        run = f" (run {record.id} in {results})" if path is not None else ""
        return DataError(f"{where}{why}{run}; restore it, or delete the run's line and resume the study to rerun "
                         "the run", path=path or record.source)

    if not isinstance(refs, dict):
        raise refused(None, "its 'predictions' entry names no files")
    try:
        # A tuned cell's run pairs the selected contender trial with the selected baseline trial
        # (`tuning.select`), whose predictions are its own trial's.
        base_key = record.key
        if isinstance(record.extra.get(BASELINE_TRIAL), int):
            base_key = RunKey(tuple((a, record.extra[BASELINE_TRIAL] if a == "trial" else v) for a, v in record.key.items))
        bh, bbody = _read_predictions(study_dir, refs.get("baseline"), f"baseline of {_group(base_key)}")
        rh, rbody = _read_predictions(study_dir, refs.get("result"), record.id)
    except _Unusable as e:
        raise refused(e.path, e.why) from None
    mine_path = Path(study_dir) / refs["result"]["path"]
    if record.fingerprint is not None and rh.get("fingerprint") != record.fingerprint:
        raise refused(mine_path, "was written by another run of that id (its fingerprint is not the line's)")
    n = rh["n"]
    if bh["n"] != n or len(bbody) != 2 * n:
        raise refused(mine_path, f"has {n:,} test images, its baseline's {Path(refs['baseline']['path']).name} "
                      f"{bh['n']:,}")
    raw = np.frombuffer(bbody, dtype=np.uint8)
    y, baseline = raw[n:].copy(), raw[:n].astype(np.float32) / 255
    result = np.frombuffer(rbody, dtype=np.uint8).astype(np.float32) / 255
    found = Predictions(y, baseline, result)
    for what, correct, scores, file in (("baseline", found.baseline_correct, record.baseline, refs["baseline"]),
                                        ("result", found.result_correct, record.result, refs["result"])):
        given = float(np.mean(correct))
        if abs(given - scores.test_accuracy) > 1e-9:
            raise DataError(f"{results}: run {record.id} records a {what} test accuracy of {scores.test_accuracy:.4g}, "
                            f"its stored predictions {Path(study_dir) / file['path']} give {given:.4g} on their "
                            f"{n:,} test images; restore the line, or delete it and resume the study to rerun the run",
                            path=record.source or Path(study_dir) / file["path"])
    return found
