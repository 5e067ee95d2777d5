"""Training I/O on the Zarr store: counted chunk reads, model checkpoints, score blocks.

Layout written by the training workflow (beside the extraction layout of ``_store.py``)::

    models/<set>/                       attrs: n_classes, n_features, params, history,
                                               epochs_complete (driver, after each epoch)
    models/<set>/<variant>/epoch_<e>/   one complete ASGD state per class, variant
                                        "asgd" (the models) or "sgd" (plain SGD, compare_sgd)
        V, U   (n_classes, d) float32   eqs. 8-9 state (U absent without averaging)
        P      (n_classes, 3) float64   scalars of the three-operation transform
        b, bbar (n_classes,) float64    intercept and its average
        t      (n_classes,) int64       steps taken (eq. 7)
        eta0, lam (n_classes,) float64
        done   (n_classes,) bool        completion marks, written last by each actor
        attrs: the model's scalar settings (c, average, avg_start, fit_intercept, mode, ...)
    models/<set>/coef (n_classes, d) float32, intercept (n_classes,) float32
                                        averaged weights of the last epoch (for evaluate/predict)
    scores/<set>/<split>      (n_rows, n_classes) float32  X @ W_bar.T + b_bar, valid rows of
                                                         the split in store row order
    scores/<set>/<split>_rows (n_rows,) int64              their row indices in the store
    scores/<set>/_parts/<split>/c<lo>_<hi>               an actor's class block before the reduce

Every per-class array is chunked one class per chunk, so actors owning
disjoint class ranges write disjoint chunks and never race. An epoch of a
set is complete when every ``done`` mark is set: resuming is re-planning
from the marks (DESIGN convention 8).
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


def create_epoch(g: zarr.Group, name: str, variant: str, epoch: int, model: OneVsAllASGD, n_classes: int) -> None:
    """Create the (empty) checkpoint arrays of one epoch, before the actors fill their class rows.

    ``model`` is any model of the run (its shapes and scalar settings are used).
    """
    path = epoch_path(name, variant, epoch)
    state = model.state_dict()
    grp = g.require_group(path)
    scalars, per_class = _split_state(state)
    grp.attrs.update({"scalars": {k: _scalar(state[k]) for k in scalars}, "arrays": per_class})
    for key in per_class:
        row = np.asarray(state[key])
        if row.ndim == 2 and row.shape[1] == 0:
            continue
        shape = (n_classes, *row.shape[1:])
        grp.create_array(key, shape=shape, chunks=(1, *row.shape[1:]), dtype=row.dtype, fill_value=0,
                         compressors=COMPRESSOR, overwrite=True)
    grp.create_array("done", shape=(n_classes,), chunks=(1,), dtype=bool, fill_value=False, overwrite=True)


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
    """Write ``model`` (classes ``lo .. lo + K``) into its epoch checkpoint; the done marks last."""
    grp = g[epoch_path(name, variant, epoch)]
    state = model.state_dict()
    hi = lo + model.n_classes
    for key in grp.attrs["arrays"]:
        if key in grp:
            grp[key][lo:hi] = state[key]
    grp["done"][lo:hi] = True


def read_block(g: zarr.Group, name: str, variant: str, epoch: int, lo: int, hi: int,
               n_threads: int | None = None) -> OneVsAllASGD:
    """Restore the models of classes ``lo:hi`` from a complete epoch checkpoint."""
    path = epoch_path(name, variant, epoch)
    if path not in g:
        raise StoreError(f"checkpoint {path} is missing from the store; rerun `lsic train` with --restart")
    grp = g[path]
    if not np.asarray(grp["done"][lo:hi]).all():
        raise StoreError(f"checkpoint {path} is incomplete for classes {lo}..{hi - 1}; rerun `lsic train`")
    d: dict[str, Any] = {k: np.asarray(v) for k, v in grp.attrs["scalars"].items()}
    d["classes"] = np.arange(lo, hi, dtype=np.int64)
    for key in grp.attrs["arrays"]:
        if key in grp:
            d[key] = np.asarray(grp[key][lo:hi])
        else:  # an empty second axis (U without averaging) is not stored
            d[key] = np.zeros((hi - lo, 0), np.float32)
    return OneVsAllASGD.from_state_dict(d, n_threads=n_threads)


def complete_epochs(g: zarr.Group, name: str, variant: str = "asgd") -> list[int]:
    """Epoch numbers whose checkpoint of set ``name`` has every class marked done."""
    path = f"models/{name}/{variant}"
    if path not in g:
        return []
    out = []
    for key in g[path].group_keys():
        if key.startswith("epoch_") and "done" in g[f"{path}/{key}"]:
            if np.asarray(g[f"{path}/{key}/done"][...]).all():
                out.append(int(key.removeprefix("epoch_")))
    return sorted(out)


def drop_epoch(g: zarr.Group, name: str, variant: str, epoch: int) -> None:
    path = f"models/{name}/{variant}"
    key = f"epoch_{epoch}"
    if path in g and key in g[path]:
        del g[path][key]


def load_models(url: str, name: str, *, storage_options: Mapping[str, Any] | None = None,
                variant: str = "asgd", epoch: int | None = None) -> OneVsAllASGD:
    """The trained one-vs-all models of feature set ``name`` (all classes, one model).

    ``epoch`` None takes the last complete epoch.
    """
    g = open_group(url, "r", storage_options)
    done = complete_epochs(g, name, variant)
    if not done:
        raise StoreError(f"store {url!r} has no complete {variant} models of set {name!r}; run `lsic train`")
    e = done[-1] if epoch is None else int(epoch)
    n = int(g[f"models/{name}"].attrs["n_classes"])
    return read_block(g, name, variant, e, 0, n)


# --------------------------------------------------------------------------- scores


def part_path(name: str, split: str, lo: int, hi: int) -> str:
    return f"scores/{name}/_parts/{split}/c{lo}_{hi}"


def write_score_part(g: zarr.Group, name: str, split: str, lo: int, scores: np.ndarray, at: int,
                     n_rows: int, chunk_rows: int) -> None:
    """Write rows ``at .. at + len(scores)`` of an actor's (n_rows, K) class block of scores."""
    hi = lo + scores.shape[1]
    path = part_path(name, split, lo, hi)
    if path not in g:
        g.create_array(path, shape=(n_rows, hi - lo), chunks=(max(min(chunk_rows, n_rows), 1), hi - lo),
                       dtype="float32", fill_value=np.nan, compressors=COMPRESSOR)
    g[path][at:at + scores.shape[0]] = scores


def reduce_score_rows(url: str, storage_options: Mapping[str, Any] | None, name: str, split: str,
                      blocks: list[tuple[int, int]], a: int, b: int) -> int:
    """One reduce task: rows ``a:b`` of every class block, side by side, into ``scores/<set>/<split>``."""
    g = open_group(url, "r+", storage_options)
    parts = [np.asarray(g[part_path(name, split, lo, hi)][a:b]) for lo, hi in blocks]
    g[f"scores/{name}/{split}"][a:b] = np.concatenate(parts, axis=1)
    return b - a
