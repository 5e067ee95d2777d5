"""How settings are recorded in stores and model files: as plain JSON, compared without later settings.

:func:`plain` turns a settings dataclass (an experiment, a feature set, a
descriptor grid) into the plain JSON stored in attributes and manifests, the
inverse of their ``from_dict`` / dataclass constructors.

Stores keep what made them (the extraction fingerprint, each codebook's
feature set). A setting that did not exist when a store was written is absent
from what the store kept; at its 0.1.0-equivalent value it is left out of
what is compared too (:func:`without_later_defaults`), so such a store still
resumes, trains and predicts. Any other value changes the comparison, as it
changes the features.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

#: setting -> the value that reproduces 0.1.0 (list sources' labels; LCC's neighbour search)
LATER_DEFAULTS: dict[str, Any] = {"label_base": 0, "knn": "exact", "n_probe": None, "n_lists": None,
                                  "ivf_recall": 0.993}


def plain(obj: Any) -> Any:
    """``obj`` as plain JSON values: dataclasses and mappings as dicts, tuples and lists as lists."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, Mapping):
        return {str(k): plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [plain(v) for v in obj]
    return obj


def without_later_defaults(d: Mapping[str, Any]) -> dict[str, Any]:
    """``d`` without the settings of :data:`LATER_DEFAULTS` that hold their 0.1.0-equivalent value."""
    return {k: v for k, v in d.items() if not (k in LATER_DEFAULTS and v == LATER_DEFAULTS[k])}
