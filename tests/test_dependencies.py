"""Install metadata: the declared dependencies are exactly what the library imports, on Python >= 3.11."""

from __future__ import annotations

import ast
import importlib.metadata
import re
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("pipeline", "workflows", "cluster")
# Declared but not imported by lsic itself: why each is needed.
NOT_IMPORTED = {"bokeh": "distributed imports it to serve the Dask dashboard"}


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _requirement_name(req: str) -> str:
    return _norm(re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", req).group(1))


@pytest.fixture(scope="module")
def project() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def third_party_imports() -> dict[str, set[str]]:
    """Top-level module -> files importing it, for every absolute import under the three packages."""
    found: dict[str, set[str]] = {}
    for pkg in PACKAGES:
        for path in (ROOT / pkg).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if isinstance(node, ast.Import):
                    names = [a.name for a in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names = [node.module]
                else:
                    continue
                for name in names:
                    top = name.split(".")[0]
                    if top != "lsic" and top not in sys.stdlib_module_names and top != "__future__":
                        found.setdefault(top, set()).add(str(path.relative_to(ROOT)))
    return found


def test_imports_are_found():
    """The scan itself sees the imports it must (a scan that finds nothing would pass everything)."""
    found = third_party_imports()
    assert {"numpy", "dask", "distributed", "zarr", "numcodecs", "sklearn", "PIL", "yaml"} <= set(found)


def test_every_imported_module_is_a_declared_dependency(project):
    declared = {_requirement_name(r) for r in project["dependencies"]}
    dists = importlib.metadata.packages_distributions()
    missing = {}
    for module, files in third_party_imports().items():
        owners = {_norm(d) for d in dists.get(module, [module])}
        if not owners & declared:
            missing[module] = (sorted(owners), sorted(files)[:3])
    assert not missing, f"imported but not declared in pyproject dependencies: {missing}"


def test_every_declared_dependency_is_imported(project):
    dists = importlib.metadata.packages_distributions()
    imported = {_norm(d) for m in third_party_imports() for d in dists.get(m, [m])}
    unused = {_requirement_name(r) for r in project["dependencies"]} - imported - set(NOT_IMPORTED)
    assert not unused, f"declared in pyproject but never imported by pipeline/, workflows/, cluster/: {unused}"


def test_extras_do_not_repeat_core_dependencies(project):
    core = {_requirement_name(r) for r in project["dependencies"]}
    for extra, reqs in project["optional-dependencies"].items():
        dup = {_requirement_name(r) for r in reqs} & core
        assert not dup, f"extra [{extra}] only repeats core dependencies {dup}"


def test_python_floor_is_311_everywhere(project):
    assert project["requires-python"].replace(" ", "") == ">=3.11"
    env = (ROOT / "environment.yml").read_text()
    assert re.search(r"^\s*-\s*python>=3\.11\b", env, re.M)


def test_environment_yml_installs_the_core_dependencies(project):
    env = (ROOT / "environment.yml").read_text()
    listed = {_norm(m) for m in re.findall(r"^\s*-\s*([A-Za-z0-9][A-Za-z0-9._-]*)", env, re.M)}
    missing = {_requirement_name(r) for r in project["dependencies"]} - listed
    assert not missing, f"environment.yml lacks {missing}"
