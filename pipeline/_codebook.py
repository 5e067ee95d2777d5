"""Codebooks: optional PCA, then k-means (LCC, SVC; paper §3.1-3.2) or a diagonal GMM (FV) on a descriptor sample."""

from __future__ import annotations

import logging
from collections.abc import Mapping

import numpy as np

from .errors import ConfigError, DataError
from ._feature_sets import FeatureSet
from ._knn import IVFIndex, build_ivf, calibrate_n_probe
from ._pca import fit_pca, pca_project

__all__ = ["Codebook"]

logger = logging.getLogger(__name__)

_KMEANS_FULL_LIMIT = 50_000_000  # n * p below which full (Lloyd) KMeans is used


class Codebook:
    """A fitted codebook of one feature set: PCA (optional) and k-means centres or a GMM.

    Attributes
    ----------
    feature_set : FeatureSet
    centers : ndarray (p, d') float32
        Codewords B (rows), d' = ``feature_set.code_dim``; for FV the GMM means.
    pca_mean : ndarray (d,) float32 or None
    pca_components : ndarray (d', d) float32 or None
        For FV the rows are divided by the projection's standard deviation
        (whitened PCA), so :meth:`project` whitens.
    variances : ndarray (p, d') float32 or None
        FV only: diagonal GMM variances.
    weights : ndarray (p,) float32 or None
        FV only: GMM mixture weights.
    center_norms : ndarray (p,) float32
        ``||b_j||^2``, cached for the distance GEMM.
    """

    def __init__(
        self,
        feature_set: FeatureSet,
        centers: np.ndarray,
        pca_mean: np.ndarray | None = None,
        pca_components: np.ndarray | None = None,
        variances: np.ndarray | None = None,
        weights: np.ndarray | None = None,
    ) -> None:
        self.feature_set = feature_set
        self.centers = np.ascontiguousarray(centers, dtype=np.float32)
        self.pca_mean = None if pca_mean is None else np.ascontiguousarray(pca_mean, dtype=np.float32)
        self.pca_components = (
            None if pca_components is None else np.ascontiguousarray(pca_components, dtype=np.float32)
        )
        if (self.pca_mean is None) != (self.pca_components is None):
            raise DataError(f"codebook {feature_set.name!r}: pca_mean and pca_components must come together")
        p = feature_set.codebook_size
        if self.centers.ndim != 2 or self.centers.shape[0] != p:
            raise DataError(
                f"codebook {feature_set.name!r}: centers of shape {self.centers.shape}, expected ({p}, d)"
            )
        if self.pca_components is not None and self.pca_components.shape[0] != self.centers.shape[1]:
            raise DataError(
                f"codebook {feature_set.name!r}: pca_components {self.pca_components.shape} do not "
                f"match centers {self.centers.shape}"
            )
        self.variances = None if variances is None else np.ascontiguousarray(variances, dtype=np.float32)
        self.weights = None if weights is None else np.ascontiguousarray(weights, dtype=np.float32).reshape(-1)
        if feature_set.coding == "fv" and (
            self.variances is None or self.weights is None
            or self.variances.shape != self.centers.shape or self.weights.shape != (p,)
        ):
            raise DataError(
                f"codebook {feature_set.name!r} (fv) needs GMM variances ({p}, d) and weights ({p},) next to "
                "its means; re-run the codebook stage"
            )
        self.center_norms = np.einsum("ij,ij->i", self.centers, self.centers).astype(np.float32)
        self._ivf: IVFIndex | None = None
        self._ivf_probes: int | None = None

    @property
    def ivf(self) -> IVFIndex:
        """Inverted file over the codewords (``feature_set.ivf_lists`` lists), built on first use and kept.

        Built from the centres alone with a fixed seed, so every worker that
        loads the codebook builds the same index (see :func:`build_ivf`).
        """
        if self._ivf is None:
            self._ivf = build_ivf(self.centers, self.feature_set.ivf_lists, seed=0)
        return self._ivf

    @property
    def ivf_probes(self) -> int:
        """Lists each descriptor probes with ``knn="ivf"``: ``feature_set.n_probe``, or calibrated.

        With ``n_probe: null``, the fewest lists whose recall reaches
        ``feature_set.ivf_recall`` for kappa neighbours, estimated on 2,000
        codewords used as queries (:func:`calibrate_n_probe`), computed on
        first use with the index and kept. Deterministic, like the index; a
        stored codebook also records it (``to_arrays``), and one stored
        before the calibration existed probes a quarter of the lists, as it
        did then.
        """
        fs = self.feature_set
        if fs.n_probe is not None:
            return fs.n_probe
        if self._ivf_probes is None:
            self._ivf_probes = calibrate_n_probe(self.centers, self.ivf, fs.kappa, fs.ivf_recall, seed=0)
            logger.info("feature set %r: knn ivf probes %d of %d lists (calibrated to recall %.3f)",
                        fs.name, self._ivf_probes, self.ivf.n_lists, fs.ivf_recall)
        return self._ivf_probes

    @classmethod
    def fit(
        cls,
        descriptors: np.ndarray,
        feature_set: FeatureSet,
        *,
        random_state: int | None = 0,
    ) -> "Codebook":
        """PCA (if ``feature_set.pca_dim``) then k-means, or for FV a diagonal GMM, with p = ``feature_set.codebook_size``.

        Parameters
        ----------
        descriptors : ndarray (n, d) float32
            Descriptor sample of the set's descriptor kind, n >= p.
        feature_set : FeatureSet
        random_state : int or None
            Seed of k-means (and its sampling), for reproducible codebooks.

        Notes
        -----
        scikit-learn ``KMeans`` (k-means++, one init) when n * p is below
        5e7, otherwise ``MiniBatchKMeans`` (k-means++ init up to p = 2048,
        random init above it, where k-means++ seeding costs more than the
        clustering itself).

        FV: the PCA is whitened (each component divided by its standard
        deviation on the sample), then scikit-learn ``GaussianMixture``
        (diagonal, k-means initialised, at most 100 EM iterations) with a
        variance floor of 1e-3 times the sample's mean variance, against
        components that collapse on a few identical descriptors (e.g. the
        zero vectors of low-contrast SIFT patches). A diagonal GMM is
        invariant to the whitening's per-dimension scaling, so the whitening
        only conditions the fit and makes the floor comparable across dims.
        """
        from sklearn.cluster import KMeans, MiniBatchKMeans

        X = np.ascontiguousarray(descriptors, dtype=np.float32)
        p = feature_set.codebook_size
        if X.ndim != 2 or X.shape[0] < p:
            raise DataError(
                f"codebook {feature_set.name!r} needs at least {p} descriptors (n, d), got shape "
                f"{X.shape}: sample more images or lower codebook_size"
            )
        mean = comps = None
        if feature_set.pca_dim is not None:
            mean, comps = fit_pca(X, feature_set.pca_dim)
            X = pca_project(X, mean, comps)
            if feature_set.coding == "fv":
                std = X.std(axis=0, dtype=np.float64)
                std[std == 0] = 1.0
                comps = comps / std[:, None].astype(np.float32)
                X = X / std.astype(np.float32)
        if feature_set.coding == "fv":
            return cls._fit_gmm(X, feature_set, mean, comps, random_state)
        n = X.shape[0]
        if n * p <= _KMEANS_FULL_LIMIT:
            km = KMeans(n_clusters=p, n_init=1, random_state=random_state, max_iter=100)
        else:
            km = MiniBatchKMeans(
                n_clusters=p,
                init="k-means++" if p <= 2048 else "random",
                n_init=1,
                batch_size=max(4096, 2 * p),
                random_state=random_state,
                max_iter=50,
                reassignment_ratio=0.001,
            )
        km.fit(X)
        logger.info("codebook %s: k-means p=%d on %d x %d descriptors", feature_set.name, p, n, X.shape[1])
        return cls(feature_set, km.cluster_centers_, mean, comps)

    @classmethod
    def _fit_gmm(cls, X, feature_set, mean, comps, random_state) -> "Codebook":
        from sklearn.mixture import GaussianMixture

        floor = 1e-3 * float(X.var(axis=0, dtype=np.float64).mean())
        gmm = GaussianMixture(
            n_components=feature_set.codebook_size, covariance_type="diag", reg_covar=max(floor, 1e-12),
            max_iter=100, init_params="kmeans", random_state=random_state,
        )
        gmm.fit(X)
        logger.info(
            "codebook %s: GMM K=%d on %d x %d descriptors (%d EM iterations, converged %s)",
            feature_set.name, feature_set.codebook_size, X.shape[0], X.shape[1], gmm.n_iter_, gmm.converged_,
        )
        return cls(feature_set, gmm.means_, mean, comps, gmm.covariances_, gmm.weights_)

    def project(self, Z: np.ndarray) -> np.ndarray:
        """Descriptors into the codebook's space: PCA if fitted, else unchanged. (n, d') float32."""
        Z = np.ascontiguousarray(Z, dtype=np.float32)
        if self.pca_components is None:
            out = Z
        else:
            if Z.ndim != 2 or Z.shape[1] != self.pca_components.shape[1]:
                raise ConfigError(
                    f"codebook {self.feature_set.name!r} expects {self.pca_components.shape[1]}-dim "
                    f"descriptors, got {Z.shape}: check the descriptor grid (lbp_cells)"
                )
            out = pca_project(Z, self.pca_mean, self.pca_components)
        if out.ndim != 2 or out.shape[1] != self.centers.shape[1]:
            raise ConfigError(
                f"codebook {self.feature_set.name!r} has {self.centers.shape[1]}-dim codewords, got "
                f"descriptors {out.shape}: check the descriptor grid (lbp_cells)"
            )
        return out

    transform = project

    def _calibrates(self) -> bool:
        fs = self.feature_set
        return fs.coding == "lcc" and fs.knn == "ivf" and fs.n_probe is None

    def to_arrays(self) -> dict[str, np.ndarray]:
        """``{"centers"}`` plus ``"pca_mean"``, ``"pca_components"`` when PCA was fitted.

        With ``knn="ivf"`` and ``n_probe: null`` also ``"ivf_probes"`` (one
        int32, shape (1,), calibrating it if needed), so that whatever reads the codebook
        back probes as many lists as the features were extracted with.
        """
        out = {"centers": self.centers}
        if self._calibrates():
            out["ivf_probes"] = np.array([self.ivf_probes], dtype=np.int32)
        if self.pca_components is not None:
            out["pca_mean"] = self.pca_mean
            out["pca_components"] = self.pca_components
        if self.variances is not None:
            out["variances"] = self.variances
            out["weights"] = self.weights
        return out

    @classmethod
    def from_arrays(cls, d: Mapping[str, np.ndarray], feature_set: FeatureSet) -> "Codebook":
        """Inverse of :meth:`to_arrays` (missing or empty PCA arrays mean no PCA; GMM arrays only for FV)."""
        if "centers" not in d:
            raise DataError(f"codebook {feature_set.name!r}: no 'centers' array; re-run the codebook stage")

        def opt(key: str) -> np.ndarray | None:
            a = d.get(key)
            if a is None:
                return None
            a = np.asarray(a)
            return None if a.size == 0 else a

        book = cls(feature_set, np.asarray(d["centers"]), opt("pca_mean"), opt("pca_components"),
                   opt("variances"), opt("weights"))
        if book._calibrates():
            lists = feature_set.ivf_lists
            probes = opt("ivf_probes")
            if probes is None:
                # stored before n_probe was calibrated, when null meant a quarter of the lists: keep
                # probing that many, as every feature row of such a store was extracted with it
                book._ivf_probes = max(1, round(lists / 4))
                logger.info("codebook %r predates the n_probe calibration: probing %d of %d lists, as before",
                            feature_set.name, book._ivf_probes, lists)
            else:
                n = int(probes.reshape(-1)[0]) if probes.size == 1 else -1
                if not 1 <= n <= lists:
                    raise DataError(f"codebook {feature_set.name!r}: ivf_probes={n} outside 1..{lists} (its "
                                    "n_lists); re-run the codebook stage")
                book._ivf_probes = n
        return book

    def __repr__(self) -> str:
        pca = "" if self.pca_components is None else f", pca {self.pca_components.shape[1]}->{self.pca_components.shape[0]}"
        return f"Codebook({self.feature_set.name!r}, p={self.centers.shape[0]}, d={self.centers.shape[1]}{pca})"
