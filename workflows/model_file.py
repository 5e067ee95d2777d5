"""The portable model file (``lsic export STORE MODEL``): a zip of ``.npy`` arrays plus a JSON manifest.

Layout of the zip (members stored uncompressed: float weights barely compress
and a stored member loads without inflating)::

    manifest.json            format "lsic-model", format_version, lsic_version,
                             store_fingerprint, model_fingerprint, created,
                             grid, feature_sets, fusion, class_names,
                             arrays: {name: {file, dtype, shape, sha256}}
    arrays/<set>/centers.npy              (codebook_size, d) float32
    arrays/<set>/pca_mean.npy             (D,) when the set has PCA
    arrays/<set>/pca_components.npy       (d, D) when the set has PCA
    arrays/<set>/variances.npy            (codebook_size, d) float32, Fisher-vector sets (GMM)
    arrays/<set>/weights.npy              (codebook_size,) float32, Fisher-vector sets (GMM)
    arrays/<set>/ivf_probes.npy           (1,) int32, IVF sets whose n_probe was calibrated
    arrays/<set>/coef.npy                 (n_classes, dim) float32
    arrays/<set>/intercept.npy            (n_classes,) float32

Why this format and not a Zarr zip store: one self-describing file that any
language reads with a zip library and a ``.npy`` parser, that ``numpy.load``
reads with ``allow_pickle=False`` (no object arrays, so a model file from a
stranger cannot run code), and whose manifest is human-readable. Integrity:
the manifest names the sha256 of every array's ``.npy`` bytes, checked on
load, and zip's own CRC catches a torn member. Compatibility: a reader refuses
a ``format_version`` newer than its own with a one-line error; older versions
stay readable.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import io
import json
import logging
import zipfile
from collections.abc import Mapping
from typing import Any

import fsspec
import numpy as np

from lsic.pipeline import Codebook, ConfigError, DataError, DescriptorGrid, FeatureSet, ScoreFusion, __version__

log = logging.getLogger(__name__)

FORMAT = "lsic-model"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"


class ModelFileError(DataError):
    """A model file that cannot be used: damaged, not a model file, or from a newer lsic."""


def _npy_bytes(a: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(a), allow_pickle=False)
    return buf.getvalue()


def write_model(model: Any, url: str, *, storage_options: Mapping[str, Any] | None = None) -> str:
    """Write ``model`` (an :class:`~lsic.workflows.model.LsicModel`) as a model file at ``url``; returns ``url``.

    The file is assembled in memory and written in one go, so a reader never
    sees half a file at the final name on stores that write objects atomically.
    """
    arrays = model.arrays()
    entries: dict[str, dict[str, Any]] = {}
    blobs: dict[str, bytes] = {}
    for name, a in arrays.items():
        if a.dtype.kind not in "fiub":
            raise ConfigError(f"model array {name} has dtype {a.dtype}; only numeric arrays go into a model file")
        data = _npy_bytes(a)
        member = f"arrays/{name}.npy"
        blobs[member] = data
        entries[name] = {"file": member, "dtype": str(a.dtype), "shape": list(a.shape),
                         "sha256": hashlib.sha256(data).hexdigest()}
    manifest = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "lsic_version": __version__,
        "store_fingerprint": model.meta.get("store_fingerprint"),
        "model_fingerprint": model.fingerprint,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        **model.settings(),
        "arrays": entries,
    }
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_STORED) as zf:
        zf.writestr(MANIFEST, json.dumps(manifest, indent=1))  # first: readable with `unzip -p`
        for member, data in blobs.items():
            zf.writestr(member, data)
    with fsspec.open(url, "wb", **dict(storage_options or {})) as fh:
        fh.write(buf.getvalue())
    log.info("model file %s: %d classes, %d arrays, %.1f MiB", url, model.n_classes, len(blobs), len(buf.getvalue()) / 2**20)
    return url


def _damaged(url: str, why: str) -> ModelFileError:
    return ModelFileError(f"model file {url!r} is damaged ({why}); export it again with `lsic export STORE MODEL`")


def read_manifest(zf: zipfile.ZipFile, url: str) -> dict[str, Any]:
    """The checked manifest of an open model file (format and version, not yet the arrays)."""
    try:
        manifest = json.loads(zf.read(MANIFEST))
    except KeyError:
        raise ModelFileError(f"{url!r} is a zip but not an lsic model file (no {MANIFEST}); "
                             "make one with `lsic export STORE MODEL`") from None
    except (ValueError, zipfile.BadZipFile, OSError) as exc:
        raise _damaged(url, f"unreadable manifest: {exc}") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise ModelFileError(f"{url!r} is not an lsic model file (format {manifest.get('format') if isinstance(manifest, dict) else None!r}); "
                             "make one with `lsic export STORE MODEL`")
    version = manifest.get("format_version")
    if not isinstance(version, int):
        raise _damaged(url, "no format_version in the manifest")
    if version > FORMAT_VERSION:
        raise ModelFileError(
            f"model file {url!r} has format version {version}, written by lsic {manifest.get('lsic_version')}; "
            f"this lsic {__version__} reads up to version {FORMAT_VERSION}: upgrade lsic"
        )
    return manifest


def _read_array(zf: zipfile.ZipFile, entry: Mapping[str, Any], name: str, url: str) -> np.ndarray:
    try:
        data = zf.read(entry["file"])
    except KeyError:
        raise _damaged(url, f"array {name} is missing") from None
    except (zipfile.BadZipFile, OSError, EOFError) as exc:  # zip CRC mismatch, truncated member
        raise _damaged(url, f"array {name}: {exc}") from None
    if hashlib.sha256(data).hexdigest() != entry.get("sha256"):
        raise _damaged(url, f"checksum mismatch in array {name}")
    try:
        a = np.load(io.BytesIO(data), allow_pickle=False)
    except ValueError as exc:
        raise _damaged(url, f"array {name}: {exc}") from None
    if str(a.dtype) != entry.get("dtype") or list(a.shape) != list(entry.get("shape", [])):
        raise _damaged(url, f"array {name} is {a.dtype}{a.shape}, the manifest says {entry.get('dtype')}{tuple(entry.get('shape', []))}")
    return a


def read_model(url: str, *, storage_options: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Read a model file, checking its format version and every array's checksum.

    Returns
    -------
    dict
        The fields of :class:`~lsic.workflows.model.LsicModel` (``LsicModel(**read_model(url))``,
        which :meth:`~lsic.workflows.model.LsicModel.from_file` does).

    Raises
    ------
    ModelFileError
        Not a model file, a damaged one, or one from a newer lsic (one line naming the file and the fix).
    """
    try:
        with fsspec.open(url, "rb", **dict(storage_options or {})) as fh:
            raw = fh.read()
    except FileNotFoundError:
        raise ModelFileError(f"no model file at {url!r}; check the path or run `lsic export STORE MODEL`") from None
    except (OSError, ValueError, ImportError) as exc:
        raise ModelFileError(f"model file {url!r} cannot be read ({exc}); check the URL and its fsspec backend") from None
    try:
        zf = zipfile.ZipFile(io.BytesIO(raw))
    except zipfile.BadZipFile:
        raise _damaged(url, "not a readable zip archive") from None
    with zf:
        manifest = read_manifest(zf, url)
        try:
            grid = DescriptorGrid(**manifest["grid"])
            sets = tuple(FeatureSet.from_dict(d) for d in manifest["feature_sets"])
            fusion = ScoreFusion.from_dict(manifest["fusion"])
            classes = np.asarray(manifest["class_names"], dtype=str)
            entries = manifest["arrays"]
        except (KeyError, TypeError) as exc:
            raise _damaged(url, f"manifest field missing or malformed: {exc}") from None
        arrays = {name: _read_array(zf, e, name, url) for name, e in entries.items()}
    codebooks, coef, intercept = {}, {}, {}
    for fs in sets:
        own = {k.split("/", 1)[1]: v for k, v in arrays.items() if k.split("/", 1)[0] == fs.name}
        for key in ("centers", "coef", "intercept"):
            if key not in own:
                raise _damaged(url, f"array {fs.name}/{key} is not listed")
        codebooks[fs.name] = Codebook.from_arrays(own, fs)
        coef[fs.name] = own["coef"]
        intercept[fs.name] = own["intercept"]
        if coef[fs.name].shape != (len(classes), fs.dim):
            raise _damaged(url, f"{fs.name}/coef is {coef[fs.name].shape}, expected ({len(classes)}, {fs.dim})")
    return dict(
        grid=grid, feature_sets=sets, codebooks=codebooks, coef=coef, intercept=intercept, fusion=fusion,
        classes_=classes,
        meta={"lsic_version": manifest.get("lsic_version"), "store_fingerprint": manifest.get("store_fingerprint"),
              "format_version": manifest["format_version"], "source": url,
              # the arrays were just checked against the manifest's checksums, so its fingerprint holds
              "model_fingerprint": manifest.get("model_fingerprint")},
    )
