"""Training checkpoints in the store: each actor's class block of every epoch, and the final weights.

An epoch's checkpoint of a set and variant (``models/<set>/<variant>/epoch_<e>``)
is created by the training driver and filled by the actors, each writing the
full ASGD state of its classes as its own block group ``c<lo>_<hi>`` with
``complete`` written last: actors never share a chunk or an attribute file.
An epoch is complete when its complete blocks cover every class, whatever the
partition, so a resumed run may use another actor count; :meth:`read_block`
restores any class range from any partition.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import zarr

from lsic.pipeline import OneVsAllASGD, StoreError

from . import _zarr_io as zio
from ._layout import block_key, epoch_path, model_path, variant_path

CHECKPOINT_CHUNK_BYTES = 32 * 2**20
"""Chunk size of the per-class state arrays: a block is a few large chunks, not one per class."""


def _split_state(state: Mapping[str, np.ndarray]) -> tuple[list[str], list[str]]:
    """State keys of the model's scalar settings and of its per-class arrays (class axis first).

    Taken from ``state_dict()`` itself, so new solver state is checkpointed too.
    """
    scalars = [k for k, v in state.items() if np.ndim(v) == 0]
    per_class = [k for k, v in state.items() if np.ndim(v) > 0 and k != "classes"]
    return scalars, per_class


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


class Checkpoints:
    """The model checkpoints of an open store (``store.checkpoints``).

    Parameters
    ----------
    group : zarr.Group
        The store's root group.
    url : str
        Its URL (for messages).
    """

    def __init__(self, group: zarr.Group, url: str) -> None:
        self.group = group
        self.url = url

    def create_epoch(self, name: str, variant: str, epoch: int, n_classes: int) -> None:
        """Create an epoch's checkpoint group (driver, before the actors write their blocks into it)."""
        path = epoch_path(name, variant, epoch)
        zio.remove(self.group, path)  # an unfinished attempt of this epoch
        self.group.require_group(path).attrs["n_classes"] = int(n_classes)

    def write_block(self, name: str, variant: str, epoch: int, model: OneVsAllASGD, lo: int) -> None:
        """Write ``model`` (classes ``lo .. lo + K``) as block ``c<lo>_<hi>`` of its epoch; ``complete`` last."""
        hi = lo + model.n_classes
        state = model.state_dict(copy=False)  # written out at once: no second copy of V and U
        scalars, per_class = _split_state(state)
        parent = self.group[epoch_path(name, variant, epoch)]
        key_b = block_key(lo, hi)
        zio.remove(parent, key_b)  # a lost actor's unfinished block of this epoch
        grp = parent.create_group(key_b, attributes={"complete": False})
        for key in per_class:
            value = np.asarray(state[key])
            row_bytes = max(int(np.prod(value.shape[1:])) * value.dtype.itemsize, 1)
            rows = max(1, min(value.shape[0], CHECKPOINT_CHUNK_BYTES // row_bytes))
            chunks = (rows, *(max(s, 1) for s in value.shape[1:]))
            arr = zio.create_array(grp, key, shape=value.shape, chunks=chunks, dtype=value.dtype, fill_value=0)
            if value.size:
                arr[...] = value
        grp.attrs.update({"lo": lo, "hi": hi, "scalars": {k: np.asarray(state[k]).item() for k in scalars},
                          "arrays": per_class, "complete": True})

    def block_complete(self, name: str, variant: str, epoch: int, lo: int, hi: int) -> bool:
        """Is block ``c<lo>_<hi>`` of an epoch complete? (Read by path: no listing, no stale listing cache.)"""
        try:
            return bool(self.group[f"{epoch_path(name, variant, epoch)}/{block_key(lo, hi)}"].attrs.get("complete"))
        except KeyError:
            return False

    def read_block(self, name: str, variant: str, epoch: int, lo: int, hi: int,
                   n_threads: int | None = None) -> OneVsAllASGD:
        """Restore the models of classes ``lo:hi`` from an epoch checkpoint (any partition of its blocks)."""
        path = epoch_path(name, variant, epoch)
        if path not in self.group:
            raise StoreError(f"checkpoint {path} is missing from the store; rerun `lsic train` with --restart")
        blocks = [b for b in _blocks(self.group[path]) if b[0] < hi and b[1] > lo]
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

    def complete_epochs(self, name: str, variant: str = "asgd") -> list[int]:
        """Epoch numbers whose checkpoint of set ``name`` has complete blocks covering every class."""
        path = variant_path(name, variant)
        if path not in self.group:
            return []
        out = []
        for key in self.group[path].group_keys():
            if not key.startswith("epoch_"):
                continue
            grp = self.group[f"{path}/{key}"]
            n = grp.attrs.get("n_classes")
            if n is not None and _covers(_blocks(grp), 0, int(n)):
                out.append(int(key.removeprefix("epoch_")))
        return sorted(out)

    def drop_epoch(self, name: str, variant: str, epoch: int) -> None:
        zio.remove(self.group, epoch_path(name, variant, epoch))

    def load_models(self, name: str, *, variant: str = "asgd", epoch: int | None = None) -> OneVsAllASGD:
        """The trained one-vs-all models of set ``name`` (all classes, full ASGD state); last epoch by default."""
        done = self.complete_epochs(name, variant)
        if not done:
            raise StoreError(f"store {self.url!r} has no complete {variant} models of set {name!r}; run `lsic train`")
        e = done[-1] if epoch is None else int(epoch)
        n = int(self.group[epoch_path(name, variant, e)].attrs["n_classes"])
        return self.read_block(name, variant, e, 0, n)

    # ------------------------------------------------------------------ final weights

    def create_final_weights(self, name: str, n_classes: int, n_features: int) -> None:
        """Create ``models/<name>/coef`` and ``intercept`` (one chunk per class), filled by the actors."""
        grp = self.group[model_path(name)]
        for key, shape in (("coef", (n_classes, n_features)), ("intercept", (n_classes,))):
            zio.create_array(grp, key, shape=shape, chunks=(1, *shape[1:]), dtype="float32", overwrite=True)

    def write_final_weights(self, name: str, lo: int, coef: np.ndarray, intercept: np.ndarray) -> None:
        """Write the averaged weights of classes ``lo .. lo + len(coef)``."""
        grp = self.group[model_path(name)]
        hi = lo + len(coef)
        grp["coef"][lo:hi] = coef
        grp["intercept"][lo:hi] = intercept

    def final_weights(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """``(coef (n_classes, d), intercept (n_classes,))`` float32 of set ``name``, the last epoch's averages."""
        path = model_path(name)
        grp = self.group[path] if path in self.group else None
        if grp is None or "coef" not in grp or "intercept" not in grp:
            raise StoreError(f"store {self.url!r} has no trained models of feature set {name!r}; run `lsic train`")
        return np.asarray(grp["coef"][...], np.float32), np.asarray(grp["intercept"][...], np.float32)
