"""Shared helpers for the fmtransfer test suite.

- `write_idx` / `write_dataset`: generate small gzip IDX files (the Fashion-MNIST format).
- `cli`: call `fmtransfer.cli.main([...])` in-process and capture exit code, stdout and stderr.
- `real_raw` / `real_split`: the real Fashion-MNIST files, read and split once per session.
- `fresh_registry`: the contender and section registries, restored after a test that registers
  plug-ins.
- `require_system` / `system_commands`: tests that need a part of the system (Slurm's daemons, a
  browser) skip without it, saying why, unless $FMTRANSFER_REQUIRE_SYSTEM=1 makes that a failure.

Every test runs with $KERAS_HOME pointing at a temporary folder and $FMTRANSFER_DATA unset, so
the search for the data never touches the real home directory.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import io
import os
import shutil
import struct
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "configs"
REAL_DATA = Path("/usr/share/datasets/fashion-mnist")
IMAGES_MAGIC, LABELS_MAGIC = 0x00000803, 0x00000801

FILE_NAMES = {
    "train_images": "train-images-idx3-ubyte.gz",
    "train_labels": "train-labels-idx1-ubyte.gz",
    "test_images": "t10k-images-idx3-ubyte.gz",
    "test_labels": "t10k-labels-idx1-ubyte.gz",
}


# ----------------------------------------------------------------------------- environment

@pytest.fixture(scope="session", autouse=True)
def isolated_home(tmp_path_factory):
    """Keras' cache lives in a temporary $KERAS_HOME; $FMTRANSFER_DATA is unset."""
    keras_home = tmp_path_factory.mktemp("keras_home")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("KERAS_HOME", str(keras_home))
        mp.delenv("FMTRANSFER_DATA", raising=False)
        yield keras_home


@pytest.fixture(scope="session")
def tensorflow_set_up():
    """The one explicit TensorFlow set-up the CLI and the API's entry points make: tests that
    call models or training directly use it (`pytestmark = pytest.mark.usefixtures(...)`)."""
    from fmtransfer import runtime

    runtime.setup()


# ----------------------------------------------------------------------------- the contender registry

@pytest.fixture
def fresh_registry(monkeypatch):
    """The registries as they are, restored afterwards; plug-ins not yet loaded."""
    from fmtransfer import config
    from fmtransfer.contenders import base

    monkeypatch.setattr(base, "_REGISTRY", dict(base._REGISTRY))
    monkeypatch.setattr(base, "_FAILED", {})
    monkeypatch.setattr(base, "_plugins_loaded", False)
    monkeypatch.setattr(config, "_REGISTERED", dict(config._REGISTERED))
    config._defaults.cache_clear()
    yield base
    config._defaults.cache_clear()


# ----------------------------------------------------------------------------- system parts

REQUIRE_SYSTEM = "FMTRANSFER_REQUIRE_SYSTEM"


def require_system(what: str, reason: str) -> NoReturn:
    """Stop a test that cannot get `what` (a part of the system: Slurm, a browser) for `reason`.

    A skip on a developer's machine without root or apt; a failure where $FMTRANSFER_REQUIRE_SYSTEM
    is 1 (CI, which can install everything), so a broken set-up never passes there as a skip.
    """
    message = f"{what}: {reason}"
    if os.environ.get(REQUIRE_SYSTEM) == "1":
        pytest.fail(f"{message} (required, since {REQUIRE_SYSTEM}=1)", pytrace=False)
    pytest.skip(message)


# Daemons live in sbin, which a non-root PATH often lacks.
_SYSTEM_PATH = os.pathsep.join([os.environ.get("PATH", ""), "/usr/local/sbin", "/usr/sbin", "/sbin"])


def system_commands(what: str, commands: list[str], packages: list[str]) -> dict[str, str]:
    """The full path of each of `commands`, installing the Debian `packages` with apt-get first
    when one is missing and we are root; `require_system(what, ...)` when that cannot be done."""
    def found():
        return {c: shutil.which(c, path=_SYSTEM_PATH) for c in commands}

    paths = found()
    missing = [c for c, p in paths.items() if p is None]
    if not missing:
        return paths
    needs = f"{', '.join(missing)} not found; installing {' '.join(packages)}"
    if os.geteuid() != 0:
        require_system(what, f"{needs} needs root")
    if shutil.which("apt-get") is None:
        require_system(what, f"{needs} needs apt-get, which this system lacks")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    wait = ["-o", "DPkg::Lock::Timeout=300"]  # another apt-get may hold the lock for a while
    # Recommends would add some twenty plugin and -dev packages, doubling the time, for nothing used here.
    install = ["apt-get", "install", "-y", "-q", "--no-install-recommends", *wait, *packages]

    def apt(*args):
        return subprocess.run(list(args), env=env, capture_output=True, text=True, timeout=900)

    proc = apt(*install)
    if proc.returncode != 0:  # a fresh machine has no package lists yet, or stale ones
        apt("apt-get", "update", "-q", *wait)
        proc = apt(*install)
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        require_system(what, f"`{' '.join(install)}` failed (exit {proc.returncode}): {' | '.join(tail)}")
    paths = found()
    missing = [c for c, p in paths.items() if p is None]
    if missing:
        require_system(what, f"{', '.join(missing)} still not found after installing {' '.join(packages)}")
    return paths


# ----------------------------------------------------------------------------- IDX files

def idx_bytes(array: np.ndarray, magic: int | None = None, dims: tuple[int, ...] | None = None) -> bytes:
    """The uncompressed IDX encoding: big-endian uint32 magic, each dimension, then the bytes.

    `magic` and `dims` override what is written in the header (to make broken files).
    """
    array = np.ascontiguousarray(array, dtype=np.uint8)
    if magic is None:
        magic = 0x00000800 | array.ndim
    dims = array.shape if dims is None else dims
    return struct.pack(f">I{len(dims)}I", magic, *dims) + array.tobytes()


def write_idx(path: Path, array: np.ndarray, magic: int | None = None,
              dims: tuple[int, ...] | None = None) -> Path:
    """Write `array` as a gzip-compressed IDX file (magic 0x803 for N,28,28 images, 0x801 for labels)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(path, "wb") as f:
        f.write(idx_bytes(array, magic, dims))
    return path


@dataclass
class Generated:
    """A small generated dataset written as the four Fashion-MNIST files."""

    directory: Path
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray

    def path(self, key: str) -> Path:
        return self.directory / FILE_NAMES[key]

    def sha256(self) -> dict[str, str]:
        return {name: hashlib.sha256((self.directory / name).read_bytes()).hexdigest()
                for name in FILE_NAMES.values()}


def make_arrays(n_train: int = 120, n_test: int = 40, seed: int = 0):
    """Images that carry their own index in pixels (0,0) and (0,1), and labels cycling through 0..9."""
    rng = np.random.default_rng(seed)

    def images(n):
        x = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        x[:, 0, 0] = np.arange(n) % 256
        x[:, 0, 1] = np.arange(n) // 256
        return x

    def labels(n):
        return rng.permutation(np.arange(n) % 10).astype(np.uint8)

    return images(n_train), labels(n_train), images(n_test), labels(n_test)


def write_dataset(directory: Path, n_train: int = 120, n_test: int = 40, seed: int = 0) -> Generated:
    """Write the four gzip IDX files of a small generated dataset into `directory`."""
    x_train, y_train, x_test, y_test = make_arrays(n_train, n_test, seed)
    directory = Path(directory)
    write_idx(directory / FILE_NAMES["train_images"], x_train)
    write_idx(directory / FILE_NAMES["train_labels"], y_train)
    write_idx(directory / FILE_NAMES["test_images"], x_test)
    write_idx(directory / FILE_NAMES["test_labels"], y_test)
    return Generated(directory, x_train, y_train, x_test, y_test)


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> Path:
    """A small Fashion-MNIST look-alike that models can learn: ten classes, each a bright band
    at its own height; 700 training and 200 test images."""
    folder = tmp_path_factory.mktemp("tiny-fmnist")
    rng = np.random.default_rng(0)
    for prefix, n in (("train", 700), ("t10k", 200)):
        labels = np.tile(np.arange(10, dtype=np.uint8), n // 10)
        rng.shuffle(labels)
        images = rng.integers(0, 60, size=(n, 28, 28), dtype=np.uint8)
        for i, k in enumerate(labels):
            images[i, 2 * k:2 * k + 3, :] = 220
        write_idx(folder / f"{prefix}-images-idx3-ubyte.gz", images)
        write_idx(folder / f"{prefix}-labels-idx1-ubyte.gz", labels)
    return folder


def beside_transfer(cfg, name: str, weight: str) -> tuple[list, tuple, list]:
    """Transfer from A's weights, `name`'s (model, result) with its term's `weight` key at 0, and
    `name`'s weights as `cfg` has it, all on one model A: what a contender that adds a term to
    transfer's loss must be without it, and is not with it."""
    from fmtransfer import contenders, data, pipeline
    from fmtransfer.report import Reporter

    split = data.split_of(data.load(cfg.data), cfg.data)
    model_a, _ = pipeline.train_model_a(cfg, split)

    def fit(contender, settings):
        return contenders.get(contender).fit(settings, split, {"model_a": model_a}, Reporter(quiet=True))

    plain = fit("transfer", cfg)[0].get_weights()
    off = fit(name, cfg.replace(**{weight: 0.0}))
    return plain, off, fit(name, cfg)[0].get_weights()


def tiny_settings(tiny_data: Path) -> dict:
    """Settings that train everything in seconds on `tiny_data`."""
    return {"data.dir": str(tiny_data), "data.verify_checksums": False, "data.valid_size": 100,
            "data.b_train_size": 20, "model.hidden": [16, 8], "train_a.epochs": 1, "baseline.epochs": 2,
            "transfer.freeze_epochs": 1, "transfer.fine_tune_epochs": 1, "pretrain.epochs": 1,
            "pretrain.unlabelled_size": 200, "greedy.epochs": 1, "gan.epochs": 1, "rbm.epochs": 1}


@pytest.fixture(scope="session")
def tiny_study(tiny_data, tmp_path_factory) -> Path:
    """A finished study on `tiny_data`: two seeds, two contenders (transfer, reinit), two task-B
    sizes (20, 50); cells of n=2, where a t interval means nothing. Trained once (seconds)."""
    run = tmp_path_factory.mktemp("tiny-study")
    result = run_cli("study", "--run", run, "--data-dir", tiny_data, *TINY_STUDY, "--json")
    assert result.code == 0, result.err
    return run


TINY_STUDY = ["--valid-size", "100", "--no-verify", "--hidden", "16,8", "--a-epochs", "1", "--b-epochs", "1",
              "--freeze-epochs", "1", "--fine-tune-epochs", "1", "--seeds", "2", "--b-train-sizes", "20,50",
              "--contenders", "transfer,reinit", "--no-plots"]


@pytest.fixture
def generated(tmp_path) -> Generated:
    """A small, valid, generated Fashion-MNIST-format dataset in a temporary folder."""
    return write_dataset(tmp_path / "generated")


# ----------------------------------------------------------------------------- real data

@pytest.fixture(scope="session")
def real_raw():
    """The real Fashion-MNIST files, checksums verified."""
    from fmtransfer import data

    return data.load_raw(REAL_DATA)


@pytest.fixture(scope="session")
def real_split(real_raw):
    """The book's split of the real data (task B = sandal vs shirt)."""
    from fmtransfer import data

    return data.make_split(real_raw)


# ----------------------------------------------------------------------------- command line

@dataclass
class CliResult:
    code: int
    out: str
    err: str

    @property
    def err_lines(self) -> list[str]:
        return self.err.strip().splitlines()

    def json(self) -> dict:
        import json

        obj = json.loads(self.out)  # fails on anything but exactly one JSON document
        assert isinstance(obj, dict), f"stdout is not one JSON object: {self.out[:200]!r}"
        return obj


def run_cli(*args: str | os.PathLike) -> CliResult:
    """Call `fmtransfer.cli.main` in-process, as the console script does; capture its output."""
    from fmtransfer.cli import main

    out, err = io.StringIO(), io.StringIO()
    code = 0
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            main([str(a) for a in args])
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    return CliResult(code, out.getvalue(), err.getvalue())


@pytest.fixture(scope="session")
def cli():
    """`cli("split", "--run", dir, ...)` -> CliResult(code, out, err)."""
    return run_cli


def assert_usage_error(result: CliResult, *names: str) -> str:
    """Exit code 2, one stderr line starting 'fmtransfer: error:', naming each of `names`."""
    assert result.code == 2, f"exit code {result.code}, stderr {result.err!r}"
    assert "Traceback" not in result.err
    lines = result.err_lines
    assert len(lines) == 1, f"expected one line on stderr, got {lines!r}"
    assert lines[0].startswith("fmtransfer: error:"), lines[0]
    for name in names:
        assert name in lines[0], f"{name!r} not named in {lines[0]!r}"
    assert result.out == "", f"nothing on stdout on error, got {result.out[:200]!r}"
    return lines[0]


def snapshot(directory: Path) -> dict[str, tuple[int, str]]:
    """Every file in `directory` (temporary ones too) with its modification time (ns) and SHA-256;
    not the empty lock files a stage holds while it writes."""
    return {p.name: (p.stat().st_mtime_ns, hashlib.sha256(p.read_bytes()).hexdigest())
            for p in sorted(Path(directory).iterdir()) if p.is_file() and not p.name.startswith(".lock")}
