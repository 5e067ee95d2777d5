"""Subcommands of the ``lsic`` command; each is a few lines over one workflow."""

from __future__ import annotations

import argparse
import sys
from typing import Any


def register(sub: argparse._SubParsersAction) -> None:
    """Add the subcommands."""
    _add_extract(sub)
    _add_train(sub)
    _add_run(sub)
    _add_evaluate(sub)
    _add_report(sub)
    _add_predict(sub)
    _add_export(sub)
    _add_demo(sub)


class _DeprecatedAlias(argparse.Action):
    """An old spelling of a flag: sets the new flag's value and warns once on stderr that it is deprecated."""

    def __init__(self, option_strings: list[str], dest: str, *, new: str, **kwargs: Any) -> None:
        kwargs.setdefault("help", f"deprecated spelling of {new}")
        super().__init__(option_strings, dest, **kwargs)
        self.new = new
        self.warned = False

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: str | None = None) -> None:
        if not self.warned:
            self.warned = True
            print(f"lsic: warning: {option_string} is deprecated; use {self.new}", file=sys.stderr)
        setattr(namespace, self.dest, values)


def _cluster_args(parser: argparse.ArgumentParser) -> None:
    from lsic.cluster import add_cluster_arguments

    add_cluster_arguments(parser)


def _positive_int(text: str) -> int:
    """An argparse type: a whole number >= 1 (argparse names the flag in its error)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number; use 1 or more") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} trains nothing; use 1 or more")
    return value


def _load(args: argparse.Namespace) -> Any:
    from .config import load_experiment

    exp = load_experiment(
        args.config,
        assignments=getattr(args, "assignments", None) or (),
        data=getattr(args, "data", None),
        store=getattr(args, "store", None),
    )
    from lsic.cluster import cluster_options

    # flags not given are None and leave the config's cluster section alone
    overrides = {k: v for k, v in cluster_options(args).items() if v is not None}
    if overrides:
        exp = exp.replace(cluster={**exp.cluster, **overrides})
    return exp


def _add_config_args(p: argparse.ArgumentParser, *, data: bool = True, report: bool = True) -> None:
    """CONFIG plus the flags that replace parts of it (--set, --data, --store, --report).

    ``data``: only the commands that read the images (extract, run) take
    ``--data``; training and evaluation read the store, so their config may lack
    a dataset root.
    """
    p.add_argument("config", help="experiment YAML file, or a shipped config name (caltech101, imagenet2010, demo)")
    # dest is not "sets": `lsic train --sets` already names feature sets
    p.add_argument("--set", dest="assignments", action="append", default=[], metavar="KEY=VALUE",
                   help="change one config value before validation, e.g. train.epochs=2 or "
                        "feature_sets.0.codebook_size=64 (dotted keys, list indices, YAML values; repeatable)")
    if data:
        p.add_argument("--data", metavar="URL",
                       help="dataset root replacing the config's (same layout); for a config with per-split "
                            "roots, the folder holding train/, val/, test/ and the class file")
    p.add_argument("--store", metavar="URL", help="feature store URL replacing the config's (any fsspec URL)")
    if report:
        _report_arg(p, "report folder replacing the config's")


def _report_arg(p: argparse.ArgumentParser, text: str) -> None:
    p.add_argument("--report", metavar="DIR", help=text)


def _add_extract(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("extract", help="images -> pooled features in the Zarr store (resumable)")
    _add_config_args(p, report=False)
    p.add_argument("--overwrite", action="store_true", help="replace a store made from another configuration")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    _cluster_args(p)
    p.set_defaults(func=_run_extract)


def _run_extract(args: argparse.Namespace) -> int:
    from .extract import run_extract

    exp = _load(args)
    summary = run_extract(exp, overwrite=args.overwrite, progress=not args.no_progress)
    print(summary.line())
    return 0


def _add_train(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="one-vs-all ASGD SVMs from the store, one actor per machine (resumable)")
    _add_config_args(p, data=False, report=False)
    p.add_argument("--sets", metavar="NAMES", help="comma-separated feature sets to train (default: all of the config)")
    p.add_argument("--epochs", type=_positive_int, metavar="N", help="total epochs (default: train.epochs of the config)")
    p.add_argument("--restart", action="store_true", help="drop stored models and scores of these sets, start over")
    p.add_argument("--no-progress", action="store_true", help="no per-epoch log lines")
    _cluster_args(p)
    p.set_defaults(func=_run_train)


def _run_train(args: argparse.Namespace) -> int:
    from .train import run_train

    exp = _load(args)
    sets = [s.strip() for s in args.sets.split(",") if s.strip()] if args.sets else None
    summary = run_train(exp, sets=sets, epochs=args.epochs, restart=args.restart, progress=not args.no_progress)
    print(summary.line())
    return 0


# --------------------------------------------------------------------------- run, evaluate, report, predict, demo (§5)


def _add_run(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("run", help="extract -> train -> evaluate as one resumable run; prints the final table")
    _add_config_args(p)
    p.add_argument("--overwrite", action="store_true", help="replace a store made from another configuration")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    _cluster_args(p)
    p.set_defaults(func=_run_run)


def _print_result(ev: Any) -> None:
    print(ev.table())
    print(f"chance (top-1): {100 * ev.chance:.1f}%  |  test images: {ev.metrics['n_test']}  |  "
          f"failed images: {ev.metrics['n_failed']}")
    if ev.report:
        print(f"report: {ev.files.get('index', ev.report)}  (metrics: {ev.files.get('metrics', '')})")


def _run_run(args: argparse.Namespace) -> int:
    from .run import run_pipeline

    exp = _load(args)
    result = run_pipeline(exp, report=args.report, overwrite=args.overwrite, progress=not args.no_progress, say=print)
    print(" | ".join(f"{k} {v:.1f} s" for k, v in result.seconds.items()))
    _print_result(result.evaluate)
    return 0


def _add_evaluate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("evaluate", help="fuse the stored SVM scores, measure them and write the report "
                       "(writes only into a store that holds scores)")
    _add_config_args(p, data=False)
    p.set_defaults(func=_run_evaluate)


def _run_evaluate(args: argparse.Namespace) -> int:
    from .evaluate import run_evaluate

    _print_result(run_evaluate(_load(args), report=args.report))
    return 0


def _add_report(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("report", help="regenerate the report (figures, metrics.json, index.html) of an evaluated store")
    p.add_argument("store", help="the store URL of an evaluated run (read only)")
    _report_arg(p, "report folder (default: the one of the last evaluation)")
    p.add_argument("--out", dest="report", metavar="DIR", action=_DeprecatedAlias, new="--report")
    p.set_defaults(func=_run_report)


def _run_report(args: argparse.Namespace) -> int:
    from .report import report_from_store

    files = report_from_store(args.store, args.report)
    print(f"report: {files['index']}")
    return 0


def _add_predict(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("predict", help="top-5 classes of images with a model file or trained store; "
                       "--input/--output classify a whole collection on the cluster (resumable)")
    p.add_argument("store", metavar="MODEL_OR_STORE", help="a model file (lsic export) or the store of an evaluated run "
                   "(read only)")
    p.add_argument("images", nargs="*", metavar="IMAGE", help="image path or URL, or a folder of images")
    p.add_argument("--top-k", type=int, default=5, metavar="K", help="classes per image (default 5)")
    p.add_argument("--top", dest="top_k", type=int, metavar="K", action=_DeprecatedAlias, new="--top-k")
    p.add_argument("--input", metavar="URL", help="batch: folder, list file or tar archive(s) at any fsspec URL")
    p.add_argument("--output", metavar="URL", help="batch: output file, one row per image")
    p.add_argument("--format", choices=("parquet", "csv"), help="batch: output format (default: from --output, else parquet)")
    p.add_argument("--overwrite", action="store_true", help="batch: discard partitions of another prediction into --output")
    p.add_argument("--no-progress", action="store_true", help="batch: no progress bar")
    _cluster_args(p)
    p.set_defaults(func=_run_predict)


def _run_predict(args: argparse.Namespace) -> int:
    if args.input or args.output:
        return _run_batch_predict(args)
    if not args.images:
        from lsic.pipeline import ConfigError

        raise ConfigError("lsic predict needs IMAGE arguments, or --input URL --output URL for a whole collection")
    from .predict import predict_images

    failed = 0
    for pred in predict_images(args.store, args.images, top_k=args.top_k):
        if pred.ok:
            print("\n".join(pred.lines()))
        else:
            failed += 1
            print(f"lsic: error: {pred.image}: {pred.error}", file=sys.stderr)
    return 1 if failed else 0


def _run_batch_predict(args: argparse.Namespace) -> int:
    from lsic.cluster import cluster_options
    from lsic.pipeline import ConfigError

    from .batch_predict import run_batch_predict

    if not (args.input and args.output) or args.images:
        raise ConfigError("batch prediction takes --input URL and --output URL and no IMAGE arguments")
    summary = run_batch_predict(args.store, args.input, args.output, top_k=args.top_k, fmt=args.format,
                                cluster={k: v for k, v in cluster_options(args).items() if v is not None},
                                overwrite=args.overwrite, progress=not args.no_progress)
    print(summary.line())
    return 0


def _add_export(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="write the classifier of an evaluated store as one portable model file")
    p.add_argument("store", help="the store URL of an evaluated run (read only)")
    p.add_argument("model", help="the model file to write (any fsspec URL), e.g. caltech101.lsic.zip")
    p.set_defaults(func=_run_export)


def _run_export(args: argparse.Namespace) -> int:
    from .model import export_model

    model = export_model(args.store, args.model)
    print(f"model: {args.model} ({model.n_classes} classes, sets {', '.join(fs.name for fs in model.feature_sets)})")
    return 0


def _add_demo(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="the whole pipeline on the small Caltech-101 subset shipped with lsic")
    p.add_argument("--dir", metavar="DIR", help="folder for the demo's store and report (default ./lsic-demo)")
    p.add_argument("--fresh", action="store_true", help="start over instead of reusing a previous demo store")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    _cluster_args(p)
    p.set_defaults(func=_run_demo)


def _run_demo(args: argparse.Namespace) -> int:
    import shutil
    import time

    from lsic.cluster import cluster_options

    from .run import demo_experiment, run_pipeline

    t0 = time.perf_counter()
    exp = demo_experiment(args.dir, **{k: v for k, v in cluster_options(args).items() if v is not None})
    from .store import FeatureStore

    stale = FeatureStore.exists(exp.store.url) and (
        FeatureStore.open(exp.store.url).fingerprint != exp.extraction_fingerprint()
    )
    if args.fresh or stale:  # a demo store from another lsic version or config: start over
        shutil.rmtree(exp.store.url, ignore_errors=True)
    print(f"lsic demo: 8 Caltech-101 classes x 20 photos (CC BY 4.0) shipped in {exp.dataset.root}")
    print(f"store: {exp.store.url}")
    result = run_pipeline(exp, progress=not args.no_progress, say=print)
    ev = result.evaluate
    _print_result(ev)
    fused = ev.metrics["fused"]
    print(f"demo: fused top-1 accuracy {100 * fused['top1']:.1f}% vs chance {100 * ev.chance:.1f}% "
          f"({fused['top1'] / ev.chance:.1f}x chance) in {time.perf_counter() - t0:.0f} s")
    print(f"try: lsic predict {exp.store.url} {exp.dataset.root}/airplanes")
    return 0
