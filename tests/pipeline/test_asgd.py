"""ASGD linear SVMs (Lin et al., CVPR 2011, §4, eqs. 3-9) against independent references.

The reference is the naive five-operation ASGD written plainly below (eqs. 4-7
one vector operation at a time, float64), plus scikit-learn's LinearSVC and
SGDClassifier on load_digits, plus equivalences between paths.
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from lsic.pipeline import ASGDClassifier, ConfigError, DataError, OneVsAllASGD, fit_lambda_grid
from lsic.pipeline import _asgd_kernels


def naive_asgd(X, y, classes, lam, eta0, *, c=1.0, average=True, avg_start=0, fit_intercept=True):
    """Five vector operations per step: margin, decay, hinge step, average (eqs. 4-7)."""
    X = np.asarray(X, np.float64)
    K, d = len(classes), X.shape[1]
    W = np.zeros((K, d))
    Wbar = np.zeros((K, d))
    b = np.zeros(K)
    bbar = np.zeros(K)
    for k, cls in enumerate(classes):
        for t in range(X.shape[0]):
            x = X[t]
            yt = 1.0 if y[t] == cls else -1.0
            eta = eta0 / (1.0 + lam * eta0 * t) ** c
            alpha = 1.0 / max(1, t + 1 - avg_start)
            margin = yt * (W[k] @ x + b[k])
            W[k] = (1.0 - lam * eta) * W[k]
            if margin < 1.0:
                W[k] = W[k] + eta * yt * x
                if fit_intercept:
                    b[k] += eta * yt
            Wbar[k] = (1.0 - alpha) * Wbar[k] + alpha * W[k]
            bbar[k] = (1.0 - alpha) * bbar[k] + alpha * b[k]
    return (Wbar, bbar) if average else (W, b)


def _toy(n=2500, d=24, K=4, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d)).astype(np.float32)
    y = rng.integers(0, K, n)
    return X, y


def _rel(a, b):
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-30))


@pytest.mark.parametrize("mode", ["exact", "block"])
@pytest.mark.parametrize("average", [True, False, 300])
@pytest.mark.parametrize("c", [1.0, 2.0 / 3.0])
def test_matches_naive_five_operation_asgd(mode, average, c):
    X, y = _toy()
    lam, eta0 = 1e-3, 0.1
    m = OneVsAllASGD(X.shape[1], np.arange(4), lam=lam, eta0=eta0, c=c, average=average, mode=mode,
                     block_gram=True, block_size=64)
    m.partial_fit(X, y)
    W, b = naive_asgd(X, y, range(4), lam, eta0, c=c, average=bool(average),
                      avg_start=0 if average is True else int(average))
    coef = m.coef_
    assert coef.dtype == np.float32 and coef.shape == (4, X.shape[1])
    assert m.intercept_.dtype == np.float32
    assert _rel(coef, W) < 1e-4
    np.testing.assert_allclose(m.intercept_, b, atol=1e-5)
    np.testing.assert_array_equal(m.t, np.full(4, X.shape[0]))


def test_renormalisation_long_run_stays_exact():
    # c = 2/3 and lam * eta0 large: P11 shrinks like exp(-3 (lam eta0 t)^(1/3)) and P22 like
    # 1/t, so over 12,000 steps the fold-back fires several times (counted below from the
    # schedule alone, which is all P depends on), and the result still matches the naive run.
    X, y = _toy(n=12_000, d=8, K=3, seed=1)
    lam, eta0, c = 0.2, 2.0, 2.0 / 3.0
    folds, p11, p22 = 0, 1.0, 1.0
    for t in range(X.shape[0]):
        if p11 < _asgd_kernels.RENORM_LOW or p22 < _asgd_kernels.RENORM_LOW:
            folds, p11, p22 = folds + 1, 1.0, 1.0
        p11 *= 1.0 - lam * eta0 / (1 + lam * eta0 * t) ** c
        p22 *= 1.0 - 1.0 / (t + 1) if t > 0 else 1.0
    assert folds >= 4
    W, b = naive_asgd(X, y, range(3), lam, eta0, c=c)
    for mode in ("exact", "block"):
        m = OneVsAllASGD(8, np.arange(3), lam=lam, eta0=eta0, c=c, mode=mode, block_gram=True, block_size=50)
        m.partial_fit(X, y)
        assert np.all(m._P[:, [0, 2]] >= _asgd_kernels.RENORM_LOW * 0.5)
        assert _rel(m.coef_, W) < 1e-4, mode
        np.testing.assert_allclose(m.intercept_, b, atol=1e-5)


def test_renormalisation_in_tied_phase_plain_sgd():
    X, y = _toy(n=3000, d=8, K=2, seed=2)
    lam, eta0 = 0.3, 3.0
    for average in (False, 2000):
        m = OneVsAllASGD(8, [0, 1], lam=lam, eta0=eta0, average=average)
        m.partial_fit(X, y)
        W, b = naive_asgd(X, y, [0, 1], lam, eta0, average=bool(average),
                          avg_start=int(average) if average else 0)
        assert _rel(m.coef_, W) < 1e-4


def test_separable_toy_zero_training_error():
    rng = np.random.default_rng(3)
    centers = rng.normal(scale=6.0, size=(4, 10))
    y = rng.integers(0, 4, 800)
    X = (centers[y] + rng.normal(scale=0.5, size=(800, 10))).astype(np.float32)
    for mode in ("exact", "block"):
        clf = ASGDClassifier(lam=1e-4, epochs=5, mode=mode, random_state=0).fit(X, y)
        assert clf.score(X, y) == 1.0


def test_digits_accuracy_matches_linearsvc_and_sgdclassifier():
    from sklearn.datasets import load_digits
    from sklearn.linear_model import SGDClassifier
    from sklearn.model_selection import train_test_split
    from sklearn.svm import LinearSVC

    X, y = load_digits(return_X_y=True)
    Xtr, Xte, ytr, yte = train_test_split(X / 16.0, y, test_size=0.3, random_state=0)
    lam = 1e-4
    ours = ASGDClassifier(lam=lam, epochs=10, random_state=0).fit(Xtr, ytr).score(Xte, yte)
    block = ASGDClassifier(lam=lam, epochs=10, random_state=0, mode="block", block_size=32).fit(Xtr, ytr)
    svc = LinearSVC(C=1.0 / (lam * len(ytr)), loss="hinge", max_iter=50_000).fit(Xtr, ytr).score(Xte, yte)
    sgd = SGDClassifier(alpha=lam, average=True, max_iter=10, tol=None, random_state=0).fit(Xtr, ytr)
    sgd = sgd.score(Xte, yte)
    assert ours >= svc - 0.01, (ours, svc)
    assert ours >= sgd - 0.01, (ours, sgd)
    assert block.score(Xte, yte) >= svc - 0.015


def _latent_teacher(n, d, K, rank, seed):
    """Rows near a rank-``rank`` latent (like pooled features), labels argmax of a noisy linear teacher."""
    rng = np.random.default_rng(seed)
    Z = rng.standard_normal((n, rank))
    X = (Z @ rng.standard_normal((rank, d)) / np.sqrt(rank) + 0.5 * rng.standard_normal((n, d))) / np.sqrt(d)
    s = Z @ rng.standard_normal((rank, K))
    y = (s + 0.1 * s.std() * rng.standard_normal(s.shape)).argmax(1)
    return X.astype(np.float32), y


def test_automatic_eta0_matches_best_fixed_eta0_and_sgdclassifier():
    # Many unbalanced one-vs-all problems: a per-class eta0 picked from a few positives each
    # scattered eta0 over two decades and made the class scores incomparable (0.55 here, vs
    # 0.68 for any shared eta0). One eta0 per lambda, from trial runs as long as the real one.
    from sklearn.linear_model import SGDClassifier

    X, y = _latent_teacher(4000, 256, 40, 16, 0)
    Xtr, ytr, Xte, yte = X[:3000], y[:3000], X[3000:], y[3000:]
    lam = 1e-4
    auto = ASGDClassifier(lam=lam, epochs=5, random_state=0).fit(Xtr, ytr)
    assert np.unique(auto.eta0_).size == 1
    ref = 1.0 / float(np.mean(np.sum(Xtr.astype(np.float64) ** 2, axis=1)))
    fixed = [ASGDClassifier(lam=lam, eta0=f * ref, epochs=5, random_state=0).fit(Xtr, ytr).score(Xte, yte)
             for f in (1 / 16, 1 / 4, 1, 4, 16)]
    sgd = SGDClassifier(alpha=lam, average=True, max_iter=5, tol=None, random_state=0).fit(Xtr, ytr)
    acc = auto.score(Xte, yte)
    assert acc >= max(fixed) - 0.015, (acc, fixed)
    assert acc >= sgd.score(Xte, yte) - 0.02, (acc, sgd.score(Xte, yte))


def test_automatic_eta0_one_value_per_lambda():
    X, y = _toy(n=1500, K=5)
    m = OneVsAllASGD(X.shape[1], np.tile(np.arange(5), 2), lam=np.repeat([1e-4, 1e-1], 5), eta0=None)
    m.partial_fit(X, y)
    assert np.unique(m.eta0[:5]).size == 1 and np.unique(m.eta0[5:]).size == 1
    assert np.all(m.lam * m.eta0 < 1.0)
    only = OneVsAllASGD(X.shape[1], [3], lam=1e-1, eta0=None)
    only.partial_fit(X, y)
    assert only.eta0[0] == m.eta0[5]


@pytest.mark.parametrize("mode", ["exact", "block"])
def test_automatic_eta0_walk_finds_the_full_sweep_minimum(mode):
    """The bracketing walk picks the candidate a sweep over all of them would pick.

    The sweep is written here: every candidate eta0 = f / mean ||x||^2 run alone
    (fixed eta0) on the sample for the trial classes, its eq. 3 objective
    computed directly, the argmin per lambda.
    """
    from lsic.pipeline import _asgd

    X, y = _latent_teacher(1500, 64, 12, 8, 1)
    lams = (1e-4, 3e-2)
    m = OneVsAllASGD(X.shape[1], np.tile(np.arange(12), 2), lam=np.repeat(lams, 12), eta0=None, mode=mode)
    m.partial_fit(X, y)
    sample = X[:_asgd.ETA0_SAMPLE_ROWS].astype(np.float64)
    ys = y[:_asgd.ETA0_SAMPLE_ROWS]
    ref = 1.0 / np.mean(np.sum(sample**2, axis=1))
    ids, counts = np.unique(ys, return_counts=True)
    tcls = ids[np.lexsort((ids, -counts))][:_asgd.ETA0_TRIAL_CLASSES]
    picked = []
    for i, lam in enumerate(lams):
        objective = []
        for f in _asgd.ETA0_FACTORS:
            eta = min(f * ref, 0.5 / lam)
            trial = OneVsAllASGD(X.shape[1], tcls, lam=lam, eta0=eta, mode=mode)
            for _ in range(_asgd.ETA0_TRIAL_PASSES):
                trial.partial_fit(X[:_asgd.ETA0_SAMPLE_ROWS], ys)
            W, b = trial.coef_.astype(np.float64), trial.intercept_.astype(np.float64)
            margins = np.where(ys[:, None] == tcls[None, :], 1.0, -1.0) * (sample @ W.T + b)
            objective.append(np.mean(0.5 * lam * np.sum(W**2, axis=1) + np.maximum(0.0, 1.0 - margins).mean(0)))
        best = min(_asgd.ETA0_FACTORS[int(np.argmin(objective))] * ref, 0.5 / lam)
        np.testing.assert_allclose(m.eta0[12 * i:12 * (i + 1)], best, rtol=1e-12)
        picked.append(int(np.argmin(objective)))
    # the minima lie several steps below the walk's start (f = 1, 2): the walk had to travel
    assert max(picked) < _asgd.ETA0_FACTORS.index(1.0), picked


def test_partial_fit_chunks_equal_fit():
    X, y = _toy(n=2600)
    whole = ASGDClassifier(lam=1e-3, epochs=1, shuffle=False).fit(X, y)
    parts = ASGDClassifier(lam=1e-3)
    for s in range(0, 2600, 1100):  # first chunk >= the eta0 sample, so eta0 agrees too
        parts.partial_fit(X[s:s + 1100], y[s:s + 1100], classes=np.arange(4))
    np.testing.assert_array_equal(parts.eta0_, whole.eta0_)
    np.testing.assert_array_equal(parts.coef_, whole.coef_)
    np.testing.assert_array_equal(parts.intercept_, whole.intercept_)
    assert parts.t_ == whole.t_ == 2600


@pytest.mark.parametrize("mode", ["exact", "block"])
def test_dense_equals_csr(mode):
    X, y = _toy(n=1200, d=60)
    X[np.abs(X) < 1.0] = 0.0
    a = OneVsAllASGD(60, np.arange(4), lam=1e-3, eta0=None, mode=mode, block_gram=True, block_size=64)
    b = OneVsAllASGD(60, np.arange(4), lam=1e-3, eta0=None, mode=mode, block_gram=True, block_size=64)
    a.partial_fit(X, y)
    b.partial_fit(sp.csr_matrix(X), y)
    np.testing.assert_array_equal(a.eta0, b.eta0)
    if mode == "exact":
        np.testing.assert_array_equal(a.coef_, b.coef_)
    assert _rel(a.coef_, b.coef_) < 1e-4
    np.testing.assert_allclose(a.decision_function(X), b.decision_function(sp.csr_matrix(X)), atol=1e-4)


@pytest.mark.parametrize("mode", ["exact", "block"])
def test_save_restore_mid_run_is_bit_exact(mode):
    X, y = _toy(n=1500)
    a = OneVsAllASGD(X.shape[1], np.arange(4), lam=1e-3, eta0=None, mode=mode, block_size=100)
    a.partial_fit(X[:700], y[:700])
    state = {k: v.copy() for k, v in a.state_dict().items()}
    np.savez(_tmp := __import__("io").BytesIO(), **state)
    _tmp.seek(0)
    restored = OneVsAllASGD.from_state_dict(dict(np.load(_tmp)))
    a.partial_fit(X[700:], y[700:])
    restored.partial_fit(X[700:], y[700:])
    for k, v in a.state_dict().items():
        np.testing.assert_array_equal(restored.state_dict()[k], v, err_msg=k)
    np.testing.assert_array_equal(a.coef_, restored.coef_)


def test_class_subsets_equal_one_model():
    X, y = _toy(n=1500, K=5)
    full = OneVsAllASGD(X.shape[1], np.arange(5), lam=1e-3, eta0=None)
    left = OneVsAllASGD(X.shape[1], [0, 3], lam=1e-3, eta0=None)
    right = OneVsAllASGD(X.shape[1], [1, 2, 4], lam=1e-3, eta0=None)
    for s in range(0, 1500, 750):
        for m in (full, left, right):
            m.partial_fit(X[s:s + 750], y[s:s + 750])
    np.testing.assert_array_equal(full.coef_[[0, 3]], left.coef_)
    np.testing.assert_array_equal(full.coef_[[1, 2, 4]], right.coef_)
    np.testing.assert_array_equal(full.eta0[[1, 2, 4]], right.eta0)
    np.testing.assert_array_equal(full.decision_function(X)[:, [0, 3]], left.decision_function(X))


def test_lambda_grid_equals_separate_fits():
    X, y = _toy(n=900)
    lams = [1e-4, 1e-3, 1e-2]
    grid = fit_lambda_grid(X, y, lams, epochs=2, random_state=0)
    for lam, est in zip(lams, grid):
        single = ASGDClassifier(lam=lam, epochs=2, random_state=0).fit(X, y)
        np.testing.assert_array_equal(est.coef_, single.coef_)
        np.testing.assert_array_equal(est.predict(X), single.predict(X))


def test_binary_problem_has_sklearn_shapes():
    X, y = _toy(n=400, K=2)
    labels = np.array(["cat", "dog"])[y]
    clf = ASGDClassifier(epochs=2, random_state=0).fit(X, labels)
    assert clf.coef_.shape == (1, X.shape[1]) and clf.intercept_.shape == (1,)
    assert clf.decision_function(X).shape == (400,)
    assert set(clf.predict(X)) <= {"cat", "dog"}


def test_errors_name_the_value():
    with pytest.raises(ConfigError, match="lam"):
        OneVsAllASGD(4, [0], lam=-1.0)
    with pytest.raises(ConfigError, match="lam \\* eta0"):
        OneVsAllASGD(4, [0], lam=1.0, eta0=2.0)
    with pytest.raises(ConfigError, match="mode"):
        OneVsAllASGD(4, [0], lam=1e-3, mode="fast")
    m = OneVsAllASGD(4, [0], lam=1e-3)
    with pytest.raises(ValueError, match="n_features=4"):
        m.partial_fit(np.zeros((3, 5), np.float32), np.zeros(3, int))
    with pytest.raises(ValueError, match="int class ids"):
        m.partial_fit(np.zeros((3, 4), np.float32), np.zeros(3))
    with pytest.raises(DataError, match="missing key"):
        OneVsAllASGD.from_state_dict({"version": np.array(1)})


# check_estimator: every check passes in both modes; the only one skipped is
# check_array_api_input (scikit-learn skips it unless SCIPY_ARRAY_API=1; the
# estimator is numpy/numba only).
@pytest.mark.parametrize("mode", ["exact", "block"])
def test_check_estimator(mode):
    from sklearn.utils.estimator_checks import check_estimator

    results = check_estimator(ASGDClassifier(mode=mode, random_state=0), on_fail=None)
    failed = [r["check_name"] for r in results if r["status"] == "failed"]
    skipped = {r["check_name"] for r in results if r["status"] == "skipped"}
    assert failed == []
    assert skipped <= {"check_array_api_input"}
