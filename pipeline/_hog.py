"""Dense HOG descriptors at several patch sizes from one pass (paper §3).

References
----------
N. Dalal and B. Triggs, "Histograms of oriented gradients for human
detection", CVPR 2005. Lin et al., "Large-scale image classification: fast
feature extraction and SVM training", CVPR 2011, §3.
"""

from __future__ import annotations

import numpy as np

from . import _descriptor_kernels as _k
from .errors import ConfigError
from ._grid import DescriptorGrid, Descriptors, grid_descriptors, lattice

__all__ = ["dense_hog", "HOG_CELLS", "HOG_BINS", "HOG_DIM"]

HOG_CELLS = 4
HOG_BINS = 8
HOG_DIM = HOG_CELLS * HOG_CELLS * HOG_BINS  # 128
_EPS = 1e-5  # as skimage.feature.hog
_CLIP = 0.2  # L2-Hys clipping (Dalal & Triggs)


def dense_hog(
    image: np.ndarray, grid: DescriptorGrid = DescriptorGrid(), *, voting: str = "bilinear"
) -> Descriptors:
    """Dense HOG: 4 x 4 cells x 8 orientation bins = 128 dims per patch.

    Parameters
    ----------
    image : ndarray (H, W) float32
        Grayscale image, e.g. from :func:`load_image`.
    grid : DescriptorGrid
        Patch sizes, step and orientation range (``grid.hog_signed``).
    voting : {"bilinear", "hard"}
        "bilinear" (default) splits each gradient's magnitude between the two
        nearest orientation bin centres; "hard" puts it all in its bin, as
        ``skimage.feature.hog`` does (used to compare against scikit-image).

    Returns
    -------
    Descriptors
        ``values`` (n, 128) float32, ``xy`` (n, 2) patch centres.

    Notes
    -----
    - Gradients are taken once over the whole image (centred differences,
      zero on the image border), so a pixel on a patch edge uses its
      neighbour outside the patch; scikit-image, called on a cropped patch,
      sets the gradient of the patch's border pixels to zero instead.
    - Unsigned orientations (0-180 degrees) by default, as Dalal & Triggs and
      scikit-image; bins are centred at (b + 1/2) 22.5 degrees.
    - One block per patch: the 16 cell histograms (each the mean vote per
      pixel) are L2-Hys normalised together (eps = 1e-5, clip 0.2).
    - Each cell histogram costs 4 look-ups per bin in an integral histogram
      sampled every gcd(step, cell sizes) pixels, for all patch sizes at once.
      No Gaussian block weighting, no spatial (trilinear) interpolation.
    """
    if voting not in ("bilinear", "hard"):
        raise ConfigError(f"voting={voting!r}: use 'bilinear' or 'hard'")
    img = _as_image(image)
    h, w = img.shape
    cells = [p // HOG_CELLS for p in grid.patch_sizes]
    g = lattice(grid.step, cells + list(grid.patch_sizes))
    integral = np.zeros((h // g + 1, w // g + 1, HOG_BINS), dtype=np.float64)
    _k.hog_integral(img, HOG_BINS, grid.hog_signed, voting == "bilinear", g, integral)
    return grid_descriptors(integral, g, (h, w), grid, HOG_CELLS, HOG_DIM, _EPS, _CLIP)


def _as_image(image: np.ndarray) -> np.ndarray:
    img = np.asarray(image)
    if img.ndim != 2:
        raise ConfigError(f"image of shape {img.shape}: expected a 2-D grayscale array (H, W)")
    return np.ascontiguousarray(img, dtype=np.float32)
