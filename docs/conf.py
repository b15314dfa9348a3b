"""Sphinx configuration of the gradcam-jax documentation site.

Built with Sphinx, MyST-NB and the Sphinx Book Theme, the toolchain of JAX, Flax and
optax, whose users are ours: Markdown pages (the README's reference sections), the
API reference from the docstrings (autodoc + autosummary, Google style through
napoleon), and the notebooks rendered with their stored outputs (never executed
here: the tests execute them).

    sphinx-build -W --keep-going -b html docs docs/_build/html
"""

import os
import sys

sys.path.insert(0, os.path.abspath(".."))
os.environ.setdefault("KERAS_BACKEND", "jax")

import gradcam_jax  # noqa: E402

project = "gradcam-jax"
author = "the gradcam-jax authors"
release = version = gradcam_jax.__version__
copyright = "2026, the gradcam-jax authors"

extensions = [
  "myst_nb",
  "sphinx.ext.autodoc",
  "sphinx.ext.autosummary",
  "sphinx.ext.napoleon",
  "sphinx.ext.viewcode",
]
autosummary_generate = True
autodoc_typehints = "description"
autodoc_member_order = "bysource"
autodoc_default_options = {"members": True, "undoc-members": False}
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_ivar = True  # a NamedTuple's Attributes: fields, not second descriptions

nb_execution_mode = "off"  # the notebooks are shown with the outputs stored in them
myst_enable_extensions = ["colon_fence", "deflist"]
myst_heading_anchors = 3

exclude_patterns = ["_build", "**.ipynb_checkpoints", "README.md"]
suppress_warnings = ["myst.header"]

html_theme = "sphinx_book_theme"
html_title = f"gradcam-jax {release}"
html_theme_options = {"show_toc_level": 2, "repository_url": "", "use_repository_button": False}
html_static_path: list = []
