"""Library defaults of the workflows, loaded into ``dask.config`` under ``lsic.workflows``.

Users override them like any Dask setting: a YAML file in ``~/.config/dask/``,
``DASK_LSIC__WORKFLOWS__...`` environment variables, or the experiment file.
"""

from __future__ import annotations

from importlib import resources

import dask.config
import yaml

_loaded = False


def ensure_defaults() -> None:
    """Merge ``workflows.yaml`` under whatever the user configured (idempotent)."""
    global _loaded
    if _loaded:
        return
    text = (resources.files("lsic.workflows") / "workflows.yaml").read_text()
    defaults = yaml.safe_load(text)
    dask.config.update_defaults(defaults)
    _loaded = True
