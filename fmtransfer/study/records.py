"""A study's records: one JSON line per finished run (`RunRecord`), read and appended here; the
fingerprints each carries; and study.json."""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


from fmtransfer import contenders
from fmtransfer.config import Config, flatten, merge
from fmtransfer.errors import ConfigError, DataError, UsageError
from fmtransfer.io import fingerprint, write_text_atomic
from fmtransfer.study.axes import RunKey, study_contenders


STUDY_JSON = "study.json"


def settings_fingerprint(cfg: Config) -> str:
    """What every run of a study shares: the settings that are not the grid's axes.

    Pretraining settings are fingerprinted apart (`pretrain_fingerprint`), so a study of
    transfer alone can later take pretraining contenders in.
    """
    d = cfg.to_dict()
    # A key added after 0.2.0 counts only away from its default, so older studies still resume.
    model = {k: v for k, v in d["model"].items() if (k, v) != ("initializer", "glorot_uniform")}
    shared = {"batch_size": d["batch_size"], "model": model, "train_a": d["train_a"], "baseline": d["baseline"],
              "data": {k: d["data"][k] for k in ("valid_size", "verify_checksums")
                       + (("valid_from",) if d["data"]["valid_from"] != "first" else ())},
              "transfer": {k: d["transfer"][k] for k in ("freeze_epochs", "fine_tune_epochs", "unfreeze")}}
    return fingerprint(shared)


def run_fingerprint(cfg: Config, contender: str) -> str:
    """What a results line carries: the settings its run depended on beyond the grid's axes
    (pretraining's too, for a contender built on a pretrained encoder), so a line made with other
    settings is never mixed in, whatever study.json says."""
    c = contenders.get(contender) if contender in contenders.names() else None
    pretrained = c is not None and any(n.startswith("encoder:") for n in c.needs)
    own = own_sections_fingerprint(cfg, contender)
    return fingerprint(settings_fingerprint(cfg), pretrain_fingerprint(cfg) if pretrained else None,
                       *([own] if own else []))


def own_sections_fingerprint(cfg: Config, contender: str) -> str | None:
    """The settings of a contender's own sections ([gan], [l2_sp], ...), None if it has none."""
    own = contenders.get(contender).own_sections() if contender in contenders.names() else ()
    d = cfg.to_dict()
    return fingerprint({s: d[s] for s in own}) if own else None


def pretrain_fingerprint(cfg: Config) -> str:
    return fingerprint({k: v for k, v in cfg.pretrain.to_dict().items() if k != "method"})


def encoder_fingerprint(cfg: Config, method: str) -> str:
    """What a cached encoder of `method` was made with: pretraining's settings and its own section's."""
    own = own_sections_fingerprint(cfg, method)
    return fingerprint(pretrain_fingerprint(cfg), *([own] if own else []))


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
_OPTIONAL = ("learning_rates", "settings", "built_on", "seconds", "finished")


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
        extra: keys this fmtransfer does not know, kept as read.

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
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def made(cls, key: RunKey, contender: str, run_config: Config, baseline: dict, result: dict, *,
             settings: str, built_on: dict, seconds: dict) -> "RunRecord":
        """The record of a run the runner just finished, stamped now."""
        t = run_config.transfer
        return cls(key.run_id(contender), key, contender, Scores.from_dict(baseline), Scores.from_dict(result),
                   learning_rates=[t.frozen_learning_rate, t.fine_tune_learning_rate], settings=settings,
                   built_on=built_on, seconds=seconds, finished=time.strftime("%Y-%m-%dT%H:%M:%S"))

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
                   extra={k: v for k, v in line.items() if k not in known and k not in optional})

    def to_dict(self) -> dict[str, Any]:
        optional = {k: getattr(self, k) for k in _OPTIONAL if getattr(self, k) is not None}
        return {"id": self.id, **self.key.to_json(), "contender": self.contender,
                **{k: optional.pop(k) for k in _OPTIONAL[:2] if k in optional},
                "baseline": self.baseline.to_dict(), "result": self.result.to_dict(), **optional, **self.extra}

    @property
    def gain(self) -> float:
        """The contender's test-B accuracy less the baseline's."""
        return self.result.test_accuracy - self.baseline.test_accuracy


def read_records(study_dir: Path, cfg: Config | None = None) -> tuple[list[RunRecord], dict[str, int]]:
    """Every finished run in the directory, merged over shards, and how many lines were skipped, by reason.

    A line that is not a finished run (a torn last line, a wrong shape, another type) is skipped,
    and so is one made with other settings than `cfg`'s (its `run_fingerprint`); neither can hide
    a valid record of the same run, which is looked for in every line. Lines of an older
    fmtransfer, which carry no fingerprint, are taken as they are.
    """
    found: dict[str, RunRecord] = {}
    skipped: dict[str, int] = {}
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
                reason = None
                if cfg is not None and record.settings is not None \
                        and record.settings != run_fingerprint(cfg, record.contender):
                    reason = "made with other settings"
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
    if any(contenders.get(c).needs != ("model_a",) and contenders.get(c).needs for c in study_contenders(cfg)):
        meta["pretrain_fingerprint"] = pretrain_fingerprint(cfg)
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
    # The grid's axes may grow between invocations; the latest grid is the one to report against.
    study_dir.mkdir(parents=True, exist_ok=True)
    write_text_atomic(meta_path, json.dumps({**meta, "config": cfg.to_dict()}, indent=2))


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

