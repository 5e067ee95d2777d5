"""Experiment config: validated once, one-line errors naming the key path."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from lsic.pipeline import ConfigError
from lsic.workflows.config import TrainConfig, load_experiment, parse_experiment, shipped_configs

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
        ({"train": {"lam_by_set": {"nope": 1e-3}}}, "train.lam_by_set names 'nope'"),
        ({"train": {"lam_by_set": {"a": -1.0}}}, "train.lam_by_set.a"),
        ({"train": {"lam_by_set": {"a": "big"}}}, "train.lam_by_set.a"),
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


# --------------------------------------------------------------------------- --set KEY=VALUE and --data


BASE_YAML = """\
dataset: {root: /orig, train_per_class: 30}
feature_sets:
  - {name: a, descriptor: hog, coding: lcc, codebook_size: 16, kappa: 4}
  - set5
train: {epochs: 5}
"""


def _write(tmp_path, text, folder="a"):
    # same file name everywhere: the experiment's name defaults to the file's stem
    (tmp_path / folder).mkdir(exist_ok=True)
    cfg = tmp_path / folder / "x.yaml"
    cfg.write_text(text)
    return cfg


def _content(exp):
    return {k: v for k, v in exp.to_dict().items() if k != "source"}


@pytest.mark.parametrize(
    "assignment, edited",
    [
        # each --set must give exactly what writing the value into the file gives
        ("train.epochs=2", BASE_YAML.replace("train: {epochs: 5}", "train: {epochs: 2}")),
        ("train.lam=0.5", BASE_YAML.replace("train: {epochs: 5}", "train: {epochs: 5, lam: 0.5}")),
        ("train.average=false", BASE_YAML.replace("train: {epochs: 5}", "train: {epochs: 5, average: false}")),
        ("dataset.test_per_class=", BASE_YAML.replace("train_per_class: 30}", "train_per_class: 30, test_per_class: null}")),
        ("feature_sets.0.pyramid=[[1,1],[2,2]]", BASE_YAML.replace("kappa: 4}", "kappa: 4, pyramid: [[1, 1], [2, 2]]}")),
        ("feature_sets.0.codebook_size=64", BASE_YAML.replace("codebook_size: 16", "codebook_size: 64")),
        ("images.max_side=96", BASE_YAML + "images: {max_side: 96}\n"),  # a section the file does not have
        ("feature_sets.1.codebook_size=32", BASE_YAML.replace("  - set5", "  - {preset: set5, codebook_size: 32}")),
        ("name=renamed", BASE_YAML + "name: renamed\n"),
    ],
)
def test_set_equals_the_same_value_written_in_the_file(tmp_path, assignment, edited):
    got = load_experiment(_write(tmp_path, BASE_YAML), assignments=[assignment])
    want = load_experiment(_write(tmp_path, edited, "edited"))
    assert _content(got) == _content(want)
    assert _content(got) != _content(load_experiment(_write(tmp_path, BASE_YAML)))  # the value did change


def test_set_values_are_yaml_typed(tmp_path):
    exp = load_experiment(_write(tmp_path, BASE_YAML), assignments=[
        "feature_sets.0.codebook_size=64", "train.lam=1e-3", "train.average=true", "train.eta0=null",
        "feature_sets.0.pyramid=[[1,1],[2,2]]", "seed=7", "train.mode=exact", "cluster.queue=long",
        "store.url=s3://b/x.zarr?v=1",  # only the first '=' splits key from value
    ])
    fs = exp.feature_sets[0]
    assert fs.codebook_size == 64 and type(fs.codebook_size) is int
    assert exp.train.lam == 1e-3 and type(exp.train.lam) is float
    assert exp.train.average is True and exp.train.eta0 is None and exp.train.mode == "exact"
    assert fs.pyramid == ((1, 1), (2, 2)) and exp.seed == 7
    assert exp.cluster == {"queue": "long"} and exp.store.url == "s3://b/x.zarr?v=1"
    # later assignments win, and the untouched set keeps its preset values
    exp2 = load_experiment(_write(tmp_path, BASE_YAML), assignments=["train.epochs=3", "train.epochs=4"])
    assert exp2.train.epochs == 4 and exp2.feature_sets[1] == exp.feature_sets[1]


@pytest.mark.parametrize(
    "assignments, needles",
    [
        (["train.epokhs=3"], ["--set train.epokhs=3", "unknown key 'train.epokhs'"]),
        (["trian.epochs=3"], ["--set trian.epochs=3", "unknown key 'trian'"]),
        (["feature_sets.0.codebok_size=3", "train.epochs=2"], ["--set feature_sets.0.codebok_size=3:", "codebok_size"]),
        (["train.epochs=two"], ["--set train.epochs=two", "train.epochs is 'two'"]),
        (["feature_sets.2.kappa=3"], ["feature_sets.2.kappa", "index 2 is out of range", "2 items (0..1)"]),
        (["feature_sets.first.kappa=3"], ["feature_sets.first.kappa", "is a list", "'first'"]),
        (["feature_sets.-1.kappa=3"], ["feature_sets.-1.kappa", "is a list"]),
        (["train.epochs.max=3"], ["train.epochs.max", "train.epochs is 5"]),
        (["train.epochs"], ["'train.epochs' is not KEY=VALUE"]),
        (["=3"], ["'=3' is not KEY=VALUE"]),
        (["train..epochs=3"], ["'train..epochs'", "empty"]),
        (["train.epochs=[1"], ["--set train.epochs", "not valid YAML"]),
        (["train=5"], ["--set train=5", "train is 5", "mapping"]),
        (["feature_sets.0.kappa=99"], ["--set feature_sets.0.kappa=99", "kappa=99"]),
    ],
)
def test_bad_set_is_one_line_error_naming_the_key(tmp_path, assignments, needles):
    with pytest.raises(ConfigError) as info:
        load_experiment(_write(tmp_path, BASE_YAML), assignments=assignments)
    msg = str(info.value)
    assert "\n" not in msg
    for needle in needles:
        assert needle in msg, msg


@pytest.mark.parametrize(
    "assignment, message",
    [
        # the key a user writes, not the name of the class that checks it (DescriptorGrid: "grid")
        ("images.step=0", "--set images.step=0: use a positive number of pixels"),
        ("images.max_side=-3", "--set images.max_side=-3: use a positive number of pixels"),
        ("images.patch_sizes=[]", "--set images.patch_sizes=[]: images.patch_sizes is empty"),
        ("images.patch_sizes=[18]", "--set images.patch_sizes=[18]: images.patch_sizes contains 18"),
        ("images.sift_window=-1", "--set images.sift_window=-1: use a non-negative number"),
        # values that would fail only on the cluster, or only after training
        ("codebook.sample_images=0", "--set codebook.sample_images=0: use a positive integer"),
        ("codebook.descriptors_per_image=0", "--set codebook.descriptors_per_image=0: use a positive integer"),
        ("fusion.grid=1", "--set fusion.grid=1: use at least 2 weights per set"),
        ("fusion.rounds=-1", "--set fusion.rounds=-1: use 0 or more rounds"),
    ],
)
def test_set_error_names_the_key_the_user_wrote(tmp_path, assignment, message):
    with pytest.raises(ConfigError) as info:
        load_experiment(_write(tmp_path, BASE_YAML), assignments=[assignment])
    assert str(info.value).startswith(message), str(info.value)
    assert "grid." not in str(info.value).replace("fusion.grid", "")
    # the same value written in the file: the same key path, without the --set
    key, value = assignment.split("=")
    section, field = key.split(".")
    with pytest.raises(ConfigError) as info:
        load_experiment(_write(tmp_path, BASE_YAML + f"{section}: {{{field}: {value}}}\n", "file"))
    assert str(info.value).startswith(f"{key}"), str(info.value)


def test_a_config_without_root_loads_and_a_bad_key_comes_first(tmp_path):
    rootless = BASE_YAML.replace("dataset: {root: /orig, train_per_class: 30}", "dataset: {train_per_class: 30}")
    cfg = _write(tmp_path, rootless)
    assert load_experiment(cfg).dataset.root is None  # training and evaluation read the store, not the images
    with pytest.raises(ConfigError, match="unknown key 'train.epokhs'"):
        load_experiment(cfg, assignments=["train.epokhs=2"])
    assert load_experiment(cfg, data="/d").dataset.root == "/d"


def test_set_error_blames_the_file_when_the_file_is_wrong(tmp_path):
    cfg = _write(tmp_path, BASE_YAML + "trian: {}\n")
    with pytest.raises(ConfigError) as info:
        load_experiment(cfg, assignments=["train.epochs=2"])
    assert "unknown key 'trian'" in str(info.value) and "--set" not in str(info.value)


def test_set_may_pass_through_invalid_steps(tmp_path):
    # layout list needs list_file: valid only after both assignments
    exp = load_experiment(_write(tmp_path, BASE_YAML), assignments=["dataset.layout=list", "dataset.list_file=l.txt"])
    assert exp.dataset.layout == "list" and exp.dataset.list_file == "l.txt"


def test_data_reroots_split_sources():
    exp = load_experiment("imagenet2010", data="/d/ilsvrc/")
    ds = exp.dataset
    assert {k: (s.root, s.layout, s.list_file, s.label_base) for k, s in ds.splits.items()} == {
        "train": ("/d/ilsvrc/train", "tar", None, 0),
        "val": ("/d/ilsvrc/val", "list", "val.txt", 1),
        "test": ("/d/ilsvrc/test", "list", "test.txt", 1),
    }
    assert ds.class_file == "/d/ilsvrc/classes.txt"
    # absolute list files keep only their name; --set runs first, so it can rename one
    exp = load_experiment("imagenet2010", data="s3://bucket/ilsvrc",
                          assignments=["dataset.splits.val.list_file=hdfs:///x/labels/val_gt.txt"])
    assert exp.dataset.splits["val"].root == "s3://bucket/ilsvrc/val"
    assert exp.dataset.splits["val"].list_file == "val_gt.txt"
    assert exp.dataset.class_file == "s3://bucket/ilsvrc/classes.txt"


def test_label_base_is_validated():
    raw = {**MINIMAL, "dataset": {"root": "/d", "layout": "list", "list_file": "l.txt", "label_base": 2}}
    with pytest.raises(ConfigError, match="label_base is 2"):
        parse_experiment(raw)
    raw = {**MINIMAL, "dataset": {"root": "/d", "layout": "tar", "label_base": 1}}
    with pytest.raises(ConfigError, match="label_base applies to layout 'list' only"):
        parse_experiment(raw)
    exp = load_experiment("imagenet2010")
    assert exp.dataset.splits["val"].label_base == exp.dataset.splits["test"].label_base == 1


@pytest.mark.parametrize("command", ["extract", "train", "run", "evaluate"])
def test_every_config_command_takes_set(tmp_path, command):
    import argparse

    from lsic.workflows import _commands

    cfg = _write(tmp_path, BASE_YAML)
    parser = argparse.ArgumentParser()
    _commands.register(parser.add_subparsers())
    extra = ["--sets", "a"] if command == "train" else []
    args = parser.parse_args([command, str(cfg), "--set", "train.epochs=7", *extra,
                              "--set", "feature_sets.0.codebook_size=32", "--store", "memory://s.zarr"])
    exp = _commands._load(args)
    assert exp.train.epochs == 7 and exp.feature_sets[0].codebook_size == 32 and exp.store.url == "memory://s.zarr"
    if command == "train":
        assert args.sets == "a"  # `--sets` (feature sets to train) is still its own flag


def test_cli_bad_set_is_one_line(tmp_path, capsys):
    from lsic.workflows import cli

    cfg = _write(tmp_path, BASE_YAML)
    for command, argv, needle in (
        ("extract", ["--set", "feature_sets.5.kappa=2"], "feature_sets.5.kappa: index 5 is out of range"),
        ("train", ["--set", "train.epokhs=2"], "unknown key 'train.epokhs'"),
        ("run", ["--set", "train.epochs"], "not KEY=VALUE"),
    ):
        assert cli.main([command, str(cfg), *argv]) == 2
        lines = capsys.readouterr().err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("lsic: error: ") and needle in lines[0], lines
    # and as a user runs it: a process, exit code 2, one line on stderr
    proc = subprocess.run([sys.executable, "-m", "lsic.workflows.cli", "evaluate", str(cfg), "--set", "train.epochs=x"],
                          capture_output=True, text=True)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and "--set train.epochs=x: train.epochs is 'x'" in lines[0], proc.stderr


def test_later_settings_keep_old_fingerprints_and_change_them_when_set():
    # Fingerprints computed by lsic at 1bb2f13, before label_base existed: stores
    # extracted then must not be refused as "another configuration" now.
    assert parse_experiment(MINIMAL).extraction_fingerprint() == "a6a3f6108e1749a2"
    zero = ["dataset.splits.val.label_base=0", "dataset.splits.test.label_base=0"]
    exact = [f"feature_sets.{i}.knn=exact" for i in range(4)]  # the shipped config's LCC sets use ivf now
    assert load_experiment("imagenet2010", assignments=[*zero, *exact]).extraction_fingerprint() == "af0c34165491d71a"
    # labels that mean other classes are other features' rows: the fingerprint must move
    assert load_experiment("imagenet2010", assignments=exact).extraction_fingerprint() != "af0c34165491d71a"
    # so do approximate neighbours (knn: ivf), while the exact default keeps the old one
    assert load_experiment("imagenet2010", assignments=[*zero, *exact[1:]]
                           ).extraction_fingerprint() != "af0c34165491d71a"
    assert load_experiment("imagenet2010", assignments=zero).extraction_fingerprint() != "af0c34165491d71a"
    assert [fs.knn for fs in load_experiment("imagenet2010").feature_sets] == 4 * ["ivf"] + 2 * ["exact"]


def test_site_defaults_through_dask_config_under_the_file():
    """The dataclasses hold the defaults; dask.config (a site's YAML or env vars) changes them; the file wins."""
    import dask.config

    assert parse_experiment(MINIMAL).train.epochs == TrainConfig().epochs == 5
    with dask.config.set({"lsic.workflows.train.epochs": 7, "lsic.workflows.images.step": 4}):
        exp = parse_experiment(MINIMAL)
        assert exp.train.epochs == 7 and exp.images.step == 4
        assert parse_experiment({**MINIMAL, "train": {"epochs": 2}}).train.epochs == 2
        with pytest.raises(ConfigError, match="train.epochs"):  # validated like the file
            with dask.config.set({"lsic.workflows.train.epochs": "many"}):
                parse_experiment(MINIMAL)




def test_the_demo_config_says_what_lsic_demo_does(tmp_path, monkeypatch):
    from importlib import resources
    from pathlib import Path

    from lsic.workflows.run import demo_data_root, demo_experiment

    text = (resources.files("lsic.workflows") / "configs" / "demo.yaml").read_text()
    assert load_experiment("demo").dataset.root is None  # train and evaluate need none; lsic demo fills it in
    exp = demo_experiment(tmp_path / "d")
    assert exp.dataset.root == demo_data_root()
    assert exp.store.url == str(tmp_path / "d" / "demo.zarr") and exp.report == str(tmp_path / "d" / "report")
    monkeypatch.chdir(tmp_path)
    default = demo_experiment()
    assert default.store.url == str(tmp_path / "lsic-demo" / "demo.zarr")
    assert "./lsic-demo" in text and "demo.zarr" in text and "report/" in text
    # "8 classes, 20 images each": the shipped photos, and the split uses all 20
    classes = [d for d in Path(demo_data_root()).iterdir() if d.is_dir()]
    assert "8 classes" in text and len(classes) == 8
    assert "20 images each" in text and {len(list(d.iterdir())) for d in classes} == {20}
    assert exp.dataset.train_per_class + exp.dataset.test_per_class == 20
