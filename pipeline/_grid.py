"""The dense sampling grid shared by all descriptors (paper §3).

Patches of each size ``P`` in ``patch_sizes`` have their top-left corners at
``(x0, y0) = (i * step, j * step)`` for every position where the patch lies
inside the image; a patch's centre is ``(x0 + P / 2, y0 + P / 2)`` in pixel
units (pixel ``c`` spans ``[c, c + 1)``). Descriptors are ordered by patch
size (as given), then row-major over the grid.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from .errors import ConfigError

__all__ = ["DescriptorGrid", "Descriptors", "patch_origins"]


@dataclass(frozen=True)
class DescriptorGrid:
    """Where and how dense descriptors are sampled.

    Parameters
    ----------
    patch_sizes : tuple of int, default (16, 24, 32)
        Patch side lengths in pixels (paper §3); each must be a multiple of 4
        (HOG uses 4 x 4 cells per patch).
    step : int, default 8
        Grid spacing in pixels, shared by all patch sizes.
    max_side : int, default 500
        Images are shrunk so that their longer side is at most this (paper §3).
    max_pixels : int, default 100_000_000
        Decompression-bomb guard, see :func:`load_image`.
    lbp_cells : int, default 1
        LBP histograms per patch side: 1 gives one 59-bin histogram per patch,
        2 gives 2 x 2 sub-cell histograms (236 dims).
    hog_signed : bool, default False
        HOG orientation range: unsigned (0-180 degrees, the default, as Dalal
        and Triggs) or signed (0-360 degrees).
    sift_magnif : float, default 6.0
        Dense SIFT smoothing: each patch size's image is smoothed with a
        Gaussian of sigma = cell size / ``sift_magnif`` (``vl_phow``'s 6);
        0 turns smoothing off.
    sift_window : float, default 1.5
        Sigma of the Gaussian window over a SIFT patch, in cells (``vl_phow``'s
        1.5); 0 gives a flat window.
    sift_contrast : float, default 0.003
        SIFT patches whose mean per-cell gradient mass (image in [0, 1]) is
        below this become zero vectors instead of being normalised to full
        strength (about ``vl_phow``'s 0.005, see :func:`dense_sift`); 0 keeps all.
    """

    patch_sizes: tuple[int, ...] = (16, 24, 32)
    step: int = 8
    max_side: int = 500
    max_pixels: int = 100_000_000
    lbp_cells: int = 1
    hog_signed: bool = False
    sift_magnif: float = 6.0
    sift_window: float = 1.5
    sift_contrast: float = 0.003

    def __post_init__(self) -> None:
        sizes = tuple(int(p) for p in self.patch_sizes)
        object.__setattr__(self, "patch_sizes", sizes)
        if not sizes:
            raise ConfigError("patch_sizes is empty: give at least one patch size, e.g. [16, 24, 32]")
        for p in sizes:
            if p < 4 or p % 4:
                raise ConfigError(f"patch_sizes contains {p}: patch sizes must be positive multiples of 4")
        if int(self.step) < 1:
            raise ConfigError(f"step={self.step}: use a positive number of pixels")
        if int(self.max_side) < 1:
            raise ConfigError(f"max_side={self.max_side}: use a positive number of pixels")
        if int(self.max_pixels) < 1:
            raise ConfigError(f"max_pixels={self.max_pixels}: use a positive number of pixels")
        if int(self.lbp_cells) not in (1, 2):
            raise ConfigError(f"lbp_cells={self.lbp_cells}: use 1 (one histogram) or 2 (2 x 2 sub-cells)")
        object.__setattr__(self, "step", int(self.step))
        object.__setattr__(self, "lbp_cells", int(self.lbp_cells))
        object.__setattr__(self, "hog_signed", bool(self.hog_signed))
        for key, fix in (("sift_magnif", "e.g. 6 (sigma = cell / 6), or 0 for no smoothing"),
                         ("sift_window", "e.g. 1.5 cells, or 0 for a flat window"),
                         ("sift_contrast", "e.g. 0.003, or 0 to keep every patch")):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
                raise ConfigError(f"{key}={value!r}: use a non-negative number, {fix}")
            object.__setattr__(self, key, float(value))


class Descriptors(NamedTuple):
    """Dense descriptors of one image.

    Attributes
    ----------
    values : ndarray (n, d) float32
        One descriptor per patch.
    xy : ndarray (n, 2) float32
        Patch centres (x, y) in pixels of the (shrunk) image.
    image_shape : tuple (H, W)
        Shape of the image the patches were taken from (for pyramid pooling).
    """

    values: np.ndarray
    xy: np.ndarray
    image_shape: tuple[int, int]


def patch_origins(length: int, patch: int, step: int) -> np.ndarray:
    """Top-left coordinates (int64) of the patches of size ``patch`` along one axis."""
    if length < patch:
        return np.zeros(0, dtype=np.int64)
    return np.arange(0, length - patch + 1, step, dtype=np.int64)


def lattice(step: int, sizes: list[int]) -> int:
    """Largest spacing ``g`` such that every cell boundary lies on multiples of ``g``."""
    g = step
    for s in sizes:
        g = math.gcd(g, s)
    return g


def patch_centres(shape: tuple[int, int], grid: DescriptorGrid) -> np.ndarray:
    """Patch centres (n, 2) float32 (x, y) in the descriptor order of the grid."""
    h, w = shape
    out = []
    for p in grid.patch_sizes:
        ys = patch_origins(h, p, grid.step)
        xs = patch_origins(w, p, grid.step)
        yy, xx = np.meshgrid(ys, xs, indexing="ij")
        out.append(np.stack([xx.ravel() + p / 2.0, yy.ravel() + p / 2.0], axis=1))
    if not out:
        return np.zeros((0, 2), np.float32)
    return np.concatenate(out).astype(np.float32)


def grid_descriptors(integral: np.ndarray, g: int, shape: tuple[int, int], grid: DescriptorGrid,
                     n_cells: int, dim: int, eps: float, clip: float) -> Descriptors:
    """Descriptors of every patch size of ``grid`` from one integral histogram.

    The shared tail of dense HOG and LBP: per patch size, the normalised cell
    histograms of all its patches (:func:`._descriptor_kernels.patch_histograms`),
    concatenated in grid order with their centres.
    """
    from ._descriptor_kernels import patch_histograms

    h, w = shape
    blocks = []
    for p in grid.patch_sizes:
        ys = patch_origins(h, p, grid.step)
        xs = patch_origins(w, p, grid.step)
        out = np.empty((ys.size * xs.size, dim), dtype=np.float32)
        if out.shape[0]:
            patch_histograms(integral, g, p, ys, xs, n_cells, eps, clip, out)
        blocks.append(out)
    values = np.concatenate(blocks) if blocks else np.zeros((0, dim), np.float32)
    return Descriptors(values, patch_centres((h, w), grid), (h, w))

