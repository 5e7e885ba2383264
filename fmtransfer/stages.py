"""The CLI's stages: the in-memory pipeline's steps, each reading and writing a run directory.

Each stage reads what earlier stages left in the `RunDir`, checks it is what this run needs (its
record's fingerprint: the same split, since a model A trained with other task-B classes has seen
the task-B images, and the same dataset, seed and architecture; and the model file's digest),
trains, writes its artifacts atomically with their fingerprints, and returns a JSON-ready dict
(`run` and `compare`: an ExperimentResult).
"""

from __future__ import annotations

import functools
import time
from pathlib import Path

from fmtransfer import contenders, fingerprints, resolver, runtime
from fmtransfer.config import Config
from fmtransfer.errors import ConfigError, DataError, UsageError
from fmtransfer.io import file_sha256
from fmtransfer.needs import MODEL_A, Encoder, needs_of, parse
from fmtransfer.report import Reporter, figures, plotting_available
from fmtransfer.results import ExperimentResult, ModelAResult, paired_with_baseline
from fmtransfer.rundir import SCORED_SCHEMA, TRAINED_SCHEMA, RunDir, RunDirStore, command_for


SMALL_FILES = 2**20  # a split's indices and every JSON record of a stage: kilobytes, with room


def model_bytes(cfg: Config) -> int:
    """At most what one saved model of `cfg.model` takes: float32 weights, twice for the archive's
    own overhead and a temporary copy beside the old file while it is replaced."""
    m = cfg.model
    if m.arch == "dense":
        sizes = [28 * 28, *m.hidden]
        params = sum(a * b + b for a, b in zip(sizes, sizes[1:]))
        top = sizes[-1]
    else:
        channels = [1, *m.hidden]
        params = sum(9 * a * b + b for a, b in zip(channels, channels[1:]))
        top = (28 >> len(m.hidden)) ** 2 * m.hidden[-1]
        if m.cnn_dense:
            params, top = params + top * m.cnn_dense + m.cnn_dense, m.cnn_dense
    params += top * 8 + 8  # model A's head, the widest
    return 2 * 4 * params + SMALL_FILES


def _writing(create: bool = False, models: int = 1):
    """A stage holds its run directory's lock while it runs: a second process writing the same
    directory is refused, not interleaved. It writes at most `models` models (a function of the
    config, for `run`) and small files: with less free space it is refused before it starts."""

    def decorate(stage):
        @functools.wraps(stage)
        def wrapper(cfg: Config, rd: RunDir, *args, **kwargs):
            count = models(cfg) if callable(models) else models
            with rd.writing(create=create, need_bytes=count * model_bytes(cfg) + SMALL_FILES):
                return stage(cfg, rd, *args, **kwargs)

        return wrapper

    return decorate


def _quiet(reporter: Reporter | None) -> Reporter:
    return reporter or Reporter(quiet=True)


def with_split(cfg: Config, manifest: dict, rd: RunDir) -> Config:
    """Later stages train on the split that exists, so its data settings are theirs; but a sample
    asked for that is not the split's is refused, never silently replaced by it."""
    data = manifest.get("data") if isinstance(manifest.get("data"), dict) else {}
    theirs = data.get("b_sample", "first")  # a split made before draws holds the first N
    if theirs != cfg.data.b_sample:
        held = "the first images" if theirs == "first" else f"data seed {theirs}'s draw"
        raise ConfigError("data.b_sample", f"the split in {rd.path} holds {held} of task B; run `fmtransfer split "
                                           f"--b-sample {cfg.data.b_sample} --run {rd.path}` to train on that "
                                           "sample instead")
    try:
        return cfg.replace(**{f"data.{k}": v for k, v in manifest["data"].items()})
    except ConfigError as e:
        raise DataError(f"{rd.split_arrays}: not a split of fmtransfer ({e}); run `fmtransfer split --run {rd.path}` "
                        "again", path=rd.split_arrays) from None


def _stamp(cfg: Config, started: float, manifest: dict) -> dict:
    return {"seconds": round(time.perf_counter() - started, 3), "split_fingerprint": manifest["fingerprint"],
            "config": cfg.to_dict(), "versions": runtime.versions()}


@_writing(create=True, models=0)
def split(cfg: Config, rd: RunDir, reporter: Reporter | None = None) -> dict:
    """Find and verify Fashion-MNIST, make the book's split, save it with a manifest."""
    from fmtransfer import data

    started = time.perf_counter()
    raw = data.load(cfg.data)
    the_split = data.split_of(raw, cfg.data)
    manifest = {
        "stage": "split", "data": {k: v for k, v in cfg.data.to_dict().items() if k != "dir"},
        "b_classes": list(the_split.b_classes), "a_classes": the_split.a_classes, "sizes": the_split.sizes(),
        "class_counts": the_split.class_counts(), "source": str(raw.source), "sha256": raw.sha256,
        "fingerprint": the_split.fingerprint, "seconds": round(time.perf_counter() - started, 3),
    }
    rd.save_split(the_split, manifest)
    rd.remember(cfg)
    return manifest


@_writing(create=False)
def train_a(cfg: Config, rd: RunDir, reporter: Reporter | None = None) -> dict:
    """Train model A on task A's eight classes; save it with its history and test accuracy."""
    the_split, manifest = rd.load_split("train-a")
    cfg = with_split(cfg, manifest, rd)
    started = time.perf_counter()
    model, a = resolver.train_model_a(cfg, the_split, _quiet(reporter))
    result = {"stage": "train-a", "test_accuracy": a.test_accuracy, "test_loss": a.test_loss, "epochs": a.epochs,
              "learning_rate": a.learning_rate, "history": a.history, "model": cfg.model.to_dict(),
              "seed": cfg.seed, "batch_size": cfg.batch_size, **_stamp(cfg, started, manifest)}
    result = RunDirStore(rd, manifest).save(MODEL_A, model, result, fingerprints.model_a(cfg, the_split.sha256))
    rd.remember(cfg)
    return result


@_writing(create=False, models=2)  # the encoder and its companion (the autoencoder, the generator)
def pretrain(cfg: Config, rd: RunDir, reporter: Reporter | None = None, method: str | None = None,
             plot: bool | None = None) -> dict:
    """Pretrain the hidden stack without labels (ch. 11.2.2) and save the encoder B builds on.

    `plot`: None draws the method's picture when matplotlib is installed, True requires it,
    False skips it.
    """
    from fmtransfer import pretraining

    method = contenders.pretraining_method(cfg, method)
    if plot:
        figures("--plot")  # fail before training, not after
    the_split, manifest = rd.load_split("pretrain")
    cfg = with_split(cfg, manifest, rd)
    paths = rd.pretrain_files(method)
    made_from = fingerprints.encoder(cfg, the_split.sha256, method)
    want_picture = bool(plot or (plot is None and plotting_available()))
    kept = _kept_encoder(rd, paths, made_from, want_picture)
    if kept is not None:
        _quiet(reporter).info(f"{method}: reusing {paths['encoder']} (pretrained with the same settings)")
        return kept
    started = time.perf_counter()
    made = pretraining.pretrain(cfg, the_split, method, _quiet(reporter))
    rd.save_model(made.companion, paths["companion"])
    chosen = contenders.get(method)
    picture = None
    if want_picture:
        chosen.draw(made, paths["picture"], f"{method} ({cfg.model.arch})")
        picture = str(paths["picture"])
    d = cfg.to_dict()
    result = {
        "stage": "pretrain", "method": method, "arch": cfg.model.arch, **made.scores,
        "unlabelled_size": made.unlabelled_size,
        "settings": {s: d[s] for s in chosen.sections if s != "transfer"},
        "steps": made.steps, "encoder": str(paths["encoder"]), chosen.companion: str(paths["companion"]),
        "picture": picture, **_stamp(cfg, started, manifest),
    }
    if not chosen.own_sections():  # the autoencoders' settings, where 0.2.0 wrote them
        result.update(epochs=cfg.pretrain.epochs, learning_rate=cfg.pretrain.learning_rate)
    result = RunDirStore(rd, manifest).save(Encoder(method), made.encoder, result, made_from)
    rd.remember(cfg)
    return result


def _kept(rd: RunDir, model: Path, record: Path, made_from: dict, stage: str, schema: dict) -> dict | None:
    """The record at `record` if it and the model file at `model` are exactly what `made_from`
    describes; None where either is missing, unreadable or made otherwise (the stage then trains
    the model again, which rewrites both)."""
    if not (record.is_file() and model.is_file()):
        return None
    try:
        found = rd.read_json(record, stage, stage, schema)
    except UsageError:
        return None
    return found if fingerprints.problem(found, made_from, model) is None else None


def _kept_encoder(rd: RunDir, paths: dict[str, Path], made_from: dict, want_picture: bool) -> dict | None:
    """The record of the encoder `pretrain` left in `rd` if it is exactly what this call would make
    (the method's own settings included, and its companion and picture there), else None.
    Pretraining is deterministic, so training it again would only cost the time."""
    record = _kept(rd, paths["encoder"], paths["json"], made_from, "pretrain", TRAINED_SCHEMA)
    if record is None or not paths["companion"].is_file():
        return None
    if want_picture and not (record.get("picture") and paths["picture"].is_file()):
        return None
    return {**record, "reused": True}


@_writing(create=False)
def transfer(cfg: Config, rd: RunDir, reporter: Reporter | None = None, contender: str = "transfer",
             model_a_path: str | Path | None = None) -> dict:
    """Build model B on a clone of a pretrained model's lower layers; train it through the
    contender's phases; save it.

    What it builds on is the run directory's, checked to be what this run needs (`RunDirStore`),
    or the model A file `model_a_path`, taken as it is.
    """
    from fmtransfer import models

    chosen = contenders.get(contender)
    wanted = needs_of(chosen)
    if not wanted:
        raise ConfigError("contenders", f"{contender} builds on nothing pretrained; `compare` trains it")
    if model_a_path and wanted != (MODEL_A,):
        raise ConfigError("contenders", f"a model A file is only for contenders built on model A, not {contender}")
    the_split, manifest = rd.load_split("transfer")
    cfg = with_split(cfg, manifest, rd)
    need = wanted[0]
    if model_a_path:
        base_path = Path(model_a_path)
        base = models.load_model(base_path, remedy="it is your own file (--model-a), not one fmtransfer made: "
                                                    "pass a complete model file, or leave --model-a out to use "
                                                    "the run directory's model A")
        if models.arch_of(base) != cfg.model.arch:  # before anything trains, or a good result is overwritten
            raise ConfigError("model.arch", f"model file {base_path} is a {models.arch_of(base)} network but this run "
                                            f"builds {cfg.model.arch} ones, so its baseline could not be compared "
                                            f"with it; give a {cfg.model.arch} model A, or use a run of that "
                                            f"architecture")
        base_meta = {"path": str(base_path), "checked_against_split": False}
        built_on = file_sha256(base_path)
    else:
        resolved = resolver.Resolver(cfg, the_split, RunDirStore(rd, manifest, "transfer"), _quiet(reporter))
        base, info = resolved[need], resolved.info[need]
        base_path = rd.need_files(need)[0]
        base_meta = {"path": str(base_path), "checked_against_split": True, "fingerprint": info["fingerprint"],
                     **{k: info[k] for k in ("test_accuracy", "reconstruction_loss") if k in info}}
        built_on = info["fingerprint"]
    before = models.weights_digest(base.get_weights())
    started = time.perf_counter()
    model, r = contenders.checked_fit(contender, chosen.fit(cfg, the_split, {chosen.needs[0]: base},
                                                             _quiet(reporter), source=str(base_path)))
    model_path, json_path = rd.contender_files(contender)
    rd.save_model(model, model_path)
    result = {
        "stage": "transfer", "contender": contender, "source": chosen.artifact, "pretrained": str(base_path),
        "arch": models.arch_of(base), "test_accuracy": r.test_accuracy, "test_loss": r.test_loss,
        "phases": r.phases, "reuse_layers": r.details["reuse_layers"], "unfreeze": cfg.transfer.unfreeze,
        "linear_probe": r.details["linear_probe"],
        # The rest of what the contender said of its model (a soup's ingredients), kept with it.
        "details": {k: v for k, v in r.details.items() if k not in ("reuse_layers", "unfreeze", "linear_probe")},
        "pretrained_unchanged": models.weights_digest(base.get_weights()) == before,
        "pretrained_meta": base_meta, **_stamp(cfg, started, manifest),
    }
    made_from = fingerprints.contender(cfg, the_split.sha256, contender, {str(need): built_on})
    result = fingerprints.stamp(result, made_from, model_path)
    rd.write_json(json_path, result)
    rd.remember(cfg)
    return result


@_writing(create=False)
def baseline(cfg: Config, rd: RunDir, reporter: Reporter | None = None) -> dict:
    """Model B from scratch on the same task-B images; reused if already trained with these settings."""
    reporter = _quiet(reporter)
    manifest = rd.split_manifest("compare")
    cfg = with_split(cfg, manifest, rd)
    made_from = fingerprints.contender(cfg, manifest.get("sha256") or {}, "baseline", {})
    model_path, meta_path = rd.contender_files("baseline")
    meta = _kept(rd, model_path, meta_path, made_from, "compare", SCORED_SCHEMA)
    if meta is not None:
        reporter.info(f"baseline: reusing {model_path} (trained with the same settings)")
        return meta
    the_split, manifest = rd.load_split("compare")
    started = time.perf_counter()
    model, r = contenders.checked_fit("baseline", contenders.get("baseline").fit(cfg, the_split, {}, reporter))
    rd.save_model(model, model_path)
    result = {"stage": "baseline", "test_accuracy": r.test_accuracy, "test_loss": r.test_loss,
              "epochs": cfg.baseline.epochs, "learning_rate": cfg.baseline.learning_rate,
              "history": r.phases[0]["history"], **_stamp(cfg, started, manifest)}
    result = fingerprints.stamp(result, made_from, model_path)
    rd.write_json(meta_path, result)
    return result


@_writing(create=False)
def compare(cfg: Config, rd: RunDir, reporter: Reporter | None = None,
            chosen: tuple[str, ...] | None = None) -> ExperimentResult:
    """The baseline against every contender trained in the run directory (or those `chosen`), on test B."""
    manifest = rd.split_manifest("compare")
    names = [n for n in (chosen or contenders.names()) if n != "baseline"]
    trained = {n: rd.read_json(rd.contender_files(n)[1], "compare", f"transfer --contender {n}", SCORED_SCHEMA)
               for n in names if chosen or rd.contender_files(n)[1].is_file()}
    if not trained and not chosen:  # `chosen` of the baseline alone: its scores, as run_experiment gives them
        raise UsageError(f"compare needs a transferred model in {rd.path}; run `fmtransfer transfer --run {rd.path}` first",
                         path=rd.path)
    cfg = with_split(cfg, manifest, rd)
    for name, meta in trained.items():
        what = rd.contender_files(name)[0]
        rd.check_same_split(meta, manifest, what, f"transfer --contender {name}")
        # A baseline of another family, seed or shape would make the comparison say nothing about
        # transfer: the comparison is paired.
        if meta.get("arch", cfg.model.arch) != cfg.model.arch:
            raise ConfigError("model.arch", f"{what} is a {meta['arch']} network but the baseline would be "
                                            f"{cfg.model.arch}; compare them with the same architecture")
        theirs = meta["config"] if isinstance(meta.get("config"), dict) else {}
        for key, ours in (("seed", cfg.seed), ("batch_size", cfg.batch_size), ("model", cfg.model.to_dict())):
            if key in theirs and theirs[key] != ours:
                raise ConfigError(key, f"{what} was trained with {key} {theirs[key]}, the baseline would use "
                                       f"{ours}; give compare the same settings, or retrain {what.name}")
    base = baseline(cfg, rd, reporter)
    results = {"baseline": contenders.ContenderResult("baseline", "baseline", base["test_accuracy"],
                                                      base["test_loss"], seconds=base.get("seconds", 0.0))}
    for name, meta in trained.items():
        c = contenders.get(name)
        results[c.title] = contenders.ContenderResult(name, c.title, meta["test_accuracy"], meta["test_loss"],
                                                      phases=meta["phases"] if isinstance(meta.get("phases"), list) else [],
                                                      seconds=meta.get("seconds", 0.0),
                                                      details={"reuse_layers": meta.get("reuse_layers"),
                                                               "linear_probe": meta.get("linear_probe")})
    # The settings line describes the contenders as they were trained.
    first = trained.get("transfer") or next(iter(trained.values()), {})
    theirs = first.get("config") if isinstance(first.get("config"), dict) else {}
    try:
        shown = cfg.replace(**{f"transfer.{k}": v for k, v in dict(theirs.get("transfer") or {}).items()},
                            **_built_on(rd, trained.values()))
    except (ConfigError, TypeError, ValueError):
        shown = cfg  # an older file's settings this version cannot read: show today's
    result = ExperimentResult(shown, tuple(manifest["b_classes"]), manifest["sizes"], paired_with_baseline(results))
    # Model A's accuracy as the record of a contender built on it says: the model A it reused.
    result.model_a_accuracy = next((m["pretrained_meta"]["test_accuracy"] for m in trained.values()
                                    if m.get("source") == "a" and isinstance(m.get("pretrained_meta"), dict)
                                    and isinstance(m["pretrained_meta"].get("test_accuracy"), float)), None)
    rd.write_json(rd.compare_json, result.to_dict())
    return result


def _built_on(rd: RunDir, records) -> dict:
    """The settings model A and the encoders were made with (their stages' own: [train_a],
    [pretrain], a method's section), where the contenders' `records` say they were built on the
    very files the run directory holds: `compare` then shows, and judges a smoke test by, what ran."""
    found = {}
    for record in records:
        for key, fingerprint in (record.get("made_from") or {}).items():
            if not key.startswith("built_on."):
                continue
            try:
                need = parse(key[len("built_on."):])
                own = fingerprints.stage_sections(need)
                made = rd.read_json(rd.need_files(need)[1], "compare", command_for(need), TRAINED_SCHEMA)
            except (ValueError, UsageError):
                continue  # a method this version does not know, or a record gone or unreadable since
            if made.get("fingerprint") == fingerprint and isinstance(made.get("made_from"), dict):
                found.update({k: v for k, v in made["made_from"].items() if k.split(".")[0] in own})
    return found


@_writing(create=True, models=lambda cfg: 2 + 3 * len(contenders.select(cfg)))  # A, baseline, each with an encoder
def run(cfg: Config, rd: RunDir, reporter: Reporter | None = None) -> ExperimentResult:
    """Every stage the selected contenders need, in order, then the comparison."""
    reporter = _quiet(reporter)
    started = time.perf_counter()
    chosen = contenders.select(cfg)  # before the split is written
    split(cfg, rd, reporter)
    needed = {need for name in chosen for need in needs_of(contenders.get(name))}
    a = train_a(cfg, rd, reporter) if MODEL_A in needed else None
    pretrained = {}
    for need in sorted((n for n in needed if isinstance(n, Encoder)), key=str):
        made = pretrain(cfg, rd, reporter, method=need.method)  # with its picture, as `pretrain` draws it
        pretrained[need.method] = {"reconstruction_loss": made.get("reconstruction_loss"), "seconds": made["seconds"]}
    for name in chosen:
        if name != "baseline":
            transfer(cfg, rd, reporter, contender=name)
    result = compare(cfg, rd, reporter, chosen=chosen)
    if a is not None:
        result.model_a = ModelAResult(a["test_accuracy"], a["test_loss"], a["epochs"], a["learning_rate"],
                                      a["history"], a["seconds"])
    result.pretrained = pretrained
    result.seconds = round(time.perf_counter() - started, 3)
    rd.write_json(rd.compare_json, result.to_dict())
    return result
