"""What a study's runs share, kept in its `models/` directory: model A per (seed, pair), each encoder per seed."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any


from fmtransfer import contenders
from fmtransfer.config import Config
from fmtransfer.errors import DataError, DivergedError
from fmtransfer.io import write_text_atomic
from fmtransfer.study.records import encoder_fingerprint


class Cache:
    """Model A and pretrained encoders of a study, saved in its directory and loaded on resume."""

    def __init__(self, study_dir: Path, cfg: Config, split, pair: tuple[int, int], seed: int, train_a=None):
        self.dir, self.cfg, self.split, self.pair, self.seed = study_dir / "models", cfg, split, pair, seed
        self.info: dict[str, dict] = {}
        self.models: dict[str, Any] = {}
        # () -> (model A, ModelAResult, seconds or None); a stack trains its seeds' model A together.
        self.train_a = train_a or (lambda: (*train_model_a(cfg, split), None))

    def path(self, need: str) -> Path:
        if need == "model_a":
            return self.dir / f"a-seed{self.seed}-pair{self.pair[0]}v{self.pair[1]}.keras"
        return self.dir / f"encoder-{need.partition(':')[2]}-seed{self.seed}.keras"

    def has(self, need: str) -> bool:
        """Whether `need` is made already (in memory or saved), so asking for it trains nothing."""
        return need in self.models or self._saved(need) is not None

    def _saved(self, need: str) -> dict | None:
        """The saved file's record, or None if there is none or it was made with other settings.

        Model A's settings are the whole study's, which the directory's fingerprints guard. An
        encoder's record carries its pretraining settings (`encoder_fingerprint`), so an encoder
        made before a method's section existed or changed is trained again, not reused. A record
        without one is from fmtransfer 0.3.0 or older; it is kept only for a method with no own
        section, whose settings the directory's pretraining fingerprint guarded when it was made.
        """
        path = self.path(need)
        meta = path.with_suffix(".json")
        if not (path.is_file() and meta.is_file()):
            return None
        try:
            info = json.loads(meta.read_text(encoding="utf-8"))
            if not isinstance(info, dict):
                raise ValueError("not a JSON object")
        except ValueError:
            raise DataError(f"{meta} is unreadable; delete it and {path.name}, and run the study again "
                            "(they are retrained)", path=meta) from None
        if need != "model_a":
            method = need.partition(":")[2]
            if "settings" in info:
                return info if info["settings"] == encoder_fingerprint(self.cfg, method) else None
            if contenders.get(method).own_sections():
                return None
        return info

    def __getitem__(self, need: str):
        from fmtransfer import models, pretraining

        if need in self.models:
            if isinstance(self.models[need], DivergedError):
                raise self.models[need]
            return self.models[need]
        path = self.path(need)
        meta = path.with_suffix(".json")
        started = time.perf_counter()
        info = self._saved(need)
        if info is not None:
            model = models.load_model(path, remedy=f"delete it and {meta.name}, and run the study again "
                                                   "(they are retrained)")
        else:
            try:
                if need == "model_a":
                    model, a, spent = self.train_a()
                    info = {"test_accuracy": a.test_accuracy, "seed": self.seed, "pair": list(self.pair)}
                    if spent is not None:  # this seed's share of a stack's time
                        started = time.perf_counter() - spent
                else:
                    method = need.partition(":")[2]
                    made = pretraining.pretrain(self.cfg, self.split, method)
                    model = made.encoder
                    info = {**made.scores, "seed": self.seed, "seconds": made.seconds,
                            "settings": encoder_fingerprint(self.cfg, method)}
            except DivergedError as e:  # every run built on it diverged too; do not train it again
                self.models[need] = e
                raise
            # Drop a stale record first: until the new one is written, a crash leaves a model file
            # with no record, which is made again rather than trusted.
            meta.unlink(missing_ok=True)
            models.save_model(model, path)
            write_text_atomic(meta, json.dumps(info))
        self.models[need], self.info[need] = model, {**info, "seconds_here": round(time.perf_counter() - started, 2)}
        return model


def train_model_a(cfg: Config, split):
    from fmtransfer import pipeline

    return pipeline.train_model_a(cfg, split)

