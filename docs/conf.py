"""Sphinx configuration of the kdentropy documentation.

Build (from the repository root, with the ``docs`` extra installed)::

    python -m sphinx -W --keep-going -b html docs docs/_build/html

Nothing here reaches the network: there is no intersphinx mapping, and the
gallery runs only the examples that finish in seconds (see ``sphinx_gallery_conf``).
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import kdentropy

DOCS = Path(__file__).resolve().parent
ROOT = DOCS.parent

# -- project ---------------------------------------------------------------------------------
project = "kdentropy"
author = "kdentropy developers"
copyright = "kdentropy developers"  # Sphinx reads this name
release = kdentropy.__version__
version = release

# -- extensions ------------------------------------------------------------------------------
extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
    "numpydoc",
    "sphinx_gallery.gen_gallery",
    "myst_parser",  # only for architecture.md, which is also read on GitHub
]

source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
root_doc = "index"
templates_path = ["_templates"]
exclude_patterns = ["_build", "Thumbs.db", ".DS_Store", "auto_examples/*.ipynb",
                    "auto_examples/*.py", "auto_examples/*.zip", "auto_examples/*.json",
                    "auto_examples/*.md5"]
default_role = "code"   # `x` in the guide is inline code, as in Markdown
nitpicky = False        # numpydoc type fields ("array_like", "int, optional") are prose
myst_heading_anchors = 3

# -- API reference ---------------------------------------------------------------------------
autosummary_generate = True
autosummary_imported_members = True
autodoc_default_options = {"members": False, "inherited-members": False}
autodoc_typehints = "none"          # numpydoc's Parameters section says it, once
autodoc_member_order = "bysource"
# The public optional modules import mpi4py, torch and jax at import time. The docs
# extra does not install them; in that case they are replaced by mocks so the reference
# still builds (their pages then show the docstrings, which never need the framework).
autodoc_mock_imports = [name for name in ("mpi4py", "torch", "jax", "jaxlib")
                        if importlib.util.find_spec(name) is None]

numpydoc_show_class_members = False    # the class templates list members themselves
numpydoc_class_members_toctree = False
numpydoc_xref_param_type = False
numpydoc_validation_checks: set[str] = set()  # style is linted in tests, not here

# -- HTML ------------------------------------------------------------------------------------
html_theme = "pydata_sphinx_theme"
html_title = f"kdentropy {release}"
html_theme_options = {
    "navigation_with_keys": False,
    "show_toc_level": 2,
    "secondary_sidebar_items": ["page-toc"],
    "footer_start": ["copyright"],
    "footer_end": ["sphinx-version"],
}
html_sidebars = {"index": [], "contributing": []}
html_static_path: list[str] = []
html_show_sourcelink = False

# -- examples gallery ------------------------------------------------------------------------
# Only the examples that run in seconds on two cores are executed while building;
# the others (MPI under mpiexec, PyTorch training, cell training) are shown with their code
# and the command that runs them. KDENTROPY_DOCS_RUN_EXAMPLES=0 skips even those
# (sphinx-build -D plot_gallery=0 does the same).
_RUN = os.environ.get("KDENTROPY_DOCS_RUN_EXAMPLES", "1") != "0"
sphinx_gallery_conf = {
    "examples_dirs": str(ROOT / "examples"),
    "gallery_dirs": "auto_examples",
    "filename_pattern": r"/(quickstart|scipy_minimize)\.py$",
    "plot_gallery": "True" if _RUN else "False",
    "download_all_examples": False,
    "abort_on_example_error": True,
    "only_warn_on_example_error": False,
    "show_memory": False,
    "show_signature": False,
    "write_computation_times": False,
    "within_subsection_order": "FileNameSortKey",
    "min_reported_time": 3600,
}



# -- example pages ---------------------------------------------------------------------------
def _example_page(app, docname, source):
    """Give each generated example page a title and literal ``Run:`` blocks.

    The examples' docstrings are written for a terminal: a one-line summary, then
    ``Run:  python examples/NAME.py`` lines aligned by hand. Sphinx-Gallery copies them
    into reST as they are, where the summary is no title (so the gallery's toctree has no
    link text) and the aligned lines are an indented block that reST misreads. This
    rewrites only the generated pages, so the scripts stay exactly as they are.
    """
    if not docname.startswith("auto_examples/") or docname.endswith("/index"):
        return
    lines = source[0].split("\n")
    label = next((k for k, line in enumerate(lines)
                  if line.startswith(".. _sphx_glr_auto_examples_")), None)
    if label is None:
        return
    k = label + 1
    while k < len(lines) and not lines[k].strip():
        k += 1
    if k + 1 < len(lines) and lines[k + 1].strip() and not set(lines[k + 1].strip()) <= set("=-~^"):
        return  # a multi-line first paragraph: leave it alone
    if k + 1 >= len(lines) or not lines[k + 1].strip():
        lines.insert(k + 1, "=" * len(lines[k]))
    out, in_run = [], False
    for line in lines:
        if line.startswith("Run:"):
            out += ["Run:", "", ".. code-block:: text", "", "    " + line[4:].strip()]
            in_run = True
        elif in_run and line.strip():
            out.append("    " + (line[6:] if line.startswith(" " * 6) else line))
        else:
            in_run = False
            out.append(line)
    source[0] = "\n".join(out)


def setup(app):
    app.connect("source-read", _example_page)
