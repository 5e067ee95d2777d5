"""Sphinx configuration of the lsic documentation (pages in MyST Markdown)."""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE / "_ext"))

from importlib.metadata import PackageNotFoundError, version  # noqa: E402

project = "lsic"
author = "the lsic developers"
copyright = "the lsic developers, BSD-3-Clause"
try:
    release = version("lsic")
except PackageNotFoundError:  # building from a source tree without an install
    release = "0.0.0+unknown"
version = release

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.doctest",
    "sphinx.ext.mathjax",
    "numpydoc",
    "sphinxarg.ext",
    "lsic_docs",
]

source_suffix = {".md": "markdown", ".rst": "restructuredtext"}  # .rst: numpydoc's autosummary asks for it
root_doc = "index"
smartquotes = False  # "--set" and 'quoted' values in commands and error messages stay as typed
exclude_patterns = ["_build", "Thumbs.db", ".DS_Store"]

myst_enable_extensions = ["dollarmath", "deflist", "colon_fence"]
myst_heading_anchors = 3

autodoc_default_options = {"members": False}
autodoc_typehints = "none"  # numpydoc sections carry the types
autodoc_member_order = "bysource"
numpydoc_show_class_members = False
numpydoc_class_members_toctree = False
numpydoc_xref_param_type = False

doctest_global_setup = "import numpy as np"

html_theme = "alabaster"
html_title = f"lsic {release}"
html_static_path: list[str] = []
html_theme_options = {
    "description": "Large-scale image classification on Dask",
    "fixed_sidebar": True,
    "page_width": "1100px",
    "sidebar_width": "240px",
}
