"""Sphinx extension of the lsic docs: pages that are generated from the code and from result files.

A page holds a marker comment on a line of its own; before the page is parsed
the marker is replaced by MyST Markdown built from its source, so the numbers
and tables in the documentation cannot drift from what they document:

``<!-- lsic:api MODULE -->``
    autodoc entries for every name in ``MODULE.__all__``.
``<!-- lsic:store-layout -->``
    the store-layout table, from ``lsic.workflows.store.LAYOUT``.
``<!-- lsic:results NAME -->``
    every result file under ``benchmarks/results/NAME/``, newest run first:
    date, command, commit, machine and the figures.
``<!-- lsic:results-index -->``
    one line per benchmark with results: its newest run.
``<!-- lsic:errors -->``
    every one-line error message the library raises (an ``LsicError``
    subclass with a message written in the code), grouped by module.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import json
import re
from pathlib import Path
from typing import Any

DOCS = Path(__file__).resolve().parents[1]
REPO = DOCS.parent
RESULTS = REPO / "benchmarks" / "results"
PACKAGES = ("pipeline", "workflows", "cluster")
ERRORS = ("LsicError", "ConfigError", "ImageError", "ArrayError", "DataError", "StoreError", "ClusterError")
MARKER = re.compile(r"^<!-- lsic:([a-z-]+)(?: (\S+))? -->$", re.M)


# --------------------------------------------------------------------------- API


def api_entries(module_name: str, seen: dict[int, str] | None = None) -> str:
    """autodoc entries for each public name of ``module_name`` (its ``__all__``, in order).

    autodoc emits reStructuredText, so the entries sit in one ``eval-rst`` block.
    A name that re-exports an object documented earlier on the page (``seen``:
    ``id(obj)`` -> its first target) is listed without a second index entry.
    """
    module = importlib.import_module(module_name)
    seen = {} if seen is None else seen
    out = []
    for name in module.__all__:
        obj = getattr(module, name)
        target = f"{module_name}.{name}"
        again = inspect.isclass(obj) and id(obj) in seen
        seen.setdefault(id(obj), target)
        if again:
            out.append(f".. autoclass:: {target}\n   :no-index:\n\n   The same class as :class:`{seen[id(obj)]}`.")
        elif inspect.isclass(obj) and issubclass(obj, BaseException):
            out.append(f".. autoexception:: {target}")
        elif inspect.isclass(obj):
            out.append(f".. autoclass:: {target}\n   :members:")
        elif callable(obj):
            out.append(f".. autofunction:: {target}")
        else:
            out.append(_data_entry(target, name, obj, module_name))
    return "```{eval-rst}\n" + "\n\n".join(out) + "\n```"


def _data_entry(target: str, name: str, obj: Any, package: str) -> str:
    """A module constant: its ``#:`` comment where it is defined (autodoc would show its type's docstring)."""
    import sys

    from sphinx.pycode import ModuleAnalyzer

    doc = "The installed version of lsic (from the package metadata)." if name == "__version__" else None
    for modname, mod in sorted(sys.modules.items()):
        if doc is None and modname.startswith(package + ".") and getattr(mod, name, None) is obj:
            try:
                found = ModuleAnalyzer.for_module(modname).find_attr_docs().get(("", name))
            except Exception:  # a module without source: keep looking
                continue
            if found:
                doc = " ".join(line.strip() for line in found if line.strip())
    if doc is None:
        doc = f"``{obj!r}``" if len(repr(obj)) < 40 else f"A ``{type(obj).__name__}``."
    kind = f"   :type: {type(obj).__name__}\n" if not isinstance(obj, str) else ""
    return f".. py:data:: {target}\n{kind}\n   {doc}"


# --------------------------------------------------------------------------- store layout


def store_layout() -> str:
    from lsic.workflows.store import layout_table

    return layout_table()


# --------------------------------------------------------------------------- benchmark results


def load_results(name: str) -> list[dict[str, Any]]:
    """The result files of one benchmark, newest run first."""
    runs = []
    for path in sorted((RESULTS / name).glob("*.json")):
        record = json.loads(path.read_text())
        record["_file"] = path.relative_to(REPO).as_posix()
        runs.append(record)
    return sorted(runs, key=lambda r: r["date"], reverse=True)


def _flatten(value: Any, prefix: str = "") -> list[tuple[str, Any]]:
    """Nested mappings as dotted keys; lists stay whole."""
    if isinstance(value, dict) and value:
        out: list[tuple[str, Any]] = []
        for k, v in value.items():
            out += _flatten(v, f"{prefix}.{k}" if prefix else str(k))
        return out
    return [(prefix, value)]


def _cell(value: Any) -> str:
    if isinstance(value, float):
        text = f"{value:.6g}"
    elif isinstance(value, str):
        text = value
    else:
        text = json.dumps(value)
    return text.replace("|", "\\|").replace("\n", " ")


def _machine(m: dict[str, Any]) -> str:
    if m.get("description"):  # an imported run: the machine as its record described it
        return m["description"]
    parts = [m.get("cpu") or "unknown CPU"]
    if m.get("cores"):
        parts.append(f"{m['cores']} cores")
    if m.get("memory_gb"):
        parts.append(f"{m['memory_gb']:g} GB memory")
    for key in ("os",):
        if m.get(key):
            parts.append(m[key])
    if m.get("python"):
        parts.append(f"Python {m['python']}")
    if m.get("numpy"):
        parts.append(f"numpy {m['numpy']}")
    text = ", ".join(parts)
    if m.get("load_avg"):
        text += "; load average at the end " + " / ".join(f"{x:g}" for x in m["load_avg"])
    return text


def render_run(record: dict[str, Any], level: str = "###") -> str:
    date = record["date"].replace("T", " ").replace("Z", " UTC")
    lines = [f"{level} {date}", ""]
    if record.get("imported_from"):
        lines += [f"*Recorded before result files existed*: imported from {record['imported_from']} "
                  "(the figures as that README quoted them; the date is that commit's).", ""]
    lines += [
        f"- command: `{record['command']}`",
        f"- commit: `{record['commit']}`",
        f"- machine: {_machine(record.get('machine') or {})}",
        f"- result file: `{record['_file']}`",
    ]
    if record.get("note"):
        lines.append(f"- note: {record['note']}")
    lines += ["", "| figure | value |", "|---|---|"]
    lines += [f"| `{k}` | {_cell(v)} |" for k, v in _flatten(record["figures"])]
    return "\n".join(lines)


def results_section(name: str) -> str:
    runs = load_results(name)
    if not runs:
        return f"*No result file under `benchmarks/results/{name}/` yet.*"
    return "\n\n".join(render_run(r) for r in runs)


def results_index() -> str:
    rows = ["| benchmark | runs | newest run | command |", "|---|---|---|---|"]
    for folder in sorted(p for p in RESULTS.iterdir() if p.is_dir()) if RESULTS.is_dir() else []:
        runs = load_results(folder.name)
        if runs:
            newest = runs[0]
            label = newest["date"][:10] + (" (imported)" if newest.get("imported_from") else "")
            rows.append(f"| `{folder.name}` | {len(runs)} | {label} | `{_cell(newest['command'])}` |")
    return "\n".join(rows)


# --------------------------------------------------------------------------- errors


def _message(node: ast.expr) -> str | None:
    """The text of a message expression with placeholders as ``<expr>``; None when built at run time."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr):
        out = []
        for part in node.values:
            if isinstance(part, ast.Constant):
                out.append(str(part.value))
            else:
                out.append(f"<{ast.unparse(part.value)}>")
        return "".join(out)
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        left, right = _message(node.left), _message(node.right)
        return None if left is None or right is None else left + right
    return None


def error_messages() -> dict[str, list[tuple[str, str]]]:
    """Module path -> [(error class, message)] for every ``raise XError("...")`` of the library."""
    found: dict[str, list[tuple[str, str]]] = {}
    for pkg in PACKAGES:
        for path in sorted((REPO / pkg).rglob("*.py")):
            tree = ast.parse(path.read_text(), str(path))
            for node in ast.walk(tree):
                if not (isinstance(node, ast.Raise) and isinstance(node.exc, ast.Call)):
                    continue
                func = node.exc.func
                cls = func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else ""
                if cls not in ERRORS or not node.exc.args:
                    continue
                text = _message(node.exc.args[0])
                if text:
                    rel = path.relative_to(REPO).as_posix()
                    found.setdefault(rel, []).append((cls, " ".join(text.split())))
    return found


def _prose(text: str) -> str:
    """A message as Markdown text: code spans kept, ``< > _ * |`` outside them shown literally."""
    parts = re.split(r"(`[^`]*`)", text)
    out = []
    for k, part in enumerate(parts):
        if k % 2:
            out.append(part.replace("|", "\\|"))
        else:
            part = part.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
            out.append(re.sub(r"([_*|\[\]])", r"\\\1", part))
    return "".join(out)


def errors_section() -> str:
    out = []
    for module, items in error_messages().items():
        out += [f"### `{module}`", "", "| error | message (`<...>`: filled in at run time) |", "|---|---|"]
        seen = set()
        for cls, text in items:
            if (cls, text) in seen:
                continue
            seen.add((cls, text))
            out.append(f"| `{cls}` | {_prose(text)} |")
        out.append("")
    return "\n".join(out)


# --------------------------------------------------------------------------- Sphinx hooks


def expand(text: str) -> str:
    documented: dict[int, str] = {}

    def replace(m: re.Match) -> str:
        kind, arg = m.group(1), m.group(2)
        if kind == "api":
            return api_entries(arg, documented)
        if kind == "store-layout":
            return store_layout()
        if kind == "results":
            return results_section(arg)
        if kind == "results-index":
            return results_index()
        if kind == "errors":
            return errors_section()
        raise ValueError(f"unknown lsic docs marker {m.group(0)!r}")

    return MARKER.sub(replace, text)


def _source_read(app, docname: str, source: list[str]) -> None:
    if "<!-- lsic:" not in source[0]:
        return
    for m in MARKER.finditer(source[0]):
        if m.group(1) in ("results", "results-index"):
            folder = RESULTS / m.group(2) if m.group(2) else RESULTS
            app.env.note_dependency(str(folder))  # a folder's mtime changes when a result file is added
            for path in folder.glob("*.json"):
                app.env.note_dependency(str(path))
    source[0] = expand(source[0])


def setup(app) -> dict[str, Any]:
    app.connect("source-read", _source_read)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}
