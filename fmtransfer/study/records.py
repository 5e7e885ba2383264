"""A study's records: one JSON line per finished run, the fingerprints each carries, and study.json."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


from fmtransfer import contenders
from fmtransfer.config import LR_PRESETS, Config, flatten, merge
from fmtransfer.errors import ConfigError, DataError, UsageError
from fmtransfer.io import fingerprint, write_text_atomic
from fmtransfer.study.axes import study_contenders


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
    and so is one made with other settings than `cfg`'s (its `run_fingerprint`); neither can hide
    a valid record of the same run, which is looked for in every line. Lines of an older
    fmtransfer, which carry no fingerprint, are taken as they are.
    """
    found: dict[str, dict] = {}
    skipped: dict[str, int] = {}
    for path in sorted(Path(study_dir).glob("results*.jsonl")):
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
            if not line.strip():
                continue
            try:
                record = _normalised(json.loads(line))
            except (json.JSONDecodeError, TypeError, KeyError):
                record = None
            reason = "unreadable JSON" if record is None else _problem(record)
            if reason is None and cfg is not None and "settings" in record \
                    and record["settings"] != run_fingerprint(cfg, record["contender"]):
                reason = "made with other settings"
            if reason is not None:
                skipped[reason] = skipped.get(reason, 0) + 1
                continue
            found.setdefault(record["id"], record)
    return list(found.values()), skipped


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

