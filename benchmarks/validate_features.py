"""Choose descriptor and coding settings on validation images (split 0's training portion only).

Extracts, in-process, features of the shipped config's split-0 training
images (``train_per_class - val_per_class`` per class for training, the
config's ``val_per_class`` held out for validation; test images are never
read), then trains :class:`lsic.pipeline.ASGDClassifier` (block mode, the
config's epochs) per variant and prints validation mean per-class accuracy.

Variants (``--variants``, comma-separated): the config's own feature sets by
name (``hog_lcc``, ``hoglbp_lcc``, ``hog_svc`` for the shipped caltech101) and

- ``hog_lcc``   the shipped hog_lcc set (HOG, LCC p=1024 kappa 5, max pooling 1+4+16)
- ``sift_lcc``  the same with dense SIFT (smoothing, bilinear binning, window, contrast)
- ``hog_fv``    HOG, Fisher vectors (PCA ``--fv-pca``, K = ``--fv-k``), pyramid 1x1 + 2x2 + 3x1
- ``sift_fv``   the same with dense SIFT

Codebooks / GMMs are fitted on a descriptor sample of the training images.
Pooled vectors are cached in ``--cache`` (keyed by variant and sizes;
default ``runs/validate-features-cache`` under the current folder) so a rerun
only retrains. ``--data`` is the Caltech-101 root (a folder of class folders;
default: the shared copy beside the repository); an image that cannot be
decoded stops the run with a one-line error and no figure. Each variant is trained with lambda in ``--lams`` (all
in one pass, :func:`fit_lambda_grid`); the line per variant reports the
accuracy at the config's lambda and the best of the grid.

Usage::

    python benchmarks/validate_features.py [--data DIR] [--classes N | A:B] [--variants hog_lcc,sift_lcc,sift_fv]
        [--lams 1e-4,3e-4] [--fuse hog_lcc+sift_fv] [--fuse-lams sift_fv=3e-4]

The last line of output is one JSON object {variant: {lam: accuracy %}, ...};
the same figures go to a result file (``_results.finish``).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from _results import dataset_root, fail, finish

import numpy as np
from threadpoolctl import threadpool_limits

from lsic.pipeline import (
    Codebook,
    DescriptorGrid,
    FeatureSet,
    ImageError,
    encode_pool,
    fit_lambda_grid,
    image_descriptors,
    mean_per_class_accuracy,
    score_stats,
    standardize_scores,
)
from lsic.workflows.config import load_experiment
from lsic.workflows.datasets import build_manifest

log = logging.getLogger("validate_features")

_P21 = ((1, 1), (2, 2), (4, 4))
_P8 = ((1, 1), (2, 2), (3, 1))


def variants(fv_k: int, fv_pca: int, shipped: list[FeatureSet]) -> dict[str, FeatureSet]:
    """The config's own sets (by name), the sets it shipped before (``hoglbp_lcc``, ``hog_svc``) and the SIFT / FV candidates."""
    return {
        "hoglbp_lcc": FeatureSet("hoglbp_lcc", "hog+lbp", "lcc", 1024, kappa=5, pyramid=_P21),
        "hog_svc": FeatureSet("hog_svc", "hog", "svc", 64, pca_dim=64, s=1.0, pyramid=((1, 1), (2, 2)),
                              power_norm=True),
        **{fs.name: fs for fs in shipped},
        "hog_lcc": FeatureSet("hog_lcc", "hog", "lcc", 1024, kappa=5, pyramid=_P21),
        "sift_lcc": FeatureSet("sift_lcc", "sift", "lcc", 1024, kappa=5, pyramid=_P21),
        "hog_fv": FeatureSet("hog_fv", "hog", "fv", fv_k, pca_dim=fv_pca, pyramid=_P8),
        "sift_fv": FeatureSet("sift_fv", "sift", "fv", fv_k, pca_dim=fv_pca, pyramid=_P8),
    }


def _read(path: str) -> bytes:
    import fsspec

    with fsspec.open(path, "rb") as f:  # manifest paths are fsspec URLs (file:..., tar://...)
        return f.read()


def _descriptors(path: str, kinds: list[str], grid: DescriptorGrid) -> dict:
    """Descriptors of one image; an image that cannot be decoded ends the run (no figure for failed inputs)."""
    try:
        return image_descriptors(_read(path), kinds, grid, name=path)
    except ImageError as exc:
        fail(f"unreadable input: {exc}; no figure is reported")


def _sample(paths: list[str], kinds: list[str], grid: DescriptorGrid, per: int, seed: int) -> dict[str, np.ndarray]:
    out: dict[str, list[np.ndarray]] = {k: [] for k in kinds}

    def one(i: int):
        desc = _descriptors(paths[i], kinds, grid)
        rng = np.random.default_rng([seed, i])
        res = {}
        for k, d in desc.items():
            v = d.values
            res[k] = v[np.sort(rng.choice(len(v), min(per, len(v)), replace=False))]
        return res

    with ThreadPoolExecutor(2) as pool:
        for res in pool.map(one, range(len(paths))):
            for k, v in res.items():
                out[k].append(v)
    return {k: np.concatenate(v) for k, v in out.items()}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", metavar="DIR", help="Caltech-101 root, a folder of class folders (default: the shared "
                    "copy beside the repository)")
    ap.add_argument("--config", default="caltech101")
    ap.add_argument("--classes", default="0", help="N: the first N classes; A:B: classes A..B-1; 0: all")
    ap.add_argument("--variants", default="hog_lcc,sift_lcc,sift_fv")
    ap.add_argument("--fv-k", type=int, default=64)
    ap.add_argument("--fv-pca", type=int, default=64)
    ap.add_argument("--codebook-images", type=int, default=600)
    ap.add_argument("--descriptors-per-image", type=int, default=200)
    ap.add_argument("--lams", default="1e-5,3e-5,1e-4,3e-4")
    ap.add_argument("--epochs", type=int, default=0, help="0: the config's train.epochs")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--cache", metavar="DIR", default="runs/validate-features-cache",
                    help="pooled vectors of earlier runs (default: runs/validate-features-cache)")
    ap.add_argument("--fuse", default="", help="e.g. hog_lcc+sift_fv,hog_lcc+sift_lcc: equal-weight fusion of "
                    "scores standardised with each set's training-row statistics, at each set's lambda "
                    "from --fuse-lams (default: the config's)")
    ap.add_argument("--fuse-lams", default="", help="e.g. sift_fv=3e-4,hog_fv=3e-4")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    t_start = time.perf_counter()

    data = str(dataset_root(args.data))
    exp = load_experiment(args.config, data=data)
    grid = exp.images
    man = build_manifest(exp.dataset, exp.seed)
    keep = man.split <= 1  # train and validation rows of split 0; test rows are never read
    lo, _, hi = args.classes.rpartition(":")
    lo, hi = int(lo or 0), int(hi)
    if hi:
        keep &= (man.labels >= lo) & (man.labels < hi)
    rows = np.flatnonzero(keep)
    paths = [man.paths[i] for i in rows]
    y = man.labels[rows]
    is_val = man.split[rows] == 1
    log.info("%d classes: %d train, %d validation images", len(np.unique(y)), (~is_val).sum(), is_val.sum())

    fsets = variants(args.fv_k, args.fv_pca, list(exp.feature_sets))
    names = [v for v in args.variants.split(",") if v]
    unknown = [v for v in names if v not in fsets]
    if unknown:
        raise SystemExit(f"--variants: unknown {unknown}; choose from {sorted(fsets)}")
    key = hashlib.sha1(json.dumps([data, hi if lo == 0 else [lo, hi], args.codebook_images, args.descriptors_per_image,
                                   repr(grid), exp.seed]).encode()).hexdigest()[:10]
    cache = Path(args.cache).resolve()
    cache.mkdir(parents=True, exist_ok=True)
    feats: dict[str, np.ndarray] = {}
    todo = []
    for v in names:
        f = cache / f"{v}-{fsets[v].codebook_size}-{fsets[v].pca_dim}-{key}.npy"
        if f.exists():
            feats[v] = np.load(f)
        else:
            todo.append(v)
    wall = {}
    if todo:
        kinds = sorted({fsets[v].descriptor for v in todo})
        train_idx = np.flatnonzero(~is_val)
        rng = np.random.default_rng(exp.seed)
        pick = np.sort(rng.choice(train_idx, min(args.codebook_images, len(train_idx)), replace=False))
        t0 = time.perf_counter()
        with threadpool_limits(limits=args.threads, user_api="blas"):
            sample = _sample([paths[i] for i in pick], kinds, grid, args.descriptors_per_image, exp.seed)
        wall["sample_s"] = time.perf_counter() - t0
        codebooks = {}
        for v in todo:
            t0 = time.perf_counter()
            with threadpool_limits(limits=args.threads, user_api="blas"):
                codebooks[v] = Codebook.fit(sample[fsets[v].descriptor], fsets[v], random_state=exp.seed)
            wall[f"codebook_{v}_s"] = time.perf_counter() - t0
            log.info("codebook %s fitted in %.0f s", v, wall[f"codebook_{v}_s"])
        out = {v: np.zeros((len(paths), fsets[v].dim), np.float32) for v in todo}
        desc_s = np.zeros(1)

        def one(i: int) -> None:
            t = time.perf_counter()
            desc = _descriptors(paths[i], kinds, grid)
            for v in todo:
                out[v][i] = encode_pool(desc[fsets[v].descriptor], codebooks[v])
            desc_s[0] += time.perf_counter() - t

        t0 = time.perf_counter()
        with threadpool_limits(limits=1, user_api="blas"), ThreadPoolExecutor(args.threads) as pool:
            for j, _ in enumerate(pool.map(one, range(len(paths)))):
                if j % 200 == 0:
                    log.info("encoded %d / %d images (%.0f s)", j, len(paths), time.perf_counter() - t0)
        wall["encode_s"] = time.perf_counter() - t0
        for v in todo:
            np.save(cache / f"{v}-{fsets[v].codebook_size}-{fsets[v].pca_dim}-{key}.npy", out[v])
            feats[v] = out[v]

    lams = [float(s) for s in args.lams.split(",")]
    epochs = args.epochs or exp.train.epochs
    results: dict[str, dict[str, float]] = {}
    fuse_lam = {v: exp.train.lam for v in names}
    for item in filter(None, args.fuse_lams.split(",")):
        k, val = item.split("=")
        fuse_lam[k] = float(val)
        if fuse_lam[k] not in lams:
            lams.append(fuse_lam[k])
    scores: dict[str, np.ndarray] = {}
    for v in names:
        X = feats[v]
        t0 = time.perf_counter()
        models = fit_lambda_grid(X[~is_val], y[~is_val], lams, epochs=epochs, mode="block", random_state=exp.seed,
                                 n_jobs=args.threads)
        accs = {f"{lam:g}": 100 * mean_per_class_accuracy(y[is_val], m.predict(X[is_val])) for lam, m in zip(lams, models)}
        wall[f"train_{v}_s"] = time.perf_counter() - t0
        results[v] = accs
        m = models[lams.index(fuse_lam[v])]
        mu, sd = score_stats(m.decision_function(X[~is_val]))
        scores[v] = standardize_scores(m.decision_function(X[is_val]), mu, sd)
        best = max(accs, key=accs.get)
        print(f"{v:10s} dim {X.shape[1]:7d}  val acc at lam {exp.train.lam:g}: "
              f"{accs.get(f'{exp.train.lam:g}', float('nan')):.1f}%  best {accs[best]:.1f}% (lam {best})  "
              f"all {json.dumps({k: round(a, 1) for k, a in accs.items()})}", flush=True)
    fused = {}
    for combo in filter(None, args.fuse.split(",")):
        parts = combo.split("+")
        S = sum(scores[p] for p in parts)
        classes = np.unique(y[~is_val])
        fused[combo] = 100 * mean_per_class_accuracy(y[is_val], classes[S.argmax(axis=1)])
        lam_txt = ", ".join(f"{p} {fuse_lam[p]:g}" for p in parts)
        print(f"fused {combo}: val acc {fused[combo]:.1f}% (equal weights; lambdas {lam_txt})", flush=True)
    summary = {"val_mean_per_class_acc": results, "fused": fused, "n_train": int((~is_val).sum()), "n_val": int(is_val.sum()),
               "fv_k": args.fv_k, "fv_pca": args.fv_pca, "epochs": epochs,
               "wall_s": round(time.perf_counter() - t_start, 1), "stage_s": {k: round(s, 1) for k, s in wall.items()}}
    finish("validate_features", summary, inputs=len(paths))
    return summary


if __name__ == "__main__":
    main()
