"""A trained classifier in memory: ``load_model(path_or_url)`` and what it can do.

:class:`LsicModel` holds exactly what prediction needs (paper §3-§5): the
descriptor grid, the feature sets with their codebooks (and PCA), the
one-vs-all weights and intercepts of every set and the score fusion
(standardisation and weights, §5.2). It comes either from a model file
(:mod:`lsic.workflows.model_file`, ``lsic export``) or straight from an
evaluated store (:meth:`LsicModel.from_store`); both give bit-identical scores, because the arrays are the
same and the arithmetic below is the only scoring path (``lsic predict``, the
Python API and distributed batch prediction all use it).

Scoring a batch computes each image's pooled features (one image at a time,
as extraction does) and then one matrix product per feature set for the whole
batch: at 1,000 classes the weights of a set are far larger than the features,
so reading them once per batch instead of once per image is what keeps
prediction bound by the feature extraction.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Union

import fsspec
import numpy as np

from lsic.pipeline import (
    Codebook,
    ConfigError,
    DataError,
    DescriptorGrid,
    FeatureSet,
    ImageError,
    LsicError,
    ScoreFusion,
    image_features,
    top_k_predictions,
)

from . import model_file
from ._records import plain
from .config import experiment_from_store
from .results import load_fusion
from .store import FeatureStore

log = logging.getLogger(__name__)

#: What the API accepts as one image: a path or fsspec URL, encoded bytes, or a decoded array.
ImageInput = Union[str, bytes, bytearray, memoryview, np.ndarray]


@dataclass
class LsicModel:
    """A trained lsic classifier: features, one-vs-all SVMs per feature set and their fusion.

    Attributes
    ----------
    grid : DescriptorGrid
        How images are shrunk and where descriptors are sampled.
    feature_sets : tuple of FeatureSet
        The fused feature sets, in the fusion's order.
    codebooks : dict set name -> Codebook
        Codewords (and PCA) of every set.
    coef : dict set name -> ndarray (n_classes, dim) float32
        Averaged ASGD weights of the last epoch.
    intercept : dict set name -> ndarray (n_classes,) float32
    fusion : ScoreFusion
        Per-set standardisation and non-negative weights (paper §5.2).
    classes_ : ndarray (n_classes,) of str
        Class names; column ``j`` of every score matrix is ``classes_[j]``.
    meta : dict
        ``lsic_version``, ``store_fingerprint``, ``source`` (where it was loaded from).
    """

    grid: DescriptorGrid
    feature_sets: tuple[FeatureSet, ...]
    codebooks: dict[str, Codebook]
    coef: dict[str, np.ndarray]
    intercept: dict[str, np.ndarray]
    fusion: ScoreFusion
    classes_: np.ndarray
    meta: dict[str, Any] = field(default_factory=dict)

    # ------------------------------------------------------------------ construction

    @classmethod
    def from_store(cls, store: FeatureStore | str, *, storage_options: Mapping[str, Any] | None = None) -> LsicModel:
        """The model of an evaluated store (an open one, or its URL opened for reading).

        The descriptor grid and feature sets come from the config the store
        records, the codebooks and final weights of the fused sets from the
        store, the fusion from its last evaluation.
        """
        if not isinstance(store, FeatureStore):
            store = FeatureStore.open(store, "r", storage_options)
        exp = experiment_from_store(store)
        fusion = load_fusion(store)
        sets = tuple(exp.feature_set(n) for n in fusion.names)
        codebooks = {fs.name: store.read_codebook(fs) for fs in sets}
        weights = {fs.name: store.checkpoints.final_weights(fs.name) for fs in sets}
        return cls(
            grid=exp.images,
            feature_sets=sets,
            codebooks=codebooks,
            coef={name: w[0] for name, w in weights.items()},
            intercept={name: w[1] for name, w in weights.items()},
            fusion=fusion,
            classes_=np.asarray(store.class_names, dtype=str),
            meta={"lsic_version": store.attrs.get("lsic_version"), "store_fingerprint": store.fingerprint,
                  "source": store.url},
        )

    @classmethod
    def from_file(cls, url: str, *, storage_options: Mapping[str, Any] | None = None) -> LsicModel:
        """Load a model file (``lsic export``), checking its format version and every array's checksum.

        Raises
        ------
        ModelFileError
            Not a model file, a damaged one, or one from a newer lsic (one line naming the file and the fix).
        """
        return cls(**model_file.read_model(url, storage_options=storage_options))

    # ------------------------------------------------------------------ identity

    def arrays(self) -> dict[str, np.ndarray]:
        """Every array of the model by its name in the model file (``<set>/<array>``)."""
        out: dict[str, np.ndarray] = {}
        for fs in self.feature_sets:
            for key, value in self.codebooks[fs.name].to_arrays().items():
                out[f"{fs.name}/{key}"] = np.ascontiguousarray(value)
            out[f"{fs.name}/coef"] = np.ascontiguousarray(self.coef[fs.name], np.float32)
            out[f"{fs.name}/intercept"] = np.ascontiguousarray(self.intercept[fs.name], np.float32)
        return out

    def settings(self) -> dict[str, Any]:
        """Everything but the arrays, as JSON (the model file's manifest carries it)."""
        return {
            "grid": plain(self.grid),
            "feature_sets": [plain(fs) for fs in self.feature_sets],
            "fusion": self.fusion.to_dict(),
            "class_names": [str(c) for c in self.classes_],
        }

    @property
    def fingerprint(self) -> str:
        """sha256 over the settings and every array: equal for a store and the file exported from it.

        Computed once (hashing gigabytes of weights takes seconds); a model file carries it in its manifest.
        """
        if not self.meta.get("model_fingerprint"):
            self.meta["model_fingerprint"] = self._hash()
        return str(self.meta["model_fingerprint"])

    def _hash(self) -> str:
        h = hashlib.sha256(json.dumps(self.settings(), sort_keys=True).encode())
        for name, a in sorted(self.arrays().items()):
            h.update(name.encode())
            h.update(str(a.dtype).encode() + str(a.shape).encode())
            h.update(memoryview(np.ascontiguousarray(a)).cast("B"))
        return h.hexdigest()

    @property
    def n_classes(self) -> int:
        return len(self.classes_)

    # ------------------------------------------------------------------ scoring

    def features(self, data: bytes, *, name: str | None = None) -> dict[str, np.ndarray]:
        """Pooled features of one encoded image: set name -> (dim,) float32.

        Raises
        ------
        ImageError
            The image cannot be decoded.
        """
        return image_features(data, self.feature_sets, self.codebooks, self.grid, name=name)

    def scores_of_features(self, feats: Sequence[Mapping[str, np.ndarray]]) -> np.ndarray:
        """Fused scores of a batch of feature dicts: (n, n_classes) float32.

        ``sum_s w_s (X_s W_s^T + b_s - mu_s) / sigma_s`` with one matrix
        product per set for the whole batch.
        """
        if not feats:
            return np.zeros((0, self.n_classes), np.float32)
        per_set = {}
        for fs in self.feature_sets:
            X = np.stack([f[fs.name] for f in feats]).astype(np.float32, copy=False)
            per_set[fs.name] = (X @ self.coef[fs.name].T + self.intercept[fs.name][None, :]).astype(np.float32)
        return self.fusion.transform(per_set)

    def decision_function(self, images: ImageInput | Sequence[ImageInput]) -> np.ndarray:
        """Fused class scores of images: (n_images, n_classes) float32, columns in ``classes_`` order.

        Parameters
        ----------
        images : path/URL, bytes or array, or a sequence of them
            Arrays are decoded images, (H, W) or (H, W, 3|4), uint8 or float in [0, 1].

        Raises
        ------
        ImageError
            An image cannot be read or decoded (the message names it).
        """
        items = _as_list(images)
        feats = [self.features(_image_bytes(x), name=_name(x, i)) for i, x in enumerate(items)]
        return self.scores_of_features(feats)

    def top_k(self, images: ImageInput | Sequence[ImageInput], top_k: int = 5, *,
              k: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """The ``top_k`` best classes of each image and their fused scores, best first.

        Parameters
        ----------
        images : path/URL, bytes or array, or a sequence of them
        top_k : int, default 5
            Classes per image (``lsic predict --top-k``), at most the number of classes.
        k : int, optional
            Deprecated spelling of ``top_k``.

        Returns
        -------
        classes : ndarray (n_images, top_k) of str
        scores : ndarray (n_images, top_k) float32
        """
        if k is not None:
            warnings.warn("LsicModel.top_k(k=) is deprecated; use top_k=", FutureWarning, stacklevel=2)
            top_k = k
        top_k = check_top_k(top_k)
        s = self.decision_function(images)
        idx = top_k_indices(s, top_k)
        return self.classes_[idx], np.take_along_axis(s, idx, axis=1)

    def predict(self, images: ImageInput | Sequence[ImageInput]) -> np.ndarray:
        """The best class of each image: (n_images,) str."""
        return self.top_k(images, 1)[0][:, 0]

    def save(self, url: str, **kwargs: Any) -> str:
        """Write this model as a model file (see :func:`lsic.workflows.model_file.write_model`)."""
        return model_file.write_model(self, url, **kwargs)

    def __repr__(self) -> str:
        sets = ", ".join(fs.name for fs in self.feature_sets)
        return f"LsicModel({self.n_classes} classes, sets [{sets}], from {self.meta.get('source')!r})"


def check_top_k(top_k: Any) -> int:
    """``top_k`` (classes per image) as an int, or a one-line :class:`~lsic.pipeline.ConfigError`."""
    if isinstance(top_k, bool) or not isinstance(top_k, (int, np.integer)) or top_k < 1:
        raise ConfigError(f"top_k (--top-k) is {top_k!r}; give at least 1 class per image")
    return int(top_k)


def top_k_indices(scores: np.ndarray, k: int) -> np.ndarray:
    """Column indices of the ``k`` largest scores per row, best first (ties: lower index first)."""
    return top_k_predictions(scores, max(1, int(k)))


def _as_list(images: ImageInput | Sequence[ImageInput]) -> list[ImageInput]:
    if isinstance(images, (str, bytes, bytearray, memoryview)):
        return [images]
    if isinstance(images, np.ndarray) and images.dtype != object and images.ndim in (2, 3) and (
        images.ndim == 2 or images.shape[-1] in (3, 4)
    ):
        return [images]  # one decoded image, not a batch
    return list(images)


def _name(x: ImageInput, i: int) -> str:
    return x if isinstance(x, str) else f"<image {i}>"


def _image_bytes(x: ImageInput) -> bytes:
    """Encoded bytes of one input: read a path/URL, pass bytes, losslessly encode an array."""
    if isinstance(x, str):
        try:
            with fsspec.open(x, "rb") as fh:
                return fh.read()
        except (OSError, ValueError, ImportError) as exc:
            raise ImageError(f"image {x!r} cannot be read ({exc.__class__.__name__}: {exc}); check the path or URL") from None
    if isinstance(x, (bytes, bytearray, memoryview)):
        return bytes(x)
    if isinstance(x, np.ndarray):
        return _encode_array(x)
    raise ImageError(f"cannot classify a {type(x).__name__}: pass a path or URL, bytes, or a decoded image array")


def _encode_array(a: np.ndarray) -> bytes:
    """PNG (uint8) or float TIFF (grayscale float) bytes: lossless, so the array decodes to itself."""
    from PIL import Image

    if a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[2] not in (3, 4)):
        raise ImageError(f"an image array must be (H, W) or (H, W, 3|4), got shape {a.shape}")
    buf = io.BytesIO()
    if a.dtype == np.uint8:
        Image.fromarray(a).save(buf, format="PNG")
    elif a.dtype.kind == "f" and a.ndim == 2:
        Image.fromarray(np.clip(a, 0, 1).astype(np.float32), mode="F").save(buf, format="TIFF")
    elif a.dtype.kind == "f":
        Image.fromarray(np.round(np.clip(a, 0, 1) * 255).astype(np.uint8)).save(buf, format="PNG")
    else:
        raise ImageError(f"an image array must be uint8 or float in [0, 1], got dtype {a.dtype}")
    return buf.getvalue()


def _kind(url: str, storage_options: Mapping[str, Any] | None = None) -> str | None:
    """``"file"`` (a model file), ``"folder"`` (a store), None (nothing there) or ``"unknown"`` (no backend to ask)."""
    try:
        fs, path = fsspec.core.url_to_fs(url, **dict(storage_options or {}))
        return "file" if fs.isfile(path) else "folder" if fs.exists(path) else None
    except (ImportError, ValueError, OSError):
        return "unknown"  # opening it as a store names the backend to install


def export_model(store_url: str, url: str, *, storage_options: Mapping[str, Any] | None = None,
                 out_storage_options: Mapping[str, Any] | None = None) -> LsicModel:
    """``lsic export``: read what prediction needs from an evaluated store and write the model file."""
    model = LsicModel.from_store(store_url, storage_options=storage_options)
    model.save(url, storage_options=out_storage_options)
    return model


def load_model(path_or_url: str, *, storage_options: Mapping[str, Any] | None = None) -> LsicModel:
    """Load a classifier from a model file (``lsic export``) or an evaluated store.

    Parameters
    ----------
    path_or_url : str
        A model file or a store, at any fsspec URL.

    Returns
    -------
    LsicModel
        With ``predict``, ``decision_function``, ``top_k`` and ``classes_``.

    Raises
    ------
    DataError
        Nothing at ``path_or_url`` (one line; nothing is created there).
    ModelFileError
        A damaged model file or one written by a newer lsic (one line).
    StoreError
        A store that is not evaluated yet (naming the command to run first).
    """
    kind = _kind(path_or_url, storage_options)
    if kind == "file":
        return LsicModel.from_file(path_or_url, storage_options=storage_options)
    if kind is None:
        raise DataError(f"no model file or feature store at {path_or_url!r}; check the path "
                        "(`lsic export STORE MODEL` makes a model file of an evaluated store)")
    try:
        return LsicModel.from_store(path_or_url, storage_options=storage_options)
    except LsicError:
        raise
    except Exception as exc:  # zarr reports a non-store in several ways
        raise DataError(f"{path_or_url!r} is neither an lsic model file nor a feature store ({exc}); "
                        "check the path (make a model file with `lsic export STORE MODEL`)") from None
