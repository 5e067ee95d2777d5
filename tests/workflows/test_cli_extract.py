"""`lsic extract` as a user runs it: a subprocess, a local cluster, a folder store, a rerun."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import zarr


def run_cli(*args, cwd):
    return subprocess.run([sys.executable, "-m", "lsic.workflows.cli", *args], capture_output=True, text=True,
                          cwd=cwd, timeout=300)


def test_cli_extract_then_resume_noop(image_folder, tmp_path):
    cfg = tmp_path / "exp.yaml"
    cfg.write_text(textwrap.dedent("""
        dataset: {root: /not/here, train_per_class: 5, test_per_class: 3}
        images: {max_side: 96, patch_sizes: [16], step: 8}
        codebook: {sample_images: 12, descriptors_per_image: 50}
        feature_sets:
          - {name: hog_vq, descriptor: hog, coding: lcc, codebook_size: 8, kappa: 1, pyramid: [[1, 1]]}
        store: {url: features.zarr, chunk_rows: 16}
    """))
    # the config's root is wrong: a one-line error naming it
    proc = run_cli("extract", str(cfg), "--no-progress", cwd=tmp_path)
    assert proc.returncode == 2 and "/not/here" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    proc = run_cli("extract", str(cfg), "--data", str(image_folder), "--workers", "1", "--no-progress", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "32 images (32 this run" in proc.stdout and "0 failed" in proc.stdout
    assert "dashboard" in proc.stderr  # the link is logged when the stage starts
    g = zarr.open_group(str(tmp_path / "features.zarr"), mode="r")
    assert g.attrs["complete_extract"] and g["valid"][...].all()
    assert json.loads((tmp_path / "features.zarr" / "failures.json").read_text()) == []
    again = run_cli("extract", str(cfg), "--data", str(image_folder), "--workers", "1", "--no-progress", cwd=tmp_path)
    assert again.returncode == 0 and "(0 this run" in again.stdout
