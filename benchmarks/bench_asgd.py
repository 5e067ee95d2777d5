"""Benchmark: one-vs-all ASGD (lsic, paper §4) against SGDClassifier and LinearSVC (VW if installed).

Data shaped like pooled image features, learnable from a random linear teacher
with label noise: dense (n, d) float32 with 101 classes (default 20,000 x 8,192
training rows), and CSR with 5% density at 65,536 dims. Every method runs in
the same process on the same split, so the ratios hold whatever the machine's
load (``loadavg_start``/``loadavg_end`` in the JSON). Our timings are medians of
``--repeats`` runs of ``ASGDClassifier.fit`` (automatic eta0 included); the
peers are slower and run ``--peer-repeats`` times (``peer_repeats`` in the
JSON). LinearSVC is capped at ``--linearsvc-max-iter`` iterations (reported).
The last line is one JSON object; the same figures go to a result file
(``_results.finish``). The data are synthetic.

    python benchmarks/bench_asgd.py                       # 20,000 x 8,192 dense + 65,536-dim CSR
    python benchmarks/bench_asgd.py --n-train 10000 --d 4096   # smaller, if the full size is too slow
    python benchmarks/bench_asgd.py --quick               # 4,000 x 2,048 (about a minute)
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import sys
import time

from _results import finish

import numpy as np
import scipy.sparse as sp
from sklearn.linear_model import SGDClassifier
from sklearn.svm import LinearSVC

from lsic.pipeline import ASGDClassifier, OneVsAllASGD


def make_dense(n, d, K, noise, seed, rank=64):
    """Rows near a rank-64 subspace (correlated, like pooled features), labels from a linear teacher."""
    rng = np.random.default_rng(seed)
    Z = rng.standard_normal((n, rank), dtype=np.float32)
    mix = rng.standard_normal((rank, d), dtype=np.float32) / np.float32(np.sqrt(rank))
    X = Z @ mix + np.float32(0.5) * rng.standard_normal((n, d), dtype=np.float32)
    X /= np.float32(np.sqrt(d))
    s = Z @ rng.standard_normal((rank, K), dtype=np.float32)
    y = (s + noise * s.std() * rng.standard_normal(s.shape, dtype=np.float32)).argmax(1)
    return X, y


def make_csr(n, d, K, density, noise, seed, rank=64):
    """CSR rows with a random 5% pattern per row whose values follow a rank-64 latent, linear teacher."""
    rng = np.random.default_rng(seed)
    nnz = int(density * d)
    Z = rng.standard_normal((n, rank), dtype=np.float32)
    mix = rng.standard_normal((rank, d), dtype=np.float32) / np.float32(np.sqrt(rank))
    indices = np.empty((n, nnz), np.int32)
    data = np.empty((n, nnz), np.float32)
    for i in range(n):
        idx = np.sort(rng.choice(d, nnz, replace=False))
        indices[i] = idx
        data[i] = (Z[i] @ mix[:, idx] + 0.5 * rng.standard_normal(nnz, dtype=np.float32)) / np.sqrt(nnz)
    X = sp.csr_matrix((data.ravel(), indices.ravel(), np.arange(n + 1) * nnz), shape=(n, d))
    s = Z @ rng.standard_normal((rank, K), dtype=np.float32)
    y = (s + noise * s.std() * rng.standard_normal(s.shape, dtype=np.float32)).argmax(1)
    return X, y


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def timed(fn, repeats):
    times, out = [], None
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times), out, times


def curve(Xtr, ytr, Xte, yte, lam, average, mode, max_epochs, target, seed=0):
    """Test accuracy after each epoch (eta0 by the automatic rule); first epoch reaching ``target``."""
    m = OneVsAllASGD(Xtr.shape[1], np.arange(ytr.max() + 1), lam=lam, eta0=None, average=average, mode=mode)
    rng = np.random.default_rng(seed)
    accs = []
    for e in range(1, max_epochs + 1):
        m._partial_fit_rows(*_rows(Xtr), ytr.astype(np.int64), rng.permutation(ytr.size).astype(np.int64))
        accs.append(round(float((m.decision_function(Xte).argmax(1) == yte).mean()), 4))
        log(f"  curve average={average} epoch {e}: {accs[-1]:.4f} (target {target:.4f})")
        if accs[-1] >= target:
            return e, accs
    return None, accs


def _rows(X):
    from lsic.pipeline._asgd import as_rows as _as_rows

    return _as_rows(X)


def run(Xtr, ytr, Xte, yte, K, epochs, args, label):
    n = ytr.size
    work = n * K * epochs
    res = {}
    for mode in ("block", "exact"):
        reps = args.repeats if mode == "block" or not args.exact_repeats else args.exact_repeats
        clf = ASGDClassifier(lam=args.lam, epochs=epochs, mode=mode, random_state=0)
        t, clf, times = timed(lambda: clf.fit(Xtr, ytr), reps)
        res[mode] = {"s": t, "times": times, "rows_classes_per_s": work / t, "acc": float(clf.score(Xte, yte)),
                     "eta0": float(clf.eta0_[0])}
        log(f"[{label}] lsic {mode}: median {t:.2f} s of {[round(x, 2) for x in times]}, "
            f"acc {res[mode]['acc']:.4f}, eta0 {clf.eta0_[0]:.4g}")
    sgd = SGDClassifier(loss="hinge", alpha=args.lam, average=True, max_iter=epochs, tol=None, n_jobs=2,
                        random_state=0)
    t, sgd, times = timed(lambda: sgd.fit(Xtr, ytr), args.peer_repeats)
    res["sgd"] = {"s": t, "times": times, "rows_classes_per_s": work / t, "acc": float(sgd.score(Xte, yte))}
    log(f"[{label}] SGDClassifier: {t:.2f} s, acc {res['sgd']['acc']:.4f}")
    svc = LinearSVC(C=1.0 / (args.lam * n), loss="hinge", max_iter=args.linearsvc_max_iter, tol=1e-3)
    t, svc, times = timed(lambda: svc.fit(Xtr, ytr), args.peer_repeats)
    res["svc"] = {"s": t, "acc": float(svc.score(Xte, yte)), "n_iter": int(np.max(svc.n_iter_))}
    log(f"[{label}] LinearSVC: {t:.2f} s, acc {res['svc']['acc']:.4f}, n_iter {res['svc']['n_iter']}")
    return res


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="4,000 x 2,048 dense, 8,192-dim CSR")
    ap.add_argument("--n-train", type=int, default=20_000)
    ap.add_argument("--n-test", type=int, default=5_000)
    ap.add_argument("--d", type=int, default=8192, help="dense row length")
    ap.add_argument("--csr-d", type=int, default=65_536, help="CSR row length (5%% non-zeros)")
    ap.add_argument("--classes", type=int, default=101)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--exact-repeats", type=int, default=0, help="repeats of the exact mode (0: --repeats)")
    ap.add_argument("--peer-repeats", type=int, default=1)
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--curve-epochs", type=int, default=10, help="max ASGD epochs of the convergence curve")
    ap.add_argument("--sgd-curve-epochs", type=int, default=30, help="max plain SGD epochs of the curve")
    ap.add_argument("--lam", type=float, default=1e-4)
    ap.add_argument("--linearsvc-max-iter", type=int, default=100)
    ap.add_argument("--no-csr", action="store_true", help="skip the CSR problem")
    ap.add_argument("--no-dense", action="store_true", help="skip the dense problem (CSR only)")
    args = ap.parse_args(argv)
    if args.quick:
        args.n_train, args.n_test, args.d, args.csr_d = 4000, 1000, 2048, 8192
    n, nt, d, K = args.n_train, args.n_test, args.d, args.classes
    load0 = os.getloadavg()
    out = {"n_rows": n, "n_test": nt, "n_classes": K, "lam": args.lam, "repeats": args.repeats,
           "exact_repeats": args.exact_repeats or args.repeats, "peer_repeats": args.peer_repeats,
           "vw": "installed but not run" if shutil.which("vw") else "not installed"}
    if not args.no_dense:
        X, y = make_dense(n + nt, d, K, 0.1, 0)
        Xtr, ytr, Xte, yte = X[:n], y[:n], X[n:], y[n:]
        dense = run(Xtr, ytr, Xte, yte, K, args.epochs, args, "dense")
        target = dense["svc"]["acc"] - 0.01
        e_asgd, acc_asgd = curve(Xtr, ytr, Xte, yte, args.lam, True, "block", args.curve_epochs, target)
        e_sgd, acc_sgd = curve(Xtr, ytr, Xte, yte, args.lam, False, "block", args.sgd_curve_epochs, target)
        out.update({
            "n_features": d, "epochs": args.epochs,
            "rows_classes_per_s": dense["block"]["rows_classes_per_s"],
            "rows_classes_per_s_exact": dense["exact"]["rows_classes_per_s"],
            "rows_classes_per_s_sgdclassifier": dense["sgd"]["rows_classes_per_s"],
            "speedup_vs_sgdclassifier": dense["sgd"]["s"] / dense["block"]["s"],
            "speedup_exact_vs_sgdclassifier": dense["sgd"]["s"] / dense["exact"]["s"],
            "acc": dense["block"]["acc"], "acc_exact": dense["exact"]["acc"],
            "acc_sgdclassifier": dense["sgd"]["acc"], "acc_linearsvc": dense["svc"]["acc"],
            "s_block": dense["block"]["s"], "s_exact": dense["exact"]["s"], "s_sgdclassifier": dense["sgd"]["s"],
            "s_linearsvc": dense["svc"]["s"], "linearsvc_max_iter": args.linearsvc_max_iter,
            "linearsvc_n_iter": dense["svc"]["n_iter"],
            "eta0_block": dense["block"]["eta0"], "eta0_exact": dense["exact"]["eta0"],
            "epochs_to_within_1pt_of_linearsvc": e_asgd, "sgd_epochs_to_same": e_sgd,
            "sgd_curve_max_epochs": args.sgd_curve_epochs,
            "acc_by_epoch_asgd": acc_asgd, "acc_by_epoch_sgd": acc_sgd,
        })
        del X, Xtr, Xte
    if not args.no_csr:
        Xc, yc = make_csr(n + nt, args.csr_d, K, 0.05, 0.1, 1)
        csr = run(Xc[:n], yc[:n], Xc[n:], yc[n:], K, 1, args, "csr")
        out.update({
            "csr_n_features": args.csr_d, "csr_density": 0.05, "csr_epochs": 1,
            "csr_rows_classes_per_s": csr["block"]["rows_classes_per_s"],
            "csr_rows_classes_per_s_exact": csr["exact"]["rows_classes_per_s"],
            "csr_speedup_vs_sgdclassifier": csr["sgd"]["s"] / csr["block"]["s"],
            "csr_speedup_exact_vs_sgdclassifier": csr["sgd"]["s"] / csr["exact"]["s"],
            "csr_acc": csr["block"]["acc"], "csr_acc_exact": csr["exact"]["acc"],
            "csr_acc_sgdclassifier": csr["sgd"]["acc"], "csr_acc_linearsvc": csr["svc"]["acc"],
            "csr_s_linearsvc": csr["svc"]["s"],
        })
    out["loadavg_start"] = [round(v, 2) for v in load0]
    out["loadavg_end"] = [round(v, 2) for v in os.getloadavg()]
    out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    finish("bench_asgd", out)


if __name__ == "__main__":
    main()
