"""A ``LocalCluster`` on this machine, listening on loopback only, sized per stage."""

from __future__ import annotations

import logging
from typing import Any

import dask.config
from distributed import LocalCluster
from dask.system import CPU_COUNT

from lsic.pipeline.errors import ClusterError

from ._security import protocol_for
from .config import PROFILE_KEY, ClusterSettings

log = logging.getLogger("lsic.cluster")


def local_sizing(settings: ClusterSettings, n_cpus: int | None = None) -> tuple[int | None, int | None]:
    """Worker processes and threads per worker for a local cluster.

    * ``extract``: many single-threaded workers, one per core (feature
      extraction is numba/numpy work on independent images; processes avoid
      any GIL contention and give one worker = one image chunk at a time).
    * ``train``: one worker process with every core as a thread: this machine
      is one "host" and gets one training actor using all cores.
    * ``None``: whatever was asked for, else dask's own defaults.

    Explicit ``workers``/``threads_per_worker`` always win.

    Returns
    -------
    (n_workers, threads_per_worker) : tuple of int or None
    """
    n_cpus = int(n_cpus or CPU_COUNT or 1)
    workers, threads = settings.workers, settings.threads_per_worker
    if settings.stage == "extract":
        threads = threads or 1
        workers = workers or max(1, n_cpus // threads)
    elif settings.stage == "train":
        workers = workers or 1
        threads = threads or max(1, n_cpus // workers)
    return workers, threads


def start_local(settings: ClusterSettings, security: Any | None) -> LocalCluster:
    """Start the local cluster (scheduler, workers and dashboard on ``settings.host``)."""
    n_workers, threads = local_sizing(settings)
    kwargs: dict[str, Any] = {
        "host": settings.host,
        "dashboard_address": settings.dashboard_address,
        "n_workers": n_workers,
        "threads_per_worker": threads,
        "processes": True,
        "silence_logs": logging.ERROR,
        "security": security,
        "protocol": protocol_for(security),
    }
    if settings.memory_limit is not None:
        kwargs["memory_limit"] = settings.memory_limit
    log.debug("starting LocalCluster %s", kwargs)
    from .worker_env import pre_spawn_environ

    try:
        # the nannies read their pre-spawn environment and the config they pass to their
        # worker processes when they are created, here
        worker_config: dict[str, Any] = {"distributed.nanny.pre-spawn-environ": pre_spawn_environ()}
        if not settings.worker_profile:
            worker_config[PROFILE_KEY] = False
        with dask.config.set(worker_config):
            cluster = LocalCluster(**kwargs)
    except (OSError, TimeoutError, ValueError, RuntimeError) as exc:
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ClusterError(
            f"could not start a local Dask cluster on {settings.host} ({msg}); "
            "check lsic.cluster.local.host/dashboard-address, --memory-limit and free ports"
        ) from exc
    return cluster
