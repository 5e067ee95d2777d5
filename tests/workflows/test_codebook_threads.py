"""The codebook stage: one fit task per set, each fitting with every core of its worker process."""

from __future__ import annotations

import numpy as np
from threadpoolctl import threadpool_info, threadpool_limits

from lsic.pipeline import FeatureSet
from lsic.workflows import extract


def test_fit_lifts_the_single_thread_pin_for_the_fit_only(monkeypatch):
    seen = {}

    def fake_fit(sample, fs, random_state=None):
        seen["threads"] = {p["user_api"]: p["num_threads"] for p in threadpool_info()}
        seen["n"] = len(sample)
        return object()

    monkeypatch.setattr(extract.Codebook, "fit", staticmethod(fake_fit))
    monkeypatch.setattr(extract._store, "open_store", lambda *a, **k: None)
    monkeypatch.setattr(extract._store, "write_codebook", lambda *a, **k: None)
    monkeypatch.setattr(extract, "_process_cores", lambda: 3)
    fs = FeatureSet("a", "hog", "lcc", 8, kappa=2)
    parts = [[{"hog": np.ones((5, 128), np.float32)}], [{"hog": np.ones((6, 128), np.float32)}]]
    with threadpool_limits(limits=1):  # as left by the sampling tasks in the same worker process
        before = {p["user_api"]: p["num_threads"] for p in threadpool_info()}
        assert extract._fit_and_store_codebook(parts, fs, "mem://x", {}, 0) == "a"
        after = {p["user_api"]: p["num_threads"] for p in threadpool_info()}
    assert seen["n"] == 11
    assert seen["threads"] and all(v == 3 for v in seen["threads"].values())
    assert after == before and all(v == 1 for v in before.values())  # restored: extraction stays pinned
