"""The run directory: where the CLI's stages keep their artifacts, and what they remember.

One class, `RunDir`, knows every artifact's path, reads and writes them atomically (a temporary
file renamed into place, so a failed or interrupted stage leaves the previous good file), checks
that what a stage reads back comes from the same split, and remembers the settings later stages
depend on (the split, the architecture, the seed, the batch size) in `config.json`. A stage's own
settings (epochs, learning rates, reuse depth) are not remembered: they default from the config.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from fmtransfer import contenders, fingerprints
from fmtransfer.config import flatten
from fmtransfer.errors import DataError, UsageError
from fmtransfer.io import locked, marked_folder, to_json, write_text_atomic
from fmtransfer.needs import ModelA, Need

# Settings later stages depend on (top-level keys and whole sections): remembered, so a bare
# `train-a` after `split --b-classes 0,2` trains on that split, and `transfer` after
# `train-a --arch cnn` builds a cnn.
REMEMBERED = ("seed", "batch_size", "data", "model")


class RunDir:
    """A run directory's artifacts, by stage.

    Example:
        >>> rd = RunDir("runs/default")
        >>> rd.model_a.name, rd.contender_files("transfer")[1].name
        ('model_a.keras', 'transfer_a.json')
    """

    CONFIG = "config.json"

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._split: tuple | None = None  # (split.npz's identity, Split, manifest) as last saved or loaded
        self.split_arrays = self.path / "split.npz"
        self.split_json = self.path / "split.json"
        self.model_a = self.path / "model_a.keras"
        self.model_a_json = self.path / "model_a.json"
        self.baseline_json = self.path / "baseline.json"
        self.compare_json = self.path / "compare.json"

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    def writing(self, create: bool = False, need_bytes: int | None = None):
        """The directory's lock, held by the stage that writes it, which will write at most
        `need_bytes` (see `locked`). Never a study's folder, or one inside it: a stage's files
        there would be taken for the study's, or replace them."""
        study = marked_folder(self.path)
        if study is not None:
            where = "the study" if study == self.path.resolve() else "inside the study"
            raise UsageError(f"{self.path} is {where} {study}, where only `fmtransfer study` writes; give the "
                             "stage a run directory of its own", path=self.path)
        return locked(self.path, create=create, **({} if need_bytes is None else {"need_bytes": need_bytes}))

    # ------------------------------------------------------------------ paths by contender or method

    def contender_files(self, name: str) -> tuple[Path, Path]:
        """(model, results) of a contender: model_b.keras and baseline.json for the baseline,
        model_b_on_SOURCE.keras and transfer_SOURCE.json for one built on pretrained layers."""
        artifact = contenders.get(name).artifact
        if name == "baseline":
            return self.path / "model_b.keras", self.baseline_json
        return self.path / f"model_b_on_{artifact}.keras", self.path / f"transfer_{artifact}.json"

    def pretrain_files(self, method: str) -> dict[str, Path]:
        """What `pretrain --method METHOD` writes: the encoder B is built on, the method's
        companion model (autoencoder_METHOD.keras, generator_gan.keras), the results, and its
        picture (reconstructions_METHOD.png, samples_gan.png, filters_rbm.png)."""
        c = contenders.get(method)
        return {"encoder": self.path / f"encoder_{method}.keras",
                "companion": self.path / f"{c.companion}_{method}.keras",
                "json": self.path / f"pretrain_{method}.json",
                "picture": self.path / f"{c.picture}_{method}.png"}

    def need_files(self, need: Need) -> tuple[Path, Path]:
        """(model, record) of what a contender builds on: model_a.keras and model_a.json, or
        encoder_METHOD.keras and pretrain_METHOD.json."""
        if isinstance(need, ModelA):
            return self.model_a, self.model_a_json
        files = self.pretrain_files(need.method)
        return files["encoder"], files["json"]

    # ------------------------------------------------------------------ JSON and models

    def read_json(self, path: Path, needed_by: str, made_by: str, schema: dict | None = None) -> dict:
        """A results file an earlier stage wrote, checked against `schema` (key -> type), or an
        error naming the file and the command that makes it again."""
        if not path.is_file():
            raise UsageError(f"{needed_by} needs {path}; run `fmtransfer {made_by} --run {self.path}` first",
                             path=path)
        try:
            found = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise DataError(f"{path}: unreadable ({e}); run `fmtransfer {made_by} --run {self.path}` again",
                            path=path) from None
        problem = None if isinstance(found, dict) else "not a JSON object"
        for key, kind in (schema or {}).items():
            if problem is None and not (isinstance(found.get(key), kind) and not isinstance(found.get(key), bool)):
                problem = f"{key!r} is missing or not {' or '.join(k.__name__ for k in _tuple(kind))}"
        if problem:
            raise DataError(f"{path}: not a results file of fmtransfer ({problem}); run `fmtransfer {made_by} "
                            f"--run {self.path}` again", path=path)
        return found

    def write_json(self, path: Path, obj: dict) -> None:
        write_text_atomic(path, to_json(obj) + "\n")

    @staticmethod
    def save_model(model, path: Path) -> None:
        from fmtransfer import models

        models.save_model(model, path)

    @staticmethod
    def load_model(path: Path, remedy: str):
        from fmtransfer import models

        return models.load_model(path, remedy=remedy)

    # ------------------------------------------------------------------ remembered settings

    def remembered(self) -> dict[str, Any]:
        """The `section.key` settings this directory remembers (empty for a new directory).

        A config.json written by an older fmtransfer holds every setting; only the remembered
        ones are taken from it.
        """
        path = self.path / self.CONFIG
        if not path.is_file():
            return {}
        try:
            stored = json.loads(path.read_text(encoding="utf-8"))
            if not isinstance(stored, dict):
                raise ValueError("not a JSON object")
        except (OSError, ValueError) as e:
            raise DataError(f"{path}: unusable remembered settings ({e}); delete it, or run "
                            f"`fmtransfer split --run {self.path}` again", path=path) from None
        return flatten({k: v for k, v in stored.items() if k in REMEMBERED})

    def remember(self, cfg) -> None:
        settings = cfg.to_dict()
        self.write_json(self.path / self.CONFIG, {k: settings[k] for k in REMEMBERED})

    # ------------------------------------------------------------------ the split

    def save_split(self, split, manifest: dict) -> None:
        """split.npz (the dataset rows of every part, and the manifest) is the commit, one file
        replaced at once; split.json is its readable copy, written after."""
        split.save(self.split_arrays, manifest)
        self.write_json(self.split_json, manifest)
        self._split = (self._identity(), split, manifest)

    def _identity(self) -> tuple:
        stat = self.split_arrays.stat()
        return stat.st_ino, stat.st_size, stat.st_mtime_ns

    def split_manifest(self, needed_by: str) -> dict:
        """The split's manifest, without loading the data."""
        return self._read_split(needed_by)[0]

    def _read_split(self, needed_by: str):
        from fmtransfer import data

        if not self.split_arrays.is_file():
            self.read_json(self.split_json, needed_by, "split")  # names split.json if it is missing too
            raise UsageError(f"{needed_by} needs {self.split_arrays}; run `fmtransfer split --run {self.path}` first",
                             path=self.split_arrays)
        manifest, indices, old = data.Split.read(self.split_arrays)
        if old is not None:
            manifest = self.read_json(self.split_json, needed_by, "split", SPLIT_SCHEMA)
        return manifest, indices, old

    def load_split(self, needed_by: str):
        """(Split, manifest): the parts rebuilt from the dataset files, checked to be the very
        files (SHA-256) the split was made from. Kept while split.npz is unchanged, so the stages
        of one `run` read and check the dataset once."""
        if self._split and self.split_arrays.is_file() and self._split[0] == self._identity():
            return self._split[1], self._split[2]
        split, manifest = self._load_split(needed_by)
        self._split = (self._identity(), split, manifest)
        return split, manifest

    def _load_split(self, needed_by: str):
        from fmtransfer import data

        manifest, indices, old = self._read_split(needed_by)
        if old is not None:  # an fmtransfer 0.1 split, with the images inside: still loads
            if old.fingerprint != manifest.get("fingerprint"):
                raise DataError(f"{self.split_arrays} and {self.split_json} come from different splits; "
                                f"run `fmtransfer split --run {self.path}` again", path=self.split_arrays)
            old.sha256 = dict(manifest.get("sha256") or {})
            return old, manifest
        again = f"run `fmtransfer split --run {self.path}` again"
        for key, kind in {**SPLIT_SCHEMA, "sha256": dict, "source": str}.items():
            if not isinstance(manifest.get(key), kind):
                raise DataError(f"{self.split_arrays}: not a split of fmtransfer ({key!r}); {again}",
                                path=self.split_arrays)
        if not self.split_json.is_file() or _json_or_none(self.split_json).get("fingerprint") != manifest["fingerprint"]:
            self.write_json(self.split_json, manifest)  # killed between the two writes: the copy follows
        source = Path(manifest["source"])
        if not all((source / name).is_file() for name in data.FILES.values()):
            raise DataError(f"{self.split_arrays} was made from the dataset in {source}, which is no longer there; "
                            f"put the files back, or {again}", path=source)
        hashes = {name: data.sha256(source / name) for name in data.FILES.values()}
        if hashes != manifest["sha256"]:
            raise DataError(f"the dataset files in {source} are not the ones {self.split_arrays} was made from "
                            f"(SHA-256 differs); {again}", path=source)
        raw = data.load_raw(source, expected=None, hashes=hashes)
        b_classes = tuple(manifest["b_classes"])
        try:
            split = data.Split.from_indices(raw, b_classes, indices, manifest["fingerprint"])
        except (IndexError, ValueError, TypeError):
            raise DataError(f"{self.split_arrays}: its rows do not fit the dataset in {source}; {again}",
                            path=self.split_arrays) from None
        return split, manifest

    def check_same_split(self, meta: dict, manifest: dict, what: Path, made_by: str) -> None:
        """`what` must have been trained on this directory's split: a model A trained with other
        task-B classes has seen the task-B images."""
        if meta.get("split_fingerprint") != manifest.get("fingerprint"):
            raise UsageError(f"{what} was trained on another split than {self.split_arrays}; "
                             f"run `fmtransfer {made_by} --run {self.path}` first", path=what)


class RunDirStore:
    """A run directory's model A and encoders as `train-a` and `pretrain` left them: a store of
    `resolver.Resolver` that never makes a need.

    A missing one names the command that makes it; one that is not what this run needs (another
    split, seed, architecture, dataset, or a model file copied over it) is refused in one line
    naming the file, what it was made from, and the command that makes it again. The settings of
    the stage that made it ([train_a], [pretrain], a method's own) are that stage's to choose, so
    they are not compared.
    """

    def __init__(self, rd: RunDir, manifest: dict, needed_by: str = "transfer"):
        self.rd, self.manifest, self.needed_by = rd, manifest, needed_by

    def _again(self, need: Need) -> str:
        return f"run `fmtransfer {command_for(need)} --run {self.rd.path}`"

    def find(self, need: Need, made_from: dict) -> dict:
        path, record_path = self.rd.need_files(need)
        record = self.rd.read_json(record_path, self.needed_by, command_for(need), TRAINED_SCHEMA)
        self.rd.check_same_split(record, self.manifest, path, command_for(need))
        if not path.is_file():
            raise UsageError(f"{self.needed_by} needs {path}; {self._again(need)} first", path=path)
        why = fingerprints.problem(record, made_from, path, ignore=fingerprints.stage_sections(need))
        if why:
            raise DataError(f"{path}: {why}; {self._again(need)} again", path=path)
        return record

    def load(self, need: Need, record: dict):
        return self.rd.load_model(self.rd.need_files(need)[0], remedy=f"{self._again(need)} again")

    def save(self, need: Need, model, record: dict, made_from: dict) -> dict:
        """The model, then its record: killed between the two, the old record's digest no longer
        matches the new file, which is refused rather than trusted."""
        path, record_path = self.rd.need_files(need)
        self.rd.save_model(model, path)
        record = fingerprints.stamp(record, made_from, path)
        self.rd.write_json(record_path, record)
        return record


def command_for(need: Need) -> str:
    """The command that makes `need` in a run directory."""
    return "train-a" if isinstance(need, ModelA) else f"pretrain --method {need.method}"


def _json_or_none(path: Path) -> dict:
    try:
        found = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return found if isinstance(found, dict) else {}


NUMBER = (int, float)
# What later stages read back from each kind of results file.
SPLIT_SCHEMA = {"fingerprint": str, "data": dict, "b_classes": list, "sizes": dict}
TRAINED_SCHEMA = {"split_fingerprint": str}
SCORED_SCHEMA = {"split_fingerprint": str, "test_accuracy": NUMBER, "test_loss": NUMBER}


def _tuple(kind) -> tuple:
    return kind if isinstance(kind, tuple) else (kind,)
