"""lsic.pipeline: the array math of Lin et al., CVPR 2011, with no Dask in it.

Images -> dense HOG/LBP descriptors -> LCC or SVC coding -> spatial pyramid
pooling (paper §3), one-vs-all linear SVMs by averaged SGD (paper §4) and
linear score fusion (paper §5). Everything here is a pure function or a small
scikit-learn style estimator over numpy arrays.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version as _version

from ._errors import ClusterError, ConfigError, DataError, ImageError, LsicError, StoreError
from ._asgd import ASGDClassifier, OneVsAllASGD, fit_lambda_grid
from ._fusion import ScoreFusion, fusion_weights, score_stats, standardize_scores
from ._metrics import (
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
    "DataError",
    "StoreError",
    "ClusterError",
    "ASGDClassifier",
    "OneVsAllASGD",
    "fit_lambda_grid",
    "ScoreFusion",
    "fusion_weights",
    "score_stats",
    "standardize_scores",
    "classification_metrics",
    "confusion_matrix",
    "mean_per_class_accuracy",
    "per_class_hit_rates",
    "top_k_accuracy",
    "top_k_predictions",
]
