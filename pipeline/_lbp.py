"""Dense uniform LBP histograms at several patch sizes from one pass (paper §3).

References
----------
T. Ojala, M. Pietikainen and T. Maenpaa, "Multiresolution gray-scale and
rotation invariant texture classification with local binary patterns", PAMI
2002. Lin et al., CVPR 2011, §3.
"""

from __future__ import annotations

import numpy as np

from . import _descriptor_kernels as _k
from ._grid import DescriptorGrid, Descriptors, grid_descriptors, lattice
from ._hog import _as_image

__all__ = ["dense_lbp", "lbp_codes", "LBP_CODES"]

LBP_P = 8
LBP_R = 1.0
LBP_CODES = LBP_P * (LBP_P - 1) + 3  # 59


def _offsets(P: int = LBP_P, R: float = LBP_R) -> tuple[np.ndarray, np.ndarray]:
    ang = 2 * np.pi * np.arange(P, dtype=np.float64) / P
    return np.round(-R * np.sin(ang), 5), np.round(R * np.cos(ang), 5)


def uniform_table(P: int = LBP_P) -> np.ndarray:
    """(2^P,) uint8: the non-rotation-invariant uniform code of each P-bit pattern (bit i: neighbour i).

    0 for no ones, ``1 + (n_ones - 1) P + rot`` for the P (P - 1) patterns
    with one run of 1..P-1 ones (``rot`` places the run, as scikit-image's
    ``nri_uniform`` numbers them), ``P (P - 1) + 1`` for all ones and
    ``P (P - 1) + 2`` for every pattern with more than two 0/1 changes.
    """
    table = np.empty(1 << P, dtype=np.uint8)
    for pattern in range(1 << P):
        bits = [(pattern >> i) & 1 for i in range(P)]
        n_ones = sum(bits)
        if sum(bits[i] != bits[i + 1] for i in range(P - 1)) > 2:
            table[pattern] = P * (P - 1) + 2
        elif n_ones == 0:
            table[pattern] = 0
        elif n_ones == P:
            table[pattern] = P * (P - 1) + 1
        else:
            rot = n_ones - bits.index(0) if bits[0] else P - bits.index(1)
            table[pattern] = 1 + (n_ones - 1) * P + rot
    return table


_UNIFORM = uniform_table()


def lbp_codes(image: np.ndarray) -> np.ndarray:
    """Per-pixel uniform LBP codes, P = 8 neighbours at radius R = 1.

    Parameters
    ----------
    image : ndarray (H, W)
        Grayscale image.

    Returns
    -------
    codes : ndarray (H, W) uint8
        The 59 non-rotation-invariant uniform codes (58 uniform patterns and
        one code for all non-uniform ones), equal to
        ``skimage.feature.local_binary_pattern(image, 8, 1, method='nri_uniform')``.
        Neighbours are sampled bilinearly, zero outside the image.
    """
    img = _as_image(image)
    rp, cp = _offsets()
    out = np.empty(img.shape, dtype=np.uint8)
    _k.lbp_codes(img, rp, cp, _UNIFORM, out)
    return out


def dense_lbp(image: np.ndarray, grid: DescriptorGrid = DescriptorGrid()) -> Descriptors:
    """Dense uniform-LBP histograms: 59 x ``grid.lbp_cells ** 2`` dims per patch.

    Parameters
    ----------
    image : ndarray (H, W) float32
    grid : DescriptorGrid

    Returns
    -------
    Descriptors
        ``values`` (n, 59 c^2) float32 (c = ``grid.lbp_cells``), L2-normalised
        per patch; ``xy`` (n, 2) patch centres, same order as :func:`dense_hog`.

    Notes
    -----
    "Uniform" here means the 59-code non-rotation-invariant uniform LBP
    (``method='nri_uniform'`` in scikit-image); scikit-image's
    ``method='uniform'`` is its rotation-invariant 10-code collapse, which
    :func:`lbp_codes` maps onto by counting ones. Codes of the whole image are
    computed once and counted into an integral histogram sampled every
    gcd(step, cell sizes) pixels, so each (sub-)cell histogram costs four
    look-ups per code whatever the patch size.
    """
    img = _as_image(image)
    h, w = img.shape
    codes = np.empty(img.shape, dtype=np.uint8)
    rp, cp = _offsets()
    _k.lbp_codes(img, rp, cp, _UNIFORM, codes)
    c = grid.lbp_cells
    g = lattice(grid.step, [p // c for p in grid.patch_sizes] + list(grid.patch_sizes))
    integral = np.zeros((h // g + 1, w // g + 1, LBP_CODES), dtype=np.int32)
    _k.lbp_integral(codes, g, integral)
    d = LBP_CODES * c * c
    return grid_descriptors(integral, g, (h, w), grid, c, d, 0.0, np.inf)
