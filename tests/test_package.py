"""The package (gradcam_jax/__init__.py): the public surface is pinned (names may be
added deliberately, never lost), and the module map names every module."""

import gradcam_jax as gcj

CORE = {"guided_gradcam", "gradcam", "guided_backprop", "guided_relu", "guided",
        "Explanation"}

def test_core_names_exported():
  assert CORE <= set(gcj.__all__)
  for name in gcj.__all__:
    assert hasattr(gcj, name), name

def test_the_module_map_names_every_module():
  """The package docstring's module map stays true: every module is in it."""
  from pathlib import Path
  root = Path(gcj.__file__).parent
  doc = gcj.__doc__
  missing = [str(p.relative_to(root)) for p in root.rglob("*.py")
             if p.name != "__init__.py" and p.name not in doc]
  assert missing == []
