"""Supervision of the training actors: start them where the schedule says, call them, replace the lost.

``distributed`` actors have no resilience: an actor lives in one worker
process and dies with it. :class:`ActorPool` owns the actors of a training
run: it starts one per placement (:mod:`lsic.workflows._schedule`), sends each
one call per step and, when an actor's worker is lost, starts a replacement
with the same classes on a live worker, restores it from the last checkpoint
and repeats the call, so the final models equal those of a run without faults.
Whether a worker is lost is decided from the scheduler's own worker list
(:func:`live_workers`) and distributed's loss messages (:func:`actor_unreachable`).
"""

from __future__ import annotations

import functools
import inspect
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from lsic.pipeline.errors import ClusterError

from ._schedule import class_blocks, placement

log = logging.getLogger(__name__)

MAX_RESTARTS = 3
"""A class block whose actor is lost more often than this fails the run (resumable)."""
BUSY_WORKER_GRACE_S = 10.0
"""A worker the scheduler still lists this long after a call to its actor failed was busy, not lost."""
REPLACEMENT_WAIT_S = 60.0
"""How long a lost actor waits for a live worker to restart on."""
WORKER_POLL_S = 0.5
"""Interval between the scheduler's worker lists while waiting for, or watching, workers."""
CALL_POLL_S = 0.02
"""Interval between checks of the pending actor calls (short: an epoch call is seconds to minutes)."""


@dataclass
class Slot:
    """An actor the driver owns: its class block, where it lives, its last counters."""

    index: int
    lo: int
    hi: int
    address: str = ""
    worker_dir: str = ""
    host: str = ""
    future: Any = None
    actor: Any = None
    restarts: int = 0
    stats: dict[str, Any] = field(default_factory=dict)
    dead_stats: list[dict[str, Any]] = field(default_factory=list)


class ActorPool:
    """Creates the actors, calls them once per epoch, replaces the ones whose worker died.

    Parameters
    ----------
    client : distributed.Client
    actor : type
        The actor class, constructed as ``actor(lo=, hi=, n_threads=, **kwargs)``
        for a block of classes ``[lo, hi)``.
    kwargs : mapping
        The other constructor arguments, the same for every actor.
    n_classes : int
        Classes to share out (:func:`~lsic.workflows._schedule.class_blocks`).
    n_actors : int, optional
        Actors to start (default: one per host, see :func:`~lsic.workflows._schedule.placement`).
    threads : int, optional
        ``n_threads`` of each actor (default: its worker's threads).
    """

    def __init__(self, client: Any, actor: type, kwargs: Mapping[str, Any], n_classes: int,
                 n_actors: int | None = None, threads: int | None = None) -> None:
        self.client = client
        self.actor_type = actor
        self.kwargs = dict(kwargs)
        self.threads = threads
        workers = self._workers()
        if not workers:
            raise ClusterError("the cluster has no workers; start some or check --scheduler")
        places = placement(workers, n_actors, n_classes)
        self.slots = [Slot(i, lo, hi) for i, (lo, hi) in enumerate(class_blocks(n_classes, len(places)))]
        for slot, addr in zip(self.slots, places):
            self._start(slot, addr, workers[addr])

    def _workers(self) -> dict[str, dict[str, Any]]:
        return live_workers(self.client)

    def _start(self, slot: Slot, addr: str, info: Mapping[str, Any]) -> None:
        threads = self.threads or int(info.get("nthreads", 1))
        (slot.address, slot.worker_dir), slot.host = worker_id(addr, info), str(info.get("host", ""))
        slot.future = self.client.submit(
            self.actor_type, lo=slot.lo, hi=slot.hi, n_threads=threads, **self.kwargs,
            actor=True, workers=[addr], pure=False, allow_other_workers=False,
        )
        with self.client.as_current():  # the actor proxy binds to this client, default or not
            slot.actor = slot.future.result()
        log.debug("actor %d (classes %d..%d) on %s", slot.index, slot.lo, slot.hi - 1, addr)

    def _alive(self, slot: Slot, workers: Mapping[str, Any]) -> bool:
        info = workers.get(slot.address)
        return info is not None and worker_id(slot.address, info) == (slot.address, slot.worker_dir)

    def _replace(self, slot: Slot, restore_epoch: int, reason: str = "") -> None:
        """Start a new actor for ``slot``'s classes on a live worker and restore ``restore_epoch``.

        The worker is chosen among the live ones other than the lost one:
        first a worker holding no actor (a restarted one), then one on the same
        host, then the least loaded.
        """
        lost = (slot.address, slot.worker_dir)
        while True:
            slot.restarts += 1
            if slot.restarts > MAX_RESTARTS:
                raise ClusterError(
                    f"the actor of classes {slot.lo}..{slot.hi - 1} was lost {slot.restarts - 1} times; "
                    "check the workers' logs (memory limit?) and rerun `lsic train` to resume"
                )
            if slot.stats:
                slot.dead_stats.append(slot.stats)
                slot.stats = {}
            try:
                self.client.cancel([slot.future])
            except Exception:  # the worker is gone; nothing to release
                pass
            start = time.monotonic()
            while True:
                live = self._workers()
                workers = {a: w for a, w in live.items() if worker_id(a, w) != lost}
                waited = time.monotonic() - start
                if not workers and waited > BUSY_WORKER_GRACE_S and lost[0] in live and worker_id(lost[0], live[lost[0]]) == lost:
                    # The call failed but the scheduler still lists that worker well after: it was
                    # busy, not gone (a comm timeout while it trained). Restart on it, from the checkpoint.
                    workers = {lost[0]: live[lost[0]]}
                if workers or waited > REPLACEMENT_WAIT_S:
                    break
                time.sleep(WORKER_POLL_S)
            if not workers:
                raise ClusterError("all workers were lost during training; rerun `lsic train` to resume")
            others = [s.address for s in self.slots if s is not slot]
            target = min(sorted(workers), key=lambda a: (a in others, workers[a].get("host") != slot.host,
                                                         others.count(a)))
            log.warning("train: worker %s holding classes %d..%d was lost (%s); restarting the actor on %s from epoch %d",
                        slot.address, slot.lo, slot.hi - 1, reason or "gone from the scheduler", target, restore_epoch)
            try:
                self._start(slot, target, workers[target])
                slot.actor.restore(restore_epoch).result()
                return
            except Exception as exc:
                if not self._is_loss(slot, exc):
                    raise
                lost = (slot.address, slot.worker_dir)  # the new worker died too: try another

    def call(self, method: str, args: Callable[[Slot], tuple], restore_epoch: int) -> list[Any]:
        """Call ``method`` on every actor (one message each) and wait, replacing lost actors.

        A lost actor is replaced, restored to checkpoint ``restore_epoch`` and
        called again with the same arguments.
        """
        pending = {s.index: self._invoke(s, method, args, restore_epoch) for s in self.slots}
        results: dict[int, Any] = {}
        last_check = 0.0
        while pending:
            time.sleep(CALL_POLL_S)
            lost: list[Slot] = []
            reasons: dict[int, str] = {}
            for i, fut in list(pending.items()):
                if not fut.done():
                    continue
                try:
                    results[i] = fut.result()
                    del pending[i]
                except Exception as exc:
                    if self._is_loss(self.slots[i], exc):
                        lost.append(self.slots[i])
                        reasons[i] = f"{method}: {type(exc).__name__}: {exc}"
                    else:
                        raise
            now = time.monotonic()
            if not lost and now - last_check > WORKER_POLL_S:
                last_check = now
                workers = self._workers()
                lost = [self.slots[i] for i in pending if not self._alive(self.slots[i], workers)]
            for slot in lost:
                self._replace(slot, restore_epoch, reasons.get(slot.index, f"{method}: gone from the scheduler"))
                pending[slot.index] = self._invoke(slot, method, args, restore_epoch)
        return [results[s.index] for s in self.slots]

    def _invoke(self, slot: Slot, method: str, args: Callable[[Slot], tuple], restore_epoch: int) -> Any:
        """Send one call; an actor already known lost (the proxy refuses the call) is replaced first."""
        while True:
            try:
                return getattr(slot.actor, method)(*args(slot))
            except Exception as exc:
                if not self._is_loss(slot, exc):
                    raise
                self._replace(slot, restore_epoch, f"{method}: {type(exc).__name__}: {exc}")

    def _is_loss(self, slot: Slot, exc: BaseException) -> bool:
        """Did this call fail because the actor's worker went away (not an error raised by the actor)?

        An exception raised by the actor's own code (even an ``OSError``) comes
        back from a live worker and is re-raised; otherwise the scheduler's
        worker list decides.
        """
        return actor_unreachable(exc) or not self._alive(slot, self._workers())

    def close(self) -> None:
        for s in self.slots:
            try:
                self.client.cancel([s.future])
            except Exception:
                pass


ACTOR_LOST_MESSAGES = ("Unable to contact Actor's worker", "Worker holding Actor was lost")
"""What ``distributed.actor`` says when an actor's worker is unreachable or gone."""


def actor_unreachable(exc: BaseException) -> bool:
    """Is ``exc`` distributed's report that an actor's worker cannot be reached (no own exception type)?

    ``distributed`` raises ``OSError("Unable to contact Actor's worker")`` for a
    failed connection and ``RuntimeError("Worker holding Actor was lost...")``
    for a call on a proxy whose task was lost; only their text tells them from
    the same types raised by the actor's code. This is lsic's one match on
    that text; ``tests/workflows/test_train.py::test_distributed_actor_loss_messages``
    fails when an installed ``distributed`` changes it.
    """
    from distributed.comm.core import CommClosedError

    if isinstance(exc, CommClosedError):
        return True
    return isinstance(exc, (OSError, RuntimeError)) and any(m in str(exc) for m in ACTOR_LOST_MESSAGES)


@functools.cache
def _identity_takes_n_workers() -> bool:
    """``Scheduler.identity`` takes ``n_workers`` from distributed 2025.4 (the scheduler runs the client's version)."""
    from distributed import Scheduler

    return "n_workers" in inspect.signature(Scheduler.identity).parameters


def live_workers(client: Any) -> dict[str, dict[str, Any]]:
    """The scheduler's workers now, ``{address: info}``, asked of the scheduler itself.

    Not ``client.scheduler_info()``: it returns the client's cached identity,
    which the client's periodic refresh overwrites with one listing no workers
    (it asks for ``n_workers=0``); a poll that read the cache between the two
    saw every worker gone and restarted a healthy actor from its checkpoint.
    """
    kwargs = {"n_workers": -1} if _identity_takes_n_workers() else {}  # before 2025.4 it lists every worker
    return dict(client.sync(client.scheduler.identity, **kwargs)["workers"])


def worker_id(address: str, info: Mapping[str, Any]) -> tuple[str, str]:
    """A worker process: its address and local directory (a restarted worker may reuse the address)."""
    return address, str(info.get("local_directory", ""))
