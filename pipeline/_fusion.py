"""Linear fusion of the feature sets' SVM scores (paper §5.2).

The paper combines the one-vs-all scores of its six feature sets linearly for
the final prediction but does not say how the weights were chosen. lsic:

1. standardises each set's score matrix by one scalar mean and standard
   deviation of that set (computed on the validation scores, or on the training
   scores when there is no validation split), so that sets whose SVMs produce
   scores on different scales are comparable;
2. combines the standardised matrices with non-negative weights summing to one,
   ``F = sum_s w_s (S_s - mu_s) / sigma_s``;
3. chooses the weights on the validation split by coordinate ascent on the
   simplex maximising top-1 accuracy (:func:`fusion_weights`), or uses equal
   weights when there is no validation split.

Notes
-----
Departures from / additions to the paper: the standardisation and the weight
search are lsic's choices (the paper gives neither). A scalar (per set, not per
class) standardisation keeps each set's own ranking of the classes unchanged.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .errors import ArrayError, ConfigError, DataError

__all__ = ["score_stats", "standardize_scores", "fusion_weights", "ScoreFusion"]


def score_stats(scores: Any) -> tuple[float, float]:
    """Scalar mean and standard deviation of one set's score matrix.

    Parameters
    ----------
    scores : array_like, shape (n, n_classes)

    Returns
    -------
    (mean, std) : floats; std is 1.0 when the scores are constant or empty.
    """
    s = np.asarray(scores, dtype=np.float64)
    if s.size == 0:
        return 0.0, 1.0
    mu = float(s.mean())
    sd = float(s.std())
    if not np.isfinite(sd) or sd <= 1e-12:
        sd = 1.0
    return mu, sd


def standardize_scores(scores: Any, mean: float, std: float) -> np.ndarray:
    """``(S - mean) / std`` as float32 (shape (n, n_classes) preserved)."""
    return ((np.asarray(scores, dtype=np.float32) - np.float32(mean)) / np.float32(std)).astype(np.float32)


def _objective(fused: np.ndarray, y: np.ndarray) -> tuple[int, float]:
    """(number correct at top-1, mean clipped margin) of a fused (n, C) matrix; compared lexicographically.

    The margin ``F[y] - max_{c != y} F[c]``, clipped to [-1, 1], only breaks
    ties between weightings with the same top-1 count (plateaus are common on
    a small validation split).
    """
    n = len(y)
    rows = np.arange(n)
    true = fused[rows, y]
    other = fused.copy()
    other[rows, y] = -np.inf
    best_other = other.max(axis=1)
    # a tie counts as wrong unless the true class comes first in stable order, like argmax
    pred = fused.argmax(axis=1)
    correct = int((pred == y).sum())
    margin = float(np.clip(true - best_other, -1.0, 1.0).mean()) if n else 0.0
    return correct, margin


def fusion_weights(
    scores: Sequence[np.ndarray],
    y: Any,
    *,
    rounds: int = 20,
    grid: int = 21,
) -> np.ndarray:
    """Non-negative weights on the simplex maximising top-1 accuracy of the fused scores.

    Coordinate ascent on the simplex: start from the best of the vertices
    (each single set alone) and the equal-weight point; then, for each set
    ``i`` in turn, try ``w_i = a`` for ``a`` on a grid of ``grid`` values in
    [0, 1], with the other weights rescaled proportionally to sum to ``1 - a``
    (or shared equally when they are all zero), and move to the best candidate
    if it is strictly better. Stop after a round without a move or after
    ``rounds`` rounds. Candidates are compared by (top-1 count, mean clipped
    margin), see :func:`_objective`. Because the start is at least as good as
    every single set, the result never scores below the best single set on the
    data it was fitted on.

    Parameters
    ----------
    scores : sequence of m arrays, shape (n, n_classes), float
        Standardised validation scores of each set.
    y : array_like of int, shape (n,)
        Validation labels.
    rounds, grid : int
        Search budget and step (grid = 21 means steps of 0.05).

    Returns
    -------
    ndarray of float64, shape (m,), non-negative, summing to 1.
    """
    Z = [np.asarray(s, dtype=np.float32) for s in scores]
    m = len(Z)
    if m == 0:
        raise ArrayError("no score matrices to fuse; train at least one feature set")
    y = np.asarray(y, dtype=np.int64)
    for s in Z:
        if s.shape != Z[0].shape or s.ndim != 2 or s.shape[0] != len(y):
            raise ArrayError(f"score matrices have shapes {[z.shape for z in Z]} for {len(y)} labels; they must agree")
    if grid < 2 or rounds < 0:
        raise ConfigError(f"fusion grid={grid} rounds={rounds}; use grid >= 2 and rounds >= 0")
    if m == 1 or len(y) == 0:
        return np.full(m, 1.0 / m)

    def fuse(w: np.ndarray) -> np.ndarray:
        out = np.zeros_like(Z[0])
        for wi, zi in zip(w, Z):
            if wi:
                out += np.float32(wi) * zi
        return out

    starts = [np.eye(m)[i] for i in range(m)] + [np.full(m, 1.0 / m)]
    best_w, best_f = None, None
    for w in starts:
        f = _objective(fuse(w), y)
        if best_f is None or f > best_f:
            best_w, best_f = w, f
    alphas = np.linspace(0.0, 1.0, grid)
    for _ in range(rounds):
        moved = False
        for i in range(m):
            rest = best_w.copy()
            rest[i] = 0.0
            total = rest.sum()
            rest = rest / total if total > 0 else np.where(np.arange(m) == i, 0.0, 1.0 / (m - 1))
            rest_fused = fuse(rest)
            for a in alphas:
                w = (1.0 - a) * rest
                w[i] = a
                f = _objective(np.float32(a) * Z[i] + np.float32(1.0 - a) * rest_fused, y)
                if f > best_f:
                    best_w, best_f, moved = w, f, True
        if not moved:
            break
    best_w = np.clip(best_w, 0.0, None)
    return best_w / best_w.sum()


@dataclass(frozen=True)
class ScoreFusion:
    """Per-set standardisation plus fusion weights; everything needed to fuse new scores.

    Attributes
    ----------
    names : tuple of str, length m
        Feature set names, in the order of the other fields.
    weights : tuple of float, length m
        Non-negative, summing to 1.
    means, stds : tuple of float, length m
        Standardisation of each set's scores.
    method : str
        ``coordinate_ascent`` or ``equal`` (how the weights were chosen).
    """

    names: tuple[str, ...]
    weights: tuple[float, ...]
    means: tuple[float, ...]
    stds: tuple[float, ...]
    method: str = "equal"

    @classmethod
    def fit(
        cls,
        scores: Mapping[str, Any],
        y: Any | None = None,
        *,
        reference: Mapping[str, Any] | None = None,
        method: str = "coordinate_ascent",
        rounds: int = 20,
        grid: int = 21,
    ) -> "ScoreFusion":
        """Standardise and choose weights.

        Parameters
        ----------
        scores : mapping name -> (n, n_classes) array
            Validation scores per set (or any split when ``y`` is None and only
            statistics are wanted).
        y : array_like of int, shape (n,), optional
            Validation labels; without them (or with ``method="equal"``) the
            weights are equal.
        reference : mapping name -> array, optional
            Scores to take the standardisation statistics from (default: ``scores``).
        """
        if method not in ("coordinate_ascent", "equal"):
            raise ConfigError(f"fusion method {method!r} is unknown; use coordinate_ascent or equal")
        names = tuple(scores)
        if not names:
            raise ArrayError("no feature sets to fuse; train at least one feature set")
        ref = reference if reference is not None else scores
        stats = [score_stats(ref[n]) for n in names]
        use_val = y is not None and method == "coordinate_ascent" and len(np.asarray(y)) > 0
        if use_val:
            Z = [standardize_scores(scores[n], mu, sd) for n, (mu, sd) in zip(names, stats)]
            w = fusion_weights(Z, y, rounds=rounds, grid=grid)
        else:
            w = np.full(len(names), 1.0 / len(names))
        return cls(
            names=names,
            weights=tuple(float(v) for v in w),
            means=tuple(float(s[0]) for s in stats),
            stds=tuple(float(s[1]) for s in stats),
            method="coordinate_ascent" if use_val else "equal",
        )

    def transform(self, scores: Mapping[str, Any]) -> np.ndarray:
        """Fused scores ``sum_s w_s (S_s - mu_s) / sigma_s``: (n, n_classes) float32."""
        missing = [n for n in self.names if n not in scores]
        if missing:
            raise ArrayError(f"scores of feature set(s) {missing} are missing; fusion needs all of {list(self.names)}")
        out = None
        for n, w, mu, sd in zip(self.names, self.weights, self.means, self.stds):
            z = standardize_scores(scores[n], mu, sd)
            out = np.float32(w) * z if out is None else out + np.float32(w) * z
        return out.astype(np.float32)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form (stored in the run's store attrs)."""
        return {
            "names": list(self.names),
            "weights": list(self.weights),
            "means": list(self.means),
            "stds": list(self.stds),
            "method": self.method,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "ScoreFusion":
        try:
            return cls(
                names=tuple(d["names"]),
                weights=tuple(float(v) for v in d["weights"]),
                means=tuple(float(v) for v in d["means"]),
                stds=tuple(float(v) for v in d["stds"]),
                method=str(d.get("method", "equal")),
            )
        except (KeyError, TypeError) as exc:
            raise DataError(f"stored fusion record is incomplete ({exc}); rerun `lsic evaluate`") from None

    def weight_map(self) -> dict[str, float]:
        return dict(zip(self.names, self.weights))
