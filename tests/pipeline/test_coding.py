"""Nearest codewords vs scipy cdist, LCC weights vs the closed form written plainly."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial.distance import cdist

from lsic.pipeline import ConfigError, SparseCodes, lcc_encode, nearest_codewords


def _data(n=200, p=300, d=24, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, d)).astype(np.float32), rng.standard_normal((p, d)).astype(np.float32)


@pytest.mark.parametrize("k", [1, 5, 20, 299])
def test_nearest_codewords_match_cdist(k):
    Z, B = _data()
    idx = nearest_codewords(Z, B, k, block_rows=37)  # several GEMM blocks
    assert idx.dtype == np.int32 and idx.shape == (200, k)
    D = cdist(Z.astype(np.float64), B.astype(np.float64), "sqeuclidean")
    ref = np.argsort(D, axis=1, kind="stable")[:, :k]
    # identical up to float32 rounding of near-equal distances: compare the distances
    got = np.take_along_axis(D, idx, axis=1)
    want = np.take_along_axis(D, ref, axis=1)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-4)
    assert (idx == ref).mean() > 0.999


def _direct_lcc(z, B, idx, ridge):
    Bz = B[idx].astype(np.float64)  # (kappa, d)
    D = Bz - z.astype(np.float64)
    C = D @ D.T
    C = C + ridge * np.trace(C) * np.eye(len(idx))
    a = np.linalg.solve(C, np.ones(len(idx)))
    return a / a.sum()


@pytest.mark.parametrize("kappa, d", [(5, 24), (20, 24), (20, 8)])  # kappa > d: C singular without ridge
def test_lcc_weights_equal_direct_formula(kappa, d):
    Z, B = _data(n=150, p=256, d=d, seed=kappa)
    codes = lcc_encode(Z, B, kappa)
    assert isinstance(codes, SparseCodes) and codes.n_codewords == 256
    assert codes.indices.dtype == np.int32 and codes.weights.dtype == np.float32
    np.testing.assert_array_equal(codes.indices, nearest_codewords(Z, B, kappa))
    np.testing.assert_allclose(codes.weights.sum(axis=1), 1.0, atol=1e-5)
    for i in range(Z.shape[0]):
        ref = _direct_lcc(Z[i], B, codes.indices[i], 1e-4)
        np.testing.assert_allclose(codes.weights[i], ref, rtol=2e-3, atol=2e-4 * np.abs(ref).max())


def test_lcc_without_ridge_is_constrained_least_squares():
    # kappa <= d and ridge 0: the weights minimise ||z - B_z a|| subject to sum(a) = 1 (eq. 1),
    # checked against the KKT system solved independently.
    Z, B = _data(n=40, p=64, d=16, seed=3)
    codes = lcc_encode(Z, B, 6, ridge=0.0)
    for i in range(40):
        Bz = B[codes.indices[i]].astype(np.float64).T  # (d, kappa)
        k = Bz.shape[1]
        kkt = np.block([[2 * Bz.T @ Bz, np.ones((k, 1))], [np.ones((1, k)), np.zeros((1, 1))]])
        rhs = np.concatenate([2 * Bz.T @ Z[i].astype(np.float64), [1.0]])
        a = np.linalg.solve(kkt, rhs)[:k]
        np.testing.assert_allclose(codes.weights[i], a, rtol=1e-3, atol=1e-3)


def test_kappa_one_is_vector_quantisation():
    Z, B = _data()
    codes = lcc_encode(Z, B, 1)
    np.testing.assert_array_equal(codes.weights, 1.0)
    np.testing.assert_array_equal(codes.indices[:, 0], np.argmin(cdist(Z, B), axis=1))
    dense = codes.toarray()
    assert dense.shape == (200, 300) and np.all(dense.sum(axis=1) == 1)


def test_descriptor_equal_to_codewords_is_finite():
    B = np.repeat(np.eye(4, dtype=np.float32), 3, axis=0)  # duplicated codewords
    Z = B[:2].copy()
    codes = lcc_encode(Z, B, 3)
    assert np.all(np.isfinite(codes.weights))
    np.testing.assert_allclose(codes.weights.sum(1), 1.0, atol=1e-6)


def test_blocking_does_not_change_codes():
    Z, B = _data(n=100, p=500)
    a = lcc_encode(Z, B, 10, block_rows=7)
    b = lcc_encode(Z, B, 10)
    np.testing.assert_array_equal(a.indices, b.indices)
    np.testing.assert_array_equal(a.weights, b.weights)


def test_bad_shapes_and_kappa():
    Z, B = _data()
    with pytest.raises(ConfigError):
        lcc_encode(Z[:, :5], B, 5)
    with pytest.raises(ConfigError):
        nearest_codewords(Z, B, 301)
