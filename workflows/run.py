"""The whole run, extract -> train -> evaluate, and the demo (``lsic run``, ``lsic demo``).

Every stage is resumable on its own (it re-plans from the store's marks and
skips what is complete), so :func:`run_pipeline` is simply the three stages
in order; rerunning the same command after an interruption continues where
it stopped. Each compute stage gets a client sized for it
(:func:`lsic.cluster.make_client` with ``stage="extract"`` / ``"train"``) whose
dashboard link is announced when the stage starts; evaluation runs on the
client over the stored scores. The wall-clock time of every stage that did
work is recorded in the store (``timings``) for the report.
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from ._stage import stage_client
from .config import load_experiment
from .evaluate import EvaluateSummary, run_evaluate
from .extract import plan_extract, prepare_store, run_extract
from .store import FeatureStore
from .train import plan_train, run_train

log = logging.getLogger(__name__)


@dataclass
class RunResult:
    """What :func:`run_pipeline` did: each stage's summary and wall-clock seconds."""

    extract: Any
    train: Any
    evaluate: EvaluateSummary
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def metrics(self) -> dict[str, Any]:
        return self.evaluate.metrics


def _extract_complete(exp: Any, store: FeatureStore) -> bool:
    """True when the store holds a complete extraction of this config (no cluster needed)."""
    return store.extract_complete and plan_extract(exp, store).complete


def _train_complete(exp: Any, store: FeatureStore) -> bool:
    """True when every set's models and scores are complete for this config."""
    try:
        plan = plan_train(exp, store)
    except Exception:  # noqa: BLE001 - anything unusual: let run_train decide (and report it)
        return False
    return bool(plan.complete and not plan.stale)


def _remember(store: FeatureStore, stage: str, seconds: float, *, did_work: bool) -> None:
    """Record a stage's wall time in the store, unless it did nothing and a time is already recorded."""
    if did_work or stage not in store.timings():
        store.record_timing(stage, seconds)


def run_pipeline(
    exp: Any,
    *,
    report: str | None = None,
    overwrite: bool = False,
    progress: bool = True,
    say: Callable[[str], None] | None = None,
    client: Any = None,
) -> RunResult:
    """Run (or resume) extract -> train -> evaluate for ``exp``.

    Parameters
    ----------
    exp : Experiment
    report : str, optional
        Report folder (default ``exp.report``).
    overwrite : bool
        Replace a store made from another configuration (extraction's flag).
    progress : bool
        Progress bars / per-epoch lines.
    say : callable, optional
        Where one-line status messages go (default: the module logger).
    client : distributed.Client, optional
        Run extract and train on this client instead of one sized per stage.

    Returns
    -------
    RunResult
    """
    say = say or log.info
    seconds: dict[str, float] = {}

    t0 = time.perf_counter()
    store = prepare_store(exp, overwrite=overwrite)  # the one store object of the run, passed to every stage
    if _extract_complete(exp, store):
        ex = run_extract(exp, store=store, client=client, progress=progress)  # re-plans, finds nothing to do
    else:
        with stage_client(exp.cluster, "extract", client, say=say) as c:
            ex = run_extract(exp, store=store, client=c, progress=progress)
    seconds["extract"] = time.perf_counter() - t0
    say(ex.line())
    _remember(store, "extract", seconds["extract"], did_work=bool(ex.images_done))

    t0 = time.perf_counter()
    if _train_complete(exp, store):
        tr = run_train(exp, store=store, client=client, progress=progress)  # re-plans, finds nothing to do
    else:
        with stage_client(exp.cluster, "train", client, say=say) as c:
            tr = run_train(exp, store=store, client=c, progress=progress)
    seconds["train"] = time.perf_counter() - t0
    say(tr.line())
    _remember(store, "train", seconds["train"], did_work=bool(tr.epochs_run))

    t0 = time.perf_counter()
    ev = run_evaluate(exp, store=store, report=report)
    seconds["evaluate"] = time.perf_counter() - t0
    return RunResult(ex, tr, ev, seconds)


# --------------------------------------------------------------------------- demo


def demo_data_root() -> str:
    """Folder of the small Caltech-101 subset shipped in the package (8 classes x 20 images, CC BY 4.0)."""
    return str(resources.files("lsic.pipeline") / "data" / "demo")


def demo_folder(folder: str | os.PathLike | None = None) -> Path:
    """Where the demo keeps its store and report: ``folder``, else ``./lsic-demo``, else a temporary folder."""
    if folder is not None:
        path = Path(folder)
        path.mkdir(parents=True, exist_ok=True)
        return path
    path = Path.cwd() / "lsic-demo"
    try:
        path.mkdir(exist_ok=True)
        probe = path / ".write-test"
        probe.write_text("")
        probe.unlink()
        return path
    except OSError:
        return Path(tempfile.mkdtemp(prefix="lsic-demo-"))


def demo_experiment(folder: str | os.PathLike | None = None, **cluster: Any) -> Any:
    """The shipped ``demo`` config with dataset.root = the package data and store/report under ``folder``."""
    base = demo_folder(folder)
    exp = load_experiment("demo", data=demo_data_root(), store=str(base / "demo.zarr"))
    exp = exp.replace(report=str(base / "report"))
    if cluster:
        exp = exp.replace(cluster={**exp.cluster, **cluster})
    return exp
