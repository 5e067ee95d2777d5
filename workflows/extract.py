"""Stage 1, extraction (paper §3.3): images -> pooled features in the Zarr store.

Plan, then graph, then execute:

1. :func:`build_manifest` lists the dataset in the run's global row order.
2. The store's metadata is created up front (or reopened to resume).
3. Codebooks (and PCA) per feature set are fitted from a descriptor sample
   drawn over many training images in parallel, then stored; a rerun reuses them.
4. A Dask bag with one partition per missing row chunk maps each image's
   bytes to descriptors (computed once per image for all sets) and to one
   pooled vector per feature set; each partition writes its own chunk-aligned
   region of every ``features/<set>/X`` and marks the chunk done last.

A rerun of the same command re-plans from the marks and computes only what is
missing; the arrays it produces are bit-identical to an uninterrupted run.
"""

from __future__ import annotations

import functools
import logging
import os
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import dask
import dask.bag as db
import numpy as np
from threadpoolctl import threadpool_limits

from lsic.pipeline import (
    Codebook,
    FeatureSet,
    ImageError,
    StoreError,
    image_descriptors,
    image_features,
)

from ._stage import WorkerCache, execute, single_blas_thread, stage_client
from .config import Experiment
from .datasets import build_manifest, read_images
from .store import FeatureStore

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ExtractPlan:
    """What extraction still has to do for a store (pure: computed from the store's marks)."""

    n_images: int
    chunk_rows: int
    missing_codebooks: tuple[str, ...]
    missing_chunks: tuple[int, ...]

    @property
    def complete(self) -> bool:
        return not self.missing_codebooks and not self.missing_chunks


@dataclass
class ExtractSummary:
    """What a run of :func:`run_extract` did."""

    store: str
    n_images: int
    n_valid: int
    n_failed: int
    images_done: int
    seconds: float
    bytes_per_set: dict[str, int] = field(default_factory=dict)

    @property
    def images_per_s(self) -> float:
        return self.images_done / self.seconds if self.seconds > 0 else float("nan")

    def line(self) -> str:
        sizes = ", ".join(f"{k} {v / 2**20:.1f} MiB" for k, v in self.bytes_per_set.items())
        return (
            f"extract: {self.n_images} images ({self.images_done} this run, {self.images_per_s:.1f} images/s), "
            f"{self.n_valid} valid, {self.n_failed} failed (see failures.json); stored: {sizes}"
        )


# --------------------------------------------------------------------------- plan


def plan_extract(exp: Experiment, store: FeatureStore) -> ExtractPlan:
    """List the codebooks and row chunks still missing in ``store``."""
    missing_cb = tuple(fs.name for fs in exp.feature_sets if not store.has_codebook(fs))
    done = store.done_chunks()
    for fs in exp.feature_sets:
        # A feature set added to the config after a run: its array is absent.
        if not store.has_features(fs.name):
            done[:] = False
    return ExtractPlan(store.n_images, store.chunk_rows, missing_cb, tuple(int(k) for k in np.flatnonzero(~done)))


# --------------------------------------------------------------------------- tasks (run on workers)


_CODEBOOKS = WorkerCache()


def _codebooks(store: FeatureStore, sets: Iterable[FeatureSet]) -> dict[str, Codebook]:
    """The store's codebooks, read once per worker process and store (keyed by its run id)."""
    run = str(store.attrs["run_id"])
    return {fs.name: _CODEBOOKS.get((run, fs.name, repr(fs)), functools.partial(store.read_codebook, fs)) for fs in sets}


def _descriptor_sample(rows: list[int], store: FeatureStore, exp: Experiment) -> dict[str, np.ndarray]:
    """Descriptors of a few training images, at most ``descriptors_per_image`` each, per kind."""
    single_blas_thread()
    kinds = sorted({fs.descriptor for fs in exp.feature_sets})
    out: dict[str, list[np.ndarray]] = {k: [] for k in kinds}
    paths, offsets, sizes = store.locators(np.asarray(rows, np.int64))
    per = exp.codebook.descriptors_per_image
    for i, data in read_images(paths, offsets, sizes, exp.dataset.storage_options):
        if isinstance(data, Exception):
            continue  # recorded by the feature pass, which reads every row
        try:
            desc = image_descriptors(data, kinds, exp.images, name=str(paths[i]))
        except ImageError:
            continue
        rng = np.random.default_rng([exp.seed, rows[i]])
        for kind, d in desc.items():
            v = d.values
            if len(v) > per:
                v = v[np.sort(rng.choice(len(v), per, replace=False))]
            out[kind].append(v)
    return {k: np.concatenate(v) if v else np.zeros((0, 0), np.float32) for k, v in out.items()}


def _process_cores() -> int:
    """Cores this process may run on (its CPU affinity, e.g. a batch job's allocation)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - macOS, Windows
        return os.cpu_count() or 1


def _fit_and_store_codebook(
    partitions: list[list[dict[str, np.ndarray]]], fs: FeatureSet, store: FeatureStore, seed: int
) -> str:
    parts = [s[fs.descriptor] for part in partitions for s in part if s[fs.descriptor].size]
    if not parts:
        raise StoreError(f"no descriptors could be sampled for feature set {fs.name!r}; are the training images readable?")
    sample = np.concatenate(parts)
    if len(sample) < fs.codebook_size:
        raise StoreError(
            f"feature set {fs.name!r} needs at least {fs.codebook_size} sampled descriptors for its codebook "
            f"but got {len(sample)}; raise codebook.sample_images or descriptors_per_image, or shrink codebook_size"
        )
    t0 = time.perf_counter()
    cores = _process_cores()
    # k-means of 8k-32k centres is hours on one core. scikit-learn's k-means runs OpenMP threads over
    # single-threaded GEMMs, and dask starts workers with OMP_NUM_THREADS=1: raise the OpenMP limit to
    # the process's cores. Not a save-and-restore context: two fits sharing a process would restore each
    # other's limits in a racy order, and the k-means result depends on the thread count (its partial
    # sums), so the codebook would not be reproducible. BLAS stays pinned to one thread for extraction;
    # the OpenMP limit does not touch extraction (numba and BLAS only). Import first: threadpoolctl only
    # sees OpenMP runtimes already loaded.
    import sklearn.cluster  # noqa: F401

    threadpool_limits(limits=cores, user_api="openmp")
    cb = Codebook.fit(sample, fs, random_state=seed)
    log.info(
        "codebook %s: %d codewords from %d descriptors in %.1f s on %d cores",
        fs.name, fs.codebook_size, len(sample), time.perf_counter() - t0, cores,
    )
    store.write_codebook(fs, cb)
    return fs.name


def extract_chunk(k: int, store: FeatureStore, exp: Experiment) -> dict[str, int]:
    """Compute and write row chunk ``k`` of every feature set, then mark it done.

    Each image is decoded once and its descriptors computed once for all sets.
    A row that cannot be read or decoded gets ``valid=False`` and its error;
    nothing else about it is written (its features stay zero).
    """
    single_blas_thread()
    start, stop = store.chunk_bounds(k)
    paths, offsets, sizes = store.locators(slice(start, stop))
    codebooks = _codebooks(store, exp.feature_sets)
    m = stop - start
    blocks = {fs.name: np.zeros((m, fs.dim), np.float32) for fs in exp.feature_sets}
    valid = np.zeros(m, bool)
    errors = np.full(m, "", dtype=object)
    for i, data in read_images(paths, offsets, sizes, exp.dataset.storage_options):
        if isinstance(data, Exception):
            errors[i] = f"cannot read: {data}"
            continue
        try:
            feats = image_features(data, exp.feature_sets, codebooks, exp.images, name=str(paths[i]))
        except ImageError as exc:  # a config error, by contrast, fails the run: it would hit every row
            errors[i] = str(exc)
            continue
        for name, vec in feats.items():
            blocks[name][i] = vec
        valid[i] = True
    for fs in exp.feature_sets:
        store.create_features(fs.name, fs.dim, fs)[start:stop] = blocks[fs.name]
    store.write_rows(start, stop, valid, errors)
    store.mark_chunk_done(k)  # last: the chunk counts only once everything is written
    return {"chunk": k, "images": m, "failed": int(m - valid.sum())}


# --------------------------------------------------------------------------- graphs


def codebook_graph(exp: Experiment, store: FeatureStore, names: Iterable[str]) -> list[Any]:
    """Delayed tasks that sample descriptors in parallel and fit + store each missing codebook."""
    names = list(names)
    if not names:
        return []
    # every training row: which ones decode is not known before the feature pass
    train_rows = store.split_rows("train", valid_only=False)
    rng = np.random.default_rng(exp.seed)
    take = min(exp.codebook.sample_images, len(train_rows))
    rows = np.sort(rng.choice(train_rows, take, replace=False)).tolist()
    per_task = max(1, min(16, len(rows) // 16 or 1))
    bag = db.from_sequence(rows, partition_size=per_task)
    samples = bag.map_partitions(lambda part: [_descriptor_sample(list(part), store, exp)]).to_delayed()
    fit = dask.delayed(_fit_and_store_codebook, pure=False)
    return [fit(samples, exp.feature_set(name), store, exp.seed) for name in names]


def feature_bag(exp: Experiment, store: FeatureStore, chunks: Iterable[int]) -> db.Bag:
    """One bag partition per row chunk, each writing its own region of the store."""
    chunks = list(chunks)
    return db.from_sequence(chunks, npartitions=max(len(chunks), 1)).map(extract_chunk, store=store, exp=exp)


# --------------------------------------------------------------------------- execute


def prepare_store(exp: Experiment, *, overwrite: bool = False) -> FeatureStore:
    """Build the manifest and create (or reopen) the store's metadata.

    Listing the dataset is the first thing it does, so a missing or wrong
    dataset root fails here, in one line, before any cluster starts.
    """
    manifest = build_manifest(exp.dataset, exp.seed)
    counts = manifest.counts()
    log.info(
        "dataset: %d images in %d classes (train %d, val %d, test %d)",
        len(manifest), len(manifest.class_names), counts["train"], counts["val"], counts["test"],
    )
    return FeatureStore.create(
        exp.store.url,
        config=exp.to_dict(),
        fingerprint=exp.extraction_fingerprint(),
        manifest=manifest,
        chunk_rows=exp.store.chunk_rows,
        seed=exp.seed,
        overwrite=overwrite,
        storage_options=exp.store.storage_options,
    )


def run_extract(
    exp: Experiment,
    *,
    store: FeatureStore | None = None,
    client: Any = None,
    overwrite: bool = False,
    progress: bool = True,
) -> ExtractSummary:
    """Run (or resume) extraction into ``exp.store.url``.

    Parameters
    ----------
    exp : Experiment
    store : FeatureStore, optional
        The store as :func:`prepare_store` created or reopened it (default:
        prepared here).
    client : distributed.Client, optional
        Where to run; by default a client from :func:`lsic.cluster.make_client`
        sized for extraction (closed again at the end).
    overwrite : bool
        Replace a store made from another configuration instead of refusing it
        (when the store is prepared here).
    progress : bool
        Show a progress bar on the client.

    Raises
    ------
    StoreError
        When some row chunks failed; the completed ones are kept, so rerunning
        the same command computes only the rest.
    """
    t0 = time.perf_counter()
    if store is None:
        store = prepare_store(exp, overwrite=overwrite)
    for fs in exp.feature_sets:
        store.create_features(fs.name, fs.dim, fs)
    plan = plan_extract(exp, store)
    if plan.complete:
        log.info("extract: store %s is complete; nothing to do", store.url)
        return _summary(exp, store, 0, time.perf_counter() - t0)

    with stage_client(exp.cluster, "extract", client) as client:
        log.info("extract: dashboard %s", getattr(client, "dashboard_link", "n/a"))
        if plan.missing_codebooks:
            log.info("extract: fitting codebooks %s", ", ".join(plan.missing_codebooks))
            tasks = codebook_graph(exp, store, plan.missing_codebooks)
            execute(client, tasks, "codebooks", progress, unit="set")
        plan = plan_extract(exp, store)
        t_feat = time.perf_counter()
        bag = feature_bag(exp, store, plan.missing_chunks)
        results = execute(client, bag.to_delayed(), "extract", progress, unit="chunk", allow_errors=True)
    done = [r for part in results if isinstance(part, list) for r in part]
    errors = [r for r in results if isinstance(r, BaseException)]
    images_done = sum(r["images"] for r in done)
    records = store.write_failures()
    if errors:
        raise StoreError(
            f"{len(errors)} of {len(plan.missing_chunks)} row chunks failed ({errors[0]!r}); "
            "finished chunks are kept, rerun the same command to resume"
        )
    store.mark_extract_complete()
    summary = _summary(exp, store, images_done, time.perf_counter() - t_feat, n_failed=len(records))
    log.debug(summary.line())  # the CLI prints it
    return summary


def _summary(exp: Experiment, store: FeatureStore, images_done: int, seconds: float,
             n_failed: int | None = None) -> ExtractSummary:
    valid = store.valid()
    n = store.n_images
    sizes = {fs.name: store.feature_bytes(fs.name) for fs in exp.feature_sets}
    return ExtractSummary(
        store=exp.store.url,
        n_images=n,
        n_valid=int(valid.sum()),
        n_failed=int(n - valid.sum()) if n_failed is None else n_failed,
        images_done=images_done,
        seconds=seconds,
        bytes_per_set=sizes,
    )
