"""lsic.workflows: one Dask graph per distributed stage (extract, train, batch predict), the client-side evaluation and report, and the ``lsic`` command.

``load_model(path_or_url)`` loads a trained classifier (a model file from
``lsic export`` or an evaluated store) for use from Python.
"""

from __future__ import annotations

from .model import LsicModel, load_model

__all__: list[str] = ["LsicModel", "load_model"]
