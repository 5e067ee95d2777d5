"""Datasets in: class folders, list files or tar archives, at any fsspec URL.

:func:`build_manifest` lists a dataset into a :class:`Manifest` (one row per
image: locator, label, split) in the global row order every later stage uses:
training rows, then validation, then test, each shuffled once with the run's
seed so that every chunk of rows mixes the classes (ASGD needs that).

Image locators are fsspec URLs. A tar member is written with fsspec's chained
syntax, ``tar://<member>::<tar URL>``, and its byte offset and size inside the
(uncompressed) tar are recorded, so a worker reads it with one seek and one
read, never extracting the archive to disk.
"""

from __future__ import annotations

import logging
import posixpath
import tarfile
from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import fsspec
import numpy as np

from lsic.pipeline import ConfigError, DataError

from ._layout import SPLIT_CODES, SPLITS, TRAIN, Manifest
from .config import DatasetConfig, SourceConfig

log = logging.getLogger(__name__)

__all__ = ["Manifest", "ImageRecord", "build_manifest", "check_root", "list_source", "open_fs", "read_images",
           "tar_records"]


@dataclass(frozen=True)
class ImageRecord:
    """One listed image: its URL, its label as listed, and a tar member's byte range (-1 for plain files)."""

    path: str
    label: str
    offset: int = -1
    size: int = -1


# --------------------------------------------------------------------------- listing


def open_fs(url: str, storage_options: dict) -> tuple[fsspec.AbstractFileSystem, str]:
    """The filesystem and path of a dataset URL; a missing fsspec backend is a one-line :class:`DataError`."""
    try:
        return fsspec.core.url_to_fs(url, **storage_options)
    except (ImportError, ValueError) as exc:
        raise DataError(f"cannot open dataset URL {url!r}: {exc}; install the fsspec backend it needs") from None


def _require_dir(fs: fsspec.AbstractFileSystem, path: str, url: str) -> None:
    if not fs.isdir(path):
        raise DataError(f"dataset root {url!r} is not a folder; check dataset.root or --data")


def _list_folders(src: SourceConfig, so: dict) -> list[ImageRecord]:
    fs, root = open_fs(src.root, so)
    _require_dir(fs, root, src.root)
    records = []
    for entry in sorted(fs.ls(root, detail=True), key=lambda e: e["name"]):
        name = posixpath.basename(entry["name"].rstrip("/"))
        if entry["type"] != "directory" or name.startswith("."):
            continue
        for path in sorted(fs.find(entry["name"])):
            if posixpath.basename(path).startswith("."):
                continue
            records.append(ImageRecord(fs.unstrip_protocol(path), name))
    if not records:
        raise DataError(f"dataset root {src.root!r} has no class folders with files; expected root/<class>/<image>")
    return records


def _list_file(src: SourceConfig, so: dict) -> list[ImageRecord]:
    fs, root = open_fs(src.root, so)
    absolute = "://" in src.list_file or src.list_file.startswith("/")
    lfs, lpath = open_fs(src.list_file, so) if absolute else (fs, posixpath.join(root, src.list_file))
    if not lfs.isfile(lpath):
        raise DataError(f"list file {src.list_file!r} not found under {src.root!r}; check dataset.list_file")
    records = []
    with lfs.open(lpath, "rt") as fh:
        for lineno, line in enumerate(fh, 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            parts = line.rsplit(None, 1)
            if len(parts) != 2:
                raise DataError(f"{src.list_file}:{lineno}: expected 'path label', got {line!r}")
            rel, label = parts
            full = rel if "://" in rel else posixpath.join(root, rel)
            records.append(ImageRecord(fs.unstrip_protocol(full) if "://" not in rel else rel, label))
    if not records:
        raise DataError(f"list file {src.list_file!r} has no 'path label' lines")
    return records


def _safe_member(name: str, tar_url: str) -> None:
    parts = name.split("/")
    if name.startswith("/") or ".." in parts:
        raise DataError(
            f"tar {tar_url!r} has member {name!r} with an absolute or '..' path; refusing the archive, repack it"
        )


def tar_records(fs: fsspec.AbstractFileSystem, path: str, label_of) -> list[ImageRecord]:
    """The file members of the plain tar ``path``, each labelled by ``label_of(member name)`` (None: skipped).

    Members are located by their byte range, so a worker reads one with a seek and a read.
    """
    url = fs.unstrip_protocol(path)
    if path.endswith((".tar.gz", ".tgz", ".tar.bz2", ".tar.xz")):
        raise DataError(f"tar {url!r} is compressed; lsic reads members in place, so decompress it to a plain .tar")
    records = []
    with fs.open(path, "rb") as fh:
        try:
            with tarfile.open(fileobj=fh, mode="r:") as tar:
                for info in tar:
                    _safe_member(info.name, url)
                    if not info.isfile():
                        continue
                    label = label_of(info.name)
                    if label is None:
                        continue
                    records.append(ImageRecord(f"tar://{info.name}::{url}", label, info.offset_data, info.size))
        except tarfile.TarError as exc:
            raise DataError(f"tar {url!r} cannot be read ({exc}); check the archive") from None
    return records


def _list_tars(src: SourceConfig, so: dict) -> list[ImageRecord]:
    fs, root = open_fs(src.root, so)
    if fs.isfile(root):
        # One archive whose members sit in class folders: class/<image>.
        def folder_label(name: str) -> str | None:
            head, _, tail = name.partition("/")
            if not tail:
                raise DataError(f"tar {src.root!r} member {name!r} is not inside a class folder; use class/<image>")
            return head

        records = tar_records(fs, root, folder_label)
    else:
        _require_dir(fs, root, src.root)
        tars = sorted(
            p for p in fs.ls(root, detail=False)
            if ".tar" in posixpath.basename(p) and not posixpath.basename(p).startswith(".")
        )
        if not tars:
            raise DataError(f"dataset root {src.root!r} holds no .tar archives; expected one <class>.tar per class")
        records = []
        for path in tars:
            stem = posixpath.basename(path).split(".tar")[0]
            records.extend(tar_records(fs, path, lambda _name, stem=stem: stem))
    if not records:
        raise DataError(f"no image members found in tar dataset {src.root!r}")
    return records


_LISTERS = {"folders": _list_folders, "list": _list_file, "tar": _list_tars}


def list_source(src: SourceConfig, storage_options: dict | None = None) -> list[ImageRecord]:
    """List one source's images as (URL, label name[, tar byte range]) records."""
    return _LISTERS[src.layout](src, storage_options or {})


def _read_class_file(url: str, root: str | None, so: dict) -> list[str]:
    target = url if "://" in url or url.startswith("/") or root is None else posixpath.join(root, url)
    fs, path = open_fs(target, so)
    if not fs.isfile(path):
        raise DataError(f"class file {url!r} not found; check dataset.class_file")
    with fs.open(path, "rt") as fh:
        names = [line.strip() for line in fh if line.strip()]
    if len(set(names)) != len(names):
        raise DataError(f"class file {url!r} repeats a class name; each line must name one class")
    return names


def _label_index(label: str, class_names: list[str], lookup: dict[str, int], where: str, base: int = 0) -> int:
    """Class index of a label: a class name, or a number counted from ``base`` (list ``label_base``)."""
    if label in lookup:
        return lookup[label]
    if label.lstrip("-").isdigit():
        idx = int(label) - base
        if 0 <= idx < len(class_names):
            return idx
    k = len(class_names)
    raise DataError(
        f"label {label!r} in {where} is not a known class ({base}..{k - 1 + base} with label_base {base}, "
        f"or a class name); check the list's labels against the class file and label_base"
    )


# --------------------------------------------------------------------------- manifest


def build_manifest(ds: DatasetConfig, seed: int) -> Manifest:
    """List the dataset and assign splits; deterministic for a given ``seed``.

    Returns the :class:`Manifest` in the global row order (train, val, test,
    each shuffled with ``seed``).
    """
    so = dict(ds.storage_options)
    rng = np.random.default_rng(seed)
    if ds.splits is None:
        # a config may leave the root out for training and evaluation, which read the store, not for listing
        check_root(ds.root, so)
        src = SourceConfig(ds.root, ds.layout, ds.list_file, ds.label_base)
        records = list_source(src, so)
        class_names = _class_names(ds, records, so, ds.label_base)
        per_split = _protocol_split(ds, records, class_names, rng)
    else:
        listed = {name: list_source(src, so) for name, src in ds.splits.items()}
        class_names = _class_names(ds, listed["train"], so, ds.splits["train"].label_base)
        lookup = {n: i for i, n in enumerate(class_names)}
        per_split = {
            name: [(r, _label_index(r.label, class_names, lookup, _where(name, ds.splits[name], r),
                                    ds.splits[name].label_base)) for r in recs]
            for name, recs in listed.items()
        }
        if ds.max_classes is not None:
            per_split = {k: [(r, y) for r, y in v if y < ds.max_classes] for k, v in per_split.items()}
            class_names = class_names[: ds.max_classes]
    rows: list[tuple[ImageRecord, int, int]] = []
    for name in SPLITS:
        items = per_split.get(name, [])
        order = rng.permutation(len(items))
        rows.extend((items[i][0], items[i][1], SPLIT_CODES[name]) for i in order)
    if not any(code == TRAIN for _, _, code in rows):
        raise DataError("the dataset has no training images after splitting; check dataset.root and the split sizes")
    return Manifest(
        paths=[r.path for r, _, _ in rows],
        labels=np.array([y for _, y, _ in rows], dtype=np.int32),
        split=np.array([c for _, _, c in rows], dtype=np.int8),
        offsets=np.array([r.offset for r, _, _ in rows], dtype=np.int64),
        sizes=np.array([r.size for r, _, _ in rows], dtype=np.int64),
        class_names=class_names,
    )


def _where(split: str, src: SourceConfig, r: ImageRecord) -> str:
    """Where a label was read, for errors: the split, its list file and the image."""
    listed = f" list {src.list_file!r}" if src.layout == "list" else ""
    return f"split {split}{listed} (image {r.path!r})"


def _class_names(ds: DatasetConfig, records: Sequence[ImageRecord], so: dict, base: int = 0) -> list[str]:
    if ds.class_file:
        names = _read_class_file(ds.class_file, ds.root, so)
    else:
        labels = {r.label for r in records}
        if all(lbl.lstrip("-").isdigit() for lbl in labels):
            # numbers name classes base..max, so a label is found by name at index label - base
            names = [str(i) for i in range(base, max(int(lbl) for lbl in labels) + 1)]
        else:
            names = sorted(labels)
    if ds.max_classes is not None and ds.splits is None:
        names = names[: ds.max_classes]
    return names


def _protocol_split(
    ds: DatasetConfig, records: Sequence[ImageRecord], class_names: list[str], rng: np.random.Generator
) -> dict[str, list[tuple[ImageRecord, int]]]:
    """Caltech-101 protocol: per class, n train (the last v of them validation), then up to m test."""
    lookup = {n: i for i, n in enumerate(class_names)}
    by_class: dict[int, list[ImageRecord]] = defaultdict(list)
    for r in records:
        try:
            y = _label_index(r.label, class_names, lookup, ds.list_file or str(ds.root), ds.label_base)
        except DataError:
            if ds.max_classes is not None:
                continue  # a class beyond dataset.max_classes
            raise
        by_class[y].append(r)
    out: dict[str, list[tuple[ImageRecord, int]]] = {name: [] for name in SPLITS}
    unused = 0
    for y in sorted(by_class):
        items = sorted(by_class[y], key=lambda r: r.path)
        items = [items[i] for i in rng.permutation(len(items))]
        n = len(items)
        n_test_cap = n if ds.test_per_class is None else ds.test_per_class
        if ds.train_per_class is None:
            n_train = max(n - n_test_cap, 1)
        else:
            n_train = min(ds.train_per_class, n)
            if n_train == n and n > 1:
                n_train = n - 1  # keep at least one test image per class
                log.warning("class %s has only %d images; training on %d", class_names[y], n, n_train)
        n_val = min(ds.val_per_class, max(n_train - 1, 0))
        train, test = items[:n_train], items[n_train : n_train + n_test_cap]
        out["train"].extend((r, y) for r in train[: n_train - n_val])
        out["val"].extend((r, y) for r in train[n_train - n_val :])
        out["test"].extend((r, y) for r in test)
        unused += n - n_train - len(test)
    if unused:
        log.info("%d images are beyond the protocol's per-class caps and are not used", unused)
    return out


# --------------------------------------------------------------------------- reading


def read_images(
    paths: Sequence[str],
    offsets: Sequence[int],
    sizes: Sequence[int],
    storage_options: dict | None = None,
) -> Iterator[tuple[int, bytes | Exception]]:
    """Yield ``(i, bytes)`` for each locator, or ``(i, exception)`` when it cannot be read.

    Tar members are read by seeking to their recorded byte range; each archive
    is opened once per call, so a partition of rows costs one open per tar.
    """
    so = storage_options or {}
    open_tars: dict[str, object] = {}
    try:
        for i, (path, off, size) in enumerate(zip(paths, offsets, sizes)):
            try:
                if path.startswith("tar://") and off >= 0:
                    tar_url = path.split("::", 1)[1]
                    fh = open_tars.get(tar_url)
                    if fh is None:
                        fh = open_tars[tar_url] = fsspec.open(tar_url, "rb", **so).open()
                    fh.seek(int(off))
                    data = fh.read(int(size))
                else:
                    with fsspec.open(path, "rb", **so) as fh2:
                        data = fh2.read()
                yield i, data
            except (OSError, ValueError) as exc:
                yield i, exc
    finally:
        for fh in open_tars.values():
            fh.close()


def check_root(url: str | None, storage_options: dict | None = None) -> None:
    """Fail early, in one line, when a dataset root does not exist."""
    if url is None:
        raise ConfigError("dataset.root is missing; pass --data URL (lsic extract, lsic run) or set dataset.root")
    fs, path = open_fs(url, storage_options or {})
    if not fs.exists(path):
        raise DataError(f"dataset root {url!r} does not exist; check dataset.root or pass --data URL")

