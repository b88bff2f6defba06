"""The documentation builds with warnings as errors, and its API reference lists every public name.

The build runs Sphinx in a subprocess on a copy of ``docs/`` and ``examples/`` in a
temporary folder, so it writes nothing into the checkout. The examples are not run
(``KDENTROPY_DOCS_RUN_EXAMPLES=0``): ``test_examples.py`` runs them, and skipping them
keeps this test to about half a minute on two cores.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"

# Module -> its page in docs/api/.
API_PAGES = {
    "kdentropy": "kdentropy.rst",
    "kdentropy.cells": "cells.rst",
    "kdentropy.nn": "nn.rst",
    "kdentropy.optim": "optim.rst",
    "kdentropy.mpi": "mpi.rst",
    "kdentropy.torch": "torch.rst",
    "kdentropy.jax": "jax.rst",
}
_OPTIONAL = {"kdentropy.mpi": "mpi4py", "kdentropy.torch": "torch", "kdentropy.jax": "jax"}


def _listed(page: Path) -> list[str]:
    """The names of the ``autosummary`` blocks of one API page."""
    names, inside = [], False
    for line in page.read_text(encoding="utf-8").splitlines():
        if line.startswith(".. autosummary::"):
            inside = True
        elif inside and line.strip() and not line.startswith(" "):
            inside = False
        elif inside and re.fullmatch(r"   [A-Za-z_][\w.]*", line):
            names.append(line.strip())
    return names


@pytest.mark.parametrize("module", sorted(API_PAGES))
def test_api_pages_list_every_public_name(module):
    dependency = _OPTIONAL.get(module)
    if dependency and importlib.util.find_spec(dependency) is None:
        pytest.skip(f"{module} needs {dependency}")
    public = set(importlib.import_module(module).__all__)
    listed = _listed(DOCS / "api" / API_PAGES[module])
    assert len(listed) == len(set(listed)), f"docs/api/{API_PAGES[module]} lists a name twice"
    assert set(listed) == public, (
        f"docs/api/{API_PAGES[module]} and {module}.__all__ differ: "
        f"missing {sorted(public - set(listed))}, not public {sorted(set(listed) - public)}")


def test_docs_build_without_warnings(tmp_path):
    if importlib.util.find_spec("sphinx") is None:
        pytest.skip("Sphinx is not installed (pip install '.[docs]')")
    src = tmp_path / "docs"
    ignore = shutil.ignore_patterns("_build", "generated", "auto_examples",
                                    "sg_execution_times.rst")
    shutil.copytree(DOCS, src, ignore=ignore)
    shutil.copytree(ROOT / "examples", tmp_path / "examples")
    env = dict(os.environ, KDENTROPY_DOCS_RUN_EXAMPLES="0")
    out = subprocess.run(
        [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html",
         str(src), str(tmp_path / "html")],
        capture_output=True, text=True, env=env, timeout=300, check=False)
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-8000:]
    for page in ("index.html", "api/generated/kdentropy.soft_entropy.html",
                 "guide/estimator.html", "auto_examples/index.html", "contributing.html"):
        assert (tmp_path / "html" / page).is_file(), page
