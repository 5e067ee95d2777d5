"""Training workflow (paper §4.2): actors, chunk loads, checkpoints, faults, scores.

The store is synthetic, written through ``testing.write_store`` (features from
Gaussian class means, so the classes are learnable), so these tests do not
depend on extraction. References: an
in-process ``OneVsAllASGD`` trained on the same chunk order (written out in the
test), the 1-actor run, and ``X @ coef.T + intercept`` computed here.
"""

from __future__ import annotations

import os
import signal
import tracemalloc
import uuid

import numpy as np
import pytest

from lsic.pipeline import OneVsAllASGD, StoreError
from lsic.workflows._training_actor import ClassBlockTrainer
from lsic.workflows.config import parse_experiment
from lsic.workflows.store import TEST, TRAIN, VAL, FeatureStore
from lsic.workflows.testing import write_store
from lsic.workflows.train import epoch_ranges, live_workers, plan_train, run_train

SEED = 7
SETS = ("a", "b")


def make_store(url: str, *, n_classes: int = 6, n_train: int = 300, n_val: int = 60, n_test: int = 60,
               dims=(16, 24), chunk_rows: int = 32, seed: int = 0, invalid: int = 9,
               storage_options: dict | None = None) -> dict:
    """A store with the extraction layout: rows train, val, test; a few invalid rows (zero features)."""
    rng = np.random.default_rng(seed)
    n = n_train + n_val + n_test
    labels = rng.integers(0, n_classes, n).astype(np.int32)
    split = np.repeat(np.array([TRAIN, VAL, TEST], np.int8), [n_train, n_val, n_test])
    valid = np.ones(n, bool)
    valid[rng.choice(n, invalid, replace=False)] = False
    X = {}
    for name, d in zip(SETS, dims):
        means = rng.normal(0, 1.0, (n_classes, d)).astype(np.float32)
        x = (means[labels] + rng.normal(0, 1.5, (n, d))).astype(np.float32)
        x[~valid] = 0.0
        X[name] = x
    write_store(url, labels=labels, split=split, valid=valid, features=X, chunk_rows=chunk_rows,
                       class_names=[f"c{i}" for i in range(n_classes)], storage_options=storage_options)
    return {"X": X, "labels": labels, "split": split, "valid": valid, "chunk_rows": chunk_rows, "n": n,
            "n_classes": n_classes}


def experiment(url: str, storage_options: dict | None = None, **train):
    sets = [{"name": s, "descriptor": "hog", "coding": "lcc", "codebook_size": 4, "kappa": 2} for s in SETS]
    t = {"epochs": 2, "lam": 1e-3, "eta0": 0.05, "mode": "exact", "validate_each_epoch": True}
    t.update(train)
    store = {"url": url, "storage_options": storage_options or {}}
    return parse_experiment({"dataset": {"root": "unused"}, "feature_sets": sets,
                             "store": store, "train": t, "seed": SEED})


def reference(data: dict, name: str, epochs: int, classes, *, splits=(TRAIN,), walk=(TRAIN,),
              **params) -> OneVsAllASGD:
    """In-process ASGD over the same chunks and rows, written out here.

    Every epoch the chunks holding usable rows of the ``walk`` splits are
    visited in a permutation seeded by (seed, epoch), and the positions of
    each chunk in a permutation seeded by (seed, epoch, chunk); the model
    trains on the rows of ``splits`` among them.
    """
    cr, n = data["chunk_rows"], data["n"]
    use = np.isin(data["split"], splits) & data["valid"]
    seen = np.isin(data["split"], walk) & data["valid"]
    chunks = [k for k in range((n + cr - 1) // cr) if seen[k * cr:(k + 1) * cr].any()]
    d = data["X"][name].shape[1]
    model = OneVsAllASGD(d, np.asarray(classes), **params)
    for e in range(1, epochs + 1):
        for k in np.random.default_rng([SEED, e]).permutation(chunks):
            pos = np.random.default_rng([SEED, e, int(k)]).permutation(min(cr, n - k * cr))
            rows = k * cr + pos[use[k * cr + pos]]
            if rows.size:
                model.partial_fit(data["X"][name][rows], data["labels"][rows])
    return model


def n_train_chunks(data: dict) -> int:
    cr = data["chunk_rows"]
    use = (data["split"] == TRAIN) & data["valid"]
    return sum(use[i:i + cr].any() for i in range(0, data["n"], cr))


@pytest.fixture(scope="module")
def threads_client():
    from distributed import Client, LocalCluster

    with LocalCluster(processes=False, n_workers=2, threads_per_worker=1, dashboard_address=":0") as cluster:
        with Client(cluster, set_as_default=False) as c:
            yield c


def stored(url: str, name: str) -> OneVsAllASGD:
    return FeatureStore.open(url).load_models(name)


# --------------------------------------------------------------------------- tests


def test_live_workers_ask_the_scheduler_not_the_clients_cache(threads_client, monkeypatch):
    # the client's periodic refresh leaves a cached identity without workers; the actor
    # pool's liveness poll must not read it (it restarted healthy actors when it did)
    expected = set(threads_client.run(lambda dask_worker: dask_worker.address))
    monkeypatch.setattr(threads_client, "scheduler_info", lambda *a, **k: {"workers": {}})
    workers = live_workers(threads_client)
    assert set(workers) == expected
    assert all("local_directory" in info for info in workers.values())


def test_plan_is_pure_and_lists_chunks(tmp_path):
    url = str(tmp_path / "s.zarr")
    data = make_store(url)
    exp = experiment(url, epochs=3)
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    plan = plan_train(exp, FeatureStore.open(url))
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before
    assert len(plan.chunks["train"]) == n_train_chunks(data)
    assert plan.start_epoch == 0 and list(plan.todo_epochs) == [1, 2, 3]
    assert set(plan.missing_scores) == {(s, sp) for s in SETS for sp in ("val", "test")}
    assert plan.bounds["val"] == (300, 360)


def test_two_actors_equal_one_actor_and_in_process(tmp_path, threads_client):
    data = None
    runs = {}
    for actors in (1, 2):
        url = str(tmp_path / f"s{actors}.zarr")
        data = make_store(url)
        exp = experiment(url, actors=actors, epochs=2)
        summary = run_train(exp, client=threads_client, progress=False)
        # each training chunk loaded once per actor per epoch, exactly
        assert summary.n_actors == actors
        assert summary.chunk_loads["train"] == 2 * actors * n_train_chunks(data)
        assert summary.bytes_read > 0
        runs[actors] = {s: stored(url, s) for s in SETS}
    for s in SETS:
        ref = reference(data, s, 2, np.arange(data["n_classes"]), lam=1e-3, eta0=0.05, mode="exact")
        for actors in (1, 2):
            m = runs[actors][s]
            assert m.coef_.dtype == np.float32
            np.testing.assert_array_equal(m.coef_, ref.coef_)
            np.testing.assert_array_equal(m.intercept_, ref.intercept_)
            np.testing.assert_array_equal(m.t, ref.t)


def test_lam_by_set_gives_a_set_its_own_lambda(tmp_path, threads_client):
    url = str(tmp_path / "s.zarr")
    data = make_store(url)
    run_train(experiment(url, epochs=2, lam_by_set={"b": 3e-2}), client=threads_client, progress=False)
    classes = np.arange(data["n_classes"])
    for s, lam in (("a", 1e-3), ("b", 3e-2)):
        ref = reference(data, s, 2, classes, lam=lam, eta0=0.05, mode="exact")
        np.testing.assert_array_equal(stored(url, s).coef_, ref.coef_)
    # the other lambda gives other weights, so the comparison above can tell them apart
    other = reference(data, "b", 2, classes, lam=1e-3, eta0=0.05, mode="exact")
    assert not np.allclose(stored(url, "b").coef_, other.coef_)


def test_block_mode_auto_eta0_matches_in_process(tmp_path, threads_client):
    url = str(tmp_path / "s.zarr")
    data = make_store(url)
    exp = experiment(url, actors=2, epochs=2, mode="block", eta0=None)
    run_train(exp, client=threads_client, progress=False)
    for s in SETS:
        ref = reference(data, s, 2, np.arange(data["n_classes"]), lam=1e-3, eta0=None, mode="block")
        m = stored(url, s)
        np.testing.assert_allclose(m.eta0, ref.eta0, rtol=0)
        np.testing.assert_allclose(m.coef_, ref.coef_, rtol=1e-4, atol=1e-5)


def test_scores_reduce_and_validation_history(tmp_path, threads_client):
    url = str(tmp_path / "s.zarr")
    data = make_store(url, n_classes=7)
    exp = experiment(url, actors=2, epochs=2, compare_sgd=True)
    summary = run_train(exp, client=threads_client, progress=False)
    store = FeatureStore.open(url)
    for s in SETS:
        m = stored(url, s)
        coef, _ = store.checkpoints.final_weights(s)
        np.testing.assert_array_equal(coef, m.coef_)
        for code, split in ((VAL, "val"), (TEST, "test")):
            rows = np.flatnonzero((data["split"] == code) & data["valid"])
            np.testing.assert_array_equal(store.score_rows(s, split), rows)
            S = store.read_scores(s, split)
            assert S.dtype == np.float32 and S.shape == (rows.size, 7)
            expect = data["X"][s][rows] @ m.coef_.T + m.intercept_
            np.testing.assert_allclose(S, expect, rtol=1e-5, atol=1e-5)
        hist = store.history(s)
        assert [h["epoch"] for h in hist] == [1, 2]
        # validation accuracy recorded per epoch for ASGD and plain SGD, reduced over both actors
        val = np.flatnonzero((data["split"] == VAL) & data["valid"])
        top1 = np.mean(np.argmax(data["X"][s][val] @ m.coef_.T + m.intercept_, 1) == data["labels"][val])
        assert hist[-1]["val_top1"][s] == pytest.approx(top1)
        assert top1 > 0.5  # learnable: chance is 1/7
        assert f"{s}/sgd" in hist[-1]["val_top1"]
    assert summary.chunk_loads["val"] == 2 * 2 * 3 + 2 * 3  # (2 epochs + scoring) x 2 actors x 3 val chunks
    # plain SGD checkpoints are kept beside the averaged ones
    sgd = store.load_models(SETS[0], variant="sgd")
    assert sgd.average is False


def test_refit_trains_on_train_and_val_rows_and_scores_test_with_them(tmp_path, threads_client):
    url = str(tmp_path / "s.zarr")
    data = make_store(url, n_classes=5)
    summary = run_train(experiment(url, actors=2, epochs=2, refit=True), client=threads_client, progress=False)
    store = FeatureStore.open(url)
    train = (data["split"] == TRAIN) & data["valid"]
    fit = (data["split"] <= VAL) & data["valid"]
    classes = np.arange(data["n_classes"])
    walk_chunks = sum(fit[i:i + data["chunk_rows"]].any() for i in range(0, data["n"], data["chunk_rows"]))
    assert summary.train_chunks == walk_chunks > n_train_chunks(data)
    assert summary.chunk_loads["train"] == 2 * 2 * walk_chunks  # one load per walked chunk per actor per epoch
    for s in SETS:
        on_train = reference(data, s, 2, classes, walk=(TRAIN, VAL), lam=1e-3, eta0=0.05, mode="exact")
        on_all = reference(data, s, 2, classes, splits=(TRAIN, VAL), walk=(TRAIN, VAL), lam=1e-3, eta0=0.05,
                           mode="exact")
        asgd, refit = store.load_models(s, variant="asgd"), store.load_models(s, variant="refit")
        np.testing.assert_array_equal(asgd.coef_, on_train.coef_)
        np.testing.assert_array_equal(refit.coef_, on_all.coef_)
        # every usable training and validation row was used, every epoch
        assert (refit.t == 2 * fit.sum()).all() and (asgd.t == 2 * train.sum()).all()
        np.testing.assert_array_equal(store.checkpoints.final_weights(s)[0], refit.coef_)
        for split, model in (("val", asgd), ("test", refit)):
            rows = store.score_rows(s, split)
            expect = data["X"][s][rows] @ model.coef_.T + model.intercept_
            np.testing.assert_allclose(store.read_scores(s, split), expect, rtol=1e-5, atol=1e-5)
        # the validation curve is of the models that did not see the validation rows
        val = np.flatnonzero((data["split"] == VAL) & data["valid"])
        top1 = np.mean(np.argmax(data["X"][s][val] @ asgd.coef_.T + asgd.intercept_, 1) == data["labels"][val])
        assert store.history(s)[-1]["val_top1"][s] == pytest.approx(top1)


def test_resume_after_partial_run_equals_straight_run(tmp_path, threads_client):
    url1, url2 = str(tmp_path / "r1.zarr"), str(tmp_path / "r2.zarr")
    make_store(url1)
    make_store(url2)
    run_train(experiment(url1, actors=2, epochs=3), client=threads_client, progress=False)
    first = run_train(experiment(url2, actors=2, epochs=1), client=threads_client, progress=False)
    assert first.epochs_run == (1,)
    # a crash in epoch 2 left one actor's block written and the other missing
    store = FeatureStore.open(url2, "r+")
    for s in SETS:
        ckpt = store.checkpoints
        ckpt.create_epoch(s, "asgd", 2, 6)
        ckpt.write_block(s, "asgd", 2, ckpt.read_block(s, "asgd", 1, 0, 3), 0)
        assert ckpt.complete_epochs(s) == [1]
    assert plan_train(experiment(url2, epochs=3), store).start_epoch == 1
    # a rerun with more epochs trains only the missing ones, on another actor count
    again = run_train(experiment(url2, actors=1, epochs=3), client=threads_client, progress=False)
    assert again.epochs_run == (2, 3) and "epochs 2-3 -> 3," in again.line()
    for s in SETS:
        np.testing.assert_array_equal(stored(url1, s).coef_, stored(url2, s).coef_)
    done = run_train(experiment(url2, actors=1, epochs=3), client=threads_client, progress=False)
    assert done.epochs_run == () and done.n_actors == 0 and "epochs none -> 3," in done.line()
    # only the newest checkpoint is kept
    assert FeatureStore.open(url2).checkpoints.complete_epochs(SETS[0]) == [3]


def test_changed_settings_need_restart(tmp_path, threads_client):
    url = str(tmp_path / "s.zarr")
    make_store(url)
    run_train(experiment(url, actors=1, epochs=1), client=threads_client, progress=False)
    with pytest.raises(StoreError, match="--restart"):
        run_train(experiment(url, actors=1, epochs=2, lam=1e-2), client=threads_client, progress=False)
    s = run_train(experiment(url, actors=1, epochs=1, lam=1e-2), client=threads_client, progress=False,
                  restart=True)
    assert s.epochs_run == (1,)


def test_lost_worker_is_replaced_and_models_match(tmp_path):
    """Close the (thread) worker holding an actor between epochs: a replacement restores the checkpoint."""
    from distributed import Client, LocalCluster

    url = str(tmp_path / "l.zarr")
    data = make_store(url)
    with LocalCluster(processes=False, n_workers=2, threads_per_worker=1, dashboard_address=":0") as cluster:
        with Client(cluster, set_as_default=False) as client:
            def close_one(rec):
                if rec.epoch == 1:
                    cluster.sync(cluster.workers[0].close)

            summary = run_train(experiment(url, actors=2, epochs=3), client=client, progress=False,
                                on_epoch=close_one)
            assert len(client.scheduler_info()["workers"]) == 1
    assert summary.restarts == 1 and summary.history[1].restarts == 1
    # both actors ended on the surviving worker
    assert len({a["address"] for a in summary.actors}) == 1
    for s in SETS:
        ref = reference(data, s, 3, np.arange(data["n_classes"]), lam=1e-3, eta0=0.05, mode="exact")
        np.testing.assert_array_equal(stored(url, s).coef_, ref.coef_)
    assert summary.chunk_loads["train"] == 3 * 2 * n_train_chunks(data)


@pytest.mark.slow
@pytest.mark.parametrize("when", ["between_epochs", "during_epoch"])
def test_killed_worker_process_is_replaced_and_models_match(tmp_path, when):
    """SIGKILL the process of a worker holding an actor: a new actor restores the checkpoint, models match."""
    import threading

    from distributed import Client, LocalCluster

    url = str(tmp_path / "k.zarr")
    big = when == "during_epoch"  # an epoch long enough (seconds) to be killed in the middle
    data = make_store(url, n_train=12000 if big else 300, chunk_rows=64 if big else 32, dims=(256, 64) if big else (16, 24))
    killed = []
    with LocalCluster(processes=True, n_workers=2, threads_per_worker=1, dashboard_address=":0") as cluster:
        with Client(cluster, set_as_default=False) as client:
            def kill():
                pids = client.run(os.getpid)
                addr = sorted(pids)[0]
                os.kill(pids[addr], signal.SIGKILL)
                killed.append(addr)

            def on_epoch(rec):
                if rec.epoch == 1:
                    if big:
                        threading.Timer(0.3, kill).start()
                    else:
                        kill()

            summary = run_train(experiment(url, actors=2, epochs=3), client=client, progress=False,
                                on_epoch=on_epoch)
    assert killed and summary.restarts == 1
    assert summary.history[1].restarts == 1  # epoch 2 was redone by the replacement
    for s in SETS:
        ref = reference(data, s, 3, np.arange(data["n_classes"]), lam=1e-3, eta0=0.05, mode="exact")
        np.testing.assert_array_equal(stored(url, s).coef_, ref.coef_)
    assert summary.chunk_loads["train"] >= 3 * 2 * n_train_chunks(data)


def _peak_epoch_memory(tmp_path, n_chunks: int) -> tuple[int, int, int]:
    url = str(tmp_path / f"m{n_chunks}.zarr")
    cr, d = 512, 512  # 1 MiB chunks: well above the allocations of other threads (tracemalloc is process-wide)
    make_store(url, n_classes=4, n_train=n_chunks * cr, n_val=0, n_test=0, dims=(d, 8), chunk_rows=cr, invalid=0)
    trainer = ClassBlockTrainer(url, {}, ["a"], 0, 4, {"lam": 1e-3, "eta0": 0.05, "mode": "block"}, n_threads=1)
    FeatureStore.open(url, "r+").checkpoints.create_epoch("a", "asgd", 1, 4)
    trainer.restore(0)
    order = list(range(n_chunks))
    trainer.train_epoch(1, order[:2])  # warm up numba and zarr codecs
    trainer.restore(0)
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        base = tracemalloc.get_traced_memory()[0]
        trainer.train_epoch(1, order)
        peak = tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()
    return peak, trainer.peak_chunk_bytes, cr * d * 4


def test_memory_bounded_by_models_and_two_chunks(tmp_path):
    small, held_small, chunk = _peak_epoch_memory(tmp_path, 3)
    large, held_large, _ = _peak_epoch_memory(tmp_path, 16)  # 5x the rows
    # the chunks the actor holds: the one training and the one prefetched
    assert held_small <= 2 * chunk and held_large <= 2 * chunk
    # measured (tracemalloc): the peak does not grow with the rows (16 chunks = 16 MiB of features
    # would add 13 MiB if they were kept); decoding a chunk briefly needs its compressed bytes and a
    # decode buffer besides, so the constant bound is two held chunks + up to two chunks in flight
    assert large - small < 2 * chunk
    assert max(small, large) < 6 * chunk


def test_cli_train(tmp_path, threads_client, monkeypatch, capsys, caplog):
    import logging

    import lsic.cluster
    from distributed import Client

    from lsic.workflows.cli import main

    url = str(tmp_path / "c.zarr")
    make_store(url)
    cfg = tmp_path / "exp.yaml"
    cfg.write_text(
        "dataset: {root: unused}\n"
        "feature_sets:\n"
        "  - {name: a, descriptor: hog, coding: lcc, codebook_size: 4, kappa: 2}\n"
        "  - {name: b, descriptor: hog, coding: lcc, codebook_size: 4, kappa: 2}\n"
        "store: {url: /nonexistent.zarr}\n"
        "train: {epochs: 5, lam: 0.001, eta0: 0.05}\n"
    )
    asked = {}

    def fake_make_client(kind=None, **kw):
        asked.update(kw)
        return Client(threads_client.cluster, set_as_default=False)

    monkeypatch.setattr(lsic.cluster, "make_client", fake_make_client)
    with caplog.at_level(logging.INFO, logger="lsic"):
        rc = main(["train", str(cfg), "--store", url, "--sets", "a", "--epochs", "2", "--workers", "2"])
    assert rc == 0
    assert asked["stage"] == "train" and asked["workers"] == 2
    out = capsys.readouterr().out
    assert "train: 1 set(s) x 6 classes" in out and "training loads/epoch" in out
    assert any("epoch 2:" in r.getMessage() and "rows/s" in r.getMessage() for r in caplog.records)
    store = FeatureStore.open(url)
    assert store.checkpoints.final_weights("a")[0].shape == (6, 16) and store.model_attrs("b") is None
    # a user error is one line and exit code 2
    assert main(["train", str(cfg), "--store", str(tmp_path / "none.zarr")]) == 2


def test_fsspec_memory_store(threads_client):
    url = f"memory://lsic-train-{uuid.uuid4().hex}.zarr"
    data = make_store(url)
    summary = run_train(experiment(url, actors=2, epochs=1), client=threads_client, progress=False)
    assert summary.chunk_loads["train"] == 2 * n_train_chunks(data)
    ref = reference(data, "a", 1, np.arange(data["n_classes"]), lam=1e-3, eta0=0.05, mode="exact")
    np.testing.assert_array_equal(stored(url, "a").coef_, ref.coef_)


def test_error_in_actor_is_raised_not_retried(tmp_path, threads_client, monkeypatch):
    url = str(tmp_path / "e.zarr")
    make_store(url)

    def broken(self, epoch, order, val_chunks=()):
        raise FileNotFoundError("features/a/X/c/0/0 vanished")

    monkeypatch.setattr(ClassBlockTrainer, "train_epoch", broken)
    with pytest.raises(FileNotFoundError, match="vanished"):
        run_train(experiment(url, actors=2, epochs=1), client=threads_client, progress=False)


@pytest.mark.slow
def test_s3_store_resume_matches(s3, threads_client):
    """Checkpoints, resume and scores on an object store (listing caches must not hide actor writes).

    Slow (~30-60 s): zarr makes several metadata requests per checkpoint array, moto answers each in ~10 ms.
    """
    import s3fs

    s3fs.S3FileSystem(**s3).mkdir("lsic-train")
    url = f"s3://lsic-train/{uuid.uuid4().hex}.zarr"
    data = make_store(url, storage_options=s3)
    first = run_train(experiment(url, s3, actors=2, epochs=1), client=threads_client, progress=False)
    assert first.chunk_loads["train"] == 2 * n_train_chunks(data)
    again = run_train(experiment(url, s3, actors=2, epochs=2), client=threads_client, progress=False)
    assert again.epochs_run == (2,)
    ref = reference(data, "a", 2, np.arange(data["n_classes"]), lam=1e-3, eta0=0.05, mode="exact")
    store = FeatureStore.open(url, "r", s3)
    m = store.load_models("a")
    np.testing.assert_array_equal(m.coef_, ref.coef_)
    rows = store.score_rows("a", "test")
    np.testing.assert_allclose(store.read_scores("a", "test"), data["X"]["a"][rows] @ m.coef_.T + m.intercept_,
                               rtol=1e-5, atol=1e-5)


class _FakeFuture:
    def __init__(self, value=None):
        self.value = value

    def result(self):
        return self.value


def test_busy_worker_still_listed_gets_its_actor_back_from_the_checkpoint(monkeypatch):
    """Regression: a call failed with a comm error while the only worker was busy training.

    The scheduler kept listing that same worker (address and directory), so after
    the grace period the actor is restarted there from the checkpoint instead of
    the run aborting with "all workers were lost".
    """
    from lsic.workflows import _actor_pool as pool_mod

    clock = {"t": 0.0}
    monkeypatch.setattr(pool_mod.time, "monotonic", lambda: clock["t"])
    monkeypatch.setattr(pool_mod.time, "sleep", lambda s: clock.__setitem__("t", clock["t"] + s))
    worker = {"tcp://127.0.0.1:4000": {"local_directory": "/tmp/w0", "host": "127.0.0.1", "nthreads": 2}}
    restored, started = [], []

    class _Actor:
        def restore(self, epoch):
            restored.append(epoch)
            return _FakeFuture(0)

    class _Client:
        def cancel(self, futures):
            pass

    pool = object.__new__(pool_mod.ActorPool)
    pool.client = _Client()
    slot = pool_mod.Slot(0, 0, 4)
    slot.address, slot.worker_dir, slot.host = "tcp://127.0.0.1:4000", "/tmp/w0", "127.0.0.1"
    pool.slots = [slot]
    monkeypatch.setattr(pool, "_workers", lambda: dict(worker))

    def _start(s, addr, info):
        started.append((addr, clock["t"]))
        s.address, s.worker_dir, s.actor = addr, info["local_directory"], _Actor()

    monkeypatch.setattr(pool, "_start", _start)
    pool._replace(slot, restore_epoch=3)
    assert [a for a, _ in started] == ["tcp://127.0.0.1:4000"] and restored == [3]
    assert 10 < started[0][1] < 60  # only after the grace period, well before giving up
    # a worker that came back with another directory is a new process: that is a real loss
    worker["tcp://127.0.0.1:4000"] = {"local_directory": "/tmp/w1", "host": "127.0.0.1", "nthreads": 2}
    slot.address, slot.worker_dir = "tcp://127.0.0.1:4000", "/tmp/w0"
    started.clear()
    t0 = clock["t"]
    pool._replace(slot, restore_epoch=3)
    assert started[0][1] - t0 < 1  # the new worker is taken at once


def test_distributed_actor_loss_messages():
    """Fails loudly when distributed changes the texts _actor_pool.actor_unreachable matches."""
    import inspect

    import distributed.actor

    from lsic.workflows._actor_pool import ACTOR_LOST_MESSAGES, actor_unreachable

    src = inspect.getsource(distributed.actor)
    for text in ACTOR_LOST_MESSAGES:
        assert text in src, f"distributed.actor no longer says {text!r}; update lsic.workflows._actor_pool"
    assert actor_unreachable(OSError("Unable to contact Actor's worker"))
    assert not actor_unreachable(OSError("features/a/X/c/0/0 vanished"))  # the actor's own error


@pytest.mark.parametrize("epochs, text", [
    (range(1, 101), "1-100"), ((3,), "3"), ((), "none"), ((1, 2, 3, 7, 9, 10), "1-3, 7, 9-10"),
    ((5, 4, 4, 6), "4-6"), ((1, 3), "1, 3"),
])
def test_epoch_lists_are_logged_as_ranges(epochs, text):
    assert epoch_ranges(epochs) == text
