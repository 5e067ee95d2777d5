"""The portable model file and the Python API: exact scores, inputs of every kind, refusals."""

from __future__ import annotations

import io
import json
import zipfile

import fsspec
import numpy as np
import pytest
from PIL import Image

from lsic.pipeline import ConfigError, image_features
from lsic.workflows import cli, load_model
from lsic.workflows.store import FeatureStore
from lsic.workflows.evaluate import load_fusion
from lsic.workflows.config import experiment_from_store
from lsic.workflows.model import export_model
from lsic.workflows.model_file import FORMAT_VERSION, ModelFileError
from lsic.workflows.predict import predict_images


@pytest.fixture(scope="module")
def exported(trained_store, tmp_path_factory):
    path = tmp_path_factory.mktemp("model") / "model.lsic.zip"
    export_model(trained_store.store.url, str(path))
    return trained_store, path


def _test_rows(url):
    g = FeatureStore.open(url)
    rows = g.score_rows("hog_lcc", "test")
    return g, rows, g.locators(rows)[0]


def test_exported_model_gives_the_stores_fused_scores(exported):
    exp, path = exported
    url = exp.store.url
    g, rows, paths = _test_rows(url)
    from_file, from_store = load_model(str(path)), load_model(url)
    s_file = from_file.decision_function(paths)
    s_store = from_store.decision_function(paths)
    assert s_file.dtype == np.float32 and s_file.shape == (len(paths), 4)
    np.testing.assert_array_equal(s_file, s_store)
    assert list(from_file.classes_) == list(g.class_names)
    assert from_file._hash() == from_store.fingerprint == from_file.fingerprint  # recomputed from the loaded arrays
    assert from_file.meta["store_fingerprint"] == g.fingerprint

    # independent reference 1: training's stored test scores (X @ W.T + b from the extracted features), fused
    fusion = load_fusion(g)
    stored = fusion.transform({n: g.read_scores(n, "test") for n in fusion.names})
    np.testing.assert_allclose(s_file, stored, rtol=1e-4, atol=1e-4)
    # independent reference 2: the store's parts, one image at a time, scored and fused here
    exp = experiment_from_store(g)
    sets = [exp.feature_set(n) for n in fusion.names]
    codebooks = {fs.name: g.read_codebook(fs) for fs in sets}
    weights = {n: g.checkpoints.final_weights(n) for n in fusion.names}
    for i, p in enumerate(paths[:4]):
        with fsspec.open(p, "rb") as fh:
            feats = image_features(fh.read(), sets, codebooks, exp.images, name=p)
        per_set = {n: feats[n][None, :] @ weights[n][0].T + weights[n][1][None, :] for n in fusion.names}
        np.testing.assert_allclose(s_file[i], fusion.transform(per_set)[0], rtol=1e-5, atol=1e-5)

    # `lsic predict STORE` and `lsic predict MODEL` give the same predictions, score for score
    a = predict_images(url, paths, top_k=4)
    with pytest.warns(FutureWarning, match=r"predict_images\(top=\) is deprecated; use top_k="):  # the old spelling still works
        b = predict_images(str(path), paths, top=4)
    assert len(a[0].classes) == 4
    assert [(x.image, x.classes) for x in a] == [(x.image, x.classes) for x in b]
    for x, row in zip(b, s_file):
        assert [name for name, _ in x.classes] == list(from_file.classes_[np.argsort(-row, kind="stable")])
        assert [s for _, s in x.classes] == [float(v) for v in np.sort(row)[::-1]]


def test_cli_predict_same_output_for_store_and_model(exported, capsys):
    exp, path = exported
    _, _, paths = _test_rows(exp.store.url)
    assert cli.main(["predict", exp.store.url, *paths[:3]]) == 0
    out_store = capsys.readouterr().out
    assert cli.main(["predict", str(path), *paths[:3]]) == 0
    out_model = capsys.readouterr().out
    assert out_store == out_model and out_store.count("1. ") == 3


def test_api_accepts_paths_bytes_and_arrays(exported):
    _, path = exported
    model = load_model(str(path))
    _, _, paths = _test_rows(exported[0].store.url)
    p = paths[0]
    raw = fsspec.open(p, "rb").open().read()
    with Image.open(io.BytesIO(raw)) as im:
        arr = np.asarray(im.convert("RGB"))
    ref = model.decision_function(p)
    np.testing.assert_array_equal(model.decision_function(raw), ref)
    np.testing.assert_array_equal(model.decision_function(arr), ref)  # 96 px: no shrink, lossless re-encode
    # in a batch the matrix product may sum in another order: equal to float32 rounding
    np.testing.assert_allclose(model.decision_function([paths[1], raw])[1], ref[0], rtol=1e-6, atol=1e-6)
    names, scores = model.top_k(paths[:5], top_k=3)
    full = model.decision_function(paths[:5])
    assert names.shape == scores.shape == (5, 3)
    np.testing.assert_array_equal(scores, -np.sort(-full, axis=1)[:, :3])
    with pytest.warns(FutureWarning, match=r"top_k\(k=\) is deprecated"):
        old = model.top_k(paths[:5], k=3)
    np.testing.assert_array_equal(old[1], scores)
    for bad in (0, -1, 2.5, True):
        with pytest.raises(ConfigError, match=r"top_k \(--top-k\) is"):
            model.top_k(paths[:1], top_k=bad)
    with pytest.raises(ConfigError, match=r"top_k \(--top-k\) is 0"):
        predict_images(str(path), paths[:1], top_k=0)
    assert list(model.predict(paths[:5])) == list(model.classes_[full.argmax(axis=1)])
    assert list(names[:, 0]) == list(model.predict(paths[:5]))


def _rewrite(src, dst, change):
    """Copy a model zip, letting ``change(name, bytes) -> bytes`` edit members."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for info in zin.infolist():
            zout.writestr(info.filename, change(info.filename, zin.read(info.filename)))


def test_model_file_holds_no_pickle(exported):
    _, path = exported
    with zipfile.ZipFile(path) as zf:
        manifest = json.loads(zf.read("manifest.json"))
        assert manifest["format_version"] == FORMAT_VERSION
        for name, entry in manifest["arrays"].items():
            a = np.load(io.BytesIO(zf.read(entry["file"])), allow_pickle=False)
            assert a.dtype != object and list(a.shape) == entry["shape"], name
        assert set(zf.namelist()) == {"manifest.json", *(e["file"] for e in manifest["arrays"].values())}


def test_load_refuses_damaged_and_future_files(exported, tmp_path, capsys):
    _, path = exported
    # a newer format
    future = tmp_path / "future.zip"
    _rewrite(path, future, lambda n, b: json.dumps({**json.loads(b), "format_version": FORMAT_VERSION + 1}).encode()
             if n == "manifest.json" else b)
    with pytest.raises(ModelFileError, match="upgrade lsic"):
        load_model(str(future))
    # an array changed behind the manifest's back (a valid zip, wrong checksum)
    tampered = tmp_path / "tampered.zip"

    def flip(n, b):
        if n.endswith("coef.npy"):
            b = bytearray(b)
            b[-1] ^= 0xFF
        return bytes(b)

    _rewrite(path, tampered, flip)
    with pytest.raises(ModelFileError, match="damaged.*checksum mismatch"):
        load_model(str(tampered))
    # a pickled object array smuggled in with a matching checksum: np.load refuses it
    evil = tmp_path / "evil.zip"
    buf = io.BytesIO()
    np.save(buf, np.array([{"x": 1}], dtype=object), allow_pickle=True)
    payload = buf.getvalue()

    def smuggle(n, b):
        if n == "manifest.json":
            m = json.loads(b)
            entry = next(e for k, e in m["arrays"].items() if k.endswith("intercept"))
            import hashlib

            entry["sha256"] = hashlib.sha256(payload).hexdigest()
            return json.dumps(m).encode()
        return payload if n.endswith("intercept.npy") else b

    _rewrite(path, evil, smuggle)
    with pytest.raises(ModelFileError, match="damaged"):
        load_model(str(evil))
    # bytes flipped in the raw file (zip CRC) and a truncated file
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    (tmp_path / "crc.zip").write_bytes(bytes(raw))
    (tmp_path / "short.zip").write_bytes(path.read_bytes()[: 1000])
    for bad in ("crc.zip", "short.zip", "future.zip", "tampered.zip"):
        assert cli.main(["predict", str(tmp_path / bad), "x.jpg"]) == 2
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0 and bad in err and ("damaged" in err or "upgrade" in err), err


def test_export_of_unevaluated_store_is_one_line(tmp_path, capsys):
    assert cli.main(["export", str(tmp_path / "nothing.zarr"), str(tmp_path / "m.zip")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("lsic: error:") and "\n" not in err
