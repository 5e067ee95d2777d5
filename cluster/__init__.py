"""lsic.cluster: make the Dask client a stage runs on (local by default, dask-jobqueue on batch systems).

>>> from lsic.cluster import make_client
>>> with make_client(stage="extract") as client:   # doctest: +SKIP
...     ...

Kinds (``kind=`` or ``lsic.cluster.kind`` in dask.config, default ``local``):

``local``
    A ``LocalCluster`` on this machine bound to 127.0.0.1, dashboard on a free port.
``address``
    An existing scheduler (``scheduler="tcp://host:8786"``), used as it is.
``slurm``, ``pbs``, ``sge``, ``lsf``
    A dask-jobqueue cluster; site settings come from the standard ``jobqueue.<kind>``
    dask config (``jobqueue.yaml``, ``DASK_JOBQUEUE__SLURM__QUEUE=...``), overridden
    by ``lsic.cluster.jobqueue`` and by keyword overrides (``queue=``, ``cores=``, ...).

Stage-aware sizing (``stage=``): ``"extract"`` gets many single-threaded workers,
``"train"`` one worker process per host with all of its cores as threads (one
training actor per machine). See :func:`lsic.cluster._local.local_sizing` and
:func:`lsic.cluster._jobqueue.jobqueue_sizing`.
"""

from __future__ import annotations

import argparse
import logging
from typing import Any

from distributed import Client

from lsic.pipeline.errors import ClusterError

from . import config
from ._reports import StageReport, log_dashboard
from ._security import make_security

__all__ = [
    "ClusterError",
    "add_cluster_arguments",
    "cluster_options",
    "job_script",
    "make_client",
]

log = logging.getLogger("lsic.cluster")

config.load_defaults()


class _StageClient(Client):
    """A ``Client`` that also finishes its performance report and closes the cluster it started.

    ``Client.cluster`` is the cluster it was created with; ``owns_cluster``
    says whether :func:`make_client` started it (then closing the client
    closes it too) or it was reached at an address.
    """

    owns_cluster: bool = False
    stage_report: StageReport | None = None

    def close(self, *args: Any, **kwargs: Any) -> Any:
        report, self.stage_report = self.stage_report, None
        if report is not None and self.status == "running":
            try:
                report.finish(self)
            except Exception as exc:  # a report must never hide the stage's own result
                log.warning("could not write the performance report %s: %s", report.path, exc)
        cluster = self.cluster if self.owns_cluster else None
        self.owns_cluster = False
        try:
            return super().close(*args, **kwargs)
        finally:
            if cluster is not None:
                cluster.close()


def make_client(kind: str | None = None, *, stage: str | None = None, **overrides: Any) -> Client:
    """Start or reach a Dask cluster and return a client connected to it.

    Parameters
    ----------
    kind : {"local", "address", "slurm", "pbs", "sge", "lsf"} or None
        ``None`` reads ``lsic.cluster.kind`` from dask.config (default ``"local"``).
    stage : {"extract", "train", None}
        Size the cluster for this stage: ``"extract"`` = many single-threaded
        workers; ``"train"`` = one worker process per host with all its cores
        as threads. Ignored for ``"address"`` (an existing cluster keeps its shape).
    **overrides
        ``scheduler``, ``workers``, ``threads_per_worker``, ``memory_limit``,
        ``timeout``, ``queue_timeout``, ``host``, ``dashboard_address``,
        ``security`` (a ``distributed.security.Security``), ``tls_ca_file``,
        ``tls_cert``, ``tls_key``, ``performance_report`` (True or a folder),
        ``report_dir``; for batch kinds also any dask-jobqueue keyword
        (``queue``, ``account``, ``cores``, ``memory``, ``processes``,
        ``walltime``, ``interface``, ``job_extra_directives``, ...). ``None``
        values are ignored. ``-`` and ``_`` spellings are both accepted.

    Returns
    -------
    distributed.Client
        Usable as a context manager; closing it writes the performance report
        (if asked for) and closes any cluster this call started.

    Raises
    ------
    ConfigError
        Unknown kind, stage or setting.
    ClusterError
        Scheduler unreachable within ``timeout``, submit command (``sbatch``,
        ``qsub``, ``bsub``) missing, or batch jobs still queued after ``queue_timeout``.
    """
    settings = config.resolve(kind, stage, overrides)
    security = make_security(settings)
    cluster: Any = None
    if settings.kind == "address":
        from ._address import connect

        client = connect(settings, security, client_cls=_StageClient)
    else:
        if settings.kind == "local":
            from ._local import start_local

            cluster = start_local(settings, security)
        else:
            from ._jobqueue import start_jobqueue

            cluster = start_jobqueue(settings, security)
        try:
            client = _StageClient(cluster, security=security, timeout=settings.timeout, set_as_default=True)
        except BaseException:
            cluster.close()
            raise
        client.owns_cluster = True
        if settings.kind != "local":
            try:
                from ._jobqueue import wait_for_jobs

                wait_for_jobs(client, cluster, settings)
            except BaseException:
                client.close()
                raise
    log_dashboard(client, stage)
    if settings.report_dir is not None:
        report = StageReport(settings.report_dir, stage)
        report.start(client)
        client.stage_report = report
    return client


def job_script(kind: str = "slurm", *, stage: str | None = None, **overrides: Any) -> str:
    """The batch job script ``make_client(kind, stage=stage, **overrides)`` would submit.

    Pure: starts no scheduler and submits nothing (the scheduler address in the
    script is a placeholder). Useful to check a site's ``jobqueue.yaml``.
    """
    from ._jobqueue import render_job_script

    settings = config.resolve(kind, stage, overrides)
    return render_job_script(settings, make_security(settings))


def add_cluster_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the cluster flags to an ``argparse`` parser (a subcommand's parser).

    Flags: ``--cluster {local,address,slurm,pbs,sge,lsf}``, ``--scheduler ADDRESS``
    (implies ``--cluster address``), ``--workers N``, ``--threads-per-worker N``,
    ``--memory-limit SIZE``, ``--performance-report [DIR]``. All default to
    ``None`` = "use the config"; turn them into ``make_client`` overrides with
    :func:`cluster_options`.
    """
    group = parser.add_argument_group("cluster", "where the stage runs (default: a local cluster on this machine)")
    group.add_argument(
        "--cluster",
        choices=config.KINDS,
        default=None,
        help="cluster kind (default: lsic.cluster.kind in the dask config, else local)",
    )
    group.add_argument(
        "--scheduler",
        metavar="ADDRESS",
        default=None,
        help="address of a running Dask scheduler, e.g. tcp://head:8786 (implies --cluster address)",
    )
    group.add_argument(
        "--workers", type=int, metavar="N", default=None, help="worker processes (default: chosen per stage)"
    )
    group.add_argument(
        "--threads-per-worker",
        type=int,
        metavar="N",
        default=None,
        help="threads per worker process (default: 1 for extract, all cores of a host for train)",
    )
    group.add_argument(
        "--memory-limit", metavar="SIZE", default=None, help="memory per worker process, e.g. 4GB"
    )
    group.add_argument(
        "--performance-report",
        nargs="?",
        const=True,
        default=None,
        metavar="DIR",
        help="write a Dask performance report (HTML) per stage into DIR (default: lsic.cluster.report-dir)",
    )
    return parser


def cluster_options(args: argparse.Namespace) -> dict[str, Any]:
    """``make_client`` keyword arguments from parsed :func:`add_cluster_arguments` flags.

    Returns a dict with ``kind`` plus only the overrides actually given, so
    ``make_client(**cluster_options(args), stage="extract")`` works directly.
    """
    kind = getattr(args, "cluster", None)
    scheduler = getattr(args, "scheduler", None)
    if scheduler is not None and kind is None:
        kind = "address"
    opts: dict[str, Any] = {"kind": kind}
    for name in ("scheduler", "workers", "threads_per_worker", "memory_limit", "performance_report"):
        value = getattr(args, name, None)
        if value is not None:
            opts[name] = value
    return opts
