"""Distributed batch prediction: ``lsic predict MODEL_OR_STORE --input URL --output URL``.

Plan, then graph, then execute, resumable like extraction:

1. :func:`list_inputs` walks the input (a folder, a list file, a tar archive or
   a folder of them, at any fsspec URL) into one row per image, in a fixed
   order; tar members are located by byte range as extraction does.
2. The rows are cut into partitions. ``<output>.parts/`` holds the plan
   (``plan.json``: input, model fingerprint, partition size, row count) and,
   per partition ``k``, ``part-<k>.parquet`` and then its completion mark
   ``part-<k>.done``, written last.
3. One Dask task per missing partition loads the model once per worker
   process (from the model file or store URL), reads the images, scores the
   readable ones as one batch and writes its part. An unreadable image gets a
   row with its ``error`` filled in: rows are never dropped.
4. When every partition is marked, the parts are concatenated in order into
   the output file (Parquet, or CSV when asked). The parts stay (a few dozen
   bytes per image), so rerunning a finished prediction only re-assembles.

Rerunning the same command after a failure re-plans from the marks and
computes only the missing partitions.

Output columns: ``path`` (str), ``error`` (str, null when classified), then
``class_1``, ``score_1``, ... ``class_<k>``, ``score_<k>`` (best first; the
fused score of §5.2, float32; null for an image with an error).
"""

from __future__ import annotations

import json
import logging
import math
import posixpath
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import fsspec
import numpy as np
from dask import delayed

from lsic.pipeline import ConfigError, DataError, ImageError, StoreError

from ._stage import WorkerCache, execute, single_blas_thread, stage_client
from .datasets import open_fs, read_images, tar_records
from .model import LsicModel, check_top_k, load_model, top_k_indices

log = logging.getLogger(__name__)

FORMATS = ("parquet", "csv")
LIST_SUFFIXES = (".txt", ".lst", ".list")
MAX_PARTITION_ROWS = 256


# --------------------------------------------------------------------------- input listing


@dataclass(frozen=True)
class Inputs:
    """The images of a prediction input, in output row order.

    ``paths`` (n,), ``offsets`` and ``sizes`` (n,) int64 locate each image as
    the rows of a :class:`~lsic.workflows.datasets.Manifest` do (a tar member
    by its byte range, -1 for plain files).
    """

    paths: list[str]
    offsets: np.ndarray
    sizes: np.ndarray

    def __len__(self) -> int:
        return len(self.paths)


def _is_tar(path: str) -> bool:
    return posixpath.basename(path).endswith(".tar")


def _hidden(rel: str) -> bool:
    return any(part.startswith(".") for part in rel.split("/") if part)


def _list_lines(fs: fsspec.AbstractFileSystem, path: str, url: str) -> list[str]:
    """Image URLs of a list file: one per line, ``path`` or extraction's ``path label`` (label ignored)."""
    base = posixpath.dirname(path)
    out = []
    with fs.open(path, "rt") as fh:
        for line in fh:
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            parts = line.rsplit(None, 1)
            if len(parts) == 2 and "." not in parts[1] and "/" not in parts[1]:
                line = parts[0]  # a trailing class label
            out.append(line if "://" in line else fs.unstrip_protocol(line if line.startswith("/") else posixpath.join(base, line)))
    if not out:
        raise DataError(f"list file {url!r} names no images; give one image path or URL per line")
    return out


def list_inputs(url: str, storage_options: Mapping[str, Any] | None = None) -> Inputs:
    """Walk a prediction input into one row per image.

    ``url`` is a folder (every non-hidden file under it, recursively; ``.tar``
    files inside are expanded into their members), a plain ``.tar`` archive, a
    list file (``.txt``/``.lst``/``.list``: one path or URL per line, relative
    to the list file) or a single image. Every file becomes a row: a
    non-image gets an error row from prediction, it is not skipped.

    Raises
    ------
    DataError
        The input does not exist or lists nothing (one line).
    """
    so = dict(storage_options or {})
    fs, path = open_fs(url, so)
    paths: list[str] = []
    offsets: list[int] = []
    sizes: list[int] = []

    def add_tar(p: str) -> None:
        for r in tar_records(fs, p, lambda name: "" if not _hidden(name) else None):
            paths.append(r.path)
            offsets.append(r.offset)
            sizes.append(r.size)

    def add_file(p: str) -> None:
        paths.append(fs.unstrip_protocol(p))
        offsets.append(-1)
        sizes.append(-1)

    if fs.isdir(path):
        root = path.rstrip("/")
        for p in sorted(fs.find(path)):
            if _hidden(p[len(root):]):
                continue
            add_tar(p) if _is_tar(p) else add_file(p)
    elif fs.isfile(path):
        if _is_tar(path):
            add_tar(path)
        elif path.endswith(LIST_SUFFIXES):
            for item in _list_lines(fs, path, url):
                paths.append(item)
                offsets.append(-1)
                sizes.append(-1)
        else:
            add_file(path)
    else:
        raise DataError(f"prediction input {url!r} does not exist; check --input")
    if not paths:
        raise DataError(f"prediction input {url!r} holds no files; check --input")
    return Inputs(paths, np.asarray(offsets, np.int64), np.asarray(sizes, np.int64))


# --------------------------------------------------------------------------- plan


@dataclass(frozen=True)
class BatchPlan:
    """Partitions of a batch prediction and which of them are still missing (pure)."""

    n_images: int
    partition_rows: int
    missing: tuple[int, ...]

    @property
    def n_partitions(self) -> int:
        return max(math.ceil(self.n_images / self.partition_rows), 1)

    def bounds(self, k: int) -> tuple[int, int]:
        return k * self.partition_rows, min((k + 1) * self.partition_rows, self.n_images)


def parts_url(output: str) -> str:
    """Where the partitions of ``output`` live while it is being computed."""
    return output.rstrip("/") + ".parts"


def part_name(k: int) -> str:
    return f"part-{k:06d}"


def default_partition_rows(n: int) -> int:
    """Small enough for >= 64 partitions to balance the workers, at most 256 images."""
    return int(min(MAX_PARTITION_ROWS, max(4, math.ceil(n / 64))))


def plan_predict(record: Mapping[str, Any], done: set[int]) -> BatchPlan:
    n, rows = int(record["n_images"]), int(record["partition_rows"])
    n_parts = max(math.ceil(n / rows), 1)
    return BatchPlan(n, rows, tuple(k for k in range(n_parts) if k not in done))


def _done_parts(fs: fsspec.AbstractFileSystem, root: str) -> set[int]:
    try:
        names = fs.ls(root, detail=False)
    except FileNotFoundError:
        return set()
    out = set()
    for p in names:
        b = posixpath.basename(p)
        if b.startswith("part-") and b.endswith(".done"):
            out.add(int(b[5:-5]))
    return out


# --------------------------------------------------------------------------- tasks (run on workers)

_MODELS = WorkerCache(max_entries=1)  # one model at a time: weights can be gigabytes


def worker_model(source: str, fingerprint: str, storage_options: Mapping[str, Any]) -> LsicModel:
    """The model of ``source``, loaded once per worker process (keyed by its fingerprint, so a re-export reloads).

    Prediction tasks call it; calling it on every worker first (``client.run``)
    loads the model before the timed work, as the benchmark does.
    """
    return _MODELS.get((source, fingerprint), lambda: load_model(source, storage_options=storage_options))


def _schema(top_k: int) -> Any:
    import pyarrow as pa

    fields = [pa.field("path", pa.string()), pa.field("error", pa.string())]
    for i in range(1, top_k + 1):
        fields += [pa.field(f"class_{i}", pa.string()), pa.field(f"score_{i}", pa.float32())]
    return pa.schema(fields)


def predict_partition(
    k: int,
    paths: list[str],
    offsets: np.ndarray,
    sizes: np.ndarray,
    *,
    source: str,
    fingerprint: str,
    model_so: Mapping[str, Any],
    input_so: Mapping[str, Any],
    parts: str,
    parts_so: Mapping[str, Any],
    top_k: int,
) -> dict[str, int]:
    """Classify partition ``k``'s images, write ``part-<k>.parquet``, then its ``.done`` mark."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    single_blas_thread()
    model = worker_model(source, fingerprint, model_so)
    m = len(paths)
    errors: list[str | None] = [None] * m
    feats, ok = [], []
    for i, data in read_images(paths, offsets, sizes, dict(input_so)):
        if isinstance(data, Exception):
            errors[i] = f"cannot read {paths[i]!r}: {data}"
            continue
        try:
            feats.append(model.features(data, name=str(paths[i])))
            ok.append(i)
        except ImageError as exc:  # a config error, by contrast, fails the task: it would hit every row
            errors[i] = str(exc)
    kk = max(1, min(top_k, model.n_classes))
    classes = np.full((m, kk), None, dtype=object)
    scores = np.full((m, kk), np.nan, np.float32)
    if ok:
        s = model.scores_of_features(feats)
        idx = top_k_indices(s, kk)
        classes[ok] = model.classes_[idx].astype(object)
        scores[ok] = np.take_along_axis(s, idx, axis=1)
    bad = np.array([e is not None for e in errors], bool)
    cols: dict[str, Any] = {"path": pa.array([str(p) for p in paths], pa.string()),
                            "error": pa.array(errors, pa.string())}
    for j in range(kk):
        cols[f"class_{j + 1}"] = pa.array(list(classes[:, j]), pa.string())
        cols[f"score_{j + 1}"] = pa.array(scores[:, j], pa.float32(), mask=bad)
    table = pa.table(cols, schema=_schema(kk))
    base = f"{parts.rstrip('/')}/{part_name(k)}"
    with fsspec.open(base + ".parquet", "wb", **dict(parts_so)) as fh:
        pq.write_table(table, fh)
    with fsspec.open(base + ".done", "w", **dict(parts_so)) as fh:  # last: the part counts only when complete
        json.dump({"images": m, "failed": int(bad.sum())}, fh)
    return {"part": k, "images": m, "failed": int(bad.sum())}


# --------------------------------------------------------------------------- execute


@dataclass
class BatchSummary:
    """What a run of :func:`run_batch_predict` did."""

    output: str
    n_images: int
    n_failed: int
    images_done: int
    partitions_done: int
    seconds: float

    @property
    def images_per_s(self) -> float:
        return self.images_done / self.seconds if self.seconds > 0 else float("nan")

    def line(self) -> str:
        return (f"predict: {self.n_images} images ({self.images_done} this run in {self.partitions_done} partitions, "
                f"{self.images_per_s:.1f} images/s), {self.n_failed} could not be classified "
                f"(see the error column); output: {self.output}")


def _open_plan(parts: str, so: Mapping[str, Any], record: dict[str, Any], overwrite: bool) -> set[int]:
    """Create the parts folder with its plan, or reopen it to resume; returns the finished partitions."""
    fs, root = fsspec.core.url_to_fs(parts, **dict(so))
    plan_path = f"{root}/plan.json"
    if fs.exists(plan_path):
        with fs.open(plan_path, "rt") as fh:
            old = json.load(fh)
        if old == record:
            return _done_parts(fs, root)
        if not overwrite:
            changed = sorted(k for k in record if old.get(k) != record[k])
            raise StoreError(f"{parts!r} holds partitions of another prediction ({', '.join(changed)} differ); "
                             "rerun with --overwrite to start over, or choose another --output")
        fs.rm(root, recursive=True)
    elif overwrite and fs.exists(root):
        fs.rm(root, recursive=True)
    fs.makedirs(root, exist_ok=True)
    with fs.open(plan_path, "wt") as fh:
        json.dump(record, fh, indent=1)
    return set()


def assemble(parts: str, output: str, n_parts: int, fmt: str, *, so: Mapping[str, Any] | None = None) -> int:
    """Concatenate the partitions in order into ``output``; returns the number of rows.

    Streams one partition at a time, so the client holds one part, not the output.
    """
    import pyarrow.csv as pcsv
    import pyarrow.parquet as pq

    so = dict(so or {})
    rows = 0
    with fsspec.open(output, "wb", **so) as out:
        writer = None
        try:
            for k in range(n_parts):
                with fsspec.open(f"{parts.rstrip('/')}/{part_name(k)}.parquet", "rb", **so) as fh:
                    table = pq.read_table(fh)
                if writer is None:
                    writer = (pq.ParquetWriter(out, table.schema) if fmt == "parquet"
                              else pcsv.CSVWriter(out, table.schema))
                writer.write_table(table)
                rows += table.num_rows
        finally:
            if writer is not None:
                writer.close()
    return rows


def run_batch_predict(
    source: str,
    input_url: str,
    output: str,
    *,
    top_k: int = 5,
    fmt: str | None = None,
    client: Any = None,
    cluster: Mapping[str, Any] | None = None,
    partition_rows: int | None = None,
    storage_options: Mapping[str, Any] | None = None,
    overwrite: bool = False,
    progress: bool = True,
) -> BatchSummary:
    """Classify every image of ``input_url`` on the cluster and write one row per image to ``output``.

    Parameters
    ----------
    source : str
        A model file (``lsic export``) or an evaluated store; must be reachable by the workers.
    input_url : str
        Folder, list file, tar archive(s) or image at any fsspec URL (see :func:`list_inputs`).
    output : str
        The output file (any fsspec URL); partitions go to ``<output>.parts/`` meanwhile.
    top_k : int
        Classes per row.
    fmt : {"parquet", "csv"}, optional
        Default: from the output's suffix (``.csv`` -> csv), else parquet.
    client : distributed.Client, optional
        Default: :func:`lsic.cluster.make_client` with the ``cluster`` settings, sized as for extraction.
    partition_rows : int, optional
        Images per partition (default :func:`default_partition_rows`); fixed by the first run.
    storage_options : mapping, optional
        fsspec options for the input, the model and the output.
    overwrite : bool
        Discard partitions of a different earlier prediction into the same output.

    Raises
    ------
    StoreError
        Some partitions failed; the finished ones are kept, rerunning resumes.
    """
    fmt = fmt or ("csv" if output.lower().endswith(".csv") else "parquet")
    if fmt not in FORMATS:
        raise ConfigError(f"output format {fmt!r} is unknown; use one of {', '.join(FORMATS)}")
    top_k = check_top_k(top_k)
    so = dict(storage_options or {})
    t0 = time.perf_counter()
    model = load_model(source, storage_options=so)  # fails early, in one line, on a bad model
    fingerprint = model.fingerprint
    inputs = list_inputs(input_url, so)
    n = len(inputs)
    rows = int(partition_rows or default_partition_rows(n))
    record = {"input": input_url, "n_images": n, "partition_rows": rows, "model": fingerprint,
              "top_k": int(top_k), "paths_head": inputs.paths[:1] + inputs.paths[-1:]}
    parts = parts_url(output)
    plan = plan_predict(record, _open_plan(parts, so, record, overwrite))
    log.info("predict: %d images in %d partitions, %d to do (model %s)", n, plan.n_partitions, len(plan.missing),
             model)
    results: list[Any] = []
    t_run = time.perf_counter()
    if plan.missing:
        task = delayed(predict_partition, pure=False)
        tasks = []
        for k in plan.missing:
            a, b = plan.bounds(k)
            tasks.append(task(k, inputs.paths[a:b], inputs.offsets[a:b], inputs.sizes[a:b], source=source,
                              fingerprint=fingerprint, model_so=so, input_so=so, parts=parts, parts_so=so,
                              top_k=int(top_k)))
        # prediction is extraction's per-image work plus a small product: size the cluster like it
        with stage_client(cluster or {}, "extract", client) as client:
            results = execute(client, tasks, "predict", progress, unit="part", allow_errors=True)
    seconds = time.perf_counter() - t_run
    errors = [r for r in results if isinstance(r, BaseException)]
    done = [r for r in results if isinstance(r, dict)]
    if errors:
        raise StoreError(f"{len(errors)} of {len(plan.missing)} prediction partitions failed ({errors[0]!r}); "
                         "finished partitions are kept, rerun the same command to resume")
    n_rows = assemble(parts, output, plan.n_partitions, fmt, so=so)
    if n_rows != n:
        raise StoreError(f"assembled {n_rows} rows for {n} images from {parts!r}; rerun with --overwrite")
    n_failed = _count_failed(parts, plan.n_partitions, so)
    summary = BatchSummary(output, n, n_failed, sum(r["images"] for r in done), len(done), seconds)
    log.debug("%s (total %.1f s)", summary.line(), time.perf_counter() - t0)
    return summary


def _count_failed(parts: str, n_parts: int, so: Mapping[str, Any]) -> int:
    total = 0
    for k in range(n_parts):
        with fsspec.open(f"{parts.rstrip('/')}/{part_name(k)}.done", "rt", **dict(so)) as fh:
            total += int(json.load(fh)["failed"])
    return total
