"""The one error family of lsic.

Every error a user can cause (bad image, bad config, missing path, unreachable
scheduler) is an :class:`LsicError`. Subclasses also derive the matching
builtin so that callers catching ``ValueError`` or ``OSError`` keep working.
The ``lsic`` command turns an ``LsicError`` into one line and exit code 2;
anything else is a bug and keeps its traceback.

Messages name the offending value and the fix, in one line.
"""

from __future__ import annotations


class LsicError(Exception):
    """Base class of all errors a user of lsic can cause."""


class ConfigError(LsicError, ValueError):
    """A configuration value is missing, unknown or of the wrong type."""


class ImageError(LsicError, ValueError):
    """An image could not be decoded (corrupt, truncated, empty, not an image, too large)."""


class DataError(LsicError, OSError):
    """A dataset or store path is missing, unreadable or of the wrong layout."""


class ArrayError(LsicError, ValueError):
    """An array argument has the wrong shape, dtype or values (a ``ValueError``, as in scikit-learn)."""


class StoreError(LsicError, RuntimeError):
    """The feature store is incomplete or was made by another configuration."""


class ClusterError(LsicError, RuntimeError):
    """A Dask cluster could not be started or reached."""
