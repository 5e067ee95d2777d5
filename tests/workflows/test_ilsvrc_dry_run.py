"""The ILSVRC 2010 dry run: the shipped ``imagenet2010`` config on a tiny dataset in its layout.

The dataset is built from the photos the package ships (``pipeline/data/demo``,
so no shared data is needed) the way the ILSVRC 2010 development kit lays out
its data: one uncompressed ``<wnid>.tar`` per class for training, flat folders
of ``ILSVRC2010_<split>_<n>.JPEG`` files with a ``path label`` list whose labels
count from 1, and ``classes.txt`` with one wnid per line (label i = line i).
The wnids are invented and the class file is not in alphabetical order, so a
label read as a sorted index, or counted from 0, lands on the wrong class.

The fast tests check the layout, the label mapping and the command-line
overrides through :func:`build_manifest`; ``test_dry_run`` runs
``lsic run imagenet2010 --data DIR --set ...`` end to end (slow).
"""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

import numpy as np
import pytest
import zarr

from lsic.pipeline import DataError
from lsic.workflows import cli
from lsic.workflows.config import load_experiment
from lsic.workflows.datasets import build_manifest, read_images

# demo folder -> invented wnid; the class file lists them in this (non-sorted) order
CLASSES = {"watch": "n04000004", "airplanes": "n02000002", "Motorbikes": "n03000003", "sunflower": "n01000001"}
N_TRAIN, N_VAL, N_TEST = 12, 3, 5

# Table 1's sizes shrunk from the command line: tiny codebooks, small images, 2 epochs
SHRINK = [
    *(f"feature_sets.{i}.codebook_size=16" for i in range(4)),
    *(f"feature_sets.{i}.kappa=3" for i in range(4)),
    *(f"feature_sets.{i}.codebook_size=4" for i in (4, 5)),
    *(f"feature_sets.{i}.pca_dim=16" for i in (4, 5)),
    "images.max_side=128",
    "codebook={sample_images: 48, descriptors_per_image: 60, max_iter: 30}",
    "store.chunk_rows=16",
    "train.epochs=2",
    "train.lam=1e-3",
]


def make_ilsvrc_layout(demo: Path, out: Path) -> dict[str, dict[str, str]]:
    """Write DIR/{train/<wnid>.tar, val/, test/, classes.txt}; return {split: {file name: wnid}}."""
    (out / "train").mkdir(parents=True)
    truth: dict[str, dict[str, str]] = {"train": {}, "val": {}, "test": {}}
    (out / "classes.txt").write_text("".join(f"{w}\n" for w in CLASSES.values()))
    label = {w: i + 1 for i, w in enumerate(CLASSES.values())}  # ILSVRC2010_ID: 1-based line number
    lists: dict[str, list[str]] = {"val": [], "test": []}
    counter = {"val": 0, "test": 0}
    for folder, wnid in CLASSES.items():
        photos = sorted((demo / folder).glob("*.jpg"))
        assert len(photos) >= N_TRAIN + N_VAL + N_TEST
        with tarfile.open(out / "train" / f"{wnid}.tar", "w") as tar:  # uncompressed, members flat
            for k, p in enumerate(photos[:N_TRAIN]):
                name = f"{wnid}_{k}.JPEG"
                tar.add(p, arcname=name)
                truth["train"][name] = wnid
        rest = {"val": photos[N_TRAIN : N_TRAIN + N_VAL], "test": photos[N_TRAIN + N_VAL : N_TRAIN + N_VAL + N_TEST]}
        for split, chosen in rest.items():
            (out / split).mkdir(exist_ok=True)
            for p in chosen:
                counter[split] += 1
                name = f"ILSVRC2010_{split}_{counter[split]:08d}.JPEG"
                (out / split / name).write_bytes(p.read_bytes())
                lists[split].append(f"{name} {label[wnid]}")
                truth[split][name] = wnid
    for split, lines in lists.items():
        (out / split / f"{split}.txt").write_text("\n".join(lines) + "\n")
    return truth


@pytest.fixture(scope="module")
def ilsvrc(tmp_path_factory, demo_root):
    out = tmp_path_factory.mktemp("ilsvrc") / "ilsvrc2010"
    return out, make_ilsvrc_layout(demo_root, out)


def _name(path: str) -> str:
    """File name of a manifest locator (a plain file or a ``tar://member::url``)."""
    return path.split("::")[0].removeprefix("tar://").rsplit("/", 1)[-1]


def _check_labels(paths, labels, split, class_names, truth) -> None:
    names = ("train", "val", "test")
    for p, y, s in zip(paths, labels, split):
        assert class_names[int(y)] == truth[names[int(s)]][_name(str(p))], p


def test_layout_labels_and_overrides(ilsvrc):
    root, truth = ilsvrc
    exp = load_experiment("imagenet2010", data=str(root), assignments=SHRINK)
    assert [fs.codebook_size for fs in exp.feature_sets] == [16, 16, 16, 16, 4, 4]
    assert exp.images.max_side == 128 and exp.train.epochs == 2 and exp.codebook.sample_images == 48
    m = build_manifest(exp.dataset, exp.seed)
    assert m.class_names == list(CLASSES.values())  # the class file's order, not sorted
    assert m.counts() == {"train": 4 * N_TRAIN, "val": 4 * N_VAL, "test": 4 * N_TEST}
    _check_labels(m.paths, m.labels, m.split, m.class_names, truth)
    # training rows are tar members read in place; their bytes are the photos'
    train = np.flatnonzero(m.split == 0)[:5]
    got = dict(read_images([m.paths[i] for i in train], m.offsets[train], m.sizes[train]))
    for j, i in enumerate(train):
        with tarfile.open(m.paths[i].split("::")[1].removeprefix("file://")) as tar:
            assert got[j] == tar.extractfile(_name(m.paths[i])).read()


def test_ilsvrc_labels_counted_from_zero_fail_on_the_last_class(ilsvrc):
    root, _ = ilsvrc
    exp = load_experiment("imagenet2010", data=str(root), assignments=["dataset.splits.val.label_base=0"])
    with pytest.raises(DataError) as info:
        build_manifest(exp.dataset, exp.seed)
    msg = str(info.value)
    assert "\n" not in msg and "label '4' in split val" in msg and "0..3 with label_base 0" in msg


def test_missing_split_folder_names_it(ilsvrc, tmp_path):
    root, _ = ilsvrc
    exp = load_experiment("imagenet2010", data=str(tmp_path))  # an empty folder
    with pytest.raises(DataError) as info:
        build_manifest(exp.dataset, exp.seed)
    assert f"dataset root '{tmp_path / 'train'}' is not a folder" in str(info.value)


@pytest.mark.slow
def test_dry_run(ilsvrc, tmp_path, capsys):
    import time

    root, truth = ilsvrc
    store, report = tmp_path / "ilsvrc.zarr", tmp_path / "report"
    argv = ["run", "imagenet2010", "--data", str(root), "--store", str(store), "--report", str(report),
            *(a for s in SHRINK for a in ("--set", s)), "--cluster", "local", "--workers", "1", "--no-progress"]
    t0 = time.perf_counter()
    rc = cli.main(argv)
    seconds = time.perf_counter() - t0
    out, err = capsys.readouterr()
    assert rc == 0, err[-3000:]
    print(f"{out}\ndry run: {seconds:.0f} s")  # seen with -s: stage times and the table
    m = json.loads((report / "metrics.json").read_text())
    assert m["n_train"] == 4 * N_TRAIN and m["n_test"] == 4 * N_TEST and m["n_failed"] == 0
    assert set(m["sets"]) == {fs.name for fs in load_experiment("imagenet2010").feature_sets}
    # every stored row carries its photo's class, through the tars and the 1-based lists
    g = zarr.open_group(str(store), mode="r")
    assert g.attrs["class_names"] == list(CLASSES.values())
    _check_labels(g["paths"][...], g["labels"][...], g["split"][...], g.attrs["class_names"], truth)
    # 4 classes of distinct photos: even these tiny features beat chance (25%)
    assert m["fused"]["top1"] > 0.4, out
    assert "chance (top-1): 25.0%" in out
