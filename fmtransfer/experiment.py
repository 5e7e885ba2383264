"""The experiment's stages: split, train-a, pretrain, transfer, compare, and the main four in order.

Each stage reads what earlier stages left in the run directory, checks that it belongs to the
same split (a model A trained with other task-B classes has seen the task-B images), writes its
artifacts atomically, and returns a JSON-ready dict. The run directory remembers its settings in
`config.json`, so `fmtransfer split --b-classes 0,2` followed by a bare `fmtransfer train-a`
trains on that split.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from fmtransfer import UsageError
from fmtransfer.config import Config, apply_overrides, load_config
from fmtransfer.data import Split, load_split_from_files, scaled, write_text_atomic
from fmtransfer.report import Reporter, plotting_available, pyplot

SPLIT, SPLIT_JSON, CONFIG_JSON = "split.npz", "split.json", "config.json"
MODEL_A, MODEL_A_JSON = "model_a.keras", "model_a.json"
BASELINE, BASELINE_JSON = "model_b.keras", "baseline.json"
COMPARE_JSON = "compare.json"
SOURCES = ("a", "autoencoder", "greedy")  # what model B can be built on
CONTENDER_NAMES = {"a": "transfer from A", "autoencoder": "autoencoder-pretrained",
                   "greedy": "greedy-pretrained"}


def transfer_paths(source: str) -> tuple[str, str]:
    return f"model_b_on_{source}.keras", f"transfer_{source}.json"


def pretrain_paths(method: str) -> dict[str, str]:
    """What `pretrain --method METHOD` writes: the encoder B is built on, the whole autoencoder,
    the results, and the picture of test images beside their reconstructions."""
    return {"encoder": f"encoder_{method}.keras", "autoencoder": f"autoencoder_{method}.keras",
            "json": f"pretrain_{method}.json", "picture": f"reconstructions_{method}.png"}


# ----------------------------------------------------------------------------- configuration

def resolve_config(run_dir: Path, config_path: str | None, overrides: dict[str, Any]) -> Config:
    """`--config FILE` if given, else the run directory's remembered settings, else the book's;
    then the command-line options on top."""
    if config_path:
        return load_config(config_path, overrides)
    remembered = Path(run_dir) / CONFIG_JSON
    if remembered.is_file():
        try:
            stored = json.loads(remembered.read_text())
            if not isinstance(stored, dict):
                raise ValueError("not a JSON object")
            base = apply_overrides(Config(), _flatten(stored))
        except (OSError, ValueError, UsageError) as e:
            raise UsageError(f"{remembered}: unusable remembered settings ({e}); delete it or pass --config FILE") from None
        return apply_overrides(base, overrides)
    return load_config(None, overrides)


def _flatten(d: dict, prefix: str = "") -> dict:
    flat = {}
    for k, v in d.items():
        if isinstance(v, dict):
            flat.update(_flatten(v, f"{prefix}{k}."))
        else:
            flat[f"{prefix}{k}"] = v
    return flat


def fingerprint(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _write_json(path: Path, obj: dict) -> None:
    from fmtransfer.report import to_json

    write_text_atomic(path, to_json(obj) + "\n")


def read_json(path: Path, needed_by: str, made_by: str) -> dict:
    if not path.is_file():
        raise UsageError(f"{needed_by} needs {path}; run `fmtransfer {made_by} --run {path.parent}` first")
    try:
        found = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise UsageError(f"{path}: unreadable ({e}); run `fmtransfer {made_by}` again") from None
    if not isinstance(found, dict):
        raise UsageError(f"{path}: not a results file of fmtransfer; run `fmtransfer {made_by}` again")
    return found


def _remember(cfg: Config, run_dir: Path) -> None:
    _write_json(run_dir / CONFIG_JSON, cfg.to_dict())


def _with_split_data(cfg: Config, manifest: dict) -> Config:
    """Later stages train on the split that exists, so record its data settings as theirs."""
    data = manifest["data"]
    return cfg.replace(**{f"data.{k}": v for k, v in data.items()})


# ----------------------------------------------------------------------------- training, in memory
# The stages below and `study` share these: each seeds everything first, so a model depends only
# on its settings, not on what ran before it in the process.

def fit_model_a(cfg: Config, the_split: Split, reporter: Reporter):
    """Model A trained on task A; returns (model, history, test scores)."""
    from fmtransfer import models, runtime, training

    runtime.prepare(cfg.seed, cfg.model.arch)
    model = models.build_model_a(cfg.model, n_classes=len(the_split.a_classes))
    return _fit_from_scratch(cfg, model, "model A", cfg.train_a, training.MULTICLASS,
                             the_split.a_train, the_split.a_valid, the_split.a_test, reporter)


def fit_baseline(cfg: Config, the_split: Split, reporter: Reporter):
    """Model B from scratch on task B's few images; returns (model, history, test scores)."""
    from fmtransfer import models, runtime, training

    runtime.prepare(cfg.seed, cfg.model.arch)
    model = models.build_model_b(cfg.model)
    return _fit_from_scratch(cfg, model, "baseline B", cfg.baseline, training.BINARY,
                             the_split.b_train, the_split.b_valid, the_split.b_test, reporter)


def _fit_from_scratch(cfg: Config, model, label: str, section, task, train, valid, test, reporter: Reporter):
    from fmtransfer import training

    with reporter.training(label, section.epochs) as on_epoch:
        history = training.fit(model, *_scaled(train), task=task, epochs=section.epochs,
                               learning_rate=section.learning_rate, batch_size=cfg.batch_size, seed=cfg.seed,
                               validation=_scaled(valid), on_epoch=on_epoch)
    return model, history, training.evaluate(model, *_scaled(test), task=task)


def fit_transfer(cfg: Config, the_split: Split, base, reporter: Reporter, label: str = "B on A",
                 base_name: str = "model A"):
    """model_B_on_A on a clone of `base`: phase 1 frozen, phase 2 unfrozen (all or top K) at the
    lower learning rate. `base` itself is never changed. Returns (model, phases, test, reused)."""
    from fmtransfer import models, runtime, training
    from fmtransfer.config import reuse_count, unfreeze_top

    runtime.prepare(cfg.seed, cfg.model.arch)
    t = cfg.transfer
    reused = reuse_count(t.reuse_layers, len(models.blocks(base)[1]))
    model = models.build_b_on_a(base, reused, name=base_name)  # refuses more layers than `base` has
    top = unfreeze_top(t.unfreeze)
    if top is not None and top > reused:
        raise UsageError(f"option --unfreeze: top:{top} asks for more than the {reused} reused layers")
    x, y = _scaled(the_split.b_train)
    phases = []
    plan = [("frozen", False, None, t.freeze_epochs, t.frozen_learning_rate),
            ("fine-tune", True, top, t.fine_tune_epochs, t.fine_tune_learning_rate)]
    for i, (name, trainable, top_k, epochs, lr) in enumerate(plan):
        models.set_reused_trainable(model, trainable, top_k)
        with reporter.training(f"{label}: {name}", epochs) as on_epoch:
            history = training.fit(model, x, y, task=training.BINARY, epochs=epochs, learning_rate=lr,
                                   batch_size=cfg.batch_size, seed=[cfg.seed, i + 1],
                                   validation=_scaled(the_split.b_valid), on_epoch=on_epoch)
        phases.append({"name": name, "epochs": epochs, "learning_rate": lr,
                       "trainable_weights": len(model.trainable_weights), "history": history})
    test = training.evaluate(model, *_scaled(the_split.b_test), task=training.BINARY)
    return model, phases, test, reused


# ----------------------------------------------------------------------------- stages

def split(cfg: Config, run_dir: Path, reporter: Reporter | None = None) -> dict:
    """Find and verify Fashion-MNIST, make the book's split, save it with a manifest."""
    reporter = reporter or Reporter(quiet=True)
    started = time.perf_counter()
    the_split, raw = load_split_from_files(cfg.data)
    data = {"b_classes": list(cfg.data.b_classes), "b_train_size": cfg.data.b_train_size,
            "valid_size": cfg.data.valid_size, "verify_checksums": cfg.data.verify_checksums}
    manifest = {
        "stage": "split", "data": data, "b_classes": list(the_split.b_classes),
        "a_classes": the_split.a_classes, "sizes": the_split.sizes(), "class_counts": the_split.class_counts(),
        "source": str(raw.source), "sha256": raw.sha256,
        # Whether checksums were checked changes nothing in the data, so not the fingerprint.
        "fingerprint": fingerprint({k: v for k, v in data.items() if k != "verify_checksums"}, raw.sha256),
    }
    the_split.fingerprint = manifest["fingerprint"]
    the_split.save(run_dir / SPLIT)
    manifest["seconds"] = round(time.perf_counter() - started, 3)
    _write_json(run_dir / SPLIT_JSON, manifest)
    _remember(cfg, run_dir)
    return manifest


def load_split(run_dir: Path, needed_by: str) -> tuple[Split, dict]:
    manifest = read_json(run_dir / SPLIT_JSON, needed_by, "split")
    path = run_dir / SPLIT
    if not path.is_file():
        raise UsageError(f"{needed_by} needs {path}; run `fmtransfer split --run {run_dir}` first")
    the_split = Split.load(path)
    if the_split.fingerprint != manifest.get("fingerprint"):
        raise UsageError(f"{path} and {run_dir / SPLIT_JSON} come from different splits; "
                         f"run `fmtransfer split --run {run_dir}` again")
    return the_split, manifest


def train_a(cfg: Config, run_dir: Path, reporter: Reporter | None = None) -> dict:
    """Train model A on task A's eight classes; save it with its history and test accuracy."""
    reporter = reporter or Reporter(quiet=True)
    the_split, manifest = load_split(run_dir, "train-a")
    cfg = _with_split_data(cfg, manifest)
    from fmtransfer import models, runtime

    started = time.perf_counter()
    model, history, test = fit_model_a(cfg, the_split, reporter)
    models.save_model(model, run_dir / MODEL_A)
    result = {
        "stage": "train-a", "test_accuracy": test["accuracy"], "test_loss": test["loss"],
        "epochs": cfg.train_a.epochs, "learning_rate": cfg.train_a.learning_rate, "history": history,
        "seconds": round(time.perf_counter() - started, 3), "split_fingerprint": manifest["fingerprint"],
        "model": cfg.to_dict()["model"], "seed": cfg.seed, "batch_size": cfg.batch_size,
        "config": cfg.to_dict(), "versions": runtime.versions(),
    }
    _write_json(run_dir / MODEL_A_JSON, result)
    _remember(cfg, run_dir)
    return result


def _scaled(part: tuple) -> tuple:
    return scaled(part[0]), part[1]


def transfer(cfg: Config, run_dir: Path, reporter: Reporter | None = None, model_a_path: str | None = None,
             source: str = "a") -> dict:
    """Build model B on a clone of a pretrained model's lower layers; train frozen, then unfrozen."""
    reporter = reporter or Reporter(quiet=True)
    the_split, manifest = load_split(run_dir, "transfer")
    cfg = _with_split_data(cfg, manifest)
    base_path, base_meta = _pretrained_source(run_dir, source, model_a_path, manifest)
    from fmtransfer import models, runtime

    runtime.prepare(cfg.seed, cfg.model.arch)  # loading runs ops, which fixes TF's thread pools
    base = models.load_model(base_path)
    before = models.weights_digest(base.get_weights())
    started = time.perf_counter()
    model, phases, test, reused = fit_transfer(cfg, the_split, base, reporter, label="B on A" if source == "a" else f"B on {source}",
                                               base_name=str(base_path))
    model_path, json_name = transfer_paths(source)
    models.save_model(model, run_dir / model_path)
    result = {
        "stage": "transfer", "source": source, "pretrained": str(base_path), "arch": models.arch_of(base),
        "test_accuracy": test["accuracy"], "test_loss": test["loss"], "phases": phases,
        "reuse_layers": reused, "unfreeze": cfg.transfer.unfreeze,
        "pretrained_unchanged": models.weights_digest(base.get_weights()) == before,
        "seconds": round(time.perf_counter() - started, 3), "split_fingerprint": manifest["fingerprint"],
        "pretrained_meta": base_meta, "config": cfg.to_dict(), "versions": runtime.versions(),
    }
    _write_json(run_dir / json_name, result)
    _remember(cfg, run_dir)
    return result


def _pretrained_source(run_dir: Path, source: str, explicit: str | None, manifest: dict) -> tuple[Path, dict]:
    """The model to build B on, checked to come from this split (its pretraining saw no task B)."""
    if explicit:
        return Path(explicit), {"path": explicit, "checked_against_split": False}
    if source == "a":
        path, meta_name, made_by = run_dir / MODEL_A, MODEL_A_JSON, "train-a"
    else:
        names = pretrain_paths(source)
        path, meta_name, made_by = run_dir / names["encoder"], names["json"], f"pretrain --method {source}"
    meta = read_json(run_dir / meta_name, "transfer", made_by)
    if meta.get("split_fingerprint") != manifest["fingerprint"]:
        raise UsageError(f"{path} was trained on another split than {run_dir / SPLIT}; "
                         f"run `fmtransfer {made_by} --run {run_dir}` first")
    if not path.is_file():
        raise UsageError(f"transfer needs {path}; run `fmtransfer {made_by} --run {run_dir}` first")
    scores = {k: meta[k] for k in ("test_accuracy", "reconstruction_loss") if k in meta}
    return path, {"path": str(path), "checked_against_split": True, **scores}


def pretrain(cfg: Config, run_dir: Path, reporter: Reporter | None = None, plot: bool | None = None) -> dict:
    """Pretrain the hidden stack as an autoencoder on unlabelled training images (ch. 11.2.2).

    Trains on the first `pretrain.unlabelled_size` of the split's training images, labels
    ignored; never on validation images (they give the per-epoch loss) or test images (they give
    the final reconstruction loss and the picture). `plot`: None draws the picture when
    matplotlib is installed, True requires it, False skips it.
    """
    from fmtransfer import pretraining

    reporter = reporter or Reporter(quiet=True)
    if plot:
        pyplot("--plot")  # fail before training, not after
    the_split, manifest = load_split(run_dir, "pretrain")
    cfg = _with_split_data(cfg, manifest)
    p = cfg.pretrain
    available = len(the_split.unlabelled)
    if p.unlabelled_size > available:
        raise UsageError(f"option --unlabelled-size: the split has {available} training images, asked for "
                         f"{p.unlabelled_size}")
    from fmtransfer import models, runtime, training

    started = time.perf_counter()
    runtime.prepare(cfg.seed, cfg.model.arch)
    x = scaled(the_split.unlabelled[:p.unlabelled_size])
    # Task A's and task B's parts of a set hold all its images between them.
    x_valid = scaled(np.concatenate([the_split.a_valid[0], the_split.b_valid[0]]))
    x_test = scaled(np.concatenate([the_split.a_test[0], the_split.b_test[0]]))
    autoencoder, encoder, steps = pretraining.train(cfg, x, x_valid, reporter)
    test = training.evaluate(autoencoder, x_test, x_test, task=training.RECONSTRUCTION)
    valid = training.evaluate(autoencoder, x_valid, x_valid, task=training.RECONSTRUCTION) if len(x_valid) else {}
    paths = {k: run_dir / name for k, name in pretrain_paths(p.method).items()}
    models.save_model(encoder, paths["encoder"])
    models.save_model(autoencoder, paths["autoencoder"])
    picture = None
    if plot or (plot is None and plotting_available()):
        labels = np.concatenate([np.array(the_split.a_classes)[the_split.a_test[1]],
                                 np.array(the_split.b_classes)[the_split.b_test[1].astype(int)]])
        images, classes = pretraining.one_per_class(x_test, labels)
        pretraining.plot_reconstructions(
            images, training.predict(autoencoder, images), classes, paths["picture"],
            f"{p.method} ({cfg.model.arch}): test reconstruction loss {test['loss']:.4f}")
        picture = str(paths["picture"])
    result = {
        "stage": "pretrain", "method": p.method, "arch": cfg.model.arch,
        "reconstruction_loss": test["loss"], "valid_reconstruction_loss": valid.get("loss"),
        "unlabelled_size": p.unlabelled_size, "epochs": p.epochs, "learning_rate": p.learning_rate,
        "steps": steps, "encoder": str(paths["encoder"]), "autoencoder": str(paths["autoencoder"]),
        "picture": picture, "seconds": round(time.perf_counter() - started, 3),
        "split_fingerprint": manifest["fingerprint"], "config": cfg.to_dict(), "versions": runtime.versions(),
    }
    _write_json(paths["json"], result)
    _remember(cfg, run_dir)
    return result


def baseline(cfg: Config, run_dir: Path, reporter: Reporter | None = None) -> dict:
    """Model B from scratch on the same task-B images; reused if already trained with these settings."""
    reporter = reporter or Reporter(quiet=True)
    manifest = read_json(run_dir / SPLIT_JSON, "compare", "split")
    cfg = _with_split_data(cfg, manifest)
    settings = {"split": manifest["fingerprint"], "model": cfg.to_dict()["model"],
                "baseline": cfg.to_dict()["baseline"], "seed": cfg.seed, "batch_size": cfg.batch_size}
    key = fingerprint(settings)
    meta_path = run_dir / BASELINE_JSON
    if meta_path.is_file() and (run_dir / BASELINE).is_file():
        try:
            meta = json.loads(meta_path.read_text())
        except (OSError, ValueError):
            meta = {}  # unreadable: stale, train it again
        if isinstance(meta, dict) and meta.get("fingerprint") == key:
            reporter.info(f"baseline: reusing {run_dir / BASELINE} (trained with the same settings)")
            return meta
    from fmtransfer import models, runtime

    the_split, manifest = load_split(run_dir, "compare")
    started = time.perf_counter()
    model, history, test = fit_baseline(cfg, the_split, reporter)
    models.save_model(model, run_dir / BASELINE)
    result = {"stage": "baseline", "test_accuracy": test["accuracy"], "test_loss": test["loss"],
              "epochs": cfg.baseline.epochs, "learning_rate": cfg.baseline.learning_rate, "history": history,
              "seconds": round(time.perf_counter() - started, 3), "fingerprint": key,
              "split_fingerprint": manifest["fingerprint"], "config": cfg.to_dict(),
              "versions": runtime.versions()}
    _write_json(meta_path, result)
    return result


def compare(cfg: Config, run_dir: Path, reporter: Reporter | None = None) -> dict:
    """Baseline against every model B built on pretrained layers, all on test B."""
    manifest = read_json(run_dir / SPLIT_JSON, "compare", "split")
    trained = {s: read_json(run_dir / transfer_paths(s)[1], "compare", "transfer")
               for s in SOURCES if (run_dir / transfer_paths(s)[1]).is_file()}
    if not trained:
        raise UsageError(f"compare needs a transferred model in {run_dir}; run `fmtransfer transfer --run {run_dir}` first")
    for source, meta in trained.items():
        if meta.get("split_fingerprint") != manifest["fingerprint"]:
            raise UsageError(f"{run_dir / transfer_paths(source)[0]} was trained on another split; "
                             f"run `fmtransfer transfer --run {run_dir}` first")
    cfg = _with_split_data(cfg, manifest)
    for source, meta in trained.items():
        # A baseline of another family would make the comparison say nothing about transfer.
        if meta.get("arch", cfg.model.arch) != cfg.model.arch:
            raise UsageError(f"{run_dir / transfer_paths(source)[0]} is a {meta['arch']} network but the baseline "
                             f"would be {cfg.model.arch}; pass --arch {meta['arch']}, or retrain it in another --run")
        # Nor would a baseline of another seed or shape: the comparison is paired.
        theirs = meta.get("config", {})
        for name, ours in (("seed", cfg.seed), ("batch_size", cfg.batch_size), ("model", cfg.to_dict()["model"])):
            if name in theirs and theirs[name] != ours:
                raise UsageError(f"{run_dir / transfer_paths(source)[0]} was trained with {name} {theirs[name]}, "
                                 f"the baseline would use {ours}; give compare the same settings, or rerun "
                                 f"`fmtransfer transfer --run {run_dir}` with these")
    base = baseline(cfg, run_dir, reporter)
    contenders = {"baseline": _scores(base)}
    for source, meta in trained.items():
        scores = _scores(meta)
        scores["error_rate_ratio"] = error_rate_ratio(base["test_accuracy"], meta["test_accuracy"])
        contenders[CONTENDER_NAMES[source]] = scores
    first = "a" if "a" in trained else next(iter(trained))
    transfer_meta, main = trained[first], contenders[CONTENDER_NAMES[first]]
    t = transfer_meta["config"]["transfer"]
    result = {
        "stage": "compare",
        "baseline": contenders["baseline"],
        "transfer": {k: main[k] for k in ("test_accuracy", "test_loss")},
        "error_rate_ratio": main["error_rate_ratio"],
        "contenders": contenders,
        "b_classes": list(manifest["b_classes"]), "b_train_size": manifest["sizes"]["b_train"],
        "settings": {"arch": cfg.model.arch, "seed": cfg.seed, "baseline_epochs": cfg.baseline.epochs,
                     "baseline_lr": cfg.baseline.learning_rate,
                     "reuse_layers": transfer_meta["reuse_layers"], "freeze_epochs": t["freeze_epochs"],
                     "frozen_lr": t["frozen_learning_rate"], "fine_tune_epochs": t["fine_tune_epochs"],
                     "fine_tune_lr": t["fine_tune_learning_rate"], "unfreeze": t["unfreeze"]},
        "config": cfg.to_dict(),
    }
    _write_json(run_dir / COMPARE_JSON, result)
    return result


def _scores(meta: dict) -> dict:
    return {"test_accuracy": meta["test_accuracy"], "test_loss": meta["test_loss"]}


def error_rate_ratio(baseline_accuracy: float, transfer_accuracy: float) -> float:
    """By how much transfer divided the error rate: >1 is a gain, <1 a loss, inf a perfect model."""
    base_err, transfer_err = 1 - baseline_accuracy, 1 - transfer_accuracy
    if transfer_err <= 0:
        return float("inf") if base_err > 0 else 1.0
    return base_err / transfer_err


def run(cfg: Config, run_dir: Path, reporter: Reporter | None = None) -> dict:
    """All four stages in order: the main job."""
    reporter = reporter or Reporter(quiet=True)
    started = time.perf_counter()
    split_result = split(cfg, run_dir, reporter)
    a = train_a(cfg, run_dir, reporter)
    b_on_a = transfer(cfg, run_dir, reporter)
    result = compare(cfg, run_dir, reporter)
    result["stages"] = {"split": {"sizes": split_result["sizes"]},
                        "train_a": {"test_accuracy": a["test_accuracy"], "seconds": a["seconds"]},
                        "transfer": {"test_accuracy": b_on_a["test_accuracy"], "seconds": b_on_a["seconds"]}}
    result["seconds"] = round(time.perf_counter() - started, 3)
    _write_json(run_dir / COMPARE_JSON, result)
    return result
