"""The codebook stage fits with every core of its worker process, reproducibly."""

from __future__ import annotations

import numpy as np
from threadpoolctl import threadpool_info, threadpool_limits

from lsic.pipeline import FeatureSet
from lsic.workflows import extract


def _threads(api):
    return {p["num_threads"] for p in threadpool_info() if p["user_api"] == api}


def test_fit_uses_every_core_through_openmp_and_keeps_blas_pinned(monkeypatch):
    seen = {}

    def fake_fit(sample, fs, random_state=None):
        seen["openmp"], seen["blas"], seen["n"] = _threads("openmp"), _threads("blas"), len(sample)
        return object()

    monkeypatch.setattr(extract.Codebook, "fit", staticmethod(fake_fit))
    monkeypatch.setattr(extract.FeatureStore, "write_codebook", lambda *a, **k: None)
    monkeypatch.setattr(extract, "_process_cores", lambda: 3)
    fs = FeatureSet("a", "hog", "lcc", 8, kappa=2)
    parts = [[{"hog": np.ones((5, 128), np.float32)}], [{"hog": np.ones((6, 128), np.float32)}]]
    with threadpool_limits(limits=1):  # as dask's OMP_NUM_THREADS=1 and the sampling tasks' BLAS pin leave it
        assert extract._fit_and_store_codebook(parts, fs, extract.FeatureStore.__new__(extract.FeatureStore), 0) == "a"
        assert seen["n"] == 11
        assert seen["openmp"] == {3}  # scikit-learn's k-means threads: every core of the process
        assert seen["blas"] == {1} and _threads("blas") == {1}  # extraction's GEMMs stay single-threaded
