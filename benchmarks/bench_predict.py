"""Batch prediction throughput and worker memory: a Caltech-101 model on Caltech-101 photos.

The model is exported (``lsic export``) from an evaluated store made with the
shipped ``caltech101`` config (``lsic run caltech101``; pass another store
made with that config, e.g. on a subset of classes, with ``--store``). The
input is a list file of Caltech-101 photos taken from every class folder in
turn (any photo: prediction does not need labels).

Each measurement is ``run_batch_predict`` (what ``lsic predict MODEL --input
--output`` runs) on a fresh local cluster started as extraction's is
(``make_client("local", stage="extract", workers=w, threads_per_worker=1)``),
after every worker has loaded the model and compiled the numba kernels on one
image (both happen once per worker process, whatever the collection size).
Throughput is images over the wall time of the whole call: listing, all
partitions, assembling the output file.

Memory: each worker's peak RSS (``ru_maxrss``) on the 2-worker cluster after
``--images`` images and again after ``3 x --images`` more on the same
workers; flat means memory does not grow with the number of images.

Usage::

    python benchmarks/bench_predict.py --store runs/caltech101.zarr --data DIR [--images 48] [--repeats 1]

``--data`` is a folder of class folders of photos (resolved to an absolute
path before the list file is written, so the list names the photos wherever
it lives). Every image that could not be classified counts as a failed
input, and a run with failed inputs reports no figure (exit code 1).

Last line: one JSON object with images_per_s_1w, images_per_s_2w, scaling_2w
(goal >= 1.7) and peak_worker_rss_mb (per input size), plus the workers' CPU
seconds per image (which, unlike wall time, a busy machine does not inflate
much), the model's feature sets and the input counts; the same figures go to
a result file (``_results.finish``).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

from _results import dataset_root, fail, finish, scratch_dir


def photo_list(data: Path, n: int, skip: int, path: Path) -> Path:
    """A list file of ``n`` photos, round-robin over the class folders, after the first ``skip``.

    The list names every photo by its absolute path: a list file's relative
    lines resolve against the list file's own folder, not the current one.
    """
    data = Path(data).resolve()
    classes = sorted(p for p in data.iterdir() if p.is_dir() and not p.name.startswith("."))
    files = [sorted(c.glob("*.jpg")) for c in classes]
    if not any(files):
        fail(f"no photos (*/*.jpg) under {data}; pass --data with a folder of class folders")
    out, i = [], 0
    while len(out) < skip + n and i < max(len(f) for f in files):
        out += [f[i] for f in files if i < len(f)]
        i += 1
    path.write_text("".join(f"{p}\n" for p in out[skip:skip + n]))
    return path


def _warm(source: str, fingerprint: str, image: str) -> int:
    """On a worker: load the model into its cache and run one image (numba compilation)."""
    from lsic.workflows.batch_predict import worker_model as _model

    model = _model(source, fingerprint, {})
    with open(image, "rb") as fh:
        model.features(fh.read(), name=image)
    return os.getpid()


def _peak_rss_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _cpu_s() -> float:
    return time.process_time()


def timed_run(client, model: str, inputs: Path, out: Path) -> tuple[float, float, int, int]:
    """Images/s (wall), worker CPU seconds per image, images and failed images of one batch prediction."""
    from lsic.workflows.batch_predict import run_batch_predict

    cpu0 = sum(client.run(_cpu_s).values())
    t0 = time.perf_counter()
    summary = run_batch_predict(model, str(inputs), str(out), client=client, overwrite=True, progress=False)
    seconds = time.perf_counter() - t0
    cpu = sum(client.run(_cpu_s).values()) - cpu0
    if summary.n_failed:
        import pyarrow.parquet as pq

        rows = pq.read_table(out, columns=["path", "error"]).to_pylist()
        for row in [r for r in rows if r["error"]][:5]:
            print(f"failed input: {row['path']}: {row['error']}", file=sys.stderr)
        print(f"{summary.n_failed} of {summary.n_images} images could not be classified", file=sys.stderr)
    return summary.n_images / seconds, cpu / summary.n_images, summary.n_images, summary.n_failed


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--store", default="runs/caltech101.zarr", help="an evaluated store of the caltech101 config")
    ap.add_argument("--data", metavar="DIR", help="a folder of class folders of photos (default: the shared "
                    "Caltech-101 beside the repository)")
    ap.add_argument("--images", type=int, default=48, help="images of the timed runs (memory: also 3x this)")
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--workdir", metavar="DIR", help="scratch folder, kept (default: a temporary one, removed)")
    args = ap.parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    from lsic.cluster import make_client
    from lsic.pipeline import LsicError
    from lsic.workflows.model import export_model

    data = dataset_root(args.data)
    tmp = scratch_dir(args.workdir, "bench-predict-")
    model_path = str(tmp / "model.lsic.zip")
    t0 = time.perf_counter()
    try:
        model = export_model(args.store, model_path)
    except LsicError as exc:
        fail(f"--store {args.store}: {exc}")
    export_s = time.perf_counter() - t0
    fingerprint = model.fingerprint
    n = args.images
    small = photo_list(data, n, 0, tmp / "small.txt")
    large = photo_list(data, 3 * n, n, tmp / "large.txt")
    warm_image = small.read_text().split("\n", 1)[0]

    rates: dict[int, list[float]] = {1: [], 2: []}
    cpu: dict[int, list[float]] = {1: [], 2: []}
    rss: dict[str, float] = {}
    inputs = failed = 0
    for workers in (1, 2):
        with make_client("local", stage="extract", workers=workers, threads_per_worker=1) as client:
            client.run(_warm, model_path, fingerprint, warm_image)
            for r in range(args.repeats):
                rate, cpu_per_image, k, bad = timed_run(client, model_path, small, tmp / f"out-{workers}w-{r}.parquet")
                rates[workers].append(rate)
                cpu[workers].append(cpu_per_image)
                inputs, failed = inputs + k, failed + bad
            if workers == 2:
                rss[str(n)] = max(client.run(_peak_rss_mb).values())
                _, _, k, bad = timed_run(client, model_path, large, tmp / "out-large.parquet")
                inputs, failed = inputs + k, failed + bad
                rss[str(3 * n)] = max(client.run(_peak_rss_mb).values())
        if failed:  # no figure for work that failed, and no second cluster for it either
            break
    if failed:
        finish("bench_predict", {}, inputs=inputs, inputs_failed=failed)
    r1, r2 = statistics.median(rates[1]), statistics.median(rates[2])
    result = {
        "store": Path(args.store).name,
        "n_classes": int(model.n_classes),
        "feature_sets": [fs.name for fs in model.feature_sets],
        "model_file_mb": round(os.path.getsize(model_path) / 2**20, 1),
        "export_s": round(export_s, 1),
        "images": n,
        "repeats": args.repeats,
        "images_per_s_1w": round(r1, 2),
        "images_per_s_2w": round(r2, 2),
        "scaling_2w": round(r2 / r1, 2),
        "peak_worker_rss_mb": {k: round(v) for k, v in rss.items()},
        "runs_images_per_s_1w": [round(x, 2) for x in rates[1]],
        "runs_images_per_s_2w": [round(x, 2) for x in rates[2]],
        # worker CPU per image: flat from 1 to 2 workers means the wall-time scaling is bounded by free cores
        "worker_cpu_s_per_image_1w": round(statistics.median(cpu[1]), 3),
        "worker_cpu_s_per_image_2w": round(statistics.median(cpu[2]), 3),
    }
    finish("bench_predict", result, inputs=inputs, inputs_failed=failed)
    return 0


if __name__ == "__main__":
    sys.exit(main())
