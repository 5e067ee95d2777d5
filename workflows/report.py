"""The run's report: figures of paper §4-§5, ``metrics.json``, ``index.html`` and ``README.md``.

:func:`write_report` needs only plain data (the evaluation's metrics, class
names, the training curves, the config and the stage timings), so it runs the
same from ``lsic run``, ``lsic evaluate`` and ``lsic report STORE`` (which reads
everything back from the store, see :func:`report_from_store`).

Files written to the report folder::

    metrics.json           {"sets": {NAME: {top1, top5, mean_per_class}},
                            "fused": {top1, top5, mean_per_class, weights},
                            "n_train", "n_test", "n_failed"}  (accuracies as fractions)
    details.json           per-class top-1/top-5 hit rates and the confusion matrices
    fig3_convergence.png   validation accuracy vs epoch, ASGD (and SGD when trained)
    fig4_hit_histogram.png histogram of the fused per-class top-5 hit rates
    fig5_per_class.png     fused per-class top-5 (and top-1) hit rates, sorted, with class names
    sets_vs_fused.png      accuracy of each feature set and of the fused scores
    index.html, README.md  the above with the config and the time of every stage
"""

from __future__ import annotations

import html
import json
import logging
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from .gallery import gallery_for_report
from .results import load_evaluation
from .store import FeatureStore

log = logging.getLogger(__name__)

FIGURES = {
    "fig3": "fig3_convergence.png",
    "fig4": "fig4_hit_histogram.png",
    "fig5": "fig5_per_class.png",
    "sets": "sets_vs_fused.png",
}


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


# --------------------------------------------------------------------------- figures


def plot_convergence(curves: Mapping[str, Mapping[str, Sequence[float]]], path: str | os.PathLike) -> bool:
    """Fig. 3: validation accuracy against epoch per feature set, ASGD solid, SGD dashed.

    Parameters
    ----------
    curves : mapping set name -> {"asgd": [acc after epoch 1, 2, ...], "sgd": [...]}
        Accuracies as fractions. Missing or empty curves are skipped.

    Returns
    -------
    bool : False when there was nothing to plot (a placeholder figure is still written).
    """
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    drawn = False
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, (name, by_method) in enumerate(sorted(curves.items())):
        color = colors[i % len(colors)]
        for method, style in (("asgd", "-"), ("sgd", "--")):
            ys = [v for v in (by_method.get(method) or []) if v is not None]
            if not ys:
                continue
            xs = np.arange(1, len(ys) + 1)
            ax.plot(xs, 100 * np.asarray(ys, float), style, marker="o", ms=3, color=color,
                    label=f"{name} ({method.upper()})")
            drawn = True
    if not drawn:
        ax.text(0.5, 0.5, "no per-epoch validation accuracy was recorded\n(train.validate_each_epoch, val_per_class > 0)",
                ha="center", va="center", transform=ax.transAxes)
    ax.set_xlabel("epoch")
    ax.set_ylabel("validation top-1 accuracy (%)")
    ax.set_title("Fig. 3: convergence, averaged SGD vs plain SGD")
    if drawn:
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return drawn


def plot_hit_histogram(hit_rates: Sequence[float | None], path: str | os.PathLike, *, k: int = 5) -> None:
    """Fig. 4: histogram of the per-class top-``k`` hit rates (classes without test rows left out)."""
    plt = _plt()
    rates = np.array([v for v in hit_rates if v is not None and np.isfinite(v)], float)
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    ax.hist(100 * rates, bins=np.linspace(0, 100, 21), color="tab:blue", edgecolor="white")
    ax.set_xlabel(f"per-class top-{k} hit rate (%)")
    ax.set_ylabel("number of classes")
    mean = 100 * rates.mean() if rates.size else float("nan")
    ax.set_title(f"Fig. 4: per-class top-{k} hit rates ({rates.size} classes, mean {mean:.1f}%)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_per_class(
    top5: Sequence[float | None],
    class_names: Sequence[str],
    path: str | os.PathLike,
    *,
    top1: Sequence[float | None] | None = None,
    max_labels: int = 120,
    n_extremes: int = 30,
) -> list[str]:
    """Fig. 5: per-class hit rates as bars sorted by top-5 rate, with class names.

    With at most ``max_labels`` classes every class is a named bar. With more
    (ILSVRC's 1,000), the figure has two panels: the sorted rates of all
    classes (unnamed), and named bars for the ``n_extremes`` best and
    ``n_extremes`` worst classes with the ones between summarised in one
    labelled gap (their count and mean top-5 rate), so the names stay readable.

    Returns
    -------
    list of str
        The class names shown, top to bottom (the summary label included).
    """
    plt = _plt()
    r5 = np.array([np.nan if v is None else v for v in top5], float)
    r1 = None if top1 is None else np.array([np.nan if v is None else v for v in top1], float)
    keep = np.flatnonzero(np.isfinite(r5))
    order = keep[np.argsort(-r5[keep], kind="stable")]
    n = len(order)

    def named_bars(ax: Any, idx: np.ndarray, labels: list[str]) -> None:
        pos = np.arange(len(labels))
        real = np.array([i >= 0 for i in idx])
        vals5 = np.where(real, r5[np.maximum(idx, 0)], np.nan)
        ax.barh(pos, 100 * vals5, color="tab:blue", label="top-5")
        if r1 is not None:
            ax.barh(pos, 100 * np.where(real, r1[np.maximum(idx, 0)], np.nan), color="tab:orange", height=0.5,
                    label="top-1")
        ax.set_yticks(pos)
        ax.set_yticklabels(labels, fontsize=6 if len(labels) > 40 else 8)
        ax.set_ylim(len(labels) - 0.5, -0.5)  # best class on top, no empty margins
        ax.set_xlim(0, 100)
        ax.set_xlabel("hit rate (%)")

    if n <= max_labels:
        labels = [class_names[i] for i in order]
        fig, ax = plt.subplots(figsize=(7.0, max(3.0, 0.16 * n + 1.2)))
        named_bars(ax, order, labels)
        ax.legend(fontsize=7, loc="lower right")
        ax.set_title("Fig. 5: per-class hit rates of the fused scores")
    else:
        k = min(n_extremes, n // 2)
        middle = order[k:n - k]
        gap = f"... {middle.size} classes, mean top-5 {100 * float(np.mean(r5[middle])):.1f}% ..." if middle.size else ""
        idx = np.concatenate([order[:k], [-1] if gap else [], order[n - k:]]).astype(int)
        labels = [class_names[i] if i >= 0 else gap for i in idx]
        fig, (ax_all, ax) = plt.subplots(1, 2, figsize=(11.0, max(4.0, 0.13 * len(labels) + 1.5)),
                                         gridspec_kw={"width_ratios": [1.2, 1.0]})
        pos = np.arange(n)
        ax_all.bar(pos, 100 * r5[order], width=1.0, color="tab:blue", label="top-5")
        if r1 is not None:
            ax_all.bar(pos, 100 * r1[order], width=1.0, color="tab:orange", alpha=0.7, label="top-1")
        ax_all.set_xlabel(f"{n} classes, sorted by top-5 hit rate")
        ax_all.set_ylabel("hit rate (%)")
        ax_all.set_ylim(0, 100)
        ax_all.legend(fontsize=7, loc="upper right")
        named_bars(ax, idx, labels)
        ax.set_title(f"best and worst {k}", fontsize=9)
        fig.suptitle("Fig. 5: per-class hit rates of the fused scores")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return labels


def plot_sets_vs_fused(metrics: Mapping[str, Any], path: str | os.PathLike, *, chance: float | None = None) -> None:
    """Top-1, top-5 and mean per-class accuracy of each feature set next to the fused result."""
    plt = _plt()
    names = list(metrics["sets"]) + ["fused"]
    rows = [metrics["sets"][n] for n in metrics["sets"]] + [metrics["fused"]]
    keys = ("top1", "top5", "mean_per_class")
    fig, ax = plt.subplots(figsize=(max(5.0, 1.3 * len(names) + 2), 4.0))
    x = np.arange(len(names))
    width = 0.27
    for j, key in enumerate(keys):
        vals = [100 * (r.get(key) or 0.0) for r in rows]
        bars = ax.bar(x + (j - 1) * width, vals, width, label=key.replace("_", " "))
        for b, v in zip(bars, vals):
            ax.text(b.get_x() + b.get_width() / 2, v + 0.5, f"{v:.1f}", ha="center", va="bottom", fontsize=6)
    if chance:
        ax.axhline(100 * chance, color="grey", ls=":", lw=1, label="chance (top-1)")
    ax.set_xticks(x)
    ax.set_xticklabels(names, rotation=20, ha="right", fontsize=8)
    ax.set_ylabel("accuracy on the test split (%)")
    ax.set_ylim(0, 105)
    ax.set_title("Feature sets and their linear fusion (§5.2)")
    ax.legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# --------------------------------------------------------------------------- text


def results_table(metrics: Mapping[str, Any]) -> list[list[str]]:
    """Rows ``[name, top-1 %, top-5 %, mean per-class %, weight]`` of each set and the fused scores."""
    weights = metrics["fused"].get("weights") or {}
    rows = []
    for name, m in metrics["sets"].items():
        rows.append([name, _pct(m["top1"]), _pct(m["top5"]), _pct(m["mean_per_class"]), f"{weights.get(name, 0.0):.2f}"])
    f = metrics["fused"]
    rows.append(["fused", _pct(f["top1"]), _pct(f["top5"]), _pct(f["mean_per_class"]), "1.00"])
    return rows


TABLE_HEADER = ["scores", "top-1 %", "top-5 %", "mean per-class %", "fusion weight"]


def format_table(metrics: Mapping[str, Any]) -> str:
    """The final table as aligned plain text (what ``lsic run`` prints)."""
    rows = [TABLE_HEADER] + results_table(metrics)
    widths = [max(len(r[i]) for r in rows) for i in range(len(TABLE_HEADER))]
    lines = []
    for j, r in enumerate(rows):
        lines.append("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))))
        if j == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _pct(v: float | None) -> str:
    return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{100 * v:.1f}"


def _md_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(out)


def _html_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _timing_rows(timings: Mapping[str, float]) -> list[list[str]]:
    return [[stage, f"{float(sec):.1f}"] for stage, sec in timings.items()]


# --------------------------------------------------------------------------- the report


def _json_default(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    return str(o)


def write_report(
    out_dir: str | os.PathLike,
    *,
    metrics: Mapping[str, Any],
    details: Mapping[str, Any],
    class_names: Sequence[str],
    curves: Mapping[str, Mapping[str, Sequence[float]]] | None = None,
    config: Mapping[str, Any] | None = None,
    timings: Mapping[str, float] | None = None,
    store_url: str | None = None,
    gallery: Mapping[str, Any] | None = None,
) -> dict[str, Path]:
    """Write every report file into ``out_dir`` (created if needed).

    Parameters
    ----------
    metrics : dict
        The ``metrics.json`` record (see the module docstring).
    details : dict
        ``{"fused": {"per_class_top1": [...], "per_class_top5": [...], "confusion": [[...]]},
        NAME: {...}}`` as produced by :func:`lsic.workflows.evaluate.run_evaluate`.
    class_names : sequence of str
    curves : dict, optional
        Per-epoch validation accuracies for Fig. 3 (see :func:`plot_convergence`).
    config : dict, optional
        The run's experiment config (shown in the report).
    timings : dict, optional
        Wall-clock seconds of each stage.
    gallery : dict, optional
        What :func:`lsic.workflows.gallery.write_gallery` wrote into ``out_dir`` (linked from the pages).

    Returns
    -------
    dict name -> path of the files written.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {k: out / v for k, v in FIGURES.items()}
    fused = details.get("fused", {})
    n_classes = len(class_names)
    chance = 1.0 / n_classes if n_classes else None
    have_curves = plot_convergence(curves or {}, paths["fig3"])
    plot_hit_histogram(fused.get("per_class_top5", []), paths["fig4"])
    plot_per_class(fused.get("per_class_top5", []), class_names, paths["fig5"], top1=fused.get("per_class_top1"))
    plot_sets_vs_fused(metrics, paths["sets"], chance=chance)

    paths["metrics"] = out / "metrics.json"
    paths["metrics"].write_text(json.dumps(metrics, indent=2, default=_json_default) + "\n")
    paths["details"] = out / "details.json"
    paths["details"].write_text(
        json.dumps({"class_names": list(class_names), **details, "curves": curves or {}}, default=_json_default) + "\n"
    )
    config_yaml = yaml.safe_dump(json.loads(json.dumps(config or {}, default=_json_default)), sort_keys=False)
    timings = dict(timings or {})
    name = (config or {}).get("name", "lsic run")
    summary = (
        f"{len(class_names)} classes, {metrics['n_train']} training images, {metrics['n_test']} test images, "
        f"{metrics['n_failed']} images failed to decode; chance (top-1) {_pct(chance)}%."
    )
    fig_text = [
        ("sets", "Accuracy of each feature set and of the fused scores on the test split."),
        ("fig3", "Fig. 3: validation top-1 accuracy after each epoch (ASGD solid, plain SGD dashed)."
         + ("" if have_curves else " No per-epoch curve was recorded for this run.")),
        ("fig4", "Fig. 4: histogram of the per-class top-5 hit rates of the fused scores."),
        ("fig5", "Fig. 5: per-class top-5 (blue) and top-1 (orange) hit rates of the fused scores, sorted."),
    ]
    rows = results_table(metrics)

    md = [f"# lsic report: {name}", "", summary, ""]
    if store_url:
        md += [f"Store: `{store_url}`", ""]
    md += ["## Results (test split)", "", _md_table(TABLE_HEADER, rows), ""]
    md += ["Fusion: per-set standardised scores, weights chosen by coordinate ascent on the simplex "
           "maximising validation top-1 (equal weights without a validation split).", ""]
    for key, text in fig_text:
        md += [f"![{key}]({FIGURES[key]})", "", text, ""]
    if gallery:
        md += ["## Gallery", "", f"[Test images]({gallery['pages'][0].name}): {_gallery_text(gallery)}", ""]
    md += ["## Stage timings", "", _md_table(["stage", "seconds"], _timing_rows(timings)) if timings else "not recorded", ""]
    md += ["## Configuration", "", "```yaml", config_yaml.rstrip(), "```", ""]
    md += ["Machine-readable: [metrics.json](metrics.json), [details.json](details.json).", ""]
    paths["readme"] = out / "README.md"
    paths["readme"].write_text("\n".join(md))

    figs_html = "".join(
        f'<figure><img src="{FIGURES[k]}" alt="{k}"><figcaption>{html.escape(t)}</figcaption></figure>' for k, t in fig_text
    )
    gallery_html = ""
    if gallery:
        gallery_html = (f'<h2>Gallery</h2><p><a href="{gallery["pages"][0].name}">Test images</a>: '
                        f"{html.escape(_gallery_text(gallery))}</p>")
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>lsic report: {html.escape(str(name))}</title>
<style>body{{font-family:sans-serif;max-width:60em;margin:2em auto;padding:0 1em}}
table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:.2em .6em;text-align:right}}
td:first-child,th:first-child{{text-align:left}}img{{max-width:100%}}figure{{margin:1.5em 0}}
pre{{background:#f6f6f6;padding:1em;overflow:auto}}</style></head><body>
<h1>lsic report: {html.escape(str(name))}</h1>
<p>{html.escape(summary)}</p>
{f"<p>Store: <code>{html.escape(store_url)}</code></p>" if store_url else ""}
<h2>Results (test split)</h2>
{_html_table(TABLE_HEADER, rows)}
<p>Fusion: per-set standardised scores, weights chosen by coordinate ascent on the simplex maximising
validation top-1 (equal weights without a validation split).</p>
{figs_html}
{gallery_html}
<h2>Stage timings</h2>
{_html_table(["stage", "seconds"], _timing_rows(timings)) if timings else "<p>not recorded</p>"}
<h2>Configuration</h2>
<pre>{html.escape(config_yaml)}</pre>
<p>Machine-readable: <a href="metrics.json">metrics.json</a>, <a href="details.json">details.json</a>.</p>
</body></html>
"""
    paths["index"] = out / "index.html"
    paths["index"].write_text(page)
    log.info("report written to %s", paths["index"])
    return paths


def _gallery_text(gallery: Mapping[str, Any]) -> str:
    text = (f"correctly classified and misclassified test images with their top-5 predictions, and the most "
            f"confused class pairs ({gallery['classes_shown']} worst of {gallery['classes_total']} classes, "
            f"{len(gallery['pages'])} page(s)).")
    if gallery.get("missing"):
        text += f" {gallery['missing']} image(s) were not reachable for a thumbnail."
    return text


def report_from_store(url: str, out_dir: str | os.PathLike | None = None, *, storage_options: Mapping[str, Any] | None = None) -> dict[str, Path]:
    """Regenerate the report of an evaluated store (``lsic report STORE``).

    The report folder defaults to the one recorded by the last evaluation.
    """
    store = FeatureStore.open(url, "r", storage_options)
    ev = load_evaluation(store)
    target = out_dir or ev["report"] or "report"
    Path(target).mkdir(parents=True, exist_ok=True)
    return write_report(
        target,
        metrics=ev["metrics"],
        details=ev["details"],
        class_names=ev["class_names"],
        curves=ev["curves"],
        config=ev["config"],
        timings=ev["timings"],
        store_url=url,
        gallery=gallery_for_report(store, target),
    )
