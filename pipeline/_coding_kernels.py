"""numba kernels of LCC weights, SVC pooling and pyramid pooling (paper eqs. 1-2); the kNN search is in _knn_kernels."""

from __future__ import annotations

import math

import numba as nb
import numpy as np

_NOGIL = {"nogil": True, "cache": True}


@nb.njit(nogil=True, cache=True, fastmath=True)
def _local_gram(z, centers, ids, diff, C):
    """C[a, b] = (b_a - z) . (b_b - z) for a, b < kappa; diff : (kappa, d rounded up to 8) scratch, zero past d."""
    kappa = ids.shape[0]
    d = z.shape[0]
    dp = diff.shape[1]
    for a in range(kappa):
        ca = centers[ids[a]]
        for t in range(d):
            diff[a, t] = ca[t] - z[t]
    # four dot products per pass over row a: each load of da[t] feeds four FMAs, where one product at
    # a time is bound by the loads; over the zero-padded length the vector loop has no scalar tail
    # (docs/design/lcc.md).
    for a in range(kappa):
        da = diff[a]
        b = 0
        while b + 4 <= a + 1:
            d0 = diff[b]
            d1 = diff[b + 1]
            d2 = diff[b + 2]
            d3 = diff[b + 3]
            s0 = np.float32(0.0)
            s1 = np.float32(0.0)
            s2 = np.float32(0.0)
            s3 = np.float32(0.0)
            for t in range(dp):
                x = da[t]
                s0 += x * d0[t]
                s1 += x * d1[t]
                s2 += x * d2[t]
                s3 += x * d3[t]
            C[a, b] = s0
            C[a, b + 1] = s1
            C[a, b + 2] = s2
            C[a, b + 3] = s3
            C[b, a] = s0
            C[b + 1, a] = s1
            C[b + 2, a] = s2
            C[b + 3, a] = s3
            b += 4
        while b <= a:
            db = diff[b]
            s = np.float32(0.0)
            for t in range(dp):
                s += da[t] * db[t]
            C[a, b] = s
            C[b, a] = s
            b += 1


_BATCH = 8  # descriptors solved together: the float64 Cholesky interleaves their independent operations


@nb.njit(nogil=True, cache=True, fastmath=True)
def _solve_batch(C, ridge, m, L, inv, y, w_out, i0):
    """Weights of descriptors ``i0 .. i0 + m - 1`` from their Grams ``C[:, :, j]`` (lane j).

    Per lane: C += ridge trace(C) I, Cholesky (float64), L L^T y = 1,
    w = y / sum(y), in the same order of operations as one descriptor at a
    time (the weights are bit-identical). Every loop runs over the
    ``_BATCH`` lanes innermost, which gives the core independent operations
    to overlap where one descriptor's Cholesky is a chain of dependent ones.
    LLVM compiles these lane loops to scalar instructions (the lanes' scratch
    ``s`` may alias ``L`` as far as it knows); the lanes written out as eight
    scalars would vectorise partly, but the solve is a small share of the
    coding time, so the loops stay one short form (docs/design/lcc.md).
    """
    kappa = C.shape[0]
    s = np.empty(_BATCH, dtype=np.float64)
    reg = np.zeros(_BATCH, dtype=np.float64)
    for a in range(kappa):
        for j in range(_BATCH):
            reg[j] += C[a, a, j]
    for j in range(_BATCH):
        reg[j] = max(ridge * reg[j], 1e-12)
    for a in range(kappa):
        for b in range(a + 1):
            for j in range(_BATCH):
                s[j] = C[a, b, j]
            if a == b:
                for j in range(_BATCH):
                    s[j] += reg[j]
            for t in range(b):
                for j in range(_BATCH):
                    s[j] -= L[a, t, j] * L[b, t, j]
            if a == b:
                for j in range(_BATCH):
                    v = math.sqrt(max(s[j], 1e-300))
                    L[a, a, j] = v
                    inv[a, j] = 1.0 / v
            else:
                for j in range(_BATCH):
                    L[a, b, j] = s[j] * inv[b, j]
    for a in range(kappa):
        for j in range(_BATCH):
            s[j] = 1.0
        for t in range(a):
            for j in range(_BATCH):
                s[j] -= L[a, t, j] * y[t, j]
        for j in range(_BATCH):
            y[a, j] = s[j] * inv[a, j]
    for a in range(kappa - 1, -1, -1):
        for j in range(_BATCH):
            s[j] = y[a, j]
        for t in range(a + 1, kappa):
            for j in range(_BATCH):
                s[j] -= L[t, a, j] * y[t, j]
        for j in range(_BATCH):
            y[a, j] = s[j] * inv[a, j]
    for j in range(m):
        tot = 0.0
        for a in range(kappa):
            tot += y[a, j]
        for a in range(kappa):
            w_out[i0 + j, a] = y[a, j] / tot


@nb.njit(nogil=True, cache=True, fastmath=True)
def lcc_weights(Z, centers, idx, ridge, w_out):
    """Locally constrained least-squares weights (eq. 1), one kappa x kappa solve per row.

    For each z with neighbours B_z: C = (B_z - z 1^T)^T (B_z - z 1^T),
    C += (ridge * trace(C)) I, solve C a = 1 (Cholesky, float64), a /= sum(a).
    Z (n, d) float32, centers (p, d) float32, idx (n, kappa) int32,
    w_out (n, kappa) float32. The Grams are accumulated in float32 one
    descriptor at a time, the solves run ``_BATCH`` descriptors at once.
    """
    n, d = Z.shape
    kappa = idx.shape[1]
    if kappa == 1:
        for i in range(n):
            w_out[i, 0] = 1.0
        return
    diff = np.zeros((kappa, (d + 7) // 8 * 8), dtype=np.float32)  # zero padding, see _local_gram
    C32 = np.empty((kappa, kappa), dtype=np.float32)
    Cb = np.zeros((kappa, kappa, _BATCH), dtype=np.float64)
    L = np.zeros((kappa, kappa, _BATCH), dtype=np.float64)
    inv = np.ones((kappa, _BATCH), dtype=np.float64)
    y = np.zeros((kappa, _BATCH), dtype=np.float64)
    for i0 in range(0, n, _BATCH):
        m = min(_BATCH, n - i0)
        for j in range(m):
            _local_gram(Z[i0 + j], centers, idx[i0 + j], diff, C32)
            for a in range(kappa):
                for b in range(a + 1):
                    Cb[a, b, j] = C32[a, b]
        for j in range(m, _BATCH):  # a short last batch: identity Grams in the unused lanes
            for a in range(kappa):
                for b in range(a + 1):
                    Cb[a, b, j] = 1.0 if a == b else 0.0
        _solve_batch(Cb, ridge, m, L, inv, y, w_out, i0)


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
