"""Stage 2, training (paper §4.2): class-parallel ASGD, one actor per machine, one load per chunk per epoch.

With terabytes of features and a thousand classes, reading the data is the
bottleneck, so the classes are partitioned over the machines and every machine
loads each chunk of training rows once per epoch for all of its classes:

1. :func:`plan_train` (pure) reads the store's small 1-D arrays and checkpoint
   marks: the training/validation/test row chunks, the last epoch whose
   checkpoint is complete, and the score arrays still missing.
2. One :class:`~lsic.workflows._training_actor.ClassBlockTrainer` actor per host
   (per worker on a one-host cluster) is created with ``workers=[address]``
   and owns a balanced, contiguous block of classes for every feature set
   (:mod:`lsic.workflows._schedule` decides placement, classes and orders).
3. The client drives epochs, not rows: one ``train_epoch`` call per actor per
   epoch with that epoch's chunk order (shuffled with the run's seed, the same
   on every actor). Each actor streams the chunks (next one prefetched),
   trains, checkpoints its block under ``models/<set>/asgd/epoch_<e>/c<lo>_<hi>``
   with its completion mark written last, and returns its top-5 validation scores; the
   client reduces them into the epoch's validation accuracy (Fig. 3).
4. After the last epoch each actor scores its classes on the validation and
   test chunks into a class-block part; one task per row range reduces the parts
   into ``scores/<set>/<split>`` (n_rows, n_classes) float32 for fusion (§5.2).

Actors have no resilience in ``distributed``: the driver's
:class:`~lsic.workflows._actor_pool.ActorPool` watches the workers holding
them and, when one is lost, starts a replacement actor with the same
classes on a live worker, restores the last checkpoint and re-runs the epoch,
so the final models equal those of a run without faults. A rerun of the
command re-plans from the marks and resumes after the last complete epoch.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from lsic.pipeline import TOP_K, ConfigError, MetricsTally, StoreError

from ._actor_pool import MAX_RESTARTS, ActorPool, Slot, live_workers
from ._layout import variants
from ._schedule import epoch_order, walked_chunks
from ._stage import stage_client
from ._training_actor import ClassBlockTrainer
from .config import Experiment
from .store import SCORE_SPLITS, SPLITS, FeatureStore

__all__ = ["EpochRecord", "TrainPlan", "TrainSummary", "epoch_order", "live_workers", "plan_train", "run_settings",
           "run_train", "train_params", "walked_chunks", "MAX_RESTARTS"]

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------- plan


@dataclass(frozen=True)
class TrainPlan:
    """What training still has to do on a store (pure: computed from its arrays and marks)."""

    sets: tuple[str, ...]
    n_rows: int
    chunk_rows: int
    n_classes: int
    n_features: Mapping[str, int]
    chunks: Mapping[str, tuple[int, ...]]
    """Row chunks holding valid rows, per split."""
    bounds: Mapping[str, tuple[int, int]]
    """Store rows [a, b) of each split (rows are ordered train, val, test)."""
    epochs: int
    start_epoch: int
    """Last epoch complete for every set (0: train from scratch)."""
    stale: tuple[str, ...]
    """Sets whose stored models were trained with other settings."""
    missing_scores: tuple[tuple[str, str], ...]

    @property
    def todo_epochs(self) -> range:
        return range(self.start_epoch + 1, self.epochs + 1)

    @property
    def final_epoch(self) -> int:
        return max(self.epochs, self.start_epoch)

    @property
    def complete(self) -> bool:
        return not self.todo_epochs and not self.missing_scores and not self.stale


def train_params(exp: Experiment, name: str | None = None) -> dict[str, Any]:
    """``OneVsAllASGD`` settings of the run (eqs. 3-9 parameters); with ``name``, that set's lambda."""
    t = exp.train
    return {"lam": float(t.lam) if name is None else t.lam_of(name),
            "eta0": None if t.eta0 is None else float(t.eta0), "c": float(t.c),
            "average": t.average, "fit_intercept": bool(t.fit_intercept), "mode": t.mode}


def run_settings(exp: Experiment, store: FeatureStore, name: str, n_features: int) -> dict[str, Any]:
    """Everything that must match for stored checkpoints of set ``name`` to be resumed."""
    params = train_params(exp, name)
    return {
        "n_features": int(n_features), **{k: params[k] for k in sorted(params)},
        "seed": int(exp.seed),
        "compare_sgd": bool(exp.train.compare_sgd),
        "refit": bool(exp.train.refit),
        "store_run": store.run_id,
    }


def _select_sets(exp: Experiment, sets: Sequence[str] | None) -> tuple[str, ...]:
    known = [fs.name for fs in exp.feature_sets]
    if not sets:
        return tuple(known)
    for name in sets:
        if name not in known:
            raise ConfigError(f"feature set {name!r} is not in the config; choose from {', '.join(known)}")
    return tuple(sets)


def plan_train(exp: Experiment, store: FeatureStore, *, sets: Sequence[str] | None = None,
               epochs: int | None = None) -> TrainPlan:
    """List what training of ``sets`` (default: all of the config) still needs on ``store``.

    Reads only the store's attributes, its 1-D ``split``/``valid`` arrays and
    the checkpoint marks; writes nothing.
    """
    names = _select_sets(exp, sets)
    n_epochs = exp.train.epochs if epochs is None else int(epochs)
    if n_epochs < 1:
        raise ConfigError(f"epochs={n_epochs} must be at least 1")
    n_features = {name: int(store.features(name).shape[1]) for name in names}
    chunks = {s: tuple(store.split_chunks(s)) for s in SPLITS}
    bounds = {s: store.split_bounds(s) for s in SPLITS}
    stale, starts = [], []
    for name in names:
        attrs = store.model_attrs(name)
        if attrs is not None and attrs.get("settings") not in (None, run_settings(exp, store, name, n_features[name])):
            stale.append(name)
            continue
        kinds = variants(exp.train.compare_sgd, exp.train.refit)
        done = sorted(set.intersection(*(set(store.checkpoints.complete_epochs(name, v)) for v in kinds)))
        starts.append(done[-1] if done else 0)
    start = min(starts) if starts else 0
    final = max(n_epochs, start)
    missing = []
    for name in names:
        for s in SCORE_SPLITS:
            if not chunks[s]:
                continue
            if not (store.scores_complete(name, s, final) and name not in stale):
                missing.append((name, s))
    return TrainPlan(names, store.n_images, store.chunk_rows, store.n_classes, n_features, chunks, bounds, n_epochs,
                     start, tuple(stale), tuple(missing))


# --------------------------------------------------------------------------- summary


@dataclass
class EpochRecord:
    """One epoch: time, training rows (each seen by every actor), validation accuracy per (set, variant)."""

    epoch: int
    seconds: float
    rows: int
    val_top1: dict[str, float] = field(default_factory=dict)
    val_top5: dict[str, float] = field(default_factory=dict)
    restarts: int = 0
    actor_seconds: float = 0.0
    """The slowest actor's time in its chunk loop (the rest of ``seconds`` is checkpoints and validation)."""
    checkpoint_seconds: float = 0.0
    """The slowest actor's time writing its checkpoint (its full ASGD state) after the chunk loop."""

    @property
    def rows_per_s(self) -> float:
        return self.rows / self.seconds if self.seconds > 0 else float("nan")

    def line(self) -> str:
        acc = " ".join(f"{k} top1 {v:.3f}" for k, v in self.val_top1.items())
        extra = f", {self.restarts} actor(s) restarted" if self.restarts else ""
        return (f"epoch {self.epoch}: {self.seconds:.1f} s, {self.rows_per_s:,.0f} rows/s"
                + (f", val {acc}" if acc else "") + extra)

    def to_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "seconds": self.seconds, "rows": self.rows, "val_top1": self.val_top1,
                "val_top5": self.val_top5, "restarts": self.restarts, "actor_seconds": self.actor_seconds,
                "checkpoint_seconds": self.checkpoint_seconds}


@dataclass
class TrainSummary:
    """What a run of :func:`run_train` did, with the actors' I/O counters."""

    store: str
    sets: tuple[str, ...]
    n_actors: int
    n_classes: int
    epochs_run: tuple[int, ...]
    final_epoch: int
    train_chunks: int
    seconds: float
    history: list[EpochRecord] = field(default_factory=list)
    chunk_loads: dict[str, int] = field(default_factory=dict)
    bytes_read: int = 0
    restarts: int = 0
    peak_rss_bytes: int = 0
    peak_chunk_bytes: int = 0
    model_bytes: int = 0
    actors: list[dict[str, Any]] = field(default_factory=list)

    @property
    def chunk_loads_per_epoch(self) -> float:
        """Training chunk loads per epoch, summed over actors (= actors x chunks without faults)."""
        return self.chunk_loads.get("train", 0) / len(self.epochs_run) if self.epochs_run else 0.0

    def line(self) -> str:
        loads = ", ".join(f"{k} {v}" for k, v in self.chunk_loads.items())
        return (
            f"train: {len(self.sets)} set(s) x {self.n_classes} classes on {self.n_actors} actor(s), "
            f"epochs {epoch_ranges(self.epochs_run)} -> {self.final_epoch}, {self.seconds:.1f} s; "
            f"{self.train_chunks} training chunks, chunk loads: {loads} "
            f"({self.chunk_loads_per_epoch:g} training loads/epoch), {self.bytes_read / 2**20:.1f} MiB read; "
            f"peak actor RSS {self.peak_rss_bytes / 2**20:.0f} MiB; restarts {self.restarts}"
        )


def epoch_ranges(epochs: Sequence[int]) -> str:
    """Epoch numbers as ranges for a log line: ``1-100``, ``3``, ``1-3, 7``; ``none`` when empty."""
    runs: list[list[int]] = []
    for e in sorted(set(epochs)):
        if runs and e == runs[-1][1] + 1:
            runs[-1][1] = e
        else:
            runs.append([e, e])
    return ", ".join(str(a) if a == b else f"{a}-{b}" for a, b in runs) or "none"


# --------------------------------------------------------------------------- run


def _reduce_accuracy(blocks: list[Any], labels: np.ndarray, first_row: int, n_classes: int) -> tuple[float, float]:
    """Top-1/top-k accuracy from the actors' (rows, top-k classes, top-k scores) blocks.

    Each block holds the best classes of one class block; merged by score
    (stably, so ties go to the lower class as in :func:`lsic.pipeline.top_k_predictions`)
    they are each row's best classes overall. ``labels`` are the labels of the
    store rows ``first_row, first_row + 1, ...``.
    """
    parts = [b for b in blocks if b is not None]
    if not parts:
        return float("nan"), float("nan")
    rows = parts[0][0]
    cls = np.concatenate([p[1] for p in parts], axis=1)
    sc = np.concatenate([p[2] for p in parts], axis=1)
    ranked = np.take_along_axis(cls, np.argsort(-sc, axis=1, kind="stable"), 1)
    tally = MetricsTally(n_classes, TOP_K).add_ranked(labels[rows - first_row], ranked)
    return tally.top_k_accuracy(1), tally.top_k_accuracy(TOP_K)


def run_train(
    exp: Experiment,
    *,
    store: FeatureStore | None = None,
    client: Any = None,
    sets: Sequence[str] | None = None,
    epochs: int | None = None,
    restart: bool = False,
    progress: bool = True,
    on_epoch: Callable[[EpochRecord], None] | None = None,
) -> TrainSummary:
    """Train (or resume training) the one-vs-all SVMs of each feature set and score val/test.

    Parameters
    ----------
    exp : Experiment
        ``exp.train`` holds eqs. 3-9 parameters, ``epochs``, ``actors`` and
        ``threads_per_actor``; ``exp.seed`` seeds the per-epoch chunk order.
    store : FeatureStore, optional
        The extracted store, open for writing (default: opened from ``exp.store``).
    client : distributed.Client, optional
        Where to run; by default a client from :func:`lsic.cluster.make_client`
        with ``stage="train"`` (one worker per host, all cores as threads),
        closed again at the end.
    sets : sequence of str, optional
        Feature sets to train (default: all of the config).
    epochs : int, optional
        Total epochs (default ``exp.train.epochs``); a resumed run trains only
        the epochs after the last complete checkpoint.
    restart : bool
        Drop stored models and scores of ``sets`` and train from scratch
        (needed when the training settings changed).
    progress : bool
        Log one line per epoch (epoch, seconds, rows/s, validation accuracy).
    on_epoch : callable, optional
        Called with each :class:`EpochRecord` after its checkpoint is complete.

    Returns
    -------
    TrainSummary

    Raises
    ------
    StoreError
        No features, or stored models trained with other settings (use ``restart``).
    ClusterError
        No workers, or an actor lost more than ``MAX_RESTARTS`` times.
    """
    t0 = time.perf_counter()
    names = _select_sets(exp, sets)
    if store is None:
        store = FeatureStore.open(exp.store.url, "r+", exp.store.storage_options)
    plan = _prepare(exp, store, names, epochs, restart)
    summary = TrainSummary(store.url, names, 0, plan.n_classes, tuple(plan.todo_epochs), plan.final_epoch,
                           len(walked_chunks(plan.chunks, exp.train.refit)), 0.0)
    if plan.complete:
        log.info("train: %s is complete (epoch %d, scores written); nothing to do", store.url, plan.final_epoch)
        summary.seconds = time.perf_counter() - t0
        return summary
    if not plan.chunks["train"]:
        raise StoreError(f"store {store.url!r} has no valid training rows; check the dataset split and failures.json")

    with stage_client(exp.cluster, "train", client) as client:
        pool = ActorPool(client, ClassBlockTrainer, _actor_kwargs(exp, store, plan), plan.n_classes,
                         exp.train.actors, exp.train.threads_per_actor)
        try:
            _run_epochs(exp, store, plan, pool, summary, progress, on_epoch)
            _write_final(pool, store, plan)
            _score(client, pool, store, plan, plan.final_epoch)
            for s, st in zip(pool.slots, pool.call("stats", lambda s: (), plan.final_epoch)):
                s.stats = st
        finally:
            pool.close()
    _fill_counters(summary, pool.slots)
    summary.seconds = time.perf_counter() - t0
    log.debug(summary.line())  # the CLI prints it
    return summary


def _actor_kwargs(exp: Experiment, store: FeatureStore, plan: TrainPlan) -> dict[str, Any]:
    """What every :class:`~lsic.workflows._training_actor.ClassBlockTrainer` of the run is made with."""
    return {"url": store.url, "storage_options": store.storage_options, "sets": list(plan.sets),
            "params": train_params(exp), "lam_by_set": {name: exp.train.lam_of(name) for name in plan.sets},
            "compare_sgd": bool(exp.train.compare_sgd), "seed": int(exp.seed), "refit": bool(exp.train.refit)}


def _run_epochs(exp: Experiment, store: FeatureStore, plan: TrainPlan, pool: ActorPool, summary: TrainSummary,
                progress: bool, on_epoch: Callable[[EpochRecord], None] | None) -> None:
    """Restore the actors to the plan's start epoch, then train the epochs still to do."""
    summary.n_actors = len(pool.slots)
    log.info("train: %d actor(s) on %s; classes %s", len(pool.slots),
             ", ".join(sorted({s.address for s in pool.slots})),
             ", ".join(f"{s.lo}..{s.hi - 1}" for s in pool.slots))
    pool.call("restore", lambda s: (plan.start_epoch,), plan.start_epoch)
    for e in plan.todo_epochs:
        rec = _train_epoch(pool, store, plan, exp, e)
        summary.history.append(rec)
        if progress:
            log.info("train: %s", rec.line())
        if on_epoch is not None:
            on_epoch(rec)


def _prepare(exp: Experiment, store: FeatureStore, names: tuple[str, ...], epochs: int | None,
             restart: bool) -> TrainPlan:
    """Check the store, drop what ``restart`` asks, plan, and record each set's settings before training."""
    store.require_extraction()
    if restart:
        for name in names:
            store.drop_models(name)
    plan = plan_train(exp, store, sets=names, epochs=epochs)
    if plan.stale:
        raise StoreError(
            f"models of set(s) {', '.join(plan.stale)} in {store.url!r} were trained with other settings; "
            "run `lsic train` with --restart to train them from scratch"
        )
    for name in names:
        store.init_models(name, {"settings": run_settings(exp, store, name, plan.n_features[name]),
                                 "n_classes": plan.n_classes, "n_features": plan.n_features[name],
                                 "class_names": store.class_names, "history": []})
    return plan


def _train_epoch(pool: ActorPool, store: FeatureStore, plan: TrainPlan, exp: Experiment, e: int) -> EpochRecord:
    """Epoch ``e``: one call per actor, the validation reduce, then the checkpoint marks and history."""
    te = time.perf_counter()
    kinds = variants(exp.train.compare_sgd, exp.train.refit)
    validate = exp.train.validate_each_epoch and bool(plan.chunks["val"])
    for name in plan.sets:
        for v in kinds:
            store.checkpoints.create_epoch(name, v, e, plan.n_classes)
    order = epoch_order(walked_chunks(plan.chunks, exp.train.refit), exp.seed, e)
    val = list(plan.chunks["val"]) if validate else []
    restarts0 = sum(s.restarts for s in pool.slots)
    results = pool.call("train_epoch", lambda s: (e, order, val), e - 1)
    for s, r in zip(pool.slots, results):
        s.stats = r["stats"]
    rec = EpochRecord(e, time.perf_counter() - te, max(r["rows"] for r in results),
                      restarts=sum(s.restarts for s in pool.slots) - restarts0,
                      actor_seconds=max(r["train_seconds"] for r in results),
                      checkpoint_seconds=max(r["checkpoint_seconds"] for r in results))
    if validate:
        val_first = plan.bounds["val"][0]
        val_labels = store.labels(slice(*plan.bounds["val"]))
        for name in plan.sets:
            for v in kinds:
                if v == "refit":  # it trained on the validation rows
                    continue
                key = name if v == "asgd" else f"{name}/sgd"
                rec.val_top1[key], rec.val_top5[key] = _reduce_accuracy(
                    [r["val"][(name, v)] for r in results], val_labels, val_first, plan.n_classes)
    blocks = [(s.lo, s.hi) for s in pool.slots]
    for name in plan.sets:
        if not all(store.checkpoints.block_complete(name, v, e, lo, hi) for v in kinds for lo, hi in blocks):
            raise StoreError(f"checkpoint of epoch {e} of set {name!r} is incomplete after the epoch; rerun")
        hist = [h for h in store.history(name) if h["epoch"] < e]
        store.update_models(name, history=hist + [rec.to_dict()], epochs_complete=e)
        for v in kinds:  # keep the newest complete checkpoint only
            store.checkpoints.drop_epoch(name, v, e - 1)
    return rec


def _write_final(pool: ActorPool, store: FeatureStore, plan: TrainPlan) -> None:
    """The averaged weights of the final epoch into ``models/<set>/coef`` and ``intercept``."""
    for name in plan.sets:
        store.checkpoints.create_final_weights(name, plan.n_classes, plan.n_features[name])
    pool.call("write_final", lambda s: (), plan.final_epoch)
    for name in plan.sets:
        store.update_models(name, final_epoch=plan.final_epoch)


def _score(client: Any, pool: ActorPool, store: FeatureStore, plan: TrainPlan, final: int) -> None:
    """Actors write class-block parts; one task per row chunk reduces them into ``scores/<set>/<split>``."""
    splits = sorted({s for _, s in plan.missing_scores}, key=SCORE_SPLITS.index)
    for split in splits:
        a, b = plan.bounds[split]
        rows = a + np.flatnonzero(store.valid(slice(a, b)))
        names = [n for n, s in plan.missing_scores if s == split]
        for name in names:
            store.drop_score_parts(name, split)
        pool.call("score", lambda s: (split, list(plan.chunks[split]), a, b, names), final)
        cr = plan.chunk_rows
        blocks = [(s.lo, s.hi) for s in pool.slots]
        for name in names:
            store.create_scores(name, split, rows, plan.n_classes)
            futs = [client.submit(store.reduce_score_rows, name, split, blocks, i, min(i + cr, rows.size), pure=False)
                    for i in range(0, rows.size, cr)]
            client.gather(futs)
            store.finish_scores(name, split, final)
            store.drop_score_parts(name, split)


def _fill_counters(summary: TrainSummary, slots: list[Slot]) -> None:
    loads: dict[str, int] = {}
    for s in slots:
        for st in [*s.dead_stats, s.stats]:
            if not st:
                continue
            for k, v in st.get("loads", {}).items():
                loads[k] = loads.get(k, 0) + int(v)
            summary.bytes_read += int(st.get("bytes_read", 0))
            summary.peak_rss_bytes = max(summary.peak_rss_bytes, int(st.get("peak_rss_bytes", 0)))
            summary.peak_chunk_bytes = max(summary.peak_chunk_bytes, int(st.get("peak_chunk_bytes", 0)))
            summary.model_bytes = max(summary.model_bytes, int(st.get("model_bytes", 0)))
        summary.actors.append({**s.stats, "address": s.address, "restarts": s.restarts})
    summary.chunk_loads = loads
    summary.restarts = sum(s.restarts for s in slots)
