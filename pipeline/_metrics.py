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

from .errors import ArrayError


__all__ = [
    "TOP_K",
    "MetricsTally",
    "top_k_predictions",
    "top_k_accuracy",
    "mean_per_class_accuracy",
    "per_class_hit_rates",
    "confusion_matrix",
    "classification_metrics",
]

TOP_K = 5
"""The k of the paper's top-k accuracy (§5: the ImageNet challenge scores the 5 best guesses)."""


def _check(y: Any, scores: Any) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y)
    s = np.asarray(scores)
    if s.ndim != 2:
        raise ArrayError(f"scores have shape {s.shape}; pass an (n, n_classes) matrix")
    if y.ndim != 1 or y.shape[0] != s.shape[0]:
        raise ArrayError(f"labels have shape {y.shape} but scores have {s.shape[0]} rows; pass (n,) labels")
    if y.size and (y.min() < 0 or y.max() >= s.shape[1]):
        raise ArrayError(f"labels must lie in 0..{s.shape[1] - 1} (the score columns); got {y.min()}..{y.max()}")
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


def _rates(hits: np.ndarray, count: np.ndarray) -> np.ndarray:
    """Per-class rates ``hits / count``, nan for a class without rows."""
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, hits / np.maximum(count, 1), np.nan)


class MetricsTally:
    """Top-1 / top-k hits per class and the confusion matrix, accumulated chunk by chunk (§5.2, Figs. 4-5).

    The one implementation of the classification metrics: evaluation streams
    the test scores through it, training's per-epoch validation feeds it the
    merged top-k lists of the actors, and the batch functions of this module
    are one :meth:`add` away. Memory is ``O(n_classes^2)`` (the confusion
    matrix), whatever the number of rows.

    Parameters
    ----------
    n_classes : int
    k : int
        The k of top-k accuracy (default :data:`TOP_K`).
    """

    def __init__(self, n_classes: int, k: int = TOP_K) -> None:
        self.n_classes = int(n_classes)
        self.k = int(k)
        self.count = np.zeros(self.n_classes, np.int64)
        self.hit1 = np.zeros(self.n_classes, np.int64)
        self.hitk = np.zeros(self.n_classes, np.int64)
        self.confusion = np.zeros((self.n_classes, self.n_classes), np.int64)

    def add(self, y: Any, scores: Any) -> MetricsTally:
        """Add a chunk: labels ``y`` (n,) int and scores (n, n_classes)."""
        y, s = _check(y, scores)
        if s.shape[1] != self.n_classes:
            raise ArrayError(f"scores have {s.shape[1]} columns but the tally counts {self.n_classes} classes; "
                             "pass one column per class")
        return self.add_ranked(y, top_k_predictions(s, self.k))

    def add_ranked(self, y: Any, ranked: Any) -> MetricsTally:
        """Add a chunk given each row's best classes: ``ranked`` (n, >= min(k, n_classes)) int, best first."""
        y = np.asarray(y, np.int64)
        ranked = np.asarray(ranked, np.int64)
        c = self.n_classes
        if ranked.ndim != 2 or ranked.shape[0] != y.shape[0] or ranked.shape[1] < min(self.k, c):
            raise ArrayError(f"ranked classes have shape {ranked.shape} for {y.shape[0]} labels; "
                             f"pass (n, {min(self.k, c)}) class indices, best first")
        pred = ranked[:, 0]
        self.count += np.bincount(y, minlength=c)
        self.hit1 += np.bincount(y[pred == y], minlength=c)
        self.hitk += np.bincount(y[(ranked[:, :self.k] == y[:, None]).any(axis=1)], minlength=c)
        self.confusion += np.bincount(y * c + pred, minlength=c * c).reshape(c, c)
        return self

    @property
    def n(self) -> int:
        return int(self.count.sum())

    def top_k_accuracy(self, k: int = 1) -> float:
        """Top-1 (``k=1``) or top-:attr:`k` accuracy over the rows added (nan before any)."""
        hits = {1: self.hit1, self.k: self.hitk}[k]
        return float(hits.sum() / self.n) if self.n else float("nan")

    def per_class_hit_rates(self, k: int = 1) -> np.ndarray:
        """(n_classes,) float64: each class's top-1 or top-:attr:`k` hit rate, nan for a class without rows."""
        return _rates({1: self.hit1, self.k: self.hitk}[k], self.count)

    def mean_per_class_accuracy(self) -> float:
        """Mean over classes with rows of the per-class top-1 rate (the Caltech-101 protocol)."""
        r = self.per_class_hit_rates(1)
        return float(np.mean(r[self.count > 0])) if self.n else float("nan")

    def result(self, *, confusion: bool = True) -> dict[str, Any]:
        """The numbers of §5: ``n``, ``top1``, ``top<k>``, ``mean_per_class``, ``per_class_top1``,
        ``per_class_top<k>`` (None for a class without rows) and optionally ``confusion`` (nested lists)."""

        def _list(a: np.ndarray) -> list[float | None]:
            return [None if not np.isfinite(v) else float(v) for v in a]

        out: dict[str, Any] = {
            "n": self.n,
            "top1": self.top_k_accuracy(1),
            f"top{self.k}": self.top_k_accuracy(self.k),
            "mean_per_class": self.mean_per_class_accuracy(),
            "per_class_top1": _list(self.per_class_hit_rates(1)),
            f"per_class_top{self.k}": _list(self.per_class_hit_rates(self.k)),
        }
        if confusion:
            out["confusion"] = self.confusion.tolist()
        return out


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
    return MetricsTally(s.shape[1], k).add(y, s).top_k_accuracy(k)


def per_class_hit_rates(y: Any, scores: Any, k: int = TOP_K) -> np.ndarray:
    """Per-class top-``k`` hit rate: the fraction of each class's rows with the class in the top ``k``.

    This is what the paper plots in Fig. 5 (and histograms in Fig. 4) with k = 5.

    Returns
    -------
    ndarray of float64, shape (n_classes,)
        nan for a class with no rows.
    """
    y, s = _check(y, scores)
    return MetricsTally(s.shape[1], k).add(y, s).per_class_hit_rates(k)


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
        raise ArrayError(f"labels {y.shape} and predictions {pred.shape} differ in shape; pass one prediction per label")
    if len(y) == 0:
        return float("nan")
    n_classes = int(n_classes if n_classes is not None else max(y.max(), pred.max()) + 1)
    return MetricsTally(n_classes, 1).add_ranked(y, pred[:, None]).mean_per_class_accuracy()


def confusion_matrix(y: Any, pred: Any, n_classes: int) -> np.ndarray:
    """Counts ``C[i, j]`` of rows of true class ``i`` predicted as ``j`` (as :func:`sklearn.metrics.confusion_matrix`).

    Returns
    -------
    ndarray of int64, shape (n_classes, n_classes)
    """
    y = np.asarray(y, dtype=np.int64)
    pred = np.asarray(pred, dtype=np.int64)
    return MetricsTally(n_classes, 1).add_ranked(y, pred[:, None]).confusion


def classification_metrics(y: Any, scores: Any, *, confusion: bool = True) -> dict[str, Any]:
    """All of §5's numbers for one score matrix: :meth:`MetricsTally.result` after one chunk.

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
    return MetricsTally(s.shape[1]).add(y, s).result(confusion=confusion)
