"""The training actor: one per machine, the models of a block of classes, one chunk in memory (paper §4.2).

:class:`ClassBlockTrainer` is a plain class; the training driver creates it
as a ``distributed`` actor pinned to one worker (``workers=[address]``) and
owns its lifecycle (:mod:`lsic.workflows._actor_pool`). Every epoch it walks the training
row chunks in the order it is given, loads each chunk once for all its
classes and all its feature sets, prefetches the next chunk in a thread while
the ASGD kernel (eqs. 4-9) runs on the current one, then checkpoints its
models to the store and optionally scores the validation chunks.
"""

from __future__ import annotations

import logging
import os
import resource
import sys
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from lsic.pipeline import TOP_K, OneVsAllASGD, top_k_predictions

from ._layout import variants
from ._schedule import row_order
from .store import SPLIT_CODES, TRAIN, VAL, FeatureStore, ReadCounter

log = logging.getLogger(__name__)

#: key of the usable-row mask of a refit pass (training and validation rows together)
FIT = -1


def _lower_priority() -> None:
    """Run the calling thread at the lowest CPU priority (Linux: per-thread nice 19; elsewhere a no-op).

    The prefetch thread decodes the next chunk while the ASGD kernel's threads,
    one per core, train on the current one. At equal priority the scheduler
    shares the cores three ways and both kernel threads, split into equal class
    groups, wait for the slowed one, so the decode costs the epoch about its
    full CPU time (docs/design/training.md). At low priority it runs in the
    kernel's gaps (its serial steps between blocks and chunks) and at full
    speed whenever the kernel waits for it.
    """
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)
    except (AttributeError, OSError):  # not Linux, or not permitted: equal priority, same results
        pass


class ClassBlockTrainer:
    """One-vs-all ASGD models of classes ``lo .. hi - 1`` for several feature sets, fed chunk by chunk.

    Parameters
    ----------
    url, storage_options
        The Zarr store (any fsspec URL).
    sets : sequence of str
        Feature set names (``features/<set>/X`` arrays).
    lo, hi : int
        The class block this actor owns.
    params : mapping
        ``OneVsAllASGD`` settings shared by all classes: lam, eta0, c, average,
        fit_intercept, mode.
    lam_by_set : mapping of str to float, optional
        A lambda of its own for some sets (overrides ``params["lam"]``).
    n_threads : int or None
        Threads of the ASGD kernel (the cores of the machine).
    compare_sgd : bool
        Also train plain SGD (eq. 5, no averaging) models on the same chunks.
    seed : int
        The run's seed: the rows of chunk ``k`` are visited in epoch ``e`` in a
        permutation seeded by ``(seed, e, k)``, the same on every actor.
    refit : bool
        Also train ``refit`` models on the training and validation rows
        together (the same chunks, in the same pass). Validation and the
        fusion weights use the models trained on the training rows alone; the
        test scores and the final weights come from the refit models.

    Notes
    -----
    Memory: the models, the chunk being trained and the one being prefetched
    (``chunk_rows`` rows of every set), whatever the number of rows; besides
    them only the 1-D labels and usable-row masks (6 bytes a row). Writing a
    checkpoint (no chunk held then) writes the live state without copying it
    (one compressed checkpoint chunk at a time).
    Counters (``stats()``): chunk loads per purpose and bytes read from the store.
    """

    def __init__(self, url: str, storage_options: Mapping[str, Any] | None, sets: Sequence[str], lo: int, hi: int,
                 params: Mapping[str, Any], *, lam_by_set: Mapping[str, float] | None = None,
                 n_threads: int | None = None, compare_sgd: bool = False,
                 seed: int = 0, refit: bool = False) -> None:
        self.url = url
        self.storage_options = dict(storage_options or {})
        self.sets = list(sets)
        self.lo, self.hi = int(lo), int(hi)
        self.params = dict(params)
        self.lam_by_set = {k: float(v) for k, v in (lam_by_set or {}).items()}
        self.n_threads = n_threads
        self.compare_sgd = bool(compare_sgd)
        self.seed = int(seed)
        self.refit = bool(refit)
        self._counter = ReadCounter()
        self._store = FeatureStore.open(url, "r+", self.storage_options, counter=self._counter)
        self.n_rows = self._store.n_images
        self.chunk_rows = self._store.chunk_rows
        # The 1-D row arrays (6 bytes a row) are read once; on an object store each
        # read is a request, and they would triple the requests per chunk.
        self._labels = self._store.labels()
        split, valid = self._store.split(), self._store.valid()
        self._split = split
        self._usable = {code: (split == code) & valid for code in SPLIT_CODES.values()}
        self._usable[FIT] = self._usable[TRAIN] | self._usable[VAL]
        self._X = {s: self._store.features(s) for s in self.sets}  # handles opened once
        self.n_features = {s: int(self._X[s].shape[1]) for s in self.sets}
        # decode and row buffers of chunks released by the caller: at most three per set
        # (the chunk in use, the one prefetched, the one being decoded)
        self._free: dict[str, list[np.ndarray]] = {s: [] for s in self.sets}
        self.models: dict[tuple[str, str], OneVsAllASGD] = {}
        self.epoch = 0
        self.loads = {"train": 0, "val": 0, "test": 0}
        self._held = 0
        self.peak_chunk_bytes = 0
        self._lock = threading.Lock()
        self.host = os.uname().nodename

    # ------------------------------------------------------------------ models
    @property
    def final_variant(self) -> str:
        """The models whose weights are written as the final ones and score the test split."""
        return "refit" if self.refit else "asgd"

    def _new(self, name: str, variant: str) -> OneVsAllASGD:
        p = dict(self.params)
        if name in self.lam_by_set:
            p["lam"] = self.lam_by_set[name]
        if variant == "sgd":
            p["average"] = False
        return OneVsAllASGD(self.n_features[name], np.arange(self.lo, self.hi), n_threads=self.n_threads, **p)

    def restore(self, epoch: int) -> int:
        """Start from the checkpoint of ``epoch`` (0: fresh models). Returns the model bytes held."""
        self.models = {}
        for name in self.sets:
            for variant in variants(self.compare_sgd, self.refit):
                if epoch == 0:
                    m = self._new(name, variant)
                else:
                    m = self._store.checkpoints.read_block(name, variant, epoch, self.lo, self.hi, self.n_threads)
                self.models[(name, variant)] = m
        self.epoch = int(epoch)
        return self.model_bytes()

    def model_bytes(self) -> int:
        """Bytes of the weight state held (V, and U when averaging: float32, eqs. 8-9), without copying it."""
        return int(sum(m.n_classes * m.n_features * 4 * (2 if m.average else 1) for m in self.models.values()))

    # ------------------------------------------------------------------ chunks
    def _load(self, k: int, purpose: str, shuffle: int | None = None) -> dict[str, Any]:
        """Rows of chunk ``k`` usable for ``purpose`` (valid, of that split; ``fit``: train or val) in every set.

        With ``shuffle`` (an epoch), the rows come in that epoch's
        :func:`~lsic.workflows._schedule.row_order` of the chunk.
        """
        a, b = self._store.chunk_bounds(k)
        pos = np.arange(b - a)
        if shuffle is not None:
            pos = row_order(self.seed, shuffle, k, b - a)
        keep = pos[self._usable[FIT if purpose == "fit" else SPLIT_CODES[purpose]][a:b][pos]]
        out: dict[str, Any] = {"k": k, "rows": a + keep, "y": self._labels[a:b][keep],
                               "train": self._split[a:b][keep] == TRAIN}
        nbytes = 0
        held: list[tuple[str, np.ndarray]] = []
        for name in self.sets:
            raw = self._take_buffer(name)
            X = self._store.read_chunk(name, k, out=raw)
            if keep.size != X.shape[0] or shuffle is not None:
                rows_buf = self._take_buffer(name)
                # mode="clip": without it take buffers ``out`` (3x slower; ``keep`` is in range anyway)
                X = np.take(X, keep, axis=0, mode="clip",
                            out=rows_buf.reshape(-1)[:keep.size * X.shape[1]].reshape(keep.size, -1))
                self._give_buffer(name, raw)
                raw = rows_buf
            held.append((name, raw))
            out[name] = X
            nbytes += X.nbytes
        out["nbytes"] = nbytes
        out["_buffers"] = held
        with self._lock:
            self.loads["train" if purpose == "fit" else purpose] += 1
            self._held += nbytes
            self.peak_chunk_bytes = max(self.peak_chunk_bytes, self._held)
        return out

    def _take_buffer(self, name: str) -> np.ndarray:
        """A (chunk_rows, dim) float32 buffer of set ``name``: reused, as fresh 64 MB arrays cost page faults."""
        with self._lock:
            free = self._free[name]
            if free:
                return free.pop()
        return np.empty((self.chunk_rows, self.n_features[name]), np.float32)

    def _give_buffer(self, name: str, buf: np.ndarray) -> None:
        with self._lock:
            self._free[name].append(buf)

    def _release(self, chunk: dict[str, Any]) -> None:
        for name, buf in chunk.get("_buffers", ()):
            self._give_buffer(name, buf)
        with self._lock:
            self._held -= chunk["nbytes"]
        chunk.clear()

    def _chunks(self, order: Sequence[int], purpose: str, shuffle: int | None = None) -> Iterator[dict[str, Any]]:
        """Chunks in ``order``, the next one read in a thread while the caller uses the current one.

        The caller must be done with a chunk when it asks for the next: at most
        two chunks are alive, the current one and the prefetched one.
        """
        if not order:
            return
        with ThreadPoolExecutor(1, thread_name_prefix="lsic-prefetch", initializer=_lower_priority) as pool:
            nxt = pool.submit(self._load, order[0], purpose, shuffle)
            for i in range(len(order)):
                cur = nxt.result()
                nxt = pool.submit(self._load, order[i + 1], purpose, shuffle) if i + 1 < len(order) else None
                try:
                    yield cur
                finally:
                    self._release(cur)

    # ------------------------------------------------------------------ epochs
    def train_epoch(self, epoch: int, order: Sequence[int], val_chunks: Sequence[int] = ()) -> dict[str, Any]:
        """One epoch over the training chunks ``order``, then checkpoint ``epoch``, then validate.

        With ``refit``, ``order`` also holds the validation chunks: the refit
        models train on every usable row, the others on the training rows only.
        The models must be at epoch ``epoch - 1`` (see :meth:`restore`). Returns
        the epoch's statistics and, when ``val_chunks`` is given, the top-k scores
        of this class block on every valid validation row (for the driver's
        accuracy reduce).
        """
        if epoch != self.epoch + 1:
            raise RuntimeError(f"actor for classes {self.lo}..{self.hi - 1} is at epoch {self.epoch}, asked for {epoch}")
        t0 = time.perf_counter()
        rows = 0
        for chunk in self._chunks(list(order), "fit" if self.refit else "train", shuffle=epoch):
            y, is_train = chunk["y"], chunk["train"]
            train_only = None if is_train.all() else np.flatnonzero(is_train)
            for (name, variant), model in self.models.items():
                X, yy = chunk[name], y
                if variant != "refit" and train_only is not None:
                    X, yy = X[train_only], y[train_only]
                if yy.size:
                    model.partial_fit(X, yy)
            rows += int(is_train.sum())
        t_train = time.perf_counter() - t0
        for (name, variant), model in self.models.items():
            self._store.checkpoints.write_block(name, variant, epoch, model, self.lo)
        t_ckpt = time.perf_counter() - t0 - t_train
        self.epoch = epoch
        out: dict[str, Any] = {"epoch": epoch, "rows": rows, "train_seconds": t_train, "checkpoint_seconds": t_ckpt,
                               "seconds": time.perf_counter() - t0, "lo": self.lo, "hi": self.hi}
        if val_chunks:
            out["val"] = self._topk(list(val_chunks))
        out["stats"] = self.stats()
        return out

    def _topk(self, chunks: list[int]) -> dict[tuple[str, str], tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """Per (set, variant): rows, the top-k class ids and scores of this block over validation chunks."""
        k = min(TOP_K, self.hi - self.lo)
        acc: dict[tuple[str, str], list[tuple[np.ndarray, np.ndarray, np.ndarray]]] = {
            key: [] for key in self.models if key[1] != "refit"}  # refit models have seen these rows
        for chunk in self._chunks(chunks, "val"):
            if chunk["y"].size == 0:
                continue
            for key in acc:
                S = self.models[key].decision_function(chunk[key[0]])
                top = top_k_predictions(S, k)
                acc[key].append((chunk["rows"], (top + self.lo).astype(np.int32), np.take_along_axis(S, top, 1)))
        return {key: tuple(np.concatenate(p) for p in zip(*parts)) if parts else None for key, parts in acc.items()}

    def score(self, split: str, chunks: Sequence[int], a: int, b: int,
              sets: Sequence[str] | None = None) -> dict[str, Any]:
        """Write this block's ``X @ W_bar.T + b_bar`` over the valid rows of ``split`` into its score parts.

        ``[a, b)`` are the split's store rows (contiguous: rows are ordered
        train, val, test); a part row is the rank of its store row among the
        split's valid rows, so the parts hold exactly the valid rows in store order.
        ``sets`` limits the scoring to some of the actor's sets (default: all).
        Validation rows are scored by the models that did not train on them,
        the other splits by :attr:`final_variant`.
        """
        variant = "asgd" if split == "val" else self.final_variant
        valid = self._usable[SPLIT_CODES[split]][a:b]
        rank = np.cumsum(valid) - 1
        n_rows = int(valid.sum())
        names = list(sets or self.sets)
        parts = {name: self._store.create_score_part(name, split, self.lo, self.hi, n_rows) for name in names}
        written = 0
        for chunk in self._chunks(list(chunks), split):
            if chunk["y"].size == 0:
                continue
            at = int(rank[chunk["rows"][0] - a])
            for name in names:
                S = self.models[(name, variant)].decision_function(chunk[name])
                parts[name][at:at + S.shape[0]] = S
            written += int(chunk["y"].size)
        return {"split": split, "rows": written, "stats": self.stats()}

    def write_final(self) -> None:
        """Write the averaged weights of this block (:attr:`final_variant`) into ``models/<set>/coef`` and ``intercept``."""
        for name in self.sets:
            m = self.models[(name, self.final_variant)]
            self._store.checkpoints.write_final_weights(name, self.lo, m.coef_, m.intercept_)

    def stats(self) -> dict[str, Any]:
        """Counters: chunk loads per purpose, bytes read from the store, peak chunk and process memory."""
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        rss_bytes = rss if sys.platform == "darwin" else rss * 1024
        return {
            "lo": self.lo, "hi": self.hi, "host": self.host, "pid": os.getpid(),
            "loads": dict(self.loads), "bytes_read": self._counter.nbytes,
            "peak_chunk_bytes": self.peak_chunk_bytes, "model_bytes": self.model_bytes(),
            "peak_rss_bytes": int(rss_bytes),
        }
