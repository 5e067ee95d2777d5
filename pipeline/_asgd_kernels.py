"""numba kernels of the one-vs-all ASGD solver (Lin et al., CVPR 2011, §4, eqs. 3-9).

All kernels are ``nogil`` and fill or update preallocated arrays in place. The
state of ``K`` binary problems (one per owned class, or per (class, lambda) pair
of a grid) is held as

``V``, ``U``     (K, d) float32   the eq. 8-9 vectors v, u (``U`` is (K, 0) for plain SGD)
``P``            (K, 3) float64   the lower triangular 2x2 factor, columns P11, P21, P22
``b``, ``bbar``  (K,) float64     intercept and averaged intercept (scalars need no transform)
``t``            (K,) int64       steps taken so far (the t of eq. 7)

so that ``w = P11 v`` and ``wbar = P21 v + P22 u``. Rows are given either as a
dense (n, d) float32 array or as CSR (data, indices, indptr); the same kernels
serve both through the ``dense`` flag (the row access helpers branch once per
row, the arithmetic is shared).

Step t (0-based count of steps already taken) of class k on row x with target
y = +1 if label == class else -1, eq. 7 and eq. 6::

    eta   = eta0 / (1 + lam eta0 t)^c
    alpha = 1 / max(1, t + 1 - avg_start)          # alpha = 1/t of eq. 6 when avg_start = 0
    a     = 1 - lam eta
    Delta = y (P11 v.x + b)                        # margin, eq. 4
    P    <- T P with T = [[a, 0], [alpha a, 1 - alpha]]           # eq. 8
    if Delta < 1:  v += eta y R11 x ;  u += eta y (R21 + alpha R22) x ;  b += eta y   # eq. 9
    bbar <- (1 - alpha) bbar + alpha b

While alpha == 1 (the first step, or every step before ``avg_start``) T is
singular; then wbar == w and the kernels keep u == 0, P21 = P11, P22 = 1.
Before a step, if P11 or P22 has left ``[RENORM_LOW, 1]`` (or P21 / P11 exceeds
``RENORM_RATIO``, where wbar = P21 v + P22 u starts to cancel float32 digits) the
factors are folded back (v <- P11 v, u <- P21 v + P22 u, P <- I), so arbitrarily
long runs neither under- nor overflow.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

#: P11 or P22 below this value triggers the fold-back (renormalisation) before the next step.
RENORM_LOW = 1e-4
#: P21 / P11 above this value also triggers it: wbar = P21 v + P22 u then cancels two terms
#: about (P21 / P11) |w| large, which costs float32 digits (matters when lam eta_t >> 1/t, c < 1).
RENORM_RATIO = 4.0

_KW = dict(nogil=True, cache=True)


@njit(fastmath=True, **_KW)
def _dot(dense, X, data, indices, indptr, i, v):
    """x_i . v in float32 for a dense row ``X[i]`` or CSR row ``i``."""
    s = np.float32(0.0)
    if dense:
        xi = X[i]
        for j in range(xi.shape[0]):
            s += xi[j] * v[j]
    else:
        for p in range(indptr[i], indptr[i + 1]):
            s += data[p] * v[indices[p]]
    return s


@njit(fastmath=True, **_KW)
def _axpy(dense, X, data, indices, indptr, i, coef, v):
    """v += coef x_i (float32) for a dense row ``X[i]`` or CSR row ``i``."""
    a = np.float32(coef)
    if dense:
        xi = X[i]
        for j in range(xi.shape[0]):
            v[j] += a * xi[j]
    else:
        for p in range(indptr[i], indptr[i + 1]):
            v[indices[p]] += a * data[p]


@njit(**_KW)
def _eta_alpha(t, lam, eta0, c, avg_start):
    """Step size (eq. 7) and averaging rate (eq. 6) of step ``t`` (0-based)."""
    base = 1.0 + lam * eta0 * t
    if c == 1.0:
        eta = eta0 / base
    else:
        eta = eta0 / base**c
    s = t + 1 - avg_start
    if s < 1:
        s = 1
    return eta, 1.0 / s


@njit(**_KW)
def _needs_renorm(P, k):
    return _out_of_range(P[k, 0], P[k, 1], P[k, 2])


@njit(**_KW)
def _out_of_range(p11, p21, p22):
    return p11 < RENORM_LOW or p22 < RENORM_LOW or abs(p21) > RENORM_RATIO * p11


@njit(**_KW)
def _renorm_class(V, U, P, k, average, tied):
    """Fold the factors back into v, u and reset P to I (``tied``: wbar == w phase, u := 0)."""
    p11 = P[k, 0]
    p21 = P[k, 1]
    p22 = P[k, 2]
    v = V[k]
    if average:
        u = U[k]
        if tied:
            for j in range(v.shape[0]):
                v[j] = np.float32(p11 * v[j])
                u[j] = np.float32(0.0)
            P[k, 1] = 1.0
        else:
            for j in range(v.shape[0]):
                vj = np.float64(v[j])
                u[j] = np.float32(p21 * vj + p22 * u[j])
                v[j] = np.float32(p11 * vj)
            P[k, 1] = 0.0
    else:
        for j in range(v.shape[0]):
            v[j] = np.float32(p11 * v[j])
        P[k, 1] = 0.0
    P[k, 0] = 1.0
    P[k, 2] = 1.0


@njit(**_KW)
def _advance(P, k, eta, alpha, lam, average, active):
    """Apply T_t to P (eq. 8) and return the coefficients of x in the v and u updates (eq. 9)."""
    a = 1.0 - lam * eta
    if not average:
        p11 = a * P[k, 0]
        P[k, 0] = p11
        return (eta / p11 if active else 0.0), 0.0
    if alpha >= 1.0:
        p11 = a * P[k, 0]
        P[k, 0] = p11
        P[k, 1] = p11
        P[k, 2] = 1.0
        return (eta / p11 if active else 0.0), 0.0
    p11 = a * P[k, 0]
    p21 = alpha * a * P[k, 0] + (1.0 - alpha) * P[k, 1]
    p22 = (1.0 - alpha) * P[k, 2]
    P[k, 0] = p11
    P[k, 1] = p21
    P[k, 2] = p22
    if not active:
        return 0.0, 0.0
    r11 = 1.0 / p11
    r21 = -p21 / (p11 * p22)
    r22 = 1.0 / p22
    return eta * r11, eta * (r21 + alpha * r22)


@njit(**_KW)
def _class_step(P, k, eta, alpha, lam, y, margin, bk, bbk, average, fit_intercept):
    """The scalar part of one step of class k on a row with target ``y`` and ``x . v_k = margin``.

    Applies T_t to P (eq. 8), the intercept step and its average. Returns
    ``(cv, cu, b, bbar)``: the signed coefficients of x in the v and u updates
    of eq. 9 (both 0 when the row is not hinge-active) and the new intercepts.
    Shared by the per-row and the block kernels, so the two modes cannot drift apart.
    """
    active = y * (P[k, 0] * margin + bk) < 1.0
    cv, cu = _advance(P, k, eta, alpha, lam, average, active)
    if active and fit_intercept:
        bk += eta * y
    if average:
        bbk = (1.0 - alpha) * bbk + alpha * bk
    else:
        bbk = bk
    return y * cv, y * cu, bk, bbk


@njit(parallel=True, **_KW)
def asgd_rows(dense, X, data, indices, indptr, rows, labels, classes,
              V, U, P, b, bbar, t, lam, eta0, c, avg_start, average, fit_intercept,
              n_groups, row_block):
    """Exact per-row ASGD (or plain SGD) over ``rows`` for all K classes, in place.

    Parameters
    ----------
    dense : bool
        True: rows are ``X`` (n, d) float32 C-contiguous; False: rows are CSR
        ``data`` (nnz,) float32, ``indices`` (nnz,) int32/int64, ``indptr`` (n + 1,).
    rows : (m,) int64
        Row indices in the order they are visited (one step per row and class).
    labels : (n,) int64
        Class id of every row; target is +1 where ``labels[i] == classes[k]``.
    classes : (K,) int64
    V, U, P, b, bbar, t : state, see the module docstring; updated in place.
    lam, eta0 : (K,) float64
        Per-class lambda and eta0 (a grid of lambdas is a repeated class axis).
    c : float
        Exponent of eq. 7 (1 or 2/3).
    avg_start : int
        Averaging starts after this many steps (0 = paper, alpha_t = 1/t).
    average, fit_intercept : bool
    n_groups : int
        Number of class groups spread over threads (``prange``); every group
        walks the same rows, in blocks of ``row_block`` so each block of rows
        stays in cache while the group's classes visit it.
    """
    K = V.shape[0]
    m = rows.shape[0]
    for g in prange(n_groups):
        k0 = g * K // n_groups
        k1 = (g + 1) * K // n_groups
        for r0 in range(0, m, row_block):
            r1 = min(m, r0 + row_block)
            for k in range(k0, k1):
                cls = classes[k]
                v = V[k]
                tk = t[k]
                bk = b[k]
                bbk = bbar[k]
                for ri in range(r0, r1):
                    i = rows[ri]
                    eta, alpha = _eta_alpha(tk, lam[k], eta0[k], c, avg_start)
                    if _needs_renorm(P, k):
                        _renorm_class(V, U, P, k, average, alpha >= 1.0)
                    y = 1.0 if labels[i] == cls else -1.0
                    d = _dot(dense, X, data, indices, indptr, i, v)
                    cv, cu, bk, bbk = _class_step(P, k, eta, alpha, lam[k], y, d, bk, bbk, average, fit_intercept)
                    if cv != 0.0:
                        _axpy(dense, X, data, indices, indptr, i, cv, v)
                    if cu != 0.0:
                        _axpy(dense, X, data, indices, indptr, i, cu, U[k])
                    tk += 1
                t[k] = tk
                b[k] = bk
                bbar[k] = bbk


@njit(**_KW)
def steps_before_renorm(P, t, lam, eta0, c, avg_start, average, limit):
    """How many of the next ``limit`` steps every class can take before a fold-back is due.

    The factors P depend only on the schedule (t, lam, eta0, c, avg_start), not
    on the data, so this is a scalar simulation. Returns 0 if a class needs it now.
    """
    K = P.shape[0]
    best = limit
    for k in range(K):
        p11 = P[k, 0]
        p21 = P[k, 1]
        p22 = P[k, 2]
        n = 0
        while n < best:
            if _out_of_range(p11, p21, p22):
                break
            eta, alpha = _eta_alpha(t[k] + n, lam[k], eta0[k], c, avg_start)
            a = 1.0 - lam[k] * eta
            if (not average) or alpha >= 1.0:
                p11 = a * p11
                p21 = p11
                p22 = 1.0
            else:
                p21 = alpha * a * p11 + (1.0 - alpha) * p21
                p11 = a * p11
                p22 = (1.0 - alpha) * p22
            n += 1
        if n < best:
            best = n
    return best


@njit(**_KW)
def renorm_due(V, U, P, t, lam, eta0, c, avg_start, average):
    """Fold back every class whose factors left the safe range (before its next step)."""
    K = V.shape[0]
    for k in range(K):
        if _needs_renorm(P, k):
            _eta, alpha = _eta_alpha(t[k], lam[k], eta0[k], c, avg_start)
            _renorm_class(V, U, P, k, average, alpha >= 1.0)


def _block_coefficients(M, G, blabels, classes, P, b, bbar, t, lam, eta0, c, avg_start,
                       average, fit_intercept, CV, CU):
    """Scalar part of one block step (block mode), exact to rounding.

    ``M`` (nb, K) float32 holds x_i . v_k at the start of the block (one GEMM),
    ``G`` (nb, nb) float32 the Gram matrix x_i . x_j of the block. The margin of
    row i is corrected for the updates of the earlier rows j < i of the same
    block, ``x_i . v = M[i, k] + sum_j CV[j, k] G[i, j]``, so the block gives the
    per-row algorithm's result. With an empty ``G`` (0, 0) the margins of the
    block are those of its start (the plain, cheaper block mode). Fills ``CV``, ``CU`` (nb, K) float32 with the
    coefficients of the rank-nb updates ``V += CV.T @ Xb`` and ``U += CU.T @ Xb``
    and advances P, b, bbar, t. The caller guarantees no fold-back is due
    within the block (:func:`steps_before_renorm`).
    """
    nb = M.shape[0]
    K = M.shape[1]
    use_gram = G.shape[0] == nb
    for k in prange(K):
        cls = classes[k]
        tk = t[k]
        bk = b[k]
        bbk = bbar[k]
        for i in range(nb):
            eta, alpha = _eta_alpha(tk, lam[k], eta0[k], c, avg_start)
            y = 1.0 if blabels[i] == cls else -1.0
            d = np.float32(M[i, k])
            if use_gram:
                for j in range(i):
                    cj = CV[j, k]
                    if cj != 0.0:
                        d += cj * G[i, j]
            cv, cu, bk, bbk = _class_step(P, k, eta, alpha, lam[k], y, d, bk, bbk, average, fit_intercept)
            CV[i, k] = np.float32(cv)
            CU[i, k] = np.float32(cu)
            tk += 1
        t[k] = tk
        b[k] = bk
        bbar[k] = bbk


# Block mode runs one class group per Python thread (OneVsAllASGD._block_pass) with
# one-thread BLAS for the margins, so its kernels are serial: numba's OpenMP pool
# spinning next to OpenBLAS's halves GEMM speed.
block_coefficients = njit(parallel=False, **_KW)(_block_coefficients)


@njit(parallel=True, **_KW)
def csr_margins(data, indices, indptr, V, out):
    """out[i, k] = x_i . v_k for CSR rows (nb rows) against V (K, d); float32 (decision_function)."""
    nb = indptr.shape[0] - 1
    K = V.shape[0]
    for k in prange(K):
        v = V[k]
        for i in range(nb):
            s = np.float32(0.0)
            for p in range(indptr[i], indptr[i + 1]):
                s += data[p] * v[indices[p]]
            out[i, k] = s



@njit(**_KW)
def csr_to_csc(data, indices, indptr, d):
    """The block's CSR rows as columns: (cdata, crows, cptr), rows ascending within a column.

    Block mode walks a block's non-zeros column by column, so each row of the
    transposed class vectors (d, K) is read once per block, not once per
    non-zero: a block of 256 rows at 5% density reuses it about 13 times.
    """
    nb = indptr.shape[0] - 1
    nnz = indptr[nb] - indptr[0]
    cptr = np.zeros(d + 1, np.int64)
    for p in range(indptr[0], indptr[nb]):
        cptr[indices[p] + 1] += 1
    for j in range(d):
        cptr[j + 1] += cptr[j]
    fill = cptr[:d].copy()
    crows = np.empty(nnz, np.int64)
    cdata = np.empty(nnz, np.float32)
    for i in range(nb):
        for p in range(indptr[i], indptr[i + 1]):
            j = indices[p]
            q = fill[j]
            crows[q] = i
            cdata[q] = data[p]
            fill[j] = q + 1
    return cdata, crows, cptr


@njit(**_KW)
def csc_margins_t(cdata, crows, cptr, VT, out):
    """out[i, k] = x_i . v_k for a block given by columns, against ``VT`` (d, K); float32.

    Per row the products are summed in ascending column order, as a row-wise
    pass over sorted CSR indices would.
    """
    K = VT.shape[1]
    out[...] = 0.0
    for j in range(cptr.shape[0] - 1):
        if cptr[j] == cptr[j + 1]:
            continue
        row = VT[j]
        for p in range(cptr[j], cptr[j + 1]):
            a = cdata[p]
            acc = out[crows[p]]
            for k in range(K):
                acc[k] += a * row[k]


@njit(**_KW)
def csc_rank_update_t(cdata, crows, cptr, C, VT, CU, UT):
    """VT[:, k] += sum_i C[i, k] x_i and UT[:, k] += sum_i CU[i, k] x_i for a block given by columns.

    Only the hinge-active classes of a row are touched (the u-coefficient is
    zero wherever the v-coefficient is); ``UT`` may be empty (no averaging).
    Contributions reach each element in ascending row order, as a row-wise pass would add them.
    """
    nb = C.shape[0]
    K = VT.shape[1]
    with_u = UT.shape[1] == K
    active = np.empty((nb, K), np.int64)
    n_act = np.zeros(nb, np.int64)
    for i in range(nb):
        for k in range(K):
            if C[i, k] != 0.0 or (with_u and CU[i, k] != 0.0):
                active[i, n_act[i]] = k
                n_act[i] += 1
    for j in range(cptr.shape[0] - 1):
        for p in range(cptr[j], cptr[j + 1]):
            i = crows[p]
            x = cdata[p]
            for q in range(n_act[i]):
                k = active[i, q]
                VT[j, k] += C[i, k] * x
                if with_u:
                    UT[j, k] += CU[i, k] * x


@njit(fastmath=True, **_KW)
def dense_rank_update(Xb, C, V, CU, U):
    """V[k] += sum_i C[i, k] Xb[i] and U[k] += sum_i CU[i, k] Xb[i] over the hinge-active pairs.

    Both updates of a class read each active row once (the u-coefficient is
    zero wherever the v-coefficient is); ``U`` may be empty (no averaging).
    """
    nb = Xb.shape[0]
    K = V.shape[0]
    d = Xb.shape[1]
    with_u = U.shape[0] == K
    for k in range(K):
        v = V[k]
        for i in range(nb):
            a = C[i, k]
            if a != 0.0:
                xi = Xb[i]
                if with_u and CU[i, k] != 0.0:
                    u = U[k]
                    au = CU[i, k]
                    for j in range(d):
                        v[j] += a * xi[j]
                        u[j] += au * xi[j]
                else:
                    for j in range(d):
                        v[j] += a * xi[j]
            elif with_u and CU[i, k] != 0.0:
                u = U[k]
                au = CU[i, k]
                xi = Xb[i]
                for j in range(d):
                    u[j] += au * xi[j]


@njit(parallel=True, **_KW)
def averaged_weights(V, U, P, out):
    """out[k] = P21 v_k + P22 u_k (wbar, eq. 8) as float32; plain w = P11 v if U is empty."""
    K = V.shape[0]
    d = V.shape[1]
    avg = U.shape[1] == d
    for k in prange(K):
        if avg:
            for j in range(d):
                out[k, j] = np.float32(P[k, 1] * V[k, j] + P[k, 2] * U[k, j])
        else:
            for j in range(d):
                out[k, j] = np.float32(P[k, 0] * V[k, j])
