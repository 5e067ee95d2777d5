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
