"""lsic.cluster: make the Dask client a stage runs on (local by default, dask-jobqueue on batch systems)."""

from __future__ import annotations

__all__: list[str] = []
