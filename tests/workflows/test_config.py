"""Experiment config: validated once, one-line errors naming the key path."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from lsic.pipeline import ConfigError
from lsic.workflows.config import load_experiment, parse_experiment, shipped_configs

MINIMAL = {
    "dataset": {"root": "/data", "layout": "folders"},
    "feature_sets": [{"name": "a", "descriptor": "hog", "coding": "lcc", "codebook_size": 16, "kappa": 2}],
}


def test_shipped_configs_parse():
    assert {"caltech101", "imagenet2010", "demo"} <= set(shipped_configs())
    for name in shipped_configs():
        exp = load_experiment(name, data="/somewhere") if name != "imagenet2010" else load_experiment(name)
        assert exp.feature_sets


def test_imagenet_config_has_table1_dims():
    exp = load_experiment("imagenet2010")
    dims = [fs.dim for fs in exp.feature_sets]
    # Paper Table 1, feature dim column.
    assert dims == [81_920, 163_840, 204_800, 262_144, 204_800, 262_144]


def test_defaults_fill_unset_sections():
    exp = parse_experiment(MINIMAL)
    assert exp.images.max_side == 500 and exp.images.patch_sizes == (16, 24, 32)
    assert exp.train.epochs == 5 and exp.store.chunk_rows == 256


@pytest.mark.parametrize(
    "patch, needle",
    [
        ({"bogus": 1}, "unknown key 'bogus'"),
        ({"train": {"epochs": "five"}}, "train.epochs"),
        ({"train": {"epokhs": 3}}, "unknown key 'train.epokhs'"),
        ({"store": {"chunk_rows": 0}}, "store.chunk_rows"),
        ({"dataset": {"root": "/d", "layout": "zip"}}, "layout 'zip'"),
        ({"feature_sets": [{"name": "a", "descriptor": "sift", "coding": "lcc", "codebook_size": 8}]}, "feature_sets[0]"),
        ({"feature_sets": []}, "feature_sets"),
    ],
)
def test_bad_values_are_one_line_errors(patch, needle):
    raw = {**MINIMAL, **patch}
    with pytest.raises(ConfigError) as info:
        parse_experiment(raw)
    msg = str(info.value)
    assert needle in msg and "\n" not in msg


def test_data_and_store_overrides(tmp_path):
    cfg = tmp_path / "x.yaml"
    cfg.write_text(textwrap.dedent("""
        dataset: {root: /orig}
        feature_sets: [{name: a, descriptor: hog, coding: lcc, codebook_size: 16, kappa: 4}]
        store: {url: /orig.zarr}
    """))
    exp = load_experiment(cfg, data="/new", store="memory://x.zarr")
    assert exp.dataset.root == "/new" and exp.store.url == "memory://x.zarr"


def test_fingerprint_ignores_training_settings():
    a = parse_experiment(MINIMAL)
    b = parse_experiment({**MINIMAL, "train": {"epochs": 9}, "cluster": {"kind": "local"}})
    c = parse_experiment({**MINIMAL, "images": {"step": 4}})
    assert a.extraction_fingerprint() == b.extraction_fingerprint() != c.extraction_fingerprint()


def test_cli_config_error_is_one_line(tmp_path):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("dataset: {root: /x}\nfeature_sets: [{name: a, descriptor: hog, coding: lcc, codebook_size: 4}]\ntrian: {}\n")
    proc = subprocess.run([sys.executable, "-m", "lsic.workflows.cli", "extract", str(cfg)], capture_output=True, text=True)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "unknown key 'trian'" in lines[0], proc.stderr


def test_cli_missing_config_is_one_line():
    proc = subprocess.run([sys.executable, "-m", "lsic.workflows.cli", "extract", "/no/such.yaml"], capture_output=True, text=True)
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1
    assert "/no/such.yaml" in proc.stderr


def test_broken_yaml(tmp_path):
    cfg = tmp_path / "b.yaml"
    cfg.write_text("dataset: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_experiment(cfg)


def test_cluster_flags_override_config_only_when_given(tmp_path):
    import argparse

    from lsic.workflows import _commands

    cfg = tmp_path / "c.yaml"
    cfg.write_text("dataset: {root: /x}\nfeature_sets: [{name: a, descriptor: hog, coding: lcc, codebook_size: 4, kappa: 2}]\n"
                   "cluster: {kind: slurm, queue: long}\n")
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers()
    _commands.register(sub)
    exp = _commands._load(parser.parse_args(["extract", str(cfg)]))
    assert exp.cluster == {"kind": "slurm", "queue": "long"}
    exp = _commands._load(parser.parse_args(["extract", str(cfg), "--scheduler", "tcp://h:1", "--workers", "3"]))
    assert exp.cluster == {"kind": "address", "queue": "long", "scheduler": "tcp://h:1", "workers": 3}


def test_workflows_yaml_and_dataclass_defaults_agree():
    """workflows.yaml holds the overridable defaults; each section's dataclass must default to the same values."""
    import dataclasses
    from importlib import resources

    import yaml

    from lsic.pipeline import DescriptorGrid
    from lsic.workflows.config import CodebookConfig, FusionConfig, StoreConfig, TrainConfig

    shipped = yaml.safe_load((resources.files("lsic.workflows") / "workflows.yaml").read_text())["lsic"]["workflows"]
    classes = {"images": DescriptorGrid, "codebook": CodebookConfig, "store": StoreConfig, "train": TrainConfig,
               "fusion": FusionConfig}
    assert set(shipped) <= set(classes)
    for section, values in shipped.items():
        fields = {f.name: f for f in dataclasses.fields(classes[section])}
        for key, value in values.items():
            f = fields[key.replace("-", "_")]
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
            assert (list(default) if isinstance(default, tuple) else default) == value, f"{section}.{key}"
