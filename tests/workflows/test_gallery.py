"""The report's gallery: thumbnails that exist, predictions that match the stored scores, large-class limits."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lsic.workflows.store import FeatureStore
from lsic.workflows.evaluate import load_fusion
from lsic.workflows.gallery import FusedTop, select, fused_test_top, write_gallery
from lsic.workflows.report import report_from_store


def test_report_gallery_lists_existing_thumbnails(trained_store):
    rep = Path(trained_store.report)
    index = (rep / "index.html").read_text()
    assert 'href="gallery.html"' in index
    page = (rep / "gallery.html").read_text()
    srcs = re.findall(r'<img src="([^"]+)"', page)
    assert srcs and all(s.startswith("thumbs/") and s.endswith(".jpg") for s in srcs)
    for s in set(srcs):
        with Image.open(rep / s) as im:
            assert im.format == "JPEG" and max(im.size) <= 96
    # every test image of a class is either counted correct or misclassified, and all 4 classes are shown
    assert len(re.findall(r'<div class="cls"><h3>[a-z]+: top-1', page)) == 4


def test_gallery_predictions_are_the_fused_stored_scores(trained_store):
    g = FeatureStore.open(trained_store.store.url)
    pred = fused_test_top(g, chunk_rows=5)  # several chunks
    fusion = load_fusion(g)
    s = fusion.transform({n: g.read_scores(n, "test") for n in fusion.names})
    np.testing.assert_array_equal(pred.rows, g.score_rows(fusion.names[0], "test"))
    np.testing.assert_array_equal(pred.top[:, 0], s.argmax(axis=1))
    np.testing.assert_array_equal(pred.scores[:, 0], s.max(axis=1))
    assert pred.top.shape == (len(pred.rows), 4)  # 4 classes: top-5 is top-4


def test_unreachable_images_get_a_note_not_a_crash(trained_store, tmp_path):
    # a copy of the store whose image paths point nowhere
    src = Path(trained_store.store.url)
    dst = tmp_path / "moved.zarr"
    shutil.copytree(src, dst)
    g = FeatureStore.open(str(dst), "a").group  # the test moves the images behind the store's back
    paths = g["paths"][...]
    g["paths"][...] = np.asarray([p.replace("/data/", "/gone/") for p in paths], dtype=str)
    files = report_from_store(str(dst), tmp_path / "rep")
    page = (tmp_path / "rep" / "gallery.html").read_text()
    assert "not reachable" in page and "<img src=" not in page
    assert "not reachable for a thumbnail" in files["index"].read_text()


def test_selection_at_many_classes_keeps_the_worst():
    rng = np.random.default_rng(0)
    n_classes, per = 1000, 5
    labels = np.repeat(np.arange(n_classes), per)
    top = np.stack([labels, (labels + 1) % n_classes, (labels + 2) % n_classes, (labels + 3) % n_classes,
                    (labels + 4) % n_classes], axis=1)
    wrong = rng.random(len(labels)) < np.repeat(np.linspace(0, 1, n_classes), per)  # class c wrong ~ c / 1000
    top[wrong, 0] = (labels[wrong] + 7) % n_classes
    pred = FusedTop(np.arange(len(labels)), labels, top, np.zeros(top.shape, np.float32))
    classes, pairs = select(pred, n_classes, max_classes=60)
    assert len(classes) == 60
    acc = [e.n_correct / e.n_test for e in classes]
    assert acc == sorted(acc)
    # naive reference: per-class accuracy, the 60 lowest
    ref = sorted(range(n_classes), key=lambda c: ((top[labels == c, 0] == c).mean(), c))[:60]
    assert [e.index for e in classes] == ref
    # the most confused pairs: naive count of (true, predicted) off the diagonal
    counts: dict[tuple[int, int], int] = {}
    for t, p in zip(labels, top[:, 0]):
        if t != p:
            counts[(t, p)] = counts.get((t, p), 0) + 1
    best = max(counts.values())
    assert pairs and counts[(pairs[0][0], pairs[0][1])] == best
    for t, p, ex in pairs:
        assert all(labels[x] == t and top[x, 0] == p for x in ex)


def test_gallery_pages_at_many_classes(trained_store, tmp_path):
    g = FeatureStore.open(trained_store.store.url)
    info = write_gallery(g, tmp_path, max_classes=3, per_page=2)
    assert [p.name for p in info["pages"]] == ["gallery.html", "gallery-2.html"]
    assert info["classes_shown"] == 3 and info["classes_total"] == 4
    for p in info["pages"]:
        for s in re.findall(r'<img src="([^"]+)"', p.read_text()):
            assert (tmp_path / s).is_file()
