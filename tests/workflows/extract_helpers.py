"""Helpers shared by the extraction tests: a small experiment and array snapshots."""

from __future__ import annotations

import uuid

from lsic.workflows.config import parse_experiment
from lsic.workflows.store import FeatureStore

SETS = [
    {"name": "hog_lcc", "descriptor": "hog", "coding": "lcc", "codebook_size": 16, "kappa": 3,
     "pyramid": [[1, 1], [2, 2]], "pooling": "max"},
    {"name": "hoglbp_svc", "descriptor": "hog+lbp", "coding": "svc", "codebook_size": 4, "pca_dim": 8, "s": 1.0,
     "pyramid": [[1, 1]]},
]


def experiment(root, store_url, **changes):
    raw = {
        "dataset": {"root": str(root), "train_per_class": 6, "val_per_class": 1, "test_per_class": 4},
        "images": {"max_side": 96, "patch_sizes": [16, 24], "step": 8},
        "codebook": {"sample_images": 16, "descriptors_per_image": 40},
        "feature_sets": SETS,
        "store": {"url": str(store_url), "chunk_rows": 8},
        "seed": 3,
    }
    for key, value in changes.items():
        raw[key] = {**raw[key], **value} if isinstance(value, dict) else value
    return parse_experiment(raw)


def mem_url() -> str:
    return f"memory://lsic-test-{uuid.uuid4().hex}.zarr"


def arrays(url):
    store = FeatureStore.open(url)
    g = store.group  # every root array, as stored (extraction must reproduce them bit for bit)
    out = {k: g[k][...] for k in ("labels", "split", "valid", "paths", "errors")}
    for fs in store.config["feature_sets"]:
        out[fs["name"]] = store.features(fs["name"])[...]
    return out
