"""End to end: extract -> train -> evaluate -> report -> predict, and the commands over them.

The fast test runs on the generated texture images (tests/conftest.py) with an
in-process client; ``test_demo`` runs ``lsic demo`` itself on the shipped
Caltech-101 subset (slow: about a minute on 2 cores).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from PIL import Image

from lsic.workflows import cli
from lsic.workflows.config import parse_experiment
from lsic.workflows.predict import predict_images
from lsic.workflows.report import FIGURES
from lsic.workflows.run import run_pipeline

SETS = [
    {"name": "hog_lcc", "descriptor": "hog", "coding": "lcc", "codebook_size": 16, "kappa": 3,
     "pyramid": [[1, 1], [2, 2]], "pooling": "max"},
    {"name": "hoglbp_svc", "descriptor": "hog+lbp", "coding": "svc", "codebook_size": 4, "pca_dim": 8, "s": 1.0,
     "pyramid": [[1, 1]]},
]


def _raw(root, store, report):
    return {
        "name": "e2e",
        "dataset": {"root": str(root), "train_per_class": 7, "val_per_class": 2, "test_per_class": 3},
        "images": {"max_side": 96, "patch_sizes": [16, 24], "step": 8},
        "codebook": {"sample_images": 20, "descriptors_per_image": 40},
        "feature_sets": SETS,
        "store": {"url": str(store), "chunk_rows": 8},
        "train": {"epochs": 4, "lam": 0.001, "mode": "exact"},
        "report": str(report),
        "seed": 1,
    }


def _experiment(root, store, report):
    return parse_experiment(_raw(root, store, report))


@pytest.fixture(scope="module")
def trained(tmp_path_factory, image_folder, session_client):
    base = tmp_path_factory.mktemp("e2e")
    exp = _experiment(image_folder, base / "store.zarr", base / "report")
    result = run_pipeline(exp, progress=False, client=session_client)
    return exp, result


def test_run_pipeline_beats_chance_and_writes_report(trained):
    exp, result = trained
    m = result.metrics
    assert set(m) == {"sets", "fused", "n_train", "n_test", "n_failed"}
    assert m["n_test"] == 4 * 3 and m["n_failed"] == 0
    assert m["fused"]["top1"] >= 0.75  # 4 texture classes: chance is 0.25
    assert set(m["fused"]["weights"]) == {"hog_lcc", "hoglbp_svc"}
    rep = Path(exp.report)
    assert json.loads((rep / "metrics.json").read_text()) == json.loads(json.dumps(m))
    for f in FIGURES.values():
        with Image.open(rep / f) as im:
            im.verify()
    assert (rep / "index.html").is_file() and (rep / "README.md").is_file()
    assert set(result.seconds) == {"extract", "train", "evaluate"}
    # the report shows the recorded stage timings
    assert "train" in (rep / "README.md").read_text()


def test_rerun_resumes_without_work(trained, client):
    exp, first = trained
    again = run_pipeline(exp, progress=False, client=client)
    assert again.extract.images_done == 0
    assert not again.train.epochs_run
    assert again.metrics == first.metrics


def test_run_and_evaluate_commands_on_a_complete_store(trained, image_folder, tmp_path, capsys):
    import yaml

    exp, first = trained
    cfg = tmp_path / "e2e.yaml"
    cfg.write_text(yaml.safe_dump(_raw(image_folder, "unused.zarr", "unused-report")))
    rc = cli.main(["run", str(cfg), "--store", exp.store.url, "--report", str(tmp_path / "rep"), "--no-progress"])
    out, _ = capsys.readouterr()
    assert rc == 0
    assert re.search(r"^fused\s+\d+\.\d", out, re.M) and "chance (top-1): 25.0%" in out
    assert "dashboard" not in out  # nothing left to compute: no cluster was started
    m = json.loads((tmp_path / "rep" / "metrics.json").read_text())
    assert m == json.loads(json.dumps(first.metrics))
    rc = cli.main(["evaluate", str(cfg), "--store", exp.store.url, "--report", str(tmp_path / "rep2")])
    out, _ = capsys.readouterr()
    assert rc == 0 and "fused" in out and (tmp_path / "rep2" / "index.html").is_file()


def test_predict_known_training_images(trained, image_folder):
    exp, _ = trained
    from lsic.workflows.store import FeatureStore

    store = FeatureStore.open(exp.store.url)
    paths = [p.removeprefix("file://") for p in store.locators(slice(None))[0]]
    names, labels = store.class_names, store.labels()
    train_rows = store.split_rows("train", valid_only=False)[:6]
    preds = predict_images(exp.store.url, [paths[i] for i in train_rows])
    got = [p.classes[0][0] for p in preds]
    want = [names[labels[i]] for i in train_rows]
    assert sum(a == b for a, b in zip(got, want)) >= 5
    assert all(len(p.classes) == 4 for p in preds)  # 4 classes < top 5
    assert all(p.classes[0][1] >= p.classes[1][1] for p in preds)


def test_predict_command_bad_image_and_folder(trained, image_folder, tmp_path, capsys):
    exp, _ = trained
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"not an image at all")
    good = sorted((image_folder / "rings").iterdir())[0]
    rc = cli.main(["predict", exp.store.url, str(bad), str(good), str(tmp_path / "missing.png")])
    out, err = capsys.readouterr()
    assert rc == 1
    err_lines = [line for line in err.splitlines() if line.startswith("lsic: error:")]
    assert len(err_lines) == 2 and "broken.jpg" in err_lines[0] and "missing.png" in err_lines[1]
    assert f"{good}:" in out
    assert re.search(r"^\s+1\. rings\s", out, re.M)
    # a folder expands to its images
    rc = cli.main(["predict", exp.store.url, str(image_folder / "checks"), "--top-k", "2"])
    out, err = capsys.readouterr()
    assert rc == 0 and out.count("  1. ") == 10 and "  3. " not in out and "  2. " in out and not err
    # the old spelling still works, with one warning line
    rc = cli.main(["predict", exp.store.url, str(image_folder / "checks"), "--top", "2"])
    old_out, err = capsys.readouterr()
    assert rc == 0 and old_out == out and err == "lsic: warning: --top is deprecated; use --top-k\n"


def test_report_command(trained, tmp_path, capsys):
    exp, _ = trained
    rc = cli.main(["report", exp.store.url, "--report", str(tmp_path / "rep")])
    assert rc == 0
    assert (tmp_path / "rep" / "index.html").is_file()
    with Image.open(tmp_path / "rep" / FIGURES["fig5"]) as im:
        im.verify()
    capsys.readouterr()
    # --out, the old name of --report, still works and warns once
    rc = cli.main(["report", exp.store.url, "--out", str(tmp_path / "old"), "--out", str(tmp_path / "old2")])
    out, err = capsys.readouterr()
    assert rc == 0 and (tmp_path / "old2" / "index.html").is_file() and str(tmp_path / "old2") in out
    assert err == "lsic: warning: --out is deprecated; use --report\n"


def test_predict_unevaluated_store_is_one_line_error(tmp_path, capsys):
    rc = cli.main(["predict", str(tmp_path / "nothing.zarr"), "x.jpg"])
    _, err = capsys.readouterr()
    assert rc == 2 and err.count("\n") == 1 and "lsic: error:" in err


@pytest.mark.slow
def test_demo(tmp_path, capsys):
    rc = cli.main(["demo", "--dir", str(tmp_path / "demo"), "--no-progress"])
    out, _ = capsys.readouterr()
    assert rc == 0
    m = json.loads((tmp_path / "demo" / "report" / "metrics.json").read_text())
    chance = 1 / 8
    assert m["fused"]["top1"] >= 4 * chance, out
    assert "vs chance 12.5%" in out and "dashboard" in out and "index.html" in out
    # the demo store serves predictions: a training image of a known class
    from lsic.workflows.store import FeatureStore

    store = FeatureStore.open(str(tmp_path / "demo" / "demo.zarr"))
    rows = store.split_rows("train", valid_only=False)[:8]
    paths = [p.removeprefix("file://") for p in store.locators(rows)[0]]
    preds = predict_images(str(tmp_path / "demo" / "demo.zarr"), paths)
    names, labels = store.class_names, store.labels()
    hits = sum(p.classes[0][0] == names[labels[i]] for p, i in zip(preds, rows))
    assert hits >= 6
