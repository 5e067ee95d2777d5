"""numba kernels of the k-nearest-codeword search of LCC (paper eq. 1): top-k fused after each GEMM tile."""

from __future__ import annotations

import math

import numba as nb
import numpy as np

# Values whose minimum is tested against the row's threshold at once: one AVX2 register. Not wider: a
# chunk that passes costs a scalar scan, and early in a row most do (docs/design/lcc.md).
_CHUNK = 8


@nb.njit(nogil=True, cache=True, inline="always")
def _insert(vals, ids, v, j):
    # (v, j) with v < vals[-1] into the ascending list: the last entry drops out.
    # Equal values keep their order (strict >), so of tied codewords the one seen first stays first.
    t = vals.shape[0] - 1
    while t > 0 and vals[t - 1] > v:
        vals[t] = vals[t - 1]
        ids[t] = ids[t - 1]
        t -= 1
    vals[t] = v
    ids[t] = j
    return vals[vals.shape[0] - 1]


@nb.njit(nogil=True, cache=True, fastmath=True)
def topk_merge(dist, col_ids, row_ids, vals, ids):
    """Merge one tile of distances into the running k smallest of each of its rows.

    dist : (m, c) float32, the tile ``[z, 1] @ [-2 b, ||b||^2].T`` of
    :func:`lsic.pipeline._knn.knn_exact`: ``||z - b_j||^2 - ||z||^2``, a
    per-row constant away from the squared distance, so it ranks codewords
    the same way;
    col_ids : (c,) int32, codeword index of each tile column;
    row_ids : (m,) int32, descriptor index of each tile row;
    vals, ids : (n, k) float32 / int32, the running lists, ascending, filled
    with +inf / -1 before the first tile; updated in place.

    Per row, the minimum of each chunk of 8 values (a vectorised pass, the
    tile is still in cache after the GEMM) is compared with the row's current
    k-th smallest value; only chunks below it are scanned and inserted. After
    the first few tiles almost no chunk passes, so the cost is one read of
    the tile.
    """
    m, c = dist.shape
    k = vals.shape[1]
    full = c // _CHUNK
    for i in range(m):
        r = row_ids[i]
        rv = vals[r]
        ri = ids[r]
        thr = rv[k - 1]
        row = dist[i]
        for q in range(full):
            base = q * _CHUNK
            mn = np.float32(np.inf)
            for j in range(base, base + _CHUNK):
                mn = min(mn, row[j])
            if mn < thr:
                for j in range(base, base + _CHUNK):
                    v = row[j]
                    if v < thr:
                        thr = _insert(rv, ri, v, col_ids[j])
        for j in range(full * _CHUNK, c):
            v = row[j]
            if v < thr:
                thr = _insert(rv, ri, v, col_ids[j])


@nb.njit(nogil=True, cache=True)
def group_by_list(probes, n_lists, offsets, rows):
    """Invert (n, n_probe) probed list ids into per-list descriptor rows (CSR, rows ascending per list).

    probes : (n, n_probe) int32; offsets : (n_lists + 1,) int64 out;
    rows : (n * n_probe,) int32 out.
    """
    n, npr = probes.shape
    for q in range(n_lists + 1):
        offsets[q] = 0
    for i in range(n):
        for t in range(npr):
            offsets[probes[i, t] + 1] += 1
    for q in range(n_lists):
        offsets[q + 1] += offsets[q]
    fill = offsets[:n_lists].copy()
    for i in range(n):
        for t in range(npr):
            q = probes[i, t]
            rows[fill[q]] = i
            fill[q] += 1


@nb.njit(nogil=True, cache=True)
def smallest_k(dist, k, out, nearest):
    """Column indices of the k smallest values of each row, ascending by index (not by value), and the smallest's.

    dist : (m, c) float32 without NaN; k : 1 <= k <= c; out : (m, k) int32,
    written; nearest : (m,) int32, written: the column of each row's smallest
    value (the lowest on ties, as ``np.argmin``; it is always among ``out``).

    For the coarse probes of the inverted file, where k is a sizeable share
    of c (a sixth to a quarter of the lists) and the running sorted top-k of
    :func:`topk_merge` would shift on nearly every value. A quickselect finds
    the k-th value: each pass splits the values below and above a
    median-of-three pivot into two buffers with branch-free stores (every
    value is written to both, each count advances by a comparison: a branch
    per value would mispredict on random data). Then
    one branch-free pass keeps the values below the k-th and, of the values
    equal to it, the lowest indices (the tie rule of :func:`topk_merge`).
    """
    m, c = dist.shape
    lo_buf = np.empty(c, dtype=np.float32)
    hi_buf = np.empty(c, dtype=np.float32)
    keep = np.empty(c, dtype=np.int32)
    for i in range(m):
        row = dist[i]
        best = 0
        for j in range(c):
            lo_buf[j] = row[j]
            if row[j] < row[best]:
                best = j
        nearest[i] = best
        in_lo = True
        n = c
        rank = k - 1
        while True:
            # writing the lower part into lo_buf while reading lo_buf is safe: the write index never passes the read
            src = lo_buf if in_lo else hi_buf
            a, b, d = src[0], src[n // 2], src[n - 1]
            if a > b:
                a, b = b, a
            if b > d:
                b = d
                if a > b:
                    b = a
            pivot = b
            n_lo = 0
            n_hi = 0
            for j in range(n):
                v = src[j]
                lo_buf[n_lo] = v
                n_lo += v < pivot
                hi_buf[n_hi] = v
                n_hi += v > pivot
            n_eq = n - n_lo - n_hi
            if rank < n_lo:
                in_lo = True
                n = n_lo
            elif rank < n_lo + n_eq:
                break
            else:
                rank -= n_lo + n_eq
                in_lo = False
                n = n_hi
        n_out = 0
        for j in range(c):
            keep[n_out] = j
            n_out += row[j] < pivot
        tied = n_out < k
        for j in range(c):  # values equal to the k-th, lowest index first, until k are kept
            if n_out == k:
                break
            if row[j] == pivot:
                keep[n_out] = j
                n_out += 1
        sub = keep[:k]
        if tied:  # ids below and ids equal were appended in two runs: one ascending list
            sub.sort()
        for t in range(k):
            out[i, t] = sub[t]


# Float rounding of one dot product of length D in float32 is at most D u sum|x_t y_t| <= D u ||x|| ||y||
# (u = 2^-24) in any summation order; the seed kernel and the list GEMM each round once.
_U32 = 2.0**-24


@nb.njit(nogil=True, cache=True, fastmath={"reassoc", "contract", "nsz", "arcp"})
def seed_thresholds(Zl, nearest, folded, offsets, vals):
    """Start each descriptor's k-th-smallest threshold at its distance to the first k codewords of its nearest list.

    Zl : (n, D) float32 lifted descriptors ``[z, 1]``; nearest : (n,) int32,
    each descriptor's nearest list (always among its probed lists);
    folded : (p, D) float32 folded codewords in list order, each list
    nearest its centroid first; offsets : (L + 1,) int64; vals : (n, k)
    float32, the running lists of :func:`topk_merge` before the first tile
    (+inf), set in place to the seed threshold T for rows whose list holds
    at least k codewords.

    Those k codewords are probed, so the search still finds k values below
    T, and of the values it scans exactly those below T can enter the top
    k: the neighbours found are the ones an unseeded search finds, with
    fewer insertions on the way (a descriptor's first lists no longer fill
    the list from +inf). T is the largest of the k values plus a bound on
    how far this loop's rounding and the list GEMM's can differ, so every
    seed's GEMM value stays below it.

    Not fastmath's ``nnan``/``ninf``: the rows start at +inf, and with those
    flags LLVM may fold comparisons with infinities away.
    """
    n, D = Zl.shape
    k = vals.shape[1]
    slack = 2.0 * D * _U32 * 1.01
    for i in range(n):
        q = nearest[i]
        c0 = offsets[q]
        if offsets[q + 1] - c0 < k:
            continue
        z = Zl[i]
        zz = np.float32(0.0)
        for t in range(D):
            zz += z[t] * z[t]
        top = 0.0
        ff_max = 0.0
        for a in range(k):
            f = folded[c0 + a]
            s = np.float32(0.0)
            ff = np.float32(0.0)
            for t in range(D):
                s += z[t] * f[t]
                ff += f[t] * f[t]
            if a == 0 or s > top:
                top = s
            ff_max = max(ff_max, ff)
        # the norms round too: a 1% allowance covers them; the float32 store of T is rounded up by one more ulp
        thr = top + slack * math.sqrt(zz * ff_max) + abs(top) * 2.0 * 2.0**-23
        for a in range(k):
            vals[i, a] = thr
