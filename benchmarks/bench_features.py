"""Benchmark of the feature math: dense HOG/LBP, LCC and SVC coding.

Run: python benchmarks/bench_features.py [--data DIR | --generated] [--images N] [--repeats R]

Uses real photos from ``--data`` (a folder of class folders such as
Caltech-101; without it, the shared copy beside the repository), or generated
images with ``--generated``; every image is shrunk to a longer side of 300 px.
BLAS is limited to one thread (threadpoolctl) so that our numba kernels and the
GEMM floor are compared on one core each, as a Dask worker thread would run
them. Prints medians of >= 5 repeats; the last line is one JSON object, and a
result file is written (``_results.finish``).
"""

from __future__ import annotations

import argparse
import io
import statistics
import time
from pathlib import Path

from _results import dataset_root, finish, photos

import numpy as np
from PIL import Image
from skimage.feature import hog as sk_hog
from threadpoolctl import threadpool_limits

from lsic.pipeline import (DescriptorGrid, ImageError, dense_hog, dense_lbp, lcc_encode, load_image, nearest_codewords,
                          patch_origins, svc_pool)


def _images(n: int, root: Path | None) -> tuple[list[bytes], str]:
    if root is not None:
        files = photos(root)
        rng = np.random.default_rng(0)
        pick = rng.choice(len(files), size=min(n, len(files)), replace=False)
        return [files[i].read_bytes() for i in sorted(pick)], f"photos of {root.name}"
    out = []
    rng = np.random.default_rng(0)
    for i in range(n):
        y, x = np.mgrid[0:240, 0:320]
        img = 128 + 60 * np.sin(x / (4 + i)) * np.cos(y / 6.0) + 25 * rng.standard_normal((240, 320))
        buf = io.BytesIO()
        Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(buf, "JPEG")
        out.append(buf.getvalue())
    return out, "generated"


def _median(fn, repeats: int) -> float:
    fn()  # warm-up (numba compile / caches)
    ts = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return statistics.median(ts)


def _skimage_dense_hog(img: np.ndarray, grid: DescriptorGrid) -> np.ndarray:
    h, w = img.shape
    out = []
    for p in grid.patch_sizes:
        for y0 in patch_origins(h, p, grid.step):
            for x0 in patch_origins(w, p, grid.step):
                out.append(sk_hog(img[y0:y0 + p, x0:x0 + p], orientations=8, pixels_per_cell=(p // 4, p // 4),
                                  cells_per_block=(4, 4), block_norm="L2-Hys", feature_vector=True))
    return np.asarray(out, dtype=np.float32)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", metavar="DIR", help="a folder of class folders of photos (default: the shared "
                    "Caltech-101 beside the repository)")
    ap.add_argument("--generated", action="store_true", help="generated images instead of photos")
    ap.add_argument("--images", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    repeats = max(5, args.repeats)
    datas, source = _images(args.images, None if args.generated else dataset_root(args.data))
    grid = DescriptorGrid(max_side=300)
    res: dict[str, object] = {"source": source, "n_images": len(datas), "repeats": repeats, "blas_threads": 1}
    imgs, failed = [], 0
    for d in datas:
        try:
            imgs.append(load_image(d, max_side=300))
        except ImageError as exc:
            print(f"unreadable input: {exc}", flush=True)
            failed += 1
    if failed:
        finish("bench_features", {}, inputs=len(datas), inputs_failed=failed)
    with threadpool_limits(1):
        t = _median(lambda: [load_image(d, max_side=300) for d in datas], repeats)
        res["decode_ms_per_image"] = round(1e3 * t / len(datas), 3)
        res["mean_image_shape"] = [round(float(np.mean([i.shape[k] for i in imgs])), 1) for k in (0, 1)]
        n_desc = sum(dense_hog(i, grid).values.shape[0] for i in imgs)
        res["descriptors_per_image"] = round(n_desc / len(imgs), 1)

        t = _median(lambda: [(dense_hog(i, grid), dense_lbp(i, grid)) for i in imgs], repeats)
        res["hog_lbp_ms_per_image"] = round(1e3 * t / len(imgs), 3)
        t_hog = _median(lambda: [dense_hog(i, grid, voting="hard") for i in imgs[:3]], repeats) / 3
        t_sk = _median(lambda: [_skimage_dense_hog(i, grid) for i in imgs[:3]], repeats) / 3
        res["hog_ms_per_image"] = round(1e3 * t_hog, 3)
        res["skimage_patch_hog_ms_per_image"] = round(1e3 * t_sk, 3)
        res["speedup_vs_skimage_patch"] = round(t_sk / t_hog, 1)

        # coding on real HOG descriptors; codebooks sampled from them (k-means quality is irrelevant to speed)
        rng = np.random.default_rng(0)
        allZ = np.concatenate([dense_hog(i, grid).values for i in imgs])
        Z = allZ[rng.choice(len(allZ), 4096, replace=len(allZ) < 4096)]
        B = (allZ[rng.choice(len(allZ), 4096, replace=len(allZ) < 4096)]
             + 0.01 * rng.standard_normal((4096, 128))).astype(np.float32)
        bb = np.einsum("ij,ij->i", B, B).astype(np.float32)
        m = 1024  # the default block rows for p = 4096 (16 MB blocks)
        buf = np.empty((m, B.shape[0]), np.float32)

        def gemm(Bc, bufc):
            for r in range(0, len(Z), m):
                np.matmul(Z[r:r + m], Bc.T, out=bufc[: len(Z[r:r + m])])

        t_lcc = _median(lambda: lcc_encode(Z, B, 20, center_norms=bb), repeats)
        t_gemm = _median(lambda: gemm(B, buf), repeats)
        res["lcc_ms_per_1k_desc"] = round(1e3 * t_lcc / (len(Z) / 1000), 3)
        res["gemm_ms_per_1k_desc_p4096"] = round(1e3 * t_gemm / (len(Z) / 1000), 3)
        res["lcc_over_gemm_floor"] = round(t_lcc / t_gemm, 3)

        B5 = np.ascontiguousarray(B[:512])
        bb5 = bb[:512]
        buf5 = np.empty((m, 512), np.float32)
        xy = rng.random((len(Z), 2)).astype(np.float32) * [300, 225]

        def svc():
            near = nearest_codewords(Z, B5, 1, center_norms=bb5, block_rows=m)[:, 0]
            return svc_pool(Z, near, B5, 0.1, xy, (225, 300), ((1, 1),))

        t_svc = _median(svc, repeats)
        t_gemm5 = _median(lambda: gemm(B5, buf5), repeats)
        res["svc_ms_per_1k_desc"] = round(1e3 * t_svc / (len(Z) / 1000), 3)
        res["gemm_ms_per_1k_desc_p512"] = round(1e3 * t_gemm5 / (len(Z) / 1000), 3)
        res["svc_over_gemm_floor"] = round(t_svc / t_gemm5, 3)
    for k, v in res.items():
        print(f"{k:>32}: {v}")
    finish("bench_features", res, inputs=len(datas), inputs_failed=failed)


if __name__ == "__main__":
    main()
