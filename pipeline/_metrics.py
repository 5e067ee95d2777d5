"""Classification metrics over score matrices (paper §5.2, Figs. 4-5).

Every function takes integer labels ``y`` (n,) in ``0..n_classes-1`` and either
predictions (n,) or a score matrix (n, n_classes) whose column ``c`` is the
one-vs-all SVM score of class ``c``. Accuracies are fractions in [0, 1].

Ties in the ranking are broken towards the lower class index (``argsort`` with
a stable sort on the negated scores), which is what a user reading the top-5
list sees; with continuous SVM scores ties do not occur in practice.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ._errors import DataError

__all__ = [
    "top_k_predictions",
    "top_k_accuracy",
    "mean_per_class_accuracy",
    "per_class_hit_rates",
    "confusion_matrix",
    "classification_metrics",
]


def _check(y: Any, scores: Any) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y)
    s = np.asarray(scores)
    if s.ndim != 2:
        raise DataError(f"scores have shape {s.shape}; pass an (n, n_classes) matrix")
    if y.ndim != 1 or y.shape[0] != s.shape[0]:
        raise DataError(f"labels have shape {y.shape} but scores have {s.shape[0]} rows; pass (n,) labels")
    if y.size and (y.min() < 0 or y.max() >= s.shape[1]):
        raise DataError(f"labels must lie in 0..{s.shape[1] - 1} (the score columns); got {y.min()}..{y.max()}")
    return y.astype(np.int64), s


def top_k_predictions(scores: Any, k: int) -> np.ndarray:
    """Indices of the ``k`` best-scoring classes per row, best first.

    Parameters
    ----------
    scores : array_like, shape (n, n_classes)
    k : int

    Returns
    -------
    ndarray of int64, shape (n, min(k, n_classes))
    """
    s = np.asarray(scores)
    k = min(int(k), s.shape[1])
    return np.argsort(-s, axis=1, kind="stable")[:, :k].astype(np.int64)


def _hits(y: np.ndarray, s: np.ndarray, k: int) -> np.ndarray:
    """(n,) bool: is the true class among the top ``k``? Counts classes scoring strictly higher."""
    if k >= s.shape[1]:
        return np.ones(len(y), bool)
    true = s[np.arange(len(y)), y]
    # rank = number of classes strictly better + ties at lower index (stable order)
    better = (s > true[:, None]).sum(axis=1)
    ties_before = ((s == true[:, None]) & (np.arange(s.shape[1])[None, :] < y[:, None])).sum(axis=1)
    return (better + ties_before) < k


def top_k_accuracy(y: Any, scores: Any, k: int = 1) -> float:
    """Fraction of rows whose true class is among the ``k`` highest scores (top-1 / top-5 of §5).

    Parameters
    ----------
    y : array_like of int, shape (n,)
    scores : array_like, shape (n, n_classes)
    k : int

    Returns
    -------
    float in [0, 1] (nan for n = 0)
    """
    y, s = _check(y, scores)
    if len(y) == 0:
        return float("nan")
    return float(_hits(y, s, k).mean())


def per_class_hit_rates(y: Any, scores: Any, k: int = 5) -> np.ndarray:
    """Per-class top-``k`` hit rate: the fraction of each class's rows with the class in the top ``k``.

    This is what the paper plots in Fig. 5 (and histograms in Fig. 4) with k = 5.

    Returns
    -------
    ndarray of float64, shape (n_classes,)
        nan for a class with no rows.
    """
    y, s = _check(y, scores)
    hits = _hits(y, s, k).astype(np.float64)
    n_classes = s.shape[1]
    count = np.bincount(y, minlength=n_classes).astype(np.float64)
    got = np.bincount(y, weights=hits, minlength=n_classes)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, got / np.maximum(count, 1), np.nan)


def mean_per_class_accuracy(y: Any, pred: Any, n_classes: int | None = None) -> float:
    """Mean over classes (present in ``y``) of the per-class top-1 recall: the Caltech-101 protocol.

    Equal to :func:`sklearn.metrics.balanced_accuracy_score`.

    Parameters
    ----------
    y, pred : array_like of int, shape (n,)
    n_classes : int, optional
        Number of classes; defaults to ``max(y, pred) + 1``.
    """
    y = np.asarray(y, dtype=np.int64)
    pred = np.asarray(pred, dtype=np.int64)
    if y.shape != pred.shape:
        raise DataError(f"labels {y.shape} and predictions {pred.shape} differ in shape; pass one prediction per label")
    if len(y) == 0:
        return float("nan")
    n_classes = int(n_classes if n_classes is not None else max(y.max(), pred.max()) + 1)
    count = np.bincount(y, minlength=n_classes)
    correct = np.bincount(y, weights=(y == pred).astype(np.float64), minlength=n_classes)
    present = count > 0
    return float(np.mean(correct[present] / count[present]))


def confusion_matrix(y: Any, pred: Any, n_classes: int) -> np.ndarray:
    """Counts ``C[i, j]`` of rows of true class ``i`` predicted as ``j`` (as :func:`sklearn.metrics.confusion_matrix`).

    Returns
    -------
    ndarray of int64, shape (n_classes, n_classes)
    """
    y = np.asarray(y, dtype=np.int64)
    pred = np.asarray(pred, dtype=np.int64)
    flat = np.bincount(y * n_classes + pred, minlength=n_classes * n_classes)
    return flat.reshape(n_classes, n_classes).astype(np.int64)


def classification_metrics(y: Any, scores: Any, *, confusion: bool = True) -> dict[str, Any]:
    """All of §5's numbers for one score matrix.

    Parameters
    ----------
    y : array_like of int, shape (n,)
    scores : array_like, shape (n, n_classes)
    confusion : bool
        Include the confusion matrix (a nested list of ints).

    Returns
    -------
    dict with ``top1``, ``top5``, ``mean_per_class`` (floats), ``per_class_top1``,
    ``per_class_top5`` (lists of float, None for a class without rows), ``n`` and
    optionally ``confusion``.
    """
    y, s = _check(y, scores)
    n_classes = s.shape[1]
    pred = top_k_predictions(s, 1)[:, 0] if len(y) else np.zeros(0, np.int64)

    def _list(a: np.ndarray) -> list[float | None]:
        return [None if not np.isfinite(v) else float(v) for v in a]

    out: dict[str, Any] = {
        "n": int(len(y)),
        "top1": top_k_accuracy(y, s, 1),
        "top5": top_k_accuracy(y, s, 5),
        "mean_per_class": mean_per_class_accuracy(y, pred, n_classes),
        "per_class_top1": _list(per_class_hit_rates(y, s, 1)),
        "per_class_top5": _list(per_class_hit_rates(y, s, 5)),
    }
    if confusion:
        out["confusion"] = confusion_matrix(y, pred, n_classes).tolist()
    return out
