"""Nanny preload for batch-system workers: lsic's worker-process environment.

``dask worker --preload-nanny lsic.cluster.worker_env`` (lsic adds it to the
dask-jobqueue worker command) loads ``cluster.yaml`` into the nanny's dask
config before the nanny spawns its worker, so remote workers get the same
``distributed.nanny.pre-spawn-environ`` as a local cluster started from lsic:
in particular no ``MALLOC_TRIM_THRESHOLD_`` (see ``cluster.yaml``) unless the
site's dask config or the job's environment sets one.
"""

from __future__ import annotations

import os
from typing import Any

import dask.config

from .config import load_defaults

_KEY = "distributed.nanny.pre-spawn-environ"


def worker_environment() -> dict[str, str]:
    """The pre-spawn environment the dask config asks for (the OS environment wins, None unsets)."""
    cfg = dask.config.get(_KEY, default={}) or {}
    return {k: os.environ.get(k, str(v)) for k, v in cfg.items() if v is not None}


def dask_setup(nanny: Any) -> None:
    """Recompute the nanny's worker environment with lsic's defaults loaded."""
    load_defaults()
    wanted = worker_environment()
    for key in list(nanny.pre_spawn_env):
        if key not in wanted and key != "PYTHONHASHSEED":
            del nanny.pre_spawn_env[key]
    nanny.pre_spawn_env.update({k: v for k, v in wanted.items() if k not in nanny.pre_spawn_env})
