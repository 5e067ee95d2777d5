"""FeatureStore: the layout table, row-chunk arithmetic, opening errors and the synthetic writer (``testing.write_store``)."""

from __future__ import annotations

import re
import tarfile
from pathlib import Path

import numpy as np
import pytest
import zarr

from lsic.pipeline import StoreError
from lsic.workflows import _layout as layout
from lsic.workflows._zarr_io import decode_chunk_into
from lsic.workflows.store import TEST, TRAIN, VAL, FeatureStore
from lsic.workflows.testing import write_store

DATA = Path(__file__).parent / "data"


def _paths() -> list[str]:
    """Every LAYOUT path; "a/b`, `c" lists the siblings a/b and a/c."""
    out = []
    for entry, _, _ in layout.LAYOUT:
        first, *siblings = entry.split("`, `")
        parent = first.rstrip("/").rpartition("/")[0]
        out += [first, *(f"{parent}/{s}" if parent else s for s in siblings)]
    return out


def _relation(node: str, path: str) -> str | None:
    """How ``node`` relates to LAYOUT ``path`` ("<x>" matches one name; a trailing "/" covers the subtree)."""
    want = path.rstrip("/").split("/")
    have = node.split("/")
    for w, h in zip(want, have):
        if not re.fullmatch(re.sub(r"<[a-z]+>", "[^/]+", re.escape(w).replace(r"\<", "<").replace(r"\>", ">")), h):
            return None
    if len(have) == len(want):
        return "is"
    if len(have) < len(want):
        return "above"
    return "under" if path.endswith("/") else None


def test_layout_describes_a_store_written_by_the_release(tmp_path):
    """Every node of a real extract + train + evaluate store is in LAYOUT, and every LAYOUT entry occurs."""
    with tarfile.open(DATA / "legacy_store_0.1.0.tar.gz") as tar:
        tar.extractall(tmp_path, filter="data")
    root = tmp_path / "legacy.zarr"
    nodes = sorted(str(p.parent.relative_to(root)) for p in root.rglob("zarr.json") if p.parent != root)
    nodes.append("failures.json")
    paths = _paths()
    covered = set()
    for node in nodes:
        rel = {p: _relation(node, p) for p in paths}
        assert any(rel.values()), f"{node} is in the store but not in store.LAYOUT"
        covered.update(p for p, r in rel.items() if r in ("is", "under"))
    # score parts only exist while training runs; refit models came after the 0.1.0 release
    missing = set(paths) - covered - {"scores/<set>/_parts/<split>/c<lo>_<hi>",
                                      "models/<set>/refit/epoch_<e>/c<lo>_<hi>/"}
    assert not missing, f"LAYOUT lists {missing} but the store has none"


def test_path_helpers_follow_layout():
    paths = set(_paths())
    assert layout.features_path("<set>") + "/X" in paths
    assert layout.progress_path("extract") in paths
    assert layout.model_path("<set>") in paths
    assert layout.epoch_path("<set>", "asgd", "<e>") + "/" + layout.block_key("<lo>", "<hi>") + "/" in paths
    assert layout.score_path("<set>", "<split>") in paths
    assert layout.part_path("<set>", "<split>", "<lo>", "<hi>") in paths
    assert layout.codebook_path("<set>") + "/centers" in paths


@pytest.mark.parametrize("n, chunk_rows", [(0, 4), (1, 4), (8, 4), (9, 4), (10, 3)])
def test_chunk_arithmetic_against_a_loop(n, chunk_rows):
    starts = list(range(0, n, chunk_rows)) or [0]
    assert layout.n_chunks(n, chunk_rows) == len(starts)
    for k, a in enumerate(starts):
        assert layout.chunk_bounds(k, chunk_rows, n) == (a, min(a + chunk_rows, n))
    rng = np.random.default_rng(n)
    mask = rng.random(n) < 0.3
    want = [k for k, a in enumerate(starts) if mask[a:a + chunk_rows].any()]
    assert layout.chunks_with(mask, chunk_rows) == want


def test_open_errors_are_one_line_store_errors(tmp_path):
    with pytest.raises(StoreError, match="no feature store at .*lsic extract"):
        FeatureStore.open(str(tmp_path / "none.zarr"))
    with pytest.raises(StoreError, match="fsspec backend"):
        FeatureStore.open("nosuchprotocol://bucket/x.zarr")
    assert not FeatureStore.exists(str(tmp_path / "none.zarr"))


def test_writer_makes_what_extraction_makes(tmp_path):
    url = str(tmp_path / "w.zarr")
    rng = np.random.default_rng(0)
    split = np.repeat(np.array([TRAIN, VAL, TEST], np.int8), [11, 5, 7])
    labels = rng.integers(0, 3, split.size)
    valid = rng.random(split.size) > 0.2
    X = rng.normal(size=(split.size, 5)).astype(np.float32)
    store = write_store(url, labels=labels, split=split, valid=valid, features={"f": X}, chunk_rows=4)
    again = FeatureStore.open(url)
    assert FeatureStore.exists(url) and again.extract_complete and again.done_chunks().all()
    assert again.class_names == ["c0", "c1", "c2"] and again.n_chunks == 6
    # the on-disk arrays, read with plain zarr
    g = zarr.open_group(url, mode="r")
    np.testing.assert_array_equal(g["features/f/X"][...], X)
    assert g["features/f/X"].chunks == (4, 5)
    np.testing.assert_array_equal(g["labels"][...], labels)
    np.testing.assert_array_equal(g["valid"][...], valid)
    # split rows and chunks, against direct formulas
    for name, code in (("train", TRAIN), ("val", VAL), ("test", TEST)):
        rows = np.flatnonzero((split == code) & valid)
        np.testing.assert_array_equal(store.split_rows(name), rows)
        assert store.split_chunks(name) == sorted({int(r) // 4 for r in rows})
        every = np.flatnonzero(split == code)
        assert store.split_bounds(name) == (every[0], every[-1] + 1)
    with pytest.raises(ValueError, match="ordered train, val, test"):
        write_store(url, labels=labels, split=split[::-1], features={})


def test_sparse_lcc_features_are_stored_without_shuffle_dense_ones_with_it(tmp_path):
    from lsic.pipeline import FeatureSet

    rng = np.random.default_rng(0)
    n, d = 300, 512
    sparse = np.where(rng.random((n, d)) < 0.25, rng.random((n, d)), 0).astype(np.float32)  # LCC-like
    dense = rng.standard_normal((n, d)).astype(np.float32)
    url = str(tmp_path / "c.zarr")
    store = write_store(url, labels=np.arange(n) % 3, split=np.zeros(n, np.int8),
                               features={"lcc": sparse, "svc": dense}, sparse=["lcc"], chunk_rows=128)
    g = zarr.open_group(url, mode="r")  # plain zarr reads both back as written
    np.testing.assert_array_equal(g["features/lcc/X"][:], sparse)
    np.testing.assert_array_equal(g["features/svc/X"][:], dense)
    shuffles = {name: g[f"features/{name}/X"].compressors[0].shuffle.value for name in ("lcc", "svc")}
    assert shuffles == {"lcc": "noshuffle", "svc": "shuffle"}
    # extraction picks by the set's coding
    for coding, expected in (("lcc", "noshuffle"), ("svc", "shuffle"), ("fv", "shuffle")):
        fs = FeatureSet(f"x_{coding}", "hog", coding, 32, pca_dim=4 if coding != "lcc" else None)
        arr = store.create_features(fs.name, 16, fs)
        assert arr.compressors[0].shuffle.value == expected


@pytest.mark.parametrize("url_kind", ["local", "memory"])
def test_read_chunk_equals_zarr_slicing(tmp_path, url_kind):
    """The direct Blosc decode of a chunk gives zarr's rows: full, partial last and never-written chunks."""
    rng = np.random.default_rng(1)
    n, d = 23, 7
    X = np.where(rng.random((n, d)) < 0.3, rng.random((n, d)), 0).astype(np.float32)
    url = str(tmp_path / "r.zarr") if url_kind == "local" else f"memory://read-chunk-{tmp_path.name}.zarr"
    store = write_store(url, labels=np.arange(n) % 3, split=np.zeros(n, np.int8),
                               features={"lcc": X, "svc": -X}, sparse=["lcc"], chunk_rows=5)
    buf = np.full((5, d), np.nan, np.float32)
    for name, ref in (("lcc", X), ("svc", -X)):
        for k in range(store.n_chunks):
            a, b = store.chunk_bounds(k)
            got = store.read_chunk(name, k, out=buf)
            np.testing.assert_array_equal(got, ref[a:b])
            assert np.shares_memory(got, buf)  # decoded in place, no new chunk array
        arr = store.features(name)  # and by the direct decode, not zarr's fallback
        assert decode_chunk_into(arr, (1, 0), np.empty(arr.chunks, np.float32))
        assert store.read_chunk(name, 4).shape == (3, d)  # without a buffer: a new one
    # a chunk never written reads as the fill value (zeros), like zarr
    empty = store.create_features("blank", d, sparse=True)
    np.testing.assert_array_equal(store.read_chunk("blank", 2, out=buf), np.zeros((5, d), np.float32))
    assert empty[10:15].sum() == 0


def test_read_chunk_reads_other_codecs_through_zarr(tmp_path):
    """An array not stored as little-endian float32 Blosc chunks (e.g. written by hand with gzip) still reads."""
    url = str(tmp_path / "g.zarr")
    n, d = 9, 4
    X = np.arange(n * d, dtype=np.float32).reshape(n, d)
    store = write_store(url, labels=np.arange(n) % 3, split=np.zeros(n, np.int8), features={"f": X},
                               chunk_rows=4)
    grp = store.group[layout.features_path("f")]
    del grp["X"]
    grp.create_array("X", shape=(n, d), chunks=(4, d), dtype="float32", compressors=zarr.codecs.GzipCodec())[:] = X
    assert not decode_chunk_into(grp["X"], (0, 0), np.empty((4, d), np.float32))
    for k in range(3):
        a, b = store.chunk_bounds(k)
        np.testing.assert_array_equal(store.read_chunk("f", k, out=np.empty((4, d), np.float32)), X[a:b])


def test_a_store_sent_to_a_worker_reopens_there_and_never_clears_it(tmp_path):
    """Stages pass one open FeatureStore into their tasks: it pickles as its URL and reopens ("r" or "r+", never "w")."""
    import pickle

    from dask.base import tokenize

    url = str(tmp_path / "p.zarr")
    X = np.arange(12, dtype=np.float32).reshape(6, 2)
    created = write_store(url, labels=np.arange(6) % 2, split=np.zeros(6, np.int8), features={"f": X}, chunk_rows=4)
    assert not created.read_only  # made with mode "w"
    copy = pickle.loads(pickle.dumps(created))
    assert copy is not created and copy.url == url and not copy.read_only
    np.testing.assert_array_equal(copy.features("f")[...], X)  # the data survived the reopen
    copy.record_timing("extract", 1.5)  # writable on the worker
    assert FeatureStore.open(url).timings() == {"extract": 1.5}
    reader = pickle.loads(pickle.dumps(FeatureStore.open(url, "r")))
    assert reader.read_only
    with pytest.raises(ValueError, match="read-only"):
        reader.record_timing("train", 2.0)
    assert tokenize(created) == tokenize(copy)  # dask sees the same store, deterministically
