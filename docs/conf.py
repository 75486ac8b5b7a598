"""Sphinx configuration of pplgen's documentation: ``make docs`` builds it offline into docs/_build/html."""

import os
import sys
from pathlib import Path

# Before anything imports matplotlib: the build draws no window.
os.environ["MPLBACKEND"] = "Agg"

import torch

ROOT = Path(__file__).resolve().parents[1]
# The repository root, so that the conformance table reads tests/support/outcomes.py; and the build's helpers.
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).parent / "_ext"))

# The examples run in this process on two cores: their smoke budgets are small steps, which one thread runs
# fastest (as tests/examples/ runs them).
torch.set_num_threads(1)

project = "pplgen"
author = "the pplgen authors"
copyright = "the pplgen authors"
release = version = "0.1.0"

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.viewcode",
    "sphinx_gallery.gen_gallery",
    "myst_parser",
    "pplgen_docs",
]
# Nothing is fetched at build time: no intersphinx inventories.
intersphinx_mapping = {}

source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
exclude_patterns = ["_build", "_ext", "Thumbs.db", ".DS_Store"]
myst_enable_extensions = ["colon_fence"]
myst_heading_anchors = 3

# The docstrings are reST with Sphinx field lists (``:param x:``), read by autodoc as they are. Napoleon is left
# off: its Google-style parsing reads an attribute comment's first "text: more" as a type and a description.
autodoc_member_order = "bysource"
autodoc_default_options = {"members": True, "show-inheritance": True}
autodoc_typehints = "signature"
autoclass_content = "class"

sphinx_gallery_conf = {
    "examples_dirs": ["../examples"],
    "gallery_dirs": ["auto_examples"],
    # Every script runs in the build, on its --smoke budget (about a minute for all of them on two cores).
    "filename_pattern": r"\.py$",
    # The scripts' shared helper is imported, not an example.
    "ignore_pattern": r"every_engine\.py$",
    "reset_argv": "pplgen_docs.smoke_argv",
    "within_subsection_order": "pplgen_docs.StoryOrder",
    "abort_on_example_error": True,
    "download_all_examples": False,
    "remove_config_comments": True,
    "capture_repr": (),
    "min_reported_time": 1,
}

html_theme = "furo"
html_title = "pplgen"
html_static_path = ["_static"]
html_css_files = ["pplgen.css"]
