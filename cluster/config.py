"""Settings of the cluster layer: defaults in ``dask.config``, overrides checked once here.

The defaults live in ``cluster.yaml`` beside this module and are loaded into
``dask.config`` under ``lsic.cluster.*`` when :mod:`lsic.cluster` is imported, so
they can be changed in the usual dask ways (a YAML file in ``~/.config/dask/``,
``DASK_LSIC__CLUSTER__KIND=slurm`` style environment variables,
``dask.config.set``). Batch-system settings stay under dask-jobqueue's own
``jobqueue.<kind>.*`` tree and are read by dask-jobqueue itself; lsic only
overrides the keys it is given.

:func:`resolve` turns ``make_client(kind, stage=..., **overrides)`` into one
frozen :class:`ClusterSettings`; every later step trusts it.
"""

from __future__ import annotations

import inspect
import os
from dataclasses import dataclass, field
from typing import Any

import dask.config
import yaml
from dask.utils import parse_timedelta

from lsic.pipeline.errors import ConfigError

__all__ = ["KINDS", "STAGES", "ClusterSettings", "load_defaults", "resolve", "jobqueue_keys"]

#: cluster kinds understood by :func:`lsic.cluster.make_client`
KINDS: tuple[str, ...] = ("local", "address", "slurm", "pbs", "sge", "lsf")
#: stages with their own sizing rule (``None`` means "no stage-specific sizing")
STAGES: tuple[str, ...] = ("extract", "train")
#: dask-jobqueue class name of each batch kind
JOBQUEUE_CLASSES: dict[str, str] = {
    "slurm": "SLURMCluster",
    "pbs": "PBSCluster",
    "sge": "SGECluster",
    "lsf": "LSFCluster",
}

#: dask config key of the workers' statistical profiler (see ``train-worker-profile`` in cluster.yaml)
PROFILE_KEY = "distributed.worker.profile.enabled"

_DEFAULTS_FILE = os.path.join(os.path.dirname(__file__), "cluster.yaml")

# override keys lsic itself understands (python spelling; "-" is accepted for "_")
_OWN_KEYS = frozenset(
    {
        "scheduler",
        "workers",
        "threads_per_worker",
        "memory_limit",
        "timeout",
        "queue_timeout",
        "host",
        "dashboard_address",
        "security",
        "tls_ca_file",
        "tls_cert",
        "tls_key",
        "performance_report",
        "report_dir",
        "train_worker_profile",
    }
)


def load_defaults() -> None:
    """Load ``cluster.yaml`` into ``dask.config`` (below any user setting).

    Idempotent; called when :mod:`lsic.cluster` is imported.
    """
    with open(_DEFAULTS_FILE, encoding="utf-8") as f:
        defaults = yaml.safe_load(f)
    dask.config.update_defaults(defaults)


def jobqueue_keys() -> frozenset[str]:
    """Keyword names accepted by any dask-jobqueue cluster or job class lsic supports.

    These are passed through to the dask-jobqueue class (``queue``, ``account``,
    ``cores``, ``memory``, ``processes``, ``walltime``, ``interface``,
    ``job_extra_directives``, ...). Computed from the installed dask-jobqueue's
    signatures, so new keywords work without a change here.
    """
    import dask_jobqueue

    names: set[str] = set()
    for cls_name in JOBQUEUE_CLASSES.values():
        cluster_cls = getattr(dask_jobqueue, cls_name)
        for cls in (cluster_cls, cluster_cls.job_cls):
            for klass in cls.__mro__:
                init = klass.__dict__.get("__init__")
                if init is None:
                    continue
                for p in inspect.signature(init).parameters.values():
                    if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY):
                        names.add(p.name)
    names -= {"self", "scheduler", "name", "loop", "asynchronous", "job_cls", "n_workers", "security"}
    return frozenset(names)


@dataclass(frozen=True)
class ClusterSettings:
    """Everything needed to start (or reach) one cluster, validated.

    Attributes
    ----------
    kind : str
        One of :data:`KINDS`.
    stage : str or None
        One of :data:`STAGES` or ``None``.
    scheduler : str or None
        Scheduler address (kind ``address``).
    workers, threads_per_worker : int or None
        Requested worker processes and threads per worker; ``None`` = stage default.
    memory_limit : str or None
        Memory per worker process (``"4GB"``).
    timeout, queue_timeout : float
        Seconds to wait for a scheduler / for batch jobs to start running.
    host, dashboard_address : str
        Where the local cluster listens.
    tls : tuple of 3 str or None
        ``(ca_file, cert, key)`` when TLS is configured.
    security : object or None
        A ready ``distributed.security.Security`` passed by the caller (wins over ``tls``).
    require_encryption : bool
    report_dir : str or None
        Folder for the performance report, or ``None`` for no report.
    jobqueue : dict
        Keyword overrides for the dask-jobqueue class (python spelling).
    worker_profile : bool
        Dask's statistical profiler runs in the workers lsic starts (off for
        the ``train`` stage unless ``lsic.cluster.train-worker-profile``).
    """

    kind: str
    stage: str | None = None
    scheduler: str | None = None
    workers: int | None = None
    threads_per_worker: int | None = None
    memory_limit: str | None = None
    timeout: float = 10.0
    queue_timeout: float = 300.0
    host: str = "127.0.0.1"
    dashboard_address: str = "127.0.0.1:0"
    tls: tuple[str, str, str] | None = None
    security: Any = None
    require_encryption: bool = True
    report_dir: str | None = None
    jobqueue: dict[str, Any] = field(default_factory=dict)
    worker_profile: bool = True


def _cfg(key: str, default: Any = None) -> Any:
    return dask.config.get(f"lsic.cluster.{key}", default=default)


def _positive_int(name: str, value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not str(value).strip().isdigit() or int(value) < 1:
        raise ConfigError(f"cluster.{name}={value!r} must be a positive integer")
    return int(value)


def _seconds(name: str, value: Any) -> float:
    try:
        seconds = parse_timedelta(value, default="seconds")
    except (TypeError, ValueError, KeyError):
        seconds = None
    if seconds is None or seconds <= 0:
        raise ConfigError(f"cluster.{name}={value!r} must be a positive duration such as 30s or 5m")
    return float(seconds)


def resolve(kind: str | None, stage: str | None, overrides: dict[str, Any]) -> ClusterSettings:
    """Merge ``dask.config`` defaults with explicit overrides and validate them.

    Parameters
    ----------
    kind : str or None
        Cluster kind; ``None`` reads ``lsic.cluster.kind``.
    stage : {"extract", "train", None}
    overrides : dict
        Keyword overrides (``"-"`` or ``"_"`` spelling); ``None`` values mean
        "not given" so CLI defaults can be passed straight through. Keys of the
        dask-jobqueue classes (``queue``, ``cores``, ``memory``, ...) go to the
        batch cluster and are ignored for ``local``/``address``.

    Raises
    ------
    ConfigError
        Unknown kind, stage or key, or a value of the wrong type.
    """
    kind = kind if kind is not None else _cfg("kind", "local")
    kind = str(kind).lower()
    if kind not in KINDS:
        raise ConfigError(f"cluster kind {kind!r} is unknown; use one of {', '.join(KINDS)}")
    if stage is not None and stage not in STAGES:
        raise ConfigError(f"cluster stage {stage!r} is unknown; use one of {', '.join(STAGES)} or None")

    given = {str(k).replace("-", "_"): v for k, v in overrides.items() if v is not None}
    jq_keys = jobqueue_keys()
    unknown = sorted(k for k in given if k not in _OWN_KEYS and k not in jq_keys)
    if unknown:
        raise ConfigError(
            f"cluster.{unknown[0]} is not a cluster setting; use one of "
            f"{', '.join(sorted(_OWN_KEYS))} or a dask-jobqueue keyword (queue, cores, memory, walltime, ...)"
        )

    def pick(key: str, cfg_key: str | None = None) -> Any:
        return given[key] if key in given else _cfg(cfg_key or key.replace("_", "-"))

    # TLS: explicit Security object, explicit files, or files from config
    ca = pick("tls_ca_file", "tls.ca-file")
    cert = pick("tls_cert", "tls.cert")
    key = pick("tls_key", "tls.key")
    tls = None
    if any(x is not None for x in (ca, cert, key)):
        missing = [n for n, x in (("ca-file", ca), ("cert", cert), ("key", key)) if x is None]
        if missing:
            raise ConfigError(
                f"cluster TLS needs ca-file, cert and key; lsic.cluster.tls.{missing[0]} is not set"
            )
        for n, path in (("ca-file", ca), ("cert", cert), ("key", key)):
            if not os.path.isfile(str(path)):
                raise ConfigError(f"cluster TLS {n} {str(path)!r} does not exist; check lsic.cluster.tls.{n}")
        tls = (str(ca), str(cert), str(key))

    report = given.get("performance_report", _cfg("performance-report", False))
    report_dir: str | None
    if report is True:
        report_dir = str(pick("report_dir"))
    elif report in (False, "", None):
        report_dir = None
    else:
        report_dir = os.fspath(report)

    profile = pick("train_worker_profile")
    if not isinstance(profile, bool):
        raise ConfigError(f"cluster.train-worker-profile={profile!r} must be true or false")
    memory_limit = pick("memory_limit")
    jobqueue = {str(k).replace("-", "_"): v for k, v in (_cfg("jobqueue", {}) or {}).items()}
    jobqueue.update({k: v for k, v in given.items() if k in jq_keys and k not in _OWN_KEYS})

    return ClusterSettings(
        kind=kind,
        stage=stage,
        scheduler=pick("scheduler"),
        workers=_positive_int("workers", pick("workers")),
        threads_per_worker=_positive_int("threads-per-worker", pick("threads_per_worker")),
        memory_limit=None if memory_limit is None else str(memory_limit),
        timeout=_seconds("timeout", pick("timeout")),
        queue_timeout=_seconds("queue-timeout", pick("queue_timeout")),
        host=str(pick("host", "local.host")),
        dashboard_address=str(pick("dashboard_address", "local.dashboard-address")),
        tls=tls,
        security=given.get("security"),
        require_encryption=bool(_cfg("tls.require-encryption", True)),
        report_dir=report_dir,
        jobqueue=jobqueue,
        worker_profile=profile or stage != "train",
    )
