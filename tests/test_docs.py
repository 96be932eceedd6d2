"""The documentation follows the code: API coverage, docstring doctests, the README's example.

Fast: nothing here builds Sphinx. The API pages are the ones ``docs/conf.py`` writes at the start of every
build (``docs/gen_api.py``); the test parses their directives and compares them with the public names taken
independently from ``pgjax.__all__`` and each public submodule's ``__all__``.
"""

import doctest
import importlib
import inspect
import io
import contextlib
import os
import re
import sys
import types

import pytest

import pgjax

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOCS = os.path.join(ROOT, "docs")


def _gen_api():
  sys.path.insert(0, DOCS)
  try:
    return importlib.import_module("gen_api")
  finally:
    sys.path.remove(DOCS)


def _public_names():
  """{module name: set of public names}, from the package and every submodule listed in its ``__all__``."""
  out = {"pgjax": set(pgjax.__all__)}
  for name in pgjax.__all__:
    obj = getattr(pgjax, name)
    if isinstance(obj, types.ModuleType):
      out[obj.__name__] = set(obj.__all__)
  return out


_DIRECTIVE = re.compile(r"^\.\. (?:auto(?:function|class|exception|data)|py:data)::\s+(\S+)", re.M)
_CURRENT = re.compile(r"^\.\. currentmodule::\s+(\S+)", re.M)


def _documented(text):
  """(module, set of names with an entry) from one generated RST page."""
  (module,) = _CURRENT.findall(text)
  return module, set(_DIRECTIVE.findall(text))


@pytest.fixture(scope="module")
def pages():
  return _gen_api().pages()


def test_every_public_name_has_an_api_entry(pages):
  public = _public_names()
  documented = {}
  for name, text in pages.items():
    if not _CURRENT.search(text):  # the index and the background page
      continue
    module, names = _documented(text)
    documented[module] = names
  assert set(documented) == set(public), "one API page per public module"
  for module, names in public.items():
    submodules = {n for n in names if isinstance(getattr(importlib.import_module(module), n), types.ModuleType)}
    missing = names - submodules - documented[module]
    extra = documented[module] - names
    assert not missing, f"{module}: public names without an API entry: {sorted(missing)}"
    assert not extra, f"{module}: API entries for names not in __all__: {sorted(extra)}"
    # Submodules of the package are linked from its page.
    for sub in submodules:
      assert f":doc:`{module}.{sub} <{module}.{sub}>`" in pages[f"{module}.rst"], sub


def test_api_index_lists_every_page(pages):
  index = pages["index.rst"]
  for name in pages:
    if name != "index.rst":
      assert re.search(rf"^   {re.escape(name[:-4])}$", index, re.M), name


def test_api_directives_name_importable_objects(pages):
  for name, text in pages.items():
    if not _CURRENT.search(text):
      continue
    module, names = _documented(text)
    mod = importlib.import_module(module)
    for n in names:
      assert hasattr(mod, n), f"{module}.{n}"


def test_concept_and_tutorial_pages_are_in_the_toctree():
  with open(os.path.join(DOCS, "index.md"), encoding="utf-8") as fh:
    index = fh.read()
  for folder in ("concepts", "tutorials"):
    for fname in sorted(os.listdir(os.path.join(DOCS, folder))):
      if fname.endswith(".md"):
        assert f"{folder}/{fname[:-3]}" in index, f"{folder}/{fname} is not reachable from docs/index.md"


# --- docstring examples with ``>>>`` prompts are doctests ------------------------------------------------


def _docstring_tests():
  finder = doctest.DocTestFinder(exclude_empty=True)
  seen, tests = set(), []
  for module, names in _public_names().items():
    mod = importlib.import_module(module)
    objs = [(module, mod)] + [(f"{module}.{n}", getattr(mod, n)) for n in sorted(names)]
    for qualname, obj in objs:
      if isinstance(obj, types.ModuleType) and qualname != module:
        continue
      if not (inspect.isclass(obj) or inspect.isfunction(obj) or inspect.ismodule(obj)):
        continue
      if id(obj) in seen:
        continue
      seen.add(id(obj))
      for t in finder.find(obj, qualname, module=False, globs={}):
        where = (t.filename, t.lineno)        # a docstring reached through a module and by its own name
        if t.examples and where not in seen:
          seen.add(where)
          tests.append(t)
  return tests


_DOCTESTS = _docstring_tests()


@pytest.mark.parametrize("test", _DOCTESTS, ids=[t.name for t in _DOCTESTS])
def test_docstring_examples(test):
  import jax
  import jax.numpy as jnp
  test.globs.update({"jax": jax, "jnp": jnp, "pgjax": pgjax})
  runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
  out = io.StringIO()
  runner.run(test, out=out.write)
  assert runner.failures == 0, out.getvalue()


# --- the README's example and its printed output ---------------------------------------------------------


def _readme_example():
  with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as fh:
    text = fh.read()
  m = re.search(r"## A variance comparison.*?```python\n(.*?)```.*?prints[^\n]*\n\n```\n(.*?)```", text, re.S)
  assert m, "README: the variance-comparison example and its printed output"
  return m.group(1), m.group(2)


_NUMBER = re.compile(r"[-+]?\d+(?:\.\d+)?(?:e[-+]?\d+)?")


# The README loops over four baselines; each is one compilation, which dominates the run time. The test runs
# the README's code unchanged except for that list, reduced to the two lines that carry the README's claims
# (the batch mean detected as biased, leave-one-out not), and compares them with the printed lines.
_README_BASELINES = '["none", "mean", "leave_one_out", "optimal_leave_one_out"]'
_CHECKED_BASELINES = ("mean", "leave_one_out")


def test_readme_example_prints_what_the_readme_says():
  code, printed = _readme_example()
  assert code.count(_README_BASELINES) == 1, "README example changed: update _README_BASELINES"
  code = code.replace(_README_BASELINES, repr(list(_CHECKED_BASELINES)))
  buf = io.StringIO()
  with contextlib.redirect_stdout(buf):
    exec(compile(code, "README.md", "exec"), {"__name__": "__readme__"})  # noqa: S102
  got_lines = buf.getvalue().strip().splitlines()
  want_lines = [line for line in printed.strip().splitlines()
                if line.split(":")[0].strip() in _CHECKED_BASELINES]
  assert len(got_lines) == len(want_lines), buf.getvalue()
  for got, want in zip(got_lines, want_lines):
    # Same words; every number equal to the printed precision (one unit in the last printed digit, for
    # float differences across CPUs); the words alone would not catch a changed estimator.
    assert _NUMBER.sub("#", got).split() == _NUMBER.sub("#", want).split(), (got, want)
    for g, w in zip(_NUMBER.findall(got), _NUMBER.findall(want)):
      mant = w.split("e")[0]
      decimals = len(mant.split(".")[1]) if "." in mant else 0
      exp = int(w.split("e")[1]) if "e" in w else 0
      assert abs(float(g) - float(w)) <= 1.01 * 10.0 ** (exp - decimals), (got, want)
