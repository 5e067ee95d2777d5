"""The one place lsic touches scikit-learn's private parameter validation, and the checks built on it."""

from __future__ import annotations

import inspect
import numbers

import numpy as np
import pytest

from lsic.pipeline import ASGDClassifier, ConfigError, check_asgd_params


def test_installed_sklearn_still_has_the_private_validation_api():
    """Fails loudly when scikit-learn moves or changes what pipeline/_params.py imports."""
    from sklearn.utils import _param_validation as pv

    for name in ("Interval", "Options", "StrOptions", "InvalidParameterError", "validate_parameter_constraints"):
        assert hasattr(pv, name), f"sklearn.utils._param_validation.{name} is gone; update lsic/pipeline/_params.py"
    assert list(inspect.signature(pv.validate_parameter_constraints).parameters)[:3] == [
        "parameter_constraints", "params", "caller_name"]
    assert issubclass(pv.InvalidParameterError, ValueError)
    with pytest.raises(pv.InvalidParameterError, match="'c' parameter of here must be"):
        pv.validate_parameter_constraints({"c": [pv.Interval(numbers.Real, 0.5, 1, closed="right")]}, {"c": 2.0},
                                          caller_name="here")


@pytest.mark.parametrize("key, bad", [("c", 2.0), ("c", 0.5), ("lam", 0.0), ("n_jobs", 0), ("n_jobs", -2),
                                      ("mode", "fast"), ("epochs", 0)])
def test_constraints_are_the_single_source(key, bad):
    # the estimator rejects it in fit, the config check with the same constraints, one line naming the key
    X, y = np.random.default_rng(0).normal(size=(20, 3)), np.arange(20) % 3
    with pytest.raises(ValueError, match=key):
        ASGDClassifier(**{key: bad}).fit(X, y)
    with pytest.raises(ConfigError, match=f"^train.{key} must be "):
        check_asgd_params({key: bad}, where="train")


@pytest.mark.parametrize("key, good", [("c", 2 / 3), ("c", 1.0), ("n_jobs", -1), ("n_jobs", 2), ("n_jobs", None),
                                       ("eta0", None), ("average", 10)])
def test_valid_values_pass(key, good):
    check_asgd_params({key: good, "unrelated": object()}, where="train")


@pytest.mark.parametrize("key, bad", [("c", 2.0), ("c", 0.5), ("lam", 0.0), ("lam", float("inf")), ("eta0", -1.0),
                                      ("mode", "fast"), ("average", -1), ("block_size", 0), ("block_gram", 1)])
def test_the_solver_checks_the_same_constraints(key, bad):
    """OneVsAllASGD rejects what the estimator's constraints reject, naming the key, and accepts their good values."""
    from lsic.pipeline import OneVsAllASGD

    assert key in ASGDClassifier._parameter_constraints
    X, y = np.random.default_rng(0).normal(size=(20, 3)), np.arange(20) % 3
    with pytest.raises(ValueError, match=key):
        ASGDClassifier(**{key: bad}).fit(X, y)
    settings = {"lam": 1e-3, key: bad}
    with pytest.raises(ConfigError, match=f"^OneVsAllASGD.{key} must be "):
        OneVsAllASGD(3, [0, 1], **settings)
    if key in ("lam", "eta0"):  # one value per class: each is checked
        with pytest.raises(ConfigError, match=f"^OneVsAllASGD.{key} must be "):
            OneVsAllASGD(3, [0, 1], **{**settings, key: [1e-3, bad]})
    good = ASGDClassifier().get_params()[key] if key != "eta0" else 0.1
    OneVsAllASGD(3, [0, 1], **{"lam": 1e-3, key: good})
