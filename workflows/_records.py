"""Settings added after the 0.1.0 release, and the values at which they reproduce what 0.1.0 did.

Stores keep what made them (the extraction fingerprint, each codebook's
feature set). A setting that did not exist when a store was written is absent
from what the store kept; at its 0.1.0-equivalent value it is left out of
what is compared too, so such a store still resumes, trains and predicts.
Any other value changes the comparison, as it changes the features.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

#: setting -> the value that reproduces 0.1.0 (list sources' labels; LCC's neighbour search)
LATER_DEFAULTS: dict[str, Any] = {"label_base": 0, "knn": "exact", "n_probe": None, "n_lists": None,
                                  "ivf_recall": 0.993}


def without_later_defaults(d: Mapping[str, Any]) -> dict[str, Any]:
    """``d`` without the settings of :data:`LATER_DEFAULTS` that hold their 0.1.0-equivalent value."""
    return {k: v for k, v in d.items() if not (k in LATER_DEFAULTS and v == LATER_DEFAULTS[k])}
