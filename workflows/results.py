"""Reading back what evaluation left in a store: the fusion, the metrics, the training curves.

Evaluation writes its fusion (weights and standardisation, paper §5.2), its
metrics and per-class arrays under ``evaluation/`` and training its per-epoch
history under ``models/<set>``; the report, the gallery, prediction and
``lsic report STORE`` read them through these functions.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from lsic.pipeline import TOP_K, ScoreFusion

from .store import FeatureStore

__all__ = ["load_evaluation", "load_fusion", "read_curves"]


def load_fusion(store: FeatureStore) -> ScoreFusion:
    """The fusion stored by the last evaluation of ``store``."""
    return ScoreFusion.from_dict(store.read_evaluation()[0]["fusion"])


def read_curves(store: FeatureStore, names: Sequence[str]) -> dict[str, dict[str, list[float | None]]]:
    """Per-epoch validation top-1 accuracies for Fig. 3, ``{set: {"asgd": [...], "sgd": [...]}}``.

    Training records one entry per epoch in the history of ``models/<set>``
    (``{"epoch": e, "val_top1": {"<set>": acc, "<set>/sgd": acc}, ...}``); a set
    without a record gets no curve.
    """
    out: dict[str, dict[str, list[float | None]]] = {}
    for name in names:
        recs = sorted((h for h in store.history(name) if isinstance(h, Mapping)), key=lambda h: h.get("epoch", 0))
        curve: dict[str, list[float | None]] = {}
        for method, key in (("asgd", name), ("sgd", f"{name}/sgd")):
            vals = [h.get("val_top1", {}).get(key) for h in recs]
            if any(v is not None for v in vals):
                curve[method] = [None if v is None else float(v) for v in vals]
        if curve:
            out[name] = curve
    return out


def _rates(values: np.ndarray) -> list[float | None]:
    return [None if not np.isfinite(v) else float(v) for v in values]


def load_evaluation(store: FeatureStore | str, *, storage_options: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Everything the report needs, read back from an evaluated store.

    Parameters
    ----------
    store : FeatureStore or str
        An open store, or its URL (opened for reading with ``storage_options``).

    Returns
    -------
    dict with ``metrics`` (the ``metrics.json`` record), ``details`` (per
    source: per-class rates and the confusion matrix), ``fusion``
    (:class:`~lsic.pipeline.ScoreFusion`), ``class_names``, ``curves``,
    ``config``, ``timings`` and ``report`` (the folder of the last evaluation).
    """
    if not isinstance(store, FeatureStore):
        store = FeatureStore.open(store, "r", storage_options)
    attrs, arrays = store.read_evaluation()
    rates = ("per_class_top1", f"per_class_top{TOP_K}")
    details = {src: {**{k: _rates(a[k]) for k in rates}, "confusion": a["confusion"].tolist()}
               for src, a in arrays.items()}
    return {
        "metrics": attrs["metrics"],
        "details": details,
        "fusion": ScoreFusion.from_dict(attrs["fusion"]),
        "class_names": store.class_names,
        "curves": read_curves(store, list(attrs["metrics"]["sets"])),
        "config": store.config,
        "timings": store.timings(),
        "report": attrs.get("report"),
    }
