"""Dense SIFT against a direct per-patch loop with the smoothing, binning and window written out."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.ndimage import gaussian_filter1d

from lsic.pipeline import ConfigError, DescriptorGrid, FeatureSet, dense_descriptors, dense_sift


def _votes(image, magnif, cell, n_bins=8):
    """Smoothed image -> gradient (half centred differences, one-sided on the border) -> signed orientation votes."""
    img = image.astype(np.float64)
    if magnif > 0:
        sigma = cell / magnif
        img = gaussian_filter1d(gaussian_filter1d(img, sigma, axis=0, mode="nearest", truncate=4.0),
                                sigma, axis=1, mode="nearest", truncate=4.0)
    img = img.astype(np.float32).astype(np.float64)  # the descriptor smooths into a float32 image
    gr = np.empty_like(img)
    gc = np.empty_like(img)
    gr[1:-1] = 0.5 * (img[2:] - img[:-2])
    gr[0] = img[1] - img[0]
    gr[-1] = img[-1] - img[-2]
    gc[:, 1:-1] = 0.5 * (img[:, 2:] - img[:, :-2])
    gc[:, 0] = img[:, 1] - img[:, 0]
    gc[:, -1] = img[:, -1] - img[:, -2]
    mag = np.hypot(gr, gc)
    ang = np.arctan2(gr, gc) % (2 * np.pi)
    votes = np.zeros(img.shape + (n_bins,))
    H, W = img.shape
    for r in range(H):
        for c in range(W):
            pos = ang[r, c] * n_bins / (2 * np.pi)  # bin b centred at 2 pi b / n_bins
            b0 = int(np.floor(pos))
            f = pos - b0
            votes[r, c, b0 % n_bins] += mag[r, c] * (1 - f)
            votes[r, c, (b0 + 1) % n_bins] += mag[r, c] * f
    return votes


def _reference_patch(votes, x0, y0, P, window, contrast):
    """One patch: each pixel votes into every cell whose centre is closer than a cell (triangle weights)."""
    H, W, n_bins = votes.shape
    cell = P // 4
    hist = np.zeros((4, 4, n_bins))
    for i in range(4):
        cy = y0 + (i + 0.5) * cell
        for j in range(4):
            cx = x0 + (j + 0.5) * cell
            for r in range(max(0, int(cy - cell) - 1), min(H, int(cy + cell) + 2)):
                wy = max(0.0, 1 - abs(r + 0.5 - cy) / cell)
                for c in range(max(0, int(cx - cell) - 1), min(W, int(cx + cell) + 2)):
                    wx = max(0.0, 1 - abs(c + 0.5 - cx) / cell)
                    hist[i, j] += wy * wx * votes[r, c] / (cell * cell)
    mass = hist.sum() / 16
    u = np.arange(4) + 0.5 - 2.0
    win = np.exp(-0.5 * (u / window) ** 2) if window > 0 else np.ones(4)
    v = (hist * np.outer(win, win)[:, :, None]).ravel()
    if mass < contrast or not v.any():
        return np.zeros_like(v)
    v = v / np.linalg.norm(v)
    v = np.minimum(v, 0.2)
    return v / np.linalg.norm(v)


def _reference(image, grid):
    H, W = image.shape
    out = []
    for P in grid.patch_sizes:
        votes = _votes(image, grid.sift_magnif, P // 4)
        for y0 in range(0, H - P + 1, grid.step):
            for x0 in range(0, W - P + 1, grid.step):
                out.append(_reference_patch(votes, x0, y0, P, grid.sift_window, grid.sift_contrast))
    return np.array(out)


def _image(h=37, w=42, seed=0):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    img = 0.5 + 0.3 * np.sin(xx / 3.0 + yy / 5.0) + 0.1 * rng.standard_normal((h, w))
    img[10:20, 5:15] = 0.9  # an edge-bounded square
    img[:, 30:] = 0.4  # a flat region: low contrast patches there
    return np.clip(img, 0, 1).astype(np.float32)


@pytest.mark.parametrize(
    "kw",
    [
        {},  # defaults: magnif 6, window 1.5, contrast 0.003
        {"sift_magnif": 0.0, "sift_window": 0.0, "sift_contrast": 0.0},
        {"sift_magnif": 3.0, "sift_window": 2.0, "sift_contrast": 0.02},
    ],
)
def test_dense_sift_matches_direct_per_patch_loop(kw):
    img = _image()
    # 16 px patches: even cells (centres between pixels); 20 px: odd cells (centres on pixels)
    grid = DescriptorGrid(patch_sizes=(16, 20), step=3, **kw)
    d = dense_sift(img, grid)
    ref = _reference(img, grid)
    assert d.values.dtype == np.float32
    assert d.values.shape == ref.shape == (len(d.xy), 128)
    np.testing.assert_allclose(d.values, ref, atol=2e-5)


def test_contrast_threshold_zeroes_flat_patches_and_keeps_scale_invariance():
    img = _image(w=64)
    grid = DescriptorGrid(patch_sizes=(16,), step=4)
    d = dense_sift(img, grid).values
    norms = np.linalg.norm(d, axis=1)
    # rows are either zero (below the threshold) or unit vectors, with some of each
    assert np.all((norms == 0) | (np.abs(norms - 1) < 1e-5))
    assert (norms == 0).any() and (norms > 0).any()
    # a patch entirely in the flat region (x >= 30, plus the triangle's half cell and the smoothing) is zero
    x0 = dense_sift(img, grid).xy[:, 0] - 8
    assert (x0 >= 36).any() and np.all(norms[x0 >= 36] == 0)
    # halving the contrast keeps the strong patches identical (normalisation) but drops more weak ones
    half = dense_sift(0.5 * img, grid).values
    both = (np.linalg.norm(half, axis=1) > 0)
    assert both.sum() <= (norms > 0).sum()
    np.testing.assert_allclose(half[both], d[both], atol=1e-5)
    # without the threshold, a faint image is normalised to full strength: the behaviour HOG has
    no_threshold = DescriptorGrid(patch_sizes=(16,), step=4, sift_contrast=0.0)
    textured = np.linalg.norm(dense_sift(img, no_threshold).values, axis=1) > 0
    faint = dense_sift(1e-3 * img, no_threshold).values
    assert (textured & (norms == 0)).any()
    np.testing.assert_allclose(np.linalg.norm(faint[textured], axis=1), 1.0, atol=1e-5)


def test_clipping_bounds_entries_before_renormalisation():
    img = np.zeros((32, 32), np.float32)
    img[:, 16:] = 1.0  # one vertical edge: all votes in one orientation, strongly peaked
    d = dense_sift(img, DescriptorGrid(patch_sizes=(16,), step=16, sift_contrast=0.0)).values
    v = d[np.linalg.norm(d, axis=1) > 0]
    assert v.size
    # after the clip at 0.2 and renormalisation no entry dominates: the largest entries are equal
    top = np.sort(v, axis=1)[:, -2:]
    np.testing.assert_allclose(top[:, 0], top[:, 1], rtol=1e-5)


def test_sift_is_a_descriptor_kind_and_grid_options_are_validated():
    img = _image()
    grid = DescriptorGrid(patch_sizes=(16,), step=4)
    np.testing.assert_array_equal(dense_descriptors(img, "sift", grid).values, dense_sift(img, grid).values)
    fs = FeatureSet.from_dict({"descriptor": "sift", "coding": "lcc", "codebook_size": 64}, name="s")
    assert fs.code_dim == 128 and fs.dim == 64 * 10
    for key in ("sift_magnif", "sift_window", "sift_contrast"):
        with pytest.raises(ConfigError, match=f"^{key}=-1: use a non-negative number"):
            DescriptorGrid(**{key: -1})
