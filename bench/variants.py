"""The speed-ups tried for fmtransfer/training.py, each measured on model A's epochs.

    .venv/bin/python bench/variants.py [--epochs 4] [--rounds 3] [NAME ...]

Every variant trains model A (configs/book.toml's model, 43,986 images, batch 32, SGD 1e-3) for
a few epochs in a fresh subprocess, rounds alternating, and reports the median wall and CPU time
of the epochs after the first (the first one traces and compiles), the first epoch's own time,
and the loss after the last epoch (identical losses: the variant computes the same numbers).
The epoch loop is a copy of training.fit's, so that a variant can change one thing at a time;
"fit" runs training.fit itself as a check that the copy is faithful. bench/README.md has the
figures and what was kept.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

# name -> (environment, loop options); FMTRANSFER_THREADS="" is fmtransfer's default (1 and 1)
VARIANTS = {
    "fmtransfer": ({}, {}),
    "fit": ({}, {"fit": True}),
    "tf-threads": ({"FMTRANSFER_THREADS": "0"}, {}),
    "threads-2,1": ({"FMTRANSFER_THREADS": "2,1"}, {}),
    "threads-1,2": ({"FMTRANSFER_THREADS": "1,2"}, {}),
    "fit+validation": ({}, {"fit": True, "validation": True}),
    "no-determinism": ({}, {"deterministic": False}),
    "onednn-off": ({"TF_ENABLE_ONEDNN_OPTS": "0"}, {}),
    "epoch-gather": ({}, {"epoch_gather": True}),
    "jit-step": ({}, {"jit_step": True}),
    "jit-step-tf-threads": ({"FMTRANSFER_THREADS": "0"}, {"jit_step": True}),
    "jit-step-threads-2,1": ({"FMTRANSFER_THREADS": "2,1"}, {"jit_step": True}),
    "no-grappler": ({}, {"grappler": False}),
}


def worker(epochs: int, fit: bool = False, validation: bool = False, deterministic: bool = True,
           epoch_gather: bool = False, jit_step: bool = False, grappler: bool = True) -> dict:
    from fmtransfer import runtime

    runtime.setup(deterministic=deterministic)  # the first set-up's thread pools stay
    keras = runtime.import_keras()
    import numpy as np
    import tensorflow as tf

    if not grappler:
        tf.config.optimizer.set_experimental_options({"disable_meta_optimizer": True})
    from fmtransfer import models, training
    from fmtransfer.config import load_config
    from fmtransfer.data import load, scaled, split_of

    cfg = load_config(ROOT / "configs/book.toml")
    the_split = split_of(load(cfg.data), cfg.data)
    x, y = scaled(the_split.a_train[0]), the_split.a_train[1]
    valid = (scaled(the_split.a_valid[0]), the_split.a_valid[1])
    runtime.seed_everything(cfg.seed)
    model = models.build_model_a(cfg.model)
    walls, cpus = [], []

    if fit:
        def on_epoch(epoch, record):
            walls.append(record["seconds"])
            cpus.append(time.process_time() - cpus_at[-1])
            cpus_at.append(time.process_time())

        cpus_at = [time.process_time()]
        history = training.fit(model, x, y, task=training.MULTICLASS, epochs=epochs, learning_rate=1e-3,
                               seed=cfg.seed, validation=valid if validation else None, on_epoch=on_epoch)
        return {"wall": walls, "cpu": cpus, "loss": history[-1]["loss"]}

    variables = model.trainable_variables
    optimizer = keras.optimizers.SGD(learning_rate=1e-3)
    optimizer.build(variables)
    loss_fn = keras.losses.SparseCategoricalCrossentropy()
    n, batch = len(x), cfg.batch_size
    x_all, y_all = tf.constant(x), tf.constant(y)
    full_batches, rest = divmod(n, batch)

    def step(xb, yb):
        with tf.GradientTape() as tape:
            pred = model(xb, training=True)
            loss = loss_fn(yb, pred)
        optimizer.apply(tape.gradient(loss, variables), variables)
        return loss * tf.cast(tf.shape(xb)[0], tf.float32), tf.reduce_sum(training.MULTICLASS.correct(yb, pred))

    full_step = tf.function(step, jit_compile=True) if jit_step else step

    @tf.function
    def run_epoch(order):
        loss_sum, correct = tf.constant(0.0), tf.constant(0.0)
        if epoch_gather:
            xs, ys = tf.gather(x_all, order), tf.gather(y_all, order)
        for i in tf.range(full_batches):
            if epoch_gather:
                batch_loss, batch_correct = full_step(xs[i * batch:(i + 1) * batch], ys[i * batch:(i + 1) * batch])
            else:
                indices = order[i * batch:(i + 1) * batch]
                batch_loss, batch_correct = full_step(tf.gather(x_all, indices), tf.gather(y_all, indices))
            loss_sum += batch_loss
            correct += batch_correct
        if rest:
            indices = order[full_batches * batch:]
            batch_loss, batch_correct = step(tf.gather(x_all, indices), tf.gather(y_all, indices))
            loss_sum += batch_loss
            correct += batch_correct
        return loss_sum / n, correct / n

    rng = np.random.default_rng(cfg.seed)
    for _ in range(epochs):
        wall, cpu = time.perf_counter(), time.process_time()
        loss, _ = run_epoch(tf.constant(rng.permutation(n), dtype=tf.int32))
        loss = float(loss)
        if validation:
            training.evaluate(model, *valid, task=training.MULTICLASS)
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
    return {"wall": walls, "cpu": cpus, "loss": loss}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("names", nargs="*", help=f"variants (default: all): {', '.join(VARIANTS)}")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.epochs, **VARIANTS[args.worker][1])))
        return

    names = args.names or list(VARIANTS)
    results = {name: [] for name in names}
    for round_ in range(args.rounds):
        for name in names if round_ % 2 == 0 else reversed(names):
            env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", **VARIANTS[name][0]}
            out = subprocess.run([sys.executable, __file__, "--worker", name, "--epochs", str(args.epochs)],
                                 env=env, capture_output=True, text=True, check=True).stdout
            results[name].append(json.loads(out.strip().splitlines()[-1]))
            print(f"round {round_ + 1} {name}: {results[name][-1]}", file=sys.stderr, flush=True)

    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"model A epochs, {args.rounds} rounds of {args.epochs} epochs (load average now "
                        f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs)")
    for column in ("variant", "epoch wall s (median)", "epoch CPU s (median)", "first epoch wall s", "last loss"):
        table.add_column(column, justify="left" if column == "variant" else "right")
    for name, runs in results.items():
        later = [r for run in runs for r in run["wall"][1:]]
        later_cpu = [r for run in runs for r in run["cpu"][1:]]
        table.add_row(name, f"{statistics.median(later):.3f}", f"{statistics.median(later_cpu):.3f}",
                      f"{statistics.median(run['wall'][0] for run in runs):.3f}",
                      " ".join(sorted({f"{run['loss']:.7f}" for run in runs})))
    Console(width=120).print(table)


if __name__ == "__main__":
    main()
