"""Batch clusters (SLURM, PBS, SGE, LSF) through dask-jobqueue, sized per stage.

Settings come from dask-jobqueue's own ``jobqueue.<kind>.*`` dask config (the
site's ``jobqueue.yaml``); lsic passes only the keys it overrides: those of
``lsic.cluster.jobqueue`` and of ``make_client(**overrides)``, plus the
``processes``/``memory`` implied by the stage. Nothing site-specific is
hard-coded.
"""

from __future__ import annotations

import logging
import math
import os
import shutil
import time
from typing import Any

import dask.config
import yaml
from dask.utils import format_bytes, parse_bytes

from lsic.pipeline.errors import ClusterError

from ._security import protocol_for
from .config import JOBQUEUE_CLASSES, PROFILE_KEY, ClusterSettings

log = logging.getLogger("lsic.cluster")


_MISSING = object()


def _cluster_class(kind: str) -> Any:
    import dask_jobqueue

    if dask.config.get(f"jobqueue.{kind}.shared-temp-directory", default=_MISSING) is _MISSING:
        # dask-jobqueue's defaults were dropped (a dask.config.set block that set
        # jobqueue.* before dask_jobqueue was first imported removes the whole
        # tree on exit): load them again, below any user setting
        with open(os.path.join(os.path.dirname(dask_jobqueue.__file__), "jobqueue.yaml")) as f:
            dask.config.update_defaults(yaml.safe_load(f))
    return getattr(dask_jobqueue, JOBQUEUE_CLASSES[kind])


#: loaded by every batch-system nanny before it spawns its worker (see lsic.cluster.worker_env)
PRELOAD_NANNY = "lsic.cluster.worker_env"


def jobqueue_sizing(settings: ClusterSettings) -> tuple[dict[str, Any], int, int]:
    """Keyword arguments for the dask-jobqueue class and the number of jobs to submit.

    One job = one host's share (``cores`` cores, ``memory`` memory) running
    ``processes`` Dask worker processes with ``cores // processes`` threads each.

    * ``extract``: ``processes = cores // threads_per_worker`` (default: one
      single-threaded worker per core).
    * ``train``: ``processes = 1``: one worker process per job with all
      ``cores`` as threads, so each job (host) gets one training actor. Set
      ``cores`` to a node's core count so one job fills one host.
    * ``None``: dask-jobqueue's own choice (``jobqueue.<kind>.processes``).

    An explicit ``processes`` override always wins. ``memory_limit`` (per
    worker) sets ``memory = memory_limit * processes``. ``workers`` asks for
    ``ceil(workers / processes)`` jobs (default 1 job).

    Returns
    -------
    (kwargs, n_jobs, workers_per_job) : tuple of dict, int, int

    Raises
    ------
    ClusterError
        ``cores`` or ``memory`` set nowhere.
    """
    kind = settings.kind
    kwargs = dict(settings.jobqueue)
    cores = kwargs.get("cores", dask.config.get(f"jobqueue.{kind}.cores", None))
    if settings.threads_per_worker is not None and cores is None and settings.stage != "extract":
        cores = settings.threads_per_worker
    if cores is None:
        raise ClusterError(
            f"dask-jobqueue needs the cores per {kind} job; set jobqueue.{kind}.cores in jobqueue.yaml "
            "or cores: in the config's cluster section"
        )
    cores = int(cores)
    if "processes" in kwargs:
        processes = int(kwargs["processes"])
    elif settings.stage == "extract":
        processes = max(1, cores // (settings.threads_per_worker or 1))
    elif settings.stage == "train":
        processes = 1
    else:
        configured = dask.config.get(f"jobqueue.{kind}.processes", None)
        processes = int(configured) if configured else None  # type: ignore[assignment]
    kwargs["cores"] = cores
    extra = kwargs.get("worker_extra_args", dask.config.get(f"jobqueue.{kind}.worker-extra-args", None))
    extra = list(extra or [])
    if PRELOAD_NANNY not in extra:
        extra += ["--preload-nanny", PRELOAD_NANNY]
    kwargs["worker_extra_args"] = extra
    if not settings.worker_profile:
        # the job's nanny reads it from its environment and passes it to its worker process
        env = "export DASK_" + "__".join(part.upper() for part in PROFILE_KEY.split(".")) + "=False"
        prologue = kwargs.get("job_script_prologue", dask.config.get(f"jobqueue.{kind}.job-script-prologue", None))
        prologue = list(prologue or [])
        if env not in prologue:
            prologue.append(env)
        kwargs["job_script_prologue"] = prologue
    if processes is not None:
        kwargs["processes"] = processes
    if settings.memory_limit is not None and "memory" not in kwargs:
        per_worker = parse_bytes(settings.memory_limit)
        kwargs["memory"] = format_bytes(per_worker * (processes or 1)).replace(" ", "")
    if kwargs.get("memory", dask.config.get(f"jobqueue.{kind}.memory", None)) is None:
        raise ClusterError(
            f"dask-jobqueue needs the memory per {kind} job; set jobqueue.{kind}.memory in jobqueue.yaml "
            "or memory: (or --memory-limit) in the config's cluster section"
        )
    per_job = processes or _default_processes(kind, kwargs)
    n_jobs = max(1, math.ceil(settings.workers / per_job)) if settings.workers else 1
    return kwargs, n_jobs, per_job


def _default_processes(kind: str, kwargs: dict[str, Any]) -> int:
    """Worker processes per job when none is set: what dask-jobqueue's job class chooses itself."""
    try:
        job = _cluster_class(kind).job_cls("tcp://<scheduler-address>:8786", name="lsic-sizing", **kwargs)
    except (TypeError, ValueError) as exc:
        raise ClusterError(f"invalid {kind} job settings: {str(exc).splitlines()[0]}") from exc
    return int(job.worker_processes)


def _check_submit_command(kind: str) -> None:
    cls = _cluster_class(kind)
    command = cls.job_cls.submit_command.split()[0]
    if shutil.which(command) is None:
        raise ClusterError(
            f"cluster kind {kind!r} needs `{command}` on PATH but it was not found; "
            f"run on a {kind.upper()} login node or load its module, or use --cluster local"
        )


def render_job_script(settings: ClusterSettings, security: Any | None) -> str:
    """The job script for ``settings`` without starting a scheduler or submitting anything."""
    cls = _cluster_class(settings.kind)
    kwargs, _, _ = jobqueue_sizing(settings)
    if security is not None:
        kwargs["security"] = security
        kwargs["protocol"] = protocol_for(security)
    try:
        job = cls.job_cls("tcp://<scheduler-address>:8786", name="dummy-name", **kwargs)
    except (TypeError, ValueError) as exc:
        raise ClusterError(f"invalid {settings.kind} job settings: {str(exc).splitlines()[0]}") from exc
    return job.job_script()


def start_jobqueue(settings: ClusterSettings, security: Any | None) -> Any:
    """Create the dask-jobqueue cluster (scheduler running, no job submitted yet)."""
    _check_submit_command(settings.kind)
    cls = _cluster_class(settings.kind)
    kwargs, _, _ = jobqueue_sizing(settings)
    scheduler_options = dict(
        kwargs.pop("scheduler_options", None)
        or dask.config.get(f"jobqueue.{settings.kind}.scheduler-options", {})
        or {}
    )
    # the dashboard on a free port unless the site chose one
    scheduler_options.setdefault("dashboard_address", ":0")
    if security is not None:
        kwargs["security"] = security
        kwargs["protocol"] = protocol_for(security)
    log.debug("starting %s %s", cls.__name__, kwargs)
    try:
        return cls(scheduler_options=scheduler_options, **kwargs)
    except (TypeError, ValueError) as exc:
        raise ClusterError(
            f"invalid {settings.kind} cluster settings ({str(exc).splitlines()[0]}); "
            f"check jobqueue.{settings.kind} in jobqueue.yaml and the config's cluster section"
        ) from exc


def wait_for_jobs(client: Any, cluster: Any, settings: ClusterSettings) -> None:
    """Submit the jobs and wait until all their workers joined, at most ``queue_timeout`` seconds."""
    _, n_jobs, per_job = jobqueue_sizing(settings)
    n_workers = n_jobs * per_job
    command = cluster.job_cls.submit_command.split()[0]
    t0 = time.monotonic()
    try:
        submit_jobs(cluster, n_jobs)
    except RuntimeError as exc:
        reason = _submit_error(str(exc))
        raise ClusterError(
            f"{command} refused the Dask worker job ({reason}); check jobqueue.{settings.kind} "
            "queue/account/walltime/cores/memory in jobqueue.yaml or the config's cluster section"
        ) from exc
    try:
        client.wait_for_workers(n_workers, timeout=settings.queue_timeout)
    except TimeoutError as exc:
        have = len(client.scheduler_info(n_workers=-1)["workers"])
        log_dir = settings.jobqueue.get("log_directory") or dask.config.get(
            f"jobqueue.{settings.kind}.log-directory", None
        )
        raise ClusterError(
            f"only {have} of {n_workers} Dask workers started within {settings.queue_timeout:g}s after "
            f"{command} submitted {n_jobs} job(s); check the queue ({_queue_command(settings.kind)}), "
            f"the queue/account/walltime/cores/memory settings and the job logs"
            + (f" in {log_dir}" if log_dir else " (set log_directory)")
        ) from exc
    log.info(
        "%d %s job(s) running %d Dask worker(s) after %.1fs",
        n_jobs,
        settings.kind,
        n_workers,
        time.monotonic() - t0,
    )


def submit_jobs(cluster: Any, n_jobs: int) -> None:
    """Submit ``n_jobs`` jobs and wait for the submit command of each, so a refusal raises here.

    ``cluster.scale(jobs=n_jobs)`` submits in the background and a refused
    submission (bad queue, account, ...) only reaches the scheduler's log;
    ``distributed`` has no public way to wait for the submission itself. This
    function is lsic's one use of ``SpecCluster.worker_spec``,
    ``new_worker_spec``, ``_correct_state`` and of a job's ``status``;
    ``tests/cluster/test_cluster_config.py::test_spec_cluster_internals_used_by_submit_jobs``
    fails when an installed ``distributed`` changes them.

    Raises
    ------
    RuntimeError
        The submit command failed (its stderr is in the message).
    """
    from distributed.core import Status

    while len(cluster.worker_spec) < n_jobs:
        cluster.worker_spec.update(cluster.new_worker_spec())
    try:
        cluster.sync(cluster._correct_state)
    except RuntimeError:
        for job in list(cluster.workers.values()):
            if job.status == Status.created:  # never submitted: let cluster.close() skip it
                job.status = Status.failed
        raise


def _submit_error(text: str) -> str:
    """The most telling line of dask-jobqueue's 'Command exited with non-zero exit code' message."""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    if "stderr:" in lines:
        err = lines[lines.index("stderr:") + 1 :]
        if err:
            return err[-1] if len(err) == 1 else "; ".join(err[:2])
    return lines[0] if lines else "no message"


def _queue_command(kind: str) -> str:
    return {"slurm": "squeue", "pbs": "qstat", "sge": "qstat", "lsf": "bjobs"}[kind]
