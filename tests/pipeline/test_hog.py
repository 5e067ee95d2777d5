"""Dense HOG against a plain per-patch reference and against scikit-image."""

from __future__ import annotations

import numpy as np
import pytest
from skimage.feature import hog as sk_hog

from lsic.pipeline import DescriptorGrid, dense_hog


def _reference_patch_hog(image, x0, y0, P, signed=False, bilinear=True, n_bins=8, eps=1e-5):
    """Straightforward HOG of one patch: gradients of the whole image, 4x4 cells, L2-Hys."""
    img = image.astype(np.float32)
    H, W = img.shape
    g_row = np.zeros_like(img)
    g_col = np.zeros_like(img)
    g_row[1:-1, :] = img[2:, :] - img[:-2, :]
    g_col[:, 1:-1] = img[:, 2:] - img[:, :-2]
    full = 360.0 if signed else 180.0
    width = full / n_bins
    cell = P // 4
    hist = np.zeros((4, 4, n_bins))
    for r in range(y0, y0 + P):
        for c in range(x0, x0 + P):
            gr, gc = float(g_row[r, c]), float(g_col[r, c])
            mag = np.hypot(gr, gc)
            if mag == 0:
                continue
            ang = np.degrees(np.arctan2(gr, gc)) % full
            cy, cx = (r - y0) // cell, (c - x0) // cell
            if bilinear:
                pos = ang / width - 0.5  # bin b is centred at (b + 1/2) * width
                b0 = int(np.floor(pos))
                f = pos - b0
                hist[cy, cx, b0 % n_bins] += mag * (1 - f)
                hist[cy, cx, (b0 + 1) % n_bins] += mag * f
            else:
                hist[cy, cx, int(ang // width)] += mag
    v = hist.ravel() / (cell * cell)
    v = v / np.sqrt(np.sum(v**2) + eps**2)
    v = np.minimum(v, 0.2)
    return v / np.sqrt(np.sum(v**2) + eps**2)


@pytest.mark.parametrize("signed", [False, True])
def test_dense_hog_equals_direct_per_patch_reference(signed):
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:52, 0:61]
    img = (0.5 + 0.3 * np.sin(x / 5.0) * np.cos(y / 7.0) + 0.1 * rng.random((52, 61))).astype(np.float32)
    grid = DescriptorGrid(patch_sizes=(16, 24, 32), step=8, hog_signed=signed)
    d = dense_hog(img, grid)
    assert d.values.dtype == np.float32 and d.values.shape[1] == 128
    assert d.xy.dtype == np.float32 and d.image_shape == (52, 61)
    k = 0
    for P in (16, 24, 32):
        for y0 in range(0, 52 - P + 1, 8):
            for x0 in range(0, 61 - P + 1, 8):
                ref = _reference_patch_hog(img, x0, y0, P, signed=signed)
                np.testing.assert_allclose(d.values[k], ref, atol=2e-6, rtol=1e-5)
                np.testing.assert_array_equal(d.xy[k], [x0 + P / 2, y0 + P / 2])
                k += 1
    assert k == d.values.shape[0]


def test_odd_step_uses_full_resolution_integral():
    rng = np.random.default_rng(1)
    img = rng.random((37, 41)).astype(np.float32)
    d = dense_hog(img, DescriptorGrid(patch_sizes=(12,), step=5))
    ref = _reference_patch_hog(img, 10, 20, 12)
    k = [tuple(v) for v in d.xy].index((16.0, 26.0))
    np.testing.assert_allclose(d.values[k], ref, atol=2e-6)


def test_hard_voting_matches_skimage_hog_on_a_patch():
    # scikit-image computes gradients inside the patch only and sets them to
    # zero on the patch's border rows/columns, while dense_hog takes them from
    # the whole image. The two coincide when the patch's two outer pixel rings
    # and the pixels just outside it are constant: then our border gradients
    # are zero too and every interior difference uses the same pixels.
    # scikit-image votes each pixel wholly into one bin ("hard"), so we compare
    # dense_hog(voting="hard"); its bins are the same [b, b+1) * 22.5 degrees.
    rng = np.random.default_rng(2)
    for P in (16, 24, 32):
        patch = np.full((P, P), 0.5, np.float32)
        patch[2:-2, 2:-2] = rng.random((P - 4, P - 4))
        big = np.pad(patch, 8, constant_values=0.5)
        d = dense_hog(big, DescriptorGrid(patch_sizes=(P,), step=8), voting="hard")
        k = [tuple(v) for v in d.xy].index((8 + P / 2, 8 + P / 2))
        ref = sk_hog(patch, orientations=8, pixels_per_cell=(P // 4, P // 4), cells_per_block=(4, 4),
                     block_norm="L2-Hys", feature_vector=True)
        np.testing.assert_allclose(d.values[k], ref, atol=1e-6)


def test_constant_image_gives_zero_descriptors_and_small_image_none():
    d = dense_hog(np.full((40, 40), 0.3, np.float32))
    assert np.all(d.values == 0)
    e = dense_hog(np.zeros((10, 12), np.float32))
    assert e.values.shape == (0, 128) and e.xy.shape == (0, 2)


def test_descriptors_are_unit_norm_and_clipped():
    rng = np.random.default_rng(3)
    d = dense_hog(rng.random((64, 64)).astype(np.float32))
    np.testing.assert_allclose(np.linalg.norm(d.values, axis=1), 1.0, atol=1e-4)
    assert d.values.min() >= 0
