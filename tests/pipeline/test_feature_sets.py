"""Feature-set config, Table 1 presets, codebooks and the whole per-image path."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

import lsic.pipeline as lp
from lsic.pipeline import (
    PRESETS,
    TABLE1,
    Codebook,
    ConfigError,
    DescriptorGrid,
    FeatureSet,
    ImageError,
    image_descriptors,
    image_features,
)


def test_table1_dimensions():
    # Table 1: coding dim, pyramid blocks, feature dim
    want = {
        "set1": ("lcc", "hog+lbp", 8192, 10, 81920),
        "set2": ("lcc", "hog", 16384, 10, 163840),
        "set3": ("lcc", "hog+lbp", 20480, 10, 204800),
        "set4": ("lcc", "hog", 32768, 8, 262144),
        "set5": ("svc", "hog+lbp", 51200, 4, 204800),
        "set6": ("svc", "hog", 65536, 4, 262144),
    }
    assert set(TABLE1) == set(want)
    for name, (coding, desc, cdim, blocks, dim) in want.items():
        fs = TABLE1[name]
        assert (fs.coding, fs.descriptor, fs.coding_dim, fs.n_blocks, fs.dim) == (coding, desc, cdim, blocks, dim)
    assert set(TABLE1) <= set(PRESETS) and len(PRESETS) > len(TABLE1)


def test_from_dict_roundtrip_and_validation():
    fs = FeatureSet.from_dict({"descriptor": "hog", "coding": "lcc", "codebook_size": 64,
                               "pyramid": [[1, 1], [2, 2]]}, name="a")
    assert fs.name == "a" and fs.pyramid == ((1, 1), (2, 2)) and fs.dim == 64 * 5
    assert FeatureSet.from_dict(fs.to_dict()) == fs
    with pytest.raises(ConfigError, match="'kapa'"):
        FeatureSet.from_dict({"name": "a", "descriptor": "hog", "coding": "lcc", "codebook_size": 8, "kapa": 3})
    with pytest.raises(ConfigError, match="codebook_size"):
        FeatureSet.from_dict({"name": "a", "descriptor": "hog", "coding": "lcc"})
    for key, value in [("descriptor", "dsift"), ("coding", "fisher"), ("codebook_size", 0),
                       ("codebook_size", 40000), ("kappa", 100), ("pooling", "sum"),
                       ("pyramid", [[1, 0]]), ("pca_dim", 0), ("s", -1)]:
        d = {"name": "a", "descriptor": "hog", "coding": "lcc", "codebook_size": 64, key: value}
        with pytest.raises(ConfigError, match=key):
            FeatureSet.from_dict(d)


def _photo(seed: int, h: int = 90, w: int = 120) -> bytes:
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    img = 128 + 60 * np.sin(x / (3 + seed)) * np.cos(y / 5.0) + 30 * rng.standard_normal((h, w))
    buf = io.BytesIO()
    Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).convert("RGB").save(buf, "JPEG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def fitted():
    grid = DescriptorGrid(patch_sizes=(16, 24), step=8)
    sets = [
        FeatureSet("lcc_hog", "hog", "lcc", 32, kappa=5, pyramid=((1, 1), (2, 2))),
        FeatureSet("vq_hoglbp", "hog+lbp", "lcc", 16, kappa=1, pooling="avg", power_norm=True),
        FeatureSet("svc_hoglbp", "hog+lbp", "svc", 8, pca_dim=10, s=0.5, pyramid=((1, 1), (3, 1))),
    ]
    datas = [_photo(i) for i in range(4)]
    descs = [image_descriptors(d, ["hog", "hog+lbp"], grid) for d in datas]
    books = {}
    for fs in sets:
        X = np.concatenate([d[fs.descriptor].values for d in descs])
        books[fs.name] = Codebook.fit(X, fs, random_state=0)
    return grid, sets, books, datas


def test_codebook_arrays_roundtrip(fitted):
    _, sets, books, _ = fitted
    cb = books["svc_hoglbp"]
    arrs = cb.to_arrays()
    assert set(arrs) == {"centers", "pca_mean", "pca_components"}
    assert arrs["centers"].shape == (8, 10) and arrs["pca_components"].shape == (10, 187)
    cb2 = Codebook.from_arrays(arrs, sets[2])
    Z = np.random.default_rng(0).random((5, 187)).astype(np.float32)
    np.testing.assert_array_equal(cb2.project(Z), cb.project(Z))
    assert set(books["lcc_hog"].to_arrays()) == {"centers"}
    # PCA by the direct formula: (Z - mean) @ components.T with orthonormal components
    np.testing.assert_allclose(cb.pca_components @ cb.pca_components.T, np.eye(10), atol=1e-5)


def test_image_features_match_manual_composition(fitted):
    grid, sets, books, datas = fitted
    out = image_features(datas[0], sets, books, grid, name="img0")
    assert set(out) == {fs.name for fs in sets}
    img = lp.load_image(datas[0], max_side=grid.max_side)
    for fs in sets:
        x = out[fs.name]
        assert x.dtype == np.float32 and x.shape == (fs.dim,)
        np.testing.assert_allclose(np.linalg.norm(x), 1.0, rtol=1e-5)
        desc = lp.dense_descriptors(img, fs.descriptor, grid)
        cb = books[fs.name]
        Z = cb.project(desc.values)
        if fs.coding == "lcc":
            raw = lp.pyramid_pool(lp.lcc_encode(Z, cb.centers, fs.kappa), desc.xy, desc.image_shape,
                                  fs.pyramid, pooling=fs.pooling)
        else:
            near = lp.nearest_codewords(Z, cb.centers)[:, 0]
            raw = lp.svc_pool(Z, near, cb.centers, fs.s, desc.xy, desc.image_shape, fs.pyramid)
        if fs.power_norm:
            raw = np.sign(raw) * np.sqrt(np.abs(raw))
        np.testing.assert_allclose(x, raw / np.linalg.norm(raw), rtol=1e-5, atol=1e-7)


def test_descriptors_computed_once(fitted, monkeypatch):
    grid, sets, books, datas = fitted
    import lsic.pipeline._image_features as mod

    calls = {"hog": 0, "lbp": 0, "decode": 0}
    for fn, key in [("dense_hog", "hog"), ("dense_lbp", "lbp"), ("load_image", "decode")]:
        orig = getattr(mod, fn)

        def spy(*a, _orig=orig, _key=key, **k):
            calls[_key] += 1
            return _orig(*a, **k)

        monkeypatch.setattr(mod, fn, spy)
    image_features(datas[1], sets, books, grid)
    assert calls == {"hog": 1, "lbp": 1, "decode": 1}


def test_image_features_errors(fitted):
    grid, sets, books, _ = fitted
    with pytest.raises(ImageError, match="broken.jpg"):
        image_features(b"\xff\xd8\xff garbage", sets, books, grid, name="broken.jpg")
    with pytest.raises(ConfigError, match="lcc_hog"):
        image_features(_photo(0), sets, {}, grid)


def test_image_smaller_than_every_patch_is_an_image_error():
    import io

    import numpy as np
    import pytest
    from PIL import Image

    from lsic.pipeline import DescriptorGrid, ImageError, image_descriptors

    buf = io.BytesIO()
    Image.fromarray(np.full((10, 12), 128, np.uint8)).save(buf, "PNG")
    with pytest.raises(ImageError, match="smaller than the smallest patch"):
        image_descriptors(buf.getvalue(), ["hog"], DescriptorGrid(patch_sizes=(16, 24)), name="tiny.png")
    # one fitting patch size is enough
    assert len(image_descriptors(buf.getvalue(), ["hog"], DescriptorGrid(patch_sizes=(8,), step=4))["hog"].values) > 0
