"""Leaf helpers every layer uses: fingerprints, file digests, atomic writes, the guard on a file
a user names for output, bounded reads of a file a record names, strict JSON, directory locks.

Imports nothing of fmtransfer's but its errors, so any module may import it.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import math
import os
import shutil
import stat
import tempfile
from pathlib import Path
from typing import Any

from fmtransfer.errors import FmtError, UsageError


def fingerprint(*parts: Any) -> str:
    """A short hash of JSON-able settings: equal settings, equal fingerprint."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def file_sha256(path: str | Path) -> str:
    """The SHA-256 of a file's bytes, read a megabyte at a time."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


class atomic_path:
    """A temporary path beside `path`, renamed onto it only when the block succeeds.

    The temporary name keeps `path`'s suffix, since Keras picks the format from it. A symbolic
    link at `path` is replaced by the file, never written through: a run or study directory's
    files stay inside it (a file a user names is resolved first, by `output_file`). What is
    there and is not a regular file (a folder, a FIFO, a device) is refused before anything is
    written: renamed over, a pipe or a device a user set there would be lost without a byte
    reaching it.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def __enter__(self) -> Path:
        kind = None if os.path.islink(self.path) else not_a_file(self.path)
        if kind is not None:
            raise UsageError(f"{self.path} is {kind}, not a file; move it away or write elsewhere",
                             path=self.path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{self.path.stem}.", suffix=f".tmp{self.path.suffix}",
                                   dir=self.path.parent)
        os.close(fd)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; artifacts are ordinary files
        self.tmp = Path(tmp)
        return self.tmp

    def __exit__(self, kind, value, tb) -> None:
        if kind is None:
            os.replace(self.tmp, self.path)
            return
        if self.tmp.exists():
            self.tmp.unlink()
        if isinstance(value, OSError) and value.errno in WRITE_ERRORS:
            raise FmtError(f"cannot write {self.path}: {value.strerror}; the previous file, if any, is intact",
                           path=self.path) from None


def not_a_file(path: str | Path) -> str | None:
    """What is at `path`, links followed, when it is there and not a regular file ("a folder",
    "a FIFO", "a device", ...); None for a regular file or nothing."""
    try:
        mode = os.stat(path).st_mode
    except OSError as e:
        return "a link that loops" if e.errno == errno.ELOOP else None
    if stat.S_ISREG(mode):
        return None
    if stat.S_ISDIR(mode):
        return "a folder"
    if stat.S_ISFIFO(mode):
        return "a FIFO (named pipe)"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    return "a socket" if stat.S_ISSOCK(mode) else "not a regular file"


def _named(given: Path, real: Path) -> str:
    return f"{given} (a link to {real})" if os.path.islink(given) else str(given)


# The files that make a folder a study's (fmtransfer.study.records writes them), named here so
# that every writer, the stages' included, can keep out of a study without importing it.
STUDY_MARKERS = ("study.json", "results.jsonl")


def output_file(path: str | Path, *, keep_out=(), markers=STUDY_MARKERS) -> Path:
    """Check a file a user named for a command's output (`study report --html FILE`) before it
    is written; -> the file to write: `path`, or the one a symbolic link there names (written
    through, the link kept; every check is of the file it names).

    Refused, as a `UsageError` carrying `path`: what is not a regular file (a folder, a FIFO, a
    device), and any file inside a directory of `keep_out` (what the command reads) or inside a
    directory holding one of `markers` (a study's): those are written only by their own
    writers, so a mistyped target never overwrites the evidence a command reports on.
    """
    given = Path(path)
    real = Path(os.path.realpath(given))
    kind = not_a_file(given)
    if kind is not None:
        raise UsageError(f"{_named(given, real)} is {kind}; give the name of a file to write", path=given)
    guarded = {Path(os.path.realpath(d)) for d in keep_out}
    folder = next((f for f in real.parents if f in guarded), None) or marked_folder(real.parent, markers)
    if folder is not None:
        raise UsageError(f"{_named(given, real)} is inside {folder}, whose files only fmtransfer's own "
                         "writers change; write it outside that folder", path=given)
    return real


def marked_folder(folder: str | Path, markers=STUDY_MARKERS) -> Path | None:
    """The first of `folder` (links resolved) and the folders above it that holds one of
    `markers`, or None."""
    real = Path(os.path.realpath(folder))
    return next((f for f in (real, *real.parents) if any((f / m).is_file() for m in markers)), None)


def read_bounded(path: str | Path, inside: str | Path, limit: int) -> bytes:
    """The bytes of the regular file at `path`, links followed, which must then lie inside the
    folder `inside`; at most `limit` of them. A FIFO is never waited on: it is opened without
    blocking and refused.

    Raises:
        ValueError: saying why the file is not read: a path that leads out of `inside`
            (absolute, `..`, a link out), what is not a regular file, a longer file, or one
            that cannot be opened.
    """
    real = Path(os.path.realpath(path))
    if Path(os.path.realpath(inside)) not in real.parents:
        raise ValueError(f"lies outside {inside}, where it must be")
    try:
        fd = os.open(real, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOCTTY", 0))
    except OSError as e:
        raise ValueError(f"cannot be read ({e.strerror or e})") from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise ValueError("is not a regular file (a FIFO, a device or a folder is never read)")
        os.set_blocking(fd, True)
        with os.fdopen(os.dup(fd), "rb") as f:
            data = f.read(limit + 1)
    except OSError as e:
        raise ValueError(f"cannot be read ({e.strerror or e})") from None
    finally:
        os.close(fd)
    if len(data) > limit:
        raise ValueError(f"is longer than the {limit:,} bytes declared for it")
    return data


# The write failures a user can act on (a full disk, a read-only or forbidden place).
WRITE_ERRORS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM}
# A writer that says nothing of what it will write refuses to start with less free space than this.
MIN_FREE_BYTES = 256 * 2**20


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_text_atomic(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def to_json(obj: Any) -> str:
    """Strict JSON: infinities and NaN (a perfect model's error ratio) become null."""
    return json.dumps(_finite(obj), indent=2)


def _finite(obj: Any) -> Any:
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


_HELD: dict[tuple[str, str], list] = {}  # (directory, lock file) -> [fd, depth]: re-entrant in one process


@contextlib.contextmanager
def locked(directory: str | Path, name: str = ".lock", *, shared: bool = False, create: bool = True,
           need_bytes: int = MIN_FREE_BYTES):
    """Hold an OS lock on `directory` (a file in it) while a process writes there.

    The lock is flock(2)'s: released when the process ends however it ends, so a crashed holder
    never blocks the directory. A second writer is refused at once, naming the directory. Shared
    holders (shards of one study) exclude only an exclusive one. Without `create`, a directory
    that does not exist yet is not created just to be locked. `need_bytes` is what the holder
    will write at most: with less free, it is refused before it starts.
    """
    directory = Path(directory)
    if not directory.is_dir() and not create:
        yield
        return
    key = (str(directory.resolve()), name)
    if key in _HELD:  # a stage inside `run`: the lock and the checks are the outer stage's
        _HELD[key][1] += 1
        try:
            yield
        finally:
            _HELD[key][1] -= 1
        return
    try:
        directory.mkdir(parents=True, exist_ok=True)
        free = shutil.disk_usage(directory).free
        if not os.access(directory, os.W_OK):
            raise PermissionError(errno.EACCES, "not writable")
    except OSError as e:
        raise UsageError(f"cannot write to {directory} ({e.strerror}); choose a writable directory",
                         path=directory) from None
    if free < need_bytes:
        raise UsageError(f"{directory} has {_mib(free)} MiB free, less than the {_mib(need_bytes)} MiB this stage "
                         "may write; free some space or choose another directory", path=directory)
    fd = os.open(directory / name, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise UsageError(f"{directory} is in use by another fmtransfer process; wait for it to finish, "
                         "or use another directory", path=directory) from None
    _HELD[key] = [fd, 1]
    if not shared:  # the only writer now: temporary files here are an earlier killed writer's
        for leftover in [*directory.glob(".*.tmp*"), *directory.glob("*/.*.tmp*")]:
            with contextlib.suppress(OSError):
                leftover.unlink()
    try:
        yield
    finally:
        del _HELD[key]
        os.close(fd)


def _mib(n: int) -> str:
    return f"{n / 2**20:.0f}" if n >= 2**20 else f"{n / 2**20:.2f}"


def refuse_if_locked(directory: str | Path, names) -> None:
    """Refuse, as `locked` does, while another process holds a lock on any of these files of
    `directory` (the workers of a study whose parent was killed, still writing), without taking
    any of them or touching the directory."""
    for name in names:
        try:
            fd = os.open(Path(directory) / name, os.O_RDWR)
        except FileNotFoundError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise UsageError(f"{directory} is in use by another fmtransfer process; wait for it to finish, "
                             "or use another directory", path=directory) from None
        finally:
            os.close(fd)  # and with it the lock, if this process got it
