"""Benchmark: fmtransfer's stages against the book's recipe written in plain Keras.

    .venv/bin/python bench/bench.py              # configs/book.toml, one seed  (make bench)
    .venv/bin/python bench/bench.py --seeds 3    # mean ± std over seeds 42, 43, 44
    .venv/bin/python bench/bench.py --quick      # a smoke run of a few epochs

Both sides run in fresh subprocesses on the same split and settings, one after the other (the
order alternates between seeds), and report per-stage wall times measured inside the process
after TensorFlow is imported; the parent adds each process's wall time and peak RSS (from
wait4). Next to them: the arithmetic each stage has to do, the GFLOP/s each side achieves, and
the time that arithmetic takes at this machine's batch-32 matmul speed, measured in the same
invocation. Only ratios from one invocation mean anything on a shared machine.

FLOPs are counted from the layer sizes, per sample, with M_k = inputs_k * units_k of dense
layer k (biases, activations, the loss and the SGD update are left out, under 2%):
    forward  = 2 * sum_k M_k
    backward = 2 * sum_{k trainable} M_k                (weight gradients)
             + 2 * sum_{k above the lowest trainable} M_k  (input gradients; never layer 1's)
    training = epochs * n_train * (forward + backward);  validation = epochs * n_valid * forward;
    test     = n_test * forward.
With every layer trainable the backward pass is about 2x the forward one, less the input gradient
of the 784x300 first layer, which nothing needs.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from fmtransfer.config import Config, load_config, reuse_count  # noqa: E402  (no TensorFlow)
from fmtransfer.runtime import threads  # noqa: E402  (imports TensorFlow only in setup())

STAGES = ("split", "train-a", "transfer", "baseline")
SIDES = ("keras", "fmtransfer")
QUICK = {"train_a.epochs": 2, "baseline.epochs": 3, "transfer.freeze_epochs": 1, "transfer.fine_tune_epochs": 2}
BATCH = 32  # the matmul bound is measured at the recipe's batch size


# ----------------------------------------------------------------------------- arithmetic

def dense_sizes(cfg: Config, outputs: int) -> list[int]:
    return [28 * 28, *cfg.model.hidden, outputs]


def forward_flops(sizes: list[int]) -> int:
    return 2 * sum(a * b for a, b in zip(sizes[:-1], sizes[1:]))


def train_flops(sizes: list[int], trainable: list[bool]) -> int:
    """Forward and backward FLOPs of one sample (see the module docstring)."""
    macs = [a * b for a, b in zip(sizes[:-1], sizes[1:])]
    lowest = trainable.index(True)
    backward = 2 * sum(m for m, t in zip(macs, trainable) if t) + 2 * sum(macs[lowest + 1:])
    return forward_flops(sizes) + backward


def stage_flops(cfg: Config, sizes: dict[str, int]) -> dict[str, float]:
    """The arithmetic of each stage, counted the same way for both sides."""
    n_hidden = len(cfg.model.hidden)
    a, b = dense_sizes(cfg, 8), dense_sizes(cfg, 1)
    all_trainable = [True] * (n_hidden + 1)
    flops = {"split": 0.0}
    flops["train-a"] = (cfg.train_a.epochs * (sizes["a_train"] * train_flops(a, all_trainable)
                                              + sizes["a_valid"] * forward_flops(a))
                        + sizes["a_test"] * forward_flops(a))
    t = cfg.transfer
    reused = reuse_count(t.reuse_layers, n_hidden)
    b_on_a = [28 * 28, *cfg.model.hidden[:reused], 1]
    top = t.unfreeze_top
    frozen = [False] * reused + [True]
    unfrozen = [top is None or i >= reused - top for i in range(reused)] + [True]
    flops["transfer"] = (sizes["b_train"] * (t.freeze_epochs * train_flops(b_on_a, frozen)
                                             + t.fine_tune_epochs * train_flops(b_on_a, unfrozen))
                         + (t.freeze_epochs + t.fine_tune_epochs) * sizes["b_valid"] * forward_flops(b_on_a)
                         + sizes["b_test"] * forward_flops(b_on_a))
    flops["baseline"] = (cfg.baseline.epochs * (sizes["b_train"] * train_flops(b, all_trainable)
                                                + sizes["b_valid"] * forward_flops(b))
                         + sizes["b_test"] * forward_flops(b))
    flops["whole run"] = sum(flops.values())
    return flops


# ----------------------------------------------------------------------------- the two sides

def _quiet_tensorflow() -> None:
    # Only the log level: plain Keras keeps every other TensorFlow default.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")


def keras_side(cfg: Config) -> dict:
    """The book's recipe as a reader would type it: compile, fit with validation_data, evaluate.

    `verbose=0` is the one departure from fit's defaults, so that neither side prints.
    """
    _quiet_tensorflow()
    started = time.perf_counter()
    import keras

    if os.environ.get("BENCH_KERAS_THREADS"):  # --keras-threads: how much is thread settings alone
        import tensorflow as tf

        tf.config.threading.set_intra_op_parallelism_threads(int(os.environ["BENCH_KERAS_THREADS"]))
        tf.config.threading.set_inter_op_parallelism_threads(int(os.environ["BENCH_KERAS_THREADS"]))

    from fmtransfer.data import load, scaled, split_of

    times, accuracy = {"import": time.perf_counter() - started}, {}
    clock = time.perf_counter()
    the_split = split_of(load(cfg.data), cfg.data)
    X_train_A, y_train_A = scaled(the_split.a_train[0]), the_split.a_train[1]
    X_valid_A, y_valid_A = scaled(the_split.a_valid[0]), the_split.a_valid[1]
    X_test_A, y_test_A = scaled(the_split.a_test[0]), the_split.a_test[1]
    X_train_B, y_train_B = scaled(the_split.b_train[0]), the_split.b_train[1]
    X_valid_B, y_valid_B = scaled(the_split.b_valid[0]), the_split.b_valid[1]
    X_test_B, y_test_B = scaled(the_split.b_test[0]), the_split.b_test[1]
    sizes = the_split.sizes()
    times["split"], clock = time.perf_counter() - clock, time.perf_counter()

    def hidden_stack():
        return [keras.layers.Flatten()] + [keras.layers.Dense(n, activation=cfg.model.activation)
                                           for n in cfg.model.hidden]

    keras.utils.set_random_seed(cfg.seed)
    model_A = keras.Sequential([keras.Input(shape=(28, 28)), *hidden_stack(),
                                keras.layers.Dense(8, activation="softmax")])
    model_A.compile(loss="sparse_categorical_crossentropy",
                    optimizer=keras.optimizers.SGD(learning_rate=cfg.train_a.learning_rate), metrics=["accuracy"])
    model_A.fit(X_train_A, y_train_A, epochs=cfg.train_a.epochs, batch_size=cfg.batch_size,
                validation_data=(X_valid_A, y_valid_A), verbose=0)
    accuracy["train-a"] = model_A.evaluate(X_test_A, y_test_A, verbose=0)[1]
    with tempfile.TemporaryDirectory() as tmp:
        model_A.save(Path(tmp) / "my_model_A.keras")
        times["train-a"], clock = time.perf_counter() - clock, time.perf_counter()

        keras.utils.set_random_seed(cfg.seed)
        model_A = keras.models.load_model(Path(tmp) / "my_model_A.keras")
    model_A_clone = keras.models.clone_model(model_A)
    model_A_clone.set_weights(model_A.get_weights())
    t = cfg.transfer
    reused = reuse_count(t.reuse_layers, len(cfg.model.hidden))
    model_B_on_A = keras.Sequential(model_A_clone.layers[:1 + reused])  # Flatten + the reused layers
    model_B_on_A.add(keras.layers.Dense(1, activation="sigmoid"))
    for layer in model_B_on_A.layers[:-1]:
        layer.trainable = False
    model_B_on_A.compile(loss="binary_crossentropy",
                         optimizer=keras.optimizers.SGD(learning_rate=t.frozen_learning_rate), metrics=["accuracy"])
    model_B_on_A.fit(X_train_B, y_train_B, epochs=t.freeze_epochs, batch_size=cfg.batch_size,
                     validation_data=(X_valid_B, y_valid_B), verbose=0)
    top = t.unfreeze_top  # None: every reused layer, as the book does
    reused_layers = model_B_on_A.layers[1:-1]
    for layer in model_B_on_A.layers[:-1] if top is None else reused_layers[len(reused_layers) - top:]:
        layer.trainable = True
    model_B_on_A.compile(loss="binary_crossentropy",
                         optimizer=keras.optimizers.SGD(learning_rate=t.fine_tune_learning_rate), metrics=["accuracy"])
    model_B_on_A.fit(X_train_B, y_train_B, epochs=t.fine_tune_epochs, batch_size=cfg.batch_size,
                     validation_data=(X_valid_B, y_valid_B), verbose=0)
    accuracy["transfer"] = model_B_on_A.evaluate(X_test_B, y_test_B, verbose=0)[1]
    times["transfer"], clock = time.perf_counter() - clock, time.perf_counter()

    keras.utils.set_random_seed(cfg.seed)
    model_B = keras.Sequential([keras.Input(shape=(28, 28)), *hidden_stack(),
                                keras.layers.Dense(1, activation="sigmoid")])
    model_B.compile(loss="binary_crossentropy",
                    optimizer=keras.optimizers.SGD(learning_rate=cfg.baseline.learning_rate), metrics=["accuracy"])
    model_B.fit(X_train_B, y_train_B, epochs=cfg.baseline.epochs, batch_size=cfg.batch_size,
                validation_data=(X_valid_B, y_valid_B), verbose=0)
    accuracy["baseline"] = model_B.evaluate(X_test_B, y_test_B, verbose=0)[1]
    times["baseline"] = time.perf_counter() - clock
    return {"times": times, "accuracy": accuracy, "sizes": sizes}


def fmtransfer_side(cfg: Config) -> dict:
    """fmtransfer's own stages, as `fmtransfer run` calls them, into a temporary run directory."""
    started = time.perf_counter()
    from fmtransfer import models, runtime, stages, training  # noqa: F401  (imports TensorFlow, as the Keras side does)
    from fmtransfer.rundir import RunDir

    runtime.setup(arch=cfg.model.arch)
    times, accuracy = {"import": time.perf_counter() - started}, {}
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = RunDir(tmp)
        for stage, call in [("split", stages.split), ("train-a", stages.train_a),
                            ("transfer", stages.transfer), ("baseline", stages.compare)]:
            clock = time.perf_counter()
            result = call(cfg, run_dir)
            result = result.to_dict() if hasattr(result, "to_dict") else result
            times[stage] = time.perf_counter() - clock
            if stage == "split":
                sizes = result["sizes"]
            elif stage == "baseline":
                accuracy["baseline"] = result["baseline"]["test_accuracy"]
            else:
                accuracy[stage] = result["test_accuracy"]
    return {"times": times, "accuracy": accuracy, "sizes": sizes}


def matmul_bound(steps: int) -> dict:
    """GFLOP/s of the recipe's batch-32 matmuls alone, forward and backward, in a tight graph loop.

    Each step multiplies through model A's shapes (784-300-100-50-50-50-8) as training does:
    the forward product of every layer, the weight gradient of every layer, the input gradient of
    every layer but the first. Inputs change every step so nothing is hoisted out of the loop, and
    one element of each weight gradient is summed so that none is pruned.
    """
    _quiet_tensorflow()
    import tensorflow as tf

    threads = int(os.environ["BENCH_THREADS"])
    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(threads)
    sizes = [28 * 28, 300, 100, 50, 50, 50, 8]
    weights = [tf.random.normal([a, b], stddev=0.05, seed=i) for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:]))]
    inputs = tf.random.uniform([64, BATCH, sizes[0]], seed=0)

    @tf.function
    def loop(n):
        total = tf.constant(0.0)
        for i in tf.range(n):
            h = [inputs[i % 64]]
            for w in weights:
                h.append(tf.matmul(h[-1], w))
            grad, kept = h[-1], []
            for k in reversed(range(len(weights))):
                kept.append(tf.matmul(h[k], grad, transpose_a=True)[0, 0])
                if k:
                    grad = tf.matmul(grad, weights[k], transpose_b=True)
            total += tf.add_n(kept)
        return total

    float(loop(tf.constant(10)))
    best = float("inf")
    for _ in range(3):
        clock = time.perf_counter()
        float(loop(tf.constant(steps)))
        best = min(best, time.perf_counter() - clock)
    flops = BATCH * train_flops(sizes, [True] * (len(sizes) - 1)) * steps
    return {"threads": threads, "seconds_per_step": best / steps, "gflops": flops / best / 1e9}


WORKERS = {"keras": keras_side, "fmtransfer": fmtransfer_side}


# ----------------------------------------------------------------------------- subprocesses

def run_child(args: list[str], env: dict | None = None) -> tuple[dict, float, float]:
    """Run this file as a worker; return its JSON result, its wall time and its peak RSS in MiB."""
    with tempfile.TemporaryDirectory() as tmp:
        out, err = Path(tmp) / "result.json", Path(tmp) / "stderr"
        with open(err, "wb") as err_file:
            clock = time.perf_counter()
            child = subprocess.Popen([sys.executable, __file__, "--out", str(out), *args], cwd=ROOT,
                                     stdout=subprocess.DEVNULL, stderr=err_file, env={**os.environ, **(env or {})})
            _, status, usage = os.wait4(child.pid, 0)
            wall = time.perf_counter() - clock
        child.returncode = os.waitstatus_to_exitcode(status)
        if child.returncode != 0:
            sys.exit(f"bench: worker {' '.join(args)} failed ({child.returncode}):\n"
                     + err.read_text(errors="replace")[-3000:])
        return json.loads(out.read_text()), wall, usage.ru_maxrss / 1024  # Linux: KiB


def startup() -> list[dict]:
    """Time `fmtransfer --help` and friends, and check whether each imported TensorFlow."""
    script = Path(sys.executable).parent / "fmtransfer"  # the installed entry point, as users run it
    command = [str(script)] if script.exists() else ["-m", "fmtransfer.cli"]
    missing_run = tempfile.mkdtemp(prefix="bench-empty-run-")
    cases = [("fmtransfer --help", ["--help"], 0), ("fmtransfer run --help", ["run", "--help"], 0),
             ("fmtransfer run --no-such-option", ["run", "--no-such-option"], 2),
             ("fmtransfer run --batch-size 0", ["run", "--batch-size", "0", "--run", missing_run], 2),
             ("fmtransfer train-a (no split yet)", ["train-a", "--run", missing_run], 2)]
    results = []
    for label, argv, expected in cases:
        best, code = float("inf"), None
        for _ in range(5):
            clock = time.perf_counter()
            code = subprocess.run([*([sys.executable] if command[0] == "-m" else []), *command, *argv],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode
            best = min(best, time.perf_counter() - clock)
        # -X importtime lists every module imported; a top-level "tensorflow" line means it was.
        trace = subprocess.run([sys.executable, "-X", "importtime", *command, *argv],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True).stderr
        imported = bool(re.search(r"\|\s+tensorflow$", trace, re.MULTILINE))
        results.append({"command": label, "seconds": best, "exit_code": code, "expected_exit_code": expected,
                        "tensorflow_imported": imported})
    shutil.rmtree(missing_run)
    return results


# ----------------------------------------------------------------------------- the report

def mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def fmt(values: list[float], digits: int = 2, scale: float = 1.0) -> str:
    mean, std = mean_std([v * scale for v in values])
    return f"{mean:.{digits}f}" + (f" ± {std:.{digits}f}" if len(values) > 1 else "")


def summarize(runs: list[dict], flops: dict[str, float], bound_gflops: float) -> dict:
    rows = {}
    for stage in [*STAGES, "whole run", "process"]:
        row = {}
        for side in SIDES:
            seconds = [r[side]["times"][stage] for r in runs]
            row[side] = {"seconds": seconds, "mean": statistics.fmean(seconds)}
            if stage in flops and flops[stage]:
                row[side]["gflops"] = flops[stage] / row[side]["mean"] / 1e9
            if stage in STAGES[1:]:
                row[side]["accuracy"] = [r[side]["accuracy"][stage] for r in runs]
        row["ratio"] = row["fmtransfer"]["mean"] / row["keras"]["mean"]
        if stage in flops and flops[stage]:
            row["flops"] = flops[stage]
            row["bound_seconds"] = flops[stage] / bound_gflops / 1e9
            row["fmtransfer_over_bound"] = row["fmtransfer"]["mean"] / row["bound_seconds"]
        rows[stage] = row
    return rows


def accuracy_difference(rows: dict) -> dict:
    """fmtransfer's test accuracy minus plain Keras', seed by seed, with a paired t-test."""
    from scipy import stats

    out = {}
    for stage in STAGES[1:]:
        ours, theirs = rows[stage]["fmtransfer"]["accuracy"], rows[stage]["keras"]["accuracy"]
        mean, std = mean_std([a - b for a, b in zip(ours, theirs)])
        p_value = float(stats.ttest_rel(ours, theirs).pvalue) if std else float(mean == 0)
        out[stage] = {"mean": mean, "std": std, "p_value": p_value}
    return out


def targets(rows: dict, rss: dict, starts: list[dict], quick: bool) -> list[tuple[str, bool, str]]:
    """The issue's targets. Speed ones only for full runs: a few epochs measure mostly start-up."""
    help_row = starts[0]
    speed = [] if quick else [
        ("train-a at most 0.5x plain Keras", rows["train-a"]["ratio"] <= 0.5, f"{rows['train-a']['ratio']:.2f}x"),
        ("whole run at most 0.5x plain Keras", rows["whole run"]["ratio"] <= 0.5, f"{rows['whole run']['ratio']:.2f}x"),
        ("train-a within 3x of the matmul bound", rows["train-a"]["fmtransfer_over_bound"] <= 3,
         f"{rows['train-a']['fmtransfer_over_bound']:.2f}x"),
    ]
    return speed + [
        ("fmtransfer peak RSS under 2 GiB", max(rss["fmtransfer"]) < 2048, f"{max(rss['fmtransfer']):.0f} MiB"),
        ("`fmtransfer --help` under 0.5 s without TensorFlow",
         help_row["seconds"] < 0.5 and not help_row["tensorflow_imported"], f"{help_row['seconds']:.2f} s"),
        ("no --help or usage error imports TensorFlow, and each exits as it should",
         not any(s["tensorflow_imported"] or s["exit_code"] != s["expected_exit_code"] for s in starts),
         ", ".join(s["command"] for s in starts
                   if s["tensorflow_imported"] or s["exit_code"] != s["expected_exit_code"]) or "all do"),
    ]


def show(report: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    console = Console(width=max(console.width, 132))  # the full table even when piped to a log
    rows, n = report["stages"], len(report["seeds"])
    seeds = (f"seed {report['seeds'][0]}" if n == 1
             else f"seeds {report['seeds'][0]}..{report['seeds'][-1]}, mean ± std")
    quick = " (quick)" if report["quick"] else ""
    table = Table(title=f"fmtransfer against plain Keras: {report['config']}{quick}, {seeds}")
    for column in ("stage", "Keras s", "fmtransfer s", "fmt/Keras", "Keras GFLOP/s", "fmt GFLOP/s", "bound s",
                   "fmt/bound", "Keras test acc", "fmt test acc"):
        table.add_column(column, justify="left" if column == "stage" else "right")
    for stage, row in rows.items():
        k, f = row["keras"], row["fmtransfer"]
        label = "process (start to exit)" if stage == "process" else stage
        table.add_row(label, fmt(k["seconds"]), fmt(f["seconds"]), f"{row['ratio']:.2f}",
                      f"{k['gflops']:.0f}" if "gflops" in k else "", f"{f['gflops']:.0f}" if "gflops" in f else "",
                      f"{row['bound_seconds']:.2f}" if "bound_seconds" in row else "",
                      f"{row['fmtransfer_over_bound']:.1f}" if "fmtransfer_over_bound" in row else "",
                      fmt(k["accuracy"], 4) if "accuracy" in k else "",
                      fmt(f["accuracy"], 4) if "accuracy" in f else "")
    rss = report["peak_rss_mib"]
    table.add_row("peak RSS MiB", fmt(rss["keras"], 0), fmt(rss["fmtransfer"], 0),
                  f"{statistics.fmean(rss['fmtransfer']) / statistics.fmean(rss['keras']):.2f}",
                  "", "", "", "", "", "")
    console.print(table)
    for stage, diff in report.get("accuracy_difference", {}).items():
        console.print(f"{stage}: test accuracy fmtransfer − Keras, paired by seed: {diff['mean']:+.4f} ± "
                      f"{diff['std']:.4f}, paired t-test p = {diff['p_value']:.2f}"
                      + (" (no evidence of a difference)" if diff["p_value"] > 0.05 else ""))
    console.print(f"threads (intra-op, inter-op): plain Keras {report['keras_threads']}; fmtransfer "
                  f"{report['fmtransfer_threads']} (fmtransfer/runtime.py, $FMTRANSFER_THREADS; 0: TensorFlow's)")
    bound = report["matmul_bound"]
    console.print(f"matmul bound: {bound['gflops']:.0f} GFLOP/s at batch {BATCH} (best of "
                  + ", ".join(f"{b['threads']} thread{'s' if b['threads'] > 1 else ''}: {b['gflops']:.0f}"
                              for b in bound["runs"]) + "); bound s = the stage's FLOPs at that speed.")
    console.print("FLOPs per sample: forward 2·ΣM_k; backward 2·ΣM_k over trainable layers (weight "
                  "gradients) + 2·ΣM_k over layers above the lowest trainable one (input gradients; "
                  "never the first layer's); M_k = inputs × units. Validation and test count forward only.")
    starts = Table(title="start-up")
    for column in ("command", "seconds (best of 5)", "exit code", "TensorFlow imported"):
        starts.add_column(column)
    for s in report["startup"]:
        starts.add_row(s["command"], f"{s['seconds']:.3f}",
                       f"{s['exit_code']}" + ("" if s["exit_code"] == s["expected_exit_code"]
                                              else f" (expected {s['expected_exit_code']})"),
                       "yes" if s["tensorflow_imported"] else "no")
    console.print(starts)
    for name, ok, value in report["targets"]:
        console.print(f"[{'green' if ok else 'red'}]{'met ' if ok else 'MISSED'}[/] {name}: {value}")
    console.print(f"load average before/after: {report['load_average'][0]} / {report['load_average'][1]} "
                  f"on {os.cpu_count()} CPUs (other work on the machine skews both sides)")
    console.print(f"JSON: {report['json']}")


# ----------------------------------------------------------------------------- main

def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="configs/book.toml", help="TOML settings (default: %(default)s)")
    parser.add_argument("--seeds", type=int, default=1, help="repeat over N seeds from the config's (default 1)")
    parser.add_argument("--quick", action="store_true", help="a few epochs only: a smoke test of the benchmark")
    parser.add_argument("--json", default="bench/results/bench.json", help="where results go (default: %(default)s)")
    parser.add_argument("--keras-threads", type=int, metavar="N",
                        help="give plain Keras N intra- and inter-op threads (default: TensorFlow's choice)")
    parser.add_argument("--worker", choices=[*WORKERS, "bound"], help=argparse.SUPPRESS)
    parser.add_argument("--seed", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()

    overrides = dict(QUICK) if args.quick else {}
    if args.worker:
        if args.worker == "bound":
            result = matmul_bound(steps=300 if args.quick else 2000)
        else:
            result = WORKERS[args.worker](load_config(ROOT / args.config, {**overrides, "seed": args.seed}))
        Path(args.out).write_text(json.dumps(result))
        return

    cfg = load_config(ROOT / args.config, overrides)
    if cfg.model.arch != "dense":
        sys.exit("bench: the plain-Keras side writes the book's dense model only; use a dense config")
    load = [os.getloadavg()[0]]
    seeds = [cfg.seed + i for i in range(args.seeds)]
    common = ["--config", args.config] + (["--quick"] if args.quick else [])
    bounds = [run_child(["--worker", "bound", *common], {"BENCH_THREADS": str(t)})[0]
              for t in sorted({1, os.cpu_count() or 1})]
    runs, rss = [], {side: [] for side in SIDES}
    for i, seed in enumerate(seeds):
        run = {}
        for side in SIDES if i % 2 == 0 else reversed(SIDES):  # alternate who runs first
            print(f"bench: seed {seed}: {side} ...", file=sys.stderr, flush=True)
            env = {"BENCH_KERAS_THREADS": str(args.keras_threads)} if side == "keras" and args.keras_threads else {}
            result, wall, peak = run_child(["--worker", side, "--seed", str(seed), *common], env)
            result["times"]["whole run"] = sum(result["times"][s] for s in STAGES)
            result["times"]["process"] = wall
            rss[side].append(peak)
            run[side] = result
        runs.append(run)
    load.append(os.getloadavg()[0])
    bound = max(bounds, key=lambda b: b["gflops"])
    flops = stage_flops(cfg, runs[0]["fmtransfer"]["sizes"])
    rows = summarize(runs, flops, bound["gflops"])
    starts = startup()
    out = ROOT / args.json
    report = {
        "config": args.config, "quick": args.quick, "seeds": seeds, "settings": cfg.to_dict(),
        "keras_threads": str((args.keras_threads,) * 2) if args.keras_threads else "TensorFlow's default",
        "fmtransfer_threads": str(threads()),
        "stages": rows, "peak_rss_mib": rss, "matmul_bound": {"gflops": bound["gflops"], "runs": bounds},
        "startup": starts, "runs": runs, "load_average": [round(x, 2) for x in load],
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
        "json": str(out.relative_to(ROOT) if out.is_relative_to(ROOT) else out),
    }
    report["targets"] = targets(rows, rss, starts, args.quick)
    if len(seeds) > 1:
        report["accuracy_difference"] = accuracy_difference(rows)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    show(report)


if __name__ == "__main__":
    main()
