"""Training I/O on the Zarr store: counted chunk reads, model checkpoints, score blocks.

Layout written by the training workflow (beside the extraction layout of ``_store.py``)::

    models/<set>/                       attrs: n_classes, n_features, params, history,
                                               epochs_complete (driver, after each epoch)
    models/<set>/<variant>/epoch_<e>/   the full ASGD state of every class after epoch e; variant
                                        "asgd" (the models) or "sgd" (plain SGD, compare_sgd)
                                        attrs: n_classes
        c<lo>_<hi>/                     one actor's class block, its own group:
            V, U   (K, d) float32       eqs. 8-9 state (U is (K, 0) without averaging)
            P      (K, 3) float64       scalars of the three-operation transform
            b, bbar (K,) float64        intercept and its average
            t      (K,) int64           steps taken (eq. 7)
            eta0, lam (K,) float64      (every per-class array of ``OneVsAllASGD.state_dict()``)
            attrs: lo, hi, scalar settings, complete (written last)
    models/<set>/coef (n_classes, d) float32, intercept (n_classes,) float32
                                        averaged weights of the last epoch (for evaluate/predict)
    scores/<set>/<split>      (n_rows, n_classes) float32  X @ W_bar.T + b_bar, valid rows of
                                                         the split in store row order
    scores/<set>/<split>_rows (n_rows,) int64              their row indices in the store
    scores/<set>/_parts/<split>/c<lo>_<hi>               an actor's class block before the reduce

Each actor writes its own block group, so actors never share a chunk or an
attribute file. An epoch of a set is complete when its complete blocks cover
every class, whatever the partition (a resumed run may use another actor
count): resuming is re-planning from the marks (DESIGN convention 8).
"""

from __future__ import annotations

import threading
from collections.abc import AsyncGenerator, Iterable, Mapping
from typing import Any

import numpy as np
import zarr
import zarr.codecs
from zarr.storage import FsspecStore, LocalStore, WrapperStore

from lsic.pipeline import OneVsAllASGD, StoreError

COMPRESSOR = zarr.codecs.BloscCodec(cname="zstd", clevel=3, shuffle="shuffle")
VARIANTS = ("asgd", "sgd")
CHECKPOINT_CHUNK_BYTES = 32 * 2**20


# --------------------------------------------------------------------------- counted store


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


def open_group(
    url: str,
    mode: str = "r",
    storage_options: Mapping[str, Any] | None = None,
    counter: ReadCounter | None = None,
) -> zarr.Group:
    """Open the store's root group at any fsspec URL, optionally counting bytes read.

    Raises
    ------
    StoreError
        No store at ``url`` (one line, naming it and the fix).
    """
    read_only = mode == "r"
    try:
        if "://" in url and not url.startswith("file://"):
            store: Any = FsspecStore.from_url(url, storage_options=dict(storage_options or {}), read_only=read_only)
        else:
            store = LocalStore(url.removeprefix("file://"), read_only=read_only)
        if counter is not None:
            store = CountingStore(store, counter)
        return zarr.open_group(store=store, mode=mode)
    except (FileNotFoundError, KeyError) as exc:
        raise StoreError(f"no feature store at {url!r} ({exc}); run `lsic extract` first or check --store") from None
    except Exception as exc:
        if type(exc).__name__ in ("GroupNotFoundError", "NodeNotFoundError", "PathNotFoundError"):
            raise StoreError(f"no feature store at {url!r}; run `lsic extract` first or check --store") from None
        raise


# --------------------------------------------------------------------------- row chunks


def chunk_bounds(k: int, chunk_rows: int, n: int) -> tuple[int, int]:
    """Rows ``[a, b)`` of row chunk ``k``."""
    return k * chunk_rows, min((k + 1) * chunk_rows, n)


def split_chunks(split: np.ndarray, valid: np.ndarray, chunk_rows: int, code: int) -> list[int]:
    """Row chunks holding at least one valid row of split ``code`` (0 train, 1 val, 2 test)."""
    hit = (np.asarray(split) == code) & np.asarray(valid, bool)
    n = hit.size
    n_chunks = max((n + chunk_rows - 1) // chunk_rows, 1)
    padded = np.zeros(n_chunks * chunk_rows, bool)
    padded[:n] = hit
    return [int(k) for k in np.flatnonzero(padded.reshape(n_chunks, chunk_rows).any(axis=1))]


# --------------------------------------------------------------------------- checkpoints


def model_settings(n_features: int, params: Mapping[str, Any]) -> dict[str, Any]:
    """The JSON settings a checkpoint must match to be resumed (training parameters and shape)."""
    return {"n_features": int(n_features), **{k: params[k] for k in sorted(params)}}


def epoch_path(name: str, variant: str, epoch: int) -> str:
    return f"models/{name}/{variant}/epoch_{epoch}"


def create_epoch(g: zarr.Group, name: str, variant: str, epoch: int, n_classes: int) -> None:
    """Create an epoch's checkpoint group (driver, before the actors write their blocks into it)."""
    path = epoch_path(name, variant, epoch)
    if path in g:
        del g[path]  # an unfinished attempt of this epoch
    g.require_group(path).attrs["n_classes"] = int(n_classes)


def _split_state(state: Mapping[str, np.ndarray]) -> tuple[list[str], list[str]]:
    """State keys of the model's scalar settings and of its per-class arrays (class axis first).

    Taken from ``state_dict()`` itself, so new solver state is checkpointed too.
    """
    scalars = [k for k, v in state.items() if np.ndim(v) == 0]
    per_class = [k for k, v in state.items() if np.ndim(v) > 0 and k != "classes"]
    return scalars, per_class


def _scalar(v: np.ndarray) -> Any:
    return np.asarray(v).item()


def write_block(g: zarr.Group, name: str, variant: str, epoch: int, model: OneVsAllASGD, lo: int) -> None:
    """Write ``model`` (classes ``lo .. lo + K``) as block ``c<lo>_<hi>`` of its epoch; ``complete`` last.

    Each actor writes its own block group, so actors never share a chunk or an
    attribute file, and a block is a few large chunks rather than one per class.
    """
    hi = lo + model.n_classes
    state = model.state_dict()
    scalars, per_class = _split_state(state)
    parent = g[epoch_path(name, variant, epoch)]
    key_b = f"c{lo}_{hi}"
    if key_b in parent:  # a lost actor's unfinished block of this epoch
        del parent[key_b]
    grp = parent.create_group(key_b, attributes={"complete": False})
    for key in per_class:
        value = np.asarray(state[key])
        row_bytes = max(int(np.prod(value.shape[1:])) * value.dtype.itemsize, 1)
        rows = max(1, min(value.shape[0], CHECKPOINT_CHUNK_BYTES // row_bytes))
        chunks = (rows, *(max(s, 1) for s in value.shape[1:]))
        arr = grp.create_array(key, shape=value.shape, chunks=chunks, dtype=value.dtype, fill_value=0,
                               compressors=COMPRESSOR)
        if value.size:
            arr[...] = value
    grp.attrs.update({"lo": lo, "hi": hi, "scalars": {k: _scalar(state[k]) for k in scalars},
                      "arrays": per_class, "complete": True})


def block_complete(g: zarr.Group, name: str, variant: str, epoch: int, lo: int, hi: int) -> bool:
    """Is block ``c<lo>_<hi>`` of an epoch complete? (Read by path: no listing, no stale listing cache.)"""
    try:
        return bool(g[f"{epoch_path(name, variant, epoch)}/c{lo}_{hi}"].attrs.get("complete"))
    except KeyError:
        return False


def _blocks(grp: zarr.Group) -> list[tuple[int, int, zarr.Group]]:
    """The complete class blocks of an epoch group, sorted by first class."""
    out = []
    for key in grp.group_keys():
        b = grp[key]
        if b.attrs.get("complete"):
            out.append((int(b.attrs["lo"]), int(b.attrs["hi"]), b))
    return sorted(out, key=lambda t: t[:2])


def _covers(blocks: list[tuple[int, int, Any]], lo: int, hi: int) -> bool:
    at = lo
    for a, b, _ in blocks:
        if a <= at < b:
            at = b
    return at >= hi


def read_block(g: zarr.Group, name: str, variant: str, epoch: int, lo: int, hi: int,
               n_threads: int | None = None) -> OneVsAllASGD:
    """Restore the models of classes ``lo:hi`` from an epoch checkpoint (any partition of its blocks)."""
    path = epoch_path(name, variant, epoch)
    if path not in g:
        raise StoreError(f"checkpoint {path} is missing from the store; rerun `lsic train` with --restart")
    blocks = [b for b in _blocks(g[path]) if b[0] < hi and b[1] > lo]
    if not _covers(blocks, lo, hi):
        raise StoreError(f"checkpoint {path} is incomplete for classes {lo}..{hi - 1}; rerun `lsic train`")
    first = blocks[0][2]
    d: dict[str, Any] = {k: np.asarray(v) for k, v in first.attrs["scalars"].items()}
    d["classes"] = np.arange(lo, hi, dtype=np.int64)
    for key in first.attrs["arrays"]:
        parts, at = [], lo
        for a, b, grp in blocks:
            if b <= at or at >= hi:
                continue
            parts.append(np.asarray(grp[key][at - a:min(b, hi) - a]))
            at = min(b, hi)
        d[key] = np.concatenate(parts)
    return OneVsAllASGD.from_state_dict(d, n_threads=n_threads)


def complete_epochs(g: zarr.Group, name: str, variant: str = "asgd") -> list[int]:
    """Epoch numbers whose checkpoint of set ``name`` has complete blocks covering every class."""
    path = f"models/{name}/{variant}"
    if path not in g:
        return []
    out = []
    for key in g[path].group_keys():
        if not key.startswith("epoch_"):
            continue
        grp = g[f"{path}/{key}"]
        n = grp.attrs.get("n_classes")
        if n is not None and _covers(_blocks(grp), 0, int(n)):
            out.append(int(key.removeprefix("epoch_")))
    return sorted(out)


def drop_epoch(g: zarr.Group, name: str, variant: str, epoch: int) -> None:
    path = f"models/{name}/{variant}"
    key = f"epoch_{epoch}"
    if path in g and key in g[path]:
        del g[path][key]


def load_models(url: str, name: str, *, storage_options: Mapping[str, Any] | None = None,
                variant: str = "asgd", epoch: int | None = None) -> OneVsAllASGD:
    """The trained one-vs-all models of feature set ``name`` (all classes, one model, full ASGD state).

    ``epoch`` None takes the last complete epoch.
    """
    g = open_group(url, "r", storage_options)
    done = complete_epochs(g, name, variant)
    if not done:
        raise StoreError(f"store {url!r} has no complete {variant} models of set {name!r}; run `lsic train`")
    e = done[-1] if epoch is None else int(epoch)
    n = int(g[epoch_path(name, variant, e)].attrs["n_classes"])
    return read_block(g, name, variant, e, 0, n)


# --------------------------------------------------------------------------- scores


def part_path(name: str, split: str, lo: int, hi: int) -> str:
    return f"scores/{name}/_parts/{split}/c{lo}_{hi}"


def create_score_part(g: zarr.Group, name: str, split: str, lo: int, hi: int, n_rows: int,
                      chunk_rows: int) -> zarr.Array:
    """An actor's (n_rows, hi - lo) float32 block of scores of ``split``, filled chunk by chunk."""
    return g.create_array(part_path(name, split, lo, hi), shape=(n_rows, hi - lo),
                          chunks=(max(min(chunk_rows, n_rows), 1), hi - lo), dtype="float32",
                          fill_value=np.nan, compressors=COMPRESSOR, overwrite=True)


def reduce_score_rows(url: str, storage_options: Mapping[str, Any] | None, name: str, split: str,
                      blocks: list[tuple[int, int]], a: int, b: int) -> int:
    """One reduce task: rows ``a:b`` of every class block, side by side, into ``scores/<set>/<split>``."""
    g = open_group(url, "r+", storage_options)
    parts = [np.asarray(g[part_path(name, split, lo, hi)][a:b]) for lo, hi in blocks]
    g[f"scores/{name}/{split}"][a:b] = np.concatenate(parts, axis=1)
    return b - a
