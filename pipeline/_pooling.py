"""Spatial pyramid pooling of LCC codes and SVC pooling (paper §3, §3.2 eq. 2).

References
----------
S. Lazebnik, C. Schmid and J. Ponce, "Beyond bags of features: spatial
pyramid matching", CVPR 2006. X. Zhou et al., ECCV 2010. Lin et al., CVPR
2011, §3 and Table 1.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from . import _coding_kernels as _k
from ._coding import SparseCodes
from .errors import ConfigError

__all__ = [
    "Pyramid",
    "n_pyramid_blocks",
    "pyramid_blocks",
    "pyramid_pool",
    "svc_pool",
    "normalize_feature",
]

Pyramid = Sequence[Sequence[int]]


def _grids(pyramid: Pyramid) -> list[tuple[int, int]]:
    out = []
    for g in pyramid:
        try:
            rows, cols = (int(v) for v in g)
        except (TypeError, ValueError):
            raise ConfigError(f"pyramid level {g!r}: use [rows, cols], e.g. [[1, 1], [3, 3]]") from None
        if rows < 1 or cols < 1:
            raise ConfigError(f"pyramid level {g!r}: rows and cols must be positive")
        out.append((rows, cols))
    if not out:
        raise ConfigError("pyramid is empty: give at least one level, e.g. [[1, 1]]")
    return out


def n_pyramid_blocks(pyramid: Pyramid) -> int:
    """Total number of blocks, e.g. 10 for ``[[1, 1], [3, 3]]``."""
    return sum(r * c for r, c in _grids(pyramid))


def blocks_or_whole(n: int, xy: np.ndarray | None, image_shape: tuple[int, int] | None, pyramid: Pyramid,
                    caller: str) -> tuple[Pyramid, np.ndarray]:
    """``(pyramid, blocks)`` of ``n`` descriptors: :func:`pyramid_blocks`, or one whole-image block without ``xy``.

    The sum-pooled codings (SVC eq. 2, Fisher vectors) accept descriptors
    without positions, pooled over the whole image.
    """
    if xy is None:
        return ((1, 1),), np.zeros((n, 1), dtype=np.int32)
    if image_shape is None:
        raise ConfigError(f"{caller} got xy without image_shape: pass both or neither")
    return pyramid, pyramid_blocks(xy, image_shape, pyramid)


def pyramid_blocks(xy: np.ndarray, image_shape: tuple[int, int], pyramid: Pyramid) -> np.ndarray:
    """Global block index of every descriptor at every pyramid level.

    Parameters
    ----------
    xy : ndarray (n, 2)
        Patch centres (x, y) in pixels.
    image_shape : (H, W)
    pyramid : sequence of (rows, cols)
        Each level splits the image into ``rows`` horizontal bands times
        ``cols`` vertical bands ("3x1" = [3, 1] = three stacked bands).

    Returns
    -------
    blocks : ndarray (n, n_levels) int32
        Level l's block ``(row, col)`` has id ``offset_l + row * cols + col``,
        offsets in level order; a centre on a boundary goes to the lower block.
    """
    grids = _grids(pyramid)
    h, w = image_shape
    xy = np.asarray(xy, dtype=np.float64).reshape(-1, 2)
    out = np.empty((xy.shape[0], len(grids)), dtype=np.int32)
    off = 0
    for level, (rows, cols) in enumerate(grids):
        c = np.clip(np.floor(xy[:, 0] * cols / max(w, 1)), 0, cols - 1).astype(np.int32)
        r = np.clip(np.floor(xy[:, 1] * rows / max(h, 1)), 0, rows - 1).astype(np.int32)
        out[:, level] = off + r * cols + c
        off += rows * cols
    return out


def pyramid_pool(
    codes: SparseCodes,
    xy: np.ndarray,
    image_shape: tuple[int, int],
    pyramid: Pyramid = ((1, 1), (3, 3)),
    *,
    pooling: str = "max",
) -> np.ndarray:
    """Spatial pyramid max / average pooling of sparse (LCC or VQ) codes.

    Parameters
    ----------
    codes : SparseCodes
        n codes over p codewords (from :func:`lcc_encode`).
    xy, image_shape, pyramid
        See :func:`pyramid_blocks`.
    pooling : {"max", "avg"}
        Per block and codeword, the max (or mean) over the block's
        descriptors of the dense code entry (implicit zeros included).

    Returns
    -------
    x : ndarray (n_blocks * p,) float32
        Blocks concatenated in level order, unnormalised (see
        :func:`normalize_feature`). Empty blocks pool to zeros.
    """
    if pooling not in ("max", "avg"):
        raise ConfigError(f"pooling={pooling!r}: use 'max' or 'avg'")
    blocks = pyramid_blocks(xy, image_shape, pyramid)
    nb_ = n_pyramid_blocks(pyramid)
    p = int(codes.n_codewords)
    out = np.empty((nb_, p), dtype=np.float32)
    idx = np.ascontiguousarray(codes.indices, dtype=np.int32)
    w = np.ascontiguousarray(codes.weights, dtype=np.float32)
    if idx.shape[0] == 0:
        return np.zeros(nb_ * p, dtype=np.float32)
    counts = _k.pool_sparse(idx, w, blocks, nb_, pooling == "max", out)
    if pooling == "avg":
        out /= np.maximum(counts, 1).astype(np.float32)[:, None]
    else:
        out[counts == 0] = 0.0
    return out.ravel()


def svc_pool(
    Z: np.ndarray,
    nearest: np.ndarray,
    centers: np.ndarray,
    s: float,
    xy: np.ndarray | None = None,
    image_shape: tuple[int, int] | None = None,
    pyramid: Pyramid = ((1, 1),),
) -> np.ndarray:
    """Super-vector coding pooled per pyramid block (paper §3.2, eq. 2).

    Each descriptor's code is zero except in block k (its nearest codeword),
    which holds ``[s, z - b_k]``; per pyramid block with n descriptors, n_k of
    them in bin k, the pooled vector is ``(1/n) sum_i beta_i / sqrt(n_k / n)``,
    i.e. block k is ``[n_k s, sum_{i in k} (z_i - b_k)] / sqrt(n n_k)``.

    Parameters
    ----------
    Z : ndarray (n, d) float32
    nearest : ndarray (n,) or (n, 1) int
        Nearest codeword of each descriptor.
    centers : ndarray (p, d) float32
    s : float
        The constant of eq. 2.
    xy, image_shape, pyramid
        See :func:`pyramid_blocks`; without ``xy`` all descriptors form one block.

    Returns
    -------
    x : ndarray (n_blocks * p * (d + 1),) float32
        Per block, per codeword, ``[s part, d residual sums]``; unnormalised.
    """
    Z = np.ascontiguousarray(Z, dtype=np.float32)
    B = np.ascontiguousarray(centers, dtype=np.float32)
    near = np.ascontiguousarray(np.asarray(nearest).reshape(-1), dtype=np.int32)
    n, d = Z.shape
    p = B.shape[0]
    pyramid, blocks = blocks_or_whole(n, xy, image_shape, pyramid, "svc_pool")
    nb_ = n_pyramid_blocks(pyramid)
    sums = np.zeros((nb_, p, d), dtype=np.float64)
    counts = np.zeros((nb_, p), dtype=np.int64)
    if n:
        _k.svc_accumulate(Z, near, blocks, nb_, sums, counts)
    out = np.empty((nb_, p, d + 1), dtype=np.float32)
    _k.svc_finish(sums, counts, B, float(s), out)
    return out.ravel()


def normalize_feature(x: np.ndarray, *, power_norm: bool | float = False) -> np.ndarray:
    """Optional power normalisation ``sign(x) |x|^alpha`` (alpha 0.5 for True), then L2.

    Returns a float32 copy; an all-zero vector stays zero.
    """
    x = np.asarray(x, dtype=np.float32).copy()
    if power_norm:
        alpha = 0.5 if power_norm is True else float(power_norm)
        x = np.sign(x) * np.abs(x) ** np.float32(alpha)
    nrm = float(np.sqrt(np.dot(x.astype(np.float64), x.astype(np.float64))))
    if nrm > 0:
        x /= np.float32(nrm)
    return x.astype(np.float32, copy=False)
