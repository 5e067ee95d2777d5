"""Dataset layouts and the split protocol."""

from __future__ import annotations

import io
import tarfile
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from lsic.pipeline import ConfigError, DataError
from lsic.workflows.config import DatasetConfig, SourceConfig
from lsic.workflows.datasets import build_manifest, read_images


def test_folder_protocol_split(image_folder):
    ds = DatasetConfig(root=str(image_folder), train_per_class=6, val_per_class=2, test_per_class=3)
    m = build_manifest(ds, seed=1)
    assert m.class_names == sorted(p.name for p in image_folder.iterdir())
    per = Counter(zip(m.labels.tolist(), m.split.tolist()))
    for y in range(4):
        assert per[(y, 0)] == 4 and per[(y, 1)] == 2 and per[(y, 2)] == 3
    # rows ordered train, then val, then test
    assert np.all(np.diff(m.split) >= 0)
    # no image twice; each row's label is its folder
    assert len(set(m.paths)) == len(m.paths)
    for p, y in zip(m.paths, m.labels):
        assert Path(p.replace("file://", "")).parent.name == m.class_names[y]
    # deterministic for a seed, different for another
    assert build_manifest(ds, seed=1).paths == m.paths
    assert build_manifest(ds, seed=2).paths != m.paths


def test_train_rows_mix_classes(image_folder):
    m = build_manifest(DatasetConfig(root=str(image_folder), train_per_class=8, test_per_class=2), seed=0)
    first = m.labels[m.split == 0][:8]
    assert len(set(first.tolist())) > 1


def test_list_file_layout(image_folder, tmp_path):
    lines = []
    for c, d in enumerate(sorted(image_folder.iterdir())):
        for f in sorted(d.iterdir()):
            lines.append(f"{d.name}/{f.name} {c}")
    (image_folder / "list.txt").write_text("\n".join(lines) + "\n")
    (tmp_path / "classes.txt").write_text("\n".join(sorted(p.name for p in image_folder.iterdir() if p.is_dir())))
    ds = DatasetConfig(root=str(image_folder), layout="list", list_file="list.txt", class_file=str(tmp_path / "classes.txt"),
                       train_per_class=6, test_per_class=4)
    m = build_manifest(ds, seed=0)
    ref = build_manifest(DatasetConfig(root=str(image_folder), train_per_class=6, test_per_class=4), seed=0)
    assert m.class_names == ref.class_names
    assert sorted(zip(m.paths, m.labels.tolist())) == sorted(zip(ref.paths, ref.labels.tolist()))
    (image_folder / "list.txt").unlink()


def make_tar_dataset(folder: Path, out: Path) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    for d in sorted(folder.iterdir()):
        if d.is_dir():
            with tarfile.open(out / f"{d.name}.tar", "w") as tar:
                for f in sorted(d.iterdir()):
                    tar.add(f, arcname=f.name)
    return out


def test_tar_layout_reads_members_in_place(image_folder, tmp_path):
    tars = make_tar_dataset(image_folder, tmp_path / "tars")
    m = build_manifest(DatasetConfig(root=str(tars), layout="tar", train_per_class=6, test_per_class=4), seed=0)
    assert all(p.startswith("tar://") for p in m.paths)
    got = dict(read_images(m.paths, m.offsets, m.sizes))
    for i, p in enumerate(m.paths):
        member, url = p[len("tar://"):].split("::")
        cls = Path(url).stem
        assert got[i] == (image_folder / cls / member).read_bytes()
    assert not any(p.is_file() and not p.name.endswith(".tar") for p in tars.iterdir())  # nothing extracted


@pytest.mark.parametrize("bad", ["/etc/passwd", "../escape.jpg", "a/../../b.jpg"])
def test_tar_unsafe_member_refused(tmp_path, bad):
    root = tmp_path / "t"
    root.mkdir()
    with tarfile.open(root / "cls.tar", "w") as tar:
        info = tarfile.TarInfo(bad)
        info.size = 3
        tar.addfile(info, io.BytesIO(b"abc"))
    with pytest.raises(DataError, match="absolute or '..'"):
        build_manifest(DatasetConfig(root=str(root), layout="tar"), seed=0)


def test_missing_root_is_data_error(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        build_manifest(DatasetConfig(root=str(tmp_path / "nope")), seed=0)
    (tmp_path / "file").write_text("")
    with pytest.raises(DataError, match="not a folder"):
        build_manifest(DatasetConfig(root=str(tmp_path / "file")), seed=0)
    with pytest.raises(ConfigError, match="dataset.root is missing; pass --data URL"):
        build_manifest(DatasetConfig(root=None), seed=0)


def test_explicit_split_sources(image_folder, tmp_path):
    lines = [f"{d.name}/{f.name} {d.name}" for d in sorted(image_folder.iterdir()) if d.is_dir() for f in sorted(d.iterdir())[:2]]
    (tmp_path / "test.txt").write_text("\n".join(lines))
    ds = DatasetConfig(splits={
        "train": SourceConfig(root=str(image_folder)),
        "test": SourceConfig(root=str(image_folder), layout="list", list_file=str(tmp_path / "test.txt")),
    })
    m = build_manifest(ds, seed=0)
    assert m.counts()["test"] == len(lines) and m.counts()["train"] == 40


def _numbered_list(image_folder: Path, base: int) -> list[str]:
    """'path label' lines, label = folder's index in sorted order + base."""
    dirs = sorted(d for d in image_folder.iterdir() if d.is_dir())
    return [f"{d.name}/{f.name} {c + base}" for c, d in enumerate(dirs) for f in sorted(d.iterdir())]


@pytest.mark.parametrize("base", [0, 1])
def test_list_label_base_maps_numbers_to_class_file_lines(image_folder, tmp_path, base):
    (tmp_path / "list.txt").write_text("\n".join(_numbered_list(image_folder, base)) + "\n")
    names = sorted(p.name for p in image_folder.iterdir() if p.is_dir())
    (tmp_path / "classes.txt").write_text("\n".join(names) + "\n")
    ds = DatasetConfig(root=str(image_folder), layout="list", list_file=str(tmp_path / "list.txt"),
                       label_base=base, class_file=str(tmp_path / "classes.txt"), train_per_class=6, test_per_class=4)
    m = build_manifest(ds, seed=0)
    ref = build_manifest(DatasetConfig(root=str(image_folder), train_per_class=6, test_per_class=4), seed=0)
    assert m.class_names == names
    # every image keeps its own folder's class: nothing shifted by one
    assert sorted(zip(m.paths, m.labels.tolist())) == sorted(zip(ref.paths, ref.labels.tolist()))
    # without a class file the numbers themselves name the classes, counted from the base
    ds2 = DatasetConfig(root=str(image_folder), layout="list", list_file=str(tmp_path / "list.txt"), label_base=base,
                        train_per_class=6, test_per_class=4)
    m2 = build_manifest(ds2, seed=0)
    assert m2.class_names == [str(i + base) for i in range(len(names))]
    assert m2.labels.tolist() == m.labels.tolist() and m2.paths == m.paths


@pytest.mark.parametrize("base, bad", [(0, 4), (1, 0), (1, 5), (0, -1)])
def test_list_label_out_of_range_is_one_line(image_folder, tmp_path, base, bad):
    lines = _numbered_list(image_folder, base)
    path = lines[7].rsplit(None, 1)[0]
    lines[7] = f"{path} {bad}"
    (tmp_path / "list.txt").write_text("\n".join(lines) + "\n")
    (tmp_path / "classes.txt").write_text("\n".join(sorted(p.name for p in image_folder.iterdir() if p.is_dir())))
    ds = DatasetConfig(splits={
        "train": SourceConfig(root=str(image_folder)),
        "test": SourceConfig(root=str(image_folder), layout="list", list_file=str(tmp_path / "list.txt"), label_base=base),
    }, class_file=str(tmp_path / "classes.txt"))
    with pytest.raises(DataError) as info:
        build_manifest(ds, seed=0)
    msg = str(info.value)
    assert "\n" not in msg and f"label '{bad}'" in msg and f"{base}..{3 + base} with label_base {base}" in msg
    assert "split test" in msg and path in msg and "list.txt" in msg
