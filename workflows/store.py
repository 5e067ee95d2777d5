"""The Zarr feature store, the contract between the stages: :class:`FeatureStore` is its door.

Extraction, training (and its actors), evaluation, prediction and the report
read and write the store only through an open :class:`FeatureStore`, opened
once at the command boundary and passed along; tasks on the workers receive
the same object (it pickles as its URL and reopens there). The layout
vocabulary (paths, split codes, row chunks, :data:`LAYOUT`) is in
:mod:`lsic.workflows._layout`, the Zarr plumbing and codecs in
:mod:`lsic.workflows._zarr_io`, the training checkpoints in
:mod:`lsic.workflows._checkpoints`; the names a user needs (``__all__``) are
importable from here.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import zarr

from lsic.pipeline import Codebook, FeatureSet, OneVsAllASGD, StoreError, __version__

from . import _zarr_io as zio
from ._checkpoints import Checkpoints
from ._layout import (EVALUATION, FAILURES, LAYOUT, SCORE_SPLITS, SPARSE_CODINGS, SPLIT_CODES, SPLITS, STAGE_ORDER,
                      TEST, TIMINGS, TRAIN, VAL, Manifest, chunk_bounds, chunks_with, codebook_path, features_path,
                      layout_table, model_path, n_chunks, part_path, parts_path, progress_path, score_path,
                      scores_path)
from ._records import plain, without_later_defaults
from ._zarr_io import COMPRESSOR, SPARSE_COMPRESSOR, ReadCounter

__all__ = ["FeatureStore", "ReadCounter", "LAYOUT", "layout_table", "TRAIN", "VAL", "TEST", "SPLITS",
           "SPLIT_CODES", "SCORE_SPLITS", "COMPRESSOR", "SPARSE_COMPRESSOR", "SPARSE_CODINGS"]


def _fs_attrs(fs: FeatureSet) -> dict[str, Any]:
    """``fs`` as stored in attributes; settings newer than a store are compared at their 0.1.0 value."""
    return without_later_defaults(plain(fs))


class FeatureStore:
    """An open feature store: the only reader and writer of the layout.

    Open one with :meth:`open`, or create one for extraction with :meth:`create`
    (:func:`lsic.workflows.testing.write_store` writes a complete synthetic one).
    ``group`` is the underlying ``zarr.Group`` (for inspection; stages go
    through the methods). A new array or group belongs in the layout: a path
    function and a :data:`LAYOUT` row in ``_layout.py``, and a method here for
    each stage that reads or writes it.

    Methods by part of the layout:

    - attributes and rows: ``attrs``, ``n_images``, ``chunk_rows``, ``class_names``,
      ``config``, ``run_id``, ``labels/split/valid(rows)``, ``locators(rows)``,
      ``split_rows``, ``split_bounds``, ``split_chunks``, ``chunk_bounds``, ``write_rows``
    - features and codebooks: ``has_features``, ``features``, ``read_chunk``,
      ``create_features``, ``feature_bytes``, ``has_codebook``, ``read_codebook``,
      ``write_codebook``
    - completion marks: ``done_chunks``, ``mark_chunk_done``, ``extract_complete``,
      ``mark_extract_complete``, ``require_extraction``, ``write_failures``
    - models: ``model_attrs``, ``init_models``, ``update_models``, ``history``,
      ``drop_models``, ``load_models``; the epoch checkpoints and final weights
      through ``checkpoints`` (:class:`~lsic.workflows._checkpoints.Checkpoints`)
    - scores: ``scored_sets``, ``require_scores``, ``scores_complete``, ``score_rows``, ``read_scores``,
      ``create_scores``, ``create_score_part``, ``reduce_score_rows``, ``finish_scores``
    - evaluation and timings: ``write_evaluation``, ``has_evaluation``,
      ``read_evaluation``, ``record_timing``, ``timings`` (read back whole by
      :func:`lsic.workflows.results.load_evaluation`)

    Parameters
    ----------
    group : zarr.Group
        The store's root group.
    url : str
        Its fsspec URL.
    storage_options : mapping, optional
        fsspec options for ``url``.
    read_only : bool
        Opened for reading only (a copy on a worker is opened so too).
    """

    def __init__(self, group: zarr.Group, url: str, storage_options: Mapping[str, Any] | None = None, *,
                 read_only: bool = False) -> None:
        self.group = group
        self.url = url
        self.storage_options = dict(storage_options or {})
        self.read_only = read_only
        self.checkpoints = Checkpoints(group, url)
        self._readers: dict[str, zarr.Array] = {}  # feature arrays opened by read_chunk

    # ------------------------------------------------------------------ opening

    @classmethod
    def open(cls, url: str, mode: str = "r", storage_options: Mapping[str, Any] | None = None, *,
             counter: ReadCounter | None = None) -> FeatureStore:
        """Open the store at ``url`` (any fsspec URL); ``counter`` counts the bytes its reads return.

        Raises
        ------
        StoreError
            No store at ``url``, or no fsspec backend for its protocol (one line, naming the fix).
        """
        return cls(zio.open_group(url, mode, storage_options, counter), url, storage_options,
                   read_only=mode == "r")

    def __reduce__(self) -> tuple[Any, ...]:
        # A store sent to a worker reopens there, never with a mode that could create or clear it.
        return (type(self).open, (self.url, "r" if self.read_only else "r+", self.storage_options))

    def __dask_tokenize__(self) -> Any:
        return (type(self).__name__, self.url, self.read_only, self.storage_options)

    @classmethod
    def exists(cls, url: str, storage_options: Mapping[str, Any] | None = None) -> bool:
        """Is there a store with complete metadata (its ``fingerprint``) at ``url``?"""
        try:
            return "fingerprint" in cls.open(url, "r", storage_options).attrs
        except StoreError:
            return False

    @classmethod
    def create(cls, url: str, *, config: Mapping[str, Any], fingerprint: str, manifest: Manifest,
               chunk_rows: int, seed: int, overwrite: bool = False,
               storage_options: Mapping[str, Any] | None = None) -> FeatureStore:
        """Create the store's metadata up front, or reopen it to resume.

        A store made from another configuration (different fingerprint) is refused
        unless ``overwrite``; one with the same fingerprint is reopened as it is,
        so a rerun continues where it stopped.
        """
        if cls.exists(url, storage_options):
            store = cls.open(url, "a", storage_options)
            if store.attrs.get("fingerprint") == fingerprint and not overwrite:
                if int(store.attrs.get("n_images", -1)) != len(manifest):
                    raise StoreError(
                        f"store {url!r} holds {store.attrs.get('n_images')} rows but the dataset now lists "
                        f"{len(manifest)}; the dataset changed, rerun with --overwrite"
                    )
                return store
            if not overwrite:
                raise StoreError(
                    f"store {url!r} was made from a different configuration; "
                    "use another --store or rerun with --overwrite to replace it"
                )
        store = cls.open(url, "w", storage_options)
        g = store.group
        n = len(manifest)
        rows = (min(chunk_rows, max(n, 1)),)
        for key, data in (("paths", np.asarray(manifest.paths, dtype=str)),
                          ("offsets", np.asarray(manifest.offsets, np.int64)),
                          ("sizes", np.asarray(manifest.sizes, np.int64)),
                          ("labels", np.asarray(manifest.labels, np.int32)),
                          ("split", np.asarray(manifest.split, np.int8))):
            zio.write_array(g, key, data, chunks=rows, compressors=None if data.dtype.kind == "U" else zio.COMPRESSOR,
                            dims=("image",))
        # valid/errors are written per row chunk by the extraction tasks.
        zio.create_array(g, "valid", shape=(n,), chunks=rows, dtype=bool, fill_value=False, dims=("image",))
        zio.create_array(g, "errors", shape=(n,), chunks=rows, dtype=str, compressors="auto", dims=("image",))
        g.require_group("features")
        g.require_group("codebooks")
        zio.create_array(g.require_group("progress"), "extract", shape=(n_chunks(n, chunk_rows),), chunks=(1,),
                         dtype=bool, fill_value=False, compressors="auto", dims=("chunk",))
        g.attrs.update(
            {
                "lsic_version": __version__,
                "config": dict(config),
                "class_names": list(manifest.class_names),
                "split_names": list(SPLITS),
                "chunk_rows": int(chunk_rows),
                "seed": int(seed),
                "n_images": int(n),
                "complete_extract": False,
                "run_id": uuid.uuid4().hex,  # keys worker-side caches of this store's codebooks
                # written last: its presence marks the metadata as complete
                "fingerprint": fingerprint,
            }
        )
        return store

    # ------------------------------------------------------------------ attributes and rows

    @property
    def attrs(self) -> Any:
        """The root attributes (see the layout)."""
        return self.group.attrs

    @property
    def n_images(self) -> int:
        return int(self.attrs["n_images"])

    @property
    def chunk_rows(self) -> int:
        return int(self.attrs["chunk_rows"])

    @property
    def class_names(self) -> list[str]:
        return list(self.attrs["class_names"])

    @property
    def n_classes(self) -> int:
        return len(self.attrs["class_names"])

    @property
    def fingerprint(self) -> str | None:
        return self.attrs.get("fingerprint")

    @property
    def run_id(self) -> str | None:
        """The id of this extraction run (the fingerprint for stores that predate it)."""
        return self.attrs.get("run_id", self.attrs.get("fingerprint"))

    @property
    def config(self) -> dict[str, Any]:
        return dict(self.attrs.get("config") or {})

    @property
    def extract_complete(self) -> bool:
        return bool(self.attrs.get("complete_extract", False))

    def mark_extract_complete(self) -> None:
        self.attrs["complete_extract"] = True

    def require_extraction(self) -> None:
        """Raise a one-line :class:`StoreError` naming ``lsic extract`` unless extraction is complete."""
        if not self.extract_complete:
            raise StoreError(f"store {self.url!r} is not completely extracted; run `lsic extract` (it resumes) first")

    def labels(self, rows: slice | np.ndarray = slice(None)) -> np.ndarray:
        """Class index of ``rows`` (int32)."""
        return np.asarray(self._rows("labels", rows))

    def split(self, rows: slice | np.ndarray = slice(None)) -> np.ndarray:
        """Split code of ``rows`` (int8; :data:`TRAIN`, :data:`VAL`, :data:`TEST`)."""
        return np.asarray(self._rows("split", rows))

    def valid(self, rows: slice | np.ndarray = slice(None)) -> np.ndarray:
        """Decodable rows among ``rows`` (bool)."""
        return np.asarray(self._rows("valid", rows), bool)

    def locators(self, rows: slice | np.ndarray) -> tuple[list[str], np.ndarray, np.ndarray]:
        """``(paths, offsets, sizes)`` of ``rows``: where to read their images."""
        return ([str(p) for p in self._rows("paths", rows)], np.asarray(self._rows("offsets", rows)),
                np.asarray(self._rows("sizes", rows)))

    def _rows(self, name: str, rows: slice | np.ndarray) -> Any:
        arr = self.group[name]
        return arr[rows] if isinstance(rows, slice) else arr.oindex[np.asarray(rows)]

    def write_rows(self, start: int, stop: int, valid: np.ndarray, errors: np.ndarray) -> None:
        """Write the ``valid`` flags and ``errors`` of rows ``[start, stop)`` (one row chunk)."""
        self.group["valid"][start:stop] = np.asarray(valid, bool)
        self.group["errors"][start:stop] = np.asarray(errors, dtype=str)

    def split_rows(self, split: str, *, valid_only: bool = True) -> np.ndarray:
        """Store rows of ``split`` (int64), by default only the valid ones."""
        mask = self.split() == SPLIT_CODES[split]
        if valid_only:
            mask &= self.valid()
        return np.flatnonzero(mask).astype(np.int64)

    def split_bounds(self, split: str) -> tuple[int, int]:
        """Store rows ``[a, b)`` of ``split`` (contiguous: rows are ordered train, val, test)."""
        rows = np.flatnonzero(self.split() == SPLIT_CODES[split])
        return (int(rows[0]), int(rows[-1]) + 1) if rows.size else (0, 0)

    def split_chunks(self, split: str) -> list[int]:
        """Row chunks holding at least one valid row of ``split``."""
        return chunks_with((self.split() == SPLIT_CODES[split]) & self.valid(), self.chunk_rows)

    def chunk_bounds(self, k: int) -> tuple[int, int]:
        """Rows ``[a, b)`` of row chunk ``k`` of this store."""
        return chunk_bounds(k, self.chunk_rows, self.n_images)

    @property
    def n_chunks(self) -> int:
        return n_chunks(self.n_images, self.chunk_rows)

    # ------------------------------------------------------------------ features and codebooks

    def has_features(self, name: str) -> bool:
        return f"{features_path(name)}/X" in self.group

    def features(self, name: str) -> zarr.Array:
        """The (n, dim) float32 ``features/<name>/X`` array (sliced lazily)."""
        if not self.has_features(name):
            raise StoreError(f"store has no features of set {name!r}; run `lsic extract` with this config first")
        return self.group[f"{features_path(name)}/X"]

    def read_chunk(self, name: str, k: int, out: np.ndarray | None = None) -> np.ndarray:
        """Rows of row chunk ``k`` of ``features/<name>/X``: a (b - a, dim) float32 array.

        Decoded into ``out`` when it is a large enough C-contiguous float32
        buffer (see :func:`lsic.workflows._zarr_io.read_chunk`). The array
        handle is opened once per set (no metadata request per chunk on an
        object store).
        """
        arr = self._readers.get(name)
        if arr is None:
            arr = self._readers[name] = self.features(name)
        return zio.read_chunk(arr, *self.chunk_bounds(k), out=out)

    def create_features(self, name: str, dim: int, feature_set: FeatureSet | None = None, *,
                        sparse: bool | None = None) -> zarr.Array:
        """The ``features/<name>/X`` array, created (zeros, one chunk per row chunk) on first use.

        ``sparse`` (default: the set's coding is sparse, LCC) picks the sparse compressor.
        """
        grp = self.group.require_group(features_path(name))
        if "X" in grp:
            return grp["X"]
        n = self.n_images
        if sparse is None:
            sparse = feature_set is not None and feature_set.coding in SPARSE_CODINGS
        arr = zio.create_array(grp, "X", shape=(n, dim), chunks=(min(self.chunk_rows, max(n, 1)), dim),
                               dtype="float32", fill_value=0.0,
                               compressors=zio.SPARSE_COMPRESSOR if sparse else zio.COMPRESSOR,
                               dims=("image", f"{name}_feature"))
        if feature_set is not None:
            grp.attrs["feature_set"] = _fs_attrs(feature_set)
        return arr

    def feature_bytes(self, name: str) -> int:
        """Compressed bytes of a set's features (-1 when the backend cannot list sizes cheaply)."""
        try:
            return int(self.features(name).nbytes_stored())
        except Exception:  # noqa: BLE001 - a size is a nicety, never a failure
            return -1

    def has_codebook(self, fs: FeatureSet) -> bool:
        """Is a complete codebook of exactly this feature set stored?"""
        path = codebook_path(fs.name)
        if path not in self.group:
            return False
        attrs = self.group[path].attrs
        return bool(attrs.get("complete")) and without_later_defaults(attrs.get("feature_set") or {}) == _fs_attrs(fs)

    def write_codebook(self, fs: FeatureSet, codebook: Codebook) -> None:
        grp = self.group.require_group(codebook_path(fs.name))
        grp.attrs["complete"] = False
        for key, value in codebook.to_arrays().items():
            value = np.asarray(value)
            zio.write_array(grp, key, value, dims=tuple(f"{key}_{i}" for i in range(value.ndim)))
        grp.attrs.update({"feature_set": _fs_attrs(fs), "complete": True})

    def read_codebook(self, fs: FeatureSet) -> Codebook:
        if not self.has_codebook(fs):
            raise StoreError(f"store has no complete codebook for feature set {fs.name!r}; rerun `lsic extract`")
        grp = self.group[codebook_path(fs.name)]
        return Codebook.from_arrays({k: grp[k][...] for k in grp.array_keys()}, fs)

    # ------------------------------------------------------------------ progress and failures

    def done_chunks(self, stage: str = "extract") -> np.ndarray:
        """The completion mark of every row chunk of ``stage`` (bool, (n_chunks,))."""
        return np.asarray(self.group[progress_path(stage)][...], dtype=bool)

    def mark_chunk_done(self, k: int, stage: str = "extract") -> None:
        self.group[progress_path(stage)][k] = True

    def write_failures(self) -> list[dict[str, Any]]:
        """Rewrite ``failures.json`` from the ``valid``/``errors`` arrays; returns its records."""
        bad = np.flatnonzero(~self.valid())
        records: list[dict[str, Any]] = []
        if bad.size:
            paths = self.group["paths"][...]
            errors = self.group["errors"][...]
            records = [{"row": int(i), "path": str(paths[i]), "error": str(errors[i])} for i in bad]
        zio.write_json(self.url, FAILURES, records, self.storage_options)
        return records

    # ------------------------------------------------------------------ models

    def model_attrs(self, name: str) -> Mapping[str, Any] | None:
        """Attributes of ``models/<name>`` (None before training it)."""
        path = model_path(name)
        return self.group[path].attrs if path in self.group else None

    def init_models(self, name: str, attrs: Mapping[str, Any]) -> None:
        """Create ``models/<name>`` with ``attrs`` unless it already records its settings."""
        grp = self.group.require_group(model_path(name))
        if "settings" not in grp.attrs:
            grp.attrs.update(dict(attrs))

    def update_models(self, name: str, **attrs: Any) -> None:
        self.group[model_path(name)].attrs.update(attrs)

    def history(self, name: str) -> list[dict[str, Any]]:
        """Per-epoch records of set ``name`` (``{"epoch", "val_top1", ...}``), empty before training."""
        attrs = self.model_attrs(name)
        return list(attrs.get("history") or []) if attrs is not None else []

    def drop_models(self, name: str) -> None:
        """Remove the models and scores of set ``name`` (training from scratch)."""
        for path in (model_path(name), scores_path(name)):
            zio.remove(self.group, path)

    def load_models(self, name: str, *, variant: str = "asgd", epoch: int | None = None) -> OneVsAllASGD:
        """The trained one-vs-all models of set ``name`` (all classes, full ASGD state); last epoch by default."""
        return self.checkpoints.load_models(name, variant=variant, epoch=epoch)

    # ------------------------------------------------------------------ scores

    def scored_sets(self, names: Sequence[str] | None = None) -> list[str]:
        """Sets with stored scores, in the order of ``names`` when given (else sorted)."""
        if "scores" not in self.group:
            return []
        have = list(self.group["scores"].group_keys())
        return [n for n in names if n in have] if names is not None else sorted(have)

    def require_scores(self, names: Sequence[str] | None = None) -> list[str]:
        """The sets of ``names`` (default: all) with stored scores, as :meth:`scored_sets`.

        Raises
        ------
        StoreError
            None has scores: one line naming the command to run first, ``lsic
            extract`` when extraction is what is missing, else ``lsic train``.
        """
        self.require_extraction()
        have = self.scored_sets(names)
        if not have and names is not None:
            raise StoreError(f"store {self.url!r} has no SVM scores for {list(names)}; run `lsic train` first")
        if not have:
            raise StoreError(f"store {self.url!r} has no SVM scores; run `lsic train` first")
        return have

    def scores_complete(self, name: str, split: str, epoch: int) -> bool:
        """Are the scores of ``split`` complete and made by the models of ``epoch``?"""
        path = score_path(name, split)
        attrs = self.group[path].attrs if path in self.group else {}
        return bool(attrs.get("complete")) and attrs.get("epoch") == epoch

    def create_score_part(self, name: str, split: str, lo: int, hi: int, n_rows: int) -> zarr.Array:
        """An actor's (n_rows, hi - lo) float32 block of scores of ``split``, filled chunk by chunk."""
        return zio.create_array(self.group, part_path(name, split, lo, hi), shape=(n_rows, hi - lo),
                                chunks=(max(min(self.chunk_rows, n_rows), 1), hi - lo), dtype="float32",
                                fill_value=np.nan, overwrite=True)

    def drop_score_parts(self, name: str, split: str) -> None:
        zio.remove(self.group, parts_path(name, split))

    def create_scores(self, name: str, split: str, rows: np.ndarray, n_classes: int) -> zarr.Array:
        """Create ``scores/<name>/<split>`` (len(rows), n_classes) and write its ``rows`` index."""
        rows = np.asarray(rows, np.int64)
        sg = self.group.require_group(scores_path(name))
        out = zio.create_array(sg, split, shape=(rows.size, n_classes),
                               chunks=(max(min(self.chunk_rows, rows.size), 1), n_classes), dtype="float32",
                               dims=(f"{split}_row", "class"), overwrite=True)
        zio.write_array(sg, f"{split}_rows", rows, chunks=(max(rows.size, 1),), compressors="auto",
                        dims=(f"{split}_row",))
        return out

    def finish_scores(self, name: str, split: str, epoch: int) -> None:
        """Mark ``scores/<name>/<split>`` complete (last) as made by the models of ``epoch``."""
        self.group[score_path(name, split)].attrs.update(
            {"complete": True, "epoch": int(epoch), "class_names": self.class_names})

    def reduce_score_rows(self, name: str, split: str, blocks: Sequence[tuple[int, int]], a: int, b: int) -> int:
        """Rows ``a:b`` of every class block's part, side by side, into ``scores/<name>/<split>`` (a worker task)."""
        parts = [np.asarray(self.group[part_path(name, split, lo, hi)][a:b]) for lo, hi in blocks]
        self.group[score_path(name, split)][a:b] = np.concatenate(parts, axis=1)
        return b - a

    def score_rows(self, name: str, split: str) -> np.ndarray | None:
        """Store rows covered by ``scores/<name>/<split>`` (None when that split has no scores)."""
        grp = self.group[scores_path(name)]
        if split not in grp:
            return None
        return np.asarray(grp[f"{split}_rows"][...], dtype=np.int64)

    def read_scores(self, name: str, split: str, sl: slice = slice(None)) -> np.ndarray:
        """``scores/<name>/<split>[sl]`` as float32 (n, n_classes)."""
        return np.asarray(self.group[score_path(name, split)][sl], dtype=np.float32)

    # ------------------------------------------------------------------ evaluation and timings

    def write_evaluation(self, attrs: Mapping[str, Any], arrays: Mapping[str, Mapping[str, np.ndarray]]) -> None:
        """Write ``evaluation/<source>/<key>`` arrays, then the group's ``attrs`` with ``complete`` last."""
        grp = self.group.require_group(EVALUATION)
        grp.attrs["complete"] = False
        for src, d in arrays.items():
            sub = grp.require_group(src)
            for key, data in d.items():
                data = np.asarray(data)
                zio.write_array(sub, key, data,
                                dims=("true_class", "predicted_class") if data.ndim == 2 else ("class",))
        grp.attrs.update({**dict(attrs), "sources": list(arrays), "complete": True})

    def has_evaluation(self) -> bool:
        return EVALUATION in self.group and bool(self.group[EVALUATION].attrs.get("complete"))

    def read_evaluation(self) -> tuple[dict[str, Any], dict[str, dict[str, np.ndarray]]]:
        """``(attrs, {source: {key: array}})`` of the last complete evaluation."""
        if not self.has_evaluation():
            self.require_scores()  # names the stage that is missing when it is not evaluation
            raise StoreError(f"store {self.url!r} has not been evaluated; run `lsic evaluate CONFIG` or `lsic run CONFIG` first")
        grp = self.group[EVALUATION]
        attrs = dict(grp.attrs)
        arrays = {src: {k: np.asarray(grp[src][k][...]) for k in grp[src].array_keys()}
                  for src in attrs.get("sources", [])}
        return attrs, arrays

    def record_timing(self, stage: str, seconds: float) -> None:
        """Remember a stage's wall-clock time (``timings`` attrs), for the report."""
        self.group.require_group(TIMINGS).attrs[stage] = round(float(seconds), 3)

    def timings(self) -> dict[str, float]:
        """Recorded stage times, in stage order."""
        if TIMINGS not in self.group:
            return {}
        t = {k: float(v) for k, v in self.group[TIMINGS].attrs.items()}
        rank = {s: i for i, s in enumerate(STAGE_ORDER)}
        return {k: t[k] for k in sorted(t, key=lambda k: (rank.get(k, len(rank)), k))}
