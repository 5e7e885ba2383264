"""Study directories written from numbers, for the report's and the claims' statistics: a
study.json and results lines as the runner writes them, without training anything."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from fmtransfer.config import Config


def write_study(directory: Path, gains: dict, *, seeds=range(42, 52), arch: str = "dense", sizes=(200,),
                presets=("book",), pairs=((5, 6),), draws=None, sd: float = 0.01, rng_seed: int = 0,
                config: dict | None = None) -> Path:
    """A finished study: for each contender, its true mean gain (accuracy units) at each size
    (a number, or size -> gain). Baselines are drawn once per (seed, pair, size, preset, draw);
    each run adds the gain plus noise of SD `sd`, rounded to the 1/2,000 steps of a real test
    set. `draws`: data seeds, written as each line's `data_seed` (a grid axis must read them)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    cfg = Config().replace(**{"model.arch": arch, "study.seeds": list(seeds), "study.presets": list(presets),
                              "study.pairs": [list(p) for p in pairs], "study.b_train_sizes": list(sizes),
                              "contenders": ["baseline", *gains], **(config or {})})
    (directory / "study.json").write_text(json.dumps({"config": cfg.to_dict()}))
    rng = np.random.default_rng(rng_seed)
    lines = []
    for pair in pairs:
        for size in sizes:
            for preset in presets:
                for draw in (draws or [None]):
                    for seed in seeds:
                        base = float(np.clip(np.round((0.97 + rng.normal(0, sd)) * 2000) / 2000, 0, 1))
                        for name, gain in gains.items():
                            g = gain[size] if isinstance(gain, dict) else gain
                            acc = float(np.clip(np.round((base + g + rng.normal(0, sd)) * 2000) / 2000, 0, 1))
                            line = {"id": f"seed{seed}-pair{pair[0]}v{pair[1]}-n{size}-reuseall-{preset}"
                                          + ("" if draw is None else f"-d{draw}") + f"-{name}",
                                    "seed": seed, "pair": list(pair), "b_train_size": size, "reuse_layers": "all",
                                    "preset": preset, "contender": name, "baseline": {"test_accuracy": base},
                                    "result": {"test_accuracy": acc}}
                            if draw is not None:
                                line["data_seed"] = draw
                            lines.append(line)
    (directory / "results.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    return directory
