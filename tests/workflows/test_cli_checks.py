"""What the commands check before they start a cluster or write anything.

Commands that read a store never write one: evaluate, report, predict and
export (and train) on a missing or unfinished store create nothing, and their
one-line error names the command to run first. Commands that read the images
check the dataset root before any cluster starts.
"""

from __future__ import annotations

import textwrap

import numpy as np
import pytest

from lsic.workflows import cli
from lsic.workflows.store import TEST, TRAIN, VAL, FeatureStore
from lsic.workflows.testing import write_scores, write_store

# no dataset root: training and evaluation read the store, not the images
CONFIG = textwrap.dedent("""
    dataset: {train_per_class: 4, val_per_class: 1, test_per_class: 2}
    feature_sets:
      - {name: a, descriptor: hog, coding: lcc, codebook_size: 4, kappa: 2, pyramid: [[1, 1]]}
    store: {url: runs/x.zarr}
    report: runs/report
""")


def _tree(root) -> dict[str, tuple[int, int]]:
    """Every file and folder under ``root`` with its size and modification time."""
    return {str(p.relative_to(root)): (p.stat().st_size if p.is_file() else -1, p.stat().st_mtime_ns)
            for p in sorted(root.rglob("*"))}


def _one_error(capsys) -> str:
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("lsic: error: "), captured.err
    return lines[0]


@pytest.fixture
def folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "exp.yaml").write_text(CONFIG)
    return tmp_path


@pytest.mark.parametrize("argv, needle", [
    (["evaluate", "exp.yaml"], "no feature store at 'runs/x.zarr'; run `lsic extract` first"),
    (["evaluate", "exp.yaml", "--store", "other.zarr", "--report", "rep"],
     "no feature store at 'other.zarr'; run `lsic extract` first"),
    (["train", "exp.yaml", "--store", "other.zarr"], "no feature store at 'other.zarr'; run `lsic extract` first"),
    (["report", "missing.zarr"], "no feature store at 'missing.zarr'; run `lsic extract` first"),
    (["report", "missing.zarr", "--report", "rep"], "no feature store at 'missing.zarr'; run `lsic extract` first"),
    (["export", "missing.zarr", "m.lsic.zip"], "no feature store at 'missing.zarr'; run `lsic extract` first"),
    (["predict", "missing.zip", "img.jpg"], "no model file or feature store at 'missing.zip'"),
    (["predict", "missing.zarr", "--input", "imgs", "--output", "out.parquet"],
     "no model file or feature store at 'missing.zarr'"),
])
def test_commands_on_a_missing_store_create_nothing(folder, capsys, argv, needle):
    before = _tree(folder)
    assert cli.main(argv) == 2
    err = _one_error(capsys)
    assert needle in err, err
    if argv[0] != "train":
        assert "--store" not in err  # report, predict and export have no --store; evaluate's store is named
    assert _tree(folder) == before


def test_evaluate_in_an_empty_folder_advises_extraction(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert cli.main(["evaluate", "caltech101"]) == 2
    err = _one_error(capsys)
    assert "no feature store at 'runs/caltech101.zarr'" in err and "run `lsic extract` first" in err, err
    assert "lsic train" not in err
    assert list(tmp_path.iterdir()) == []


def _store(url: str, *, extracted: bool = True, scored: bool = False) -> None:
    labels = np.array([0, 1, 0, 1, 0, 1, 0, 1], np.int32)
    split = np.array([TRAIN] * 4 + [VAL] * 2 + [TEST] * 2, np.int8)
    rng = np.random.default_rng(0)
    store = write_store(url, labels=labels, split=split, features={"a": rng.random((8, 4))}, class_names=["p", "q"],
                        config={"dataset": {"root": "nowhere"}, "feature_sets": [
                            {"name": "a", "descriptor": "hog", "coding": "lcc", "codebook_size": 4, "kappa": 2,
                             "pyramid": [[1, 1]]}]})
    if not extracted:
        store.attrs["complete_extract"] = False
    if scored:
        for code, name in ((VAL, "val"), (TEST, "test")):
            rows = np.flatnonzero(split == code)
            write_scores(store, "a", name, rows, rng.standard_normal((rows.size, 2)))


@pytest.mark.parametrize("state, command", [
    ("partly extracted", "lsic extract"),
    ("extracted", "lsic train"),
    ("scored", "lsic evaluate"),
])
def test_commands_on_an_unfinished_store_name_the_missing_stage_and_write_nothing(folder, capsys, state, command):
    _store(str(folder / "runs" / "x.zarr"), extracted=state != "partly extracted", scored=state == "scored")
    before = _tree(folder)
    runs = [["report", "runs/x.zarr"], ["export", "runs/x.zarr", "m.lsic.zip"], ["predict", "runs/x.zarr", "img.jpg"]]
    if state != "scored":  # a scored store is what evaluate is for
        runs.append(["evaluate", "exp.yaml"])
    for argv in runs:
        assert cli.main(argv) == 2, argv
        err = _one_error(capsys)
        assert f"run `{command}" in err, (argv, err)
        assert _tree(folder) == before, argv


def test_evaluate_writes_into_a_scored_store(folder, capsys):
    _store(str(folder / "runs" / "x.zarr"), scored=True)
    assert cli.main(["evaluate", "exp.yaml"]) == 0
    assert FeatureStore.open("runs/x.zarr").has_evaluation()
    assert (folder / "runs" / "report" / "index.html").is_file()
    assert "fused" in capsys.readouterr().out


@pytest.fixture
def no_cluster(monkeypatch):
    import lsic.cluster

    def refuse(*args, **kwargs):
        raise AssertionError("a cluster was started")

    monkeypatch.setattr(lsic.cluster, "make_client", refuse)


@pytest.mark.parametrize("argv, needle", [
    # the shipped config's root is relative to the current folder: not there in an empty one
    (["run", "caltech101", "--no-progress"], "dataset root '../shared/datasets/caltech101' does not exist"),
    (["extract", "caltech101", "--no-progress"], "dataset root '../shared/datasets/caltech101' does not exist"),
    (["run", "exp.yaml"], "dataset.root is missing; pass --data URL"),
    (["extract", "exp.yaml", "--data", "nowhere"], "dataset root 'nowhere' does not exist; check dataset.root or pass --data"),
])
def test_the_dataset_root_is_checked_before_any_cluster_starts(tmp_path, monkeypatch, capsys, no_cluster, argv, needle):
    sub = tmp_path / "empty"
    sub.mkdir()
    monkeypatch.chdir(sub)
    if argv[1] == "exp.yaml":
        (sub / "exp.yaml").write_text(CONFIG)
    before = _tree(tmp_path)
    assert cli.main(argv) == 2
    err = _one_error(capsys)
    assert needle in err, err
    assert _tree(tmp_path) == before  # no store either


def test_a_bad_set_key_is_reported_before_a_missing_root(folder, capsys, no_cluster):
    for command in ("run", "extract", "train", "evaluate"):
        assert cli.main([command, "exp.yaml", "--set", "train.epokhs=2"]) == 2
        assert "unknown key 'train.epokhs'" in _one_error(capsys)
    assert cli.main(["evaluate", "demo", "--set", "train.epokhs=2"]) == 2  # the shipped demo config has no root
    assert "unknown key 'train.epokhs'" in _one_error(capsys)


@pytest.mark.parametrize("value, why", [("0", "0 trains nothing"), ("-3", "-3 trains nothing"),
                                        ("two", "'two' is not a whole number")])
def test_train_epochs_flag_is_checked_before_the_store_is_opened(tmp_path, monkeypatch, capsys, value, why):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "x.yaml").write_text(CONFIG)
    with pytest.raises(SystemExit) as exc:
        cli.main(["train", "x.yaml", "--epochs", value])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "--epochs" in err and why in err
    assert _tree(tmp_path) == {"x.yaml": (len(CONFIG), (tmp_path / "x.yaml").stat().st_mtime_ns)}
