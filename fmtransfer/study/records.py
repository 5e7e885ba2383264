"""A study's records: one JSON line per finished run (`RunRecord`), read and appended here; the
fingerprints each carries; and study.json."""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


from fmtransfer import contenders, data, fingerprints
from fmtransfer.config import Config, flatten, merge
from fmtransfer.errors import ConfigError, DataError, UsageError
from fmtransfer.fingerprints import (  # noqa: F401  (the study's fingerprints: re-exported)
    own_sections_fingerprint, pretrain_fingerprint, run_fingerprint, settings_fingerprint,
)
from fmtransfer.io import fingerprint, write_text_atomic
from fmtransfer.needs import Encoder, needs_of
from fmtransfer.study.axes import RunKey, study_contenders


STUDY_JSON = "study.json"


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
_OPTIONAL = ("learning_rates", "settings", "built_on", "seconds", "finished", "fingerprint", "b_indices_sha256")


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
        extra: keys this fmtransfer does not know, kept as read.
        absent: the axes whose field the line lacked (written before the axis existed, read as
            its `missing` value); left out again when written, so the line keeps its form.

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
    extra: dict[str, Any] = field(default_factory=dict)
    absent: tuple[str, ...] = ()

    @classmethod
    def made(cls, key: RunKey, contender: str, run_config: Config, baseline: dict, result: dict, *,
             settings: str, fingerprint: str, built_on: dict, seconds: dict,
             b_indices_sha256: str | None = None) -> "RunRecord":
        """The record of a run the runner just finished, stamped now."""
        t = run_config.transfer
        return cls(key.run_id(contender), key, contender, Scores.from_dict(baseline), Scores.from_dict(result),
                   learning_rates=[t.frozen_learning_rate, t.fine_tune_learning_rate], settings=settings,
                   built_on=built_on, seconds=seconds, finished=time.strftime("%Y-%m-%dT%H:%M:%S"),
                   fingerprint=fingerprint, b_indices_sha256=b_indices_sha256)

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

    A line that is not a finished run (a torn last line, a wrong shape, another type) is skipped,
    and so is one made with other settings than `cfg`'s or on other data than study.json records
    (`made_with`); neither can hide a valid record of the same run, which is looked for in every
    line. Lines of an older fmtransfer, which carry no fingerprint, are taken as they are.
    """
    found: dict[str, RunRecord] = {}
    skipped: dict[str, int] = {}
    same = made_with(cfg, _recorded_dataset(study_dir)) if cfg is not None else None
    for path in sorted(Path(study_dir).glob("results*.jsonl")):
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
            if not line.strip():
                continue
            try:
                record = RunRecord.from_dict(json.loads(line))
            except json.JSONDecodeError:
                reason = "unreadable JSON"
            except BadRecord as e:
                reason = str(e)
            else:
                reason = None if same is None or same(record) else "made with other settings"
            if reason is not None:
                skipped[reason] = skipped.get(reason, 0) + 1
                continue
            found.setdefault(record.id, record)
    return list(found.values()), skipped


def load_records(study_dir: Path, cfg: Config | None = None) -> list[RunRecord]:
    """Every finished run in the directory (see `read_records`)."""
    return read_records(study_dir, cfg)[0]


def read_results(study_dir: Path, cfg: Config | None = None) -> tuple[list[dict], dict[str, int]]:
    """`read_records`, each record as its JSON line's dict."""
    records, skipped = read_records(study_dir, cfg)
    return [r.to_dict() for r in records], skipped
def made_with(cfg: Config, sha256: dict[str, str] | None):
    """record -> whether that results line was made with `cfg` on the dataset files `sha256`.

    A line written after fmtransfer 0.4 carries `fingerprint` (`fingerprints.run`: the data, the
    run's seed, pair, size and rates, every setting its contender and baseline depended on); an
    older one only `settings` (`run_fingerprint`), checked as then; one with neither is taken.
    """
    configs: dict[RunKey, Config | None] = {}  # the lines of one grid point share their config

    def same(record: RunRecord) -> bool:
        if record.fingerprint is not None and sha256 is not None and record.contender in contenders.names():
            if record.key not in configs:
                try:
                    configs[record.key] = record.key.config(cfg)
                except ConfigError:  # a point this config cannot even express
                    configs[record.key] = None
            run_config = configs[record.key]
            return run_config is not None and \
                record.fingerprint == fingerprints.run(run_config, sha256, record.contender)
        return record.settings is None or record.settings == run_fingerprint(cfg, record.contender)

    return same


def _recorded_dataset(study_dir: Path) -> dict[str, str] | None:
    """The dataset hashes study.json records, None where it records none (fmtransfer 0.4 or older)."""
    try:
        meta = json.loads((Path(study_dir) / STUDY_JSON).read_text(encoding="utf-8"))
        sha256 = meta["dataset"]["sha256"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return sha256 if isinstance(sha256, dict) else None


def load_results(study_dir: Path, cfg: Config | None = None) -> list[dict]:
    """Every finished run in the directory, as dicts (see `read_records`)."""
    return read_results(study_dir, cfg)[0]


def append_record(path: Path, record: RunRecord) -> None:
    """Append a finished run's line to a results file (see `append_result`)."""
    append_result(path, record.to_dict())


def append_result(path: Path, record: dict) -> None:
    """Append one line durably; first end a line torn by a crash, so it cannot swallow this one."""
    with open(path, "a+b") as f:
        f.seek(0, os.SEEK_END)
        if f.tell():
            f.seek(-1, os.SEEK_END)
            if f.read(1) != b"\n":
                f.write(b"\n")
        f.write((json.dumps(record) + "\n").encode())
        f.flush()
        os.fsync(f.fileno())


def check_study_dir(cfg: Config, study_dir: Path) -> None:
    """A directory holds one study: runs made with other fixed settings must not be mixed in."""
    meta_path = study_dir / STUDY_JSON
    meta = {"settings_fingerprint": settings_fingerprint(cfg)}
    if any(isinstance(n, Encoder) for c in study_contenders(cfg) for n in needs_of(contenders.get(c))):
        meta["pretrain_fingerprint"] = pretrain_fingerprint(cfg)
    dataset = fingerprints.dataset(data.dataset_hashes(cfg.data), cfg.data.verify_checksums)
    d = cfg.to_dict()
    owned = {f"{section}_fingerprint": fingerprint(d[section])
             for c in study_contenders(cfg) for section in contenders.get(c).own_sections()}
    meta.update(owned)
    if meta_path.is_file():
        old = read_meta(study_dir)
        checks = [("settings_fingerprint", "epochs, model, ..."), ("pretrain_fingerprint", "pretraining"),
                  *((key, f"[{key.removesuffix('_fingerprint')}]") for key in owned)]
        for key, what in checks:
            if key in old and key in meta and old[key] != meta[key]:
                raise UsageError(f"{study_dir} holds a study made with other settings ({what}); "
                                 "use another directory, or the same settings", path=study_dir)
            if key in old:
                meta.setdefault(key, old[key])
        # A study.json of fmtransfer 0.4 or older records no dataset: it gets this one's.
        theirs = old.get("dataset") if isinstance(old.get("dataset"), dict) else {}
        if theirs and theirs.get("sha256") != dataset["sha256"]:
            why = fingerprints.difference({"data.sha256": theirs.get("sha256")}, {"data.sha256": dataset["sha256"]})
            raise UsageError(f"{study_dir} holds a study {why}; use another directory, or the data it was made "
                             "from", path=study_dir)
    # The grid's axes may grow between invocations; the latest grid is the one to report against.
    study_dir.mkdir(parents=True, exist_ok=True)
    write_text_atomic(meta_path, json.dumps({**meta, "dataset": dataset, "config": cfg.to_dict()}, indent=2))


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

