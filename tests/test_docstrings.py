"""Every docstring example of the package runs when pasted into a fresh session: the
examples are run here with an empty namespace (pytest's own doctest run, configured
in pyproject.toml, gives them the module's globals, which would hide a bare name)."""

import doctest
import importlib
import pkgutil

import pytest

import gradcam_jax


def _modules():
  names = [gradcam_jax.__name__]
  for info in pkgutil.walk_packages(gradcam_jax.__path__, gradcam_jax.__name__ + "."):
    names.append(info.name)
  return names


def _examples():
  finder = doctest.DocTestFinder()
  found = []
  for name in _modules():
    module = importlib.import_module(name)
    for test in finder.find(module, name, globs={}):
      if test.examples:
        found.append(test)
  return found


EXAMPLES = _examples()


def test_the_package_has_docstring_examples():
  assert len(EXAMPLES) >= 10


@pytest.mark.parametrize("test", EXAMPLES, ids=[t.name for t in EXAMPLES])
def test_docstring_example_runs_in_a_fresh_namespace(test):
  test.globs = {}
  runner = doctest.DocTestRunner(optionflags=doctest.NORMALIZE_WHITESPACE)
  runner.run(test)
  result = runner.summarize(verbose=False)
  assert result.failed == 0, f"{test.name}: {result.failed} example(s) failed"
