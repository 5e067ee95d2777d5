"""kNN of LCC (eq. 1): the fused tiled search against scipy cdist + argsort, the IVF mode's recall and its config."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial.distance import cdist

from lsic.pipeline import (
    Codebook, ConfigError, FeatureSet, build_ivf, calibrate_n_probe, encode_pool, lcc_encode, nearest_codewords,
    probe_recall,
)
from lsic.pipeline._grid import Descriptors
from lsic.pipeline._knn import knn_exact
from lsic.pipeline._knn import _fold, _lift, knn_ivf
from lsic.pipeline._knn_kernels import seed_thresholds, smallest_k


def _brute(Z, B, k):
    D = cdist(Z.astype(np.float64), B.astype(np.float64), "sqeuclidean")
    return D, np.argsort(D, axis=1, kind="stable")[:, :k]


def _assert_same_neighbours(D, got, ref):
    # equal up to float32 rounding of near-equal distances (ties aside): compare distances, then indices
    assert got.dtype == np.int32 and got.shape == ref.shape
    np.testing.assert_allclose(
        np.take_along_axis(D, got, axis=1), np.take_along_axis(D, ref, axis=1), rtol=1e-5, atol=1e-4
    )
    assert (got == ref).mean() > 0.999


@pytest.mark.parametrize(
    "n, p, k, tile_rows, tile_cols",
    [
        (1, 40, 1, 512, 512),  # one descriptor, one partial tile
        (300, 1000, 20, 64, 128),  # p = 7 x 128 + 104: last column tile partial
        (257, 513, 20, 100, 512),  # p one past the tile; n over three row tiles
        (200, 300, 299, 37, 50),  # k close to p: every chunk passes the threshold
        (120, 70, 5, 512, 8),  # tiles of exactly one selection chunk
        (90, 45, 7, 30, 20),  # tile width not a multiple of the 8-value chunk
    ],
)
def test_fused_tiled_search_equals_cdist_argsort(n, p, k, tile_rows, tile_cols):
    rng = np.random.default_rng(n + p + k)
    Z = rng.standard_normal((n, 24)).astype(np.float32)
    B = rng.standard_normal((p, 24)).astype(np.float32)
    D, ref = _brute(Z, B, k)
    bb = np.einsum("ij,ij->i", B, B).astype(np.float32)
    _assert_same_neighbours(D, knn_exact(Z, B, bb, k, tile_rows=tile_rows, tile_cols=tile_cols), ref)
    _assert_same_neighbours(D, nearest_codewords(Z, B, k, block_rows=tile_rows), ref)


def test_ties_keep_the_lower_index_first():
    # duplicated codewords with small integer coordinates: every dot product is exact in float32, so
    # the copies tie exactly whichever GEMM tile holds them; the argsort(kind="stable") order
    rng = np.random.default_rng(3)
    base = rng.integers(-8, 9, (50, 8)).astype(np.float32)
    B = np.concatenate([base, base, base])  # codeword j, j + 50, j + 100 identical
    Z = rng.integers(-8, 9, (40, 8)).astype(np.float32) + 0.5
    D, ref = _brute(Z, B, 6)  # exact distances too, so the stable argsort is the one right answer
    idx = knn_exact(Z, B, np.einsum("ij,ij->i", B, B).astype(np.float32), 6, tile_rows=16, tile_cols=32)
    np.testing.assert_array_equal(idx, ref)
    assert (idx >= 50).any()  # copies of a tied codeword did come out, after their original


def _clustered(n, p, d=32, n_modes=60, seed=0):
    # descriptors and codewords from one Gaussian mixture, as k-means codewords sit among real descriptors
    rng = np.random.default_rng(seed)
    modes = 4.0 * rng.standard_normal((n_modes, d))
    scale = rng.uniform(0.5, 1.5, n_modes)

    def draw(m):
        c = rng.integers(n_modes, size=m)
        return (modes[c] + scale[c, None] * rng.standard_normal((m, d))).astype(np.float32)

    return draw(n), draw(p)


def _recall(got, ref):
    return np.mean([len(set(g) & set(r)) / len(r) for g, r in zip(got, ref)])


def test_ivf_lists_partition_the_codebook_by_nearest_coarse_centroid():
    _, B = _clustered(10, 900)
    ix = build_ivf(B)
    assert ix.n_lists == 30  # round(sqrt(900))
    np.testing.assert_array_equal(np.sort(ix.order), np.arange(900))
    np.testing.assert_array_equal(ix.centers, B[ix.order])
    assert ix.offsets[0] == 0 and ix.offsets[-1] == 900
    list_of = np.repeat(np.arange(ix.n_lists), np.diff(ix.offsets))
    D = cdist(ix.centers.astype(np.float64), ix.coarse.astype(np.float64), "sqeuclidean")
    assert (np.take_along_axis(D, list_of[:, None], 1)[:, 0] <= D.min(axis=1) + 1e-3).all()
    # within a list, nearest its centroid first (the codewords that seed the search)
    to_own = np.take_along_axis(D, list_of[:, None], 1)[:, 0]
    for q in range(ix.n_lists):
        assert (np.diff(to_own[ix.offsets[q] : ix.offsets[q + 1]]) >= -1e-5).all()
    again = build_ivf(B)  # deterministic: every worker builds the same index
    np.testing.assert_array_equal(again.order, ix.order)
    np.testing.assert_array_equal(again.coarse, ix.coarse)


def test_ivf_recall_on_clustered_data():
    Z, B = _clustered(2000, 4096)
    D, ref = _brute(Z, B, 20)
    ix = build_ivf(B)  # 64 lists
    rec = {npr: _recall(nearest_codewords(Z, B, 20, index=ix, n_probe=npr), ref) for npr in (1, 4, 16, 64)}
    assert rec[1] < 0.95  # one list is a real approximation ...
    assert rec[16] >= 0.99  # ... a quarter of the lists is as good as exact for 20 neighbours
    assert rec[64] == 1.0  # every list probed: the exact neighbour sets
    got = nearest_codewords(Z, B, 20, index=ix, n_probe=64)
    np.testing.assert_allclose(  # and in the same order, nearest first
        np.take_along_axis(D, got, 1), np.take_along_axis(D, ref, 1), rtol=1e-5, atol=1e-4
    )


@pytest.mark.parametrize("n_probe", [1, 3, 8])
def test_knn_ivf_is_the_exact_search_within_the_probed_lists(n_probe):
    # reference in float64: each descriptor's n_probe nearest coarse centroids, then brute force over
    # the codewords of those lists; the seeded thresholds must not lose any of them
    Z, B = _clustered(1500, 1200, d=24)
    ix = build_ivf(B)  # 35 lists, about 34 codewords each
    k = 20
    got = knn_ivf(Z, ix, k, n_probe)
    list_of = np.empty(len(B), dtype=np.int64)
    list_of[ix.order] = np.repeat(np.arange(ix.n_lists), np.diff(ix.offsets))
    probed = np.argsort(cdist(Z.astype(np.float64), ix.coarse.astype(np.float64), "sqeuclidean"), axis=1,
                        kind="stable")[:, :n_probe]
    D = cdist(Z.astype(np.float64), B.astype(np.float64), "sqeuclidean")
    inside = (list_of[None, :, None] == probed[:, None, :]).any(axis=2)
    ok = inside.sum(axis=1) >= k  # the other rows are searched exactly (the fallback's own test)
    assert ok.mean() > 0.8
    ref = np.argsort(np.where(inside, D, np.inf), axis=1, kind="stable")[:, :k]
    _assert_same_neighbours(D[ok], got[ok], ref[ok])
    if n_probe == 1:
        assert (got == knn_exact(Z, B, np.einsum("ij,ij->i", B, B).astype(np.float32), k)).mean() < 0.99


def test_seed_thresholds_bound_the_first_k_codewords_of_the_nearest_list():
    Z, B = _clustered(400, 300, d=40, seed=3)
    ix = build_ivf(B, n_lists=12)
    sizes = np.diff(ix.offsets)
    k = int(np.sort(sizes)[2]) + 1  # the two or three smallest lists hold fewer than k codewords
    Zl = _lift(Z)
    nearest = np.argmin(cdist(Z.astype(np.float64), ix.coarse.astype(np.float64), "sqeuclidean"), axis=1)
    vals = np.full((len(Z), k), np.inf, dtype=np.float32)
    seed_thresholds(Zl, nearest.astype(np.int32), ix.folded, ix.offsets, vals)
    long_enough = sizes[nearest] >= k
    assert (~long_enough).any() and long_enough.any()
    assert np.isinf(vals[~long_enough]).all()  # too short a list: no seed
    T = vals[long_enough]
    assert (T == T[:, :1]).all()
    first_k = ix.offsets[nearest[long_enough]][:, None] + np.arange(k)
    # the seeds' values ||b||^2 - 2 z.b exactly (float64) and as a float32 GEMM rounds them
    exact = np.einsum("nd,nkd->nk", Zl[long_enough].astype(np.float64), ix.folded[first_k].astype(np.float64))
    gemm = np.einsum("nd,nkd->nk", Zl[long_enough], ix.folded[first_k])
    assert (gemm.max(axis=1) < T[:, 0]).all() and (exact.max(axis=1) < T[:, 0]).all()
    # a rounding allowance (float32 dot products of this length round by at most ~D 2^-24 ||z|| ||f||), not a loose bound
    scale = np.linalg.norm(Zl[long_enough], axis=1) * np.linalg.norm(ix.folded[first_k], axis=2).max(axis=1)
    assert ((T[:, 0] - exact.max(axis=1)) / scale < 41 * 2.0**-24 * 4).all()


def test_ivf_falls_back_to_exact_when_probed_lists_hold_fewer_than_k():
    Z, B = _clustered(300, 200)
    ix = build_ivf(B, n_lists=100)  # about two codewords per list
    D, ref = _brute(Z, B, 10)
    got = nearest_codewords(Z, B, 10, index=ix, n_probe=1)
    # a row whose probed list holds fewer than 10 codewords is searched exactly, so every row has
    # 10 distinct neighbours, and the rows searched exactly agree with brute force
    assert (got >= 0).all() and all(len(set(r)) == 10 for r in got)
    sizes = np.diff(ix.offsets)
    probe = nearest_codewords(Z, ix.coarse, 1)[:, 0]
    short = sizes[probe] < 10
    assert short.all()
    _assert_same_neighbours(D[short], got[short], ref[short])


def test_ivf_with_every_list_gives_the_exact_lcc_codes():
    Z, B = _clustered(500, 600, d=16)
    ix = build_ivf(B, n_lists=20)
    exact = lcc_encode(Z, B, 8)
    ivf = lcc_encode(Z, B, 8, index=ix, n_probe=20)
    np.testing.assert_array_equal(ivf.indices, exact.indices)
    np.testing.assert_allclose(ivf.weights, exact.weights, rtol=1e-5, atol=1e-6)


def test_ivf_argument_errors():
    Z, B = _clustered(10, 100)
    ix = build_ivf(B, n_lists=10)
    with pytest.raises(ConfigError, match="n_probe=11"):
        nearest_codewords(Z, B, 5, index=ix, n_probe=11)
    with pytest.raises(ConfigError, match="rebuild it"):
        nearest_codewords(Z, B[:50], 5, index=ix, n_probe=2)


def test_feature_set_knn_option_roundtrip_and_validation():
    d = {"name": "a", "descriptor": "hog", "coding": "lcc", "codebook_size": 4096, "knn": "ivf", "n_probe": 20}
    fs = FeatureSet.from_dict(d)
    assert fs.knn == "ivf" and fs.n_probe == 20 and fs.ivf_lists == 64
    assert FeatureSet.from_dict(fs.to_dict()) == fs
    assert fs.to_dict()["knn"] == "ivf" and fs.to_dict()["n_probe"] == 20
    assert FeatureSet.from_dict({**d, "n_lists": 100}).ivf_lists == 100
    auto = FeatureSet.from_dict({**d, "n_probe": None, "ivf_recall": 0.98})
    assert auto.n_probe is None and auto.ivf_recall == 0.98
    assert FeatureSet.from_dict(auto.to_dict()) == auto
    assert FeatureSet.from_dict(d).ivf_recall == 0.993  # the default target
    assert FeatureSet("b", "hog", "lcc", 16, kappa=5).knn == "exact"  # exact stays the default
    FeatureSet("b", "hog", "lcc", 16, kappa=5, n_probe=24)  # n_probe past the lists is fine while knn is exact
    for key, value, msg in [
        ("knn", "hnsw", "knn='hnsw'.*exact"),
        ("n_probe", 0, "n_probe=0"),
        ("n_probe", 65, r"n_probe=65.*1\.\.n_lists \(64\)"),
        ("n_probe", True, "n_probe=True"),
        ("n_lists", 5000, "n_lists=5000"),
        ("ivf_recall", 0, r"ivf_recall=0 .*\(0, 1\]"),
        ("ivf_recall", 1.5, "ivf_recall=1.5"),
        ("ivf_recall", "high", "ivf_recall='high'"),
    ]:
        with pytest.raises(ConfigError, match=msg):
            FeatureSet.from_dict({**d, key: value})


def test_encode_pool_uses_the_codebooks_ivf():
    Z, B = _clustered(400, 256)
    rng = np.random.default_rng(1)
    desc = Descriptors(Z, (rng.random((400, 2)) * 100).astype(np.float32), (100, 100))
    exact = FeatureSet("e", "hog", "lcc", 256, kappa=5, pyramid=((1, 1), (2, 2)))
    full = FeatureSet("f", "hog", "lcc", 256, kappa=5, pyramid=((1, 1), (2, 2)), knn="ivf", n_probe=16)
    one = FeatureSet("o", "hog", "lcc", 256, kappa=5, pyramid=((1, 1), (2, 2)), knn="ivf", n_probe=1)
    x_exact = encode_pool(desc, Codebook(exact, B))
    np.testing.assert_array_equal(encode_pool(desc, Codebook(full, B)), x_exact)  # 16 of 16 lists
    assert not np.array_equal(encode_pool(desc, Codebook(one, B)), x_exact)  # one list: approximate


@pytest.mark.parametrize("m, c, k", [(500, 91, 23), (300, 181, 45), (40, 7, 7), (40, 7, 1), (60, 33, 5)])
def test_smallest_k_is_the_k_smallest_with_the_lower_index_on_ties(m, c, k):
    rng = np.random.default_rng(m + c + k)
    D = rng.standard_normal((m, c)).astype(np.float32)
    D[:, ::3] = np.round(D[:, ::3])  # many exact ties, some at the k-th value
    out = np.empty((m, k), dtype=np.int32)
    nearest = np.empty(m, dtype=np.int32)
    smallest_k(D, k, out, nearest)
    ref = np.sort(np.argsort(D, axis=1, kind="stable")[:, :k], axis=1)  # stable: lower index first on ties
    np.testing.assert_array_equal(out, ref)
    np.testing.assert_array_equal(nearest, np.argmin(D, axis=1))  # argmin: the lowest index of tied minima


def test_probe_recall_is_the_recall_knn_ivf_gets():
    Z, B = _clustered(600, 1024)
    ix = build_ivf(B, n_lists=32)  # 32 codewords per list on average: no row falls back to exact
    _, ref = _brute(Z, B, 10)
    curve = probe_recall(Z, ix, 10)
    assert curve.shape == (32,) and curve[-1] == pytest.approx(1.0)
    assert (np.diff(curve) >= 0).all()
    near_lists = np.argsort(cdist(Z, ix.coarse, "sqeuclidean"), axis=1, kind="stable")
    sizes = np.diff(ix.offsets)
    for npr in (1, 2, 5, 12):
        got = nearest_codewords(Z, B, 10, index=ix, n_probe=npr)
        # rows whose probed lists hold fewer than 10 codewords are searched exactly instead: left out
        ok = sizes[near_lists[:, :npr]].sum(axis=1) >= 10
        assert ok.mean() > 0.8
        assert probe_recall(Z[ok], ix, 10)[npr - 1] == pytest.approx(_recall(got[ok], ref[ok]), abs=2e-3)


def test_calibrated_n_probe_is_the_fewest_lists_reaching_the_target():
    _, B = _clustered(10, 900)
    ix = build_ivf(B, n_lists=30)
    _, ref = _brute(B, B, 20)  # every codeword a query (n_queries >= p): the measured sample is known
    for target in (0.9, 0.99):
        m = calibrate_n_probe(B, ix, 20, target, n_queries=900)
        assert 1 < m < 30
        assert _recall(nearest_codewords(B, B, 20, index=ix, n_probe=m), ref) >= target
        assert _recall(nearest_codewords(B, B, 20, index=ix, n_probe=m - 1), ref) < target
    assert calibrate_n_probe(B, ix, 20, 1.0, n_queries=900) <= 30


def test_codebook_calibrates_n_probe_when_it_is_null():
    Z, B = _clustered(2000, 4096)
    _, ref = _brute(Z, B, 20)
    fs = FeatureSet("c", "hog", "lcc", 4096, kappa=20, knn="ivf")
    book = Codebook(fs, B)
    m = book.ivf_probes
    assert m == calibrate_n_probe(B, book.ivf, 20, 0.993)  # deterministic: every worker derives the same
    assert 1 <= m < book.ivf.n_lists
    # codewords as queries stand in for descriptors from the same distribution
    assert _recall(nearest_codewords(Z, B, 20, index=book.ivf, n_probe=m), ref) >= 0.99
    fixed = Codebook(FeatureSet("f", "hog", "lcc", 4096, kappa=20, knn="ivf", n_probe=5), B)
    assert fixed.ivf_probes == 5


def test_calibrated_probes_travel_with_the_codebook_arrays():
    _, B = _clustered(10, 1024)
    fs = FeatureSet("c", "hog", "lcc", 1024, kappa=10, knn="ivf")
    book = Codebook(fs, B)
    arrays = book.to_arrays()
    assert arrays["ivf_probes"].shape == (1,) and arrays["ivf_probes"][0] == book.ivf_probes
    # read back, the recorded number is used as is (here a different one, to tell it from a recalibration)
    back = Codebook.from_arrays({**arrays, "ivf_probes": np.array([3], np.int32)}, fs)
    assert back.ivf_probes == 3
    # stored before the calibration: a quarter of the lists, as such a store's rows were extracted with
    legacy = Codebook.from_arrays({"centers": B}, fs)
    assert legacy.ivf_probes == 8 == round(fs.ivf_lists / 4)
    with pytest.raises(Exception, match="ivf_probes=99 outside 1..32"):
        Codebook.from_arrays({**arrays, "ivf_probes": np.array([99], np.int32)}, fs)
    # exact search, or a fixed n_probe: nothing to record
    assert "ivf_probes" not in Codebook(FeatureSet("e", "hog", "lcc", 1024, kappa=10), B).to_arrays()
    assert "ivf_probes" not in Codebook(FeatureSet("f", "hog", "lcc", 1024, kappa=10, knn="ivf", n_probe=4),
                                        B).to_arrays()
