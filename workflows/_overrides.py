"""Command-line changes to an experiment file, applied to its raw mapping.

``--set KEY=VALUE`` and ``--data DIR`` edit the parsed YAML *before* it is
validated, so an override is checked exactly like the same value written in
the file (types, unknown keys, ranges) and the stored configuration records
the values the run really used.

``--set``: ``KEY`` is a dotted path; a part that meets a list is an index
(``feature_sets.3.codebook_size=64``); ``VALUE`` is read as YAML, so ``64`` is
an int, ``0.5`` a float, ``true`` a bool, ``[[1, 1], [2, 2]]`` a list and an
empty value ``null``. Missing mappings on the way are created (``train.epochs=2``
works on a file without a ``train`` section); a key the schema does not know is
then rejected by validation with its key path.

``--data DIR``: a single-root config gets ``dataset.root = DIR`` (same
layout). A config whose splits have their own roots is re-rooted under DIR:
split ``S`` reads ``DIR/S`` (``DIR/train``, ``DIR/val``, ``DIR/test``), a list
file named relative to its root keeps its name (so ``val.txt`` is read as
``DIR/val/val.txt``), an absolute list file or URL keeps only its file name
(``hdfs:///x/val.txt`` -> ``DIR/val/val.txt``), and the class file becomes
``DIR/<its file name>`` (``DIR/classes.txt`` for ``imagenet2010``).
"""

from __future__ import annotations

import copy
import posixpath
import re
from collections.abc import Iterable, Mapping
from typing import Any

import yaml

from lsic.pipeline import ConfigError

_EXAMPLE = "e.g. --set train.epochs=2 or --set feature_sets.0.codebook_size=64"


class _Loader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that also reads ``1e-5`` as a float.

    PyYAML follows YAML 1.1, where a float needs a dot (``1.0e-5``) and ``1e-5``
    is a string; experiment files and ``--set`` values write lambdas that way.
    """


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float", re.compile(r"^[-+]?[0-9][0-9_]*[eE][-+]?[0-9]+$"), list("-+0123456789")
)


def load_yaml(text: str) -> Any:
    """Parse experiment YAML (a file or a ``--set`` value) the one way both are read."""
    return yaml.load(text, Loader=_Loader)  # noqa: S506 - a SafeLoader subclass


def parse_assignment(text: str) -> tuple[list[str], Any]:
    """Split one ``KEY=VALUE`` into its key path and YAML-typed value.

    Returns
    -------
    parts : list of str
        The dotted key's parts (list indices still as strings).
    value : Any
        :func:`load_yaml` of the text after the first ``=`` (empty: ``None``).
    """
    key, eq, value_text = text.partition("=")
    key = key.strip()
    if not eq or not key:
        raise ConfigError(f"--set {text!r} is not KEY=VALUE; {_EXAMPLE}")
    parts = key.split(".")
    if any(not p.strip() for p in parts) or any(p != p.strip() for p in parts):
        raise ConfigError(f"--set key {key!r} has an empty or padded part; write dotted keys like train.epochs")
    try:
        value = load_yaml(value_text)
    except yaml.YAMLError as exc:
        problem = getattr(exc, "problem", None) or type(exc).__name__
        raise ConfigError(f"--set {key}: value {value_text!r} is not valid YAML ({problem}); quote it") from None
    return parts, value


def _index(parts: list[str], i: int, seq: list) -> int:
    """The list index that ``parts[i]`` names in ``seq``, or a one-line error."""
    where = ".".join(parts[:i]) or "the config"
    key = ".".join(parts)
    part = parts[i]
    span = f"0..{len(seq) - 1}" if seq else "none: it is empty"
    if not (part.isascii() and part.isdigit()):
        raise ConfigError(f"--set {key}: {where} is a list; use an index ({span}) instead of {part!r}")
    idx = int(part)
    if idx >= len(seq):
        raise ConfigError(f"--set {key}: index {idx} is out of range; {where} has {len(seq)} items ({span})")
    return idx


def _assign(raw: dict, parts: list[str], value: Any) -> None:
    key = ".".join(parts)
    node: Any = raw
    for i, part in enumerate(parts[:-1]):
        if isinstance(node, list):
            idx = _index(parts, i, node)
            child = node[idx]
            if isinstance(child, str) and parts[0] == "feature_sets" and i == 1:
                # a preset name is shorthand for {preset: name}: let its fields be set too
                child = node[idx] = {"preset": child}
        else:  # a dict: the walk only ever descends into dicts and lists
            child = node.get(part)
            if child is None:
                child = node[part] = {}
        if not isinstance(child, (dict, list)):
            where = ".".join(parts[: i + 1])
            raise ConfigError(f"--set {key}: {where} is {child!r}, not a mapping or list; set {where} itself")
        node = child
    last = parts[-1]
    if isinstance(node, list):
        node[_index(parts, len(parts) - 1, node)] = value
    else:
        node[last] = value


def apply_assignments(raw: Mapping[str, Any], assignments: Iterable[str]) -> dict[str, Any]:
    """A copy of ``raw`` with every ``KEY=VALUE`` of ``assignments`` applied in order.

    Structural mistakes (no ``=``, an index that is not a number or out of
    range, a key below a scalar) raise :class:`ConfigError` naming the key;
    everything else is left to the config's validation.
    """
    out = copy.deepcopy(dict(raw))
    for text in assignments:
        parts, value = parse_assignment(text)
        _assign(out, parts, value)
    return out


def _under(data: str, name: str) -> str:
    return posixpath.join(data.rstrip("/"), name)


def apply_data(raw: Mapping[str, Any], data: str) -> dict[str, Any]:
    """A copy of ``raw`` whose dataset reads from ``data`` (see the module notes)."""
    out = dict(raw)
    ds = dict(out.get("dataset") or {})
    splits = ds.get("splits")
    if not splits:
        ds["root"] = str(data)
        out["dataset"] = ds
        return out
    if not isinstance(splits, Mapping):
        return out  # validation reports the malformed splits
    new_splits: dict[str, Any] = {}
    for name, src in splits.items():
        if not isinstance(src, Mapping):
            new_splits[name] = src  # likewise
            continue
        src = {**src, "root": _under(data, str(name))}
        lf = src.get("list_file")
        if isinstance(lf, str) and ("://" in lf or lf.startswith("/")):
            src["list_file"] = posixpath.basename(lf.rstrip("/"))  # now relative to DIR/<split>
        new_splits[name] = src
    ds["splits"] = new_splits
    cf = ds.get("class_file")
    if isinstance(cf, str) and cf:
        ds["class_file"] = _under(data, posixpath.basename(cf.rstrip("/")))
    out["dataset"] = ds
    return out
