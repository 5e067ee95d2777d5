"""The documentation site: built from the code, so every public name and every CLI flag is in it.

Builds the Sphinx site once (HTML, warnings as errors) when the docs extra is
installed (``pip install ".[docs]"``); ``.ci/run`` installs it and runs these.
"""

from __future__ import annotations

import argparse
import html
import importlib
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
for _module in ("sphinx", "myst_parser", "numpydoc", "sphinxarg"):
    pytest.importorskip(_module, reason="the docs extra is not installed (pip install '.[docs]')")


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("html")
    proc = subprocess.run([sys.executable, "-m", "sphinx", "-W", "-q", "-b", "html", "-d", str(out / ".doctrees"),
                           str(DOCS), str(out)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return out


def _text(path: Path) -> str:
    return html.unescape(re.sub(r"<[^>]+>", "", path.read_text()))


@pytest.mark.parametrize("package", ["lsic.pipeline", "lsic.workflows", "lsic.cluster"])
def test_every_public_name_is_in_the_api_reference(site, package):
    page = (site / "reference" / "api.html").read_text()
    text = _text(site / "reference" / "api.html")
    names = importlib.import_module(package).__all__
    assert names
    # a re-export of a class documented earlier on the page has its entry but no second anchor
    missing = [n for n in names if f'id="{package}.{n}"' not in page and f"{package}.{n}" not in text]
    assert not missing, f"{package}.__all__ names missing from the API reference: {missing}"


def _subcommands() -> dict[str, argparse.ArgumentParser]:
    from lsic.workflows.cli import build_parser

    parser = build_parser()
    (sub,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return {"lsic": parser, **dict(sub.choices)}


def test_every_cli_flag_of_every_subcommand_is_in_the_cli_reference(site):
    page = (site / "reference" / "cli.html").read_text()
    sections = {}
    for name in _subcommands():
        anchor = "lsic" if name == "lsic" else f"lsic-{name}"
        start = page.index(f'id="{anchor}"')
        sections[name] = start
    bounds = sorted(sections.values()) + [len(page)]
    missing = []
    for name, parser in _subcommands().items():
        start = sections[name]
        text = html.unescape(re.sub(r"<[^>]+>", "", page[start:bounds[bounds.index(start) + 1]]))
        for action in parser._actions:
            if isinstance(action, argparse._HelpAction):  # sphinx-argparse leaves out -h/--help
                continue
            for flag in action.option_strings:
                if not re.search(rf"(?<![\w-]){re.escape(flag)}(?![\w-])", text):
                    missing.append(f"{name} {flag}")
    assert not missing, f"flags missing from the CLI reference: {missing}"


def test_store_page_has_the_layout_table_of_the_code(site):
    from lsic.workflows.store import LAYOUT

    text = _text(site / "user" / "store.html")
    for path, _, _ in LAYOUT:
        assert path.split("`")[0] in text, path


def test_troubleshooting_lists_the_library_errors(site):
    sys.path.insert(0, str(DOCS / "_ext"))
    try:
        import lsic_docs
    finally:
        sys.path.remove(str(DOCS / "_ext"))
    text = " ".join(_text(site / "user" / "troubleshooting.html").split())
    messages = [m.replace("`", "") for items in lsic_docs.error_messages().values() for _, m in items]  # code spans
    assert len(messages) > 100
    missing = [m for m in messages if m not in text]
    assert not missing, missing[:5]


def test_every_result_folder_has_a_benchmark_page(site):
    sources = "\n".join(p.read_text() for p in DOCS.rglob("*.md"))
    folders = [p.name for p in (ROOT / "benchmarks" / "results").iterdir() if p.is_dir()]
    assert folders
    for name in folders:
        assert f"<!-- lsic:results {name} -->" in sources, f"no page renders benchmarks/results/{name}"
        assert (site / "benchmarks").is_dir()


def test_benchmark_pages_show_newest_run_first_with_command_and_machine(site):
    text = _text(site / "benchmarks" / "features.html")
    assert "python benchmarks/bench_features.py" in text and "machine:" in text and "commit:" in text
    text = _text(site / "benchmarks" / "table1.html")
    dates = re.findall(r"(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC)", text.split("Stored size per row")[0])
    assert dates == sorted(dates, reverse=True) and len(dates) >= 2
    assert "Recorded before result files existed" in text
