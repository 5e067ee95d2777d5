"""Benchmark: the training workflow at ILSVRC shape: 1,000 classes, >= 100,000 rows, 16,384 dims.

A synthetic store of LCC-like rows (non-negative, ~26% non-zeros,
L2-normalised, sparse class prototypes plus noise: a linear SVM learns
them) is written by
``lsic.workflows.testing.write_lcc_like_store`` (the extraction layout,
the LCC codec, chunk by chunk, never the whole array in memory), then trained with
``run_train`` on a local cluster from ``lsic.cluster.make_client(stage="train")``,
the path ``lsic train`` takes:

* main run: ``--rows`` training rows, 2 epochs, 1 actor using every core,
  validation each epoch, then the val/test score reduce;
* memory curve: the same at ``--memory-fractions`` of the rows (default
  1/4 and 1/2, i.e. 25k and 50k beside 100k), each on a fresh cluster so that
  the workers' peak RSS is that run's own;
* class parallelism: one epoch with 1 actor on one core against 2 actors on
  one core each (2 single-threaded workers, each process pinned to its own
  CPU so that an actor's read+decode thread shares its core; each actor
  reads every chunk and trains half the classes): the stand-in for two
  machines on a 2-core host.

The limit model is measured in the same run, on this machine and its load:
the margin GEMM rate (a stored chunk times a (classes x dims) float32 matrix,
numpy's BLAS on all cores, best of 5) and the read+decompress rate of the
same chunks (``FeatureStore.read_chunk`` into a reused buffer in one thread,
as the actor's prefetch reads them). ``limit_s = max(2 * (rows + val_rows) *
classes * dims / gemm_flops_per_s, decoded bytes of the training chunks /
read_bytes_per_s)``: the flops of an epoch of the main run are the block-mode
margins of every training row and the scores of every validation row (the run
validates each epoch, and the epoch's time includes it). The rank updates of
the hinge-active pairs are left out (numba loops, not BLAS; at `--signal` 0.15 and 0.3
0.2% of the (row, class) pairs are active, which adds 0.8% to the
flops: v and u of each active pair).

The last line is one JSON object; the same figures go to a result file
(``_results.finish``). Single runs, not medians of 5: one full run takes
hours on 2 cores. The data are synthetic.

    python benchmarks/bench_scale.py                                   # 100,000 x 16,384 x 1,000 (idle machine, hours)
    python benchmarks/bench_scale.py --rows 8000 --dims 4096           # reduced size
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import statistics
import time

from _results import finish, scratch_dir

import numpy as np

from lsic.cluster import make_client
from lsic.workflows.testing import write_lcc_like_store
from lsic.workflows.config import parse_experiment
from lsic.workflows.store import FeatureStore
from lsic.workflows.train import live_workers, run_train

log = logging.getLogger("bench_scale")


def experiment(url: str, *, epochs: int, lam: float, actors: int | None = None, threads: int | None = None,
               validate: bool = True):
    fs = {"name": "f", "descriptor": "hog", "coding": "lcc", "codebook_size": 4, "kappa": 2}
    return parse_experiment({
        "dataset": {"root": "unused"}, "feature_sets": [fs], "store": {"url": url}, "seed": 1,
        "train": {"epochs": epochs, "lam": lam, "eta0": None, "mode": "block", "actors": actors,
                  "threads_per_actor": threads, "validate_each_epoch": validate},
    })


def gemm_rate(X: np.ndarray, n_classes: int, repeats: int = 5) -> float:
    """Float32 flops/s of the block-mode margin GEMM ``X @ W.T`` (W: classes x dims), best of ``repeats``.

    The best, not the median: the limit is what the machine can do, and a
    median of three varied from 119 to 141 GFLOP/s between runs on the idle machine.
    """
    W = np.random.default_rng(0).random((n_classes, X.shape[1]), dtype=np.float32)
    X @ W[:8].T  # warm up BLAS
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        X @ W.T
        times.append(time.perf_counter() - t)
    return 2.0 * X.shape[0] * X.shape[1] * n_classes / min(times)


def read_rate(url: str, chunks: list[int]) -> tuple[float, float]:
    """Decoded bytes/s and stored bytes/s of reading ``chunks`` of set ``f`` in one thread (read + decode)."""
    store = FeatureStore.open(url)
    buf = np.zeros((store.chunk_rows, store.features("f").shape[1]), np.float32)  # reused, as the actor does
    decoded = 0
    t = time.perf_counter()
    for k in chunks:
        decoded += store.read_chunk("f", k, out=buf).nbytes
    s = time.perf_counter() - t
    stored = store.feature_bytes("f") * len(chunks) / max(1, -(-store.n_images // store.chunk_rows))
    return decoded / s, stored / s


def _warm_up() -> None:
    from lsic.pipeline import OneVsAllASGD

    X = np.abs(np.random.default_rng(0).normal(size=(64, 16))).astype(np.float32)
    OneVsAllASGD(16, [0, 1, 2], lam=1e-3, eta0=None, mode="block").partial_fit(X, np.arange(64) % 3)


def _pin_process(cpu: int) -> list[int]:
    """Confine every thread of this process (and the threads it starts later) to one CPU."""
    for tid in os.listdir("/proc/self/task"):
        try:
            os.sched_setaffinity(int(tid), {cpu})
        except OSError:  # a thread that ended meanwhile
            pass
    return sorted(os.sched_getaffinity(0))


def pin_workers(client) -> dict[str, int]:
    """One CPU per worker process, so that "one core each" holds for the actor's prefetch thread too.

    Unpinned, a single actor's read+decode thread runs on the idle second
    core while its kernel runs on the first: "1 actor on one core" then
    uses more than one core, and the 2-actor comparison says little.
    """
    cpus = sorted(os.sched_getaffinity(0))
    workers = sorted(live_workers(client))
    if len(workers) > len(cpus):
        raise SystemExit(f"bench_scale: {len(workers)} workers to pin on {len(cpus)} CPUs; use fewer workers")
    return {w: client.run(_pin_process, cpus[i], workers=[w])[w][0] for i, w in enumerate(workers)}


def train_run(url: str, *, epochs: int, lam: float, actors: int | None, threads: int | None, validate: bool,
              pin: bool = False, **cluster) -> dict:
    """``run_train`` on a fresh local cluster sized for training (so its workers' peak RSS belongs to this call alone)."""
    with make_client(stage="train", **cluster) as client:
        client.run(_warm_up)  # load numba's compiled kernels in the workers before the timed epochs
        if pin:
            log.info("workers pinned to CPUs %s", pin_workers(client))
        s = run_train(experiment(url, epochs=epochs, lam=lam, actors=actors, threads=threads, validate=validate),
                      client=client, progress=True, restart=True)
    h = s.history
    return {
        "seconds": s.seconds, "epoch_s_each": [r.seconds for r in h], "actor_loop_s_each": [r.actor_seconds for r in h],
        "checkpoint_s_each": [r.checkpoint_seconds for r in h],
        "val_top1": h[-1].val_top1.get("f"), "val_top5": h[-1].val_top5.get("f"),
        "chunk_loads_per_epoch": s.chunk_loads_per_epoch, "train_chunks": s.train_chunks,
        "bytes_read": s.bytes_read, "peak_actor_rss_mb": s.peak_rss_bytes / 2**20,
        "model_mb": s.model_bytes / 2**20, "peak_chunk_mb": s.peak_chunk_bytes / 2**20, "n_actors": s.n_actors,
        "restarts": s.restarts, "line": s.line(),
    }


def n_key(n: int) -> str:
    return f"{n // 1000}k" if n % 1000 == 0 else str(n)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", type=int, default=100_000, help="training rows (default 100,000)")
    ap.add_argument("--dims", type=int, default=16_384)
    ap.add_argument("--classes", type=int, default=1000)
    ap.add_argument("--chunk-rows", type=int, default=1024)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--eval-rows", type=int, default=None,
                    help="validation rows and test rows each (default rows / 20, at least 2 per class)")
    ap.add_argument("--lam", type=float, default=1e-4)
    ap.add_argument("--signal", type=float, default=0.15,
                    help="class prototype strength (at 100,000 x 16,384 x 1,000 after 2 epochs: 0.15 gives 49%% "
                         "validation top-1, 0.3 gives 100%%)")
    ap.add_argument("--memory-fractions", default="0.25,0.5",
                    help="smaller training sets for the memory curve, as fractions of --rows ('' for none)")
    ap.add_argument("--no-scaling", action="store_true", help="skip the 1 actor vs 2 actors (1 core each) runs")
    ap.add_argument("--scaling-only", action="store_true",
                    help="only the limit model and the 1 actor vs 2 actors runs (no main run, no memory curve)")
    ap.add_argument("--read-chunks", type=int, default=16, help="chunks read to measure the read+decode rate")
    ap.add_argument("--tmp", metavar="DIR", default=None, help="scratch folder for the stores, kept and reused by "
                    "later runs (default: a new temporary folder, removed at the end)")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s")
    logging.getLogger("lsic").setLevel(logging.INFO)
    log.setLevel(logging.INFO)

    n_eval = args.eval_rows or max(args.rows // 20, 2 * args.classes)
    tmp = scratch_dir(args.tmp, "scale-bench-")
    out: dict = {"rows": args.rows, "classes": args.classes, "dims": args.dims, "chunk_rows": args.chunk_rows,
                 "epochs": args.epochs, "val_rows": n_eval, "test_rows": n_eval, "lam": args.lam, "signal": args.signal,
                 "cpus": os.cpu_count(), "loadavg_start": list(os.getloadavg())}
    try:
        url = str(tmp / f"n{args.rows}-d{args.dims}-k{args.classes}-s{args.signal:g}.zarr")
        t = time.perf_counter()
        if args.tmp and FeatureStore.exists(url) and FeatureStore.open(url).extract_complete:
            log.info("reusing the store %s (same rows, dims, classes and signal; from an earlier run with --tmp)", url)
        else:
            write_lcc_like_store(url, n_train=args.rows, n_val=n_eval, n_test=n_eval, dim=args.dims,
                                 n_classes=args.classes, chunk_rows=args.chunk_rows, seed=0, signal=args.signal)
        out["write_store_s"] = round(time.perf_counter() - t, 1)
        store = FeatureStore.open(url)
        out["store_mb"] = round(store.feature_bytes("f") / 2**20, 1)
        train_chunks = store.split_chunks("train")
        log.info("store %s written in %.0f s (%.0f MiB)", url, out["write_store_s"], out["store_mb"])

        # the limit model's two rates, measured now on the same chunks
        step = max(1, len(train_chunks) // args.read_chunks)
        sample = train_chunks[::step][:args.read_chunks]
        dec_rate, stored_rate = read_rate(url, sample)
        a, b = store.chunk_bounds(sample[0])
        flops_rate = gemm_rate(np.asarray(store.features("f")[a:b]), args.classes)
        decoded_per_epoch = sum(int(np.diff(store.chunk_bounds(k))[0]) for k in train_chunks) * args.dims * 4
        # an epoch of the main run: the margins of every training row, then the scores of every
        # validation row (validate_each_epoch; the epoch's time includes them)
        flops = 2.0 * (args.rows + n_eval) * args.classes * args.dims
        compute_s, read_s = flops / flops_rate, decoded_per_epoch / dec_rate
        out.update({"gemm_gflops": round(flops_rate / 1e9, 2), "read_decode_mb_per_s": round(dec_rate / 2**20, 1),
                    "read_stored_mb_per_s": round(stored_rate / 2**20, 1),
                    "compute_bound_s": round(compute_s, 2), "read_bound_s": round(read_s, 2),
                    "limit_s": round(max(compute_s, read_s), 2)})
        log.info("limit: compute %.1f s (%.1f GFLOP/s), read %.1f s (%.0f MiB/s decoded)", compute_s,
                 flops_rate / 1e9, read_s, dec_rate / 2**20)

        if not args.scaling_only:
            # main run: 1 actor, all cores, validation each epoch
            main_run = train_run(url, epochs=args.epochs, lam=args.lam, actors=None, threads=None, validate=True)
            log.info("%s", main_run["line"])
            epoch_s = main_run["epoch_s_each"][-1]  # the last epoch: numba and codecs are warm
            ckpt = main_run["checkpoint_s_each"]
            out.update({
                "epoch_s": round(epoch_s, 2),
                "epoch_s_each": [round(x, 2) for x in main_run["epoch_s_each"]],
                "actor_loop_s_each": [round(x, 2) for x in main_run["actor_loop_s_each"]],
                "rows_classes_per_s": round(args.rows * args.classes / epoch_s),
                "epoch_over_limit": round(epoch_s / max(compute_s, read_s), 2),
                "chunk_loads_per_epoch": main_run["chunk_loads_per_epoch"],
                "train_chunks": len(train_chunks),
                "checkpoint_s_per_epoch": round(statistics.median(ckpt), 2),
                "checkpoint_fraction_of_epoch": round(statistics.median(ckpt) / epoch_s, 3),
                "model_mb": round(main_run["model_mb"], 1),
                "val_top1": main_run["val_top1"], "val_top5": main_run["val_top5"],
                "train_run_s": round(main_run["seconds"], 1),
                "restarts": main_run["restarts"],
            })
            rss = {n_key(args.rows): round(main_run["peak_actor_rss_mb"], 1)}

            # memory curve: smaller n, same val/test rows, fresh clusters
            fractions = [float(f) for f in args.memory_fractions.split(",") if f.strip()]
            for f in fractions:
                n = max(1, int(round(args.rows * f)))
                u = str(tmp / f"n{n}.zarr")
                write_lcc_like_store(u, n_train=n, n_val=n_eval, n_test=n_eval, dim=args.dims, n_classes=args.classes,
                                     chunk_rows=args.chunk_rows, seed=0, signal=args.signal)
                r = train_run(u, epochs=args.epochs, lam=args.lam, actors=None, threads=None, validate=True)
                log.info("memory n=%d: %s", n, r["line"])
                rss[n_key(n)] = round(r["peak_actor_rss_mb"], 1)
                shutil.rmtree(u, ignore_errors=True)
            rss = dict(sorted(rss.items(), key=lambda kv: float(kv[0].rstrip("k")) * (1000 if kv[0].endswith("k") else 1)))
            out["peak_actor_rss_mb"] = rss
            if len(rss) > 1:
                keys = list(rss)
                out[f"rss_growth_{keys[0]}_to_{keys[-1]}"] = round(rss[keys[-1]] / rss[keys[0]], 3)

        # class parallelism: 1 actor on one core vs 2 actors on one core each (2 single-threaded workers)
        if not args.no_scaling:
            one = train_run(url, epochs=1, lam=args.lam, actors=1, threads=1, validate=False,
                            workers=2, threads_per_worker=1, pin=True)
            two = train_run(url, epochs=1, lam=args.lam, actors=2, threads=1, validate=False,
                            workers=2, threads_per_worker=1, pin=True)
            log.info("1 actor x 1 core: %s", one["line"])
            log.info("2 actors x 1 core: %s", two["line"])
            out.update({
                "epoch_s_1_actor_1_core": round(one["epoch_s_each"][0], 2),
                "epoch_s_2_actors_1_core_each": round(two["epoch_s_each"][0], 2),
                "scaling_2_actors_1_core_each": round(one["epoch_s_each"][0] / two["epoch_s_each"][0], 2),
                "scaling_actor_loop": round(one["actor_loop_s_each"][0] / two["actor_loop_s_each"][0], 2),
                "chunk_loads_per_epoch_2_actors": two["chunk_loads_per_epoch"],
                "restarts_scaling_runs": [one["restarts"], two["restarts"]],
            })
    finally:
        if args.tmp is None:
            shutil.rmtree(tmp, ignore_errors=True)
    out["loadavg_end"] = list(os.getloadavg())
    finish("bench_scale", out)


if __name__ == "__main__":
    main()
