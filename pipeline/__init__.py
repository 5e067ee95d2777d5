"""lsic.pipeline: the array math of Lin et al., CVPR 2011, with no Dask in it.

Images -> dense HOG/LBP (or SIFT) descriptors -> LCC or SVC (or Fisher vector) coding -> spatial pyramid
pooling (paper §3), one-vs-all linear SVMs by averaged SGD (paper §4) and
linear score fusion (paper §5). Everything here is a pure function or a small
scikit-learn style estimator over numpy arrays.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version as _version

from ._errors import ArrayError, ClusterError, ConfigError, DataError, ImageError, LsicError, StoreError
from ._grid import DescriptorGrid, Descriptors
from ._images import load_image
from ._hog import dense_hog
from ._lbp import dense_lbp, lbp_codes
from ._sift import dense_sift
from ._fisher import fisher_vector, gmm_posteriors
from ._pca import fit_pca, pca_project
from ._coding import SparseCodes, lcc_encode, nearest_codewords
from ._knn import IVFIndex, build_ivf, calibrate_n_probe, probe_recall
from ._pooling import n_pyramid_blocks, normalize_feature, pyramid_blocks, pyramid_pool, svc_pool
from ._feature_sets import CALTECH, PRESETS, TABLE1, FeatureSet, descriptor_dim
from ._codebook import Codebook
from ._image_features import dense_descriptors, encode_pool, image_descriptors, image_features
from ._asgd import check_asgd_params, ASGDClassifier, OneVsAllASGD, fit_lambda_grid
from ._fusion import ScoreFusion, fusion_weights, score_stats, standardize_scores
from ._metrics import (
    TOP_K,
    MetricsTally,
    classification_metrics,
    confusion_matrix,
    mean_per_class_accuracy,
    per_class_hit_rates,
    top_k_accuracy,
    top_k_predictions,
)

try:
    __version__ = _version("lsic")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0.0.0+unknown"

__all__ = [
    "__version__",
    "LsicError",
    "ConfigError",
    "ImageError",
    "ArrayError",
    "DataError",
    "StoreError",
    "ClusterError",
    "load_image",
    "DescriptorGrid",
    "Descriptors",
    "dense_descriptors",
    "dense_hog",
    "dense_lbp",
    "dense_sift",
    "fisher_vector",
    "gmm_posteriors",
    "lbp_codes",
    "fit_pca",
    "pca_project",
    "Codebook",
    "SparseCodes",
    "nearest_codewords",
    "lcc_encode",
    "IVFIndex",
    "build_ivf",
    "calibrate_n_probe",
    "probe_recall",
    "svc_pool",
    "pyramid_blocks",
    "n_pyramid_blocks",
    "pyramid_pool",
    "normalize_feature",
    "encode_pool",
    "FeatureSet",
    "descriptor_dim",
    "TABLE1",
    "CALTECH",
    "PRESETS",
    "image_descriptors",
    "image_features",
    "ASGDClassifier",
    "OneVsAllASGD",
    "fit_lambda_grid",
    "ScoreFusion",
    "fusion_weights",
    "score_stats",
    "standardize_scores",
    "MetricsTally",
    "TOP_K",
    "check_asgd_params",
    "classification_metrics",
    "confusion_matrix",
    "mean_per_class_accuracy",
    "per_class_hit_rates",
    "top_k_accuracy",
    "top_k_predictions",
]
