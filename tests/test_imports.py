"""The import graph of pipeline/, workflows/ and cluster/, read with ``ast``: no cycles, layers point down.

Every ``import`` statement counts, also those inside functions (they run
too, only later). A module's private names (``_name``) stay inside it; the
few that another module uses on purpose are listed in :data:`SEAMS`, each
with the reason. ``docs/architecture.md`` draws the same graph.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = {"lsic.pipeline": ROOT / "pipeline", "lsic.workflows": ROOT / "workflows", "lsic.cluster": ROOT / "cluster"}

#: (importing module, imported module, private name): the deliberate exceptions to "private names stay inside"
SEAMS: set[tuple[str, str, str]] = {
    # the dense descriptors share HOG's check of a grayscale float32 image (one error message for all)
    ("lsic.pipeline._lbp", "lsic.pipeline._hog", "_as_image"),
    ("lsic.pipeline._sift", "lsic.pipeline._hog", "_as_image"),
}


#: the layers of lsic.workflows, top first (docs/architecture.md draws them): a module imports its own
#: layer or the layers below
WORKFLOWS_LAYERS = (
    ("cli", "_commands", "run"),
    ("extract", "train", "evaluate", "report", "gallery", "predict", "batch_predict"),
    ("_training_actor", "_actor_pool", "_schedule", "_stage", "model", "model_file", "results", "testing",
     "datasets", "config", "__init__"),
    ("store",),
    ("_checkpoints", "_layout", "_zarr_io", "_records", "_overrides"),
)


def _modules() -> dict[str, Path]:
    out = {}
    for pkg, folder in PACKAGES.items():
        for path in sorted(folder.glob("*.py")):
            out[pkg if path.stem == "__init__" else f"{pkg}.{path.stem}"] = path
    return out


MODULES = _modules()


def _package(module: str) -> str:
    return module if MODULES[module].stem == "__init__" else module.rpartition(".")[0]


def _imports(module: str) -> list[tuple[str, str | None]]:
    """``(imported module, imported name or None)`` of every import statement in ``module``, at any depth."""
    tree = ast.parse(MODULES[module].read_text(), filename=str(MODULES[module]))
    out: list[tuple[str, str | None]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(alias.name, None) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module != "__future__":
            if node.level:
                base = _package(module)
                for _ in range(node.level - 1):
                    base = base.rpartition(".")[0]
                target = f"{base}.{node.module}" if node.module else base
            else:
                target = node.module or ""
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                # `from pkg import module` imports that module; `from module import name` the module itself
                out.append((sub, None) if sub in MODULES else (target, alias.name))
    return out


def _graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {m: set() for m in MODULES}
    for module in MODULES:
        for target, _ in _imports(module):
            while target and target not in MODULES:  # `import lsic.pipeline.errors.x` -> the module part
                target = target.rpartition(".")[0]
            if target and target != module:
                graph[module].add(target)
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_graph_sees_function_level_imports():
    """The reader counts an import inside a function body: the kind that hid the old cycles."""
    tree = ast.parse("def f():\n    from .b import c\n")
    assert any(isinstance(n, ast.ImportFrom) and n.module == "b" for n in ast.walk(tree))
    assert _cycles({"a": {"b"}, "b": {"a"}, "c": set()}) == [["a", "b"]]
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": set()}) == []


def test_no_import_cycles():
    cycles = _cycles(_graph())
    assert not cycles, f"import cycles (function-level imports count): {cycles}"


def test_no_private_name_imported_across_modules():
    bad = []
    for module in MODULES:
        for target, name in _imports(module):
            if name and name.startswith("_") and not name.startswith("__") and target.startswith("lsic."):
                if (module, target, name) not in SEAMS:
                    bad.append(f"{module} imports {target}.{name}")
    assert not bad, "private names used across modules (make them public or list the seam): " + "; ".join(bad)


@pytest.mark.parametrize("module", sorted(m for m in MODULES if m.startswith("lsic.pipeline")))
def test_pipeline_is_the_bottom_layer(module):
    """pipeline/ is array math: no Dask, nothing of workflows/ or cluster/."""
    for target, _ in _imports(module):
        top = target.split(".")[0]
        assert top not in ("dask", "distributed"), f"{module} imports {target}"
        assert not target.startswith(("lsic.workflows", "lsic.cluster")), f"{module} imports {target}"


def test_cluster_uses_only_the_error_module_of_pipeline():
    """``lsic.cluster`` needs only the errors, which load without the numba kernels (``pipeline/__init__`` is lazy)."""
    for module in (m for m in MODULES if m.startswith("lsic.cluster")):
        for target, _ in _imports(module):
            assert not target.startswith("lsic.workflows"), f"{module} imports {target}"
            if target.startswith("lsic.pipeline"):
                assert target == "lsic.pipeline.errors", f"{module} imports {target}"


def test_workflows_layers_point_down():
    layer = {f"lsic.workflows.{m}" if m != "__init__" else "lsic.workflows": i
             for i, names in enumerate(WORKFLOWS_LAYERS) for m in names}
    assert set(layer) == {m for m in MODULES if m.startswith("lsic.workflows")}, "a module has no layer"
    graph = _graph()
    up = [f"{a} imports {b}" for a in layer for b in graph[a] if b in layer and layer[b] < layer[a]]
    assert not up, "imports against the layers of docs/architecture.md: " + "; ".join(up)


def test_zarr_has_one_door():
    """Only the store door and its checkpoint and Zarr modules import zarr (``_zarr_io`` makes every zarr store)."""
    door = {"lsic.workflows._zarr_io", "lsic.workflows.store", "lsic.workflows._checkpoints"}
    for module in MODULES:
        for target, _ in _imports(module):
            if target.split(".")[0] == "zarr" or target == "lsic.workflows._zarr_io":
                assert module in door, f"{module} imports {target}: go through lsic.workflows.store.FeatureStore"


def test_cluster_imports_without_numba():
    import subprocess
    import sys

    code = "import sys, lsic.cluster, lsic.pipeline.errors; print('numba' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
