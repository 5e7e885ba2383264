"""Worker processes for a study: a pool that never hangs, and leaves no worker behind.

The pool is `concurrent.futures.ProcessPoolExecutor` over spawned processes (not forked: the
caller may have TensorFlow running). What it adds:

- A worker that dies (SIGKILL, the out-of-memory killer, a crash) stops the study within a
  second, in one error naming the run it was doing; the executor notices the death and fails
  every future, and this module names the dead worker from its exit status. Resuming redoes
  only runs that were not recorded.
- A worker dies with its parent: Linux's PR_SET_PDEATHSIG kills it at once, and a thread that
  watches `os.getppid()` does elsewhere. Each worker also holds a shared lock on a file of the
  study directory while it lives, so a resumed study is refused until every worker of the old
  one is gone (`io.refuse_if_locked`).
- Progress comes back on a queue that is only ever read without blocking.
- A worker's error comes back as data and is raised here as the same typed error.
- On an error, Ctrl-C or SIGTERM here, every worker is stopped before this returns.
"""

from __future__ import annotations

import contextlib
import ctypes
import multiprocessing
import os
import queue
import signal
import sys
import threading
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any, Callable

from fmtransfer.errors import ConfigError, DivergedError, FmtError, UsageError
from fmtransfer.io import locked

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
POLL_S = 0.2  # how often the parent looks at its futures and its progress queue
GRACE_S = 10.0  # how long a stopped worker has to exit before it is killed


def run_units(units: list, jobs: int, *, prepare: Callable, prepare_args: tuple, run: Callable,
              advance: Callable[[str], Any], pending: Callable[[Any], list[str]], lock: tuple[Path, str]) -> None:
    """Run each unit in one of `jobs` spawned worker processes; return when every unit is done.

    Args:
        units: picklable units of work, each run whole by one worker.
        prepare: `prepare(job, *prepare_args) -> state`, called in each worker before its first
            unit; `job` numbers the workers from 0. A module-level function (it is pickled).
        run: `run(state, unit, advance)` runs a unit in a worker, calling `advance(run_id)` after
            each run it records. A module-level function.
        advance: called here with each run id a worker reports.
        pending: `pending(unit)` -> the run ids of `unit` not recorded yet, asked here when a
            worker died, to name the run it was doing.
        lock: (directory, file name): each worker holds this lock shared while it lives.

    Raises:
        ConfigError, UsageError, FmtError: a worker's error, as the serial study raises it.
        FmtError: a worker died; its message names the run and says to run the study again.
    """
    ctx = multiprocessing.get_context("spawn")
    events, slots = ctx.Queue(), ctx.Queue()
    for job in range(jobs):
        slots.put(job)
    pool = ProcessPoolExecutor(jobs, mp_context=ctx, initializer=_start,
                               initargs=(os.getpid(), events, slots, str(lock[0]), lock[1], prepare, prepare_args, run))
    doing: dict[int, int] = {}  # worker pid -> the unit it runs
    workers: dict = {}
    finished = died = False
    try:
        waiting = {pool.submit(_task, i, unit) for i, unit in enumerate(units)}
        # The executor starts its processes in submit(), in this thread: the thread whose end
        # PR_SET_PDEATHSIG watches. They are kept here to stop them and read their exit status.
        workers = dict(getattr(pool, "_processes", None) or {})
        while waiting:
            done, waiting = wait(waiting, timeout=POLL_S, return_when=FIRST_COMPLETED)
            _drain(events, advance, doing)
            for future in done:
                outcome = future.result()
                if outcome is not None:
                    raise _error(outcome)
        finished = True
    except BrokenProcessPool:
        died = True
    finally:
        if not finished:
            # The executor stops the rest itself when one died; else (an error, Ctrl-C, SIGTERM)
            # this does. Either way none may outlive the study, nor keep it waiting (shutdown
            # waits for running units): those started before an interrupt in submit() too.
            workers.update(getattr(pool, "_processes", None) or {})
            killed = _stop(workers, terminate=not died)
            if not workers:  # an executor that no longer shows its processes: the pids they sent
                for pid in doing:
                    with contextlib.suppress(OSError):
                        os.kill(pid, signal.SIGKILL)
        pool.shutdown(wait=True, cancel_futures=True)
        _drain(events, advance, doing)
        for q in (events, slots):
            q.close()
    if died:
        raise _death(workers, killed, doing, units, pending)


# ----------------------------------------------------------------------------- in the parent

def _drain(events, advance, doing: dict[int, int]) -> None:
    """Take every event the workers sent so far, never waiting for one."""
    while True:
        try:
            kind, pid, payload = events.get_nowait()
        except queue.Empty:
            return
        except (OSError, ValueError, EOFError):  # closed, or a message cut by a killed writer
            return
        if kind == "unit":
            doing[pid] = payload
        elif kind == "run":
            advance(payload)


def _stop(workers: dict, terminate: bool) -> set[int]:
    """End every worker: ask (SIGTERM) if `terminate`, wait a little, then kill. The pids killed here."""
    if terminate:
        for p in workers.values():
            with contextlib.suppress(OSError, ValueError):
                p.terminate()
    deadline = time.monotonic() + GRACE_S
    killed = set()
    for pid, p in workers.items():
        with contextlib.suppress(OSError, ValueError):
            p.join(max(0.0, deadline - time.monotonic()))
            if p.is_alive() and _exists(pid):
                p.kill()
                killed.add(pid)
                p.join(GRACE_S)
    return killed


def _exists(pid: int) -> bool:
    """Whether `pid` is still a process. `is_alive` can say yes for one the executor's thread has
    just reaped (its waitpid then finds no child), and killing it "again" would hide the status
    that says how it died."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True
    return True


def _exit_codes(workers: dict, patience: float = 2.0) -> dict[int, int]:
    """Each ended worker's exit status. The executor's own thread reaps its workers too, and a
    join racing it may return before the status is stored (waitpid then finds no child): wait a
    moment for it rather than lose the one status that says what happened."""
    deadline = time.monotonic() + patience
    while any(p.exitcode is None for p in workers.values()) and time.monotonic() < deadline:
        time.sleep(0.05)
    return {pid: p.exitcode for pid, p in workers.items() if p.exitcode is not None}


def _death(workers: dict, killed: set[int], doing: dict[int, int], units: list, pending) -> FmtError:
    """One line for the worker(s) that died, each named by the run it was doing."""
    codes = _exit_codes({pid: p for pid, p in workers.items() if pid not in killed})
    # The executor ends the others with SIGTERM once one died: those are not the news.
    dead = [pid for pid, code in codes.items() if code != -signal.SIGTERM] or list(codes)
    parts = []
    for pid in dead or [None]:
        code = codes.get(pid)
        if code is None:
            how = "ended"
        elif code < 0:
            how = f"killed by signal {-code}, {_signal_name(-code)}"
            if -code == signal.SIGKILL:
                how += ", which the out-of-memory killer sends"
        else:
            how = f"exited with status {code}"
        left = pending(units[doing[pid]]) if pid in doing else []
        where = "between runs" if not left else f"while running {left[0]}" + (
            f" ({len(left) - 1} more of its runs not recorded)" if len(left) > 1 else "")
        parts.append(f"a study worker died ({how}) {where}")
    return FmtError("; ".join(parts) + "; run the study again to resume (finished runs are kept)")


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return "an unknown signal"


def _error(outcome: tuple) -> FmtError:
    """A worker's error, described by `_describe`, as the serial study raises it."""
    kind, *details = outcome
    if kind == "config":  # a setting the data refuses: said as the serial study says it
        key, problem, source = details
        return ConfigError(key, problem, source=source)
    if kind == "diverged":
        what, epoch, keys, cause = details
        return DivergedError(what, epoch, keys, cause=cause)
    name, message, code, path = details
    prefix = "a study worker failed: " + ("" if kind == "fmt" else f"{name}: ")
    return (UsageError if code == 2 else FmtError)(prefix + message, path=path)


# ----------------------------------------------------------------------------- in a worker

_WORKER: dict[str, Any] = {}  # this process's pool state, when it is a worker


def _start(parent: int, events, slots, lock_dir: str, lock_name: str, prepare, prepare_args, run) -> None:
    """The pool's initializer: nothing here may fail (the executor would only see a dead
    worker), so what can fail waits for the first unit, whose errors come back as data."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole group: the parent decides
    signal.signal(signal.SIGTERM, _stopped)
    _die_with(parent)
    _WORKER.update(parent=parent, events=events, slots=slots, lock=(lock_dir, lock_name), prepare=prepare,
                   prepare_args=prepare_args, run=run, state=None, held=contextlib.ExitStack())


class _Stopped(BaseException):
    """SIGTERM in a worker (the parent stopping the pool): unwinds the unit, so that its
    temporary files go with it, as in the parent."""


def _stopped(signum, frame) -> None:
    if _WORKER.get("busy"):
        raise _Stopped()
    _die_of_sigterm()  # between units: nothing to clean up


def _die_of_sigterm() -> None:
    """End as SIGTERM ends a process: the parent reads the signal in the exit status."""
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(60)  # pragma: no cover - the signal ends the process first


def _die_with(parent: int) -> None:
    """End this process when `parent` ends, so that a study killed hard leaves no worker writing."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(ctypes.c_int(PR_SET_PDEATHSIG), ctypes.c_ulong(signal.SIGKILL), ctypes.c_ulong(0),
                       ctypes.c_ulong(0), ctypes.c_ulong(0))
    if os.getppid() != parent:  # it ended before the kernel was told: no signal will come
        os._exit(1)
    threading.Thread(target=_watch_parent, args=(parent,), name="fmtransfer-parent-watch", daemon=True).start()


def _watch_parent(parent: int) -> None:
    """Where PR_SET_PDEATHSIG is not (macOS, BSD): an orphan is adopted, so its parent pid changes."""
    while os.getppid() == parent:
        time.sleep(0.5)
    os.kill(os.getpid(), signal.SIGKILL)


def _task(index: int, unit) -> tuple | None:
    """Run one unit here: None when done, else the error, described (see `_describe`)."""
    w = _WORKER
    pid, events = os.getpid(), w["events"]
    w["busy"] = True
    try:
        events.put(("unit", pid, index))
        if w["state"] is None:
            job = w["slots"].get(timeout=60)
            w["held"].enter_context(locked(*w["lock"], shared=True, need_bytes=0))  # the parent checked the space
            if os.getppid() != w["parent"]:  # orphaned before the lock was taken: write nothing
                os._exit(1)
            w["state"] = w["prepare"](job, *w["prepare_args"])
        w["run"](w["state"], unit, lambda run_id: events.put(("run", pid, run_id)))
        return None
    except _Stopped:  # unwound: its temporary files are gone
        _die_of_sigterm()
    except BaseException as e:  # noqa: B036 - reported to the parent, which stops the study with one line
        return _describe(e)
    finally:
        w["busy"] = False


def _describe(e: BaseException) -> tuple:
    """An error as plain data: fmtransfer's errors do not all unpickle (their arguments differ)."""
    if isinstance(e, ConfigError):
        return "config", e.key, e.problem, e.source
    if isinstance(e, DivergedError):
        return "diverged", e.what, e.epoch, e.keys, e.cause
    path = str(e.path) if isinstance(e, FmtError) and e.path is not None else None
    return ("fmt" if isinstance(e, FmtError) else "other", type(e).__name__, str(e) or type(e).__name__,
            getattr(e, "exit_code", 1), path)
