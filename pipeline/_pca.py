"""PCA of descriptors (optional per feature set, before the codebook; paper §3, Table 1)."""

from __future__ import annotations

import numpy as np
from threadpoolctl import threadpool_limits

from .errors import ConfigError, DataError

__all__ = ["fit_pca", "pca_project"]


def fit_pca(X: np.ndarray, n_components: int) -> tuple[np.ndarray, np.ndarray]:
    """Principal axes of a descriptor sample.

    Parameters
    ----------
    X : ndarray (n, d)
        Descriptor sample, n >= 2.
    n_components : int
        Target dimension d' <= d.

    Returns
    -------
    mean : ndarray (d,) float32
    components : ndarray (d', d) float32
        Orthonormal rows, by decreasing variance; each row's sign is fixed so
        that its largest-magnitude entry is positive (deterministic output).

    Notes
    -----
    Eigen-decomposition of the d x d covariance in float64 (d is at most a
    few hundred for HOG+LBP), so the cost is one pass over the sample.
    """
    X = np.asarray(X)
    if X.ndim != 2 or X.shape[0] < 2:
        raise DataError(f"PCA needs a (n >= 2, d) descriptor sample, got shape {X.shape}")
    d = X.shape[1]
    if not 1 <= int(n_components) <= d:
        raise ConfigError(f"pca_dim={n_components} for {d}-dimensional descriptors: use 1 <= pca_dim <= {d}")
    Xd = X.astype(np.float64)
    mean = Xd.mean(axis=0)
    Xc = Xd - mean
    # One BLAS thread: a multi-threaded GEMM sums in an order that depends on how
    # many threads it got (fewer when another task holds the pool), and the codebook
    # of a rerun must be bit-identical to the first.
    with threadpool_limits(limits=1):
        cov = Xc.T @ Xc / (X.shape[0] - 1)
        vals, vecs = np.linalg.eigh(cov)
    order = np.argsort(vals)[::-1][: int(n_components)]
    comps = vecs[:, order].T
    signs = np.sign(comps[np.arange(comps.shape[0]), np.argmax(np.abs(comps), axis=1)])
    signs[signs == 0] = 1.0
    comps *= signs[:, None]
    return mean.astype(np.float32), np.ascontiguousarray(comps, dtype=np.float32)


def pca_project(X: np.ndarray, mean: np.ndarray, components: np.ndarray) -> np.ndarray:
    """``(X - mean) @ components.T`` as float32 (n, d')."""
    X = np.asarray(X, dtype=np.float32)
    return np.ascontiguousarray((X - mean) @ components.T, dtype=np.float32)
