"""A store written by lsic 0.1.0 (before the FeatureStore redesign) still opens and reads back.

``data/legacy_store_0.1.0.tar.gz`` is a tiny run (4 texture classes, 20 images,
two feature sets, 2 epochs with ``compare_sgd``) made by ``lsic.workflows.run``
at commit 1bb2f13; ``data/legacy_store_expected.json`` holds what that release
read back from it with plain ``zarr``. The checks below also hold the stored
arrays against each other (scores = features @ coef.T + intercept, metrics
recomputed from the scores with scikit-learn), so a reader that returns the
right shapes but the wrong rows fails.
"""

from __future__ import annotations

import dataclasses
import json
import tarfile
from pathlib import Path

import numpy as np
import pytest
from sklearn import metrics as skm

from lsic.workflows.evaluate import load_evaluation
from lsic.workflows.store import FeatureStore

DATA = Path(__file__).parent / "data"
SETS = ("hog_lcc", "lbp_svc")


@pytest.fixture(scope="module")
def legacy(tmp_path_factory):
    root = tmp_path_factory.mktemp("legacy")
    with tarfile.open(DATA / "legacy_store_0.1.0.tar.gz") as tar:
        tar.extractall(root, filter="data")
    want = json.loads((DATA / "legacy_store_expected.json").read_text())
    return str(root / "legacy.zarr"), want


def test_legacy_features_and_rows(legacy):
    url, want = legacy
    store = FeatureStore.open(url, "r")
    assert store.class_names == want["class_names"]
    assert (store.n_images, store.chunk_rows) == (want["n_images"], want["chunk_rows"])
    assert store.extract_complete and store.done_chunks().all()
    np.testing.assert_array_equal(store.labels(), want["labels"])
    np.testing.assert_array_equal(store.split(), want["split"])
    np.testing.assert_array_equal(store.valid(), want["valid"])
    for name in SETS:
        np.testing.assert_array_equal(store.features(name)[...], np.asarray(want["features"][name], np.float32))


def test_legacy_models_and_scores(legacy):
    url, want = legacy
    store = FeatureStore.open(url, "r")
    for name in SETS:
        m = store.load_models(name)
        np.testing.assert_array_equal(m.coef_.astype(np.float32), np.asarray(want["coef"][name], np.float32))
        coef, intercept = store.checkpoints.final_weights(name)
        np.testing.assert_array_equal(coef, np.asarray(want["coef"][name], np.float32))
        np.testing.assert_array_equal(intercept, np.asarray(want["intercept"][name], np.float32))
        assert store.checkpoints.complete_epochs(name, "sgd") == [2]
        assert store.load_models(name, variant="sgd").average is False
        X = np.asarray(want["features"][name], np.float32)
        coef, b = np.asarray(want["coef"][name]), np.asarray(want["intercept"][name])
        for split in ("val", "test"):
            assert store.scores_complete(name, split, 2)
            rows = store.score_rows(name, split)
            np.testing.assert_array_equal(rows, want["score_rows"][name][split])
            np.testing.assert_array_equal(rows, store.split_rows(split))
            S = store.read_scores(name, split)
            np.testing.assert_allclose(S, X[rows] @ coef.T + b, rtol=1e-4, atol=1e-5)


def test_legacy_evaluation(legacy):
    url, want = legacy
    ev = load_evaluation(url)
    assert ev["metrics"] == want["metrics"]
    assert ev["timings"] == want["timings"]
    labels = np.asarray(want["labels"])
    for name in SETS:
        rows = np.asarray(want["score_rows"][name]["test"])
        S = np.asarray(want["scores"][name]["test"])
        assert ev["metrics"]["sets"][name]["top1"] == pytest.approx(skm.accuracy_score(labels[rows], S.argmax(1)))
        assert ev["curves"][name]["asgd"] == [h["val_top1"][name] for h in want["history"][name]]
        assert ev["curves"][name]["sgd"] == [h["val_top1"][f"{name}/sgd"] for h in want["history"][name]]


def test_legacy_codebooks_and_model_still_predict(legacy):
    """Settings added since 0.1.0 (e.g. LCC's ``knn``) do not make the release's codebooks "another set"."""
    from lsic.workflows import load_model
    from lsic.workflows.config import experiment_from_store

    url, _ = legacy
    store = FeatureStore.open(url, "r")
    exp = experiment_from_store(store)
    for name in SETS:
        fs = exp.feature_set(name)
        assert store.has_codebook(fs)
        assert store.read_codebook(fs).centers.shape[0] == fs.codebook_size
        # a set with other settings is still another set
        assert not store.has_codebook(dataclasses.replace(fs, kappa=fs.kappa + 1))
    model = load_model(url)  # reads codebooks, weights and fusion of the release's store
    assert list(model.classes_) == store.class_names
    # and the extraction fingerprint of the release's own config is unchanged
    assert exp.extraction_fingerprint() == store.fingerprint
