"""The shipped sbatch script on a real Slurm: a single-node cluster (munged, slurmctld, slurmd)
started as root in a temporary directory, on loopback only. The study runs as a job array, one
task is requeued mid-run, and the merged directory must hold exactly the serial study's runs.
Then arrays Slurm numbers otherwise (a resubmitted `--array=3,7`, a stepped `--array=0-4:2`) run
the shards their tasks name, or are refused in one line.

Without root or apt the test skips, naming why; with FMTRANSFER_REQUIRE_SYSTEM=1 (CI) that is a
failure. Debian's slurm-wlm and munge are installed with apt when missing.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from conftest import REPO, require_system, snapshot, system_commands
from fmtransfer.study.records import TIMING  # what may differ between two runs of the same study

SBATCH = REPO / "deploy" / "slurm" / "study.sbatch"
# The checkout's own console script, so the array runs this tree's code, as the serial study does.
FMTRANSFER = REPO / ".venv" / "bin" / "fmtransfer"
if not FMTRANSFER.exists():
    FMTRANSFER = Path(sys.executable).with_name("fmtransfer")

# Two seeds, so each of the two array tasks has one (seed, pair) group; two contenders, so that
# group's one grid point holds two runs sharing model A and the baseline, and a task can be
# stopped between them: resumed, it must skip the finished run, not only finished grid points.
GRID = ("--seeds 2 --contenders baseline,transfer,lp-ft --b-train-sizes 50 --a-epochs 1 --b-epochs 1 "
        "--batch-size 128 --freeze-epochs 1 --fine-tune-epochs 1")
RUNS_PER_TASK = 2

COMMANDS = ["munged", "munge", "slurmctld", "slurmd", "sbatch", "squeue", "scontrol", "scancel", "sinfo"]
PACKAGES = ["slurm-wlm", "munge"]
WHAT = "a real Slurm cluster"


def _free_ports(n: int) -> list[int]:
    """Ports below Linux's ephemeral range (32768 up), so no outgoing connection takes one between
    this check and the daemons' bind; random, so two clusters on one machine do not meet."""
    ports: list[int] = []
    while len(ports) < n:
        port = random.randint(20000, 30000)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        if port not in ports:
            ports.append(port)
    return ports


class Cluster:
    """munged, slurmctld and slurmd in the foreground as children of this process, so each is
    stopped by its own PID; every file they write is under `root`."""

    def __init__(self, root: Path, commands: dict[str, str]):
        self.root, self.cmd = root, commands
        self.conf = root / "slurm.conf"
        self.socket = root / "munge" / "munge.socket"
        self.env = {**os.environ, "SLURM_CONF": str(self.conf)}
        self.daemons: list[tuple[str, subprocess.Popen]] = []
        self.jobs: list[str] = []

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        proc = subprocess.run([self.cmd.get(args[0], args[0]), *args[1:]], env=self.env, capture_output=True,
                              text=True, timeout=60)
        if check and proc.returncode != 0:
            raise AssertionError(f"{' '.join(args)}: exit {proc.returncode}: {proc.stderr.strip()}\n{self.logs()}")
        return proc

    def _daemon(self, name: str, *args: str) -> None:
        log = open(self.root / "log" / f"{name}.out", "wb")
        with log:
            # Their own session: a Ctrl-C at the terminal reaches pytest, whose finalizer stops
            # the jobs before the daemons, not the daemons first with jobs left running.
            proc = subprocess.Popen([self.cmd[name], *args], env=self.env, stdin=subprocess.DEVNULL, stdout=log,
                                    stderr=subprocess.STDOUT, cwd=self.root, start_new_session=True)
        self.daemons.append((name, proc))

    def start(self) -> None:
        for d in ("munge", "state", "spool", "log"):
            (self.root / d).mkdir()
        key = self.root / "munge" / "munge.key"
        with open(os.open(key, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb") as f:
            f.write(os.urandom(1024))  # munged refuses a key that others may read
        self._daemon("munged", "--foreground", f"--socket={self.socket}", f"--key-file={key}",
                     f"--log-file={self.root / 'log' / 'munged.log'}", f"--pid-file={self.root / 'munge' / 'munged.pid'}",
                     f"--seed-file={self.root / 'munge' / 'munged.seed'}")
        self._wait(lambda: self.socket.exists(), 30, "munged's socket")
        host = socket.gethostname().split(".")[0]
        ctld_port, d_port = _free_ports(2)
        self.conf.write_text("\n".join([
            "ClusterName=fmtransfer-test",
            f"SlurmctldHost={host}(127.0.0.1)",
            f"SlurmctldPort={ctld_port}",
            f"SlurmdPort={d_port}",
            # Both daemons bind the node's address, 127.0.0.1, not every interface.
            "CommunicationParameters=NoInAddrAny,NoCtldInAddrAny",
            "AuthType=auth/munge", "CredType=cred/munge", f"AuthInfo=socket={self.socket}",
            "SlurmUser=root", "SlurmdUser=root",
            f"StateSaveLocation={self.root / 'state'}", f"SlurmdSpoolDir={self.root / 'spool'}",
            f"SlurmctldPidFile={self.root / 'slurmctld.pid'}", f"SlurmdPidFile={self.root / 'slurmd.pid'}",
            f"SlurmctldLogFile={self.root / 'log' / 'slurmctld.log'}",
            f"SlurmdLogFile={self.root / 'log' / 'slurmd.log'}",
            # No cgroups in a container, no database: the plain plugins.
            "ProctrackType=proctrack/linuxproc", "TaskPlugin=task/none", "JobAcctGatherType=jobacct_gather/none",
            "AccountingStorageType=accounting_storage/none", "JobCompType=jobcomp/none", "MpiDefault=none",
            "MailProg=/bin/true",
            # CPUs only: both array tasks fit on the node side by side, whatever --mem they ask.
            "SelectType=select/cons_tres", "SelectTypeParameters=CR_CPU",
            "SlurmdParameters=config_overrides",  # the node is what this file says, on any machine
            "ReturnToService=2",
            "KillWait=10",  # SIGTERM, then SIGKILL: 10 s, not 30, so that cancelling at the end is quick
            f"NodeName={host} NodeAddr=127.0.0.1 CPUs=2 RealMemory=2000 State=UNKNOWN",
            f"PartitionName=test Nodes={host} Default=YES MaxTime=INFINITE State=UP",
        ]) + "\n")
        self._daemon("slurmctld", "-D")
        self._daemon("slurmd", "-D")
        self._wait(lambda: self.run("sinfo", "-h", "-o", "%T", check=False).stdout.strip() == "idle", 60,
                   "the node to be idle")

    def _wait(self, ready, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not ready():
            dead = [f"{name} exited with {p.returncode}" for name, p in self.daemons if p.poll() is not None]
            if dead or time.monotonic() > deadline:
                raise RuntimeError(f"waiting for {what}: {'; '.join(dead) or f'not after {timeout} s'}\n{self.logs()}")
            time.sleep(0.2)

    def logs(self, lines: int = 15) -> str:
        out = []
        for path in sorted((self.root / "log").glob("*")) if (self.root / "log").is_dir() else []:
            text = path.read_text(errors="replace").splitlines()
            out += [f"--- {path.name}", *text[-lines:]]
        return "\n".join(out)

    def stop(self) -> None:
        """Jobs first (a slurmstepd outlives its slurmd), then the daemons, each by its PID; then any
        process still carrying this cluster's SLURM_CONF in its environment, by its PID."""
        controller = any(name == "slurmctld" and p.poll() is None for name, p in self.daemons)
        if controller and self.jobs:
            self.run("scancel", *self.jobs, check=False)
            with contextlib.suppress(RuntimeError):
                self._wait(lambda: not self.run("squeue", "-h", check=False).stdout.strip(), 30, "jobs to end")
        for name, proc in reversed(self.daemons):
            if proc.poll() is None:
                proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for pid in self.stragglers():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while self.stragglers() and time.monotonic() < deadline:
            time.sleep(0.1)

    def stragglers(self) -> list[int]:
        """Processes of this cluster still alive (a slurmstepd, a job's): found by the SLURM_CONF
        that only they and this cluster's daemons carry."""
        mark = f"SLURM_CONF={self.conf}".encode()
        found = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit() or int(entry.name) == os.getpid():
                continue
            with contextlib.suppress(OSError):
                if mark in (entry / "environ").read_bytes().split(b"\0") and \
                        (entry / "stat").read_text().rpartition(")")[2].split()[0] != "Z":
                    found.append(int(entry.name))
        return found


@pytest.fixture(scope="module")
def slurm():
    """A started single-node cluster; stopped, and its directory removed, however the test ends."""
    if os.geteuid() != 0:
        require_system(WHAT, "slurmd and slurmctld run as root here, and this user is not root")
    commands = system_commands(WHAT, COMMANDS, PACKAGES)
    # Not pytest's tmp_path: munged wants every directory above its socket to be searchable by all.
    root = Path(tempfile.mkdtemp(prefix="fmtransfer-slurm-"))
    root.chmod(0o755)
    cluster = Cluster(root, commands)
    try:
        problem = None
        try:
            cluster.start()
        except (RuntimeError, OSError, subprocess.SubprocessError) as e:
            problem = str(e)
        if problem:  # outside the except: one message, not the exception chained twice
            require_system(WHAT, f"the cluster did not start: {problem}")
        yield cluster
    finally:
        cluster.stop()
        shutil.rmtree(root, ignore_errors=True)


def _tasks(cluster: Cluster, job: str) -> dict[int, dict[str, str]]:
    """Each array task's fields, from `scontrol show job` (kept a while after the job ends); tasks
    not started yet share one record (ArrayTaskId=0-1), left out."""
    out = cluster.run("scontrol", "-o", "show", "job", job).stdout
    tasks = {}
    for line in out.splitlines():
        fields = dict(re.findall(r"(\w+)=(\S*)", line))
        if fields.get("ArrayJobId") == job and fields.get("ArrayTaskId", "").isdigit():
            tasks[int(fields["ArrayTaskId"])] = fields
    return tasks


def _poll(check, timeout: float, what: str, cluster: Cluster, interval: float = 0.1):
    deadline = time.monotonic() + timeout
    while (value := check()) is None:
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not after {timeout} s\n{cluster.logs()}")
        time.sleep(interval)
    return value


def _written(path: Path) -> list[str]:
    """The whole lines of a results file a running task is appending to."""
    return path.read_text().split("\n")[:-1] if path.exists() else []


def _records(study_dir: Path) -> dict[str, dict]:
    """Every results line of a study directory by run id, timing fields left out; each line must
    be whole JSON, and each run recorded once."""
    records: dict[str, dict] = {}
    for path in sorted(study_dir.glob("results*.jsonl")):
        for line in path.read_text().splitlines():  # a torn line fails json.loads
            record = json.loads(line)
            assert record["id"] not in records, f"{record['id']} recorded twice (again in {path.name})"
            records[record["id"]] = {k: v for k, v in record.items() if k not in TIMING}
    return records


def _report(study_dir: Path) -> dict:
    proc = subprocess.run([str(FMTRANSFER), "study", "report", str(study_dir), "--json", "--no-plots"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    del report["study"]  # the directory's own path
    return report


def _without_threads(env) -> dict[str, str]:
    return {k: v for k, v in env.items() if k != "FMTRANSFER_THREADS"}


def _submit(cluster: Cluster, tmp_path: Path, name: str, array: str, env: dict, *options: str) -> str:
    """The shipped script submitted as array `array`; its tasks' output in tmp_path/name-ID.out."""
    proc = subprocess.run([cluster.cmd["sbatch"], "--parsable", f"--array={array}", "--mem=500M", "--time=10",
                           f"--output={tmp_path}/{name}-%a.out", f"--chdir={tmp_path}", *options, str(SBATCH)],
                          env={**_without_threads(cluster.env), "FMTRANSFER": str(FMTRANSFER), **env},
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    job = proc.stdout.strip().split(";")[0]
    cluster.jobs.append(job)
    return job


@pytest.mark.slow
def test_the_template_runs_the_shards_a_sparse_or_stepped_array_names(slurm, tmp_path, tiny_data):
    """Three arrays of the shipped script at once. `--array=3,7` (some tasks of 10 resubmitted)
    runs shards 3 and 7 of 10; the same with the count left to the array is refused in one line
    naming the variable, exit 2; `--array=0-4:2` runs shards 0, 1 and 2 of 3, on fmtransfer's
    own thread count although each task has 2 CPUs."""
    from fmtransfer import runtime

    grid = (f"--data-dir {tiny_data} --no-verify --valid-size 100 --hidden 16,8 --b-train-sizes 20 --a-epochs 1 "
            "--b-epochs 1 --freeze-epochs 1 --fine-tune-epochs 1 --contenders transfer")
    config = str(REPO / "configs" / "quick.toml")
    # Two seeds, so shards 3 and 7 of 10 hold no runs; one seed, so of 3 only shard 0 trains.
    rerun = _submit(slurm, tmp_path, "rerun", "3,7", {"STUDY_DIR": str(tmp_path / "rerun"), "CONFIG": config,
                                                       "GRID": f"--seeds 2 {grid}"})
    guessed = _submit(slurm, tmp_path, "guessed", "3,7", {"STUDY_DIR": str(tmp_path / "guessed"), "SHARDS": "",
                                                          "CONFIG": config, "GRID": f"--seeds 2 {grid}"})
    stepped = _submit(slurm, tmp_path, "stepped", "0-4:2", {"STUDY_DIR": str(tmp_path / "stepped"), "SHARDS": "",
                                                            "CONFIG": config, "GRID": f"--seeds 1 {grid}"},
                      "--cpus-per-task=2")
    _poll(lambda: not slurm.run("squeue", "-h", check=False).stdout.strip() or None, 300, "the arrays to finish",
          slurm, interval=0.5)

    def out(name: str, task: int) -> str:
        return " ".join((tmp_path / f"{name}-{task}.out").read_text().split())

    def states(job: str) -> dict[int, tuple[str, str]]:
        return {i: (t["JobState"], t["ExitCode"]) for i, t in _tasks(slurm, job).items()}

    assert states(rerun) == {3: ("COMPLETED", "0:0"), 7: ("COMPLETED", "0:0")}
    for task in (3, 7):
        assert f"shard {task}/10 has 0 runs" in out("rerun", task)

    assert states(guessed) == {3: ("FAILED", "2:0"), 7: ("FAILED", "2:0")}
    for task in (3, 7):
        [line] = (tmp_path / f"guessed-{task}.out").read_text().splitlines()
        assert line.startswith("fmtransfer: error: option --shard") and "SLURM_ARRAY_TASK_MIN is 3" in line
    assert not (tmp_path / "guessed").exists()

    assert states(stepped) == {0: ("COMPLETED", "0:0"), 2: ("COMPLETED", "0:0"), 4: ("COMPLETED", "0:0")}, \
        {t: out("stepped", t)[-1500:] for t in (0, 2, 4)}
    assert re.search(r"shard 0/3 has [1-9]\d* runs", out("stepped", 0))
    assert "shard 1/3 has 0 runs" in out("stepped", 2) and "shard 2/3 has 0 runs" in out("stepped", 4)
    assert sorted(p.name for p in (tmp_path / "stepped").glob("results*.jsonl")) == ["results-0of3.jsonl"]
    lines = [json.loads(x) for x in (tmp_path / "stepped" / "results-0of3.jsonl").read_text().splitlines()]
    assert lines and {x["trained_with"]["threads"] for x in lines} == {runtime.threads("dense")[0]}


def test_require_system_skips_unless_the_environment_requires_it(monkeypatch):
    monkeypatch.delenv("FMTRANSFER_REQUIRE_SYSTEM", raising=False)
    with pytest.raises(pytest.skip.Exception, match="Slurm: no root"):
        require_system("Slurm", "no root")
    monkeypatch.setenv("FMTRANSFER_REQUIRE_SYSTEM", "1")
    with pytest.raises(pytest.fail.Exception, match="Slurm: no root .*FMTRANSFER_REQUIRE_SYSTEM=1"):
        require_system("Slurm", "no root")


@pytest.mark.slow
def test_a_slurm_array_requeued_mid_run_merges_to_the_serial_study(slurm, tmp_path):
    shared, serial = tmp_path / "array", tmp_path / "serial"
    config = str(REPO / "configs" / "quick.toml")
    # The serial study, side by side with the array: each process uses one CPU. fmtransfer's own
    # thread count in both (the template leaves FMTRANSFER_THREADS alone), so the same numbers to the bit.
    with open(tmp_path / "serial.out", "wb") as log:
        serial_run = subprocess.Popen([str(FMTRANSFER), "study", "--config", config, "--run", str(serial),
                                       *GRID.split(), "--no-plots"], stdout=log, stderr=subprocess.STDOUT,
                                      env=_without_threads(os.environ))
    try:
        env = {**_without_threads(slurm.env), "STUDY_DIR": str(shared), "CONFIG": config, "GRID": GRID,
               "FMTRANSFER": str(FMTRANSFER), "SHARDS": "2"}
        # The script as shipped; only what the test node cannot give is overridden (4G, 2 hours).
        submitted = subprocess.run(
            [slurm.cmd["sbatch"], "--parsable", "--array=0-1", "--mem=500M", "--time=10",
             f"--output={tmp_path}/task-%A_%a.out", "--open-mode=append", f"--chdir={tmp_path}", str(SBATCH)],
            env=env, capture_output=True, text=True, timeout=60)
        assert submitted.returncode == 0, submitted.stderr
        job = submitted.stdout.strip().split(";")[0]
        slurm.jobs.append(job)
        task, results = f"{job}_0", shared / "results-0of2.jsonl"

        # Preempt task 0 between its two runs: one line written, the other run in training.
        def between_runs():
            state = _tasks(slurm, job).get(0, {}).get("JobState")
            n = len(_written(results))
            assert n < RUNS_PER_TASK, f"task 0 finished both runs before it could be requeued\n{slurm.logs()}"
            return n if n == 1 and state == "RUNNING" else None

        _poll(between_runs, 240, "task 0 running with one run written", slurm)
        seed = json.loads(_written(results)[0])["seed"]
        models = {name: v for name, v in snapshot(shared / "models").items() if name.startswith(f"a-seed{seed}-")}
        assert models, f"no model A of seed {seed} saved, yet a run built on it is recorded"
        slurm.run("scontrol", "requeue", task)
        # Slurm holds a requeued batch job for two minutes before it may start again; a test has
        # no reason to wait that long.
        _poll(lambda: _tasks(slurm, job).get(0, {}).get("JobState") == "PENDING" or None, 60, "task 0 pending again", slurm)
        slurm.run("scontrol", "update", f"JobId={task}", "StartTime=now")
        _poll(lambda: not slurm.run("squeue", "-h", "-j", job, check=False).stdout.strip() or None, 300,
              "the array to finish", slurm, interval=0.5)

        tasks = _tasks(slurm, job)
        assert sorted(tasks) == [0, 1]
        assert [(t["JobState"], t["ExitCode"]) for t in tasks.values()] == [("COMPLETED", "0:0")] * 2, tasks
        assert (tasks[0]["Restarts"], tasks[1]["Restarts"]) == ("1", "0")
        # Two starts of task 0 in its output: the second found one of its two runs finished.
        out = " ".join((tmp_path / f"task-{job}_0.out").read_text().split())  # unwrapped: rich fits the lines
        assert re.findall(r"shard 0/2 has (\d+) runs, (\d+) already finished", out) == [("2", "0"), ("2", "1")], out
        assert "terminated (SIGTERM)" in out
        after = snapshot(shared / "models")
        assert {name: after.get(name) for name in models} == models  # model A reused, not trained again

        assert serial_run.wait(timeout=300) == 0, (tmp_path / "serial.out").read_text()[-3000:]
    finally:
        if serial_run.poll() is None:
            serial_run.kill()
            serial_run.wait()

    assert sorted(p.name for p in shared.glob("results*.jsonl")) == ["results-0of2.jsonl", "results-1of2.jsonl"]
    array, alone = _records(shared), _records(serial)
    assert len(alone) == 2 * RUNS_PER_TASK
    assert sorted(array) == sorted(alone)
    for run_id, record in alone.items():  # ids, scores, settings fingerprints, what each was built on
        assert array[run_id] == record, run_id
    report = _report(shared)
    assert report["runs_finished"] == report["runs_in_grid"] == 2 * RUNS_PER_TASK and report["skipped"] == {}
    assert report == _report(serial)
