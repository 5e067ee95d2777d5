"""Parameter validation: scikit-learn's constraint language, in one place.

``ASGDClassifier._parameter_constraints`` is the single source of the ASGD
parameters' valid values; the experiment config (``lsic.workflows.config``)
checks its ``train`` section with :func:`check_params` against the same dict.
scikit-learn exports no public API for the constraint objects or for checking
a dict against them, so this module is the only importer of
``sklearn.utils._param_validation``; ``tests/pipeline/test_params.py`` fails
loudly when an installed scikit-learn changes what lsic uses of it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sklearn.utils._param_validation import (
    Interval,
    InvalidParameterError,
    Options,
    StrOptions,
    validate_parameter_constraints,
)

from .errors import ConfigError

__all__ = ["Interval", "Options", "StrOptions", "check_params"]


def check_params(constraints: Mapping[str, list[Any]], params: Mapping[str, Any], *, where: str) -> None:
    """Check ``params`` against scikit-learn style ``constraints`` (the keys present in both).

    Raises
    ------
    ConfigError
        One line naming the parameter as ``<where>.<key>``, what is allowed and the value given.
    """
    for key, value in params.items():
        if key not in constraints:
            continue
        try:
            validate_parameter_constraints({key: constraints[key]}, {key: value}, caller_name=where)
        except InvalidParameterError as exc:
            allowed = str(exc).split(" must be ", 1)[-1]
            raise ConfigError(f"{where}.{key} must be {allowed}") from None
