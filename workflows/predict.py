"""Classify new images with a trained, evaluated store or a model file (``lsic predict MODEL_OR_STORE IMAGE...``).

Everything comes from the store: the experiment config (descriptor grid and
feature sets), the codebooks, the one-vs-all models (``models/<set>/coef``,
``intercept``: the averaged weights of the last epoch) and the fusion
(weights and standardisation chosen by the evaluation, paper §5.2). Each image
goes through the same path as extraction (:func:`lsic.pipeline.image_features`),
is scored by every set's SVMs, and the fused scores rank the classes.

An image that cannot be read or decoded gets an error record (one line) and
the others are still classified. Runs in the calling process: a handful of
images needs no cluster (a whole collection goes through
:mod:`lsic.workflows.batch_predict` on the cluster).
"""

from __future__ import annotations

import logging
import posixpath
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import fsspec

from lsic.pipeline import LsicError

from .model import check_top_k, load_model, top_k_indices

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".gif", ".bmp", ".tif", ".tiff", ".webp", ".pgm", ".ppm")


@dataclass
class Prediction:
    """The top classes of one image, or why it could not be classified.

    Attributes
    ----------
    image : str
    classes : list of (class name, fused score), best first
    error : str or None
    """

    image: str
    classes: list[tuple[str, float]] = field(default_factory=list)
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    def lines(self) -> list[str]:
        if not self.ok:
            return [f"{self.image}: error: {self.error}"]
        out = [f"{self.image}:"]
        out += [f"  {i + 1}. {name:<30s} {score:+.3f}" for i, (name, score) in enumerate(self.classes)]
        return out


def expand_inputs(items: Iterable[str]) -> list[str]:
    """Image paths/URLs; a folder expands to the image files under it (sorted)."""
    out: list[str] = []
    for item in items:
        try:
            fs, path = fsspec.core.url_to_fs(item)
            is_dir = fs.isdir(path)
        except Exception:  # an unknown protocol etc.: let reading report it per image
            is_dir = False
        if is_dir:
            found = sorted(p for p in fs.find(path) if p.lower().endswith(IMAGE_EXTENSIONS)
                           and not posixpath.basename(p).startswith("."))
            out.extend(item.rstrip("/") + p[len(path.rstrip("/")):] if "://" in item else p for p in found)
        else:
            out.append(item)
    return out


def predict_images(
    url: str,
    images: Sequence[str],
    *,
    top_k: int = 5,
    storage_options: Mapping[str, Any] | None = None,
    top: int | None = None,
) -> list[Prediction]:
    """Classify images (paths, URLs or folders) with a model file or the store at ``url``.

    Returns one :class:`Prediction` per image, in input order, with its
    ``top_k`` best classes (``lsic predict --top-k``; ``top`` is its deprecated
    spelling); unreadable or undecodable images carry an ``error`` instead of
    classes. The readable images are scored as one batch by
    :class:`lsic.workflows.model.LsicModel`. The store or model file is only read.
    """
    if top is not None:
        warnings.warn("predict_images(top=) is deprecated; use top_k=", FutureWarning, stacklevel=2)
        top_k = top
    top_k = check_top_k(top_k)
    model = load_model(url, storage_options=storage_options)
    out: list[Prediction] = []
    feats, ok = [], []
    for item in expand_inputs(images):
        try:
            with fsspec.open(item, "rb") as fh:
                data = fh.read()
        except (OSError, ValueError, ImportError) as exc:
            out.append(Prediction(item, error=f"cannot read ({exc.__class__.__name__}: {exc}); check the path or URL"))
            continue
        try:
            feats.append(model.features(data, name=item))
        except LsicError as exc:
            out.append(Prediction(item, error=str(exc)))
            continue
        ok.append(len(out))
        out.append(Prediction(item))
    if ok:
        s = model.scores_of_features(feats)
        for i, row, idx in zip(ok, s, top_k_indices(s, top_k)):
            out[i].classes = [(str(model.classes_[j]), float(row[j])) for j in idx]
    return out
