"""Fisher vector coding: soft posteriors of a diagonal GMM, first- and second-order statistics.

References
----------
F. Perronnin, J. Sanchez and T. Mensink, "Improving the Fisher kernel for
large-scale image classification", ECCV 2010 (signed square root, L2,
spatial pyramid). K. Chatfield, V. Lempitsky, A. Vedaldi and A. Zisserman,
"The devil is in the details: an evaluation of recent feature encoding
methods", BMVC 2011 (Caltech-101 settings: PCA-80, 256 components, pyramid
1x1 + 2x2 + 3x1, each region normalised).
"""

from __future__ import annotations

import numpy as np

from .errors import ConfigError
from ._pooling import Pyramid, blocks_or_whole, n_pyramid_blocks

__all__ = ["gmm_posteriors", "fisher_vector"]


def _check_gmm(Z: np.ndarray, means: np.ndarray, variances: np.ndarray, weights: np.ndarray):
    Z = np.asarray(Z, dtype=np.float64)
    mu = np.asarray(means, dtype=np.float64)
    var = np.asarray(variances, dtype=np.float64)
    w = np.asarray(weights, dtype=np.float64).reshape(-1)
    if Z.ndim != 2 or mu.ndim != 2 or var.shape != mu.shape or w.shape[0] != mu.shape[0] or Z.shape[1] != mu.shape[1]:
        raise ConfigError(
            f"descriptors {Z.shape}, GMM means {mu.shape}, variances {var.shape}, weights {w.shape} do not "
            "match: expected (n, d), (K, d), (K, d), (K,)"
        )
    if not (var > 0).all():
        raise ConfigError("GMM variances must be positive: refit the codebook")
    return Z, mu, var, w


def gmm_posteriors(Z: np.ndarray, means: np.ndarray, variances: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Soft assignments ``gamma_ik = w_k N(z_i; mu_k, diag(var_k)) / sum_j (...)``.

    Parameters
    ----------
    Z : ndarray (n, d)
    means, variances : ndarray (K, d)
        Diagonal GMM (e.g. ``GaussianMixture(covariance_type="diag")``'s
        ``means_`` and ``covariances_``).
    weights : ndarray (K,)
        Mixture weights, summing to 1.

    Returns
    -------
    gamma : ndarray (n, K) float64, rows summing to 1 (as ``predict_proba``).

    Notes
    -----
    The squared Mahalanobis distances come from two GEMMs
    (``z^2 . (1/var) - 2 z . (mu/var) + sum mu^2/var``) in float64, then a
    log-sum-exp per row.
    """
    Z, mu, var, w = _check_gmm(Z, means, variances, weights)
    return _posteriors(Z, mu, var, w)


def _posteriors(Z: np.ndarray, mu: np.ndarray, var: np.ndarray, w: np.ndarray) -> np.ndarray:
    prec = 1.0 / var
    d = Z.shape[1]
    log_det = np.log(var).sum(axis=1)
    maha = (Z * Z) @ prec.T - 2.0 * Z @ (mu * prec).T + (mu * mu * prec).sum(axis=1)
    logp = np.log(w) - 0.5 * (d * np.log(2.0 * np.pi) + log_det + maha)
    logp -= logp.max(axis=1, keepdims=True)
    np.exp(logp, out=logp)
    logp /= logp.sum(axis=1, keepdims=True)
    return logp


def fisher_vector(
    Z: np.ndarray,
    means: np.ndarray,
    variances: np.ndarray,
    weights: np.ndarray,
    xy: np.ndarray | None = None,
    image_shape: tuple[int, int] | None = None,
    pyramid: Pyramid = ((1, 1),),
) -> np.ndarray:
    """Fisher vector of one image, per spatial pyramid block, each block power- and L2-normalised.

    For the N descriptors ``z_i`` of a block, with posteriors ``gamma_ik``
    (:func:`gmm_posteriors`) and ``s_ik = (z_i - mu_k) / sigma_k``
    (elementwise, sigma = sqrt(var)):

    ``u_k = 1 / (N sqrt(w_k)) sum_i gamma_ik s_ik``,
    ``v_k = 1 / (N sqrt(2 w_k)) sum_i gamma_ik (s_ik^2 - 1)``,

    the block vector ``[u_1 .. u_K, v_1 .. v_K]`` (2 K d) then gets the signed
    square root ``sign(x) sqrt|x|`` and L2 normalisation.

    Parameters
    ----------
    Z : ndarray (n, d)
        Descriptors in the GMM's space (after the codebook's PCA).
    means, variances : ndarray (K, d)
    weights : ndarray (K,)
    xy, image_shape, pyramid
        See :func:`pyramid_blocks`; without ``xy`` all descriptors form one block.

    Returns
    -------
    x : ndarray (n_blocks * 2 * K * d,) float32
        Blocks in level order, each ``(2, K, d)`` row-major and of unit L2
        norm (an empty block is zeros). Not normalised as a whole: see
        :func:`normalize_feature`.

    Notes
    -----
    Perronnin et al. 2010's normalisation by the Fisher information
    (``1 / sqrt(w_k)``, ``1 / sqrt(2 w_k)``) is the closed-form
    approximation, as in VLFeat's ``vl_fisher``; posteriors are not
    sparsified. The statistics are summed per block with one GEMM per block
    (``gamma^T z``, ``gamma^T z^2``) in float64.
    """
    Z, mu, var, w = _check_gmm(Z, means, variances, weights)
    n, d = Z.shape
    K = mu.shape[0]
    pyramid, blocks = blocks_or_whole(n, xy, image_shape, pyramid, "fisher_vector")
    nb_ = n_pyramid_blocks(pyramid)
    out = np.zeros((nb_, 2, K, d), dtype=np.float64)
    if n == 0:
        return out.ravel().astype(np.float32)
    gamma = _posteriors(Z, mu, var, w)
    Z2 = Z * Z
    sigma = np.sqrt(var)
    for level in range(blocks.shape[1]):
        ids = blocks[:, level]
        for b in np.unique(ids):
            m = ids == b
            g = gamma[m]
            s0 = g.sum(axis=0)[:, None]  # (K, 1)
            s1 = g.T @ Z[m]  # (K, d)
            s2 = g.T @ Z2[m]
            N = float(m.sum())
            out[b, 0] = (s1 - mu * s0) / sigma / (N * np.sqrt(w)[:, None])
            out[b, 1] = ((s2 - 2.0 * mu * s1 + mu * mu * s0) / var - s0) / (N * np.sqrt(2.0 * w)[:, None])
    out = np.sign(out) * np.sqrt(np.abs(out))
    norms = np.sqrt((out.reshape(nb_, -1) ** 2).sum(axis=1))
    norms[norms == 0] = 1.0
    out /= norms[:, None, None, None]
    return out.ravel().astype(np.float32)
