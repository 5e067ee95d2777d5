"""The distribution: one wheel named lsic, subpackages only under lsic/, data shipped, README commands in CI."""

from __future__ import annotations

import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def readme_commands() -> list[str]:
    """The two commands of the README's "Two commands" section: install + demo, then the tests."""
    text = (ROOT / "README.md").read_text()
    section = re.search(r"^## Two commands\n(.*?)(?=^## )", text, flags=re.S | re.M)
    assert section, "README lost its 'Two commands' section"
    return re.findall(r"```bash\n(.*?)\n```", section.group(1), flags=re.S)[:2]


def test_readme_gives_the_install_and_test_commands():
    first, second = readme_commands()
    assert first.strip() == "pip install . && lsic demo"
    assert "pip install" in second and "pytest" in second


def test_ci_runs_the_readme_test_command():
    _, test_cmd = readme_commands()
    ci = (ROOT / ".ci" / "run").read_text()
    assert test_cmd.strip() in ci.splitlines()


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps", "-q", "-w", str(out)],
        capture_output=True, text=True,
    )
    if proc.returncode != 0:
        pytest.fail(proc.stderr[-2000:])
    return next(out.glob("lsic-*.whl"))


def test_wheel_claims_only_lsic(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names}
    assert tops <= {"lsic", next(t for t in tops if t.endswith(".dist-info"))}
    assert not any(n.startswith("lsic/__init__") for n in names)  # a namespace, no folder of its own
    for sub in ("pipeline", "workflows", "cluster"):
        assert f"lsic/{sub}/__init__.py" in names


def test_wheel_ships_data(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    assert sum(n.startswith("lsic/pipeline/data/demo/") and n.endswith(".jpg") for n in names) >= 100
    for cfg in ("caltech101", "imagenet2010", "demo"):
        assert f"lsic/workflows/configs/{cfg}.yaml" in names
    assert any(n.startswith("lsic/cluster/") and n.endswith(".yaml") for n in names)


def test_console_script_version():
    proc = subprocess.run(["lsic", "--version"], capture_output=True, text=True)
    assert proc.returncode == 0 and proc.stdout.startswith("lsic ")
