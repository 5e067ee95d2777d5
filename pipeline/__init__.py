"""lsic.pipeline: the array math of Lin et al., CVPR 2011, with no Dask in it.

Images -> dense HOG/LBP (or SIFT) descriptors -> LCC or SVC (or Fisher vector) coding -> spatial pyramid
pooling (paper §3), one-vs-all linear SVMs by averaged SGD (paper §4) and
linear score fusion (paper §5). Everything here is a pure function or a small
scikit-learn style estimator over numpy arrays.
"""

from __future__ import annotations

import importlib
from importlib.metadata import PackageNotFoundError, version as _version
from typing import Any

from .errors import ArrayError, ClusterError, ConfigError, DataError, ImageError, LsicError, StoreError

# The public names of the private modules, imported on first use (PEP 562): ``lsic.cluster`` and the
# ``lsic`` command's error path import ``lsic.pipeline.errors`` without the numba kernels behind the rest.
_PUBLIC = {
    "_grid": ("DescriptorGrid", "Descriptors", "patch_origins"),
    "_images": ("load_image",),
    "_hog": ("dense_hog",),
    "_lbp": ("dense_lbp", "lbp_codes"),
    "_sift": ("dense_sift",),
    "_fisher": ("fisher_vector", "gmm_posteriors"),
    "_pca": ("fit_pca", "pca_project"),
    "_coding": ("SparseCodes", "lcc_encode", "nearest_codewords"),
    "_knn": ("IVFIndex", "build_ivf", "calibrate_n_probe", "probe_recall"),
    "_pooling": ("n_pyramid_blocks", "normalize_feature", "pyramid_blocks", "pyramid_pool", "svc_pool"),
    "_feature_sets": ("CALTECH", "PRESETS", "TABLE1", "FeatureSet", "descriptor_dim"),
    "_codebook": ("Codebook",),
    "_image_features": ("dense_descriptors", "encode_pool", "image_descriptors", "image_features"),
    "_asgd": ("check_asgd_params", "ASGDClassifier", "OneVsAllASGD", "fit_lambda_grid"),
    "_fusion": ("ScoreFusion", "fusion_weights", "score_stats", "standardize_scores"),
    "_metrics": ("TOP_K", "MetricsTally", "classification_metrics", "confusion_matrix", "mean_per_class_accuracy",
                 "per_class_hit_rates", "top_k_accuracy", "top_k_predictions"),
}
_MODULE_OF = {name: module for module, names in _PUBLIC.items() for name in names}

try:
    __version__ = _version("lsic")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0.0.0+unknown"


def __getattr__(name: str) -> Any:
    module = _MODULE_OF.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


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
    "patch_origins",
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
