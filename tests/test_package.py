"""The package (gradcam_jax/__init__.py): the public surface is pinned (names may be
added deliberately, never lost), and each folder's docstring names its modules."""

import gradcam_jax as gcj

CORE = {"guided_gradcam", "gradcam", "guided_backprop", "guided_relu", "guided",
        "Explanation"}

def test_core_names_exported():
  assert CORE <= set(gcj.__all__)
  for name in gcj.__all__:
    assert hasattr(gcj, name), name

def test_every_folder_names_its_modules():
  """Each folder's __init__ docstring names every module in it (the tree says the
  rest): a module added without a line there fails here."""
  import importlib
  from pathlib import Path
  root = Path(gcj.__file__).parent
  missing = []
  for init in root.rglob("__init__.py"):
    folder = init.parent
    if folder == root:  # the package's own modules are named in its docstring too
      doc = gcj.__doc__
    else:
      package = ".".join(("gradcam_jax", *folder.relative_to(root).parts))
      doc = importlib.import_module(package).__doc__ or ""
    for module in folder.glob("*.py"):
      if module.name not in ("__init__.py", "__main__.py") and module.stem not in doc:
        missing.append(str(module.relative_to(root)))
  assert missing == []
