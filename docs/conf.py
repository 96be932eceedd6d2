"""Sphinx configuration for the pgjax documentation.

Build (warnings are errors):  python -m sphinx -W --keep-going -b html docs docs/_build/html
"""

import os
import sys

# Before anything imports jax (autodoc here, the tutorial kernels inherit the environment): on CPU, XLA's
# concurrency-optimised scheduler can deadlock a jitted vmap over many seeds.
_flag = "--xla_cpu_enable_concurrency_optimized_scheduler=false"
if _flag not in os.environ.get("XLA_FLAGS", ""):
  os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + _flag).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)
sys.path.insert(0, HERE)

import gen_api  # noqa: E402
import pgjax  # noqa: E402

gen_api.write(os.path.join(HERE, "api"))

project = "pgjax"
author = "The pgjax developers"
copyright = "2026, The pgjax developers"
release = pgjax.__version__
version = pgjax.__version__

extensions = [
    "myst_nb",
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
]

exclude_patterns = ["_build", "README.md", "gen_api.py", "jupyter_execute", ".jupyter_cache"]
source_suffix = {".rst": "restructuredtext", ".md": "myst-nb"}

# --- autodoc / napoleon (Google-style docstrings)
autosummary_generate = False
autodoc_member_order = "bysource"
autodoc_typehints = "signature"
autodoc_preserve_defaults = True
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_ivar = True  # "Attributes:" as fields, not duplicate attribute entries
napoleon_use_rtype = False
add_module_names = False


def _skip_namedtuple_fields(app, what, name, obj, skip, options):
  """NamedTuple fields carry only "Alias for field number N"; their meaning is in the class docstring."""
  doc = getattr(obj, "__doc__", None) or ""
  if doc.startswith("Alias for field number"):
    return True
  return None


def setup(app):
  app.connect("autodoc-skip-member", _skip_namedtuple_fields)


# --- MyST / myst-nb (Markdown pages and executed tutorials)
myst_enable_extensions = ["dollarmath", "amsmath", "colon_fence", "deflist"]
myst_heading_anchors = 3
nb_execution_mode = os.environ.get("PGJAX_DOCS_EXECUTE", "cache")
nb_execution_cache_path = os.path.join(HERE, "_build", ".jupyter_cache")
nb_execution_timeout = 300
nb_execution_raise_on_error = True
nb_execution_show_tb = True
nb_merge_streams = True

# --- HTML
html_theme = "furo"
html_title = f"pgjax {release}"
html_static_path = []
