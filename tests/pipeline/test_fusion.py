"""Score fusion and metrics (paper §5.2) against scikit-learn and naive references."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn import metrics as skm

from lsic.pipeline import (
    TOP_K,
    ArrayError,
    MetricsTally,
    ScoreFusion,
    classification_metrics,
    confusion_matrix,
    fusion_weights,
    mean_per_class_accuracy,
    per_class_hit_rates,
    score_stats,
    standardize_scores,
    top_k_accuracy,
    top_k_predictions,
)


def _scores(rng, n=300, c=12, signal=1.0):
    y = rng.integers(0, c, n)
    s = rng.normal(size=(n, c))
    s[np.arange(n), y] += signal
    return y, s


@pytest.mark.parametrize("k", [1, 2, 5, 12])
def test_top_k_matches_sklearn(k):
    rng = np.random.default_rng(0)
    y, s = _scores(rng)
    want = skm.top_k_accuracy_score(y, s, k=k, labels=np.arange(s.shape[1]))
    assert top_k_accuracy(y, s, k) == pytest.approx(want, abs=1e-12)


def test_top_k_predictions_order():
    s = np.array([[0.1, 0.9, 0.5, -1.0]])
    assert top_k_predictions(s, 3).tolist() == [[1, 2, 0]]
    assert top_k_predictions(s, 10).shape == (1, 4)


def test_mean_per_class_matches_balanced_accuracy():
    rng = np.random.default_rng(1)
    y, s = _scores(rng, n=500, c=9, signal=0.7)
    pred = s.argmax(1)
    assert mean_per_class_accuracy(y, pred, 9) == pytest.approx(skm.balanced_accuracy_score(y, pred), abs=1e-12)


def test_confusion_matches_sklearn():
    rng = np.random.default_rng(2)
    y, s = _scores(rng, n=200, c=6)
    pred = s.argmax(1)
    np.testing.assert_array_equal(confusion_matrix(y, pred, 6), skm.confusion_matrix(y, pred, labels=np.arange(6)))
    assert confusion_matrix(y, pred, 6).dtype == np.int64


def test_per_class_hit_rates_naive():
    rng = np.random.default_rng(3)
    y, s = _scores(rng, n=120, c=7, signal=0.5)
    y[y == 6] = 5  # class 6 has no rows
    for k in (1, 5):
        got = per_class_hit_rates(y, s, k)
        top = np.argsort(-s, axis=1)[:, :k]
        hit = np.array([y[i] in top[i] for i in range(len(y))])
        for c in range(6):
            assert got[c] == pytest.approx(hit[y == c].mean())
        assert np.isnan(got[6])
        # the mean of per-class top-1 hit rates is the mean per-class accuracy
    assert np.nanmean(per_class_hit_rates(y, s, 1)) == pytest.approx(skm.balanced_accuracy_score(y, s.argmax(1)))


def test_classification_metrics_dict():
    rng = np.random.default_rng(4)
    y, s = _scores(rng, n=100, c=10)
    m = classification_metrics(y, s)
    assert set(m) == {"n", "top1", "top5", "mean_per_class", "per_class_top1", "per_class_top5", "confusion"}
    assert m["top5"] == pytest.approx(skm.top_k_accuracy_score(y, s, k=5, labels=np.arange(10)))
    assert len(m["per_class_top5"]) == 10
    assert np.asarray(m["confusion"]).sum() == 100


def test_metric_input_errors():
    # bad arrays are ValueErrors, as in scikit-learn (and LsicErrors for the CLI)
    with pytest.raises(ValueError, match="labels have shape"):
        top_k_accuracy([0, 1], np.zeros((3, 2)))
    with pytest.raises(ArrayError, match="must lie in 0..2"):
        top_k_accuracy([0, 5], np.zeros((2, 3)))
    with pytest.raises(ValueError, match="columns"):
        MetricsTally(4).add([0], np.zeros((1, 3)))
    assert not issubclass(ArrayError, OSError)


@pytest.mark.parametrize("chunk", [1, 7, 100])
def test_streamed_tally_equals_sklearn_on_the_whole(chunk):
    rng = np.random.default_rng(6)
    y, s = _scores(rng, n=100, c=9, signal=0.6)
    tally = MetricsTally(9)
    for a in range(0, len(y), chunk):
        tally.add(y[a:a + chunk], s[a:a + chunk])
    labels = np.arange(9)
    assert tally.n == 100
    assert tally.top_k_accuracy(1) == pytest.approx(skm.top_k_accuracy_score(y, s, k=1, labels=labels))
    assert tally.top_k_accuracy(TOP_K) == pytest.approx(skm.top_k_accuracy_score(y, s, k=TOP_K, labels=labels))
    assert tally.mean_per_class_accuracy() == pytest.approx(skm.balanced_accuracy_score(y, s.argmax(1)))
    np.testing.assert_array_equal(tally.confusion, skm.confusion_matrix(y, s.argmax(1), labels=labels))
    assert tally.result() == classification_metrics(y, s)


def test_tally_of_merged_class_blocks_equals_whole_scores():
    """Training's validation: each actor ranks its class block; the merged top-k lists give the same metrics."""
    rng = np.random.default_rng(7)
    y, s = _scores(rng, n=80, c=11, signal=0.4)
    cls, sc = [], []
    for lo, hi in ((0, 4), (4, 5), (5, 11)):
        top = np.argsort(-s[:, lo:hi], axis=1, kind="stable")[:, :TOP_K]
        cls.append(top + lo)
        sc.append(np.take_along_axis(s[:, lo:hi], top, 1))
    cls, sc = np.concatenate(cls, 1), np.concatenate(sc, 1)
    ranked = np.take_along_axis(cls, np.argsort(-sc, axis=1, kind="stable"), 1)
    merged = MetricsTally(11).add_ranked(y, ranked)
    assert merged.result() == MetricsTally(11).add(y, s).result()


def test_standardize():
    rng = np.random.default_rng(5)
    s = rng.normal(3.0, 2.0, size=(50, 4))
    mu, sd = score_stats(s)
    z = standardize_scores(s, mu, sd)
    assert z.dtype == np.float32
    assert float(z.mean()) == pytest.approx(0.0, abs=1e-5)
    assert float(z.std()) == pytest.approx(1.0, abs=1e-5)
    assert score_stats(np.ones((3, 3))) == (1.0, 1.0)


def _three_sets(seed, n=400, c=10):
    """Three noisy views of the same labels, each informative about different classes and on its own scale."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, c, n)
    sets = {}
    for j, scale in enumerate((1.0, 50.0, 0.01)):
        s = rng.normal(size=(n, c))
        good = (y % 3) == j
        s[np.arange(n), y] += np.where(good, 2.0, 0.6)
        sets[f"set{j}"] = s * scale + 7 * j
    return y, sets


@pytest.mark.parametrize("seed", range(5))
def test_fusion_beats_or_equals_best_single_set_on_validation(seed):
    y, sets = _three_sets(seed)
    fusion = ScoreFusion.fit(sets, y)
    fused_acc = top_k_accuracy(y, fusion.transform(sets), 1)
    best_single = max(top_k_accuracy(y, s, 1) for s in sets.values())
    assert fused_acc >= best_single
    w = np.array(fusion.weights)
    assert (w >= 0).all() and w.sum() == pytest.approx(1.0)
    assert fusion.method == "coordinate_ascent"


def test_fusion_improves_on_complementary_sets():
    y, sets = _three_sets(11, n=2000)
    fusion = ScoreFusion.fit(sets, y)
    fused_acc = top_k_accuracy(y, fusion.transform(sets), 1)
    best_single = max(top_k_accuracy(y, s, 1) for s in sets.values())
    assert fused_acc > best_single + 0.05
    assert min(fusion.weights) > 0.05  # every set contributes


def test_fusion_ignores_useless_set():
    rng = np.random.default_rng(7)
    y, s = _scores(rng, n=500, c=8, signal=2.0)
    sets = {"good": s, "noise": rng.normal(size=s.shape)}
    fusion = ScoreFusion.fit(sets, y)
    assert fusion.weight_map()["good"] > fusion.weight_map()["noise"]
    assert top_k_accuracy(y, fusion.transform(sets), 1) >= top_k_accuracy(y, s, 1)


def test_equal_weights_without_validation_and_roundtrip():
    y, sets = _three_sets(3)
    fusion = ScoreFusion.fit(sets, None)
    assert fusion.method == "equal"
    assert fusion.weights == pytest.approx((1 / 3,) * 3)
    again = ScoreFusion.from_dict(fusion.to_dict())
    np.testing.assert_array_equal(again.transform(sets), fusion.transform(sets))
    # naive reference for the fused formula
    naive = sum((sets[n] - mu) / sd for n, mu, sd in zip(fusion.names, fusion.means, fusion.stds)) / 3
    np.testing.assert_allclose(fusion.transform(sets), naive, rtol=1e-4, atol=1e-4)


def test_fusion_weights_single_set_and_errors():
    rng = np.random.default_rng(0)
    y, s = _scores(rng)
    assert fusion_weights([s], y).tolist() == [1.0]
    with pytest.raises(ValueError, match="shapes"):
        fusion_weights([s, s[:10]], y)
    with pytest.raises(ArrayError, match="missing"):
        ScoreFusion.fit({"a": s}, y).transform({"b": s})
