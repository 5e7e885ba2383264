"""Fashion-MNIST: find the four files, parse IDX ourselves, verify them, make the book's split.

Pure numpy; no TensorFlow here, so `split` runs and fails fast.
"""

from __future__ import annotations

import gzip
import os
import shutil
import struct
import tempfile
import urllib.request
import zlib
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from fmtransfer import fingerprints
from fmtransfer.config import DataConfig
from fmtransfer.errors import ConfigError, DataError, FmtError
from fmtransfer.io import atomic_path, file_sha256 as sha256

FILES = {
    "train_images": "train-images-idx3-ubyte.gz",
    "train_labels": "train-labels-idx1-ubyte.gz",
    "test_images": "t10k-images-idx3-ubyte.gz",
    "test_labels": "t10k-labels-idx1-ubyte.gz",
}
PUBLISHED_SHA256 = {
    "train-images-idx3-ubyte.gz": "b0564c3eedabfbf835052cff8503ea422014ce006caf5b757f851416ee8300c7",
    "train-labels-idx1-ubyte.gz": "0ae29f65d86684f32d1b9c85147786c547b9c6aebcaf235f0400a0cce308b056",
    "t10k-images-idx3-ubyte.gz": "cc1d090a38ace84dfa1aa66e3ada7c336ef481a96936906477e6dd344da56eaa",
    "t10k-labels-idx1-ubyte.gz": "8d3605d196f4be44669e46906da9733c8131fef761fdbfec72c424d5222f1a05",
}
# The mirror keras.datasets.fashion_mnist.load_data() downloads from.
KERAS_MIRROR = "https://storage.googleapis.com/tensorflow/tf-keras-datasets/"
IMAGES_MAGIC, LABELS_MAGIC = 0x00000803, 0x00000801


def keras_cache_dir() -> Path:
    return Path(os.environ.get("KERAS_HOME", Path.home() / ".keras")) / "datasets" / "fashion-mnist"


def search_path(data_dir: str | os.PathLike | None = None) -> list[tuple[str, Path]]:
    """Where the files are looked for, in order, each with the reason it is on the list."""
    places = []
    if data_dir:
        places.append(("--data-dir", Path(data_dir)))
    if os.environ.get("FMTRANSFER_DATA"):
        places.append(("$FMTRANSFER_DATA", Path(os.environ["FMTRANSFER_DATA"])))
    places.append(("Keras' cache", keras_cache_dir()))
    places.append(("the dataset-fashion-mnist package", Path("/usr/share/datasets/fashion-mnist")))
    return places


def _has_all(directory: Path) -> bool:
    return all((directory / name).is_file() for name in FILES.values())


def find_data_dir(data_dir: str | os.PathLike | None = None, download: bool = True) -> Path:
    """The first place holding all four files; else download them into Keras' cache.

    A directory the user named (`--data-dir`, `$FMTRANSFER_DATA`) must hold the files: falling
    through to another copy would silently run on data the user did not ask for.
    """
    for reason, place in search_path(data_dir):
        if _has_all(place):
            return place
        if reason in ("--data-dir", "$FMTRANSFER_DATA"):
            missing = [n for n in FILES.values() if not (place / n).is_file()]
            raise DataError(
                f"{reason} {place} lacks {', '.join(missing)}; put the four Fashion-MNIST .gz files there"
            )
    if not download:
        raise DataError("Fashion-MNIST not found; pass --data-dir DIR or install dataset-fashion-mnist")
    return download_dataset(keras_cache_dir())


def download_dataset(target: Path, mirror: str = KERAS_MIRROR, expected: dict[str, str] | None = None) -> Path:
    """Download the four files from Keras' mirror into `target`, checking each file's SHA-256."""
    expected = PUBLISHED_SHA256 if expected is None else expected
    target.mkdir(parents=True, exist_ok=True)
    for name in FILES.values():
        if (target / name).is_file():
            continue
        fd, tmp = tempfile.mkstemp(prefix=f".{name}.", dir=target)
        try:
            with os.fdopen(fd, "wb") as out, urllib.request.urlopen(mirror + name, timeout=60) as response:
                shutil.copyfileobj(response, out)
            digest = sha256(Path(tmp))
            if expected.get(name) and digest != expected[name]:
                raise FmtError(f"downloaded {name} has SHA-256 {digest}, expected {expected[name]}; try again later")
            os.replace(tmp, target / name)
        except OSError as e:
            raise FmtError(
                f"Fashion-MNIST is not on this machine and downloading {mirror + name} failed ({e}); "
                "pass --data-dir DIR, set $FMTRANSFER_DATA, or install dataset-fashion-mnist"
            ) from None
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    return target


def read_idx(path: Path, magic: int) -> np.ndarray:
    """Parse a gzip-compressed IDX file of unsigned bytes: magic, dimension sizes, then the data."""
    try:
        with gzip.open(path, "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except (OSError, EOFError, zlib.error) as e:
        raise DataError(f"{path}: not a readable gzip file ({e}); replace it with a fresh copy") from None
    if len(raw) < 4:
        raise DataError(f"{path}: truncated IDX file ({len(raw)} bytes); replace it with a fresh copy")
    (found,) = struct.unpack(">I", raw[:4])
    if found != magic:
        raise DataError(f"{path}: wrong IDX magic number 0x{found:08x}, expected 0x{magic:08x}; "
                         "is it the right file?")
    ndim = magic & 0xFF
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"{path}: truncated IDX header; replace it with a fresh copy")
    shape = struct.unpack(f">{ndim}I", raw[4:header])
    size = int(np.prod(shape))
    if len(raw) - header != size:
        raise DataError(f"{path}: IDX header promises {size} bytes of data, file holds {len(raw) - header}; "
                         "it is truncated or corrupt, replace it with a fresh copy")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape)


@dataclass
class Raw:
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    source: Path
    sha256: dict[str, str]


def load_raw(directory: Path, expected: dict[str, str] | None = PUBLISHED_SHA256,
             hashes: dict[str, str] | None = None) -> Raw:
    """Read and check the four files in `directory`; `expected=None` skips the checksum check.
    `hashes`: the files' SHA-256s if the caller has just computed them."""
    hashes = _hashes(directory, expected, hashes)
    arrays = {key: read_idx(directory / name, LABELS_MAGIC if key.endswith("labels") else IMAGES_MAGIC)
              for key, name in FILES.items()}
    for part in ("train", "test"):
        images, labels = arrays[f"{part}_images"], arrays[f"{part}_labels"]
        if images.ndim != 3 or images.shape[1:] != (28, 28):
            raise DataError(f"{directory / FILES[part + '_images']}: images are {images.shape[1:]}, expected 28x28")
        if len(images) != len(labels):
            raise DataError(f"{directory / FILES[part + '_images']} holds {len(images)} images but "
                             f"{directory / FILES[part + '_labels']} holds {len(labels)} labels; "
                             "the files do not belong together")
        if labels.size and labels.max() > 9:
            raise DataError(f"{directory / FILES[part + '_labels']}: label {labels.max()} is outside 0..9")
    return Raw(arrays["train_images"], arrays["train_labels"], arrays["test_images"],
               arrays["test_labels"], directory, hashes)


def _hashes(directory: Path, expected: dict[str, str] | None, hashes: dict[str, str] | None = None) -> dict[str, str]:
    """The four files' SHA-256s (those in `hashes` taken as given), each checked against
    `expected` unless it is None."""
    hashes = dict(hashes or {})
    for name in FILES.values():
        path = directory / name
        if not path.is_file():
            raise DataError(f"{path}: file not found; put the four Fashion-MNIST .gz files in {directory}")
        if name not in hashes:
            hashes[name] = sha256(path)
        if expected is not None and expected.get(name) and hashes[name] != expected[name]:
            raise DataError(f"{path}: SHA-256 {hashes[name][:16]}... does not match the published "
                             f"{expected[name][:16]}...; the file is corrupt or not Fashion-MNIST, "
                             "replace it (or pass --no-verify to use it anyway)")
    return hashes


def dataset_hashes(cfg: DataConfig) -> dict[str, str]:
    """The SHA-256s of the four files `load` would read, checked as it checks them, without
    parsing them: what a study directory records of its data, cheaply."""
    return _hashes(find_data_dir(cfg.dir or None), PUBLISHED_SHA256 if cfg.verify_checksums else None)


@dataclass
class Split:
    """The book's split: uint8 28x28 images and their labels per part; `scaled` gives float32 in [0, 1].

    `indices` says where each part's images lie in the dataset (part -> ("train" or "test", row
    numbers)): that, with the files' SHA-256s, is all a run directory keeps, kilobytes instead of
    a copy of the images.
    """

    a_train: tuple[np.ndarray, np.ndarray]
    a_valid: tuple[np.ndarray, np.ndarray]
    a_test: tuple[np.ndarray, np.ndarray]
    b_train: tuple[np.ndarray, np.ndarray]
    b_valid: tuple[np.ndarray, np.ndarray]
    b_test: tuple[np.ndarray, np.ndarray]
    b_classes: tuple[int, int]
    unlabelled: np.ndarray  # every training image (not validation), labels dropped: for pretraining
    fingerprint: str = ""  # the manifest's, saved with the indices so the two cannot be mismatched
    indices: dict[str, np.ndarray] | None = None
    sha256: dict[str, str] = field(default_factory=dict)  # the dataset files': what models made from it record

    PARTS = ("a_train", "a_valid", "a_test", "b_train", "b_valid", "b_test")
    SOURCE = {"a_train": "train", "a_valid": "train", "a_test": "test", "b_train": "train", "b_valid": "train",
              "b_test": "test", "unlabelled": "train"}

    def sizes(self) -> dict[str, int]:
        return {p: int(len(getattr(self, p)[1])) for p in self.PARTS}

    def class_counts(self) -> dict[str, dict[str, int]]:
        counts = {}
        for p in self.PARTS:
            labels = getattr(self, p)[1]
            values, n = np.unique(labels, return_counts=True)
            counts[p] = {str(int(v)): int(k) for v, k in zip(values, n)}
        return counts

    @property
    def a_classes(self) -> list[int]:
        return [k for k in range(10) if k not in self.b_classes]

    @classmethod
    def from_indices(cls, raw: "Raw", b_classes: tuple[int, int], indices: dict[str, np.ndarray],
                     fingerprint: str = "") -> "Split":
        """The parts' images and labels, gathered from `raw` at `indices`."""
        neg, pos = b_classes
        a_classes = [k for k in range(10) if k not in b_classes]
        remap = np.full(10, -1, dtype=np.int64)
        remap[a_classes] = np.arange(len(a_classes))
        data = {"train": (raw.x_train, raw.y_train), "test": (raw.x_test, raw.y_test)}
        parts = {}
        for part in cls.PARTS:
            x, y = data[cls.SOURCE[part]]
            rows = indices[part]
            labels = remap[y[rows]] if part.startswith("a_") else (y[rows] == pos).astype(np.float32)
            parts[part] = (x[rows], labels)
        return cls(**parts, b_classes=(neg, pos), unlabelled=raw.x_train[indices["unlabelled"]],
                   fingerprint=fingerprint, indices=indices, sha256=dict(raw.sha256))

    def save(self, path: Path, manifest: dict) -> None:
        """The indices, the fingerprint and `manifest` in one file, replaced at once."""
        import json

        with atomic_path(path) as tmp:
            with open(tmp, "wb") as f:
                np.savez_compressed(f, b_classes=np.array(self.b_classes), fingerprint=np.array(self.fingerprint),
                                    manifest=np.array(json.dumps(manifest)),
                                    **{f"rows_{k}": v.astype(np.int32) for k, v in self.indices.items()})

    @classmethod
    def read(cls, path: Path) -> tuple[dict, dict[str, np.ndarray] | None, "Split | None"]:
        """(manifest, indices, None) of a split file; an older fmtransfer's copy of the arrays
        loads as ({}, None, Split)."""
        import json

        try:
            with np.load(path) as z:
                if "a_train_x" in z:  # written by fmtransfer 0.1, with the images in it
                    parts = {p: (z[f"{p}_x"], z[f"{p}_y"]) for p in cls.PARTS}
                    return {}, None, cls(**parts, b_classes=tuple(int(k) for k in z["b_classes"]),
                                         unlabelled=z["unlabelled"],
                                         fingerprint=str(z["fingerprint"]) if "fingerprint" in z else "")
                manifest = json.loads(str(z["manifest"]))
                indices = {k[len("rows_"):]: z[k].astype(np.int64) for k in z.files if k.startswith("rows_")}
        except FileNotFoundError:
            raise
        except Exception as e:  # a half-copied or foreign file: numpy raises many kinds
            raise DataError(f"{path}: unreadable split ({type(e).__name__}); run `fmtransfer split` again",
                            path=path) from None
        if not isinstance(manifest, dict) or set(indices) != {*cls.PARTS, "unlabelled"}:
            raise DataError(f"{path}: not a split of fmtransfer; run `fmtransfer split` again", path=path)
        return manifest, indices, None


def scaled(images: np.ndarray) -> np.ndarray:
    return images.astype(np.float32) / 255.0


_MASK64 = np.uint64(2**64 - 1)


def _mix64(x: np.ndarray) -> np.ndarray:
    """SplitMix64's finaliser: a bijection of uint64 whose outputs look independent."""
    x = (x + np.uint64(0x9E3779B97F4A7C15)) & _MASK64
    x = ((x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)) & _MASK64
    x = ((x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)) & _MASK64
    return x ^ (x >> np.uint64(31))


def draw_order(rows: np.ndarray, data_seed: int) -> np.ndarray:
    """`rows` in the random order data seed `data_seed` gives them; its first N are its draw of N.

    Each row's place comes from a hash of (data seed, row number), so a draw is one permutation
    cut at N: the 50 images of a seed are among its 200, and its 200 among its 1000. Our own
    arithmetic, not numpy's generators (whose streams may change between versions), so a data
    seed draws the same images on any machine and version; and a row keeps its rank whatever
    else is in the pool.
    """
    with np.errstate(over="ignore"):
        keys = _mix64(_mix64(np.full(len(rows), data_seed, dtype=np.uint64)) ^ rows.astype(np.uint64))
    return rows[np.argsort(keys, kind="stable")]


def b_train_rows(pool: np.ndarray, b_train_size: int, b_sample: "int | str" = "first") -> np.ndarray:
    """Task B's training rows from `pool` (the task-B training images outside the validation set,
    in file order): the first `b_train_size` (the book's), or data seed `b_sample`'s draw of
    them, in file order."""
    if b_sample == "first":
        return pool[:b_train_size]
    return np.sort(draw_order(pool, int(b_sample))[:b_train_size])


def indices_sha256(rows: np.ndarray) -> str:
    """A digest of row numbers (task B's training images): what a results line proves it trained on."""
    import hashlib

    return hashlib.sha256(np.ascontiguousarray(rows, dtype="<i8").tobytes()).hexdigest()


def split_indices(y_train: np.ndarray, y_test: np.ndarray, b_classes: tuple[int, int] = (5, 6),
                  b_train_size: int = 200, valid_size: int = 5000, valid_from: str = "first",
                  b_sample: "int | str" = "first") -> dict[str, np.ndarray]:
    """Where the book's split takes each part: the first `valid_size` training images validate
    (the last, with `valid_from="last"`, as the 3rd edition does), task B keeps only its first
    `b_train_size` training images (or, with a data seed as `b_sample`, a random draw of them,
    `b_train_rows`), task A is the other eight classes."""
    neg, pos = b_classes
    n = len(y_train)
    if valid_from == "last":
        valid, train = np.arange(n - valid_size, n), np.arange(n - valid_size)
    else:
        valid, train = np.arange(valid_size), np.arange(valid_size, n)
    test = np.arange(len(y_test))

    def task_a(rows, y):
        return rows[(y[rows] != neg) & (y[rows] != pos)]

    def task_b(rows, y):
        return rows[(y[rows] == neg) | (y[rows] == pos)]

    return {"a_train": task_a(train, y_train), "a_valid": task_a(valid, y_train), "a_test": task_a(test, y_test),
            "b_train": b_train_rows(task_b(train, y_train), b_train_size, b_sample),
            "b_valid": task_b(valid, y_train),
            "b_test": task_b(test, y_test), "unlabelled": train}


def make_split(raw: Raw, b_classes: tuple[int, int] = (5, 6), b_train_size: int = 200,
               valid_size: int = 5000, valid_from: str = "first", b_sample: "int | str" = "first") -> Split:
    """The book's split of `raw` (see `split_indices`); task A's classes renumbered 0..7 in order."""
    neg, pos = b_classes
    indices = split_indices(raw.y_train, raw.y_test, b_classes, b_train_size, valid_size, valid_from, b_sample)
    split = Split.from_indices(raw, (neg, pos), indices)
    y_train = raw.y_train[indices["unlabelled"]]
    available = int(np.sum((y_train == neg) | (y_train == pos)))
    if available < b_train_size:
        drawn = "" if b_sample == "first" else f" for data seed {b_sample} to draw from"
        raise ConfigError("data.b_train_size", f"only {available} training images of classes "
                          f"{neg} and {pos} lie outside the validation set{drawn}, asked for {b_train_size}")
    if len(split.b_train[1]) and len(np.unique(split.b_train[1])) < 2:
        which = "the first" if b_sample == "first" else f"data seed {b_sample}'s draw of"
        raise ConfigError("data.b_train_size", f"{which} {b_train_size} images of classes {neg} and "
                          f"{pos} hold only one of them; use more images")
    if not len(split.a_test[1]) or not len(split.b_test[1]) or not len(split.a_train[1]):
        raise DataError(f"{raw.source}: too few images for task A and task B ({split.sizes()}); "
                        "is this the whole dataset?")
    return split


def folds(split: Split, k: int) -> list[Split]:
    """`split` as K cross-validation folds of its labelled sample (`tune.on = "cv:K"`): fold f
    trains on the other folds' images and validates on its own, so a tuned trial is judged
    inside the labelled sample alone. Stratified and without randomness: within each class, the
    i-th training image (in the sample's order) lies in fold i mod K.

    Raises:
        ConfigError: on `tune.on`, where a class has fewer than K images (a fold without it).
    """
    x, y = split.b_train
    classes, counts = np.unique(y, return_counts=True)
    if len(classes) < 2 or counts.min() < k:
        fewest = int(counts.min()) if len(counts) else 0
        raise ConfigError("tune.on", f"cv:{k} needs at least {k} training images of each class of task B, and the "
                                     f"labelled sample holds {fewest} of one; use fewer folds, or more images")
    fold_of = np.empty(len(y), dtype=np.int64)
    for c in classes:
        rows = np.flatnonzero(y == c)
        fold_of[rows] = np.arange(len(rows)) % k
    rows = split.indices["b_train"] if split.indices is not None else np.arange(len(y))
    made = []
    for f in range(k):
        held, kept = fold_of == f, fold_of != f
        indices = None if split.indices is None else {**split.indices, "b_train": rows[kept], "b_valid": rows[held]}
        made.append(replace(split, b_train=(x[kept], y[kept]), b_valid=(x[held], y[held]), indices=indices,
                            fingerprint=f"{split.fingerprint}/fold{f}of{k}"))
    return made


def load(cfg: DataConfig) -> Raw:
    """Find the four files as `cfg` says, verify and parse them."""
    return load_raw(find_data_dir(cfg.dir or None), PUBLISHED_SHA256 if cfg.verify_checksums else None)


def split_of(raw: Raw, cfg: DataConfig) -> Split:
    """The book's split of `raw` with `cfg`'s classes and sizes, fingerprinted."""
    split = make_split(raw, cfg.b_classes, cfg.b_train_size, cfg.valid_size, cfg.valid_from, cfg.b_sample)
    split.fingerprint = split_fingerprint(cfg, raw.sha256)
    return split


def split_fingerprint(cfg: DataConfig, sha256: dict[str, str]) -> str:
    """What identifies a split (`fingerprints.split`)."""
    return fingerprints.split(cfg, sha256)
