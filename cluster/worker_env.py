"""lsic's worker-process environment, applied only to the clusters lsic starts.

``lsic.cluster.worker-environ`` (``cluster.yaml``) lists environment variables
for worker processes on top of distributed's ``distributed.nanny.pre-spawn-environ``;
a null drops distributed's default for that variable (in particular
``MALLOC_TRIM_THRESHOLD_``, see ``cluster.yaml``) unless the site's dask config
set its own value or the OS environment has one. Importing lsic changes nothing
in distributed's config: :func:`lsic.cluster._local.start_local` passes the
result to the nannies it starts, and ``dask worker --preload-nanny
lsic.cluster.worker_env`` (added by lsic to the dask-jobqueue worker command)
applies it in each batch-system nanny before it spawns its worker.
"""

from __future__ import annotations

import os
from typing import Any

import dask.config

from .config import load_defaults

_KEY = "distributed.nanny.pre-spawn-environ"
_LSIC_KEY = "lsic.cluster.worker-environ"


def _shipped_defaults() -> dict[str, Any]:
    """distributed's own pre-spawn defaults (what a site did not choose)."""
    out: dict[str, Any] = {}
    for d in dask.config.defaults:
        out.update(((d.get("distributed") or {}).get("nanny") or {}).get("pre-spawn-environ") or {})
    return out


def pre_spawn_environ() -> dict[str, Any]:
    """The ``distributed.nanny.pre-spawn-environ`` of an lsic cluster: distributed's, with lsic's changes.

    lsic's value replaces distributed's default only; a value the site set in its
    dask config is kept.
    """
    env = dict(dask.config.get(_KEY, default={}) or {})
    shipped = _shipped_defaults()
    for key, value in (dask.config.get(_LSIC_KEY, default={}) or {}).items():
        if key in env and env[key] != shipped.get(key):
            continue  # the site's own choice
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    return env


def worker_environment() -> dict[str, str]:
    """The environment variables an lsic worker process gets before it starts (the OS environment wins)."""
    return {k: os.environ.get(k, str(v)) for k, v in pre_spawn_environ().items() if v is not None}


def dask_setup(nanny: Any) -> None:
    """Recompute the nanny's worker environment with lsic's defaults loaded."""
    load_defaults()
    wanted = worker_environment()
    for key in list(nanny.pre_spawn_env):
        if key not in wanted and key != "PYTHONHASHSEED":
            del nanny.pre_spawn_env[key]
    nanny.pre_spawn_env.update({k: v for k, v in wanted.items() if k not in nanny.pre_spawn_env})
