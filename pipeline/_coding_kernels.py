"""numba kernels of LCC / SVC coding and pyramid pooling (paper eqs. 1-2)."""

from __future__ import annotations

import math

import numba as nb
import numpy as np

_NOGIL = {"nogil": True, "cache": True}


@nb.njit(nogil=True, cache=True, fastmath=True)
def _row_values(row, bb, tmp):
    two = np.float32(2.0)
    for j in range(row.shape[0]):
        tmp[j] = bb[j] - two * row[j]


@nb.njit(nogil=True, cache=True, fastmath=True)
def _chunk_mins(tmp, chunk, cmins):
    p = tmp.shape[0]
    full = p // chunk
    t2 = tmp[: full * chunk].reshape((full, chunk))
    for c in range(full):
        m = np.float32(np.inf)
        for j in range(chunk):
            v = t2[c, j]
            m = v if v < m else m
        cmins[c] = m
    if full < cmins.shape[0]:
        m = np.float32(np.inf)
        for j in range(full * chunk, p):
            m = tmp[j] if tmp[j] < m else m
        cmins[full] = m


@nb.njit(nogil=True, cache=True, inline="always")
def _insert(vals, ids, filled, v, j):
    # insert (v, j) into the ascending top list; returns the new fill count
    k = vals.shape[0]
    if filled < k:
        t = filled
        filled += 1
    elif v < vals[k - 1]:
        t = k - 1
    else:
        return filled
    while t > 0 and vals[t - 1] > v:
        vals[t] = vals[t - 1]
        ids[t] = ids[t - 1]
        t -= 1
    vals[t] = v
    ids[t] = j
    return filled


@nb.njit(nogil=True, cache=True, inline="always")
def _kth_smallest(a, n, k):
    # in-place quickselect (median-of-three pivot) on the scratch a[:n]; k is 0-based
    lo = 0
    hi = n - 1
    while hi > lo:
        mid = (lo + hi) >> 1
        x = a[lo]
        y = a[mid]
        z = a[hi]
        if x > y:
            x, y = y, x
        if y > z:
            y = z
        if x > y:
            y = x
        pivot = y
        i = lo
        j = hi
        while i <= j:
            while a[i] < pivot:
                i += 1
            while a[j] > pivot:
                j -= 1
            if i <= j:
                t = a[i]
                a[i] = a[j]
                a[j] = t
                i += 1
                j -= 1
        if k <= j:
            hi = j
        elif k >= i:
            lo = i
        else:
            return a[k]
    return a[k]


@nb.njit(**_NOGIL)
def select_nearest(zb, bb, row0, idx_out):
    """k smallest of ``bb[j] - 2 zb[i, j]`` per row (the squared distance minus ||z||^2).

    zb : (m, p) float32 = Z B^T; bb : (p,) float32 = ||b_j||^2;
    idx_out : (n, k) int32, rows ``row0 .. row0 + m`` filled, ascending distance.

    Per row: the minima of chunks of 16 values (vectorised) give tau, the
    k-th smallest chunk minimum (quickselect), an upper bound of the k-th
    smallest value; only values <= tau in the (at most k) chunks whose
    minimum is <= tau are then insertion-sorted.
    """
    m, p = zb.shape
    k = idx_out.shape[1]
    chunk = 16
    n_chunks = (p + chunk - 1) // chunk
    vals = np.empty(k, dtype=np.float32)
    ids = np.empty(k, dtype=np.int32)
    tmp = np.empty(p, dtype=np.float32)
    cmins = np.empty(n_chunks, dtype=np.float32)
    scratch = np.empty(n_chunks, dtype=np.float32)
    cand_v = np.empty(p, dtype=np.float32)
    cand_j = np.empty(p, dtype=np.int32)
    for i in range(m):
        _row_values(zb[i], bb, tmp)
        _chunk_mins(tmp, chunk, cmins)
        if n_chunks > k:
            for c in range(n_chunks):
                scratch[c] = cmins[c]
            tau = _kth_smallest(scratch, n_chunks, k - 1)
        else:
            tau = np.float32(np.inf)
        nc = 0
        for c in range(n_chunks):
            if cmins[c] <= tau:
                for j in range(c * chunk, min((c + 1) * chunk, p)):
                    v = tmp[j]
                    if v <= tau:
                        cand_v[nc] = v
                        cand_j[nc] = j
                        nc += 1
        filled = 0
        for t in range(nc):
            filled = _insert(vals, ids, filled, cand_v[t], cand_j[t])
        for j in range(k):
            idx_out[row0 + i, j] = ids[j]


@nb.njit(nogil=True, cache=True, fastmath=True)
def _local_gram(z, centers, ids, diff, C):
    kappa = ids.shape[0]
    d = z.shape[0]
    for a in range(kappa):
        ca = centers[ids[a]]
        for t in range(d):
            diff[a, t] = ca[t] - z[t]
    for a in range(kappa):
        da = diff[a]
        for b in range(a + 1):
            db = diff[b]
            s = np.float32(0.0)
            for t in range(d):
                s += da[t] * db[t]
            C[a, b] = s
            C[b, a] = s


@nb.njit(**_NOGIL)
def lcc_weights(Z, centers, idx, ridge, w_out):
    """Locally constrained least-squares weights (eq. 1), one kappa x kappa solve per row.

    For each z with neighbours B_z: C = (B_z - z 1^T)^T (B_z - z 1^T),
    C += (ridge * trace(C)) I, solve C a = 1 (Cholesky, float64), a /= sum(a).
    Z (n, d) float32, centers (p, d) float32, idx (n, kappa) int32,
    w_out (n, kappa) float32.
    """
    n, d = Z.shape
    kappa = idx.shape[1]
    diff = np.empty((kappa, d), dtype=np.float32)
    C32 = np.empty((kappa, kappa), dtype=np.float32)
    L = np.empty((kappa, kappa), dtype=np.float64)
    y = np.empty(kappa, dtype=np.float64)
    for i in range(n):
        if kappa == 1:
            w_out[i, 0] = 1.0
            continue
        _local_gram(Z[i], centers, idx[i], diff, C32)
        tr = 0.0
        for a in range(kappa):
            tr += C32[a, a]
        reg = ridge * tr
        if reg <= 0.0:
            reg = 1e-12
        # Cholesky of C + reg I
        for a in range(kappa):
            for b in range(a + 1):
                s = np.float64(C32[a, b])
                if a == b:
                    s += reg
                for t in range(b):
                    s -= L[a, t] * L[b, t]
                if a == b:
                    if s <= 0.0:
                        s = 1e-300
                    L[a, a] = math.sqrt(s)
                else:
                    L[a, b] = s / L[b, b]
        # solve L L^T x = 1
        for a in range(kappa):
            s = 1.0
            for t in range(a):
                s -= L[a, t] * y[t]
            y[a] = s / L[a, a]
        for a in range(kappa - 1, -1, -1):
            s = y[a]
            for t in range(a + 1, kappa):
                s -= L[t, a] * y[t]
            y[a] = s / L[a, a]
        tot = 0.0
        for a in range(kappa):
            tot += y[a]
        for a in range(kappa):
            w_out[i, a] = y[a] / tot


@nb.njit(**_NOGIL)
def pool_sparse(idx, w, blocks, n_blocks, use_max, out):
    """Max or sum pooling of sparse codes per pyramid block.

    idx, w : (n, kappa) int32 / float32 sparse codes; blocks : (n, L) int32
    global block ids (one per pyramid level); out : (n_blocks, p) float32.
    Max pooling is the max over *all* descriptors of the block of the dense
    code entry, so an entry some descriptor did not select is at least 0.
    Sum pooling returns sums (the caller divides by the block counts).
    """
    n, kappa = idx.shape
    L = blocks.shape[1]
    p = out.shape[1]
    counts = np.zeros(n_blocks, dtype=np.int64)
    for i in range(n):
        for l in range(L):
            counts[blocks[i, l]] += 1
    if use_max:
        hits = np.zeros((n_blocks, p), dtype=np.int32)
        for q in range(n_blocks):
            for j in range(p):
                out[q, j] = -np.inf
        for i in range(n):
            for l in range(L):
                q = blocks[i, l]
                for a in range(kappa):
                    j = idx[i, a]
                    hits[q, j] += 1
                    if w[i, a] > out[q, j]:
                        out[q, j] = w[i, a]
        for q in range(n_blocks):
            for j in range(p):
                if hits[q, j] < counts[q] and out[q, j] < 0.0:
                    out[q, j] = 0.0  # some descriptor's dense code has a zero here
    else:
        for q in range(n_blocks):
            for j in range(p):
                out[q, j] = 0.0
        for i in range(n):
            for l in range(L):
                q = blocks[i, l]
                for a in range(kappa):
                    out[q, idx[i, a]] += w[i, a]
    return counts


@nb.njit(**_NOGIL)
def svc_accumulate(Z, nearest, blocks, n_blocks, sums, counts):
    """Per (block, codeword): sum of z (float64) and count. sums (n_blocks, p, d), counts (n_blocks, p)."""
    n, d = Z.shape
    L = blocks.shape[1]
    for i in range(n):
        k = nearest[i]
        for l in range(L):
            q = blocks[i, l]
            counts[q, k] += 1
            s = sums[q, k]
            z = Z[i]
            for t in range(d):
                s[t] += z[t]


@nb.njit(**_NOGIL)
def svc_finish(sums, counts, centers, s_const, out):
    """Eq. 2 pooling: block k of x = [n_k s, sum_{i in k} z_i - n_k b_k] / sqrt(n n_k).

    out : (n_blocks, p, d + 1) float32; n is the number of descriptors in the block.
    """
    nbk, p, d = sums.shape
    for q in range(nbk):
        n = 0
        for k in range(p):
            n += counts[q, k]
        for k in range(p):
            nk = counts[q, k]
            if nk == 0:
                for t in range(d + 1):
                    out[q, k, t] = 0.0
                continue
            scale = 1.0 / math.sqrt(float(n) * float(nk))
            out[q, k, 0] = nk * s_const * scale
            for t in range(d):
                out[q, k, t + 1] = (sums[q, k, t] - nk * np.float64(centers[k, t])) * scale
