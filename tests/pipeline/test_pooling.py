"""Pyramid pooling and SVC pooling against the formulas written directly."""

from __future__ import annotations

import numpy as np
import pytest

from lsic.pipeline import (
    lcc_encode,
    n_pyramid_blocks,
    nearest_codewords,
    normalize_feature,
    pyramid_blocks,
    pyramid_pool,
    svc_pool,
)


def _direct_blocks(xy, shape, pyramid):
    H, W = shape
    out, off = [], 0
    for rows, cols in pyramid:
        ids = []
        for x, y in xy:
            r = min(int(y * rows / H), rows - 1)
            c = min(int(x * cols / W), cols - 1)
            ids.append(off + r * cols + c)
        out.append(ids)
        off += rows * cols
    return np.array(out).T


PYRAMIDS = [((1, 1), (3, 3)), ((1, 1), (2, 2), (3, 1)), ((1, 1), (3, 1))]


@pytest.mark.parametrize("pyramid", PYRAMIDS)
def test_block_counts_and_assignment(pyramid):
    rng = np.random.default_rng(0)
    xy = rng.random((300, 2)) * [120, 90]
    xy[:3] = [[0, 0], [120, 90], [40, 30]]  # corners and boundary points
    np.testing.assert_array_equal(pyramid_blocks(xy, (90, 120), pyramid), _direct_blocks(xy, (90, 120), pyramid))


def test_table1_block_counts():
    assert [n_pyramid_blocks(p) for p in PYRAMIDS] == [10, 8, 4]


@pytest.mark.parametrize("pooling", ["max", "avg"])
@pytest.mark.parametrize("pyramid", PYRAMIDS)
def test_pyramid_pool_equals_direct(pooling, pyramid):
    rng = np.random.default_rng(1)
    n, p, d = 120, 40, 8
    Z = rng.standard_normal((n, d)).astype(np.float32)
    B = rng.standard_normal((p, d)).astype(np.float32)
    xy = rng.random((n, 2)) * [64, 48]
    codes = lcc_encode(Z, B, 5)  # weights of both signs
    dense = codes.toarray().astype(np.float64)
    blocks = _direct_blocks(xy, (48, 64), pyramid)
    ref = []
    for q in range(n_pyramid_blocks(pyramid)):
        members = np.any(blocks == q, axis=1)
        if not members.any():
            ref.append(np.zeros(p))
        elif pooling == "max":
            ref.append(dense[members].max(axis=0))
        else:
            ref.append(dense[members].mean(axis=0))
    ref = np.concatenate(ref)
    got = pyramid_pool(codes, xy, (48, 64), pyramid, pooling=pooling)
    assert got.dtype == np.float32 and got.shape == (n_pyramid_blocks(pyramid) * p,)
    np.testing.assert_allclose(got, ref, atol=1e-6)


def test_max_pooling_of_negative_weights_keeps_implicit_zeros():
    # one descriptor only: every unselected codeword pools to its dense 0, selected ones to their weight
    rng = np.random.default_rng(2)
    Z = rng.standard_normal((1, 4)).astype(np.float32)
    B = rng.standard_normal((10, 4)).astype(np.float32)
    codes = lcc_encode(Z, B, 6)
    got = pyramid_pool(codes, np.array([[1.0, 1.0]]), (4, 4), ((1, 1),))
    np.testing.assert_allclose(got, codes.toarray()[0], atol=1e-7)


def _direct_svc(Z, B, s, members):
    """x = (1/n) sum_i beta_i / sqrt(omega_k(i)), beta_i zero but block k(i) = [s, z_i - b_k]."""
    Zm = Z[members].astype(np.float64)
    p, d = B.shape
    n = len(Zm)
    x = np.zeros((p, d + 1))
    if n == 0:
        return x.ravel()
    D = ((Zm[:, None, :] - B[None].astype(np.float64)) ** 2).sum(-1)
    k = D.argmin(axis=1)
    omega = np.bincount(k, minlength=p) / n
    for i in range(n):
        beta = np.zeros((p, d + 1))
        beta[k[i], 0] = s
        beta[k[i], 1:] = Zm[i] - B[k[i]]
        x += beta / np.sqrt(omega[k[i]])
    return (x / n).ravel()


@pytest.mark.parametrize("pyramid", [((1, 1),), ((1, 1), (3, 1))])
def test_svc_pool_equals_formula(pyramid):
    rng = np.random.default_rng(3)
    n, p, d, s = 90, 12, 6, 0.3
    Z = rng.standard_normal((n, d)).astype(np.float32)
    B = rng.standard_normal((p, d)).astype(np.float32)
    xy = rng.random((n, 2)) * [30, 60]
    near = nearest_codewords(Z, B, 1)[:, 0]
    got = svc_pool(Z, near, B, s, xy, (60, 30), pyramid)
    blocks = _direct_blocks(xy, (60, 30), pyramid)
    ref = np.concatenate([_direct_svc(Z, B, s, np.any(blocks == q, axis=1))
                          for q in range(n_pyramid_blocks(pyramid))])
    assert got.dtype == np.float32 and got.shape == (n_pyramid_blocks(pyramid) * p * (d + 1),)
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-6)


def test_svc_without_xy_is_one_block():
    rng = np.random.default_rng(4)
    Z = rng.standard_normal((20, 3)).astype(np.float32)
    B = rng.standard_normal((4, 3)).astype(np.float32)
    near = nearest_codewords(Z, B)[:, 0]
    np.testing.assert_allclose(svc_pool(Z, near, B, 1.0), _direct_svc(Z, B, 1.0, np.ones(20, bool)),
                               rtol=1e-5, atol=1e-6)


def test_normalize_feature():
    x = np.array([4.0, -9.0, 0.0], np.float32)
    np.testing.assert_allclose(normalize_feature(x), x / np.linalg.norm(x), rtol=1e-6)
    r = np.array([2.0, -3.0, 0.0])
    np.testing.assert_allclose(normalize_feature(x, power_norm=True), r / np.linalg.norm(r), rtol=1e-6)
    assert np.all(normalize_feature(np.zeros(3)) == 0)
