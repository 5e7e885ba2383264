"""A study's records: one JSON line per finished run, the fingerprints each carries, and study.json."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


from fmtransfer import contenders, data, fingerprints
from fmtransfer.config import LR_PRESETS, Config, flatten, merge
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


def _problem(record: Any) -> str | None:
    """Why a results line is not a finished run, or None if it is one."""
    if not isinstance(record, dict):
        return "not a JSON object"

    def accuracy(part: Any) -> bool:
        return (isinstance(part, dict) and isinstance(part.get("test_accuracy"), (int, float))
                and not isinstance(part.get("test_accuracy"), bool) and 0 <= part["test_accuracy"] <= 1)

    checks = [("id", lambda v: isinstance(v, str)),
              ("seed", lambda v: isinstance(v, int) and not isinstance(v, bool)),
              ("pair", lambda v: isinstance(v, list) and len(v) == 2 and all(isinstance(k, int) for k in v)),
              ("b_train_size", lambda v: isinstance(v, int) and not isinstance(v, bool)),
              ("reuse_layers", lambda v: v == "all" or (isinstance(v, int) and not isinstance(v, bool))),
              ("preset", lambda v: v in LR_PRESETS), ("contender", lambda v: isinstance(v, str)),
              ("baseline", accuracy), ("result", accuracy)]
    for key, ok in checks:
        if key not in record or not ok(record[key]):
            return f"a bad or missing {key!r}"
    return None


def read_results(study_dir: Path, cfg: Config | None = None) -> tuple[list[dict], dict[str, int]]:
    """Every finished run in the directory, merged over shards, and how many lines were skipped, by reason.

    A line that is not a finished run (a torn last line, a wrong shape, another type) is skipped,
    and so is one made with other settings than `cfg`'s or on other data than study.json records
    (`made_with`); neither can hide a valid record of the same run, which is looked for in every
    line. Lines of an older fmtransfer, which carry no fingerprint, are taken as they are.
    """
    found: dict[str, dict] = {}
    skipped: dict[str, int] = {}
    same = made_with(cfg, _recorded_dataset(study_dir)) if cfg is not None else None
    for path in sorted(Path(study_dir).glob("results*.jsonl")):
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
            if not line.strip():
                continue
            try:
                record = _normalised(json.loads(line))
            except (json.JSONDecodeError, TypeError, KeyError):
                record = None
            reason = "unreadable JSON" if record is None else _problem(record)
            if reason is None and same is not None and not same(record):
                reason = "made with other settings"
            if reason is not None:
                skipped[reason] = skipped.get(reason, 0) + 1
                continue
            found.setdefault(record["id"], record)
    return list(found.values()), skipped


def made_with(cfg: Config, sha256: dict[str, str] | None):
    """record -> whether that results line was made with `cfg` on the dataset files `sha256`.

    A line written after fmtransfer 0.4 carries `fingerprint` (`fingerprints.run`: the data, the
    run's seed, pair, size and rates, every setting its contender and baseline depended on); an
    older one only `settings` (`run_fingerprint`), checked as then; one with neither is taken.
    """
    configs: dict[tuple, Config | None] = {}  # the lines of one grid point share their config

    def same(record: dict) -> bool:
        if "fingerprint" in record and sha256 is not None and record["contender"] in contenders.names():
            key = (record["seed"], tuple(record["pair"]), record["b_train_size"], record["reuse_layers"],
                   record["preset"])
            if key not in configs:
                try:
                    configs[key] = RunKey(*key).config(cfg)
                except ConfigError:  # a point this config cannot even express
                    configs[key] = None
            return configs[key] is not None and \
                record["fingerprint"] == fingerprints.run(configs[key], sha256, record["contender"])
        return "settings" not in record or record["settings"] == run_fingerprint(cfg, record["contender"])

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
    """Every finished run in the directory (see `read_results`)."""
    return read_results(study_dir, cfg)[0]


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

