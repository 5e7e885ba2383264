"""What a study's runs share, kept in its `models/` directory: model A per (seed, pair), each encoder per seed."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from fmtransfer import fingerprints
from fmtransfer.config import Config
from fmtransfer.errors import DataError
from fmtransfer.io import write_text_atomic
from fmtransfer.needs import Encoder, ModelA, Need
from fmtransfer.resolver import Resolver


class StudyStore:
    """A study's models/ directory as a store of `resolver.Resolver`: a saved model is used only
    if its record says it was made from exactly what the run needs and the file is the one the
    record describes (`fingerprints.problem`); anything else (another seed's file copied in, a
    model file copied over, settings changed, a record from fmtransfer 0.4 or older) is made again.
    """

    REMEDY = "delete it and {record}, and run the study again (they are retrained)"

    def __init__(self, directory: Path, pair: tuple[int, int], seed: int):
        self.dir, self.pair, self.seed = directory, pair, seed

    def path(self, need: Need) -> Path:
        if isinstance(need, ModelA):
            return self.dir / f"a-seed{self.seed}-pair{self.pair[0]}v{self.pair[1]}.keras"
        assert isinstance(need, Encoder)
        return self.dir / f"encoder-{need.method}-seed{self.seed}.keras"

    def find(self, need: Need, made_from: dict) -> dict | None:
        path = self.path(need)
        record_path = path.with_suffix(".json")
        if not (path.is_file() and record_path.is_file()):
            return None
        try:
            record = json.loads(record_path.read_text(encoding="utf-8"))
            if not isinstance(record, dict):
                raise ValueError("not a JSON object")
        except ValueError:
            raise DataError(f"{record_path} is unreadable; " + self.REMEDY.format(record=path.name),
                            path=record_path) from None
        return record if fingerprints.problem(record, made_from, path) is None else None

    def load(self, need: Need, record: dict) -> Any:
        from fmtransfer import models

        path = self.path(need)
        return models.load_model(path, remedy=self.REMEDY.format(record=path.with_suffix(".json").name))

    def save(self, need: Need, model: Any, record: dict, made_from: dict) -> dict:
        """Drop the stale record first: until the new one is written, a crash leaves a model file
        with no record, which is made again rather than trusted."""
        from fmtransfer import models

        path = self.path(need)
        record_path = path.with_suffix(".json")
        record_path.unlink(missing_ok=True)
        models.save_model(model, path)
        record = fingerprints.stamp(record, made_from, path)
        write_text_atomic(record_path, json.dumps(record))
        return record


class Cache(Resolver):
    """Model A and pretrained encoders of a study, saved in its directory and loaded on resume.

    `train_a`: () -> (model A, ModelAResult, seconds or None); a stack trains its seeds' model A together.
    `how`: the study's threads and the seed's place in its stack (`fingerprints.How`).
    """

    def __init__(self, study_dir: Path, cfg: Config, split, pair: tuple[int, int], seed: int, train_a=None,
                 how: fingerprints.How = fingerprints.UNRECORDED):
        super().__init__(cfg, split, StudyStore(study_dir / "models", pair, seed), train_a=train_a, how=how)
