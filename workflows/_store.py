"""The Zarr feature store: the contract between stages.

Layout (a Zarr v3 group at any fsspec URL; see the README)::

    attrs: lsic_version, fingerprint, config, class_names, chunk_rows, seed, n_images,
           split_names, complete_extract
    paths  (n,) str      image URL (tar://member::url for tar members)
    offsets, sizes (n,) int64   byte range of tar members, -1 otherwise
    labels (n,) int32    class index
    split  (n,) int8     0 train, 1 val, 2 test
    valid  (n,) bool     False for images that could not be decoded
    errors (n,) str      why a row is invalid ("" when valid)
    features/<set>/X (n, dim) float32, chunks (chunk_rows, dim), zstd + shuffle
    codebooks/<set>/{centers, pca_mean, pca_components}  attrs: feature_set, complete
    progress/extract (n_chunks,) bool, one Zarr chunk per row chunk: a row chunk's mark
    failures.json        the invalid rows (path, error), rewritten at the end of extraction

Rows are ordered train, then validation, then test. Every array has
``dimension_names`` so ``xarray.open_zarr`` reads it.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Mapping
from typing import Any

import fsspec
import numpy as np
import zarr
import zarr.codecs

from lsic.pipeline import Codebook, FeatureSet, StoreError, __version__

from .datasets import SPLITS, Manifest

log = logging.getLogger(__name__)

COMPRESSOR = zarr.codecs.BloscCodec(cname="zstd", clevel=3, shuffle="shuffle")


def _is_missing(exc: Exception) -> bool:
    return isinstance(exc, (FileNotFoundError, KeyError)) or type(exc).__name__ in (
        "GroupNotFoundError",
        "NodeNotFoundError",
        "PathNotFoundError",
    )


def open_store(url: str, mode: str = "r", storage_options: Mapping[str, Any] | None = None) -> zarr.Group:
    """Open the store's root group; a missing store in read mode is a one-line :class:`StoreError`."""
    kwargs: dict[str, Any] = {}
    if storage_options and "://" in url:
        kwargs["storage_options"] = dict(storage_options)
    try:
        return zarr.open_group(url, mode=mode, **kwargs)
    except Exception as exc:  # zarr raises several types for "not there"
        if mode == "r" and _is_missing(exc):
            raise StoreError(f"no feature store at {url!r}; run `lsic extract` first or check --store") from None
        if isinstance(exc, (ImportError, ValueError)):
            raise StoreError(f"cannot open store {url!r}: {exc}; install the fsspec backend for its URL") from None
        raise


def store_exists(url: str, storage_options: Mapping[str, Any] | None = None) -> bool:
    try:
        g = open_store(url, "r", storage_options)
    except StoreError:
        return False
    return "fingerprint" in g.attrs


def _array(g: zarr.Group, name: str, data: np.ndarray, chunks: tuple[int, ...], dims: tuple[str, ...]) -> None:
    arr = g.create_array(
        name,
        shape=data.shape,
        chunks=chunks,
        dtype=data.dtype if data.dtype.kind != "U" else str,
        compressors=COMPRESSOR if data.dtype.kind != "U" else None,
        dimension_names=dims,
        overwrite=True,
    )
    arr[...] = data


def create_store(
    url: str,
    *,
    config: dict[str, Any],
    fingerprint: str,
    manifest: Manifest,
    chunk_rows: int,
    seed: int,
    overwrite: bool = False,
    storage_options: Mapping[str, Any] | None = None,
) -> zarr.Group:
    """Create the store's metadata up front, or reopen it to resume.

    A store made from another configuration (different fingerprint) is refused
    unless ``overwrite``; one with the same fingerprint is reopened as it is,
    so a rerun continues where it stopped.
    """
    if store_exists(url, storage_options):
        g = open_store(url, "a", storage_options)
        if g.attrs.get("fingerprint") == fingerprint and not overwrite:
            if int(g.attrs.get("n_images", -1)) != len(manifest):
                raise StoreError(
                    f"store {url!r} holds {g.attrs.get('n_images')} rows but the dataset now lists "
                    f"{len(manifest)}; the dataset changed, rerun with --overwrite"
                )
            return g
        if not overwrite:
            raise StoreError(
                f"store {url!r} was made from a different configuration; "
                "use another --store or rerun with --overwrite to replace it"
            )
    g = open_store(url, "w", storage_options)
    n = len(manifest)
    rows = (min(chunk_rows, max(n, 1)),)
    _array(g, "paths", np.asarray(manifest.paths, dtype=str), rows, ("image",))
    _array(g, "offsets", manifest.offsets, rows, ("image",))
    _array(g, "sizes", manifest.sizes, rows, ("image",))
    _array(g, "labels", manifest.labels, rows, ("image",))
    _array(g, "split", manifest.split, rows, ("image",))
    # valid/errors are written per row chunk by the extraction tasks.
    g.create_array("valid", shape=(n,), chunks=rows, dtype=bool, fill_value=False,
                   compressors=COMPRESSOR, dimension_names=("image",))
    g.create_array("errors", shape=(n,), chunks=rows, dtype=str, dimension_names=("image",))
    g.require_group("features")
    g.require_group("codebooks")
    prog = g.require_group("progress")
    prog.create_array("extract", shape=(n_chunks(n, chunk_rows),), chunks=(1,), dtype=bool,
                      fill_value=False, dimension_names=("chunk",))
    g.attrs.update(
        {
            "lsic_version": __version__,
            "config": config,
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
    return g


def n_chunks(n: int, chunk_rows: int) -> int:
    return max((n + chunk_rows - 1) // chunk_rows, 1)


def feature_array(g: zarr.Group, fs: FeatureSet, n: int, chunk_rows: int) -> zarr.Array:
    """The ``features/<set>/X`` array, created on first use."""
    grp = g.require_group(f"features/{fs.name}")
    if "X" in grp:
        return grp["X"]
    arr = grp.create_array(
        "X",
        shape=(n, fs.dim),
        chunks=(min(chunk_rows, max(n, 1)), fs.dim),
        dtype="float32",
        fill_value=0.0,
        compressors=COMPRESSOR,
        dimension_names=("image", f"{fs.name}_feature"),
    )
    grp.attrs["feature_set"] = _fs_dict(fs)
    return arr


def _fs_dict(fs: FeatureSet) -> dict[str, Any]:
    import dataclasses

    return json.loads(json.dumps(dataclasses.asdict(fs), default=list))


# --------------------------------------------------------------------------- codebooks


def has_codebook(g: zarr.Group, fs: FeatureSet) -> bool:
    path = f"codebooks/{fs.name}"
    if path not in g:
        return False
    attrs = g[path].attrs
    return bool(attrs.get("complete")) and attrs.get("feature_set") == _fs_dict(fs)


def write_codebook(g: zarr.Group, fs: FeatureSet, codebook: Codebook) -> None:
    grp = g.require_group(f"codebooks/{fs.name}")
    grp.attrs["complete"] = False
    for key, value in codebook.to_arrays().items():
        value = np.asarray(value)
        dims = tuple(f"{key}_{i}" for i in range(value.ndim))
        arr = grp.create_array(key, shape=value.shape, dtype=value.dtype, chunks=value.shape or None,
                               compressors=COMPRESSOR, dimension_names=dims, overwrite=True)
        arr[...] = value
    grp.attrs.update({"feature_set": _fs_dict(fs), "complete": True})


def read_codebook(g: zarr.Group, fs: FeatureSet) -> Codebook:
    if not has_codebook(g, fs):
        raise StoreError(f"store has no complete codebook for feature set {fs.name!r}; rerun `lsic extract`")
    grp = g[f"codebooks/{fs.name}"]
    return Codebook.from_arrays({k: grp[k][...] for k in grp.array_keys()}, fs)


# --------------------------------------------------------------------------- progress and failures


def done_chunks(g: zarr.Group, stage: str = "extract") -> np.ndarray:
    return np.asarray(g[f"progress/{stage}"][...], dtype=bool)


def mark_chunk_done(g: zarr.Group, k: int, stage: str = "extract") -> None:
    g[f"progress/{stage}"][k] = True


def sibling_url(url: str, name: str) -> str:
    return url.rstrip("/") + "/" + name


def write_failures(url: str, g: zarr.Group, storage_options: Mapping[str, Any] | None = None) -> list[dict[str, str]]:
    """Rewrite ``failures.json`` from the ``valid``/``errors`` arrays; returns its records."""
    valid = np.asarray(g["valid"][...], dtype=bool)
    bad = np.flatnonzero(~valid)
    records: list[dict[str, str]] = []
    if bad.size:
        paths = g["paths"][...]
        errors = g["errors"][...]
        records = [{"row": int(i), "path": str(paths[i]), "error": str(errors[i])} for i in bad]
    with fsspec.open(sibling_url(url, "failures.json"), "w", **dict(storage_options or {})) as fh:
        json.dump(records, fh, indent=1)
    return records


def stored_bytes(arr: zarr.Array) -> int:
    try:
        return int(arr.nbytes_stored())
    except Exception:  # some stores cannot list sizes cheaply
        return -1
