"""Fisher vectors: posteriors against scikit-learn, statistics against a direct per-descriptor formula."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.mixture import GaussianMixture

from lsic.pipeline import (
    Codebook,
    ConfigError,
    DataError,
    Descriptors,
    FeatureSet,
    encode_pool,
    fisher_vector,
    gmm_posteriors,
    pyramid_blocks,
)

PYR = ((1, 1), (2, 2), (3, 1))


def _gmm(d=5, K=4, n=600, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 3, (K, d))
    X = centres[rng.integers(0, K, n)] + rng.normal(0, 1, (n, d)) * rng.uniform(0.5, 2, d)
    gm = GaussianMixture(K, covariance_type="diag", random_state=0).fit(X)
    return gm, X


def _direct_fv(Z, gamma, mu, var, w, blocks, n_blocks):
    """Per block, per descriptor, per component: the formula written out, then signed sqrt and L2 per block."""
    K, d = mu.shape
    out = np.zeros((n_blocks, 2, K, d))
    for b in range(n_blocks):
        members = [i for i in range(len(Z)) if b in blocks[i]]
        N = len(members)
        for i in members:
            for k in range(K):
                s = (Z[i] - mu[k]) / np.sqrt(var[k])
                out[b, 0, k] += gamma[i, k] * s / (N * np.sqrt(w[k]))
                out[b, 1, k] += gamma[i, k] * (s * s - 1) / (N * np.sqrt(2 * w[k]))
        v = np.sign(out[b]) * np.sqrt(np.abs(out[b]))
        nrm = np.linalg.norm(v)
        out[b] = v / nrm if nrm > 0 else v
    return out.ravel()


def test_posteriors_match_sklearn_predict_proba():
    gm, X = _gmm()
    gamma = gmm_posteriors(X, gm.means_, gm.covariances_, gm.weights_)
    assert gamma.shape == (len(X), 4)
    np.testing.assert_allclose(gamma, gm.predict_proba(X), rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(gamma.sum(axis=1), 1.0)


def test_fisher_vector_statistics_match_direct_formula_per_pyramid_block():
    gm, X = _gmm(n=200)
    rng = np.random.default_rng(1)
    shape = (60, 90)
    xy = np.c_[rng.uniform(0, 90, len(X)), rng.uniform(0, 60, len(X))].astype(np.float32)
    x = fisher_vector(X, gm.means_, gm.covariances_, gm.weights_, xy, shape, PYR)
    blocks = [set(r) for r in pyramid_blocks(xy, shape, PYR)]
    ref = _direct_fv(X, gm.predict_proba(X), gm.means_, gm.covariances_, gm.weights_, blocks, 8)
    assert x.dtype == np.float32 and x.shape == (8 * 2 * 4 * 5,)
    np.testing.assert_allclose(x, ref, atol=1e-6)
    # every block is signed-square-rooted and unit-L2 on its own
    np.testing.assert_allclose(np.linalg.norm(x.reshape(8, -1), axis=1), 1.0, rtol=1e-5)


def test_empty_block_is_zero_and_no_xy_means_one_block():
    gm, X = _gmm(n=50)
    xy = np.tile([[10.0, 10.0]], (len(X), 1)).astype(np.float32)  # all in the top-left quadrant
    x = fisher_vector(X, gm.means_, gm.covariances_, gm.weights_, xy, (100, 100), PYR).reshape(8, -1)
    norms = np.linalg.norm(x, axis=1)
    # level 1x1, 2x2 block 0 and 3x1 block 0 hold descriptors; the other five are empty
    np.testing.assert_allclose(norms, [1, 1, 0, 0, 0, 1, 0, 0], atol=1e-6)
    whole = fisher_vector(X, gm.means_, gm.covariances_, gm.weights_)
    np.testing.assert_allclose(whole, x[0], atol=1e-6)


def test_fv_feature_set_dimension_codebook_and_encode_pool():
    rng = np.random.default_rng(2)
    sample = rng.normal(size=(3000, 16)).astype(np.float32) * np.linspace(0.1, 3, 16).astype(np.float32)
    fs = FeatureSet.from_dict({"descriptor": "hog", "coding": "fv", "codebook_size": 6, "pca_dim": 8,
                               "pyramid": [[1, 1], [2, 2], [3, 1]]}, name="fv")
    assert fs.coding_dim == 2 * 6 * 8 and fs.dim == 2 * 6 * 8 * 8
    raw = np.zeros((3000, 128), np.float32)
    raw[:, :16] = sample
    cb = Codebook.fit(raw, fs, random_state=0)
    Z = cb.project(raw)
    # whitened PCA: unit variance per component on the sample
    np.testing.assert_allclose(Z.var(axis=0), 1.0, rtol=1e-3)
    assert cb.centers.shape == cb.variances.shape == (6, 8) and cb.weights.shape == (6,)
    # the stored arrays load back into an equal codebook
    back = Codebook.from_arrays(cb.to_arrays(), fs)
    for key in ("centers", "variances", "weights", "pca_mean", "pca_components"):
        np.testing.assert_array_equal(getattr(back, key), getattr(cb, key))
    xy = rng.uniform(0, 50, (200, 2)).astype(np.float32)
    desc = Descriptors(raw[:200], xy, (50, 50))
    x = encode_pool(desc, back)
    assert x.shape == (fs.dim,) and x.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(x), 1.0, rtol=1e-5)
    ref = fisher_vector(Z[:200], cb.centers, cb.variances, cb.weights, xy, (50, 50), fs.pyramid)
    np.testing.assert_allclose(x, ref / np.linalg.norm(ref), atol=1e-6)


def test_fv_codebook_without_gmm_arrays_and_bad_inputs_are_refused():
    fs = FeatureSet("fv", "hog", "fv", 4)
    with pytest.raises(DataError, match="variances"):
        Codebook(fs, np.zeros((4, 128), np.float32))
    with pytest.raises(ConfigError, match="coding='nope'"):
        FeatureSet("x", "hog", "nope", 4)
    gm, X = _gmm()
    with pytest.raises(ConfigError, match="do not match"):
        gmm_posteriors(X[:, :3], gm.means_, gm.covariances_, gm.weights_)
