"""Dense SIFT descriptors at several patch sizes (the ``vl_dsift`` / ``vl_phow`` design).

References
----------
D. G. Lowe, "Distinctive image features from scale-invariant keypoints",
IJCV 2004. A. Vedaldi and B. Fulkerson, "VLFeat: an open and portable library
of computer vision algorithms", 2008 (``vl_dsift``, ``vl_phow``). K. Chatfield
et al., "The devil is in the details: an evaluation of recent feature encoding
methods", BMVC 2011 (dense SIFT settings of the Caltech-101 results).
"""

from __future__ import annotations


import numpy as np

from . import _sift_kernels as _k
from ._grid import DescriptorGrid, Descriptors, patch_centres, patch_origins
from ._hog import _as_image

__all__ = ["dense_sift", "SIFT_CELLS", "SIFT_BINS", "SIFT_DIM", "gaussian_taps", "sift_window"]

SIFT_CELLS = 4
SIFT_BINS = 8
SIFT_DIM = SIFT_CELLS * SIFT_CELLS * SIFT_BINS  # 128
_CLIP = 0.2  # Lowe 2004


def gaussian_taps(sigma: float, truncate: float = 4.0) -> np.ndarray:
    """Normalised 1-D Gaussian (2 r + 1,) float64, r = int(truncate sigma + 0.5) (scipy.ndimage's radius)."""
    r = int(truncate * sigma + 0.5)
    x = np.arange(-r, r + 1, dtype=np.float64)
    taps = np.exp(-0.5 * (x / sigma) ** 2)
    return taps / taps.sum()


def sift_window(n_cells: int, window: float) -> np.ndarray:
    """Gaussian weight (n_cells, n_cells) float64 of each cell, at its centre, sigma = ``window`` cells."""
    if window <= 0:
        return np.ones((n_cells, n_cells))
    u = np.arange(n_cells) + 0.5 - n_cells / 2.0
    g = np.exp(-0.5 * (u / window) ** 2)
    return np.outer(g, g)


def dense_sift(image: np.ndarray, grid: DescriptorGrid = DescriptorGrid()) -> Descriptors:
    """Dense SIFT: 4 x 4 cells x 8 signed orientations = 128 dims per patch.

    For each patch size P (cell c = P / 4): the image is smoothed with a
    Gaussian of sigma ``c / grid.sift_magnif``; each pixel's gradient
    magnitude is split linearly between its two nearest of 8 orientations
    over 360 degrees; each orientation plane is filtered with a separable
    triangle of half-width c (bilinear binning: a pixel votes into the cells
    whose centres lie within c of it, weight ``(1 - |dx|/c)(1 - |dy|/c)``);
    each cell's value, read at its centre, is weighted by a Gaussian window of
    sigma ``grid.sift_window`` cells centred on the patch. A patch whose mean
    per-cell gradient mass is below ``grid.sift_contrast`` becomes all zeros;
    the others are L2 normalised, clipped at 0.2 and L2 normalised again.

    Parameters
    ----------
    image : ndarray (H, W) float32
        Grayscale image in [0, 1], e.g. from :func:`load_image`.
    grid : DescriptorGrid
        Patch sizes and step (shared with HOG and LBP), ``sift_magnif``,
        ``sift_window``, ``sift_contrast``.

    Returns
    -------
    Descriptors
        ``values`` (n, 128) float32, row-major over (cell_y, cell_x, bin);
        ``xy`` (n, 2) patch centres, in the same order as :func:`dense_hog`.

    Notes
    -----
    Departures from VLFeat (``vl_phow``: magnif 6, window 1.5, contrast
    threshold 0.005, fast mode):

    - The contrast is the mean over the 16 cells of the triangle-weighted
      per-pixel gradient mass, before the window; VLFeat divides the sum by
      ``((3 c + 1) / c)^2`` (about 9.6 for c = 8) instead of 16, so
      ``sift_contrast = 0.003`` here is about VLFeat's 0.005.
    - Pixels outside the image vote nothing (VLFeat pads by continuity); the
      Gaussian smoothing does repeat the edge pixels.
    - As VLFeat's fast mode, the Gaussian window is applied per cell at the
      cell centre (a flat window inside each cell), which keeps the
      per-pixel work independent of the number of patches.
    - Each patch size is one pass (smoothing differs per scale), unlike
      :func:`dense_hog`'s single integral histogram for all sizes; every pass
      costs O(H W c) whatever the number of patches.
    """
    img = _as_image(image)
    h, w = img.shape
    window = sift_window(SIFT_CELLS, float(grid.sift_window))
    blocks = []
    for p in grid.patch_sizes:
        ys = patch_origins(h, p, grid.step)
        xs = patch_origins(w, p, grid.step)
        out = np.empty((ys.size * xs.size, SIFT_DIM), dtype=np.float32)
        if out.shape[0]:
            cell = p // SIFT_CELLS
            binned = _binned_votes(img, cell, float(grid.sift_magnif))
            _k.sift_patches(binned, cell, ys, xs, SIFT_CELLS, window, float(grid.sift_contrast), _CLIP, out)
        blocks.append(out)
    values = np.concatenate(blocks) if blocks else np.zeros((0, SIFT_DIM), np.float32)
    return Descriptors(values, patch_centres((h, w), grid), (h, w))


def _binned_votes(img: np.ndarray, cell: int, magnif: float) -> np.ndarray:
    """Orientation planes of the smoothed image, triangle-filtered on the cell-centre lattice."""
    h, w = img.shape
    if magnif > 0:
        taps = gaussian_taps(cell / magnif)
        tmp = np.empty_like(img)
        smooth = np.empty_like(img)
        _k.smooth_axis(img, taps, 0, tmp)
        _k.smooth_axis(tmp, taps, 1, smooth)
    else:
        smooth = img
    votes = np.zeros((h, w, SIFT_BINS), dtype=np.float32)
    _k.orientation_votes(smooth, SIFT_BINS, votes)
    extra = 1 if cell % 2 == 0 else 0
    rows = np.empty((h + extra, w, SIFT_BINS), dtype=np.float32)
    _k.triangle_axis(votes, cell, 0, rows)
    binned = np.empty((h + extra, w + extra, SIFT_BINS), dtype=np.float32)
    _k.triangle_axis(rows, cell, 1, binned)
    return binned


