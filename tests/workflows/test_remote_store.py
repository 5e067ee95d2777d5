"""The feature store on a networked object store: an S3 API server on 127.0.0.1 (moto), reached through s3fs."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("s3fs")
pytest.importorskip("moto.server")

from lsic.workflows.extract import run_extract  # noqa: E402

from lsic.workflows.store import FeatureStore  # noqa: E402

from extract_helpers import arrays, experiment  # noqa: E402


def test_extract_to_s3_equals_local(s3, dataset, reference, client):
    ref_url, _ = reference
    import s3fs

    s3fs.S3FileSystem(**s3).mkdir("lsic-test")
    url = "s3://lsic-test/features.zarr"
    exp = experiment(dataset, url, store={"storage_options": s3})
    summary = run_extract(exp, client=client, progress=False)
    assert summary.n_images == FeatureStore.open(ref_url).n_images
    got = FeatureStore.open(url, "r", s3)
    want = arrays(ref_url)
    # a separate run fits its own codebooks; extraction is deterministic, so they and the features are equal
    for name in ("hog_lcc", "hoglbp_svc"):
        np.testing.assert_array_equal(got.features(name)[...], want[name])
    np.testing.assert_array_equal(got.valid(), want["valid"])
    import s3fs

    assert s3fs.S3FileSystem(**s3).exists("lsic-test/features.zarr/failures.json")
