"""lsic.workflows: one Dask graph per stage (extract, train, evaluate) and the ``lsic`` command."""

from __future__ import annotations

__all__: list[str] = []
