"""Coding of descriptors against a codebook: LCC (paper §3.1, eq. 1), VQ, SVC's assignment (§3.2).

References
----------
K. Yu, T. Zhang and Y. Gong, "Nonlinear learning using local coordinate
coding", NIPS 2009. J. Wang et al., "Locality-constrained linear coding for
image classification", CVPR 2010 (the trace-scaled ridge). X. Zhou et al.,
"Image classification using super-vector coding of local image descriptors",
ECCV 2010. Lin et al., CVPR 2011, eqs. 1-2.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from . import _coding_kernels as _k
from .errors import ConfigError
from ._knn import TILE_ROWS, IVFIndex, knn_exact, knn_ivf

__all__ = ["SparseCodes", "nearest_codewords", "lcc_encode", "DEFAULT_RIDGE"]

DEFAULT_RIDGE = 1e-4  # times trace(C), as in LLC (Wang et al. 2010)


class SparseCodes(NamedTuple):
    """Sparse codes of n descriptors over p codewords.

    Attributes
    ----------
    indices : ndarray (n, kappa) int32
        Codeword indices, nearest first.
    weights : ndarray (n, kappa) float32
        Code values at those indices (each row sums to 1 for LCC).
    n_codewords : int
        p, the length of the dense code.
    """

    indices: np.ndarray
    weights: np.ndarray
    n_codewords: int

    def toarray(self) -> np.ndarray:
        """Dense codes (n, p) float32 (for tests and small inputs)."""
        n = self.indices.shape[0]
        out = np.zeros((n, self.n_codewords), dtype=np.float32)
        np.put_along_axis(out, self.indices.astype(np.int64), self.weights, axis=1)
        return out


def _check(Z: np.ndarray, centers: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    Z = np.ascontiguousarray(Z, dtype=np.float32)
    B = np.ascontiguousarray(centers, dtype=np.float32)
    if Z.ndim != 2 or B.ndim != 2 or Z.shape[1] != B.shape[1]:
        raise ConfigError(
            f"descriptors {Z.shape} and codebook {B.shape} do not match: expected (n, d) and (p, d)"
        )
    return Z, B


def nearest_codewords(
    Z: np.ndarray,
    centers: np.ndarray,
    k: int = 1,
    *,
    block_rows: int | None = None,
    center_norms: np.ndarray | None = None,
    index: IVFIndex | None = None,
    n_probe: int = 1,
) -> np.ndarray:
    """Indices of the k nearest codewords (Euclidean) of each descriptor.

    Distances ``||z||^2 - 2 z . b + ||b||^2`` (``||z||^2`` is constant per
    row and skipped) come from one GEMM per tile of descriptors x codewords;
    each tile is merged into a running top-k per descriptor right after its
    GEMM (numba), so the n x p distance matrix never exists.

    Parameters
    ----------
    Z : ndarray (n, d) float32
    centers : ndarray (p, d) float32
    k : int
        Neighbours per descriptor, 1 <= k <= p.
    block_rows : int, optional
        Descriptors per tile (default 512; tiles of 512 codewords).
    center_norms : ndarray (p,) float32, optional
        Precomputed ``||b_j||^2``.
    index : IVFIndex, optional
        An inverted file over ``centers`` (:func:`build_ivf`): search only the
        ``n_probe`` lists nearest each descriptor (approximate).
    n_probe : int, default 1
        Lists probed per descriptor with ``index``, 1..``index.n_lists``.

    Returns
    -------
    indices : ndarray (n, k) int32, nearest first (exact search: of equal
    distances the lower index first).
    """
    Z, B = _check(Z, centers)
    p = B.shape[0]
    if not 1 <= k <= p:
        raise ConfigError(f"k={k} nearest codewords out of a codebook of {p}: use 1 <= k <= {p}")
    if index is not None:
        if index.centers.shape != B.shape:
            raise ConfigError(
                f"IVF index over {index.centers.shape} codewords does not match the codebook {B.shape}: "
                "rebuild it with build_ivf(centers)"
            )
        if not 1 <= n_probe <= index.n_lists:
            raise ConfigError(f"n_probe={n_probe}: use 1 <= n_probe <= {index.n_lists} (the index's lists)")
        return knn_ivf(Z, index, k, n_probe, tile_rows=block_rows or TILE_ROWS)
    bb = (
        np.einsum("ij,ij->i", B, B).astype(np.float32)
        if center_norms is None
        else np.ascontiguousarray(center_norms, dtype=np.float32)
    )
    return knn_exact(Z, B, bb, k, tile_rows=max(1, int(block_rows)) if block_rows else TILE_ROWS)


def lcc_encode(
    Z: np.ndarray,
    centers: np.ndarray,
    kappa: int = 20,
    *,
    ridge: float = DEFAULT_RIDGE,
    block_rows: int | None = None,
    center_norms: np.ndarray | None = None,
    index: IVFIndex | None = None,
    n_probe: int = 1,
) -> SparseCodes:
    """Local coordinate coding (paper §3.1, eq. 1); ``kappa = 1`` is vector quantisation.

    For each descriptor z with its kappa nearest codewords B_z, solves
    ``min_a ||z - B_z a||^2  s.t.  sum(a) = 1`` in closed form:
    ``C = (B_z - z 1^T)^T (B_z - z 1^T)``, ``(C + ridge trace(C) I) a' = 1``,
    ``a = a' / sum(a')``.

    Parameters
    ----------
    Z : ndarray (n, d) float32
        Descriptors (after the codebook's PCA, if any).
    centers : ndarray (p, d) float32
        Codebook B (rows are codewords).
    kappa : int, default 20
        Nearest codewords per descriptor.
    ridge : float, default 1e-4
        Trace-scaled ridge added to C's diagonal, as LLC (Wang et al. 2010)
        does; needed because C is singular whenever kappa > d.
    block_rows, center_norms, index, n_probe
        See :func:`nearest_codewords` (``index`` makes the neighbour search
        approximate; the weights are then those of the neighbours found).

    Returns
    -------
    SparseCodes
        ``indices`` (n, kappa) int32 nearest first, ``weights`` (n, kappa)
        float32 summing to 1 per row, ``n_codewords`` p.

    Notes
    -----
    The ridge is always added (not only when C is singular), as in LLC, so
    weights differ from the exact constrained least squares by O(ridge).
    Weights may be negative (eq. 1 has no positivity constraint). The
    kappa x kappa Gram is accumulated in float32, the solve is a float64
    Cholesky per descriptor inside one numba loop (no Python loop).
    """
    Z, B = _check(Z, centers)
    if not ridge >= 0:
        raise ConfigError(f"ridge={ridge}: use a small non-negative number such as 1e-4")
    idx = nearest_codewords(
        Z, B, kappa, block_rows=block_rows, center_norms=center_norms, index=index, n_probe=n_probe
    )
    w = np.empty(idx.shape, dtype=np.float32)
    _k.lcc_weights(Z, B, idx, float(ridge), w)
    return SparseCodes(idx, w, B.shape[0])
