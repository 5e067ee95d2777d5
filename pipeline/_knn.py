"""k nearest codewords of LCC (paper §3.1, eq. 1): exact tiled search and an inverted-file (IVF) approximation.

Both search the squared Euclidean distance through ``||b||^2 - 2 z . b``,
which one GEMM per tile yields directly with the norms folded into it
(``[z, 1] @ [-2 b, ||b||^2].T``: the selection then reads the tile without
arithmetic, no pass adding the norms after the GEMM), and keep a
running top-k per descriptor, so the n x p distance matrix never exists.

References
----------
H. Jegou, M. Douze and C. Schmid, "Product quantization for nearest neighbor
search", IEEE TPAMI 2011 (the inverted file with a coarse quantizer, as in
faiss's ``IndexIVFFlat``). Lin et al., CVPR 2011, eq. 1.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from . import _knn_kernels as _k

__all__ = ["IVFIndex", "build_ivf", "calibrate_n_probe", "default_n_lists", "knn_exact", "knn_ivf", "probe_recall"]

# Tile of the exact search: 1024 descriptors x 256 codewords, float32 = 1 MB, large enough for the
# GEMM to run at the speed of much larger blocks, and small enough to stay in the L2/L3 caches for the
# selection right after it (other shapes: docs/design/lcc.md). In the IVF search TILE_ROWS is the row
# tile of each list's GEMM.
TILE_ROWS = 1024
TILE_COLS = 256
_COARSE_ITERS = 10
_CALIBRATION_QUERIES = 2000


def _norms(B: np.ndarray) -> np.ndarray:
    return np.einsum("ij,ij->i", B, B).astype(np.float32)


def _lift(Z: np.ndarray) -> np.ndarray:
    """(n, d + 1) float32 ``[z, 1]``: the descriptor side of the folded GEMM."""
    out = np.empty((Z.shape[0], Z.shape[1] + 1), dtype=np.float32)
    out[:, :-1] = Z
    out[:, -1] = 1.0
    return out


def _fold(B: np.ndarray, bb: np.ndarray) -> np.ndarray:
    """(p, d + 1) float32 ``[-2 b, ||b||^2]``: ``[z, 1] . [-2 b, ||b||^2] = ||z - b||^2 - ||z||^2``.

    ``-2 b`` is exact in float32, so only the GEMM's summation order rounds.
    """
    out = np.empty((B.shape[0], B.shape[1] + 1), dtype=np.float32)
    np.multiply(B, np.float32(-2.0), out=out[:, :-1])
    out[:, -1] = bb
    return out


def _start(n: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    return np.full((n, k), np.inf, dtype=np.float32), np.full((n, k), -1, dtype=np.int32)


def knn_exact(
    Z: np.ndarray,
    B: np.ndarray,
    bb: np.ndarray,
    k: int,
    *,
    tile_rows: int = TILE_ROWS,
    tile_cols: int = TILE_COLS,
) -> np.ndarray:
    """Exact k nearest codewords, GEMM tile by tile with the selection fused after each tile.

    Parameters
    ----------
    Z : ndarray (n, d) float32, C-contiguous
    B : ndarray (p, d) float32, C-contiguous
    bb : ndarray (p,) float32, ``||b_j||^2``
    k : int, 1 <= k <= p (trusted: validated by the caller)
    tile_rows, tile_cols : int
        Tile shape (descriptors x codewords).

    Returns
    -------
    ndarray (n, k) int32, nearest first; of equal distances the lower index first.
    """
    return _knn_folded(_lift(Z), _fold(B, bb), k, tile_rows=tile_rows, tile_cols=tile_cols)


def _knn_folded(Zl: np.ndarray, F: np.ndarray, k: int, *, tile_rows: int = TILE_ROWS,
                tile_cols: int = TILE_COLS) -> np.ndarray:
    """:func:`knn_exact` on the lifted descriptors ``[z, 1]`` and the folded codewords ``[-2 b, ||b||^2]``."""
    n, p = Zl.shape[0], F.shape[0]
    vals, ids = _start(n, k)
    cols = np.arange(p, dtype=np.int32)
    rows = np.arange(n, dtype=np.int32)
    flat = np.empty(min(tile_rows, max(n, 1)) * min(tile_cols, p), dtype=np.float32)
    for r0 in range(0, n, tile_rows):
        zr = Zl[r0 : r0 + tile_rows]
        rr = rows[r0 : r0 + tile_rows]
        for c0 in range(0, p, tile_cols):
            Fc = F[c0 : c0 + tile_cols]
            # a contiguous tile at the edges too: BLAS writes it directly, numba compiles one layout
            t = np.matmul(zr, Fc.T, out=flat[: zr.shape[0] * Fc.shape[0]].reshape(zr.shape[0], Fc.shape[0]))
            _k.topk_merge(t, cols[c0 : c0 + tile_cols], rr, vals, ids)
    return ids


class IVFIndex(NamedTuple):
    """Inverted file over a codebook: codewords grouped by their nearest coarse centroid.

    Attributes
    ----------
    coarse : ndarray (L, d) float32
        Coarse centroids (k-means on the codewords).
    coarse_norms : ndarray (L,) float32
    offsets : ndarray (L + 1,) int64
        List q holds positions ``offsets[q]:offsets[q + 1]``, nearest its
        centroid first (so a list's first codewords seed the search of the
        descriptors whose nearest list it is; see :func:`knn_ivf`).
    order : ndarray (p,) int32
        Codeword index of each position.
    centers : ndarray (p, d) float32
        Codewords in list order (``B[order]``), so that a list is one slice.
    norms : ndarray (p,) float32
        ``||b||^2`` in list order.
    folded : ndarray (p, d + 1) float32
        ``[-2 b, ||b||^2]`` in list order (the codeword side of the folded GEMM).
    coarse_folded : ndarray (L, d + 1) float32
        The same of the coarse centroids.
    """

    coarse: np.ndarray
    coarse_norms: np.ndarray
    offsets: np.ndarray
    order: np.ndarray
    centers: np.ndarray
    norms: np.ndarray
    folded: np.ndarray
    coarse_folded: np.ndarray

    @property
    def n_lists(self) -> int:
        return self.coarse.shape[0]


def default_n_lists(p: int) -> int:
    """About sqrt(p) lists (faiss's rule of thumb for IVF), at least 1."""
    return max(1, int(round(math.sqrt(p))))


def build_ivf(B: np.ndarray, n_lists: int | None = None, *, seed: int = 0) -> IVFIndex:
    """Coarse quantizer (k-means, 10 Lloyd iterations) over the codewords and the inverted lists.

    Parameters
    ----------
    B : ndarray (p, d) float32
        Codebook (rows are codewords).
    n_lists : int, optional
        Number of lists L, 1 <= L <= p (default ``round(sqrt(p))``).
    seed : int
        Seed of the initial centroids (a sample of codewords).

    Returns
    -------
    IVFIndex

    Notes
    -----
    Deterministic for a given seed and BLAS thread count (extraction pins BLAS
    to one thread), so every worker builds the same index from the stored
    codebook and nothing extra is stored. An empty cluster keeps its previous
    centroid. Within a list the codewords nearest its centroid come first: the
    search scans them first, and they seed the threshold of descriptors
    nearest the list, so fewer values enter the running top-k.
    """
    B = np.ascontiguousarray(B, dtype=np.float32)
    p = B.shape[0]
    L = default_n_lists(p) if n_lists is None else int(n_lists)
    rng = np.random.default_rng(seed)
    C = B[np.sort(rng.choice(p, L, replace=False))].copy()
    for _ in range(_COARSE_ITERS):
        assign = knn_exact(B, C, _norms(C), 1)[:, 0]
        counts = np.bincount(assign, minlength=L)
        nz = counts > 0
        # per-cluster sums by one sort + reduceat (np.add.at is ~100x slower at 32,768 x 128)
        srt = np.argsort(assign, kind="stable")
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]])[nz]
        sums = np.add.reduceat(B[srt].astype(np.float64), starts, axis=0)
        C[nz] = (sums / counts[nz, None]).astype(np.float32)
    assign = knn_exact(B, C, _norms(C), 1)[:, 0]
    # by list, and within a list by distance to its centroid (float64, ties by codeword index)
    off = B.astype(np.float64) - C[assign]
    to_centroid = np.einsum("ij,ij->i", off, off)
    order = np.lexsort((np.arange(p), to_centroid, assign)).astype(np.int32)
    offsets = np.zeros(L + 1, dtype=np.int64)
    np.cumsum(np.bincount(assign, minlength=L), out=offsets[1:])
    Bs = np.ascontiguousarray(B[order])
    cn, bn = _norms(C), _norms(Bs)
    return IVFIndex(C, cn, offsets, order, Bs, bn, _fold(Bs, bn), _fold(C, cn))


def probe_recall(Q: np.ndarray, index: IVFIndex, k: int) -> np.ndarray:
    """Recall of :func:`knn_ivf` at every ``n_probe``, measured on queries ``Q``.

    Parameters
    ----------
    Q : ndarray (m, d) float32
        Queries (descriptors, or codewords as :func:`calibrate_n_probe` uses).
    index : IVFIndex
    k : int, 1 <= k <= p

    Returns
    -------
    ndarray (n_lists,) float64
        Entry ``m - 1``: the share of the queries' exact k nearest codewords
        that lie in their ``m`` nearest lists, i.e. the k-NN recall of
        ``knn_ivf(Q, index, k, m)`` (up to ties and the exact fallback for
        descriptors whose probed lists hold fewer than k codewords).
    """
    Ql = _lift(np.ascontiguousarray(Q, dtype=np.float32))
    # exact neighbours among the index's own folded codewords: positions in list order, so a
    # neighbour's list is where its position falls among the offsets
    exact = _knn_folded(Ql, index.folded, k)
    list_of = np.repeat(np.arange(index.n_lists, dtype=np.int32), np.diff(index.offsets))
    coarse = Ql @ index.coarse_folded.T
    # each list's probe rank per query (0 = probed first), then the rank of each true neighbour's list
    rank = np.empty(coarse.shape, dtype=np.int32)
    np.put_along_axis(rank, np.argsort(coarse, axis=1, kind="stable"),
                      np.arange(index.n_lists, dtype=np.int32)[None, :], axis=1)
    need = np.take_along_axis(rank, list_of[exact], axis=1)
    return np.cumsum(np.bincount(need.ravel(), minlength=index.n_lists)) / need.size


def calibrate_n_probe(B: np.ndarray, index: IVFIndex, k: int, recall: float, *,
                      n_queries: int = _CALIBRATION_QUERIES, seed: int = 0) -> int:
    """Fewest lists to probe for a k-NN recall of at least ``recall``, estimated with codewords as queries.

    Parameters
    ----------
    B : ndarray (p, d) float32
        The codebook the index was built on (the queries are sampled from it
        in its own order).
    index : IVFIndex
    k : int
        Neighbours searched (LCC's kappa).
    recall : float in (0, 1]
        Target recall against exact search.
    n_queries : int
        Codewords sampled as queries (all of them when p is smaller).
    seed : int

    Returns
    -------
    int, 1 <= n_probe <= index.n_lists

    Notes
    -----
    Needs no descriptors, so every worker that loads the codebook derives the
    same ``n_probe`` (like :func:`build_ivf`, deterministic for a seed and a
    BLAS thread count). Codewords lie where the descriptors are dense (they
    are k-means centres of them), and measured so their recall tracks the
    descriptors' closely: on a fitted 4,096-word Caltech-101 HOG codebook
    within 0.0006 at every ``n_probe`` near 0.99, on Table 1-size codebooks
    of sampled descriptors 0.0003-0.0015 above it (the documentation's
    "Table 1 at the paper's scale" benchmark page).
    """
    p = B.shape[0]
    rng = np.random.default_rng(seed)
    Q = B[np.sort(rng.choice(p, min(n_queries, p), replace=False))]
    curve = probe_recall(Q, index, k)
    # a float sum can leave the full curve a hair under 1.0: all lists is always enough
    return int(min(np.searchsorted(curve, recall - 1e-12) + 1, index.n_lists))


def _coarse_probes(Zl: np.ndarray, C: np.ndarray, n_probe: int, tile_rows: int) -> tuple[np.ndarray, np.ndarray]:
    """Each descriptor's ``n_probe`` nearest lists, ascending by list id ((n, n_probe) int32), and its nearest ((n,) int32).

    A quickselect per row (:func:`~._knn_kernels.smallest_k`) rather than the
    running sorted top-k of the codeword search: here k is a sixth to a
    quarter of the columns, and nearly every value would shift the sorted list.
    """
    n = Zl.shape[0]
    probes = np.empty((n, n_probe), dtype=np.int32)
    nearest = np.empty(n, dtype=np.int32)
    t = np.empty((min(tile_rows, max(n, 1)), C.shape[0]), dtype=np.float32)
    for r0 in range(0, n, tile_rows):
        zr = Zl[r0 : r0 + tile_rows]
        tile = np.matmul(zr, C.T, out=t[: zr.shape[0]])
        _k.smallest_k(tile, n_probe, probes[r0 : r0 + zr.shape[0]], nearest[r0 : r0 + zr.shape[0]])
    return probes, nearest


def knn_ivf(
    Z: np.ndarray, index: IVFIndex, k: int, n_probe: int, *, tile_rows: int = TILE_ROWS
) -> np.ndarray:
    """Approximate k nearest codewords: exact search within the ``n_probe`` lists nearest each descriptor.

    The descriptors probing a list are gathered and multiplied against that
    list's codewords in one GEMM (as faiss's IVF does for a batch of
    queries), then merged into each descriptor's running top-k by the same
    fused kernel as :func:`knn_exact`. Each descriptor's threshold starts at
    its distance to the k codewords nearest the centroid of its nearest list
    (:func:`~._knn_kernels.seed_thresholds`), which it probes anyway: the
    same neighbours, found with fewer insertions. A descriptor whose probed
    lists hold fewer than k codewords is searched exactly.

    Parameters
    ----------
    Z : ndarray (n, d) float32, C-contiguous
    index : IVFIndex
    k : int, 1 <= k <= p
    n_probe : int, 1 <= n_probe <= index.n_lists

    Returns
    -------
    ndarray (n, k) int32 codeword indices (of the original codebook), nearest first.
    """
    n = Z.shape[0]
    L = index.n_lists
    Zl = _lift(Z)
    probes, nearest = _coarse_probes(Zl, index.coarse_folded, n_probe, tile_rows)
    offsets = np.empty(L + 1, dtype=np.int64)
    rows = np.empty(n * n_probe, dtype=np.int32)
    _k.group_by_list(probes, L, offsets, rows)
    vals, ids = _start(n, k)
    _k.seed_thresholds(Zl, nearest, index.folded, index.offsets, vals)
    longest = int(np.diff(index.offsets).max()) if L else 0
    flat = np.empty(tile_rows * max(longest, 1), dtype=np.float32)
    q_buf = np.empty((tile_rows, Zl.shape[1]), dtype=np.float32)
    for q in range(L):
        c0, c1 = index.offsets[q], index.offsets[q + 1]
        if c1 == c0:
            continue
        Fq = index.folded[c0:c1]
        oq = index.order[c0:c1]
        for r0 in range(offsets[q], offsets[q + 1], tile_rows):
            rr = rows[r0 : min(r0 + tile_rows, offsets[q + 1])]
            # mode="clip": with the default, take buffers ``out`` (3x slower; ``rr`` is in range)
            zq = np.take(Zl, rr, axis=0, mode="clip", out=q_buf[: rr.shape[0]])
            t = np.matmul(zq, Fq.T, out=flat[: rr.shape[0] * (c1 - c0)].reshape(rr.shape[0], c1 - c0))
            _k.topk_merge(t, oq, rr, vals, ids)
    short = np.flatnonzero(ids[:, k - 1] < 0)
    if short.size:
        B = np.empty_like(index.centers)
        B[index.order] = index.centers
        ids[short] = knn_exact(np.ascontiguousarray(Z[short]), B, _norms(B), k)
    return ids
