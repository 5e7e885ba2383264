"""fmtransfer.data: IDX parsing, file checks, where the data is found, download, the book's split.

docs/experiment.md, "Data" and "Split".
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import http.server
import os
import shutil
import threading
from pathlib import Path

import numpy as np
import pytest

from conftest import (FILE_NAMES, IMAGES_MAGIC, LABELS_MAGIC, REAL_DATA, idx_bytes, make_arrays,
                      write_dataset, write_idx)
from fmtransfer import FmtError, UsageError, data

# The SHA-256 of the published files, as docs/experiment.md lists them.
PUBLISHED_SHA256_IN_DOCS = {
    "train-images-idx3-ubyte.gz": "b0564c3eedabfbf835052cff8503ea422014ce006caf5b757f851416ee8300c7",
    "train-labels-idx1-ubyte.gz": "0ae29f65d86684f32d1b9c85147786c547b9c6aebcaf235f0400a0cce308b056",
    "t10k-images-idx3-ubyte.gz": "cc1d090a38ace84dfa1aa66e3ada7c336ef481a96936906477e6dd344da56eaa",
    "t10k-labels-idx1-ubyte.gz": "8d3605d196f4be44669e46906da9733c8131fef761fdbfec72c424d5222f1a05",
}


# ============================================================================ IDX parsing

def test_read_idx_round_trips_generated_images_and_labels(tmp_path):
    """IDX images (magic 0x803, N x 28 x 28) and labels (0x801, N) parse back to the same uint8 arrays."""
    x, y, _, _ = make_arrays(n_train=13)
    images = write_idx(tmp_path / "images.gz", x)
    labels = write_idx(tmp_path / "labels.gz", y)

    got_x = data.read_idx(images, IMAGES_MAGIC)
    got_y = data.read_idx(labels, LABELS_MAGIC)

    assert got_x.shape == (13, 28, 28) and got_x.dtype == np.uint8
    assert got_y.shape == (13,) and got_y.dtype == np.uint8
    np.testing.assert_array_equal(got_x, x)
    np.testing.assert_array_equal(got_y, y)


def test_load_raw_reads_the_four_generated_files(generated):
    """load_raw returns the four arrays unchanged, the folder and each file's SHA-256."""
    raw = data.load_raw(generated.directory, expected=None)

    np.testing.assert_array_equal(raw.x_train, generated.x_train)
    np.testing.assert_array_equal(raw.y_train, generated.y_train)
    np.testing.assert_array_equal(raw.x_test, generated.x_test)
    np.testing.assert_array_equal(raw.y_test, generated.y_test)
    assert raw.source == generated.directory
    assert raw.sha256 == generated.sha256()


def test_load_raw_accepts_files_whose_checksums_match_expected(generated):
    """With an `expected` dict equal to the files' SHA-256, load_raw succeeds."""
    raw = data.load_raw(generated.directory, expected=generated.sha256())
    assert len(raw.y_train) == len(generated.y_train)


# ============================================================================ bad files

def _error_for(directory: Path, expected=None) -> str:
    with pytest.raises(UsageError) as info:
        data.load_raw(directory, expected=expected)
    return str(info.value)


def test_missing_file_is_a_usage_error_naming_it(generated):
    """A folder lacking one of the four files: UsageError naming the missing file."""
    generated.path("test_labels").unlink()
    assert FILE_NAMES["test_labels"] in _error_for(generated.directory)


def test_read_idx_of_a_missing_file_names_it(tmp_path):
    """read_idx on a path that does not exist: UsageError naming it."""
    path = tmp_path / "nowhere-idx1-ubyte.gz"
    with pytest.raises(UsageError, match="nowhere-idx1-ubyte.gz"):
        data.read_idx(path, LABELS_MAGIC)


def test_truncated_gzip_is_a_usage_error_naming_the_file(generated):
    """A gzip file cut short (an interrupted copy): UsageError naming the file."""
    path = generated.path("train_images")
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    assert FILE_NAMES["train_images"] in _error_for(generated.directory)


def test_garbage_that_is_not_gzip_is_a_usage_error_naming_the_file(generated):
    """Bytes that are not gzip at all: UsageError naming the file."""
    path = generated.path("train_labels")
    path.write_bytes(b"<html>404 not found</html>" * 20)
    assert FILE_NAMES["train_labels"] in _error_for(generated.directory)


def test_wrong_magic_number_is_a_usage_error_naming_the_file(generated):
    """An images file where labels are expected (magic 0x803, not 0x801): UsageError naming the file."""
    write_idx(generated.path("train_labels"), generated.x_train)  # images magic under a labels name
    message = _error_for(generated.directory)
    assert FILE_NAMES["train_labels"] in message
    assert "magic" in message


def test_header_promising_more_bytes_than_present_is_a_usage_error_naming_the_file(generated):
    """A header saying N images while the file holds fewer: UsageError naming the file."""
    n = len(generated.x_test)
    write_idx(generated.path("test_images"), generated.x_test[:-1], dims=(n, 28, 28))
    assert FILE_NAMES["test_images"] in _error_for(generated.directory)


def test_header_promising_fewer_bytes_than_present_is_a_usage_error(tmp_path):
    """Trailing bytes beyond what the header announces also mean a corrupt file."""
    path = tmp_path / "labels.gz"
    with gzip.open(path, "wb") as f:
        f.write(idx_bytes(np.arange(10, dtype=np.uint8), dims=(5,)))
    with pytest.raises(UsageError, match="labels.gz"):
        data.read_idx(path, LABELS_MAGIC)


def test_image_label_count_mismatch_is_a_usage_error_naming_the_file(generated):
    """Images and labels that do not belong together (one label short): UsageError naming the files."""
    write_idx(generated.path("train_labels"), generated.y_train[:-1])
    message = _error_for(generated.directory)
    assert FILE_NAMES["train_labels"] in message or FILE_NAMES["train_images"] in message, message


def test_checksum_mismatch_is_a_usage_error_naming_the_file(generated):
    """load_raw with an `expected` SHA-256 that differs for one file: UsageError naming that file."""
    expected = generated.sha256()
    expected[FILE_NAMES["test_images"]] = "0" * 64
    message = _error_for(generated.directory, expected=expected)
    assert FILE_NAMES["test_images"] in message
    assert "SHA-256" in message


def test_label_above_9_is_a_usage_error_naming_the_file(generated):
    """A label outside 0..9: UsageError naming the labels file."""
    y = generated.y_test.copy()
    y[3] = 10
    write_idx(generated.path("test_labels"), y)
    message = _error_for(generated.directory)
    assert FILE_NAMES["test_labels"] in message
    assert "10" in message


def test_images_that_are_not_28x28_are_a_usage_error_naming_the_file(generated):
    """Images of another size are not Fashion-MNIST: UsageError naming the file."""
    write_idx(generated.path("train_images"), generated.x_train[:, :, :27])
    assert FILE_NAMES["train_images"] in _error_for(generated.directory)


# ============================================================================ where the data is found

@pytest.fixture
def places(tmp_path, monkeypatch):
    """Three complete copies: one for --data-dir, one in $FMTRANSFER_DATA, one in Keras' cache."""
    keras_home = tmp_path / "keras_home"
    monkeypatch.setenv("KERAS_HOME", str(keras_home))
    monkeypatch.delenv("FMTRANSFER_DATA", raising=False)
    option = write_dataset(tmp_path / "option").directory
    env = write_dataset(tmp_path / "env").directory
    cache = write_dataset(keras_home / "datasets" / "fashion-mnist").directory
    return {"option": option, "env": env, "cache": cache, "keras_home": keras_home}


def test_search_order_is_option_env_keras_cache_then_debian_package(places, monkeypatch):
    """The places searched, in order: --data-dir, $FMTRANSFER_DATA, Keras' cache, /usr/share/datasets."""
    monkeypatch.setenv("FMTRANSFER_DATA", str(places["env"]))
    found = data.search_path(places["option"])
    assert [path for _, path in found] == [
        places["option"], places["env"], places["cache"], Path("/usr/share/datasets/fashion-mnist")]


def test_data_dir_option_comes_first(places, monkeypatch):
    """--data-dir wins over $FMTRANSFER_DATA and Keras' cache."""
    monkeypatch.setenv("FMTRANSFER_DATA", str(places["env"]))
    assert data.find_data_dir(places["option"], download=False) == places["option"]


def test_environment_variable_comes_second(places, monkeypatch):
    """Without --data-dir, $FMTRANSFER_DATA wins over Keras' cache."""
    monkeypatch.setenv("FMTRANSFER_DATA", str(places["env"]))
    assert data.find_data_dir(None, download=False) == places["env"]


def test_keras_cache_comes_third(places):
    """Without --data-dir or $FMTRANSFER_DATA: $KERAS_HOME/datasets/fashion-mnist."""
    assert data.find_data_dir(None, download=False) == places["cache"]


def test_debian_package_folder_comes_last(tmp_path, monkeypatch):
    """With an empty Keras cache: /usr/share/datasets/fashion-mnist (installed on these machines)."""
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "empty_home"))
    monkeypatch.delenv("FMTRANSFER_DATA", raising=False)
    assert data.find_data_dir(None, download=False) == REAL_DATA


def test_named_data_dir_lacking_files_is_an_error_not_a_fall_through(places, tmp_path, monkeypatch):
    """A --data-dir without the four files is an error naming it, although other copies exist."""
    monkeypatch.setenv("FMTRANSFER_DATA", str(places["env"]))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(UsageError) as info:
        data.find_data_dir(empty, download=False)
    assert str(empty) in str(info.value)
    assert "--data-dir" in str(info.value)


def test_data_dir_with_three_of_four_files_names_the_missing_one(places):
    """A --data-dir missing one file says which."""
    (places["option"] / FILE_NAMES["test_labels"]).unlink()
    with pytest.raises(UsageError, match=FILE_NAMES["test_labels"]):
        data.find_data_dir(places["option"], download=False)


def test_environment_variable_lacking_files_is_an_error(places, tmp_path, monkeypatch):
    """$FMTRANSFER_DATA naming a folder without the files is an error, not a fall-through to the cache."""
    monkeypatch.setenv("FMTRANSFER_DATA", str(tmp_path / "missing"))
    with pytest.raises(UsageError, match="FMTRANSFER_DATA"):
        data.find_data_dir(None, download=False)


# ============================================================================ download

@pytest.fixture
def mirror(tmp_path, monkeypatch):
    """A local HTTP server on 127.0.0.1 serving four generated files; yields (url, Generated)."""
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    served = write_dataset(tmp_path / "served", seed=3)

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(served.directory)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/", served
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def test_download_fetches_the_four_files_and_checks_their_hashes(mirror, tmp_path):
    """download_dataset puts byte-identical copies of the four files in the target, nothing else."""
    url, served = mirror
    target = tmp_path / "cache"
    assert data.download_dataset(target, mirror=url, expected=served.sha256()) == target
    assert sorted(os.listdir(target)) == sorted(FILE_NAMES.values())
    for name in FILE_NAMES.values():
        assert (target / name).read_bytes() == (served.directory / name).read_bytes()
    data.load_raw(target, expected=served.sha256())  # and they load


def test_download_with_a_bad_hash_raises_and_leaves_no_file(mirror, tmp_path):
    """A downloaded file whose SHA-256 differs: FmtError naming it, and no copy (or temp file) left."""
    url, served = mirror
    expected = served.sha256()
    bad = FILE_NAMES["train_images"]
    expected[bad] = hashlib.sha256(b"something else").hexdigest()
    target = tmp_path / "cache"
    with pytest.raises(FmtError, match=bad):
        data.download_dataset(target, mirror=url, expected=expected)
    assert not (target / bad).exists()
    assert not [p for p in os.listdir(target) if p.startswith(".")], "temporary files left behind"


def test_download_from_a_mirror_lacking_the_files_raises_and_leaves_nothing(mirror, tmp_path):
    """An HTTP 404 is an FmtError naming the URL, and leaves no file behind."""
    url, _ = mirror
    target = tmp_path / "cache"
    with pytest.raises(FmtError, match="nothing-here/"):
        data.download_dataset(target, mirror=url + "nothing-here/", expected=None)
    assert os.listdir(target) == []


# ============================================================================ the split

def _raw(n_train=300, n_test=100, seed=1) -> data.Raw:
    x_train, y_train, x_test, y_test = make_arrays(n_train, n_test, seed)
    return data.Raw(x_train, y_train, x_test, y_test, Path("generated"), {})


def _ids(images: np.ndarray) -> np.ndarray:
    """Recover each generated image's index from the pixels it carries."""
    return images[:, 0, 0].astype(int) + 256 * images[:, 0, 1].astype(int)


@pytest.mark.parametrize("b_classes", [(5, 6), (0, 2), (2, 0), (9, 1)])
def test_split_follows_the_book_for_any_two_distinct_classes(b_classes):
    """Validation = first valid_size training images; A = the other 8 classes renumbered 0..7 in
    order; B label 1.0 = the second class; only the first b_train_size task-B images train B."""
    raw = _raw()
    neg, pos = b_classes
    valid_size, b_train_size = 50, 12
    split = data.make_split(raw, b_classes, b_train_size=b_train_size, valid_size=valid_size)

    a_classes = [k for k in range(10) if k not in b_classes]
    remap = {k: i for i, k in enumerate(a_classes)}
    is_b = lambda y: (y == neg) | (y == pos)  # noqa: E731

    y_valid, y_train = raw.y_train[:valid_size], raw.y_train[valid_size:]
    train_ids = np.arange(valid_size, len(raw.y_train))
    valid_ids = np.arange(valid_size)

    # task A: every non-B image, in order, labels remapped
    for part, ids, y in (("a_train", train_ids, y_train), ("a_valid", valid_ids, y_valid)):
        x_part, y_part = getattr(split, part)
        np.testing.assert_array_equal(_ids(x_part), ids[~is_b(y)])
        np.testing.assert_array_equal(y_part, [remap[k] for k in y[~is_b(y)]])
    np.testing.assert_array_equal(split.a_test[1], [remap[k] for k in raw.y_test[~is_b(raw.y_test)]])
    assert set(np.unique(split.a_train[1])) == set(range(8))
    assert split.a_classes == a_classes

    # task B: binary, 1.0 = the second class; training keeps only the first b_train_size
    first_b_train = train_ids[is_b(y_train)][:b_train_size]
    np.testing.assert_array_equal(_ids(split.b_train[0]), first_b_train)
    np.testing.assert_array_equal(split.b_train[1], (raw.y_train[first_b_train] == pos).astype(np.float32))
    assert split.b_train[1].dtype == np.float32
    np.testing.assert_array_equal(_ids(split.b_valid[0]), valid_ids[is_b(y_valid)])
    np.testing.assert_array_equal(split.b_test[1], (raw.y_test[is_b(raw.y_test)] == pos).astype(np.float32))
    assert split.b_classes == (neg, pos)

    assert split.sizes() == {
        "a_train": int((~is_b(y_train)).sum()), "a_valid": int((~is_b(y_valid)).sum()),
        "a_test": int((~is_b(raw.y_test)).sum()), "b_train": b_train_size,
        "b_valid": int(is_b(y_valid).sum()), "b_test": int(is_b(raw.y_test).sum()),
    }


def test_book_remap_sends_7_8_9_to_5_6_7():
    """With task B = (5, 6), classes 7, 8, 9 become 5, 6, 7 and 0..4 stay."""
    raw = _raw()
    split = data.make_split(raw, (5, 6), b_train_size=10, valid_size=50)
    original = raw.y_train[50:]
    original = original[(original != 5) & (original != 6)]
    mapping = {0: 0, 1: 1, 2: 2, 3: 3, 4: 4, 7: 5, 8: 6, 9: 7}
    np.testing.assert_array_equal(split.a_train[1], [mapping[k] for k in original])


def test_asking_for_more_task_b_images_than_exist_is_a_usage_error():
    """b_train_size larger than the task-B training images available: UsageError naming the key
    (the CLI turns it into the option the user typed)."""
    with pytest.raises(UsageError, match="data.b_train_size"):
        data.make_split(_raw(), (5, 6), b_train_size=10_000, valid_size=50)


def test_images_stay_uint8_and_scale_to_float32_in_0_1():
    """Pixels are scaled to [0, 1] by dividing by 255, as float32."""
    split = data.make_split(_raw(), (5, 6), b_train_size=10, valid_size=50)
    assert split.a_train[0].dtype == np.uint8
    x = data.scaled(split.a_train[0])
    assert x.dtype == np.float32
    np.testing.assert_allclose(x, split.a_train[0] / 255.0, rtol=1e-6)
    assert x.min() >= 0.0 and x.max() <= 1.0


def test_split_saves_indices_and_rebuilds_every_part_unchanged(tmp_path):
    """A split is saved as row numbers into the dataset (and its manifest), not as images; the
    same rows of the same data give back every part, images and labels."""
    raw = _raw()
    split = data.make_split(raw, (0, 2), b_train_size=10, valid_size=50)
    split.save(tmp_path / "split.npz", {"note": "manifest"})
    manifest, indices, old = data.Split.read(tmp_path / "split.npz")
    assert manifest == {"note": "manifest"} and old is None
    back = data.Split.from_indices(raw, (0, 2), indices)
    assert back.b_classes == (0, 2)
    for part in data.Split.PARTS:
        for a, b in zip(getattr(split, part), getattr(back, part)):
            np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(back.unlabelled, split.unlabelled)


def test_an_unreadable_split_file_is_a_usage_error(tmp_path):
    """A corrupt split.npz asks the user to rerun `fmtransfer split`."""
    path = tmp_path / "split.npz"
    path.write_bytes(b"not a zip")
    with pytest.raises(UsageError, match="fmtransfer split"):
        data.Split.read(path)


# ============================================================================ the real data

def test_published_checksums_are_the_recipes():
    """The package checks the SHA-256 values docs/experiment.md lists."""
    assert data.PUBLISHED_SHA256 == PUBLISHED_SHA256_IN_DOCS


def test_real_files_verify_and_parse(real_raw):
    """The installed Fashion-MNIST verifies: 60,000 + 10,000 images of 28x28, balanced classes."""
    assert real_raw.sha256 == PUBLISHED_SHA256_IN_DOCS
    assert real_raw.x_train.shape == (60000, 28, 28) and real_raw.x_train.dtype == np.uint8
    assert real_raw.x_test.shape == (10000, 28, 28)
    assert np.bincount(real_raw.y_train).tolist() == [6000] * 10
    assert np.bincount(real_raw.y_test).tolist() == [1000] * 10


def test_real_split_sizes_are_the_books(real_split):
    """Task A trains on 43,986 images; task B trains on 200 and tests on 2,000 (docs/experiment.md)."""
    assert real_split.sizes() == {"a_train": 43986, "a_valid": 4014, "a_test": 8000,
                                  "b_train": 200, "b_valid": 986, "b_test": 2000}
    assert sorted(np.unique(real_split.b_train[1]).tolist()) == [0.0, 1.0]
    assert sorted(np.unique(real_split.a_train[1]).tolist()) == list(range(8))


def test_a_corrupted_copy_of_the_real_data_fails_its_checksum(tmp_path):
    """One flipped byte in a real file: UsageError naming the file (SHA-256 mismatch)."""
    copy = tmp_path / "fm"
    shutil.copytree(REAL_DATA, copy)
    path = copy / FILE_NAMES["train_labels"]
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    path.write_bytes(bytes(raw))
    with pytest.raises(UsageError, match=FILE_NAMES["train_labels"]):
        data.load_raw(copy)


def test_the_3rd_editions_split_validates_on_the_last_images():
    """valid_from = last: the last valid_size training images validate and task B's training
    images are the first of its classes from the start of the file, as the 3rd edition's notebook."""
    raw = _raw()
    n, valid_size = len(raw.y_train), 50
    split = data.make_split(raw, (0, 2), b_train_size=12, valid_size=valid_size, valid_from="last")
    train_ids, valid_ids = np.arange(n - valid_size), np.arange(n - valid_size, n)
    is_b = lambda y: (y == 0) | (y == 2)  # noqa: E731
    np.testing.assert_array_equal(_ids(split.b_train[0]), train_ids[is_b(raw.y_train[train_ids])][:12])
    np.testing.assert_array_equal(_ids(split.b_valid[0]), valid_ids[is_b(raw.y_train[valid_ids])])
    np.testing.assert_array_equal(_ids(split.a_valid[0]), valid_ids[~is_b(raw.y_train[valid_ids])])
    assert len(split.unlabelled) == n - valid_size


def test_the_first_and_last_validation_slices_fingerprint_apart_and_the_first_keeps_its_old_print():
    from fmtransfer.config import DataConfig

    sha = {"train": "x"}
    first, last = DataConfig(), DataConfig(valid_from="last")
    assert data.split_fingerprint(first, sha) != data.split_fingerprint(last, sha)
    # 0.2.0's fingerprint (before valid_from existed) is unchanged, so its run directories still read.
    from fmtransfer.io import fingerprint

    assert data.split_fingerprint(first, sha) == fingerprint({"b_classes": [5, 6], "b_train_size": 200,
                                                              "valid_size": 5000}, sha)
