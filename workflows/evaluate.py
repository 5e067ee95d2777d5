"""Stage 3, evaluation (paper §5.2): fuse the stored SVM scores, measure, report.

Reads what training left in the store (``scores/<set>/<split>``: one
(n_split_rows, n_classes) float32 matrix per feature set and split, with the
store rows it covers), then

1. fits the fusion on the validation split (:class:`lsic.pipeline.ScoreFusion`:
   per-set standardisation, non-negative weights by coordinate ascent on the
   simplex maximising validation top-1; equal weights without a validation split);
2. streams the test scores row chunk by row chunk, accumulating per-class top-1
   / top-5 hits and the confusion matrix of every set and of the fused scores
   (so memory is bounded by one chunk of every set, whatever the test size);
3. writes the fusion, the metrics and the per-class arrays into the store
   (``evaluation/``), and the report folder (``metrics.json``, figures, HTML).

Evaluation costs seconds next to extraction and training, so a rerun simply
recomputes it (that is its resume rule); it runs on the client and needs no
cluster.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lsic.pipeline import ScoreFusion, StoreError, top_k_predictions

from . import _store
from .datasets import SPLIT_CODES

log = logging.getLogger(__name__)

EVAL_GROUP = "evaluation"
TIMINGS_GROUP = "timings"


# --------------------------------------------------------------------------- reading training's output


def scored_sets(g: Any, names: Sequence[str] | None = None) -> list[str]:
    """Feature sets with stored test (or validation) scores, in config order when ``names`` is given."""
    if "scores" not in g:
        return []
    have = [k for k in g["scores"].group_keys()]
    if names is not None:
        return [n for n in names if n in have]
    return sorted(have)


def _split_rows(g: Any, split: str) -> np.ndarray:
    code = SPLIT_CODES[split]
    sp = np.asarray(g["split"][...])
    valid = np.asarray(g["valid"][...], bool)
    return np.flatnonzero((sp == code) & valid).astype(np.int64)


def score_rows(g: Any, name: str, split: str) -> np.ndarray | None:
    """Store rows covered by ``scores/<name>/<split>`` (None when that split has no scores)."""
    grp = g[f"scores/{name}"]
    if split not in grp:
        return None
    for key in (f"{split}_rows", f"rows_{split}", f"rows/{split}"):
        if key in grp:
            return np.asarray(grp[key][...], dtype=np.int64)
    rows = grp[split].attrs.get("rows")
    if rows is not None:
        return np.asarray(rows, dtype=np.int64)
    rows = _split_rows(g, split)
    if len(rows) != grp[split].shape[0]:
        raise StoreError(
            f"scores/{name}/{split} has {grp[split].shape[0]} rows but the store has {len(rows)} valid {split} rows "
            "and no row index; rerun `lsic train`"
        )
    return rows


def read_scores(g: Any, name: str, split: str, sl: slice = slice(None)) -> np.ndarray:
    """``scores/<name>/<split>[sl]`` as float32 (n, n_classes)."""
    return np.asarray(g[f"scores/{name}/{split}"][sl], dtype=np.float32)


def read_curves(g: Any, names: Sequence[str]) -> dict[str, dict[str, list[float]]]:
    """Per-epoch validation top-1 accuracies for Fig. 3, ``{set: {"asgd": [...], "sgd": [...]}}``.

    Training records one entry per epoch in the ``history`` attribute of
    ``models/<set>`` (``{"epoch": e, "val_top1": {"<set>": acc, "<set>/sgd": acc}, ...}``);
    a set without a record gets no curve.
    """
    out: dict[str, dict[str, list[float]]] = {}
    for name in names:
        path = f"models/{name}"
        if path not in g:
            continue
        hist = g[path].attrs.get("history") or []
        curve: dict[str, list[float]] = {}
        if isinstance(hist, Mapping):  # {"asgd": [...], "sgd": [...]}
            for method in ("asgd", "sgd"):
                if hist.get(method):
                    curve[method] = [float(x) for x in hist[method]]
        else:
            recs = sorted((h for h in hist if isinstance(h, Mapping)), key=lambda h: h.get("epoch", 0))
            for method, key in (("asgd", name), ("sgd", f"{name}/sgd")):
                vals = [h.get("val_top1", {}).get(key) for h in recs]
                if any(v is not None for v in vals):
                    curve[method] = [None if v is None else float(v) for v in vals]
        if curve:
            out[name] = curve
    return out


def record_timing(g: Any, stage: str, seconds: float) -> None:
    """Remember a stage's wall-clock time in the store (``timings`` group attrs), for the report."""
    grp = g.require_group(TIMINGS_GROUP)
    grp.attrs[stage] = round(float(seconds), 3)


def read_timings(g: Any) -> dict[str, float]:
    if TIMINGS_GROUP not in g:
        return {}
    order = ["extract", "train", "evaluate"]
    t = {k: float(v) for k, v in g[TIMINGS_GROUP].attrs.items()}
    return {k: t[k] for k in sorted(t, key=lambda k: (order.index(k) if k in order else 99, k))}


# --------------------------------------------------------------------------- the stage


@dataclass
class EvaluateSummary:
    """What :func:`run_evaluate` measured (``metrics`` is the ``metrics.json`` record)."""

    metrics: dict[str, Any]
    details: dict[str, Any]
    fusion: ScoreFusion
    class_names: list[str]
    seconds: float
    report: str | None = None
    files: dict[str, Any] = field(default_factory=dict)

    @property
    def chance(self) -> float:
        return 1.0 / max(len(self.class_names), 1)

    def table(self) -> str:
        from .report import format_table

        return format_table(self.metrics)


class _Tally:
    """Sufficient statistics of one score source over streamed chunks."""

    def __init__(self, n_classes: int) -> None:
        self.c = n_classes
        self.count = np.zeros(n_classes, np.int64)
        self.hit1 = np.zeros(n_classes, np.int64)
        self.hit5 = np.zeros(n_classes, np.int64)
        self.conf = np.zeros((n_classes, n_classes), np.int64)

    def add(self, y: np.ndarray, s: np.ndarray) -> None:
        top = top_k_predictions(s, 5)
        pred = top[:, 0]
        h1 = pred == y
        h5 = (top == y[:, None]).any(axis=1)
        self.count += np.bincount(y, minlength=self.c)
        self.hit1 += np.bincount(y, weights=h1, minlength=self.c).astype(np.int64)
        self.hit5 += np.bincount(y, weights=h5, minlength=self.c).astype(np.int64)
        self.conf += np.bincount(y * self.c + pred, minlength=self.c * self.c).reshape(self.c, self.c)

    def result(self) -> tuple[dict[str, float], dict[str, Any]]:
        n = int(self.count.sum())
        present = self.count > 0
        with np.errstate(invalid="ignore", divide="ignore"):
            r1 = np.where(present, self.hit1 / np.maximum(self.count, 1), np.nan)
            r5 = np.where(present, self.hit5 / np.maximum(self.count, 1), np.nan)
        summary = {
            "top1": float(self.hit1.sum() / n) if n else float("nan"),
            "top5": float(self.hit5.sum() / n) if n else float("nan"),
            "mean_per_class": float(np.mean(r1[present])) if n else float("nan"),
        }
        detail = {
            "per_class_top1": [None if not np.isfinite(v) else float(v) for v in r1],
            "per_class_top5": [None if not np.isfinite(v) else float(v) for v in r5],
            "confusion": self.conf.tolist(),
        }
        return summary, detail


def evaluate_group(
    g: Any,
    names: Sequence[str],
    *,
    method: str = "coordinate_ascent",
    rounds: int = 20,
    grid: int = 21,
    chunk_rows: int = 4096,
) -> tuple[dict[str, Any], dict[str, Any], ScoreFusion]:
    """Fuse and measure the scores of ``names`` in the open store ``g``.

    Returns
    -------
    (metrics, details, fusion) : the ``metrics.json`` record, per-class arrays
    per source (each set and ``"fused"``), and the fitted fusion.
    """
    names = list(names)
    if not names:
        raise StoreError("the store has no SVM scores; run `lsic train` first")
    class_names = list(g.attrs["class_names"])
    labels = np.asarray(g["labels"][...], np.int64)
    n_classes = len(class_names)

    # 1. fusion on the validation split (standardisation from validation, else training scores)
    val_rows = [score_rows(g, n, "val") for n in names]
    have_val = all(r is not None and len(r) for r in val_rows)
    if have_val:
        if any(not np.array_equal(r, val_rows[0]) for r in val_rows):
            raise StoreError("feature sets were scored on different validation rows; rerun `lsic train`")
        val = {n: read_scores(g, n, "val") for n in names}
        fusion = ScoreFusion.fit(val, labels[val_rows[0]], method=method, rounds=rounds, grid=grid)
    else:
        ref_split = "train" if all(score_rows(g, n, "train") is not None for n in names) else "test"
        ref = {n: read_scores(g, n, ref_split) for n in names}
        fusion = ScoreFusion.fit(ref, None, method="equal")
        log.info("evaluate: no validation scores; equal fusion weights, standardised on %s scores", ref_split)

    # 2. stream the test scores
    test_rows = [score_rows(g, n, "test") for n in names]
    if any(r is None for r in test_rows) or not len(test_rows[0]):
        raise StoreError("the store has no test scores; give the dataset a test split and rerun `lsic train`")
    if any(not np.array_equal(r, test_rows[0]) for r in test_rows):
        raise StoreError("feature sets were scored on different test rows; rerun `lsic train`")
    rows = test_rows[0]
    tallies = {n: _Tally(n_classes) for n in [*names, "fused"]}
    for start in range(0, len(rows), chunk_rows):
        sl = slice(start, min(start + chunk_rows, len(rows)))
        y = labels[rows[sl]]
        chunk = {n: read_scores(g, n, "test", sl) for n in names}
        if any(c.shape != (len(y), n_classes) for c in chunk.values()):
            raise StoreError(f"test scores have shapes {[c.shape for c in chunk.values()]}; expected (rows, {n_classes})")
        for n in names:
            tallies[n].add(y, chunk[n])
        tallies["fused"].add(y, fusion.transform(chunk))

    sets_metrics, details = {}, {}
    for n in names:
        sets_metrics[n], details[n] = tallies[n].result()
    fused_summary, details["fused"] = tallies["fused"].result()
    split = np.asarray(g["split"][...])
    valid = np.asarray(g["valid"][...], bool)
    metrics = {
        "sets": sets_metrics,
        "fused": {**fused_summary, "weights": fusion.weight_map()},
        "n_train": int(((split == SPLIT_CODES["train"]) & valid).sum()),
        "n_test": int(len(rows)),
        "n_failed": int((~valid).sum()),
    }
    return metrics, details, fusion


def write_evaluation(g: Any, metrics: Mapping[str, Any], details: Mapping[str, Any], fusion: ScoreFusion, report: str | None) -> None:
    """Store the fusion (weights + standardisation), metrics and per-class arrays under ``evaluation/``."""
    grp = g.require_group(EVAL_GROUP)
    grp.attrs["complete"] = False
    for src, d in details.items():
        sub = grp.require_group(src)
        for key in ("per_class_top1", "per_class_top5"):
            arr = np.array([np.nan if v is None else v for v in d[key]], dtype=np.float64)
            _put(sub, key, arr, ("class",))
        _put(sub, "confusion", np.asarray(d["confusion"], dtype=np.int64), ("true_class", "predicted_class"))
    grp.attrs.update(
        {
            "fusion": fusion.to_dict(),
            "metrics": json.loads(json.dumps(metrics)),
            "report": report,
            "sources": list(details),
            "complete": True,
        }
    )


def _put(grp: Any, name: str, data: np.ndarray, dims: tuple[str, ...]) -> None:
    arr = grp.create_array(name, shape=data.shape, dtype=data.dtype, chunks=data.shape, overwrite=True,
                           compressors=_store.COMPRESSOR, dimension_names=dims)
    arr[...] = data


def load_fusion(g: Any) -> ScoreFusion:
    """The fusion stored by the last evaluation of the open store ``g``."""
    if EVAL_GROUP not in g or not g[EVAL_GROUP].attrs.get("complete"):
        raise StoreError("the store has no evaluation yet; run `lsic evaluate` (or `lsic run`) first")
    return ScoreFusion.from_dict(g[EVAL_GROUP].attrs["fusion"])


def load_evaluation(url: str, *, storage_options: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Everything the report needs, read back from an evaluated store."""
    g = _store.open_store(url, "r", storage_options)
    if EVAL_GROUP not in g or not g[EVAL_GROUP].attrs.get("complete"):
        raise StoreError(f"store {url!r} has not been evaluated; run `lsic evaluate CONFIG` or `lsic run CONFIG` first")
    grp = g[EVAL_GROUP]
    attrs = dict(grp.attrs)
    details = {}
    for src in attrs.get("sources", []):
        sub = grp[src]
        details[src] = {
            "per_class_top1": [None if not np.isfinite(v) else float(v) for v in sub["per_class_top1"][...]],
            "per_class_top5": [None if not np.isfinite(v) else float(v) for v in sub["per_class_top5"][...]],
            "confusion": np.asarray(sub["confusion"][...]).tolist(),
        }
    names = list(attrs["metrics"]["sets"])
    return {
        "metrics": attrs["metrics"],
        "details": details,
        "fusion": ScoreFusion.from_dict(attrs["fusion"]),
        "class_names": list(g.attrs["class_names"]),
        "curves": read_curves(g, names),
        "config": dict(g.attrs.get("config", {})),
        "timings": read_timings(g),
        "report": attrs.get("report"),
    }


def run_evaluate(
    exp: Any,
    *,
    client: Any = None,
    report: str | None = None,
    progress: bool = True,
) -> EvaluateSummary:
    """Evaluate (or re-evaluate) the trained store of ``exp`` and write its report.

    Parameters
    ----------
    exp : Experiment
    client : distributed.Client, optional
        Unused: evaluation is a light step on the client over the stored scores
        (accepted so every stage has the same signature).
    report : str, optional
        Report folder; default ``exp.report``. ``""`` writes no report.
    progress : bool
        Unused (kept for a uniform stage signature).

    Returns
    -------
    EvaluateSummary
    """
    t0 = time.perf_counter()
    g = _store.open_store(exp.store.url, "a", exp.store.storage_options)
    names = scored_sets(g, [fs.name for fs in exp.feature_sets])
    missing = [fs.name for fs in exp.feature_sets if fs.name not in names]
    if missing and names:
        log.warning("evaluate: feature set(s) %s have no scores and are left out of the fusion", ", ".join(missing))
    if not names:
        raise StoreError(f"store {exp.store.url!r} has no SVM scores for {[fs.name for fs in exp.feature_sets]}; run `lsic train` first")
    metrics, details, fusion = evaluate_group(
        g, names, method=exp.fusion.method, rounds=exp.fusion.rounds, grid=exp.fusion.grid
    )
    report_dir = exp.report if report is None else report
    write_evaluation(g, metrics, details, fusion, report_dir or None)
    seconds = time.perf_counter() - t0
    record_timing(g, "evaluate", seconds)
    summary = EvaluateSummary(metrics, details, fusion, list(g.attrs["class_names"]), seconds, report_dir or None)
    if report_dir:
        from .gallery import gallery_for_report
        from .report import write_report

        Path(report_dir).mkdir(parents=True, exist_ok=True)  # the gallery writes its thumbnails first
        summary.files = write_report(
            report_dir,
            metrics=metrics,
            details=details,
            class_names=summary.class_names,
            curves=read_curves(g, names),
            config=dict(g.attrs.get("config", {})) or exp.to_dict(),
            timings=read_timings(g),
            store_url=exp.store.url,
            gallery=gallery_for_report(exp.store.url, report_dir, exp.store.storage_options),
        )
    return summary
