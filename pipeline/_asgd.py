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
from typing import Any, Sequence

import numba
import numpy as np
import scipy.sparse as sp

from . import _asgd_kernels as _k
from ._errors import ConfigError, DataError

logger = logging.getLogger(__name__)

__all__ = ["OneVsAllASGD"]

_MODES = ("exact", "block")
#: rows of the sample the automatic eta0 rule looks at (first rows of the first chunk)
ETA0_SAMPLE_ROWS = 512
#: candidate eta0 = ETA0_FACTORS / mean ||x||^2 over the sample
ETA0_FACTORS = tuple(2.0**e for e in range(-6, 5))
_STATE_VERSION = 1


def _as_rows(X: Any, n_features: int | None = None) -> tuple[bool, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Validate rows once: (dense, X, data, indices, indptr) with float32 values."""
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
            raise DataError(f"X has shape {dense_X.shape}; pass a 2-D (n_samples, n_features) array")
        n, d = dense_X.shape
        data = np.empty(0, np.float32)
        indices = np.empty(0, np.int64)
        indptr = np.zeros(1, np.int64)
        is_dense = True
    if n_features is not None and d != n_features:
        raise DataError(f"X has {d} features but the model was built for n_features={n_features}; pass matching rows")
    return is_dense, dense_X, data, indices, indptr


def _check_positive(name: str, value: Any) -> float:
    if not isinstance(value, numbers.Real) or not np.isfinite(value) or value <= 0:
        raise ConfigError(f"{name}={value!r} must be a positive finite number")
    return float(value)


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
        all classes by one GEMM, the hinge-active rows folded into V and U by a
        rank-``block_size`` GEMM update. Margins are corrected inside the block
        with the block's Gram matrix, so the result equals the exact mode up to
        float rounding (not bit-equal).
    n_threads : int or None
        numba threads used for the class axis (None: numba's default).
    block_size : int
        Rows per block in block mode.

    Notes
    -----
    Step t counts the steps already taken by a class (t = 0 for the first row),
    eta_t = eta0 / (1 + lam eta0 t)^c, alpha = 1 / (t + 1). Needs lam * eta0 < 1
    so that the decay factor 1 - lam eta stays positive.

    Automatic eta0 (as in Bottou's sgd code): on the first ``ETA0_SAMPLE_ROWS``
    rows of the first chunk, every candidate ``f / mean ||x||^2`` with f in
    ``ETA0_FACTORS`` (capped below 1/lam) runs one plain SGD pass; each class
    takes the candidate with the lowest objective (eq. 3 averaged over the
    sample). The rule looks at one class at a time, so splitting classes across
    models does not change it.
    """

    def __init__(self, n_features: int, classes: Any, *, lam: Any, eta0: Any = None, c: float = 1.0,
                 average: bool | int = True, fit_intercept: bool = True, mode: str = "exact",
                 n_threads: int | None = None, block_size: int = 128) -> None:
        if not isinstance(n_features, numbers.Integral) or n_features <= 0:
            raise ConfigError(f"n_features={n_features!r} must be a positive int")
        cls = np.asarray(classes)
        if cls.ndim != 1 or cls.size == 0 or not np.issubdtype(cls.dtype, np.integer):
            raise ConfigError(f"classes={classes!r} must be a non-empty 1-D sequence of int class ids")
        K = cls.size
        lam_arr = np.broadcast_to(np.asarray(lam, dtype=np.float64), (K,)).copy()
        if not np.all(np.isfinite(lam_arr) & (lam_arr > 0)):
            raise ConfigError(f"lam={lam!r} must be positive and finite (one value or one per class)")
        if eta0 is None:
            eta0_arr = np.full(K, np.nan)
        else:
            eta0_arr = np.broadcast_to(np.asarray(eta0, dtype=np.float64), (K,)).copy()
            if not np.all(np.isfinite(eta0_arr) & (eta0_arr > 0)):
                raise ConfigError(f"eta0={eta0!r} must be positive and finite, or None for the automatic rule")
            if np.any(lam_arr * eta0_arr >= 1.0):
                raise ConfigError(f"lam * eta0 must be < 1 (got max {np.max(lam_arr * eta0_arr):g}); lower eta0")
        if c not in (1.0, 2.0 / 3.0) and not (isinstance(c, numbers.Real) and 0.5 < c <= 1.0):
            raise ConfigError(f"c={c!r} must be 1 or 2/3 (any value in (0.5, 1] is accepted)")
        if isinstance(average, (bool, np.bool_)):
            avg, avg_start = bool(average), 0
        elif isinstance(average, numbers.Integral) and average >= 0:
            avg, avg_start = True, int(average)
        else:
            raise ConfigError(f"average={average!r} must be a bool or a non-negative int (averaging start)")
        if mode not in _MODES:
            raise ConfigError(f"mode={mode!r} must be one of {_MODES}")
        if n_threads is not None and (not isinstance(n_threads, numbers.Integral) or n_threads < 1):
            raise ConfigError(f"n_threads={n_threads!r} must be a positive int or None")
        if not isinstance(block_size, numbers.Integral) or block_size < 1:
            raise ConfigError(f"block_size={block_size!r} must be a positive int")
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
        dense, Xd, data, indices, indptr = _as_rows(X, self.n_features)
        n = Xd.shape[0] if dense else indptr.size - 1
        labels = np.asarray(y)
        if labels.shape != (n,) or not np.issubdtype(labels.dtype, np.integer):
            raise DataError(f"y has shape {labels.shape} dtype {labels.dtype}; pass ({n},) int class ids")
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
        """Block mode: margins by GEMM, scalar schedule in numba, rank-nb updates by GEMM."""
        K = self.n_classes
        m = rows.size
        sequential = bool(m == labels.size and np.all(rows[1:] - rows[:-1] == 1) and rows[0] == 0)
        pos = 0
        B = self.block_size
        V, U = self._V, self._U
        while pos < m:
            _k.renorm_due(V, U, self._P, self._t, self.lam, self.eta0, self.c, self.avg_start, self.average)
            nb = _k.steps_before_renorm(self._P, self._t, self.lam, self.eta0, self.c, self.avg_start,
                                        self.average, min(B, m - pos))
            idx = rows[pos:pos + nb]
            blabels = labels[idx]
            if dense:
                Xb = Xd[pos:pos + nb] if sequential else Xd[idx]
                M = Xb @ V.T
                G = Xb @ Xb.T
            else:
                bdata, bind, bptr = _gather_csr(data, indices, indptr, idx)
                M = np.empty((nb, K), np.float32)
                _k.csr_margins(bdata, bind, bptr, V, M)
                Xb = sp.csr_array((bdata, bind, bptr), shape=(nb, self.n_features))
                G = (Xb @ Xb.T).toarray().astype(np.float32, copy=False)
            CV = np.empty((nb, K), np.float32)
            CU = np.zeros((nb, K), np.float32)
            _k.block_coefficients(M, G, blabels, self.classes, self._P, self._b, self._bbar, self._t,
                                  self.lam, self.eta0, self.c, self.avg_start, self.average,
                                  self.fit_intercept, CV, CU)
            if dense:
                V += CV.T @ Xb
                if self.average:
                    U += CU.T @ Xb
            else:
                _k.csr_rank_update(bdata, bind, bptr, CV, V)
                if self.average:
                    _k.csr_rank_update(bdata, bind, bptr, CU, U)
            pos += nb

    def _choose_eta0(self, dense, Xd, data, indices, indptr, labels, rows) -> None:
        """Bottou-style eta0 per class from the first rows of the first chunk (see class Notes)."""
        todo = np.flatnonzero(np.isnan(self.eta0))
        sample = rows[:ETA0_SAMPLE_ROWS]
        ns = sample.size
        if dense:
            Xs = Xd[sample]
            sq = np.einsum("ij,ij->i", Xs, Xs, dtype=np.float64)
        else:
            sdata, sind, sptr = _gather_csr(data, indices, indptr, sample)
            Xs = sp.csr_array((sdata, sind, sptr), shape=(ns, self.n_features))
            sq = np.add.reduceat(np.square(sdata, dtype=np.float64), sptr[:-1]) if sdata.size else np.zeros(ns)
            sq[np.diff(sptr) == 0] = 0.0
        ref = 1.0 / max(float(np.mean(sq)), 1e-12)
        cands = np.array(ETA0_FACTORS) * ref
        cls = np.repeat(self.classes[todo], cands.size)
        lam = np.repeat(self.lam[todo], cands.size)
        eta = np.tile(cands, todo.size)
        eta = np.minimum(eta, 0.5 / lam)
        trial = OneVsAllASGD(self.n_features, cls, lam=lam, eta0=eta, c=self.c, average=False,
                             fit_intercept=self.fit_intercept, mode="block" if dense else "exact")
        slabels = labels[sample]
        if dense:
            trial._partial_fit_rows(True, np.ascontiguousarray(Xs), data, indices, indptr, slabels, None)
        else:
            trial._partial_fit_rows(False, Xd, sdata, sind, sptr, slabels, None)
        W = trial.coef_
        scores = np.asarray(Xs @ W.T, dtype=np.float64) + trial.intercept_
        yy = np.where(slabels[:, None] == cls[None, :], 1.0, -1.0)
        obj = 0.5 * lam * np.einsum("kj,kj->k", W, W, dtype=np.float64) + np.maximum(0.0, 1.0 - yy * scores).mean(0)
        obj = np.where(np.isfinite(obj), obj, np.inf).reshape(todo.size, cands.size)
        best = np.argmin(obj, axis=1)
        self.eta0[todo] = eta.reshape(todo.size, cands.size)[np.arange(todo.size), best]
        logger.debug("automatic eta0 for %d classes: %s", todo.size, self.eta0[todo])

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
            dense, Xd, data, indices, indptr = _as_rows(X, self.n_features)
            n = indptr.size - 1
            M = np.empty((n, self.n_classes), np.float32)
            _k.csr_margins(data, indices, indptr, self.coef_, M)
        else:
            _, Xd, *_ = _as_rows(X, self.n_features)
            M = Xd @ self.coef_.T
        M += self.intercept_
        return M

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, np.ndarray]:
        """Everything needed to continue bit-identically, as numpy arrays (copies)."""
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
            "V": self._V.copy(),
            "U": self._U.copy(),
            "P": self._P.copy(),
            "b": self._b.copy(),
            "bbar": self._bbar.copy(),
            "t": self._t.copy(),
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
                    mode=str(d["mode"]), n_threads=n_threads, block_size=int(d["block_size"]))
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
