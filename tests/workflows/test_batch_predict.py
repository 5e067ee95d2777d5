"""Distributed batch prediction: one row per image (errors kept), resume from partition marks, formats."""

from __future__ import annotations

import shutil
import tarfile
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from lsic.pipeline import StoreError
from lsic.workflows import batch_predict, cli, load_model
from lsic.workflows.batch_predict import list_inputs, parts_url, run_batch_predict
from lsic.workflows.model import export_model


@pytest.fixture(scope="module")
def model_path(trained_store, tmp_path_factory):
    path = tmp_path_factory.mktemp("bmodel") / "model.lsic.zip"
    export_model(trained_store.store.url, str(path))
    return path


@pytest.fixture(scope="module")
def collection(image_folder, tmp_path_factory):
    """11 images in nested folders plus a corrupt JPEG, an empty file and a text file."""
    root = tmp_path_factory.mktemp("collection") / "new"
    for cls in sorted(p.name for p in Path(image_folder).iterdir()):
        dst = root / ("sub" if cls < "m" else "") / cls
        dst.mkdir(parents=True, exist_ok=True)
        for p in sorted((Path(image_folder) / cls).glob("*.jpg"))[-3:]:
            shutil.copy(p, dst / p.name)
    (root / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    (root / "empty.png").write_bytes(b"")
    (root / ".hidden.jpg").write_bytes(b"skipped: hidden")
    return root


def _good_and_bad(root):
    files = sorted(p for p in Path(root).rglob("*") if p.is_file() and not p.name.startswith("."))
    bad = {"corrupt.jpg", "empty.png"}
    return [p for p in files if p.name not in bad], [p for p in files if p.name in bad]


def test_every_image_gets_a_row_and_errors_are_kept(model_path, collection, tmp_path, client):
    out = tmp_path / "pred.parquet"
    summary = run_batch_predict(str(model_path), str(collection), str(out), top_k=3, client=client,
                                partition_rows=4, progress=False)
    good, bad = _good_and_bad(collection)
    df = pq.read_table(out).to_pandas()
    assert len(df) == len(good) + len(bad) == summary.n_images
    assert list(df.columns) == ["path", "error", "class_1", "score_1", "class_2", "score_2", "class_3", "score_3"]
    assert summary.n_failed == 2
    names = {Path(p.split("://")[-1]).name: i for i, p in enumerate(df["path"])}
    assert ".hidden.jpg" not in names
    for p in bad:
        row = df.iloc[names[p.name]]
        assert isinstance(row["error"], str) and row["error"] and pd.isna(row["class_1"]) and np.isnan(row["score_1"])
    ok = df[df["error"].isna()]
    assert len(ok) == len(good)
    # reference: the Python API on the same files (one batch: scores to float32 rounding)
    model = load_model(str(model_path))
    ref_classes, ref_scores = model.top_k([str(p) for p in good], top_k=3)
    by_name = {p.name: i for i, p in enumerate(good)}
    for _, row in ok.iterrows():
        i = by_name[Path(row["path"].split("://")[-1]).name]
        assert [row["class_1"], row["class_2"], row["class_3"]] == list(ref_classes[i])
        np.testing.assert_allclose([row["score_1"], row["score_2"], row["score_3"]], ref_scores[i], rtol=1e-5, atol=1e-5)
    # the same as CSV, read back with pandas
    csv = tmp_path / "pred.csv"
    run_batch_predict(str(model_path), str(collection), str(csv), top_k=3, client=client, partition_rows=4,
                      progress=False)
    back = pd.read_csv(csv)
    assert list(back["path"]) == list(df["path"]) and list(back["class_1"].fillna("")) == list(df["class_1"].fillna(""))
    np.testing.assert_allclose(back["score_1"], df["score_1"], rtol=1e-6)


def test_resume_after_injected_failure_skips_finished_partitions(model_path, collection, tmp_path, client, monkeypatch):
    ref = tmp_path / "ref.parquet"
    run_batch_predict(str(model_path), str(collection), str(ref), client=client, partition_rows=3, progress=False)
    out = tmp_path / "resumed.parquet"
    real = batch_predict.predict_partition
    log = tmp_path / "calls.txt"  # tasks are serialised to the workers: count through a file
    fail = tmp_path / "fail-partition-2"
    fail.touch()

    def calls() -> list[int]:
        return sorted(int(x) for x in log.read_text().split()) if log.exists() else []

    def flaky(k, *args, **kw):
        with open(log, "a") as fh:
            fh.write(f"{k}\n")
        if k == 2 and fail.exists():
            raise RuntimeError("injected worker failure")
        return real(k, *args, **kw)

    monkeypatch.setattr(batch_predict, "predict_partition", flaky)
    with pytest.raises(StoreError, match="rerun the same command to resume"):
        run_batch_predict(str(model_path), str(collection), str(out), client=client, partition_rows=3, progress=False)
    n_parts = -(-len(list_inputs(str(collection))) // 3)
    assert calls() == list(range(n_parts)) and not out.exists()
    done = sorted(p.name for p in Path(parts_url(str(out))).glob("*.done"))
    assert len(done) == n_parts - 1 and "part-000002.done" not in done

    log.unlink()
    fail.unlink()
    summary = run_batch_predict(str(model_path), str(collection), str(out), client=client, partition_rows=3,
                                progress=False)
    assert calls() == [2] and summary.partitions_done == 1  # only the failed partition was recomputed
    assert pq.read_table(out).equals(pq.read_table(ref))
    # a finished prediction rerun only re-assembles
    log.unlink()
    again = run_batch_predict(str(model_path), str(collection), str(out), client=client, partition_rows=3,
                              progress=False)
    assert calls() == [] and again.images_done == 0 and pq.read_table(out).equals(pq.read_table(ref))


def test_tar_and_list_inputs_match_the_folder(model_path, collection, tmp_path, client):
    good, _ = _good_and_bad(collection)
    tar = tmp_path / "images.tar"
    with tarfile.open(tar, "w") as tf:
        for p in good:
            tf.add(p, arcname=f"{p.parent.name}/{p.name}")
    lst = tmp_path / "images.txt"
    lst.write_text("# images to classify\n" + "".join(f"{p} some_label\n" for p in good))
    outs = {}
    for name, src in (("tar", tar), ("list", lst)):
        outs[name] = tmp_path / f"{name}.parquet"
        run_batch_predict(str(model_path), str(src), str(outs[name]), client=client, progress=False)
    t, li = (pq.read_table(outs[k]).to_pandas() for k in ("tar", "list"))
    assert len(t) == len(li) == len(good) and t["error"].isna().all() and li["error"].isna().all()
    assert all(p.startswith("tar://") for p in t["path"])
    # the same images in the same order: same classes, scores to float32 rounding
    assert list(t["class_1"]) == list(li["class_1"])
    np.testing.assert_allclose(t["score_1"], li["score_1"], rtol=1e-5, atol=1e-5)


def test_cli_batch_predict_and_one_line_errors(model_path, collection, tmp_path, capsys):
    out = tmp_path / "cli.csv"
    code = cli.main(["predict", str(model_path), "--input", str(collection), "--output", str(out), "--top-k", "2",
                     "--no-progress", "--workers", "1", "--threads-per-worker", "1"])
    assert code == 0
    assert "could not be classified" in capsys.readouterr().out
    df = pd.read_csv(out)
    assert len(df) == sum(len(x) for x in _good_and_bad(collection)) and "class_2" in df and "class_3" not in df
    assert cli.main(["predict", str(model_path), "--input", str(tmp_path / "nope"), "--output", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert "nope" in err and "\n" not in err
