"""What each artifact depends on, in one place, and how to tell that an artifact is the one needed.

Every saved model's record carries `made_from`: all that determined it, as flat `section.key`
settings (the dataset files' SHA-256s, the split's settings, the architecture, the training
sections, the batch size, the seed, a format version); `fingerprint`, a hash of `made_from`; and
`file_sha256`, the digest of the model file as it was saved. A consumer computes the `made_from`
it needs and compares (`problem`): the file name says nothing, a record another seed's model was
copied under says "made for seed 43", and a model file copied over another, record left in place,
no longer has the digest its record gives.

What each kind depends on:

    split       the dataset's hashes, task B's classes and training size (and data seed, for a
                random draw), the validation slice
    model A     the dataset's hashes, task B's classes (task A is the other eight), the
                validation slice, [model], batch size, seed, [train_a]
    encoder     the dataset's hashes, the validation slice (pretraining never sees labels, so not
                the pair), [model], batch size, seed, [pretrain] and the method's own section
    contender   the whole split (its data seed too), [model], batch size, seed, its sections ([transfer], [baseline],
                its own), and the fingerprints of what it was built on
    results line   the contender's and its baseline's, through `run`

The study directory's own fingerprints (`settings_fingerprint`, `run_fingerprint`, ...) are here
too, computed exactly as fmtransfer 0.4 did, so the lines and directories made before stay valid.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from fmtransfer import contenders
from fmtransfer.config import Config, DataConfig, flatten
from fmtransfer.io import file_sha256, fingerprint
from fmtransfer.needs import Encoder, ModelA, Need, needs_of, parse

# Raised when what a record's `made_from` means changes, so that no older artifact matches.
FORMAT = 1
# Keys added after artifacts and studies were made, with the default that is what those were
# made with: they count in a fingerprint only away from it, so everything made before still
# matches (`reinit.depth`: reinit re-initialised the top layer alone before it had a depth).
LATER = {"reinit.depth": 1}
# How a data seed draws task B's images (`data.draw_order`): part of what a draw's artifacts are
# made from, so that a change of the method could never pass another sample off as this one.
DRAW = "splitmix64-rank-1"


@dataclass(frozen=True)
class How:
    """How a study trains, beyond its settings, where that changes numbers: what `made_from` adds.

    Args:
        threads: the intra-op thread count (`runtime.training_threads`); None where it is not
            recorded (a run directory, a study.json of fmtransfer 0.5 or older). A cnn's
            convolutions sum in an order that depends on it, so a cnn's artifacts carry it
            always; a dense model's numbers were measured the same on 1, 2 and 4 threads, and
            its artifacts carry it only away from its default, 1, so the dense studies made
            before keep their fingerprints (docs/architecture.md, "Threads").
        slot: the seed's place in its stack (`study.stack`), None unstacked. A stacked seed's
            numbers depend on its place (float sums over differently aligned memory), and on
            nothing else of the stack: which seeds share it, how many.
        stacked: the artifacts trained in the stack: "model_a", "baseline", a contender's name.
    """

    threads: int | None = None
    slot: int | None = None
    stacked: frozenset = frozenset()

    def adds(self, d: dict, artifact: str) -> dict[str, Any]:
        made: dict[str, Any] = {}
        if self.threads is not None and (d["model"]["arch"] != "dense" or self.threads != 1):
            made["threads"] = self.threads
        if self.slot is not None and artifact in self.stacked:
            made["stack_slot"] = self.slot
        return made


UNRECORDED = How()


# ----------------------------------------------------------------------------- what each artifact is made from

def split(data: DataConfig, sha256: Mapping[str, str]) -> str:
    """What identifies a split: its settings and the data files' hashes (where the files lie,
    or whether their checksums were checked, changes nothing in the data)."""
    settings = {"b_classes": list(data.b_classes), "b_train_size": data.b_train_size, "valid_size": data.valid_size}
    if data.valid_from != "first":  # added in 0.3.0: the splits made before keep their fingerprints
        settings["valid_from"] = data.valid_from
    if data.b_sample != "first":  # added in 0.6.0: likewise
        settings["b_sample"] = {"data_seed": data.b_sample, "draw": DRAW}
    return fingerprint(settings, dict(sha256))


def model_a(cfg: Config, sha256: Mapping[str, str], how: How = UNRECORDED) -> dict[str, Any]:
    """Model A trains on the eight classes that are not task B's, validates on the validation
    slice's; task B's training size changes neither."""
    return _model_a(cfg.to_dict(), sha256, how)


def encoder(cfg: Config, sha256: Mapping[str, str], method: str, how: How = UNRECORDED) -> dict[str, Any]:
    """An encoder learns from every training image, without labels: the pair does not matter."""
    return _encoder(cfg.to_dict(), sha256, method, how)


def of(need: "str | Need", cfg: Config, sha256: Mapping[str, str], how: How = UNRECORDED) -> dict[str, Any]:
    """What `need` is made from under `cfg` (trained as `how` says)."""
    return _of(parse(need), cfg.to_dict(), sha256, how)


def contender(cfg: Config, sha256: Mapping[str, str], name: str, built_on: Mapping[str, str],
              how: How = UNRECORDED) -> dict[str, Any]:
    """A trained contender (the baseline too): the whole split, its sections, and the
    fingerprints of what it was built on (`built_on`: need -> fingerprint)."""
    return _contender(cfg.to_dict(), sha256, name, built_on, how)


def run(cfg: Config, sha256: Mapping[str, str], name: str, how: How = UNRECORDED) -> str:
    """A study's results line: the contender, what it was built on, and the baseline paired with it.

    `cfg` is the run's own (`RunKey.config`): its seed, pair, size, reuse depth and rates; `how`
    how the study trained it (its threads, its place in a stack).
    """
    d = cfg.to_dict()
    built_on = {str(need): fingerprint(_of(need, d, sha256, how)) for need in needs_of(contenders.get(name))}
    # A tuned run's validation scores depend on what scored them; its trial's settings are in the
    # sections already, and the budget is not the run's (a grown budget keeps the trials made).
    tune = d.get("tune") or {}
    judged = [{"tune.on": tune.get("on"), "tune.sampler": tune.get("sampler")}] if tune.get("trials") else []
    return fingerprint(_contender(d, sha256, name, built_on, how), _contender(d, sha256, "baseline", {}, how), *judged)


def stage_sections(need: "str | Need") -> tuple[str, ...]:
    """The config sections only the stage that makes `need` reads: [train_a] for model A,
    [pretrain] and the method's own section for an encoder."""
    need = parse(need)
    return ("train_a",) if isinstance(need, ModelA) else ("pretrain", *contenders.get(need.method).own_sections())


def dataset(sha256: Mapping[str, str], verified: bool) -> dict[str, Any]:
    """What a study directory records of its data: the files' hashes, and whether they were checked
    against the published ones."""
    return {"sha256": dict(sorted(sha256.items())), "verify_checksums": verified}


# The rules, on a config's `to_dict()`: a study checks hundreds of results lines at once.

def _model_a(d: dict, sha256: Mapping[str, str], how: How = UNRECORDED) -> dict[str, Any]:
    return {"format": FORMAT, "artifact": "model_a", **_data(d, sha256, pair=True, b_train=False), **_shared(d),
            **_sections(d, "train_a"), **how.adds(d, "model_a")}


def _encoder(d: dict, sha256: Mapping[str, str], method: str, how: How = UNRECORDED) -> dict[str, Any]:
    need = Encoder(method)
    made = {"format": FORMAT, "artifact": str(need), **_data(d, sha256, pair=False, b_train=False), **_shared(d),
            **_sections(d, *stage_sections(need)), **how.adds(d, str(need))}
    made.pop("pretrain.method")  # which method `pretrain` runs by default, not how this one was made
    return made


def _of(need: Need, d: dict, sha256: Mapping[str, str], how: How = UNRECORDED) -> dict[str, Any]:
    return _model_a(d, sha256, how) if isinstance(need, ModelA) else _encoder(d, sha256, need.method, how)


def _contender(d: dict, sha256: Mapping[str, str], name: str, built_on: Mapping[str, str],
               how: How = UNRECORDED) -> dict[str, Any]:
    return {"format": FORMAT, "artifact": f"contender:{name}", **_data(d, sha256, pair=True, b_train=True),
            **_shared(d), **_sections(d, *contenders.get(name).sections),
            **{f"built_on.{need}": value for need, value in built_on.items()}, **how.adds(d, name)}


def _data(d: dict, sha256: Mapping[str, str], *, pair: bool, b_train: bool) -> dict[str, Any]:
    data = d["data"]
    made = {"data.sha256": dict(sorted(sha256.items()))}
    if pair:
        made["data.b_classes"] = list(data["b_classes"])
    if b_train:
        made["data.b_train_size"] = data["b_train_size"]
        # Only a draw is written: the book's first N leave every fingerprint made before as it was.
        if data.get("b_sample", "first") != "first":
            made["data.b_sample"] = data["b_sample"]
            made["data.b_draw"] = DRAW
    return {**made, "data.valid_size": data["valid_size"], "data.valid_from": data["valid_from"]}


def _shared(d: dict) -> dict[str, Any]:
    return {**_sections(d, "model"), "batch_size": d["batch_size"], "seed": d["seed"]}


def _sections(d: dict, *names: str) -> dict[str, Any]:
    return {k: v for k, v in flatten({name: d[name] for name in names}).items() if not later(k, v)}


def later(key: str, value: Any) -> bool:
    """Whether `key` is one added later (`LATER`) and still at the value everything before had."""
    return key in LATER and value == LATER[key]


# ----------------------------------------------------------------------------- records: stamping and checking

def stamp(record: Mapping[str, Any], made_from: Mapping[str, Any], path: str | Path | None = None) -> dict[str, Any]:
    """`record` with what made it, its fingerprint, and the digest of the model file at `path` as saved."""
    stamped = {**record, "made_from": dict(made_from), "fingerprint": fingerprint(made_from)}
    if path is not None:
        stamped["file_sha256"] = file_sha256(path)
    return stamped


def problem(record: Mapping[str, Any], expected: Mapping[str, Any], path: str | Path | None = None,
            ignore: tuple[str, ...] = ()) -> str | None:
    """Why the artifact `record` describes (its model file at `path`) is not what `expected`
    says is needed, in words that follow its file name; None if it is.

    `ignore`: sections whose settings the consumer leaves to the artifact's own stage (a run
    directory's `transfer` takes whatever epochs `train-a` trained model A for).
    """
    made = record.get("made_from")
    if not isinstance(made, dict) or record.get("fingerprint") != fingerprint(made):
        return "its record does not say what made it (written by fmtransfer 0.4 or older, or edited)"
    why = difference(made, expected, ignore)
    if why is None and path is not None and record.get("file_sha256") != file_sha256(path):
        why = "not the file its record describes (its SHA-256 differs: copied over or replaced since it was made)"
    return why


def difference(recorded: Mapping[str, Any], ours: Mapping[str, Any], ignore: tuple[str, ...] = ()) -> str | None:
    """The first setting in which `recorded` differs from `ours`, said for a user; None if none.

    Example:
        >>> difference({"seed": 43}, {"seed": 42})
        'made for seed 43, this run has seed 42'
    """
    skipped = tuple(f"{section}." for section in ignore)
    for key in dict.fromkeys([*ours, *recorded]):
        if key.startswith(skipped) or recorded.get(key) == ours.get(key):
            continue
        old, new = recorded.get(key), ours.get(key)
        if key == "seed":
            return f"made for seed {old}, this run has seed {new}"
        if key == "data.sha256":
            files = sorted(k for k in {*(old or {}), *(new or {})} if (old or {}).get(k) != (new or {}).get(k))
            return f"made from other dataset files (SHA-256 of {', '.join(files)} differs)"
        if key == "format":
            return f"made by another version of fmtransfer (record format {old}, this one reads {new})"
        if key == "artifact":
            return f"made as {old}, not {new}"
        return f"made with {key} {_shown(old)}, this run has {_shown(new)}"
    return None


def _shown(value: Any) -> str:
    if value is None:
        return "(none)"
    return value if isinstance(value, str) else str(value)


# ----------------------------------------------------------------------------- a study directory's, as in 0.4

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
    """What a results line carries as `settings`: the settings its run depended on beyond the
    grid's axes (pretraining's too, for a contender built on a pretrained encoder), so a line
    made with other settings is never mixed in, whatever study.json says. Lines after 0.4 also
    carry `fingerprint` (`run`), which covers the axes, the data and the rest."""
    c = contenders.get(contender) if contender in contenders.names() else None
    pretrained = c is not None and any(isinstance(n, Encoder) for n in needs_of(c))
    own = own_sections_fingerprint(cfg, contender)
    return fingerprint(settings_fingerprint(cfg), pretrain_fingerprint(cfg) if pretrained else None,
                       *([own] if own else []))


def own_sections_fingerprint(cfg: Config, contender: str) -> str | None:
    """The settings of a contender's own sections ([gan], [l2_sp], ...), None if it has none."""
    own = contenders.get(contender).own_sections() if contender in contenders.names() else ()
    d = cfg.to_dict()
    kept = {s: {k: v for k, v in d[s].items() if not later(f"{s}.{k}", v)} for s in own}
    kept = {s: values for s, values in kept.items() if values}  # a section of later keys only, at their defaults
    return fingerprint(kept) if kept else None


def pretrain_fingerprint(cfg: Config) -> str:
    return fingerprint({k: v for k, v in cfg.pretrain.to_dict().items() if k != "method"})
