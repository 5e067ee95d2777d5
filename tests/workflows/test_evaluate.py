"""Evaluation stage and report over a synthetic store of scores (``testing.write_store``; no extraction or training)."""

from __future__ import annotations

import json
import types

import numpy as np
import pytest
from PIL import Image
from sklearn import metrics as skm

from lsic.pipeline import ScoreFusion, StoreError, top_k_accuracy
from lsic.workflows.evaluate import load_evaluation, run_evaluate
from lsic.workflows.report import FIGURES, format_table, report_from_store
from lsic.workflows.store import SPLIT_CODES, TEST, TRAIN, VAL, FeatureStore
from lsic.workflows.testing import write_scores, write_store

N_CLASSES = 7
SETS = ("a", "b")


def _make_store(url, seed=0, with_val=True, failed=2):
    rng = np.random.default_rng(seed)
    n_tr, n_va, n_te = 70, 35 if with_val else 0, 49
    n = n_tr + n_va + n_te + failed
    labels = rng.integers(0, N_CLASSES, n).astype(np.int32)
    split = np.array([TRAIN] * n_tr + [VAL] * n_va + [TEST] * (n_te + failed), np.int8)
    valid = np.ones(n, bool)
    valid[-failed:] = False
    g = write_store(url, labels=labels, split=split, valid=valid, features={}, chunk_rows=16,
                           class_names=[f"class_{i}" for i in range(N_CLASSES)], config={"name": "toy"})
    for j, name in enumerate(SETS):
        for sp, code in SPLIT_CODES.items():
            rows = np.flatnonzero((split == code) & valid)
            if not len(rows):
                continue
            s = rng.normal(size=(len(rows), N_CLASSES)).astype(np.float32)
            s[np.arange(len(rows)), labels[rows]] += 1.0 + j
            s = s * (10.0 ** j)  # sets on very different scales
            write_scores(g, name, sp, rows, s)
        g.init_models(name, {"history": [
            {"epoch": e + 1, "val_top1": {name: a, f"{name}/sgd": b}} for e, (a, b) in enumerate([(0.3, 0.2), (0.5, 0.3), (0.6, 0.45)])
        ]})
    return g


def _exp(url, report, method="coordinate_ascent"):
    return types.SimpleNamespace(
        store=types.SimpleNamespace(url=url, storage_options={}),
        feature_sets=[types.SimpleNamespace(name=n) for n in SETS],
        fusion=types.SimpleNamespace(method=method, rounds=20, grid=21),
        report=str(report),
        to_dict=lambda: {"name": "toy"},
    )


def test_evaluate_metrics_match_sklearn_and_report(tmp_path):
    url = str(tmp_path / "s.zarr")
    g = _make_store(url)
    g.record_timing("extract", 1.5)
    g.record_timing("train", 2.5)
    summary = run_evaluate(_exp(url, tmp_path / "rep"))
    m = summary.metrics

    # exactly the documented shape
    assert set(m) == {"sets", "fused", "n_train", "n_test", "n_failed"}
    assert set(m["sets"]) == set(SETS)
    for rec in m["sets"].values():
        assert set(rec) == {"top1", "top5", "mean_per_class"}
    assert set(m["fused"]) == {"top1", "top5", "mean_per_class", "weights"}
    assert m["n_train"] == 70 and m["n_test"] == 49 and m["n_failed"] == 2
    assert sum(m["fused"]["weights"].values()) == pytest.approx(1.0)

    labels = g.labels()
    rows = g.score_rows("a", "test")
    y = labels[rows]
    labels_all = np.arange(N_CLASSES)
    for name in SETS:
        s = g.read_scores(name, "test")
        assert m["sets"][name]["top1"] == pytest.approx(skm.top_k_accuracy_score(y, s, k=1, labels=labels_all))
        assert m["sets"][name]["top5"] == pytest.approx(skm.top_k_accuracy_score(y, s, k=5, labels=labels_all))
        assert m["sets"][name]["mean_per_class"] == pytest.approx(skm.balanced_accuracy_score(y, s.argmax(1)))
    fusion = ScoreFusion.from_dict(g.read_evaluation()[0]["fusion"])
    fused = fusion.transform({n: g.read_scores(n, "test") for n in SETS})
    assert m["fused"]["top1"] == pytest.approx(skm.top_k_accuracy_score(y, fused, k=1, labels=labels_all))
    np.testing.assert_array_equal(
        np.asarray(summary.details["fused"]["confusion"]),
        skm.confusion_matrix(y, fused.argmax(1), labels=labels_all),
    )
    # fusion never below the best single set on validation
    vrows = g.score_rows("a", "val")
    val = {n: g.read_scores(n, "val") for n in SETS}
    fused_val = top_k_accuracy(labels[vrows], fusion.transform(val), 1)
    assert fused_val >= max(top_k_accuracy(labels[vrows], v, 1) for v in val.values())

    # report files
    rep = tmp_path / "rep"
    for f in [*FIGURES.values(), "index.html", "README.md", "metrics.json", "details.json"]:
        assert (rep / f).is_file(), f
    for f in FIGURES.values():
        with Image.open(rep / f) as im:
            im.verify()
        with Image.open(rep / f) as im:
            assert im.format == "PNG" and im.size[0] > 100
    assert json.loads((rep / "metrics.json").read_text()) == json.loads(json.dumps(m))
    html = (rep / "index.html").read_text()
    assert "fig5_per_class.png" in html and "evaluate" in html and "extract" in html
    assert "| fused |" in (rep / "README.md").read_text()
    assert "fused" in format_table(m)

    # lsic report STORE regenerates the same files from the store alone
    ev = load_evaluation(url)
    assert ev["curves"]["a"]["sgd"] == [0.2, 0.3, 0.45]
    assert list(ev["timings"]) == ["extract", "train", "evaluate"]
    out = report_from_store(url, tmp_path / "again")
    assert json.loads(out["metrics"].read_text()) == json.loads(json.dumps(m))
    with Image.open(out["fig3"]) as im:
        im.verify()


def test_equal_weights_without_validation(tmp_path):
    url = str(tmp_path / "s.zarr")
    _make_store(url, with_val=False)
    summary = run_evaluate(_exp(url, ""))
    assert summary.fusion.method == "equal"
    assert list(summary.metrics["fused"]["weights"].values()) == pytest.approx([0.5, 0.5])
    assert summary.files == {}


def test_evaluate_without_scores_is_one_line_error(tmp_path):
    url = str(tmp_path / "s.zarr")
    write_store(url, labels=np.zeros(4), split=np.zeros(4), features={}, class_names=["x"])
    with pytest.raises(StoreError, match="lsic train"):
        run_evaluate(_exp(url, ""))
    with pytest.raises(StoreError, match="no SVM scores; run `lsic train` first"):  # not evaluation: training is missing
        load_evaluation(url)
