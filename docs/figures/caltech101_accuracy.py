"""Draw docs/_static/caltech101-accuracy.png, the README's figure, from the Caltech-101 result files.

Uses the newest full-protocol run (``splits >= 3``, not ``--quick``) under
``benchmarks/results/caltech101/`` and the published results the benchmark
script quotes. Run: ``python docs/figures/caltech101_accuracy.py``.
"""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
PUBLISHED = {  # mean per-class accuracy (%), 30 training images per class (as benchmarks/caltech101.py quotes them)
    "Fisher vectors (Chatfield et al. 2011)": 77.8,
    "LLC (Wang et al. 2010)": 73.4,
    "ScSPM (Yang et al. 2009)": 73.2,
    "SPM (Lazebnik et al. 2006)": 64.6,
}


def newest_full_run() -> dict:
    runs = [json.loads(p.read_text()) for p in (REPO / "benchmarks" / "results" / "caltech101").glob("*.json")]
    runs = [r for r in runs if r["figures"].get("splits", 0) >= 3 and not r["figures"].get("quick")]
    return max(runs, key=lambda r: r["date"])


def main() -> None:
    f = newest_full_run()["figures"]
    rows = [(f"lsic fused ({f['splits']} splits)", f["fused_mean_per_class_acc"], "#1f77b4")]
    rows += [(f"lsic {name} alone", acc, "#7fb3e0") for name, acc in sorted(f["per_set"].items(), key=lambda kv: -kv[1])]
    rows += [(name + ", published", acc, "#bbbbbb") for name, acc in PUBLISHED.items()]
    if f.get("baseline_acc") is not None:
        rows.append(("scikit-image HOG + k-means BoW + LinearSVC", f["baseline_acc"], "#e8a87c"))
    rows.sort(key=lambda r: r[1])
    fig, ax = plt.subplots(figsize=(7.5, 3.6), dpi=110)
    ax.barh([r[0] for r in rows], [r[1] for r in rows], color=[r[2] for r in rows])
    for i, (_, acc, _) in enumerate(rows):
        ax.text(acc + 0.4, i, f"{acc:.1f}", va="center", fontsize=8)
    ax.set_xlim(40, 85)
    ax.set_xlabel("mean per-class accuracy (%)")
    ax.set_title("Caltech-101, 30 training images per class", fontsize=10)
    ax.tick_params(axis="y", labelsize=8)
    fig.tight_layout()
    out = REPO / "docs" / "_static" / "caltech101-accuracy.png"
    fig.savefig(out)
    print(out.relative_to(REPO))


if __name__ == "__main__":
    main()
