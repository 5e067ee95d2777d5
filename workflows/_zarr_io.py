"""The one door to Zarr and the store's bytes: opening, creating arrays, decoding chunks.

Every zarr store object of lsic is made by :func:`open_group` (a local folder
or any fsspec URL, optionally wrapped to count the bytes read), so every read
and write of the feature store's arrays passes through the store it returns;
the one plain file, ``failures.json``, is written by :func:`write_json`.
Arrays are created by :func:`create_array` with the store's codecs, and
training reads feature chunks by :func:`read_chunk`, which Blosc-decodes a
chunk straight into a caller's buffer. :class:`~lsic.workflows.store.FeatureStore`
and its checkpoints (:mod:`lsic.workflows._checkpoints`) are the only users
of this module (``tests/test_imports.py`` checks it).
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import AsyncGenerator, Iterable, Mapping, Sequence
from typing import Any

import fsspec
import numpy as np
import zarr
import zarr.codecs
from zarr.storage import FsspecStore, LocalStore, WrapperStore

from lsic.pipeline.errors import StoreError

COMPRESSOR = zarr.codecs.BloscCodec(cname="zstd", clevel=3, shuffle="shuffle")
"""Every array but sparse features: the byte shuffle groups the bytes of dense floats."""
SPARSE_COMPRESSOR = zarr.codecs.BloscCodec(cname="lz4hc", clevel=5, shuffle="noshuffle")
"""Features of sparse codings (LCC: mostly exact zeros). Without the byte shuffle a run of zeros stays
one run instead of four streams, so the chunks are smaller and decode faster; LZ4HC rather than zstd
because training decodes every chunk every epoch on the cores that train, and LZ4HC decodes these
mostly-literal floats several times faster for chunks a little larger (``docs/design/store.md``)."""

_MISSING = ("GroupNotFoundError", "NodeNotFoundError", "PathNotFoundError")


class ReadCounter:
    """Thread-safe count of bytes returned by a store's reads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.nbytes = 0

    def add(self, n: int) -> None:
        with self._lock:
            self.nbytes += n


class CountingStore(WrapperStore):
    """A zarr store wrapper counting the (compressed) bytes it reads."""

    def __init__(self, store: Any, counter: ReadCounter) -> None:
        super().__init__(store)
        self._counter = counter

    def _with_store(self, store: Any) -> CountingStore:
        return type(self)(store, self._counter)

    async def get(self, key, prototype, byte_range=None):  # type: ignore[no-untyped-def]
        buf = await self._store.get(key, prototype, byte_range)
        if buf is not None:
            self._counter.add(len(buf))
        return buf

    async def get_partial_values(self, prototype, key_ranges):  # type: ignore[no-untyped-def]
        out = await self._store.get_partial_values(prototype, key_ranges)
        self._counter.add(sum(len(b) for b in out if b is not None))
        return out

    async def _get_many(self, requests: Iterable[Any]) -> AsyncGenerator[tuple[str, Any], None]:
        async for key, buf in self._store._get_many(requests):
            if buf is not None:
                self._counter.add(len(buf))
            yield key, buf


def open_group(url: str, mode: str = "r", storage_options: Mapping[str, Any] | None = None,
               counter: ReadCounter | None = None) -> zarr.Group:
    """The root group of the store at ``url`` (a local path or any fsspec URL).

    Modes ``"r"`` and ``"r+"`` never create anything: a missing store is a
    :class:`StoreError` and leaves no trace (a writable local store would
    otherwise make its folder on opening).

    Raises
    ------
    StoreError
        No store at ``url`` (mode ``"r"``/``"r+"``), or no fsspec backend for its protocol.
    """
    read_only = mode == "r"
    try:
        if "://" in url and not url.startswith("file://"):
            store: Any = FsspecStore.from_url(url, storage_options=dict(storage_options or {}), read_only=read_only)
        else:
            path = url.removeprefix("file://")
            if mode == "r+" and not os.path.isdir(path):
                raise FileNotFoundError(path)
            store = LocalStore(path, read_only=read_only)
        if counter is not None:
            store = CountingStore(store, counter)
        return zarr.open_group(store=store, mode=mode)
    except (FileNotFoundError, KeyError):
        raise StoreError(f"no feature store at {url!r}; run `lsic extract` first, or check the store's URL") from None
    except Exception as exc:  # zarr raises several types for "not there"
        if type(exc).__name__ in _MISSING:
            raise StoreError(f"no feature store at {url!r}; run `lsic extract` first, or check the store's URL") from None
        if isinstance(exc, (ImportError, ValueError)):
            raise StoreError(f"cannot open store {url!r}: {exc}; install the fsspec backend for its URL") from None
        raise


def create_array(group: zarr.Group, path: str, *, shape: tuple[int, ...], dtype: Any, chunks: tuple[int, ...],
                 compressors: Any = COMPRESSOR, fill_value: Any = None, dims: Sequence[str] | None = None,
                 overwrite: bool = False) -> zarr.Array:
    """Create the array ``path`` under ``group``, Blosc-compressed with :data:`COMPRESSOR` by default.

    ``compressors`` is passed to zarr (:data:`SPARSE_COMPRESSOR`, ``None`` for
    raw chunks, ``"auto"`` for zarr's default); ``fill_value`` None keeps zarr's
    default; ``dims`` are the ``dimension_names`` xarray reads.
    """
    extra = {} if fill_value is None else {"fill_value": fill_value}
    return group.create_array(path, shape=shape, chunks=chunks, dtype=dtype, compressors=compressors,
                              dimension_names=None if dims is None else tuple(dims), overwrite=overwrite, **extra)


def write_array(group: zarr.Group, path: str, data: np.ndarray, *, chunks: tuple[int, ...] | None = None,
                compressors: Any = COMPRESSOR, dims: Sequence[str] | None = None) -> zarr.Array:
    """Create (replacing) ``path`` holding ``data``, in one chunk unless ``chunks`` is given."""
    arr = create_array(group, path, shape=data.shape, dtype=str if data.dtype.kind == "U" else data.dtype,
                       chunks=chunks or data.shape or None, compressors=compressors, dims=dims, overwrite=True)
    arr[...] = data
    return arr


def remove(group: zarr.Group, path: str) -> None:
    """Delete the node ``path`` of ``group`` if there is one."""
    if path in group:
        del group[path]


def write_json(url: str, name: str, obj: Any, storage_options: Mapping[str, Any] | None = None) -> None:
    """Write ``obj`` as the JSON file ``name`` beside the store's nodes."""
    with fsspec.open(url.rstrip("/") + "/" + name, "w", **dict(storage_options or {})) as fh:
        json.dump(obj, fh, indent=1)


def decode_chunk_into(arr: zarr.Array, index: tuple[int, int], out: np.ndarray) -> bool:
    """Blosc-decode chunk ``index`` of ``arr`` into ``out`` (of the chunk's shape); False: not that kind of array.

    That kind: little-endian float32, Blosc-compressed, chunks spanning the
    array's full width.

    Uses zarr's chunk keys and async store interface (``zarr.core``, stable
    through 3.x); anything unexpected returns False so that the caller reads
    through zarr instead.
    """
    try:
        from numcodecs import blosc
        from zarr.core.buffer import default_buffer_prototype
        from zarr.core.sync import sync

        md = arr.metadata
        codecs = tuple(getattr(md, "codecs", ()))
        if (len(codecs) != 2 or not isinstance(codecs[0], zarr.codecs.BytesCodec)
                or str(getattr(codecs[0].endian, "value", codecs[0].endian)) != "little"
                or not isinstance(codecs[1], zarr.codecs.BloscCodec) or arr.dtype != np.float32
                or arr.chunks[1] != arr.shape[1] or out.shape != tuple(arr.chunks)):
            return False
        raw = sync((arr.store_path / md.encode_chunk_key(index)).get(prototype=default_buffer_prototype()))
    except Exception:  # noqa: BLE001 - the zarr path below reads any array
        return False
    if raw is None:  # never written: the fill value
        out.fill(float(np.float32(arr.fill_value or 0)))
        return True
    blosc.decompress(raw.as_numpy_array(), out)
    return True


def read_chunk(arr: zarr.Array, a: int, b: int, out: np.ndarray | None = None) -> np.ndarray:
    """Rows ``a:b`` of a row-chunked 2-D float32 array, one whole chunk: a (b - a, dim) array.

    The chunk's stored bytes are Blosc-decoded straight into ``out`` (a
    C-contiguous float32 buffer of at least the chunk's size, reused by the
    caller across chunks), bypassing zarr's codec pipeline, whose fresh buffers,
    page faults and copies cost more than the decode itself on chunks of tens of
    megabytes, read every epoch. Arrays with other codecs or chunkings, and any
    zarr without the internals used here, take ``arr[a:b]``; the result is the same.
    """
    shape = tuple(arr.chunks)
    if out is None or out.dtype != np.float32 or not out.flags.c_contiguous or out.size < shape[0] * shape[1]:
        out = np.empty(shape, np.float32)
    buf = out.reshape(-1)[:shape[0] * shape[1]].reshape(shape)
    if decode_chunk_into(arr, (a // shape[0], 0), buf):
        return buf[:b - a]
    buf[:b - a] = arr[a:b]
    return buf[:b - a]
