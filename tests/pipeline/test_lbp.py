"""Uniform LBP codes against scikit-image, dense LBP histograms against a direct count."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from skimage.feature import local_binary_pattern

from lsic.pipeline import DescriptorGrid, dense_descriptors, dense_hog, dense_lbp, lbp_codes


def _sk(img, method):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # scikit-image warns about float images
        return local_binary_pattern(img, P=8, R=1, method=method)


def _images():
    rng = np.random.default_rng(0)
    yield rng.random((33, 47)).astype(np.float32)
    # many ties: integer grey levels
    yield (rng.integers(0, 4, (40, 31)) / 255.0).astype(np.float32)
    yield np.zeros((9, 9), np.float32)
    # every pixel on the border (the general path), and one image tall and wide enough that the
    # diagonal samples' fractions round differently from row to row (the inner path's arithmetic)
    yield rng.random((2, 7)).astype(np.float32)
    yield rng.random((1, 5)).astype(np.float32)
    yield rng.random((700, 9)).astype(np.float32)
    yield rng.random((6, 1100)).astype(np.float32)


@pytest.mark.parametrize("img", list(_images()))
def test_codes_equal_skimage_nri_uniform(img):
    codes = lbp_codes(img)
    assert codes.dtype == np.uint8 and codes.max() <= 58
    np.testing.assert_array_equal(codes, _sk(img, "nri_uniform"))


@pytest.mark.parametrize("img", list(_images()))
def test_codes_collapse_to_skimage_uniform(img):
    # skimage's method='uniform' is the rotation-invariant version of the same
    # uniform patterns: the number of ones, P + 1 for non-uniform ones.
    codes = lbp_codes(img).astype(np.int64)
    P = 8
    ri = np.where(codes == 0, 0,
                  np.where(codes == P * (P - 1) + 1, P,
                           np.where(codes == P * (P - 1) + 2, P + 1, (codes - 1) // P + 1)))
    np.testing.assert_array_equal(ri, _sk(img, "uniform"))


@pytest.mark.parametrize("cells", [1, 2])
def test_dense_lbp_histograms_equal_direct_counts(cells):
    rng = np.random.default_rng(1)
    img = rng.random((50, 43)).astype(np.float32)
    grid = DescriptorGrid(patch_sizes=(16, 24), step=8, lbp_cells=cells)
    d = dense_lbp(img, grid)
    codes = _sk(img, "nri_uniform").astype(int)
    assert d.values.shape[1] == 59 * cells * cells
    k = 0
    for P in (16, 24):
        c = P // cells
        for y0 in range(0, 50 - P + 1, 8):
            for x0 in range(0, 43 - P + 1, 8):
                parts = []
                for cy in range(cells):
                    for cx in range(cells):
                        block = codes[y0 + cy * c: y0 + (cy + 1) * c, x0 + cx * c: x0 + (cx + 1) * c]
                        parts.append(np.bincount(block.ravel(), minlength=59) / (c * c))
                ref = np.concatenate(parts)
                ref = ref / np.linalg.norm(ref)
                np.testing.assert_allclose(d.values[k], ref, atol=1e-6)
                k += 1
    assert k == d.values.shape[0]


def test_hog_plus_lbp_concatenates_per_patch():
    rng = np.random.default_rng(2)
    img = rng.random((40, 48)).astype(np.float32)
    grid = DescriptorGrid()
    both = dense_descriptors(img, "hog+lbp", grid)
    h, lb = dense_hog(img, grid), dense_lbp(img, grid)
    assert both.values.shape == (h.values.shape[0], 128 + 59)
    np.testing.assert_array_equal(both.values, np.concatenate([h.values, lb.values], axis=1))
    np.testing.assert_array_equal(both.xy, h.xy)
    np.testing.assert_array_equal(lb.xy, h.xy)
