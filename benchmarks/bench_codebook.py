"""Codebooks of Table 1 size: k-means with 8,192-32,768 centres, time per iteration and fit projections.

Run: python benchmarks/bench_codebook.py [--data DIR] [--descriptors N] [--iters I] [--sets set1,set4] [--methods minibatch,faiss,lloyd]

Descriptors are dense HOG / HOG+LBP of Caltech-101 photos upscaled to a
500 px longer side (every descriptor of ~N / 8,600 photos; the cost of an
iteration depends on n, p and d only). Each method runs ``--iters``
iterations from random centres with every core of the machine (BLAS and
OpenMP limits lifted, as the codebook task does), and reports seconds per
iteration (a Lloyd iteration, or one MiniBatchKMeans epoch: both cost one
n x p x d distance pass). A fit's cost is linear in n per iteration, so the
projections scale the measured iteration to 1 M descriptors and to the
paper's sample (100,000 images x 50 descriptors = 5 M) times 20 iterations
(faiss's k-means default is 25; lsic's MiniBatchKMeans stops early, usually
within 10-30 epochs). Methods:

- ``minibatch``: scikit-learn MiniBatchKMeans as ``Codebook.fit`` configures
  it for these sizes (batch 2p, random init);
- ``lloyd``: scikit-learn KMeans (Lloyd, random init);
- ``faiss``: faiss-cpu ``Kmeans`` (if installed).

``--data`` is a Caltech-101 root (a folder of class folders; default: the
shared copy beside the repository). The last line is one JSON object; the same
figures go to a result file (``_results.finish``).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

from _results import dataset_root, finish

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_table1 import _photos  # noqa: E402

from lsic.pipeline import TABLE1, DescriptorGrid, image_descriptors  # noqa: E402

log = logging.getLogger("bench_codebook")
PAPER_SAMPLE = 100_000 * 50
ITERS_PROJECTED = 20


def _sample(n: int, root: Path) -> tuple[dict[str, np.ndarray], int]:
    """``n`` descriptors of each kind and the number of photos they came from."""
    grid = DescriptorGrid()
    out: dict[str, list[np.ndarray]] = {"hog": [], "hog+lbp": []}
    got, skip, n_photos = 0, 0, 0
    while got < n:
        for d in _photos(16, skip, 500, root):
            for k, v in image_descriptors(d, list(out), grid).items():
                out[k].append(v.values)
            got += len(out["hog"][-1])
            n_photos += 1
        skip += 16
    return {k: np.concatenate(v)[:n] for k, v in out.items()}, n_photos


def _time_minibatch(X, p, iters, seed):
    from sklearn.cluster import MiniBatchKMeans

    km = MiniBatchKMeans(n_clusters=p, init="random", n_init=1, batch_size=max(4096, 2 * p),
                         random_state=seed, max_iter=iters, reassignment_ratio=0.001, max_no_improvement=None)
    t = time.perf_counter()
    km.fit(X)
    return (time.perf_counter() - t) / iters


def _time_lloyd(X, p, iters, seed):
    from sklearn.cluster import KMeans

    km = KMeans(n_clusters=p, init="random", n_init=1, max_iter=iters, tol=0.0, random_state=seed)
    t = time.perf_counter()
    km.fit(X)
    return (time.perf_counter() - t) / iters


def _time_faiss(X, p, iters, seed):
    import faiss

    faiss.omp_set_num_threads(os.cpu_count() or 1)
    km = faiss.Kmeans(X.shape[1], p, niter=iters, seed=seed, verbose=False, max_points_per_centroid=10**9)
    t = time.perf_counter()
    km.train(X)
    return (time.perf_counter() - t) / iters


METHODS = {"minibatch": _time_minibatch, "lloyd": _time_lloyd, "faiss": _time_faiss}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--descriptors", type=int, default=1_000_000)
    ap.add_argument("--iters", type=int, default=2)
    ap.add_argument("--sets", default="set1,set2,set3,set4")
    ap.add_argument("--methods", default="minibatch,faiss")
    ap.add_argument("--data", metavar="DIR", help="Caltech-101 root, a folder of class folders (default: the shared "
                    "copy beside the repository)")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    methods = [m for m in args.methods.split(",") if m]
    if "faiss" in methods:
        try:
            import faiss  # noqa: F401
        except ImportError:
            log.info("faiss-cpu not installed: skipping it")
            methods.remove("faiss")
    with threadpool_limits(1, user_api="blas"):
        X, n_photos = _sample(args.descriptors, dataset_root(args.data))
    n = len(X["hog"])
    res: dict[str, object] = {"descriptors": n, "iters_timed": args.iters, "cores": os.cpu_count(),
                              "iters_projected": ITERS_PROJECTED}
    per_iter: dict[str, dict[str, float]] = {}
    with threadpool_limits(None):  # every core, as the codebook task on its worker
        for name in args.sets.split(","):
            fs = TABLE1[name]
            Xs = np.ascontiguousarray(X[fs.descriptor], dtype=np.float32)
            for m in methods:
                t = METHODS[m](Xs, fs.codebook_size, args.iters, 0)
                per_iter.setdefault(m, {})[name] = round(t, 2)
                log.info("%s %s p=%d n=%d d=%d: %.2f s per iteration", m, name, fs.codebook_size, n, Xs.shape[1], t)
    res["s_per_iteration"] = per_iter
    res["projected_fit_s_1M"] = {
        m: {s: round(t * 1e6 / n * ITERS_PROJECTED) for s, t in v.items()} for m, v in per_iter.items()
    }
    res["projected_fit_h_paper_sample_5M"] = {
        m: {s: round(t * PAPER_SAMPLE / n * ITERS_PROJECTED / 3600, 2) for s, t in v.items()}
        for m, v in per_iter.items()
    }
    res["gflops_per_s"] = {
        m: {s: round(2 * n * TABLE1[s].codebook_size * X[TABLE1[s].descriptor].shape[1] / t / 1e9, 1)
            for s, t in v.items()} for m, v in per_iter.items()
    }
    finish("bench_codebook", res, inputs=n_photos)


if __name__ == "__main__":
    main()
