"""Per-set lambda on the validation images of a kept store, in-process; test rows are never read.

For each feature set of an extracted store (e.g. a split kept by
``benchmarks/caltech101.py --keep``), trains one-vs-all ASGD on the training
rows for each lambda of a grid in one pass per epoch (``fit_lambda_grid``,
block mode, ``--epochs``, default 30) and prints the validation mean per-class
accuracy per lambda, then the equal-weight fusion at the given lambdas and at
each set's best. Only the rows up to the last validation row are read (rows are
stored train, val, test).

Usage::

    python benchmarks/validate_lambdas.py STORE [--grid hog_lcc=3e-5,1e-4,3e-4 ...] [--shipped sift_fv=3e-4] [--epochs 100]

The last line is one JSON object; the same figures go to a result file
(``_results.finish``).
"""

from __future__ import annotations

import argparse
import time

from _results import fail, finish

import numpy as np

from lsic.pipeline import LsicError, ScoreFusion, fit_lambda_grid, mean_per_class_accuracy
from lsic.workflows.store import FeatureStore

DEFAULT_GRID = "3e-5,1e-4,3e-4"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("store", help="an extracted store with training and validation rows")
    ap.add_argument("--grid", nargs="*", default=[], help="SET=l1,l2,... (default for every set: " + DEFAULT_GRID + ")")
    ap.add_argument("--shipped", nargs="*", default=[], help="SET=lambda of the config (default 1e-4)")
    ap.add_argument("--epochs", type=int, default=30)
    args = ap.parse_args()

    try:
        store = FeatureStore.open(args.store, "r")
    except LsicError as exc:
        fail(str(exc))
    labels = store.labels()
    tr, va = store.split_rows("train"), store.split_rows("val")
    if not va.size:
        fail(f"{args.store} has no validation rows; extract with dataset.val_per_class > 0")
    names = sorted(fs["name"] for fs in store.config["feature_sets"] if store.has_features(fs["name"]))
    grids = {n: [float(v) for v in DEFAULT_GRID.split(",")] for n in names}
    grids.update({k: [float(v) for v in vs.split(",")] for k, _, vs in (a.partition("=") for a in args.grid)})
    shipped = {n: 1e-4 for n in names}
    shipped.update({k: float(v) for k, _, v in (a.partition("=") for a in args.shipped)})
    yv = labels[va]
    scores: dict[tuple[str, float], np.ndarray] = {}
    per_set: dict[str, dict[str, float]] = {}
    for name in names:
        t0 = time.perf_counter()
        lams = sorted(set(grids[name]) | {shipped[name]})
        X = np.asarray(store.features(name)[0 : va.max() + 1])
        ests = fit_lambda_grid(X[tr], labels[tr], lams, epochs=args.epochs, mode="block", random_state=0)
        per_set[name] = {}
        for lam, est in zip(lams, ests):
            S = est.decision_function(X[va])
            scores[(name, lam)] = S
            per_set[name][f"{lam:g}"] = round(100 * mean_per_class_accuracy(yv, est.classes_[S.argmax(1)]), 2)
        print(name, per_set[name], f"{time.perf_counter() - t0:.0f} s", flush=True)
        del X

    def fused(choice: dict[str, float]) -> float:
        S = {n: scores[(n, lam)] for n, lam in choice.items()}
        f = ScoreFusion.fit(S, yv, method="equal")
        return round(100 * mean_per_class_accuracy(yv, f.transform(S).argmax(1)), 2)

    best = {n: float(max(per_set[n], key=per_set[n].get)) for n in names}
    finish("validate_lambdas", {"per_set": per_set, "best_lam": best, "n_train": int(tr.size), "n_val": int(va.size),
                                "fused_shipped_equal": fused(shipped), "fused_best_equal": fused(best)})


if __name__ == "__main__":
    main()
