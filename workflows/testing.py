"""Synthetic feature stores for tests and benchmarks: no images, the layout extraction writes.

:func:`write_store` writes a complete extracted store from arrays (the same
metadata, layout, codecs, region writes and marks as extraction), and
:func:`write_scores` a whole score matrix as training would leave it, so the
training and evaluation stages can be tested and measured on their own.
:func:`write_lcc_like_store` writes LCC-like rows at ILSVRC shape, generated
one chunk at a time so that stores larger than memory can be written
(``benchmarks/bench_scale.py`` and ``tests/workflows/test_scale.py``).
:func:`reset_progress` clears a stage's marks, so a benchmark can rerun it on
the same store.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ._layout import Manifest, chunk_bounds, n_chunks, progress_path
from .store import TEST, TRAIN, VAL, FeatureStore

__all__ = ["LccLikeRows", "reset_progress", "synthetic_labels", "write_lcc_like_store", "write_scores", "write_store"]


def write_store(url: str, *, labels: np.ndarray, split: np.ndarray, features: Mapping[str, Any],
                class_names: Sequence[str] | None = None, valid: np.ndarray | None = None, chunk_rows: int = 256,
                seed: int = 0, fingerprint: str = "synthetic", config: Mapping[str, Any] | None = None,
                storage_options: Mapping[str, Any] | None = None, sparse: Sequence[str] = ()) -> FeatureStore:
    """Write a complete extracted store from arrays (no images needed); an existing store at ``url`` is replaced.

    The rows get the same metadata, arrays and marks extraction writes;
    ``features[name]`` is an (n, dim) array per feature set (or any object
    with a ``shape`` whose row slices ``X[a:b]`` are arrays: it is read one
    row chunk at a time, so a generator of rows larger than memory works), ``split`` the
    split codes (rows must be ordered train, val, test), ``valid`` (default
    all True) the decodable rows, whose features stay as given. Sets named in
    ``sparse`` are compressed as extraction compresses LCC features.
    """
    labels = np.asarray(labels, np.int32)
    n = labels.size
    split = np.asarray(split, np.int8)
    if np.any(np.diff(split) < 0):
        raise ValueError("split codes must be ordered train, val, test (the store's row order)")
    valid = np.ones(n, bool) if valid is None else np.asarray(valid, bool)
    names = list(class_names) if class_names is not None else [f"c{i}" for i in range(int(labels.max(initial=-1)) + 1)]
    manifest = Manifest([f"synthetic/{i}" for i in range(n)], labels, split, np.full(n, -1, np.int64),
                        np.full(n, -1, np.int64), names)
    store = FeatureStore.create(url, config=dict(config or {}), fingerprint=fingerprint, manifest=manifest,
                                chunk_rows=chunk_rows, seed=seed, overwrite=True, storage_options=storage_options)
    for name, X in features.items():
        if not hasattr(X, "shape"):
            X = np.asarray(X, np.float32)
        arr = store.create_features(name, int(X.shape[1]), sparse=name in sparse)
        for k in range(n_chunks(n, chunk_rows)):  # one region write per row chunk, as extraction does
            a, b = chunk_bounds(k, chunk_rows, n)
            arr[a:b] = np.asarray(X[a:b], np.float32)
    for k in range(n_chunks(n, chunk_rows)):
        a, b = chunk_bounds(k, chunk_rows, n)
        store.write_rows(a, b, valid[a:b], np.where(valid[a:b], "", "synthetic invalid row"))
        store.mark_chunk_done(k)
    store.mark_extract_complete()
    return store


def write_scores(store: FeatureStore, name: str, split: str, rows: np.ndarray, scores: np.ndarray, *,
                 epoch: int = 0) -> None:
    """Write a whole (len(rows), n_classes) score matrix of ``split`` at once (training reduces actors' parts)."""
    scores = np.asarray(scores, np.float32)
    store.create_scores(name, split, rows, scores.shape[1])[...] = scores
    store.finish_scores(name, split, epoch)


def reset_progress(store: FeatureStore, stage: str = "extract") -> None:
    """Clear every completion mark of ``stage``, so that it runs again on the same store."""
    store.group[progress_path(stage)][...] = False


class LccLikeRows:
    """(n, dim) float32 rows that look like pooled LCC codes, generated chunk by chunk.

    Every row is non-negative and L2-normalised with about 25% non-zeros:
    background noise (``noise_density`` of the dims, exponential values) plus
    its class's sparse prototype (``proto_density`` of the dims, exponential
    values, times ``signal``) of which a random ``keep`` fraction survives.
    A linear SVM can learn the prototypes, so validation accuracy means something.

    Parameters
    ----------
    labels : ndarray of int, shape (n,)
        Class of every row.
    dim : int
        Feature dimension D.
    n_classes : int
        Number of prototypes.
    chunk_rows : int
        Rows are generated in aligned blocks of this many, each from its own
        seed ``(seed, 1, block)``, so any slice gives the same values.
    seed : int
        Seed of the prototypes ``(seed, 0)`` and of the blocks.
    signal, noise_density, proto_density, keep : float
        Strength of the class signal and the densities above.

    Notes
    -----
    ``X[a:b]`` returns a new float32 array of rows ``a .. b - 1``; only the
    prototypes (``n_classes x dim`` float32) are held.
    """

    def __init__(self, labels: np.ndarray, dim: int, n_classes: int, *, chunk_rows: int = 1024, seed: int = 0,
                 signal: float = 1.0, noise_density: float = 0.2, proto_density: float = 0.1,
                 keep: float = 0.8) -> None:
        self.labels = np.asarray(labels, np.int32)
        self.shape = (int(self.labels.size), int(dim))
        self.dtype = np.dtype(np.float32)
        self.chunk_rows = int(chunk_rows)
        self.seed = int(seed)
        self.signal, self.noise_density, self.keep = float(signal), float(noise_density), float(keep)
        rng = np.random.default_rng([self.seed, 0])
        protos = np.zeros((int(n_classes), int(dim)), np.float32)
        for c in range(int(n_classes)):  # one class at a time: no (classes x dim) temporaries
            on = rng.random(int(dim), dtype=np.float32) < proto_density
            protos[c, on] = rng.standard_exponential(int(on.sum()), dtype=np.float32)
        self.protos = protos

    def _block(self, k: int) -> np.ndarray:
        a = k * self.chunk_rows
        b = min(a + self.chunk_rows, self.shape[0])
        m, d = b - a, self.shape[1]
        rng = np.random.default_rng([self.seed, 1, int(k)])
        x = rng.standard_exponential((m, d), dtype=np.float32)
        x *= rng.random((m, d), dtype=np.float32) < self.noise_density
        sig = self.protos[self.labels[a:b]]
        sig *= rng.random((m, d), dtype=np.float32) < self.keep
        x += self.signal * sig
        norm = np.linalg.norm(x, axis=1, keepdims=True)
        x /= np.maximum(norm, np.float32(1e-12))
        return x

    def __getitem__(self, key: slice) -> np.ndarray:
        if not isinstance(key, slice) or key.step not in (None, 1):
            raise TypeError("LccLikeRows supports contiguous row slices X[a:b] only")
        a, b, _ = key.indices(self.shape[0])
        if b <= a:
            return np.empty((0, self.shape[1]), np.float32)
        cr = self.chunk_rows
        parts = [self._block(k) for k in range(a // cr, (b - 1) // cr + 1)]
        first = (a // cr) * cr
        out = parts[0] if len(parts) == 1 else np.concatenate(parts)
        return np.ascontiguousarray(out[a - first:b - first])


def synthetic_labels(n_train: int, n_val: int, n_test: int, n_classes: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Balanced labels (every class equally often in each split, shuffled) and split codes, rows train, val, test."""
    rng = np.random.default_rng([int(seed), 2])
    labels = np.concatenate([rng.permutation(np.arange(n) % n_classes) for n in (n_train, n_val, n_test)])
    split = np.repeat(np.array([TRAIN, VAL, TEST], np.int8), [n_train, n_val, n_test])
    return labels.astype(np.int32), split


def write_lcc_like_store(url: str, *, n_train: int, n_val: int, n_test: int, dim: int, n_classes: int,
                         chunk_rows: int = 1024, seed: int = 0, name: str = "f", signal: float = 1.0,
                         storage_options: Mapping[str, Any] | None = None) -> tuple[FeatureStore, LccLikeRows]:
    """Write a complete extracted store of LCC-like rows (one feature set ``name``) and return it with its rows.

    Parameters
    ----------
    url : str
        Any fsspec URL; an existing store there is replaced.
    n_train, n_val, n_test : int
        Rows of each split (stored in that order, labels balanced per split).
    dim, n_classes, chunk_rows, seed, signal
        See :class:`LccLikeRows`; rows are written one chunk at a time.
    storage_options : mapping, optional
        fsspec options of ``url``.

    Returns
    -------
    store : FeatureStore
    rows : LccLikeRows
        The generator of the stored rows (``rows[a:b]`` equals the stored ``X[a:b]``).
    """
    labels, split = synthetic_labels(n_train, n_val, n_test, n_classes, seed)
    rows = LccLikeRows(labels, dim, n_classes, chunk_rows=chunk_rows, seed=seed, signal=signal)
    store = write_store(url, labels=labels, split=split, features={name: rows}, chunk_rows=chunk_rows,
                        class_names=[f"class_{c:04d}" for c in range(n_classes)], seed=seed,
                        fingerprint="synthetic-lcc", storage_options=storage_options, sparse=[name])
    return store, rows
