"""Sphinx configuration of the AutoNL documentation.

Build: ``python -m sphinx -W --keep-going -b html docs /tmp/autonl-docs`` (tests/test_docs.py
builds it with warnings as errors). The pages are Markdown (MyST); the API pages pull the
docstrings of the installed ``autonl`` package (autodoc) and the command reference is
generated from the click commands (sphinx-click), so both stay what the code says.
"""
from __future__ import annotations

import re
from importlib.metadata import PackageNotFoundError, version as _version

project = "AutoNL"
author = "AutoNL contributors"
copyright = "AutoNL contributors, Apache-2.0"
try:
    release = _version("autonl")
except PackageNotFoundError:       # not installed: autodoc would fail anyway
    release = "unknown"
version = release

extensions = [
    "myst_parser",          # the hand-written pages are Markdown
    "sphinx.ext.autodoc",   # the pass API from its docstrings (they use RST roles)
    "sphinx_click",         # the command reference from autonl.cli.main:cli
]
source_suffix = {".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build", "Thumbs.db", ".DS_Store"]

# `[text](page.md#a-heading)` links reach headings down to ###.
myst_heading_anchors = 3
# Unlabelled code fences (the IR text form, torch.fx code) are shown without highlighting
# rather than warning when they are not Python.
highlight_language = "none"

autodoc_member_order = "bysource"
autodoc_typehints = "description"

html_theme = "alabaster"
html_title = f"AutoNL {release}"


# Click help texts are plain text for the terminal; sphinx-click reads them as reStructuredText,
# where `max |diff| <= 1e-4` would be a substitution reference. Escape such |word| pairs
# (a line block's leading "| " is left alone).
_SUBST = re.compile(r"(?<![\\\w])\|(?=[^\s|])([^|\n]*?[^\s|\\])\|(?!\w)")


def _escape_bars(app, ctx, lines):
    lines[:] = [_SUBST.sub(r"\\|\1\\|", line) for line in lines]


def setup(app):
    for event in ("sphinx-click-process-description", "sphinx-click-process-options",
                  "sphinx-click-process-epilog"):
        app.connect(event, _escape_bars)
    return {"parallel_read_safe": True}
