"""Torture: a small `study --jobs 2` killed again and again, resumed after each, must end with the
records of a study never interrupted.

    .venv/bin/python bench/torture.py                  # 20 signals, seed 0, generated data
    .venv/bin/python bench/torture.py --kills 40 --seed 7 --seeds 12
    .venv/bin/python bench/torture.py --real           # the real Fashion-MNIST, configs/quick.toml

Each round starts the study (in its own session, as a shell runs a job), waits a random time
(from the end of Python's start-up: see `torture`), or until the study has saved something new
and then up to a second more (half the rounds each, at random: see `one_round`), then sends a
random signal (SIGTERM, SIGKILL or SIGINT) to a random target: the parent, one worker, or the
whole process group (what Ctrl-C in a terminal and `scancel` do). A worker alone never gets SIGINT, which workers ignore by design (Ctrl-C reaches the group; the parent decides).
The round checks how the study ended (the exit status the signal must give, one line on stderr
and no traceback), that every process of it is gone, and, unless SIGKILL ended a process that
was writing, that no temporary file is left. After the last round the study runs to the end.

All the while a poller reads the study as a user would, again and again: `study report`, `study
claims` and `study report --html` onto a page outside the study. Each poll must end at worst in
one line (exit 2 before the study has begun), never in a traceback or a hang, and must write
nothing in the study: only the study's own files may ever be found there (see `Poller`).

At the end the records must equal those of the same study run start to end in one process (same
ids, scores and fingerprints; `seconds` and `finished` left out), no run may be recorded twice,
no temporary file may be left, and a last poll must report every run. Prints one JSON object
(and writes it with --out); exit 1 if any check failed. tests/test_torture.py runs a shorter version.
"""

from __future__ import annotations

import argparse
import fnmatch
import gzip
import json
import os
import random
import signal
import struct
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
REAL_DATA = Path("/usr/share/datasets/fashion-mnist")
TINY = ["--seeds", "6", "--reuse-layers", "1,all", "--b-train-sizes", "20", "--valid-size", "100", "--no-verify",
        "--hidden", "16,8", "--a-epochs", "1", "--b-epochs", "2", "--freeze-epochs", "1", "--fine-tune-epochs", "1"]
QUICK = ["--config", str(ROOT / "configs" / "quick.toml"), "--seeds", "6", "--b-train-sizes", "50", "--a-epochs", "1",
         "--b-epochs", "1", "--freeze-epochs", "1", "--fine-tune-epochs", "1"]
SIGNALS = {"SIGTERM": signal.SIGTERM, "SIGKILL": signal.SIGKILL, "SIGINT": signal.SIGINT}


def write_tiny_data(folder: Path, seed: int = 0) -> Path:
    """A small Fashion-MNIST look-alike models can learn (as tests/conftest.py's `tiny_data`)."""
    import numpy as np

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for prefix, n in (("train", 700), ("t10k", 200)):
        labels = np.tile(np.arange(10, dtype=np.uint8), n // 10)
        rng.shuffle(labels)
        images = rng.integers(0, 60, size=(n, 28, 28), dtype=np.uint8)
        for i, k in enumerate(labels):
            images[i, 2 * k:2 * k + 3, :] = 220
        for kind, array, magic in (("images-idx3", images, 0x803), ("labels-idx1", labels, 0x801)):
            with gzip.open(folder / f"{prefix}-{kind}-ubyte.gz", "wb") as f:
                f.write(struct.pack(">I", magic) + b"".join(struct.pack(">I", d) for d in array.shape)
                        + array.tobytes())
    return folder


def command(args: list[str], study_dir: Path, jobs: int = 2) -> list[str]:
    return [sys.executable, "-m", "fmtransfer.cli", "study", *args, "--run", str(study_dir), "--jobs", str(jobs),
            "--no-plots", "--json"]


def records(study_dir: Path) -> dict:
    """The study's records by id, timing left out."""
    from fmtransfer.study import records as made

    return made.comparable(study_dir)


def recorded_ids(study_dir: Path) -> list[str]:
    """The id of every whole line of every results file, repeats included."""
    from fmtransfer import study as studies

    ids = []
    for path in sorted(study_dir.glob("results*.jsonl")):
        for line in path.read_text().splitlines():
            try:
                ids.append(studies.RunRecord.from_dict(json.loads(line)).id)
            except ValueError:
                continue
    return ids


def temporaries(study_dir: Path) -> list[str]:
    return sorted(str(p.relative_to(study_dir)) for p in study_dir.rglob(".*.tmp*"))


def _stat(pid: int) -> list[str] | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def alive(pid: int) -> bool:
    fields = _stat(pid)
    return fields is not None and fields[0] not in ("Z", "X")


def workers(parent: int) -> list[int]:
    """The parent's spawned workers (not multiprocessing's resource tracker)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        fields = _stat(int(stat.parent.name))
        if fields and int(fields[1]) == parent:
            try:
                if b"spawn_main" in Path(stat.parent, "cmdline").read_bytes():
                    found.append(int(stat.parent.name))
            except OSError:
                continue
    return sorted(found)


def expected_codes(target: str, name: str) -> set[int]:
    """How the study may end: as the signal says, or 0 where it finished first."""
    if target == "worker":  # the parent stops the study in one line naming the dead worker
        return {0, 1}
    by_signal = {"SIGKILL": -signal.SIGKILL, "SIGTERM": 143, "SIGINT": 130}[name]
    if target == "group" and name != "SIGKILL":
        return {0, by_signal, 1}  # a worker's death may be noticed before the parent's own signal
    return {0, by_signal}


def startup_seconds() -> float:
    """How long the command takes to import itself: a signal before then meets Python's own
    handlers, not fmtransfer's (see the docstring of `torture`)."""
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "fmtransfer.cli", "--version"], cwd=ROOT, capture_output=True, check=True)
    return time.perf_counter() - started


def progress(study_dir: Path) -> int:
    """What a study has made so far that survives it: saved models and results lines."""
    lines = sum(len(p.read_bytes().splitlines()) for p in study_dir.glob("results*.jsonl"))
    return lines + len(list(study_dir.glob("models/*.keras")))


# What a study directory may hold: the study's own files, written by its own writers. A poll that
# left anything else there (a page, a plot, a copy) wrote where only the study writes.
STUDY_OWN = ("study.json", "results*.jsonl", ".lock*", "models", "models/*", "predictions", "predictions/*",
             "*.tmp*", "*/.*.tmp*")


def strangers(study_dir: Path) -> list[str]:
    """What is in the study directory that the study does not write."""
    found = (str(p.relative_to(study_dir)) for p in study_dir.rglob("*")) if study_dir.is_dir() else ()
    return sorted(f for f in found if not any(fnmatch.fnmatch(f, pattern) for pattern in STUDY_OWN))


class Poller(threading.Thread):
    """Reads the study while it is killed and resumed: `study report --json`, `study claims
    --json` and `study report --html PAGE` (PAGE outside the study) in turn, again and again,
    `pause` seconds apart, each a little niced: on two cores a poll (about a second of start-up)
    must not starve the study it reads, or the torture would take much longer. Counts each
    command's exit codes and records as a problem any poll that hung (`timeout` seconds), wrote
    a traceback or more than one error line, ended other than 0 or 2 (2: no study there yet,
    said in one line), or after which the study holds a file it does not write."""

    COMMANDS = {"report": ["report", "--no-plots", "--json"], "claims": ["claims", "--json"],
                "html": ["report", "--no-plots", "--html"]}

    def __init__(self, study_dir: Path, page: Path, pause: float = 3.0, timeout: float = 120):
        super().__init__(daemon=True)
        self.study_dir, self.page, self.pause, self.timeout = study_dir, page, pause, timeout
        self.done = threading.Event()
        self.codes: dict[str, dict[str, int]] = {name: {} for name in self.COMMANDS}
        self.problems: list[str] = []

    def poll(self, name: str) -> subprocess.CompletedProcess | None:
        sub, *rest = self.COMMANDS[name]
        argv = [sys.executable, "-m", "fmtransfer.cli", "study", sub, str(self.study_dir), *rest]
        if name == "html":
            argv.append(str(self.page))
        try:
            done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=self.timeout,
                                  preexec_fn=lambda: os.nice(10))
        except subprocess.TimeoutExpired:
            self.problems.append(f"{name}: hung for {self.timeout:.0f} s")
            return None
        codes = self.codes[name]
        codes[str(done.returncode)] = codes.get(str(done.returncode), 0) + 1
        errors = [line for line in done.stderr.splitlines() if line.startswith("fmtransfer: error")]
        if "Traceback" in done.stderr or len(errors) > 1 or done.returncode not in (0, 2) \
                or (done.returncode == 2 and not errors):
            self.problems.append(f"{name}: exit {done.returncode}, stderr {done.stderr.strip()[-500:]!r}")
        stray = strangers(self.study_dir)
        if stray:
            self.problems.append(f"{name}: the study holds files it does not write: {stray}")
        return done

    def run(self) -> None:
        names = list(self.COMMANDS)
        i = 0
        while not self.done.wait(self.pause):
            self.poll(names[i % len(names)])
            i += 1

    def stop(self) -> None:
        self.done.set()
        self.join()


def one_round(args, study_dir: Path, rng: random.Random, earliest: float, max_delay: float) -> dict:
    """One start and one signal. Half the rounds signal at a random time; the other half once the
    study has saved something new (a model, a results line), then within a second: start-up on a
    loaded machine can outlast any fixed delay, and a study killed only while starting would
    never be killed mid-write."""
    made = progress(study_dir)
    proc = subprocess.Popen(command(args, study_dir), cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
    when = rng.choice(["time", "after progress"])
    delay = round(earliest + rng.uniform(0, max_delay), 2) if when == "time" else round(rng.uniform(0, 1), 2)
    name = rng.choice(sorted(SIGNALS))
    started = time.monotonic()
    deadline = started + delay if when == "time" else None
    seen: set[int] = set()
    while proc.poll() is None:
        seen.update(workers(proc.pid))
        if deadline is None and (progress(study_dir) > made or time.monotonic() - started > 300):
            deadline = time.monotonic() + delay
        if deadline is not None and time.monotonic() >= deadline:
            break
        time.sleep(0.05)
    delay = round(time.monotonic() - started, 2)
    live = [w for w in workers(proc.pid) if alive(w)] if proc.poll() is None else []
    seen.update(live)
    targets = ["parent", "group"] + (["worker"] if live and name != "SIGINT" else [])
    target = rng.choice(targets)
    if proc.poll() is None:
        if target == "parent":
            os.kill(proc.pid, SIGNALS[name])
        elif target == "group":
            os.killpg(proc.pid, SIGNALS[name])
        else:
            os.kill(rng.choice(live), SIGNALS[name])
    try:
        _, err = proc.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        _, err = proc.communicate()
        return {"when": when, "delay": delay, "target": target, "signal": name, "code": None,
                "problems": ["hung for 120 s"]}
    problems = []
    if proc.returncode not in expected_codes(target, name):
        problems.append(f"exit {proc.returncode}, not one of {sorted(expected_codes(target, name))}")
    lines = err.strip().splitlines()
    if "Traceback" in err or len([line for line in lines if line.startswith("fmtransfer: error")]) > 1:
        problems.append(f"stderr: {err.strip()[-500:]}")
    ends = time.monotonic() + 15  # workers of a parent killed hard die with it (PR_SET_PDEATHSIG)
    while any(alive(w) for w in seen) and time.monotonic() < ends:
        time.sleep(0.05)
    if any(alive(w) for w in seen):
        problems.append(f"workers outlived the study: {[w for w in seen if alive(w)]}")
    left = temporaries(study_dir)
    if left and name != "SIGKILL":  # a process killed hard cannot clean up; the next run does
        problems.append(f"temporary files left: {left}")
    return {"when": when, "delay": delay, "target": target, "signal": name, "code": proc.returncode,
            "recorded": len(set(recorded_ids(study_dir))), "temporaries_left": left, "problems": problems}


def torture(args: list[str], work: Path, kills: int, seed: int, max_delay: float | None = None,
            reference: Path | None = None, log=print, poll: bool = True) -> dict:
    """Run the torture in `work`; return what happened, with `ok` and every problem found.
    `poll`: read the study all the while with `Poller`.

    `reference` is a study directory of the same study run start to end (else it is run here,
    serially). Signals come at random between the end of the command's start-up (Python's import
    of it, measured) and that plus `max_delay` seconds (default: 0.6 of the uninterrupted study's
    time, so that most rounds end mid-study): before its start-up ends, Ctrl-C meets Python's own handler and its traceback.
    """
    started = time.perf_counter()
    if reference is None:
        reference = work / "uninterrupted"
        done = subprocess.run(command(args, reference, jobs=1), cwd=ROOT, capture_output=True, text=True)
        if done.returncode:
            raise RuntimeError(f"the uninterrupted study failed: {done.stderr[-2000:]}")
    uninterrupted_s = round(time.perf_counter() - started, 1)
    max_delay = 0.6 * uninterrupted_s if max_delay is None else max_delay
    earliest = round(1.5 * startup_seconds(), 2)
    wanted = records(reference)
    study_dir = work / "tortured"
    rng = random.Random(seed)
    rounds = []
    poller = Poller(study_dir, work / "outside" / "page.html")
    poller.page.parent.mkdir(parents=True, exist_ok=True)
    if poll:
        poller.start()
    try:
        for i in range(kills):
            rounds.append(one_round(args, study_dir, rng, earliest, max_delay))
            log(f"round {i + 1}/{kills}: {json.dumps(rounds[-1])}")
        final = subprocess.run(command(args, study_dir), cwd=ROOT, capture_output=True, text=True)
    finally:
        if poll:
            poller.stop()
    if poll:  # the finished study, read once more: every run reported, the page written outside it
        last = poller.poll("report")
        if last is not None and last.returncode == 0 and json.loads(last.stdout).get("runs_finished") != len(
                records(reference)):
            poller.problems.append(f"the last report counts {json.loads(last.stdout).get('runs_finished')} runs")
        for name in ("claims", "html"):
            poller.poll(name)
        if not poller.page.is_file():
            poller.problems.append(f"no page written at {poller.page}")
    ids = recorded_ids(study_dir)
    got = records(study_dir)
    problems = [f"round {i + 1}: {p}" for i, r in enumerate(rounds) for p in r["problems"]]
    if final.returncode:
        problems.append(f"the final resume failed: {final.stderr[-1000:]}")
    if got != wanted:
        differ = sorted(k for k in set(got) | set(wanted) if got.get(k) != wanted.get(k))
        problems.append(f"records differ from the uninterrupted study's: {differ}")
    if len(ids) != len(set(ids)):
        problems.append(f"runs recorded twice: {sorted({i for i in ids if ids.count(i) > 1})}")
    if temporaries(study_dir):
        problems.append(f"temporary files left at the end: {temporaries(study_dir)}")
    problems += [f"poll: {p}" for p in poller.problems]
    by = lambda key: {v: sum(r[key] == v for r in rounds) for v in sorted({str(r[key]) for r in rounds})}  # noqa: E731
    return {"ok": not problems, "problems": problems, "kills": kills, "seed": seed,
            "delay_s": [earliest, round(earliest + max_delay, 2)],
            "runs": len(wanted), "recorded_once": len(ids) == len(set(ids)), "records_equal": got == wanted,
            "signals": by("signal"), "targets": by("target"), "when": by("when"),
            "exit_codes": {str(k): sum(r["code"] == k for r in rounds) for k in sorted({r["code"] for r in rounds},
                                                                                     key=str)},
            "rounds_with_progress": sum(1 for a, b in zip([{"recorded": 0}, *rounds], rounds)
                                        if b.get("recorded", 0) > a.get("recorded", 0)),
            "polls": poller.codes if poll else None,
            "uninterrupted_s": uninterrupted_s, "total_s": round(time.perf_counter() - started, 1), "rounds": rounds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kills", type=int, default=20, help="signals sent, one per round  [20]")
    parser.add_argument("--seed", type=int, default=0, help="seeds the random times, signals and targets  [0]")
    parser.add_argument("--max-delay", type=float, help="longest wait after start-up before a signal, seconds  "
                                                        "[0.6 of the uninterrupted study's time]")
    parser.add_argument("--seeds", type=int, default=6, help="how many seeds the study runs  [6]")
    parser.add_argument("--real", action="store_true", help="the real Fashion-MNIST with configs/quick.toml")
    parser.add_argument("--out", type=Path, help="also write the JSON here")
    parser.add_argument("--no-poll", dest="poll", action="store_false",
                        help="do not read the study with report, claims and --html while it is tortured")
    opts = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    with tempfile.TemporaryDirectory(prefix="fmtransfer-torture-") as tmp:
        work = Path(tmp)
        if opts.real:
            args = [*QUICK, "--data-dir", str(REAL_DATA)]
        else:
            args = [*TINY, "--data-dir", str(write_tiny_data(work / "data"))]
        args[args.index("--seeds") + 1] = str(opts.seeds)
        result = torture(args, work, opts.kills, opts.seed, opts.max_delay,
                         log=lambda line: print(line, file=sys.stderr, flush=True), poll=opts.poll)
        result["command"] = " ".join(["study", *args]).replace(str(work), "TMP")
    result["data"] = "fashion-mnist, configs/quick.toml" if opts.real else "generated (700 training images)"
    text = json.dumps(result, indent=2)
    print(text)
    if opts.out:
        opts.out.write_text(text + "\n")
    sys.exit(0 if result["ok"] else 1)


if __name__ == "__main__":
    main()
