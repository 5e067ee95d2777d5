"""Fixtures of the workflow tests: a generated dataset with bad files, and one reference extraction."""

from __future__ import annotations

import shutil

import pytest
from extract_helpers import experiment, mem_url

from lsic.workflows.extract import run_extract


@pytest.fixture(scope="session")
def dataset(tmp_path_factory, image_folder):
    """The generated images plus three bad files in one class."""
    root = tmp_path_factory.mktemp("ds") / "data"
    shutil.copytree(image_folder, root)
    cls = root / "rings"
    (cls / "zz_corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not a jpeg")
    good = (cls / sorted(p.name for p in cls.iterdir() if p.suffix == ".jpg")[0]).read_bytes()
    (cls / "zz_truncated.jpg").write_bytes(good[: len(good) // 3])
    (cls / "zz_empty.png").write_bytes(b"")
    return root


@pytest.fixture(scope="session")
def reference(dataset, session_client):
    """One uninterrupted run, the reference for the others."""
    url = mem_url()
    summary = run_extract(experiment(dataset, url), client=session_client, progress=False)
    return url, summary


@pytest.fixture(scope="session")
def trained_store(tmp_path_factory, image_folder, session_client):
    """An extracted, trained and evaluated store of the generated images (4 classes), with its report."""
    from extract_helpers import SETS

    from lsic.workflows.config import parse_experiment
    from lsic.workflows.run import run_pipeline

    base = tmp_path_factory.mktemp("trained")
    exp = parse_experiment({
        "name": "trained",
        "dataset": {"root": str(image_folder), "train_per_class": 6, "val_per_class": 2, "test_per_class": 4},
        "images": {"max_side": 96, "patch_sizes": [16, 24], "step": 8},
        "codebook": {"sample_images": 16, "descriptors_per_image": 40},
        "feature_sets": SETS,
        "store": {"url": str(base / "store.zarr"), "chunk_rows": 8},
        "train": {"epochs": 3, "lam": 0.001, "mode": "exact"},
        "report": str(base / "report"),
        "seed": 2,
    })
    run_pipeline(exp, progress=False, client=session_client)
    return exp
