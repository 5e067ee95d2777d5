"""One-vs-all linear SVMs trained by averaged SGD (Lin et al., CVPR 2011, §4, eqs. 3-9).

Two public objects:

- :class:`OneVsAllASGD`, the solver state of the binary problems of a subset of
  the classes, updated chunk by chunk (``partial_fit``). This is what the
  distributed training workflow keeps in its per-machine actors: every actor
  owns a subset of the classes and sees every chunk once per epoch.
- :class:`ASGDClassifier`, a scikit-learn estimator on top of it, and
  :func:`fit_lambda_grid`, several lambdas trained in one pass over the data
  (the grid is laid out along the class axis of one solver).

The numeric kernels are in :mod:`._asgd_kernels`.
"""

from __future__ import annotations

import logging
import numbers
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Sequence

import numba
import numpy as np
import scipy.sparse as sp
from sklearn.base import BaseEstimator, ClassifierMixin, clone
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, check_random_state, validate_data
from threadpoolctl import threadpool_limits

from . import _asgd_kernels as _k
from .errors import ArrayError, ConfigError, DataError
from ._params import Interval, Options, StrOptions, check_params

logger = logging.getLogger(__name__)

__all__ = ["OneVsAllASGD", "ASGDClassifier", "check_asgd_params", "fit_lambda_grid"]

_MODES = ("exact", "block")
#: rows of the sample the automatic eta0 rule looks at (first rows of the first chunk)
ETA0_SAMPLE_ROWS = 1024
#: trial passes over the sample per candidate (one short pass favours too small an eta0)
ETA0_TRIAL_PASSES = 3
#: candidate eta0 = ETA0_FACTORS / mean ||x||^2 over the sample
ETA0_FACTORS = tuple(2.0**e for e in range(-6, 5))
#: at most this many classes (the sample's most frequent labels) run the trial passes
ETA0_TRIAL_CLASSES = 16
_STATE_VERSION = 1
#: valid values of the eqs. 3-9 settings, declared once: ``ASGDClassifier`` checks them in ``fit`` /
#: ``partial_fit``, ``OneVsAllASGD`` in its constructor (per value when given one per class), and the
#: experiment config's ``train`` section through :func:`check_asgd_params`
_SETTINGS: dict[str, list[Any]] = {
    "lam": [Interval(numbers.Real, 0, None, closed="neither")],
    "eta0": [Interval(numbers.Real, 0, None, closed="neither"), None],
    "c": [Interval(numbers.Real, 0.5, 1.0, closed="right")],
    "average": ["boolean", Interval(numbers.Integral, 0, None, closed="left")],
    "fit_intercept": ["boolean"],
    "mode": [StrOptions(set(_MODES))],
    "block_size": [Interval(numbers.Integral, 1, None, closed="left")],
    "block_gram": ["boolean"],
}
_SOLVER_SETTINGS = {**_SETTINGS, "n_threads": [Interval(numbers.Integral, 1, None, closed="left"), None]}
_NO_GRAM = np.empty((0, 0), np.float32)
_NO_U = np.empty((0, 0), np.float32)  # block mode without averaging: no u to update


def as_rows(X: Any, n_features: int | None = None) -> tuple[bool, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Validate rows once: (dense, X, data, indices, indptr) with float32 values.

    What ``OneVsAllASGD._partial_fit_rows`` takes with a row order; the
    estimator's epochs and ``benchmarks/bench_asgd.py`` call it so.
    """
    if sp.issparse(X):
        X = sp.csr_array(X) if not isinstance(X, (sp.csr_array, sp.csr_matrix)) else X
        data = np.ascontiguousarray(X.data, dtype=np.float32)
        indices = np.ascontiguousarray(X.indices, dtype=np.int64)
        indptr = np.ascontiguousarray(X.indptr, dtype=np.int64)
        n, d = X.shape
        dense_X = np.empty((0, 0), np.float32)
        is_dense = False
    else:
        dense_X = np.ascontiguousarray(X, dtype=np.float32)
        if dense_X.ndim != 2:
            raise ArrayError(f"X has shape {dense_X.shape}; pass a 2-D (n_samples, n_features) array")
        n, d = dense_X.shape
        data = np.empty(0, np.float32)
        indices = np.empty(0, np.int64)
        indptr = np.zeros(1, np.int64)
        is_dense = True
    if n_features is not None and d != n_features:
        raise ArrayError(f"X has {d} features but the model was built for n_features={n_features}; pass matching rows")
    return is_dense, dense_X, data, indices, indptr


class OneVsAllASGD:
    """ASGD state of the one-vs-all linear SVMs of a subset of the classes (paper §4).

    Each owned class ``k`` is the binary problem eq. 3 with targets +1 where
    ``y == classes[k]`` and -1 elsewhere, trained by eqs. 4-7 with the three
    operation transform of eqs. 8-9. The per-class math is independent: a model
    owning classes {0, 1} gives the same result as two models owning {0} and {1}.

    Parameters
    ----------
    n_features : int
        Row length d.
    classes : array-like of int, shape (K,)
        Class ids this model trains (may repeat, e.g. with a per-column ``lam``).
    lam : float or array-like (K,)
        lambda of eq. 3 (per column if an array: a lambda grid along the class axis).
    eta0 : float, array-like (K,) or None
        eta0 of eq. 7. None: chosen per class on the first chunk seen, see Notes.
    c : float
        Exponent of eq. 7, 1 or 2/3.
    average : bool or int
        True (or 0): averaged SGD, alpha_t = 1/t (eq. 6). An int n > 0 starts the
        average after n steps (alpha = 1 before). False: plain SGD (eq. 5).
    fit_intercept : bool
        Learn b (not regularised, as in eq. 3).
    mode : {"exact", "block"}
        ``"exact"``: one row at a time, one dot and two axpys per row and class.
        ``"block"``: blocks of ``block_size`` rows; margins of the block against
        all classes by one GEMM (``Xb @ V.T``), then the hinge-active (row,
        class) pairs folded into V and U as one rank-``block_size`` update per
        class, with the same step schedule and averaging per row. Every row of
        a block sees the margins of the block's start (decay and intercept are
        current), so it is not equal to the per-row algorithm; with
        ``block_gram=True`` the margins are corrected by the block's Gram
        matrix and the result equals the exact mode up to float rounding.
    n_threads : int or None
        numba threads used for the class axis (None: numba's default).
    block_size : int
        Rows per block in block mode.
    block_gram : bool
        Correct the in-block margins with the Gram matrix ``Xb @ Xb.T`` (exact
        to rounding, costs ``block_size / 2`` extra multiply-adds per row and feature).

    Notes
    -----
    Step t counts the steps already taken by a class (t = 0 for the first row),
    eta_t = eta0 / (1 + lam eta0 t)^c, alpha = 1 / (t + 1). Needs lam * eta0 < 1
    so that the decay factor 1 - lam eta stays positive.

    Automatic eta0 (as in Bottou's sgd code): on the first ``ETA0_SAMPLE_ROWS``
    rows of the first chunk, candidates ``f / mean ||x||^2`` with f in
    ``ETA0_FACTORS`` (capped at ``0.5 / lam``, so ``lam * eta0`` stays well
    below 1), visited by a bracketing walk from f = 1 and 2 towards the lower
    objective until it stops falling (a few trials instead of every candidate;
    the tests check it picks what the full sweep picks), each run ``ETA0_TRIAL_PASSES`` passes of
    the real run (same schedule, averaging and mode) for the
    ``ETA0_TRIAL_CLASSES`` most frequent labels of the sample; the candidate
    with the lowest eq. 3 objective (on the sample, mean over those classes) is
    the eta0 of every class with that lambda. One value per lambda keeps the
    one-vs-all scores comparable across classes: a per-class choice from a few
    positives scatters eta0 over decades, and with it the scale of each class's
    scores, which the argmax over classes then compares. The rule depends on the sample only, not on the owned
    classes, so splitting classes across models does not change it.
    """

    def __init__(self, n_features: int, classes: Any, *, lam: Any, eta0: Any = None, c: float = 1.0,
                 average: bool | int = True, fit_intercept: bool = True, mode: str = "exact",
                 n_threads: int | None = None, block_size: int = 256, block_gram: bool = False) -> None:
        if not isinstance(n_features, numbers.Integral) or n_features <= 0:
            raise ConfigError(f"n_features={n_features!r} must be a positive int")
        cls = np.asarray(classes)
        if cls.ndim != 1 or cls.size == 0 or not np.issubdtype(cls.dtype, np.integer):
            raise ConfigError(f"classes={classes!r} must be a non-empty 1-D sequence of int class ids")
        K = cls.size
        lam_arr = _per_class("lam", lam, K)
        eta0_arr = np.full(K, np.nan) if eta0 is None else _per_class("eta0", eta0, K)
        if np.any(lam_arr * eta0_arr >= 1.0):  # NaN (automatic eta0) compares False
            raise ConfigError(f"lam * eta0 must be < 1 (got max {np.nanmax(lam_arr * eta0_arr):g}); lower eta0")
        check_params(_SOLVER_SETTINGS, {"c": c, "average": average, "fit_intercept": fit_intercept, "mode": mode,
                                        "n_threads": n_threads, "block_size": block_size, "block_gram": block_gram},
                     where="OneVsAllASGD")
        avg, avg_start = (bool(average), 0) if isinstance(average, (bool, np.bool_)) else (True, int(average))
        d = int(n_features)
        self.n_features = d
        self.classes = cls.astype(np.int64)
        self.lam = lam_arr
        self.eta0 = eta0_arr
        self.c = float(c)
        self.average = avg
        self.avg_start = avg_start
        self.fit_intercept = bool(fit_intercept)
        self.mode = mode
        self.n_threads = None if n_threads is None else int(n_threads)
        self.block_size = int(block_size)
        self.block_gram = bool(block_gram)
        self._V = np.zeros((K, d), np.float32)
        self._U = np.zeros((K, d if avg else 0), np.float32)
        self._P = np.tile(np.array([1.0, 0.0, 1.0]), (K, 1))
        self._b = np.zeros(K, np.float64)
        self._bbar = np.zeros(K, np.float64)
        self._t = np.zeros(K, np.int64)

    # ------------------------------------------------------------------ training
    @property
    def n_classes(self) -> int:
        """Number of owned binary problems K."""
        return self.classes.size

    @property
    def t(self) -> np.ndarray:
        """(K,) int64 steps taken per class (eq. 7's t)."""
        return self._t.copy()

    def partial_fit(self, X: Any, y: Any) -> "OneVsAllASGD":
        """One pass over the rows of a chunk, in order, for every owned class.

        Parameters
        ----------
        X : (n, d) float32 array or scipy CSR matrix
            Rows (other float dtypes are converted to float32).
        y : (n,) int
            Class id of each row; class k's target is +1 where ``y == classes[k]``.
        """
        rows = self._validate(X, y)
        self._partial_fit_rows(*rows, None)
        return self

    def _validate(self, X: Any, y: Any) -> tuple:
        dense, Xd, data, indices, indptr = as_rows(X, self.n_features)
        n = Xd.shape[0] if dense else indptr.size - 1
        labels = np.asarray(y)
        if labels.shape != (n,) or not np.issubdtype(labels.dtype, np.integer):
            raise ArrayError(f"y has shape {labels.shape} dtype {labels.dtype}; pass ({n},) int class ids")
        return dense, Xd, data, indices, indptr, labels.astype(np.int64, copy=False)

    def _partial_fit_rows(self, dense, Xd, data, indices, indptr, labels, rows) -> None:
        """Train on ``rows`` (int64 order, None = all in order) of validated arrays."""
        n = labels.size
        if n == 0:
            return
        if rows is None:
            rows = np.arange(n, dtype=np.int64)
        prev = numba.get_num_threads()
        if self.n_threads is not None:
            numba.set_num_threads(min(self.n_threads, numba.config.NUMBA_NUM_THREADS))
        try:
            if np.isnan(self.eta0).any():
                self._choose_eta0(dense, Xd, data, indices, indptr, labels, rows)
            if self.mode == "exact":
                n_groups = min(self.n_classes, numba.get_num_threads())
                _k.asgd_rows(dense, Xd, data, indices, indptr, rows, labels, self.classes,
                             self._V, self._U, self._P, self._b, self._bbar, self._t,
                             self.lam, self.eta0, self.c, self.avg_start, self.average,
                             self.fit_intercept, n_groups, 32)
            else:
                self._block_pass(dense, Xd, data, indices, indptr, labels, rows)
        finally:
            if self.n_threads is not None:
                numba.set_num_threads(prev)

    def _block_pass(self, dense, Xd, data, indices, indptr, labels, rows) -> None:
        """Block mode over ``rows``: the classes split into one group per thread.

        The binary problems are independent, so each group walks all the rows
        on its own thread with serial kernels and one-thread BLAS: margins by
        GEMM, scalar schedule in numba, rank-nb updates. Nothing is shared but
        the (read-only) rows, and no thread pool spins next to another (numba's
        OpenMP workers waiting beside OpenBLAS's halved the GEMM speed).
        """
        K = self.n_classes
        n_groups = min(K, self.n_threads or numba.get_num_threads())
        sequential = bool(rows.size == labels.size and rows[0] == 0 and np.all(rows[1:] - rows[:-1] == 1))
        bounds = [(g * K // n_groups, (g + 1) * K // n_groups) for g in range(n_groups)]
        with threadpool_limits(1, user_api="blas"):
            if n_groups == 1:
                self._block_pass_group(0, K, dense, Xd, data, indices, indptr, labels, rows, sequential)
                return
            with ThreadPoolExecutor(n_groups, thread_name_prefix="lsic-asgd") as pool:
                futures = [pool.submit(self._block_pass_group, k0, k1, dense, Xd, data, indices, indptr,
                                       labels, rows, sequential) for k0, k1 in bounds]
                for f in futures:
                    f.result()

    def _block_pass_group(self, k0, k1, dense, Xd, data, indices, indptr, labels, rows, sequential) -> None:
        """Block mode for classes ``k0 .. k1 - 1`` (views of the state, updated in place).

        CSR rows work on transposed copies of the group's v and u, (d, K), and
        walk each block column by column: a row of class values is read and
        updated once per block, contiguously; the copies are written back at
        the end and around every fold-back.
        """
        classes, lam, eta0 = self.classes[k0:k1], self.lam[k0:k1], self.eta0[k0:k1]
        V, P, b, bbar, t = self._V[k0:k1], self._P[k0:k1], self._b[k0:k1], self._bbar[k0:k1], self._t[k0:k1]
        U = self._U[k0:k1] if self.average else _NO_U
        VT = UT = None
        if not dense:
            VT = np.empty((self.n_features, k1 - k0), np.float32)
            UT = np.empty_like(VT) if self.average else _NO_U
            _transpose_into(V, U, VT, UT)
        K = k1 - k0
        m = rows.size
        pos = 0
        try:
            while pos < m:
                nb = _k.steps_before_renorm(P, t, lam, eta0, self.c, self.avg_start, self.average,
                                            min(self.block_size, m - pos))
                if nb == 0:
                    if VT is not None:
                        _transpose_into(VT, UT, V, U)
                    _k.renorm_due(V, U, P, t, lam, eta0, self.c, self.avg_start, self.average)
                    if VT is not None:
                        _transpose_into(V, U, VT, UT)
                    continue
                idx = rows[pos:pos + nb]
                if dense:
                    Xb = Xd[pos:pos + nb] if sequential else Xd[idx]
                    M = Xb @ V.T
                    G = Xb @ Xb.T if self.block_gram else _NO_GRAM
                else:
                    bdata, bind, bptr = _gather_csr(data, indices, indptr, idx)
                    cols = _k.csr_to_csc(bdata, bind, bptr, self.n_features)
                    M = np.empty((nb, K), np.float32)
                    _k.csc_margins_t(*cols, VT, M)
                    if self.block_gram:
                        Xb = sp.csr_array((bdata, bind, bptr), shape=(nb, self.n_features))
                        G = (Xb @ Xb.T).toarray().astype(np.float32, copy=False)
                    else:
                        G = _NO_GRAM
                CV = np.empty((nb, K), np.float32)
                CU = np.zeros((nb, K), np.float32)
                _k.block_coefficients(M, G, labels[idx], classes, P, b, bbar, t, lam, eta0, self.c,
                                      self.avg_start, self.average, self.fit_intercept, CV, CU)
                if dense:
                    _k.dense_rank_update(Xb, CV, V, CU, U)
                else:
                    _k.csc_rank_update_t(*cols, CV, VT, CU, UT)
                pos += nb
        finally:
            if VT is not None:
                _transpose_into(VT, UT, V, U)

    def _choose_eta0(self, dense, Xd, data, indices, indptr, labels, rows) -> None:
        """Bottou-style eta0 from the first rows of the first chunk, one value per lambda (class Notes)."""
        todo = np.flatnonzero(np.isnan(self.eta0))
        sample = rows[:ETA0_SAMPLE_ROWS]
        ns = sample.size
        if dense:
            Xs = np.ascontiguousarray(Xd[sample])
            sq = np.einsum("ij,ij->i", Xs, Xs, dtype=np.float64)
        else:
            sdata, sind, sptr = _gather_csr(data, indices, indptr, sample)
            Xs = sp.csr_array((sdata, sind, sptr), shape=(ns, self.n_features))
            sq = np.add.reduceat(np.square(sdata, dtype=np.float64), sptr[:-1]) if sdata.size else np.zeros(ns)
            sq[np.diff(sptr) == 0] = 0.0
        ref = 1.0 / max(float(np.mean(sq)), 1e-12)
        cands = np.array(ETA0_FACTORS) * ref
        slabels = labels[sample]
        # trial classes: the most frequent labels of the sample (ties: smaller id), a function of the
        # sample alone, so every model seeing this chunk picks the same eta0 whatever classes it owns
        ids, counts = np.unique(slabels, return_counts=True)
        tcls = ids[np.lexsort((ids, -counts))][:ETA0_TRIAL_CLASSES]
        lams = np.unique(self.lam[todo])
        L, T, C = lams.size, tcls.size, cands.size
        # the trial is the real run (same schedule, averaging and mode) on the sample: block mode
        # with stale in-block margins tolerates smaller steps than the per-row algorithm
        average = self.avg_start if self.average and self.avg_start > 0 else self.average

        def objectives(pairs: list[tuple[int, int]]) -> list[float]:
            """Mean eq. 3 objective over the trial classes after the trial passes, per (lambda, candidate)."""
            lam = np.repeat([lams[li] for li, _ in pairs], T)
            eta = np.minimum(np.repeat([cands[ci] for _, ci in pairs], T), 0.5 / lam)
            cls = np.tile(tcls, len(pairs))
            trial = OneVsAllASGD(self.n_features, cls, lam=lam, eta0=eta, c=self.c, average=average,
                                 fit_intercept=self.fit_intercept, mode=self.mode, n_threads=self.n_threads,
                                 block_size=self.block_size, block_gram=self.block_gram)
            for _ in range(ETA0_TRIAL_PASSES):
                if dense:
                    trial._partial_fit_rows(True, Xs, data, indices, indptr, slabels, None)
                else:
                    trial._partial_fit_rows(False, Xd, sdata, sind, sptr, slabels, None)
            W = trial.coef_
            scores = np.asarray(Xs @ W.T, dtype=np.float64) + trial.intercept_
            yy = np.where(slabels[:, None] == cls[None, :], 1.0, -1.0)
            obj = 0.5 * lam * np.einsum("kj,kj->k", W, W, dtype=np.float64) + \
                np.maximum(0.0, 1.0 - yy * scores).mean(0)
            return list(np.where(np.isfinite(obj), obj, np.inf).reshape(len(pairs), T).mean(1))

        # Bottou's bracketing: start at 1 / mean ||x||^2 and its double, walk towards the lower
        # objective while it keeps falling; every lambda walks on its own, all in one trial per round
        obj = np.full((L, C), np.nan)

        def evaluate(pairs: list[tuple[int, int]]) -> None:
            for (li, ci), value in zip(pairs, objectives(pairs)):
                obj[li, ci] = value

        start = min(ETA0_FACTORS.index(1.0), C - 2)
        evaluate([(li, ci) for li in range(L) for ci in (start, start + 1)])
        step = np.where(obj[:, start + 1] < obj[:, start], 1, -1)
        last = np.where(step > 0, start + 1, start)  # the front of each lambda's walk
        walking = np.ones(L, bool)
        while True:
            pairs = [(li, int(last[li] + step[li])) for li in range(L)
                     if walking[li] and 0 <= last[li] + step[li] < C]
            if not pairs:
                break
            evaluate(pairs)
            walking[:] = False
            for li, ci in pairs:
                walking[li] = obj[li, ci] < obj[li, last[li]]  # still falling: take another step
                last[li] = ci
        best = np.argmin(np.where(np.isnan(obj), np.inf, obj), axis=1)
        chosen = np.minimum(cands[best], 0.5 / lams)
        self.eta0[todo] = chosen[np.searchsorted(lams, self.lam[todo])]
        logger.debug("automatic eta0 (lam %s, %d trial classes): %s", lams, T, chosen)

    # ------------------------------------------------------------------ results
    @property
    def coef_(self) -> np.ndarray:
        """(K, d) float32 weights: averaged wbar (eq. 6), or plain w when ``average=False``."""
        out = np.empty((self.n_classes, self.n_features), np.float32)
        _k.averaged_weights(self._V, self._U, self._P, out)
        return out

    @property
    def intercept_(self) -> np.ndarray:
        """(K,) float32 intercepts: averaged bbar, or plain b when ``average=False``."""
        return (self._bbar if self.average else self._b).astype(np.float32)

    def decision_function(self, X: Any) -> np.ndarray:
        """Scores ``X @ coef_.T + intercept_``, (n, K) float32, for dense or CSR ``X``."""
        if sp.issparse(X):
            dense, Xd, data, indices, indptr = as_rows(X, self.n_features)
            n = indptr.size - 1
            M = np.empty((n, self.n_classes), np.float32)
            _k.csr_margins(data, indices, indptr, self.coef_, M)
        else:
            _, Xd, *_ = as_rows(X, self.n_features)
            M = Xd @ self.coef_.T
        M += self.intercept_
        return M

    # ------------------------------------------------------------------ state
    def state_dict(self, copy: bool = True) -> dict[str, np.ndarray]:
        """Everything needed to continue bit-identically, as numpy arrays.

        Parameters
        ----------
        copy : bool
            ``True`` (default): copies. ``False``: the per-class arrays (``V``,
            ``U``, ...) are views of the live state, for writing it out at once
            without a second copy of the (n_classes, n_features) weights (a
            1,000-class, 16,384-dim model holds 131 MB in ``V`` and ``U``); they
            change with the next ``partial_fit``.
        """
        c = np.copy if copy else np.asarray
        return {
            "version": np.array(_STATE_VERSION),
            "n_features": np.array(self.n_features, np.int64),
            "classes": self.classes.copy(),
            "lam": self.lam.copy(),
            "eta0": self.eta0.copy(),
            "c": np.array(self.c),
            "average": np.array(self.average),
            "avg_start": np.array(self.avg_start, np.int64),
            "fit_intercept": np.array(self.fit_intercept),
            "mode": np.array(self.mode),
            "block_size": np.array(self.block_size, np.int64),
            "block_gram": np.array(self.block_gram),
            "V": c(self._V),
            "U": c(self._U),
            "P": c(self._P),
            "b": c(self._b),
            "bbar": c(self._bbar),
            "t": c(self._t),
        }

    @classmethod
    def from_state_dict(cls, d: dict[str, np.ndarray], *, n_threads: int | None = None) -> "OneVsAllASGD":
        """Rebuild a model from :meth:`state_dict` (arrays are copied)."""
        try:
            if int(d["version"]) != _STATE_VERSION:
                raise DataError(f"ASGD state version {int(d['version'])} is not {_STATE_VERSION}; re-train")
            avg = bool(d["average"])
            average = int(d["avg_start"]) if avg and int(d["avg_start"]) > 0 else avg
            eta0 = np.asarray(d["eta0"], np.float64)
            m = cls(int(d["n_features"]), np.asarray(d["classes"]), lam=np.asarray(d["lam"]),
                    eta0=None, c=float(d["c"]), average=average, fit_intercept=bool(d["fit_intercept"]),
                    mode=str(d["mode"]), n_threads=n_threads, block_size=int(d["block_size"]),
                    block_gram=bool(d["block_gram"]))
            m.eta0 = eta0.copy()
            for name in ("V", "U", "P", "b", "bbar", "t"):
                src = np.asarray(d[name])
                dst = getattr(m, "_" + name)
                if src.shape != dst.shape or src.dtype != dst.dtype:
                    raise DataError(f"ASGD state array {name!r} has shape {src.shape} dtype {src.dtype}, "
                                    f"expected {dst.shape} {dst.dtype}; the state is corrupt")
                dst[...] = src
        except KeyError as e:
            raise DataError(f"ASGD state is missing key {e.args[0]!r}; pass a dict from state_dict()") from None
        return m


def _per_class(key: str, value: Any, K: int) -> np.ndarray:
    """``value`` (one number or one per class) as a (K,) float64 array, each checked against ``_SETTINGS[key]``."""
    arr = np.asarray(value, dtype=np.float64)
    if arr.ndim > 1 or (arr.ndim == 1 and arr.size != K):
        raise ConfigError(f"{key} has shape {arr.shape}; give one value or one per class ({K})")
    arr = np.broadcast_to(arr, (K,)).copy()
    for v in np.unique(arr):
        check_params(_SETTINGS, {key: float(v)}, where="OneVsAllASGD")
    return arr


def _transpose_into(V, U, V_out, U_out) -> None:
    """``V_out[...] = V.T`` and, with averaging (``U`` not empty), ``U_out[...] = U.T``."""
    V_out[...] = V.T
    if U.size:
        U_out[...] = U.T


def _gather_csr(data, indices, indptr, idx):
    """CSR arrays of the rows ``idx`` (in that order)."""
    starts = indptr[idx]
    lens = indptr[idx + 1] - starts
    bptr = np.zeros(idx.size + 1, np.int64)
    np.cumsum(lens, out=bptr[1:])
    if idx.size and np.all(idx[1:] - idx[:-1] == 1):
        s, e = indptr[idx[0]], indptr[idx[-1] + 1]
        return data[s:e], indices[s:e], bptr
    take = np.repeat(starts - bptr[:-1], lens) + np.arange(bptr[-1])
    return data[take], indices[take], bptr


# ---------------------------------------------------------------------- estimator


class ASGDClassifier(ClassifierMixin, BaseEstimator):
    """One-vs-all linear SVMs (hinge loss + L2, eq. 3) by averaged SGD (Lin et al., CVPR 2011, §4).

    Parameters
    ----------
    lam : float, default=1e-4
        lambda of eq. 3 for the objective averaged over the n training rows,
        ``lam/2 ||w||^2 + (1/n) sum_t max(0, 1 - y_t (w.x_t + b))``. It equals
        scikit-learn's ``SGDClassifier(alpha=lam)``, and ``LinearSVC(loss="hinge",
        C=1 / (lam * n))`` minimises the same objective (up to LinearSVC also
        penalising its intercept).
    eta0 : float or None, default=None
        eta0 of eq. 7; None chooses it per class on a sample of the first rows
        (see :class:`OneVsAllASGD`).
    c : float in (0.5, 1], default=1
        Exponent of the step schedule eta_t = eta0 / (1 + lam eta0 t)^c (eq. 7);
        the paper uses 1 or 2/3.
    epochs : int, default=5
        Passes over the data in :meth:`fit`.
    average : bool or int, default=True
        True: averaged SGD (eq. 6), the paper's method. An int n > 0 starts the
        average after n steps. False: plain SGD (eq. 5).
    fit_intercept : bool, default=True
    shuffle : bool, default=True
        Shuffle the rows before every epoch of :meth:`fit` (:meth:`partial_fit`
        keeps the given order).
    random_state : int, RandomState or None
        Seed of the shuffles.
    n_jobs : int >= 1, -1 or None
        Threads over the class axis (numba); None or -1: all available.
    mode : {"exact", "block"}, default="exact"
        Per-row kernel, or blocks of rows with GEMM margins and rank-b updates
        (see :class:`OneVsAllASGD`).
    block_size : int, default=256
        Rows per block in block mode.
    block_gram : bool, default=False
        Block mode only: correct in-block margins with the Gram matrix (equal
        to the exact mode up to float rounding).

    Attributes
    ----------
    classes_ : (n_classes,) labels
    coef_ : (n_classes, n_features) float32, or (1, n_features) for two classes
    intercept_ : (n_classes,) float32, or (1,)
    eta0_ : (n_classes,) or (1,) float64 step sizes used (chosen or given)
    t_ : int, steps taken per class
    n_features_in_ : int

    Notes
    -----
    Two classes train one binary problem (positive = ``classes_[1]``), so
    ``decision_function`` returns shape (n,) as in scikit-learn. Rows are
    converted to float32. See also :func:`fit_lambda_grid` to train several
    lambdas in one pass over the data.

    References
    ----------
    Lin et al., "Large-scale image classification: fast feature extraction and
    SVM training", CVPR 2011, eqs. 3-9. L. Bottou, "Stochastic gradient
    descent tricks", 2012 (eta0 on a sample).
    """

    _parameter_constraints: dict = {
        **_SETTINGS,
        "epochs": [Interval(numbers.Integral, 1, None, closed="left")],
        "shuffle": ["boolean"],
        "random_state": ["random_state"],
        "n_jobs": [Interval(numbers.Integral, 1, None, closed="left"), Options(numbers.Integral, {-1}), None],
    }

    def __init__(self, lam: float = 1e-4, *, eta0: float | None = None, c: float = 1.0, epochs: int = 5,
                 average: bool | int = True, fit_intercept: bool = True, shuffle: bool = True,
                 random_state: Any = None, n_jobs: int | None = None, mode: str = "exact",
                 block_size: int = 256, block_gram: bool = False) -> None:
        self.lam = lam
        self.eta0 = eta0
        self.c = c
        self.epochs = epochs
        self.average = average
        self.fit_intercept = fit_intercept
        self.shuffle = shuffle
        self.random_state = random_state
        self.n_jobs = n_jobs
        self.mode = mode
        self.block_size = block_size
        self.block_gram = block_gram

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = True
        return tags

    # -------------------------------------------------------------- internals
    def _threads(self) -> int | None:
        return None if self.n_jobs in (None, -1) else int(self.n_jobs)

    def _new_model(self, n_features: int, n_classes: int, lam: Any = None) -> OneVsAllASGD:
        owned = np.arange(n_classes) if n_classes > 2 else np.array([1])
        lam = self.lam if lam is None else lam
        return OneVsAllASGD(n_features, owned, lam=lam, eta0=self.eta0, c=self.c, average=self.average,
                            fit_intercept=self.fit_intercept, mode=self.mode, n_threads=self._threads(),
                            block_size=self.block_size, block_gram=self.block_gram)

    def _validate_xy(self, X, y, reset):
        X, y = validate_data(self, X, y, accept_sparse="csr", dtype=[np.float32, np.float64],
                             reset=reset, order="C")
        check_classification_targets(y)
        return X, y

    def _publish(self, model: OneVsAllASGD, cols: slice | np.ndarray = slice(None)) -> None:
        self.model_ = model
        self.coef_ = model.coef_[cols]
        self.intercept_ = model.intercept_[cols]
        self.eta0_ = model.eta0[cols].copy()
        self.t_ = int(model.t[0])

    def _fit_epochs(self, model, X, y_idx, epochs, shuffle):
        rows = as_rows(X)
        rng = check_random_state(self.random_state)
        n = y_idx.size
        for _ in range(epochs):
            order = rng.permutation(n).astype(np.int64) if shuffle else None
            model._partial_fit_rows(*rows, y_idx, order)

    # -------------------------------------------------------------- API
    def fit(self, X: Any, y: Any) -> "ASGDClassifier":
        """Train ``epochs`` passes from scratch. X (n, d) dense or CSR, y (n,) labels."""
        self._validate_params()
        X, y = self._validate_xy(X, y, reset=True)
        self.classes_, y_idx = np.unique(y, return_inverse=True)
        if self.classes_.size < 2:
            raise ValueError(f"y has only one class {self.classes_!r}; pass at least two classes")
        model = self._new_model(X.shape[1], self.classes_.size)
        self._fit_epochs(model, X, y_idx.astype(np.int64), self.epochs, self.shuffle)
        self._publish(model)
        return self

    def partial_fit(self, X: Any, y: Any, classes: Any = None) -> "ASGDClassifier":
        """One pass over this chunk in the given order; ``classes`` required on the first call.

        Continuing the step counter t, so chunk-by-chunk equals one :meth:`fit`
        epoch over the concatenation with ``shuffle=False``.
        """
        first = not hasattr(self, "model_")
        if first:
            self._validate_params()
            if classes is None:
                raise ValueError("classes must be passed on the first call to partial_fit")
            self.classes_ = np.unique(np.asarray(classes))
            if self.classes_.size < 2:
                raise ValueError(f"classes={classes!r} has fewer than two labels; pass all labels")
        X, y = self._validate_xy(X, y, reset=first)
        if classes is not None and not first and not np.array_equal(np.unique(classes), self.classes_):
            raise ValueError(f"classes={classes!r} differ from the first call's {self.classes_!r}")
        if not np.all(np.isin(y, self.classes_)):
            raise ValueError(f"y has labels {np.setdiff1d(y, self.classes_)!r} not in classes_; "
                             "pass them in classes= on the first call")
        y_idx = np.searchsorted(self.classes_, y).astype(np.int64)
        model = self._new_model(X.shape[1], self.classes_.size) if first else self.model_
        self._fit_epochs(model, X, y_idx, 1, False)
        self._publish(model)
        return self

    def decision_function(self, X: Any) -> np.ndarray:
        """Scores (n, n_classes) float32, or (n,) for two classes (positive = ``classes_[1]``)."""
        check_is_fitted(self)
        X = validate_data(self, X, accept_sparse="csr", dtype=[np.float32, np.float64], reset=False,
                          order="C")
        if sp.issparse(X):
            X = sp.csr_array(X, dtype=np.float32)
            scores = (X @ self.coef_.T).astype(np.float32)
        else:
            scores = np.asarray(X, dtype=np.float32) @ self.coef_.T
        scores += self.intercept_
        return scores.ravel() if self.classes_.size == 2 else scores

    def predict(self, X: Any) -> np.ndarray:
        """Labels (n,): argmax of :meth:`decision_function` (sign for two classes)."""
        s = self.decision_function(X)
        idx = (s > 0).astype(np.intp) if s.ndim == 1 else s.argmax(axis=1)
        return self.classes_[idx]


def check_asgd_params(params: dict[str, Any], *, where: str) -> None:
    """Check ASGD settings given outside the estimator (a config section) against
    :attr:`ASGDClassifier._parameter_constraints`, the single source of their valid values.

    Raises
    ------
    ConfigError
        ``<where>.<key> must be ...``, one line.
    """
    check_params(ASGDClassifier._parameter_constraints, params, where=where)


def fit_lambda_grid(X: Any, y: Any, lams: Sequence[float], **params: Any) -> list[ASGDClassifier]:
    """Train one :class:`ASGDClassifier` per lambda in a single pass per epoch over the data.

    The (class, lambda) pairs are laid out along the class axis of one
    :class:`OneVsAllASGD`, so each row is read once per epoch for all lambdas.
    Each returned estimator equals ``ASGDClassifier(lam=l, **params).fit(X, y)``
    (exact mode: bit for bit; block mode: to float rounding).

    Parameters
    ----------
    X : (n, d) dense or CSR
    y : (n,) labels
    lams : sequence of float, length L
    **params : other :class:`ASGDClassifier` parameters.

    Returns
    -------
    list of L fitted :class:`ASGDClassifier`
    """
    lams = [float(v) for v in lams]
    if not lams:
        raise ConfigError("lams is empty; pass at least one lambda")
    base = ASGDClassifier(lam=lams[0], **params)
    base._validate_params()
    X, y = base._validate_xy(X, y, reset=True)
    classes, y_idx = np.unique(y, return_inverse=True)
    if classes.size < 2:
        raise ValueError(f"y has only one class {classes!r}; pass at least two classes")
    owned = np.arange(classes.size) if classes.size > 2 else np.array([1])
    Kc = owned.size
    model = OneVsAllASGD(X.shape[1], np.tile(owned, len(lams)), lam=np.repeat(lams, Kc), eta0=base.eta0,
                         c=base.c, average=base.average, fit_intercept=base.fit_intercept, mode=base.mode,
                         n_threads=base._threads(), block_size=base.block_size, block_gram=base.block_gram)
    base._fit_epochs(model, X, y_idx.astype(np.int64), base.epochs, base.shuffle)
    out = []
    for j, lam in enumerate(lams):
        est = clone(base).set_params(lam=lam)
        est.n_features_in_ = base.n_features_in_
        if hasattr(base, "feature_names_in_"):
            est.feature_names_in_ = base.feature_names_in_
        est.classes_ = classes
        est._publish(model, slice(j * Kc, (j + 1) * Kc))
        out.append(est)
    return out
