"""The report's image gallery: which test images fail, and what they are taken for.

For an evaluated store, :func:`write_gallery` writes ``gallery.html`` (and
``gallery-2.html``, ... when there are many classes) into the report folder:

* the most confused class pairs (true -> predicted, off the diagonal of the
  fused confusion matrix) with example images;
* per class, worst top-1 accuracy first, a few correctly classified test
  images and the misclassified ones, each a thumbnail with its top-5 fused
  predictions (the true class in bold).

The predictions are the fused test scores training left in the store
(``scores/<set>/test``, fused as the evaluation did), so nothing is
re-computed. Thumbnails (``thumbs/r<row>.jpg``, at most 96 px, JPEG) are made
from the images the store points to; one that cannot be read gets a note in
its place. At 1,000 classes the gallery keeps the ``max_classes`` worst
classes, ``per_page`` to a page, so each page stays a few hundred small
images.
"""

from __future__ import annotations

import html
import io
import logging
import os
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lsic.pipeline import TOP_K, top_k_predictions

from .datasets import read_images
from .results import load_fusion
from .store import FeatureStore

log = logging.getLogger(__name__)

THUMB_PX = 96
THUMB_DIR = "thumbs"


@dataclass(frozen=True)
class FusedTop:
    """The fused top-5 of every scored test row of a store.

    Attributes
    ----------
    rows : ndarray (n,) int64
        Store rows.
    labels : ndarray (n,) int64
        True class of each row.
    top : ndarray (n, k) int64
        Best classes, best first (k = min(5, n_classes)).
    scores : ndarray (n, k) float32
        Their fused scores.
    """

    rows: np.ndarray
    labels: np.ndarray
    top: np.ndarray
    scores: np.ndarray


def fused_test_top(store: FeatureStore, *, chunk_rows: int = 4096) -> FusedTop:
    """Read the stored test scores of ``store`` chunk by chunk and fuse them with the stored fusion."""
    fusion = load_fusion(store)
    rows = store.score_rows(fusion.names[0], "test")
    labels = store.labels().astype(np.int64)[rows]
    tops, scores = [], []
    for a in range(0, len(rows), chunk_rows):
        sl = slice(a, min(a + chunk_rows, len(rows)))
        s = fusion.transform({n: store.read_scores(n, "test", sl) for n in fusion.names})
        idx = top_k_predictions(s, TOP_K)
        tops.append(idx)
        scores.append(np.take_along_axis(s, idx, axis=1))
    k = min(TOP_K, store.n_classes)
    return FusedTop(
        rows, labels,
        np.concatenate(tops) if tops else np.zeros((0, k), np.int64),
        np.concatenate(scores) if scores else np.zeros((0, k), np.float32),
    )


def _thumbnail(data: bytes) -> bytes:
    from PIL import Image

    with Image.open(io.BytesIO(data)) as im:
        im.draft("RGB", (THUMB_PX, THUMB_PX))  # JPEG: decode at a reduced scale
        im = im.convert("RGB")
        im.thumbnail((THUMB_PX, THUMB_PX))
        buf = io.BytesIO()
        im.save(buf, format="JPEG", quality=80)
    return buf.getvalue()


def make_thumbnails(store: FeatureStore, rows: np.ndarray, folder: Path, storage_options: Mapping[str, Any] | None = None,
                    *, threads: int = 4) -> dict[int, str]:
    """Write ``folder/r<row>.jpg`` for each store row (kept when already there).

    Returns
    -------
    dict row -> why its thumbnail is missing (the image could not be read or decoded).
    """
    folder.mkdir(parents=True, exist_ok=True)
    todo = np.asarray([r for r in rows if not (folder / f"r{r}.jpg").exists()], np.int64)
    paths, offsets, sizes = store.locators(todo) if len(todo) else ([], np.zeros(0, np.int64), np.zeros(0, np.int64))
    missing: dict[int, str] = {}

    def work(lo: int, hi: int) -> dict[int, str]:
        out = {}
        for i, data in read_images(paths[lo:hi], offsets[lo:hi], sizes[lo:hi], dict(storage_options or {})):
            row = int(todo[lo + i])
            if isinstance(data, Exception):
                out[row] = f"not reachable ({type(data).__name__})"
                continue
            try:
                (folder / f"r{row}.jpg").write_bytes(_thumbnail(data))
            except Exception as exc:  # Pillow raises many types for undecodable input
                out[row] = f"not decodable ({type(exc).__name__})"
        return out

    step = max(1, -(-len(todo) // (threads * 4)))
    with ThreadPoolExecutor(threads) as pool:  # reading images is I/O: threads overlap the waits
        for part in pool.map(lambda a: work(a, min(a + step, len(todo))), range(0, len(todo), step)):
            missing.update(part)
    return missing


# --------------------------------------------------------------------------- selection


@dataclass(frozen=True)
class ClassEntry:
    """One class of the gallery: its test accuracy and the example rows shown."""

    index: int
    n_test: int
    n_correct: int
    correct: tuple[int, ...]  # positions into FusedTop
    wrong: tuple[int, ...]


def select(pred: FusedTop, n_classes: int, *, max_classes: int = 60, n_correct: int = 3,
           n_wrong: int = 12, n_pairs: int = 10, per_pair: int = 4) -> tuple[list[ClassEntry], list[tuple[int, int, list[int]]]]:
    """Classes (worst top-1 first, at most ``max_classes``) with examples, and the most confused pairs.

    Returns
    -------
    classes : list of ClassEntry
    pairs : list of (true class, predicted class, example positions), most frequent first
    """
    pred1 = pred.top[:, 0] if len(pred.top) else np.zeros(0, np.int64)
    hit = pred1 == pred.labels
    entries = []
    for c in range(n_classes):
        pos = np.flatnonzero(pred.labels == c)
        if not len(pos):
            continue
        good, bad = pos[hit[pos]], pos[~hit[pos]]
        entries.append(ClassEntry(c, len(pos), len(good), tuple(int(p) for p in good[:n_correct]),
                                  tuple(int(p) for p in bad[:n_wrong])))
    entries.sort(key=lambda e: (e.n_correct / e.n_test, e.index))
    conf = np.zeros((n_classes, n_classes), np.int64)
    np.add.at(conf, (pred.labels, pred1), 1)
    np.fill_diagonal(conf, 0)
    flat = np.argsort(-conf, axis=None, kind="stable")[:n_pairs]
    pairs = []
    for f in flat:
        t, p = divmod(int(f), n_classes)
        if conf[t, p] == 0:
            break
        ex = np.flatnonzero((pred.labels == t) & (pred1 == p))[:per_pair]
        pairs.append((t, p, [int(x) for x in ex]))
    return entries[:max_classes], pairs


# --------------------------------------------------------------------------- html


_STYLE = """body{font-family:sans-serif;max-width:75em;margin:2em auto;padding:0 1em}
.cls{margin:1.5em 0;border-top:1px solid #ccc}.row{display:flex;flex-wrap:wrap;gap:.5em}
figure{margin:0;width:150px;font-size:11px}figure img{display:block;max-width:96px;max-height:96px}
figure ol{margin:.2em 0;padding-left:1.4em}.ok{border:3px solid #2a2}.bad{border:3px solid #c22}
.miss{width:96px;height:64px;background:#eee;color:#666;display:flex;align-items:center;text-align:center}
nav{margin:1em 0}nav a{margin-right:.6em}"""


def _page_name(i: int) -> str:
    return "gallery.html" if i == 0 else f"gallery-{i + 1}.html"


def _card(pos: int, pred: FusedTop, names: list[str], missing: Mapping[int, str], ok: bool) -> str:
    row = int(pred.rows[pos])
    true = int(pred.labels[pos])
    items = "".join(
        f"<li>{'<b>' if int(c) == true else ''}{html.escape(names[int(c)])} ({s:+.2f}){'</b>' if int(c) == true else ''}</li>"
        for c, s in zip(pred.top[pos], pred.scores[pos]))
    if row in missing:
        pic = f'<div class="miss">{html.escape(missing[row])}</div>'
    else:
        pic = (f'<img src="{THUMB_DIR}/r{row}.jpg" class="{"ok" if ok else "bad"}" loading="lazy" '
               f'alt="test image {row}, true class {html.escape(names[true])}">')
    return f"<figure>{pic}<figcaption>true: {html.escape(names[true])}<ol>{items}</ol></figcaption></figure>"


def write_gallery(
    store: FeatureStore,
    out_dir: str | os.PathLike,
    *,
    storage_options: Mapping[str, Any] | None = None,
    max_classes: int = 60,
    per_page: int = 20,
) -> dict[str, Any]:
    """Write the gallery pages and thumbnails of the evaluated ``store`` into ``out_dir``.

    Parameters
    ----------
    store : FeatureStore
        An evaluated store (open for reading).
    storage_options : mapping, optional
        fsspec options for reading the images (default: the dataset's, from the store's config).
    max_classes : int
        Classes shown, worst top-1 first.
    per_page : int
        Classes per page.

    Returns
    -------
    dict with ``pages`` (paths), ``thumbnails`` (count written or kept), ``missing``
    (count not reachable), ``classes_shown``, ``classes_total``.
    """
    out = Path(out_dir)
    names = [str(c) for c in store.class_names]
    if storage_options is None:
        storage_options = (store.config.get("dataset") or {}).get("storage_options") or {}
    pred = fused_test_top(store)
    classes, pairs = select(pred, len(names), max_classes=max_classes)
    shown = sorted({p for e in classes for p in (*e.correct, *e.wrong)} | {p for _, _, ex in pairs for p in ex})
    missing = make_thumbnails(store, pred.rows[shown], out / THUMB_DIR, storage_options)
    n_pages = max(1, -(-len(classes) // per_page))
    n_total = len({int(c) for c in pred.labels})
    hit = pred.top[:, 0] == pred.labels if len(pred.top) else np.zeros(0, bool)
    pages = []
    for i in range(n_pages):
        nav = " ".join(f'<a href="{_page_name(j)}">{"<b>" if j == i else ""}page {j + 1}{"</b>" if j == i else ""}</a>'
                       for j in range(n_pages))
        body = ["<h1>Test images: what fails and what it is taken for</h1>",
                f'<p><a href="index.html">back to the report</a>. Fused top-1 on {len(pred.rows)} test images: '
                f"{100 * hit.mean() if len(hit) else float('nan'):.1f}%. Showing the {len(classes)} classes of {n_total} "
                f"with the lowest top-1 accuracy, {per_page} per page; per class up to 3 correctly classified "
                f"(green) and up to 12 misclassified (red) images with their top-5 fused scores (true class in bold)."
                + (f" {len(missing)} image(s) could not be read for a thumbnail and are shown as a note." if missing else "")
                + "</p>", f"<nav>{nav}</nav>"]
        if i == 0 and pairs:
            body.append("<h2>Most confused class pairs</h2>")
            for t, p, ex in pairs:
                n = int(((pred.labels == t) & (pred.top[:, 0] == p)).sum())
                cards = "".join(_card(x, pred, names, missing, False) for x in ex)
                body.append(f'<div class="cls"><h3>{html.escape(names[t])} taken for {html.escape(names[p])}: '
                            f'{n} image(s)</h3><div class="row">{cards}</div></div>')
        body.append("<h2>Classes, worst first</h2>" if i == 0 else "")
        for e in classes[i * per_page:(i + 1) * per_page]:
            n_bad = e.n_test - e.n_correct
            cards = "".join(_card(x, pred, names, missing, True) for x in e.correct)
            cards += "".join(_card(x, pred, names, missing, False) for x in e.wrong)
            more = f" (showing {len(e.wrong)})" if n_bad > len(e.wrong) else ""
            body.append(f'<div class="cls"><h3>{html.escape(names[e.index])}: top-1 {100 * e.n_correct / e.n_test:.0f}% '
                        f'({e.n_correct} of {e.n_test}), {n_bad} misclassified{more}</h3><div class="row">{cards}</div></div>')
        page = (f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>lsic gallery, page {i + 1}</title>'
                f"<style>{_STYLE}</style></head><body>\n" + "\n".join(body) + f"\n<nav>{nav}</nav></body></html>\n")
        path = out / _page_name(i)
        path.write_text(page)
        pages.append(path)
    log.info("gallery: %d page(s), %d thumbnails (%d not reachable)", len(pages), len(shown) - len(missing), len(missing))
    return {"pages": pages, "thumbnails": len(shown) - len(missing), "missing": len(missing),
            "classes_shown": len(classes), "classes_total": n_total}


def gallery_for_report(store: FeatureStore, out_dir: str | os.PathLike) -> dict[str, Any] | None:
    """The report's hook: write the gallery of ``store``; None (and a warning) when it cannot.

    A gallery must never cost the user the evaluation it illustrates.
    """
    try:
        return write_gallery(store, out_dir)
    except Exception as exc:
        log.warning("gallery: not written (%s: %s)", type(exc).__name__, exc)
        return None
