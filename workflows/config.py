"""Experiment configuration: one YAML file describes a run.

The file is read with ``yaml.safe_load`` (plus ``1e-5`` as a float) and
validated once, up front, into frozen dataclasses; an unknown key, a wrong type
or a missing path is a :class:`~lsic.pipeline.ConfigError` whose one-line
message names the key path and the fix. ``--set KEY=VALUE`` and ``--data`` edit
the parsed file before that validation (:mod:`._overrides`). The library's
defaults are the section dataclasses' field defaults, and only there; a site
can change them through ``dask.config`` under ``lsic.workflows.<section>.<key>``
(a YAML file in ``~/.config/dask/`` or ``DASK_LSIC__WORKFLOWS__...``
variables), and the experiment file overrides both.

A config may be given as a path or as the name of a shipped config
(``caltech101``, ``imagenet2010``, ``demo``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import dask.config
import yaml

from lsic.pipeline import PRESETS, ConfigError, DescriptorGrid, FeatureSet, StoreError, check_asgd_params

from ._overrides import apply_assignments, apply_data, load_yaml
from ._records import plain, without_later_defaults

LAYOUTS = ("folders", "list", "tar")


@dataclass(frozen=True)
class SourceConfig:
    """Where the images of one split (or of all splits) come from.

    ``layout`` is ``folders`` (``root/<class>/<image>``), ``list`` (a list file
    of ``path label`` lines, paths relative to ``root``) or ``tar`` (``root`` a
    folder of ``<class>.tar`` archives, or one tar whose members sit in class
    folders). ``root`` is any fsspec URL.

    ``label_base`` says what a numeric label in a list file counts from: 0
    (labels 0..K-1, the default) or 1 (labels 1..K, as the ILSVRC development
    kit writes them); label ``label_base + i`` is class ``i`` of the class file.
    """

    root: str
    layout: str = "folders"
    list_file: str | None = None
    label_base: int = 0

    def __post_init__(self) -> None:
        if self.layout not in LAYOUTS:
            raise ConfigError(f"dataset layout {self.layout!r} is unknown; use one of {', '.join(LAYOUTS)}")
        if self.layout == "list" and not self.list_file:
            raise ConfigError("dataset layout 'list' needs list_file: a file of 'path label' lines")
        _check_label_base(self.label_base, self.layout)


def _check_label_base(base: int, layout: str) -> None:
    if base not in (0, 1):
        raise ConfigError(f"label_base is {base}; use 0 (list labels 0..K-1) or 1 (labels 1..K, as ILSVRC writes them)")
    # folders and tars are labelled by class name: a base there would silently do nothing
    if base != 0 and layout != "list":
        raise ConfigError(f"label_base applies to layout 'list' only, not {layout!r}; remove it")


@dataclass(frozen=True)
class DatasetConfig:
    """The dataset and how it is split (Caltech-101 protocol by default).

    Without ``splits``, each class's images are shuffled with the run's seed;
    the first ``train_per_class`` are for training (the last ``val_per_class``
    of those carved out for validation / score fusion) and the next
    ``test_per_class`` (``null``: all the rest) for testing. With ``splits``,
    each of ``train``/``val``/``test`` names its own source. ``label_base``
    (0 or 1) is that of a single-root ``list`` layout; split sources carry their own.

    ``root`` may be left out (``null``) by a config that is only trained or
    evaluated: those commands read the store, whose rows record where each
    image lies. Extraction, the one reader of the dataset, refuses
    a missing root in one line before it starts a cluster
    (:func:`lsic.workflows.datasets.build_manifest`).
    """

    root: str | None = None
    layout: str = "folders"
    list_file: str | None = None
    label_base: int = 0
    class_file: str | None = None
    train_per_class: int | None = 30
    val_per_class: int = 0
    test_per_class: int | None = 50
    max_classes: int | None = None
    splits: dict[str, SourceConfig] | None = None
    storage_options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.splits is not None:
            unknown = set(self.splits) - {"train", "val", "test"}
            if unknown:
                raise ConfigError(f"dataset.splits has unknown split {sorted(unknown)[0]!r}; use train, val, test")
            if "train" not in self.splits:
                raise ConfigError("dataset.splits needs a 'train' source")
        else:  # validates the layout; the root itself is checked by extraction, which reads it
            SourceConfig(self.root, self.layout, self.list_file, self.label_base)  # type: ignore[arg-type]
        if self.train_per_class is not None and self.train_per_class < 1:
            raise ConfigError("dataset.train_per_class must be at least 1 (or null for all)")
        if self.val_per_class < 0 or (
            self.train_per_class is not None and self.val_per_class >= self.train_per_class
        ):
            raise ConfigError("dataset.val_per_class must be >= 0 and smaller than train_per_class")


@dataclass(frozen=True)
class CodebookConfig:
    """Descriptor sample for the codebooks (and PCA): images and descriptors per image."""

    sample_images: int = 1000
    descriptors_per_image: int = 200
    max_iter: int = 100

    def __post_init__(self) -> None:
        # checked here, not by the codebook task that would meet them on a cluster after listing the dataset
        for key in ("sample_images", "descriptors_per_image", "max_iter"):
            if getattr(self, key) < 1:
                raise ConfigError(f"{key}={getattr(self, key)}: use a positive integer")


@dataclass(frozen=True)
class StoreConfig:
    """The Zarr feature store: URL (any fsspec URL), rows per chunk, fsspec options."""

    url: str = "runs/lsic.zarr"
    chunk_rows: int = 256
    storage_options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.chunk_rows < 1:
            raise ConfigError("store.chunk_rows must be a positive integer")


@dataclass(frozen=True)
class TrainConfig:
    """One-vs-all ASGD training (paper §4): eqs. 3-9 parameters and the epoch count."""

    epochs: int = 5
    lam: float = 1e-4
    lam_by_set: dict[str, float] = field(default_factory=dict)
    eta0: float | None = None
    c: float = 1.0
    average: bool = True
    mode: str = "block"
    fit_intercept: bool = True
    validate_each_epoch: bool = True
    compare_sgd: bool = False
    refit: bool = False
    actors: int | None = None
    threads_per_actor: int | None = None

    def __post_init__(self) -> None:
        # the estimator's _parameter_constraints are the one definition of valid values
        check_asgd_params({"epochs": self.epochs, "lam": self.lam, "eta0": self.eta0, "c": self.c,
                           "average": self.average, "mode": self.mode, "fit_intercept": self.fit_intercept},
                          where="train")
        for name, lam in self.lam_by_set.items():
            if isinstance(lam, bool) or not isinstance(lam, (int, float)) or not lam > 0:
                raise ConfigError(f"train.lam_by_set.{name} is {lam!r}; use a positive number (the set's lambda)")

    def lam_of(self, name: str) -> float:
        """The regularisation lambda (eq. 3) of feature set ``name``: its ``lam_by_set`` entry, else ``lam``."""
        return float(self.lam_by_set.get(name, self.lam))


@dataclass(frozen=True)
class FusionConfig:
    """Linear score fusion (paper §5.2): weights searched on the validation split."""

    method: str = "coordinate_ascent"
    rounds: int = 20
    grid: int = 21

    def __post_init__(self) -> None:
        if self.method not in ("coordinate_ascent", "equal"):
            raise ConfigError(f"fusion.method {self.method!r} is unknown; use coordinate_ascent or equal")
        # the weight search checks them too, but only after training: a run must not fail that late
        if self.grid < 2:
            raise ConfigError(f"grid={self.grid}: use at least 2 weights per set (21 steps by 0.05)")
        if self.rounds < 0:
            raise ConfigError(f"rounds={self.rounds}: use 0 or more rounds of the weight search")


@dataclass(frozen=True)
class Experiment:
    """A whole run: dataset, descriptor grid, feature sets, store, training, fusion, cluster."""

    name: str
    dataset: DatasetConfig
    feature_sets: tuple[FeatureSet, ...]
    images: DescriptorGrid = field(default_factory=DescriptorGrid)
    codebook: CodebookConfig = field(default_factory=CodebookConfig)
    store: StoreConfig = field(default_factory=StoreConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    fusion: FusionConfig = field(default_factory=FusionConfig)
    cluster: dict[str, Any] = field(default_factory=dict)
    report: str = "report"
    seed: int = 0
    source: str | None = None

    def __post_init__(self) -> None:
        if not self.feature_sets:
            raise ConfigError("feature_sets is empty; name at least one feature set")
        names = [fs.name for fs in self.feature_sets]
        if len(set(names)) != len(names):
            raise ConfigError(f"feature_sets has duplicate names {names}; give each set its own name")
        unknown = sorted(set(self.train.lam_by_set) - set(names))
        if unknown:
            raise ConfigError(f"train.lam_by_set names {unknown[0]!r}, which is not a feature set; use one of {names}")

    def feature_set(self, name: str) -> FeatureSet:
        for fs in self.feature_sets:
            if fs.name == name:
                return fs
        raise ConfigError(f"feature set {name!r} is not in the config; choose from {[f.name for f in self.feature_sets]}")

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict of the whole experiment (stored in the Zarr attrs)."""
        return plain(self)

    def extraction_fingerprint(self) -> str:
        """Hash of everything that determines the feature store's contents.

        Training, fusion, cluster and report settings are left out, so they can
        change between runs without invalidating extracted features.
        """
        d = self.to_dict()
        keep = {k: d[k] for k in ("dataset", "feature_sets", "images", "codebook", "seed")}
        keep["chunk_rows"] = d["store"]["chunk_rows"]
        keep["dataset"] = without_later_defaults({k: v for k, v in keep["dataset"].items() if k != "storage_options"})
        if keep["dataset"].get("splits"):
            keep["dataset"]["splits"] = {k: without_later_defaults(v) for k, v in keep["dataset"]["splits"].items()}
        keep["feature_sets"] = [without_later_defaults(fs) for fs in keep["feature_sets"]]
        if not any(fs.descriptor == "sift" for fs in self.feature_sets):
            # SIFT settings cannot change a store without SIFT sets; leaving them out keeps the
            # fingerprints of stores made before they existed
            keep["images"] = {k: v for k, v in keep["images"].items() if not k.startswith("sift_")}
        blob = json.dumps(keep, sort_keys=True, default=str).encode()
        return hashlib.sha256(blob).hexdigest()[:16]

    def replace(self, **changes: Any) -> Experiment:
        return dataclasses.replace(self, **changes)


# --------------------------------------------------------------------------- parsing


def _type_ok(value: Any, hint: Any) -> bool:
    origin = typing.get_origin(hint)
    if hint is Any:
        return True
    if origin in (typing.Union, types.UnionType):
        return any(_type_ok(value, h) for h in typing.get_args(hint))
    if hint is type(None):
        return value is None
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if origin is dict or hint is dict:
        return isinstance(value, Mapping)
    if origin in (tuple, list):
        return isinstance(value, (list, tuple))
    if isinstance(hint, type):
        return isinstance(value, hint)
    return True


def _describe(hint: Any) -> str:
    return str(hint).replace("typing.", "").replace("<class '", "").replace("'>", "")


def build_dataclass(cls: type, data: Any, path: str) -> Any:
    """Build the frozen dataclass ``cls`` from a mapping, naming ``path`` in errors.

    Unknown keys and wrong types are rejected; nested dataclasses are built
    recursively. Errors raised by the class's own validation are re-raised
    with the key path in front.
    """
    if isinstance(data, cls):
        return data
    if not isinstance(data, Mapping):
        raise ConfigError(f"{path or 'config'} must be a mapping of keys, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        where = f"{path}.{key}" if path else str(key)
        if key not in fields:
            raise ConfigError(
                f"unknown key {where!r}; known keys here: {', '.join(sorted(fields))}"
            )
        hint = hints[key]
        sub = _dataclass_in(hint)
        if sub is not None and isinstance(value, Mapping):
            value = build_dataclass(sub, value, where)
        elif not _type_ok(value, hint):
            raise ConfigError(f"{where} is {value!r} ({type(value).__name__}); expected {_describe(hint)}")
        elif isinstance(value, list) and _wants_tuple(hint):
            value = tuple(tuple(v) if isinstance(v, list) else v for v in value)
        kwargs[key] = value
    try:
        return cls(**kwargs)
    except ConfigError as exc:
        raise ConfigError(_at_path(str(exc), path, fields)) from None
    except TypeError as exc:
        raise ConfigError(f"{path or 'config'}: {exc}") from None


def _at_path(msg: str, path: str, fields: Mapping[str, Any]) -> str:
    """A section class's own validation message, with the key path a user writes in front.

    A message that starts with one of the class's field names (``step=0: ...``)
    becomes ``images.step=0: ...``; any other gets ``path: `` in front, unless it
    already starts with the path.
    """
    if not path or msg.startswith(path):
        return msg
    head = re.match(r"[A-Za-z_]\w*", msg)
    return f"{path}.{msg}" if head and head.group() in fields else f"{path}: {msg}"


def _wants_tuple(hint: Any) -> bool:
    return typing.get_origin(hint) is tuple or any(typing.get_origin(h) is tuple for h in typing.get_args(hint))


def _dataclass_in(hint: Any) -> type | None:
    if dataclasses.is_dataclass(hint):
        return hint
    for h in typing.get_args(hint):
        if dataclasses.is_dataclass(h):
            return h
    return None


def _feature_sets(raw: Any) -> tuple[FeatureSet, ...]:
    if not isinstance(raw, list):
        raise ConfigError("feature_sets must be a list of feature sets (preset names or mappings)")
    out = []
    for i, item in enumerate(raw):
        where = f"feature_sets[{i}]"
        if isinstance(item, str):
            if item not in PRESETS:
                raise ConfigError(f"{where}: no preset named {item!r}; presets: {', '.join(sorted(PRESETS))}")
            out.append(PRESETS[item])
            continue
        if not isinstance(item, Mapping):
            raise ConfigError(f"{where} must be a preset name or a mapping")
        item = dict(item)
        base = item.pop("preset", None)
        if base is not None:
            if base not in PRESETS:
                raise ConfigError(f"{where}.preset: no preset named {base!r}; presets: {', '.join(sorted(PRESETS))}")
            merged = plain(PRESETS[base])
            merged.update(item)
            item = merged
        try:
            out.append(FeatureSet.from_dict(item))
        except ConfigError as exc:
            raise ConfigError(f"{where}: {exc}") from None
    return tuple(out)


def _dataset(raw: Any) -> DatasetConfig:
    if not isinstance(raw, Mapping):
        raise ConfigError("dataset must be a mapping (root, layout, train_per_class, ...)")
    raw = dict(raw)
    splits = raw.pop("splits", None)
    if splits is not None:
        if not isinstance(splits, Mapping):
            raise ConfigError("dataset.splits must map train/val/test to sources {root, layout, list_file}")
        raw["splits"] = {
            name: build_dataclass(SourceConfig, src, f"dataset.splits.{name}") for name, src in splits.items()
        }
    return build_dataclass(DatasetConfig, raw, "dataset")


def parse_experiment(raw: Any, *, source: str | None = None) -> Experiment:
    """Validate a mapping (a parsed YAML file) into an :class:`Experiment`."""
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{source or 'config'} must be a YAML mapping at the top level")
    known = {f.name for f in dataclasses.fields(Experiment)} - {"source"}
    for key in raw:
        if key not in known:
            raise ConfigError(f"unknown key {key!r} in {source or 'config'}; known keys: {', '.join(sorted(known))}")
    if "dataset" not in raw:
        raise ConfigError(f"{source or 'config'} has no 'dataset' section; add dataset.root and dataset.layout")
    if "feature_sets" not in raw:
        raise ConfigError(f"{source or 'config'} has no 'feature_sets' list; add at least one feature set")
    defaults = dask.config.get("lsic.workflows", default={}) or {}
    kwargs: dict[str, Any] = {
        "name": str(raw.get("name", Path(source).stem if source else "lsic")),
        "dataset": _dataset(raw["dataset"]),
        "feature_sets": _feature_sets(raw["feature_sets"]),
        "source": source,
    }
    sections = {
        "images": DescriptorGrid,
        "codebook": CodebookConfig,
        "store": StoreConfig,
        "train": TrainConfig,
        "fusion": FusionConfig,
    }
    for key, cls in sections.items():
        section = raw.get(key) or {}
        if not isinstance(section, Mapping):
            raise ConfigError(f"{key} is {section!r}; it must be a mapping of keys (e.g. {key}: {{...}})")
        value = {**(defaults.get(key) or {}), **section}
        kwargs[key] = build_dataclass(cls, value, key)
    for key, hint in (("seed", int), ("report", str), ("cluster", dict)):
        if key in raw:
            if not _type_ok(raw[key], hint):
                raise ConfigError(f"{key} is {raw[key]!r}; expected {hint.__name__}")
            kwargs[key] = raw[key]
    return Experiment(**kwargs)


def experiment_from_store(store: Any) -> Experiment:
    """The :class:`Experiment` a :class:`~lsic.workflows.store.FeatureStore` was made with (its ``config`` attribute)."""
    cfg = store.config
    if not cfg:
        raise StoreError("the store records no config; it was not made by `lsic extract`")
    cfg.pop("source", None)
    return parse_experiment(cfg, source="store config")


def shipped_configs() -> list[str]:
    """Names of the configs shipped in ``lsic.workflows/configs``."""
    folder = resources.files("lsic.workflows") / "configs"
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".yaml"))


def load_experiment(
    config: str | os.PathLike[str], *, assignments: Sequence[str] = (), **overrides: Any
) -> Experiment:
    """Read and validate an experiment YAML file (or a shipped config's name).

    Parameters
    ----------
    config : str or path
        A YAML file, or the name of a shipped config such as ``caltech101``.
    assignments : sequence of str
        ``KEY=VALUE`` changes (``--set``), applied in order to the parsed file
        before validation (see :mod:`lsic.workflows._overrides`).
    **overrides
        ``data`` (dataset root URL; for a config whose splits have their own
        roots, the folder holding ``train/``, ``val/``, ``test/`` and the class
        file) and ``store`` (store URL) as given on the command line; they are
        applied after ``assignments`` and replace the config's values.
    """
    path = Path(config)
    if path.is_file():
        text, source = path.read_text(), str(path)
    elif str(config) in shipped_configs():
        res = resources.files("lsic.workflows") / "configs" / f"{config}.yaml"
        text, source = res.read_text(), f"{config} (shipped)"
    else:
        raise ConfigError(
            f"config {str(config)!r} is neither a file nor a shipped config; "
            f"give a YAML path or one of {', '.join(shipped_configs())}"
        )
    try:
        raw = load_yaml(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{source}{where}: not valid YAML ({getattr(exc, 'problem', exc)}); fix the syntax") from None
    if raw is not None and not isinstance(raw, Mapping):
        raise ConfigError(f"{source} must be a YAML mapping at the top level")
    base = dict(raw or {})

    def with_flags(raw: dict[str, Any]) -> dict[str, Any]:
        data, store = overrides.get("data"), overrides.get("store")
        if data:
            raw = apply_data(raw, str(data))
        if store:
            raw = {**raw, "store": {**(raw.get("store") or {}), "url": str(store)}}
        return raw

    assignments = list(assignments)
    changed = apply_assignments(base, assignments)  # its own errors already name the --set key
    try:
        return parse_experiment(with_flags(changed), source=source)
    except ConfigError as exc:
        culprits = _culprits(base, assignments, with_flags, source)
        if not culprits:
            raise
        if len(culprits) == 1 and str(exc).startswith(f"{culprits[0]}:"):  # the message names the assignment
            raise ConfigError(f"--set {exc}") from None
        raise ConfigError(f"--set {' '.join(culprits)}: {exc}") from None


def _culprits(base: dict[str, Any], assignments: list[str], with_flags: Any, source: str) -> list[str]:
    """The ``--set`` assignments a validation error comes from (empty: the file itself is at fault).

    Checked only after a failure: each assignment whose removal makes the
    config valid is named; when none alone does, all of them are.
    """
    if not assignments:
        return []
    try:
        parse_experiment(with_flags(base), source=source)
    except ConfigError:
        return []
    found = []
    for i, text in enumerate(assignments):
        try:
            parse_experiment(with_flags(apply_assignments(base, assignments[:i] + assignments[i + 1 :])), source=source)
        except ConfigError:
            continue
        found.append(text)
    return found or assignments
