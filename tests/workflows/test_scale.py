"""Training at (a small cut of) ILSVRC shape, issue #13: the synthetic LCC-like store and the workflow on it.

The store comes from ``lsic.workflows.testing.write_lcc_like_store``, the
generator ``benchmarks/bench_scale.py`` uses at 100,000 x 16,384 x 1,000.
References: an in-process ``OneVsAllASGD`` trained on the same rows in the same
order (written out here, from the generator's rows, not from the store), the
top-1 of ``X @ coef.T + intercept`` computed here, and the rows' own statistics.
"""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

from lsic.pipeline import OneVsAllASGD
from lsic.workflows.testing import write_lcc_like_store, write_scores
from lsic.workflows._training_actor import ClassBlockTrainer
from lsic.workflows.config import parse_experiment
from lsic.workflows.evaluate import run_evaluate
from lsic.workflows.store import TEST, TRAIN, FeatureStore
from lsic.workflows.train import run_train

SEED = 3
N_TRAIN, N_VAL, N_TEST, N_CLASSES, DIM, CR = 2000, 200, 200, 200, 512, 256
LAM, ETA0 = 1e-4, 0.5


def experiment(url: str, **train):
    t = {"epochs": 2, "lam": LAM, "eta0": ETA0, "mode": "block", "threads_per_actor": 1,
         "validate_each_epoch": True}
    t.update(train)
    fs = [{"name": "f", "descriptor": "hog", "coding": "lcc", "codebook_size": 4, "kappa": 2}]
    return parse_experiment({"dataset": {"root": "unused"}, "feature_sets": fs, "store": {"url": url},
                             "train": t, "seed": SEED})


def reference(X: np.ndarray, labels: np.ndarray, split: np.ndarray, classes, epochs: int) -> OneVsAllASGD:
    """In-process ASGD over the training rows in the actors' order, written out here.

    Epoch ``e`` visits the chunks holding training rows in the permutation
    seeded by (seed, e) and the positions of chunk ``k`` in the permutation
    seeded by (seed, e, k), keeping the training rows.
    """
    n = labels.size
    use = split == TRAIN
    chunks = [k for k in range(-(-n // CR)) if use[k * CR:(k + 1) * CR].any()]
    model = OneVsAllASGD(X.shape[1], np.asarray(classes), lam=LAM, eta0=ETA0, mode="block", n_threads=1)
    for e in range(1, epochs + 1):
        for k in np.random.default_rng([SEED, e]).permutation(chunks):
            pos = np.random.default_rng([SEED, e, int(k)]).permutation(min(CR, n - k * CR))
            rows = k * CR + pos[use[k * CR + pos]]
            model.partial_fit(X[rows], labels[rows])
    return model


@pytest.fixture(scope="module")
def threads_client():
    from distributed import Client, LocalCluster

    with LocalCluster(processes=False, n_workers=2, threads_per_worker=1, dashboard_address=":0") as cluster:
        with Client(cluster, set_as_default=False) as c:
            yield c


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    url = str(tmp_path_factory.mktemp("scale") / "s.zarr")
    store, rows = write_lcc_like_store(url, n_train=N_TRAIN, n_val=N_VAL, n_test=N_TEST, dim=DIM,
                                       n_classes=N_CLASSES, chunk_rows=CR, seed=SEED)
    return url, rows


def test_synthetic_rows_are_lcc_like_and_stored_as_generated(synthetic):
    url, rows = synthetic
    store = FeatureStore.open(url)
    n = N_TRAIN + N_VAL + N_TEST
    X = rows[0:n]
    assert X.dtype == np.float32 and X.shape == (n, DIM)
    np.testing.assert_array_equal(np.asarray(store.features("f")[:]), X)  # lossless codec, chunk-aligned writes
    np.testing.assert_array_equal(rows[300:700], X[300:700])  # a slice across chunks is the same rows
    assert X.min() >= 0.0
    nnz = (X > 0).mean(axis=1)
    assert 0.15 <= nnz.min() and nnz.max() <= 0.35 and 0.2 <= nnz.mean() <= 0.3  # per row: 512 dims vary
    np.testing.assert_allclose(np.linalg.norm(X, axis=1), 1.0, rtol=1e-5)
    # the extraction layout: rows train, val, test; labels balanced; chunked like extraction
    assert store.extract_complete and store.chunk_rows == CR and store.n_classes == N_CLASSES
    split, labels = store.split(), store.labels()
    assert list(np.bincount(split)) == [N_TRAIN, N_VAL, N_TEST]
    assert np.bincount(labels[split == TRAIN]).tolist() == [N_TRAIN // N_CLASSES] * N_CLASSES
    assert store.features("f").chunks == (CR, DIM)


def test_train_and_evaluate_read_it_and_model_equals_in_process(synthetic, threads_client, tmp_path):
    url, rows = synthetic
    summary = run_train(experiment(url, actors=2), client=threads_client, progress=False, restart=True)
    store = FeatureStore.open(url)
    labels, split = store.labels(), store.split()
    n_train_chunks = -(-N_TRAIN // CR)
    # every actor loads every training chunk exactly once per epoch, counted by the actors
    assert summary.n_actors == 2
    assert summary.chunk_loads["train"] == 2 * 2 * n_train_chunks
    assert summary.chunk_loads_per_epoch == 2 * n_train_chunks
    X = rows[0:labels.size]
    model = store.load_models("f")
    assert model.coef_.dtype == np.float32 and model.coef_.shape == (N_CLASSES, DIM)
    # each actor's block equals the in-process ASGD of those classes on the same rows in the same order
    for a in summary.actors:
        ref = reference(X, labels, split, np.arange(a["lo"], a["hi"]), 2)
        np.testing.assert_array_equal(model.coef_[a["lo"]:a["hi"]], ref.coef_)
        np.testing.assert_array_equal(model.intercept_[a["lo"]:a["hi"]], ref.intercept_)
    # the checkpoint time is measured apart from the chunk loop, inside the epoch's wall time
    for rec in summary.history:
        assert 0 < rec.checkpoint_seconds < rec.seconds and 0 < rec.actor_seconds < rec.seconds
    assert store.history("f")[-1]["checkpoint_seconds"] == summary.history[-1].checkpoint_seconds
    # the class structure is learnable: far above chance (1/200) on validation
    assert summary.history[-1].val_top1["f"] > 0.2
    # lsic evaluate reads the scores like those of an extracted store; top-1 equals argmax of X W^T + b here
    ev = run_evaluate(experiment(url), report="")
    test = split == TEST
    S = X[test] @ model.coef_.T + model.intercept_
    top1 = float(np.mean(np.argmax(S, axis=1) == labels[test]))
    assert ev.metrics["n_test"] == N_TEST
    assert ev.metrics["sets"]["f"]["top1"] == pytest.approx(top1, abs=1.5 / N_TEST)


def _peak_epoch_memory(tmp_path, n_train: int) -> tuple[int, int, int, int]:
    """tracemalloc peak of one epoch (train, checkpoint, validation scoring) of a 200-class actor."""
    url = str(tmp_path / f"m{n_train}.zarr")
    cr = 512
    write_lcc_like_store(url, n_train=n_train, n_val=cr, n_test=0, dim=DIM, n_classes=N_CLASSES, chunk_rows=cr,
                         seed=SEED)
    trainer = ClassBlockTrainer(url, {}, ["f"], 0, N_CLASSES, {"lam": LAM, "eta0": ETA0, "mode": "block"},
                                n_threads=1, seed=SEED)
    store = FeatureStore.open(url, "r+")
    chunks = store.split_chunks("train")
    val = store.split_chunks("val")
    store.checkpoints.create_epoch("f", "asgd", 1, N_CLASSES)
    trainer.restore(0)
    trainer.train_epoch(1, chunks[:2], val)  # warm up numba, zarr codecs and the checkpoint writer
    trainer.restore(0)
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        base = tracemalloc.get_traced_memory()[0]
        out = trainer.train_epoch(1, chunks, val)
        peak = tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()
    assert out["stats"]["loads"]["train"] == 2 + len(chunks)
    return peak, trainer.peak_chunk_bytes, cr * DIM * 4, trainer.model_bytes()


def test_actor_memory_flat_in_rows_at_200_classes(tmp_path):
    small, held_small, chunk, model = _peak_epoch_memory(tmp_path, 2 * 512)
    large, held_large, _, _ = _peak_epoch_memory(tmp_path, 10 * 512)  # 5x the rows
    assert model == N_CLASSES * DIM * 4 * 2  # v and u of 200 classes
    assert held_small <= 2 * chunk and held_large <= 2 * chunk
    # 8 more chunks (8 MiB of features) would show if rows were kept; the peak stays within two chunks
    assert large - small < 2 * chunk
    # the bound itself: two held chunks, up to two in flight while decoding, and one checkpoint chunk
    assert max(small, large) < 6 * chunk + model // 2


def test_checkpoint_writes_the_live_state_without_a_copy(tmp_path):
    """A 1,000-class model's V and U are 131 MB at 16k dims: the checkpoint must not hold a second copy."""
    url = str(tmp_path / "c.zarr")
    k, d, cr = N_CLASSES, 2048, 512
    _, rows = write_lcc_like_store(url, n_train=cr, n_val=0, n_test=0, dim=d, n_classes=k, chunk_rows=cr, seed=SEED)
    store = FeatureStore.open(url, "r+")
    store.init_models("f", {"n_classes": k})
    store.checkpoints.create_epoch("f", "asgd", 1, k)
    model = OneVsAllASGD(d, np.arange(k), lam=LAM, eta0=ETA0, mode="block", n_threads=1)
    model.partial_fit(rows[0:cr], store.labels()[:cr])
    weights = k * d * 4 * 2  # V and U
    store.checkpoints.write_block("f", "asgd", 1, model, 0)  # warm up the codec
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        store.checkpoints.write_block("f", "asgd", 1, model, 0)
        peak = tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()
    # one array's compressed chunk at a time (V or U: half the weights), not a copy of both
    assert peak < 0.75 * weights
    back = store.checkpoints.read_block("f", "asgd", 1, 0, k, n_threads=1)
    for key, value in model.state_dict().items():
        np.testing.assert_array_equal(back.state_dict()[key], value)
    # the views are the live state: the default still copies
    assert np.shares_memory(model.state_dict(copy=False)["V"], model._V)
    assert not np.shares_memory(model.state_dict()["V"], model._V)


def test_fig5_with_1000_classes_names_best_and_worst_30(tmp_path):
    from PIL import Image

    from lsic.workflows.report import plot_per_class

    rng = np.random.default_rng(0)
    n = 1000
    top5 = rng.random(n)
    top1 = top5 * rng.random(n)
    names = [f"class_{i:04d}" for i in range(n)]
    top5_list = [float(v) for v in top5]
    top5_list[17] = None  # a class without test images is left out
    shown = plot_per_class(top5_list, names, tmp_path / "fig5.png", top1=list(top1))
    # reference: sort by top-5 here (classes with a rate only), descending
    ranked = [names[i] for i in sorted((i for i in range(n) if i != 17), key=lambda i: -top5[i])]
    middle = [i for i in range(n) if i != 17 and names[i] in ranked[30:-30]]
    assert len(shown) == 61
    assert shown[:30] == ranked[:30] and shown[31:] == ranked[-30:]
    assert shown[30] == f"... {n - 1 - 60} classes, mean top-5 {100 * np.mean(top5[middle]):.1f}% ..."
    with Image.open(tmp_path / "fig5.png") as im:
        assert im.size[1] < 1500  # 61 rows, not 1,000
    # few classes: every one named, as before
    assert plot_per_class([0.5, 0.9, None], ["a", "b", "c"], tmp_path / "small.png") == ["b", "a"]


def _peak_evaluate_memory(tmp_path, n_test: int, n_classes: int = 1000) -> tuple[int, dict]:
    """tracemalloc peak of ``evaluate_store`` over two sets' (n_test x n_classes) scores, 512 rows at a time."""
    from lsic.workflows.evaluate import evaluate_store

    url = str(tmp_path / f"e{n_test}.zarr")
    write_lcc_like_store(url, n_train=n_classes, n_val=n_classes, n_test=n_test, dim=8, n_classes=n_classes,
                         chunk_rows=512, seed=SEED)
    store = FeatureStore.open(url, "r+")
    labels = store.labels()
    rng = np.random.default_rng(0)
    expected = {}
    for name in ("a", "b"):
        for split in ("val", "test"):
            rows = store.split_rows(split)
            # scores that know the label half the time, so the metrics are not trivial
            S = rng.standard_normal((rows.size, n_classes), dtype=np.float32)
            hit = rng.random(rows.size) < 0.5
            S[np.flatnonzero(hit), labels[rows[hit]]] += 4.0
            write_scores(store, name, split, rows, S)
            if split == "test":  # top-1 over images, directly
                expected[name] = float(np.mean(np.argmax(S, axis=1) == labels[rows]))
            del S
    evaluate_store(store, ["a", "b"], method="equal", chunk_rows=512)  # warm up codecs and caches
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        metrics, _, _ = evaluate_store(store, ["a", "b"], method="equal", chunk_rows=512)
        peak = tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()
    for name in ("a", "b"):
        assert metrics["sets"][name]["top1"] == pytest.approx(expected[name])
    return peak, metrics


def test_evaluate_memory_flat_in_test_rows_at_1000_classes(tmp_path):
    """``lsic evaluate`` streams an (n_test x 1,000) score matrix: 4x the test rows, the same peak."""
    small, m_small = _peak_evaluate_memory(tmp_path, 2048)
    large, m_large = _peak_evaluate_memory(tmp_path, 8192)
    chunk = 512 * 1000 * 4  # one 512-row block of one set's scores
    assert m_small["n_test"] == 2048 and m_large["n_test"] == 8192  # and each set's top-1 checked above
    # 6,144 more rows of two sets (49 MB of scores) would show if the matrix were held
    assert large - small < 2 * chunk
    # the bound, whatever n_test: the validation scores for the fusion (2 sets x 1,000 rows), a
    # 1,000 x 1,000 confusion per source (2 sets + fused; int64, and again as the details' lists)
    # and a few 512-row blocks of each set
    confusion = 1000 * 1000 * 8
    assert large < 2 * 1000 * 1000 * 4 + 3 * 2 * confusion + 8 * chunk
