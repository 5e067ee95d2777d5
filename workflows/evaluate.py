"""Stage 3, evaluation (paper §5.2): fuse the stored SVM scores, measure, report.

Reads what training left in the store (``scores/<set>/<split>``: one
(n_split_rows, n_classes) float32 matrix per feature set and split, with the
store rows it covers), then

1. fits the fusion on the validation split (:class:`lsic.pipeline.ScoreFusion`:
   per-set standardisation, non-negative weights by coordinate ascent on the
   simplex maximising validation top-1; equal weights without a validation split);
2. streams the test scores row chunk by row chunk through a
   :class:`lsic.pipeline.MetricsTally` per set and for the fused scores
   (per-class top-1 / top-k hits and the confusion matrix)
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

from lsic.pipeline import TOP_K, MetricsTally, ScoreFusion, StoreError

from .gallery import gallery_for_report
from .report import format_table, write_report
from .results import load_evaluation, load_fusion, read_curves
from .store import FeatureStore

__all__ = ["EvaluateSummary", "evaluate_store", "load_evaluation", "load_fusion", "run_evaluate", "write_evaluation"]

log = logging.getLogger(__name__)


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
        return format_table(self.metrics)


def _split_result(tally: MetricsTally) -> tuple[dict[str, float], dict[str, Any]]:
    """A tally's numbers as the ``metrics.json`` summary and the per-class details."""
    r = tally.result()
    summary = {"top1": r["top1"], f"top{TOP_K}": r[f"top{TOP_K}"], "mean_per_class": r["mean_per_class"]}
    detail = {k: r[k] for k in ("per_class_top1", f"per_class_top{TOP_K}", "confusion")}
    return summary, detail


def evaluate_store(
    store: FeatureStore,
    names: Sequence[str],
    *,
    method: str = "coordinate_ascent",
    rounds: int = 20,
    grid: int = 21,
    chunk_rows: int = 4096,
) -> tuple[dict[str, Any], dict[str, Any], ScoreFusion]:
    """Fuse and measure the scores of ``names`` in ``store``.

    Returns
    -------
    (metrics, details, fusion) : the ``metrics.json`` record, per-class arrays
    per source (each set and ``"fused"``), and the fitted fusion.
    """
    names = list(names)
    if not names:
        raise StoreError("the store has no SVM scores; run `lsic train` first")
    class_names = store.class_names
    labels = store.labels().astype(np.int64)
    n_classes = len(class_names)

    # 1. fusion on the validation split (standardisation from validation, else training scores)
    val_rows = [store.score_rows(n, "val") for n in names]
    have_val = all(r is not None and len(r) for r in val_rows)
    if have_val:
        if any(not np.array_equal(r, val_rows[0]) for r in val_rows):
            raise StoreError("feature sets were scored on different validation rows; rerun `lsic train`")
        val = {n: store.read_scores(n, "val") for n in names}
        fusion = ScoreFusion.fit(val, labels[val_rows[0]], method=method, rounds=rounds, grid=grid)
    else:
        ref_split = "train" if all(store.score_rows(n, "train") is not None for n in names) else "test"
        ref = {n: store.read_scores(n, ref_split) for n in names}
        fusion = ScoreFusion.fit(ref, None, method="equal")
        log.info("evaluate: no validation scores; equal fusion weights, standardised on %s scores", ref_split)

    # 2. stream the test scores
    test_rows = [store.score_rows(n, "test") for n in names]
    if any(r is None for r in test_rows) or not len(test_rows[0]):
        raise StoreError("the store has no test scores; give the dataset a test split and rerun `lsic train`")
    if any(not np.array_equal(r, test_rows[0]) for r in test_rows):
        raise StoreError("feature sets were scored on different test rows; rerun `lsic train`")
    rows = test_rows[0]
    tallies = {n: MetricsTally(n_classes, TOP_K) for n in [*names, "fused"]}
    for start in range(0, len(rows), chunk_rows):
        sl = slice(start, min(start + chunk_rows, len(rows)))
        y = labels[rows[sl]]
        chunk = {n: store.read_scores(n, "test", sl) for n in names}
        if any(c.shape != (len(y), n_classes) for c in chunk.values()):
            raise StoreError(f"test scores have shapes {[c.shape for c in chunk.values()]}; expected (rows, {n_classes})")
        for n in names:
            tallies[n].add(y, chunk[n])
        tallies["fused"].add(y, fusion.transform(chunk))

    sets_metrics, details = {}, {}
    for n in names:
        sets_metrics[n], details[n] = _split_result(tallies[n])
    fused_summary, details["fused"] = _split_result(tallies["fused"])
    metrics = {
        "sets": sets_metrics,
        "fused": {**fused_summary, "weights": fusion.weight_map()},
        "n_train": int(store.split_rows("train").size),
        "n_test": int(len(rows)),
        "n_failed": int((~store.valid()).sum()),
    }
    return metrics, details, fusion


def write_evaluation(store: FeatureStore, metrics: Mapping[str, Any], details: Mapping[str, Any],
                     fusion: ScoreFusion, report: str | None) -> None:
    """Store the fusion (weights + standardisation), metrics and per-class arrays under ``evaluation/``."""
    arrays = {
        src: {
            **{key: np.array([np.nan if v is None else v for v in d[key]], dtype=np.float64)
               for key in ("per_class_top1", f"per_class_top{TOP_K}")},
            "confusion": np.asarray(d["confusion"], dtype=np.int64),
        }
        for src, d in details.items()
    }
    store.write_evaluation({"fusion": fusion.to_dict(), "metrics": json.loads(json.dumps(metrics)), "report": report},
                           arrays)


def run_evaluate(
    exp: Any,
    *,
    store: FeatureStore | None = None,
    report: str | None = None,
) -> EvaluateSummary:
    """Evaluate (or re-evaluate) the trained store of ``exp`` and write its report.

    Evaluation is a light step on the client over the stored scores: it needs no cluster.

    Parameters
    ----------
    exp : Experiment
    store : FeatureStore, optional
        The trained store, open for writing (default: ``exp.store`` opened with
        mode ``"r+"``: evaluation writes its results only into a store that
        exists and holds scores, and a missing one is an error).
    report : str, optional
        Report folder; default ``exp.report``. ``""`` writes no report.

    Returns
    -------
    EvaluateSummary
    """
    t0 = time.perf_counter()
    if store is None:  # "r+": a missing store is an error, never created here
        store = FeatureStore.open(exp.store.url, "r+", exp.store.storage_options)
    names = store.require_scores([fs.name for fs in exp.feature_sets])  # before anything is written
    missing = [fs.name for fs in exp.feature_sets if fs.name not in names]
    if missing:
        log.warning("evaluate: feature set(s) %s have no scores and are left out of the fusion", ", ".join(missing))
    metrics, details, fusion = evaluate_store(
        store, names, method=exp.fusion.method, rounds=exp.fusion.rounds, grid=exp.fusion.grid
    )
    report_dir = exp.report if report is None else report
    write_evaluation(store, metrics, details, fusion, report_dir or None)
    seconds = time.perf_counter() - t0
    store.record_timing("evaluate", seconds)
    summary = EvaluateSummary(metrics, details, fusion, store.class_names, seconds, report_dir or None)
    if report_dir:
        Path(report_dir).mkdir(parents=True, exist_ok=True)  # the gallery writes its thumbnails first
        summary.files = write_report(
            report_dir,
            metrics=metrics,
            details=details,
            class_names=summary.class_names,
            curves=read_curves(store, names),
            config=store.config or exp.to_dict(),
            timings=store.timings(),
            store_url=exp.store.url,
            gallery=gallery_for_report(store, report_dir),
        )
    return summary
