"""What a run's numbers depend on beyond its settings (docs/architecture.md, "The same numbers
however a study runs"), in one invocation:

- threads: configs/quick.toml with one model-A epoch, dense and cnn, each in a fresh process on
  1, 2 and 4 intra-op threads (and 2 intra with 1, 2, 4 inter; 4 under `taskset -c 0`): the test
  losses of model A, the baseline and transfer from A;
- stacks: the book's dense baseline, 5 epochs, seed 3 trained in slots 0-7 of stacks of other
  seeds: whether its weights equal slot 0's, and those of the same slot beside other seeds.

    .venv/bin/python bench/determinism.py

Needs the real Fashion-MNIST (see README, "The data"). Prints one JSON object.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

_RUN = """
import json, sys, fmtransfer
cfg = fmtransfer.load_config("configs/quick.toml", **{"model.arch": sys.argv[1], "train_a.epochs": 1,
                                                      "baseline.epochs": 3})
r = fmtransfer.run_experiment(cfg)
print(json.dumps({"model_a": r.model_a.test_loss, **{k: v.test_loss for k, v in r.contenders.items()}}))
"""

_SLOTS = """
import json, numpy as np
from fmtransfer import runtime, data, models, stacked, training
from fmtransfer.config import Config
runtime.setup()
cfg = Config()
split = data.split_of(data.load(cfg.data), cfg.data)
x, y = training.scaled_part(split.b_train)
def plain(seeds):
    out = []
    for s in seeds:
        runtime.seed_everything(s)
        out.append(models.build_model_b(cfg.model))
    return out
others, weights = [11, 42, 7, 8, 9, 10, 12, 13], {}
for place in range(8):
    for peers in (0, 1):
        seeds = [o + 100 * peers for o in others[:place]] + [3] + ([77, 78] if peers else [])
        ms = plain(seeds)
        stacked.fit(ms, x, y, task=training.BINARY, epochs=5, learning_rate=1e-2, batch_size=32, seeds=seeds)
        weights[place, peers] = ms[place].get_weights()
same = lambda a, b: all(np.array_equal(u, v) for u, v in zip(a, b))
print(json.dumps({f"slot {p}": {"as slot 0": same(weights[p, 0], weights[0, 0]),
                                "as beside other seeds": same(weights[p, 1], weights[p, 0])} for p in range(8)}))
"""


def _python(code: str, *args: str, threads: str | None = None, one_core: bool = False) -> dict:
    env = {**os.environ, **({"FMTRANSFER_THREADS": threads} if threads else {})}
    command = [sys.executable, "-c", code, *args]
    if one_core:
        command = [shutil.which("taskset") or "taskset", "-c", "0", *command]
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    out: dict = {"threads": {}}
    for arch in ("dense", "cnn"):
        for threads in ("1", "2", "4"):
            out["threads"][f"{arch}, {threads} threads"] = _python(_RUN, arch, threads=threads)
    for inter in ("1", "2", "4"):
        out["threads"][f"cnn, 2 intra, {inter} inter"] = _python(_RUN, "cnn", threads=f"2,{inter}")
    out["threads"]["cnn, 4 threads, one core"] = _python(_RUN, "cnn", threads="4", one_core=True)
    out["stack slots"] = _python(_SLOTS)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
