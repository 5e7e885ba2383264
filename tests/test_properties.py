"""Whatever the input, a correct result or a clean FmtError, never another exception: the IDX
parser on arbitrary bytes, the config loader on arbitrary values and TOML text, the study's
results reader on arbitrary lines.
"""

from __future__ import annotations

import gzip
import json
import struct

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fmtransfer import FmtError
from fmtransfer.config import Config, flatten, merge, read_toml

FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


# ----------------------------------------------------------------------------- the IDX parser

@FAST
@given(payload=st.binary(max_size=2000), gzipped=st.booleans())
def test_idx_parser_on_arbitrary_bytes(tmp_path, payload, gzipped):
    from fmtransfer.data import IMAGES_MAGIC, read_idx

    path = tmp_path / "x.gz"
    path.write_bytes(gzip.compress(payload) if gzipped else payload)
    try:
        array = read_idx(path, IMAGES_MAGIC)
    except FmtError as e:
        assert str(path) in str(e)
        return
    assert array.dtype == np.uint8 and array.ndim == 3  # only a well-formed file parses


@FAST
@given(dims=st.lists(st.integers(0, 6), min_size=3, max_size=3), extra=st.integers(-3, 3), seed=st.integers(0, 99))
def test_idx_parser_on_headers_that_lie_about_their_size(tmp_path, dims, extra, seed):
    from fmtransfer.data import IMAGES_MAGIC, read_idx

    n = int(np.prod(dims))
    body = np.random.default_rng(seed).integers(0, 256, max(n + extra, 0), dtype=np.uint8).tobytes()
    path = tmp_path / "x.gz"
    path.write_bytes(gzip.compress(struct.pack(">I3I", IMAGES_MAGIC, *dims) + body))
    try:
        array = read_idx(path, IMAGES_MAGIC)
    except FmtError:
        assert len(body) != n
        return
    assert len(body) == n and array.shape == tuple(dims) and array.tobytes() == body


# ----------------------------------------------------------------------------- the config loader

KEYS = sorted(flatten(Config().to_dict())) + ["bogus", "transfer.bogus", "nosection.key", "model"]
VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-10**12, 10**12) | st.floats(allow_nan=True) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=6) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=12)


@FAST
@given(values=st.dictionaries(st.sampled_from(KEYS), VALUES, max_size=6))
def test_config_loader_on_arbitrary_values(values):
    try:
        cfg = merge([("options", values)])
    except FmtError:
        return
    assert Config.from_dict(cfg.to_dict()) == cfg  # a config that loads is valid and round-trips


@FAST
@given(text=st.text(max_size=300))
def test_config_file_reader_on_arbitrary_text(tmp_path, text):
    path = tmp_path / "c.toml"
    path.write_text(text, encoding="utf-8")
    try:
        merge([("file", read_toml(path))])
    except FmtError:
        pass


# ----------------------------------------------------------------------------- the results reader

JSONISH = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=10),
                       lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner,
                                                                                   max_size=6), max_leaves=20)
RECORD = st.fixed_dictionaries({
    "id": st.text(max_size=5), "seed": st.integers(0, 3) | st.text(max_size=2), "pair": st.just([5, 6]) | JSONISH,
    "b_train_size": st.integers(1, 3), "reuse_layers": st.just("all") | JSONISH, "preset": st.sampled_from(["book", "x"]),
    "contender": st.sampled_from(["transfer", "autoencoder"]) | JSONISH,
    "baseline": st.fixed_dictionaries({"test_accuracy": st.floats(-1, 2) | JSONISH}),
    "result": st.fixed_dictionaries({"test_accuracy": st.floats(-1, 2) | JSONISH})})


@FAST
@given(lines=st.lists(st.text(max_size=60) | JSONISH.map(json.dumps) | RECORD.map(json.dumps), max_size=8))
def test_results_reader_on_arbitrary_lines(tmp_path, lines):
    from fmtransfer.study import read_results

    path = tmp_path / "results.jsonl"
    path.write_text("\n".join(lines), encoding="utf-8")
    results, skipped = read_results(tmp_path)
    assert len({r["id"] for r in results}) == len(results)
    for r in results:
        assert 0 <= r["result"]["test_accuracy"] <= 1 and 0 <= r["baseline"]["test_accuracy"] <= 1
    assert len(results) + sum(skipped.values()) <= len([line for line in "\n".join(lines).splitlines() if line.strip()])
