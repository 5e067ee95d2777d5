"""The benchmark scripts' contract: dataset paths from flags, result files, and no figure for failed inputs."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "benchmarks"
DEMO = ROOT / "pipeline" / "data" / "demo"
SCRIPTS = sorted(p for p in BENCH.glob("*.py") if not p.name.startswith("_"))


def _load(name: str):
    sys.path.insert(0, str(BENCH))
    try:
        spec = importlib.util.spec_from_file_location(f"_bench_{name}", BENCH / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    finally:
        sys.path.remove(str(BENCH))


@pytest.fixture(scope="module")
def results():
    return _load("_results")


@pytest.fixture
def photos_dir(tmp_path) -> Path:
    """Two class folders of real photos (from the package's demo subset)."""
    for name in ("airplanes", "chair"):
        (tmp_path / "data" / name).mkdir(parents=True)
        for f in sorted((DEMO / name).glob("*.jpg"))[:3]:
            shutil.copy(f, tmp_path / "data" / name / f.name)
    return tmp_path / "data"


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_every_benchmark_ends_through_finish_with_no_machine_default(script):
    text = script.read_text()
    assert "finish(" in text, f"{script.name} does not end through _results.finish"
    assert "print(json.dumps" not in text, f"{script.name} prints its JSON itself instead of through finish"
    for path in re.findall(r"""["'](/(?:work|tmp|home)/[^"']*)["']""", text):
        pytest.fail(f"{script.name} has the machine path {path!r}")
    for m in re.finditer(r'add_argument\("--(data|cache|workdir|tmp|store)"[^)]*default=([^,)]+)', text):
        assert not m.group(2).strip().startswith(("Path(\"/", "\"/", "'/")), m.group(0)


def test_photo_list_names_photos_that_resolve_from_the_list_files_folder(tmp_path, photos_dir, monkeypatch):
    """A relative --data must not produce a list whose lines resolve against the list file's own folder."""
    from lsic.workflows.batch_predict import list_inputs

    bench_predict = _load("bench_predict")
    monkeypatch.chdir(tmp_path)
    work = tmp_path / "elsewhere" / "work"
    work.mkdir(parents=True)
    listed = bench_predict.photo_list(Path("data"), 4, 0, work / "small.txt")
    urls = list_inputs(str(listed)).paths
    assert len(urls) == 4
    for url in urls:
        assert Path(url.removeprefix("file://")).is_file(), url


def test_dataset_root_resolves_a_relative_path(tmp_path, photos_dir, monkeypatch, results):
    monkeypatch.chdir(tmp_path)
    root = results.dataset_root("data")
    assert root.is_absolute() and root == photos_dir.resolve()


def test_dataset_root_missing_is_one_line_naming_the_flag(tmp_path, monkeypatch, capsys, results):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exc:
        results.dataset_root("no/such/folder")
    assert exc.value.code != 0
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "--data no/such/folder" in err


def test_dataset_root_without_flag_or_shared_copy_names_the_flag(tmp_path, monkeypatch, capsys, results):
    monkeypatch.setattr(results, "REPO", tmp_path / "repo")
    with pytest.raises(SystemExit):
        results.dataset_root(None)
    assert "pass --data DIR" in capsys.readouterr().err


def test_finish_with_failed_inputs_reports_no_figure(tmp_path, monkeypatch, capsys, results):
    monkeypatch.setenv("LSIC_BENCH_RESULTS", str(tmp_path / "results"))
    with pytest.raises(SystemExit) as exc:
        results.finish("demo_bench", {"images_per_s": 516.0}, inputs=160, inputs_failed=160)
    assert exc.value.code == 1
    out, err = capsys.readouterr()
    assert "516" not in out and "{" not in out
    assert "160 of 160 inputs failed" in err
    assert not (tmp_path / "results").exists()


def test_finish_writes_a_result_file_and_the_json_last_line(tmp_path, monkeypatch, capsys, results):
    monkeypatch.setenv("LSIC_BENCH_RESULTS", str(tmp_path / "results"))
    monkeypatch.setattr(sys, "argv", [str(BENCH / "bench_x.py"), "--images", "4"])
    results.finish("bench_x", {"images_per_s": 12.5}, inputs=4)
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert json.loads(last) == {"images_per_s": 12.5, "inputs": 4, "inputs_failed": 0}
    (path,) = (tmp_path / "results" / "bench_x").glob("*.json")
    record = json.loads(path.read_text())
    assert record["command"] == "python benchmarks/bench_x.py --images 4"
    assert record["figures"] == json.loads(last)
    assert {"cpu", "cores", "memory_gb", "load_avg"} <= set(record["machine"])
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", record["date"])
    assert record["commit"]


@pytest.mark.parametrize("script, args", [
    ("bench_predict.py", ["--data", "no/such/folder"]),
    ("bench_features.py", ["--data", "no/such/folder"]),
    ("bench_table1.py", ["--data", "no/such/folder"]),
    ("caltech101.py", ["--data", "no/such/folder"]),
])
def test_bad_relative_data_exits_non_zero_with_one_line_and_no_figure(tmp_path, script, args):
    env = {**os.environ, "LSIC_BENCH_RESULTS": str(tmp_path / "results")}
    proc = subprocess.run([sys.executable, str(BENCH / script), *args], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    assert "{" not in proc.stdout
    assert proc.stderr.strip().splitlines()[-1].startswith(f"{script}: error: --data no/such/folder")
    assert not (tmp_path / "results").exists()


def test_folder_without_photos_is_a_failed_run(tmp_path):
    (tmp_path / "empty" / "a_class").mkdir(parents=True)
    env = {**os.environ, "LSIC_BENCH_RESULTS": str(tmp_path / "results")}
    proc = subprocess.run([sys.executable, str(BENCH / "bench_features.py"), "--data", "empty"], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0 and "no photos" in proc.stderr and "{" not in proc.stdout


RESULT_FILES = sorted((BENCH / "results").rglob("*.json"))


@pytest.mark.parametrize("path", RESULT_FILES, ids=lambda p: str(p.relative_to(BENCH / "results")))
def test_result_files_name_their_command_commit_machine_and_date(path):
    record = json.loads(path.read_text())
    assert record["benchmark"] == path.parent.name
    assert record["command"].startswith(f"python benchmarks/{path.parent.name.removesuffix('_sizes')}")
    assert re.fullmatch(r"[0-9a-f]{7,40}(\+dirty)?", record["commit"])
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", record["date"])
    assert record["machine"] and isinstance(record["figures"], dict) and record["figures"]
    if "imported" in path.name:
        assert record["imported_from"] == f"README.md at commit {record['commit']}"
    else:
        assert "imported_from" not in record and record["figures"].get("inputs_failed", 0) == 0
