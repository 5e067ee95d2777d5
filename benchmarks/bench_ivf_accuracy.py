"""Caltech-101 accuracy of LCC with ``knn: ivf`` against exact neighbours, in-process on a subset.

Run: python benchmarks/bench_ivf_accuracy.py [--data DIR] [--classes C] [--train T] [--test M] [--codebook-size P]

C classes (sorted names, BACKGROUND_Google left out), T training and up to M
test photos per class (seeded), longer side 300 px as the Caltech config. One
LCC HOG set (kappa = 20, 1 + 4 + 16 pyramid) with a k-means codebook fitted on
descriptors of the training photos (``Codebook.fit``), features computed with
exact and with IVF neighbours (the FeatureSet defaults: sqrt(p) lists,
``n_probe`` calibrated to ``ivf_recall``), a LinearSVC (C = 1) per mode on the same rows. The same
photos and the same codebook in both modes, so the accuracy difference is the
approximation's alone (plus LinearSVC's sensitivity to it). ``--data`` is a
Caltech-101 root (a folder of class folders; default: the shared copy beside
the repository). The last line is one JSON object; the same figures go to a
result file (``_results.finish``). A photo that cannot be decoded is a failed
input: the run then reports no figure.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging

from _results import dataset_root, finish

import numpy as np
from threadpoolctl import threadpool_limits

from lsic.pipeline import (Codebook, DescriptorGrid, FeatureSet, ImageError, encode_pool, image_descriptors,
                          mean_per_class_accuracy, nearest_codewords)

log = logging.getLogger("bench_ivf_accuracy")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", metavar="DIR", help="Caltech-101 root, a folder of class folders (default: the shared "
                    "copy beside the repository)")
    ap.add_argument("--classes", type=int, default=30)
    ap.add_argument("--train", type=int, default=15)
    ap.add_argument("--test", type=int, default=15)
    ap.add_argument("--codebook-size", type=int, default=4096)
    ap.add_argument("--per-image", type=int, default=200, help="descriptors per training photo for k-means")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    from sklearn.svm import LinearSVC

    root = dataset_root(args.data)
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and p.name != "BACKGROUND_Google")
    classes = classes[: args.classes]
    rng = np.random.default_rng(0)
    rows = []
    for c, name in enumerate(classes):
        files = sorted((root / name).glob("*.jpg"))
        pick = rng.permutation(len(files))[: args.train + args.test]
        rows += [(files[i], c, k < args.train) for k, i in enumerate(pick)]
    grid = DescriptorGrid(max_side=300)
    exact = FeatureSet("acc", "hog", "lcc", args.codebook_size, kappa=20, pyramid=((1, 1), (2, 2), (4, 4)))
    ivf = dataclasses.replace(exact, knn="ivf")
    failed = 0
    with threadpool_limits(1, user_api="blas"):
        descs = []
        for f, _, _ in rows:
            try:
                descs.append(image_descriptors(f.read_bytes(), ["hog"], grid, name=str(f))["hog"])
            except ImageError as exc:
                log.error("unreadable input: %s", exc)
                failed += 1
    if failed:
        finish("bench_ivf_accuracy", {}, inputs=len(rows), inputs_failed=failed)
    with threadpool_limits(1, user_api="blas"):
        sample = np.concatenate([
            d.values[rng.choice(len(d.values), min(args.per_image, len(d.values)), replace=False)]
            for d, (_, _, tr) in zip(descs, rows) if tr
        ])
    log.info("k-means p=%d on %d descriptors", args.codebook_size, len(sample))
    book = Codebook.fit(sample, exact, random_state=0)
    book_ivf = Codebook(ivf, book.centers)
    with threadpool_limits(1, user_api="blas"):
        X = np.stack([encode_pool(d, book) for d in descs])
        Xa = np.stack([encode_pool(d, book_ivf) for d in descs])
        Z = np.concatenate([d.values for d in descs[:: max(1, len(descs) // 40)]])
        ex = nearest_codewords(Z, book.centers, 20, center_norms=book.center_norms)
        apx = nearest_codewords(Z, book.centers, 20, index=book_ivf.ivf, n_probe=book_ivf.ivf_probes)
    recall = float(np.mean([len(set(a) & set(b)) / 20 for a, b in zip(apx, ex)]))
    y = np.array([c for _, c, _ in rows])
    tr = np.array([t for _, _, t in rows])
    acc = {}
    for key, F in (("exact", X), ("ivf", Xa)):
        clf = LinearSVC(C=1.0).fit(F[tr], y[tr])
        acc[key] = 100 * mean_per_class_accuracy(y[~tr], clf.predict(F[~tr]), len(classes))
    res = {
        "classes": len(classes), "train_per_class": args.train, "test_rows": int((~tr).sum()),
        "codebook_size": args.codebook_size, "kappa": 20,
        "n_lists": ivf.ivf_lists, "n_probe": book_ivf.ivf_probes, "knn_recall_approx": round(recall, 4),
        "features_identical_rows": float(np.mean(np.all(X == Xa, axis=1))),
        "accuracy_exact": round(acc["exact"], 2), "accuracy_ivf": round(acc["ivf"], 2),
        "accuracy_diff_points": round(acc["ivf"] - acc["exact"], 2),
    }
    finish("bench_ivf_accuracy", res, inputs=len(rows), inputs_failed=failed)


if __name__ == "__main__":
    main()
