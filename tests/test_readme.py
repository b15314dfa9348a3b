"""Every Python block of the README, then of the user guide's pages (docs/guide, in the
order of the site's table of contents), runs verbatim, in order, in one namespace:
what a reader gets by pasting them top to bottom into one session.

The only names the test supplies are the ones the README says are the reader's own
model: ``nnx_model`` (an ``nnx.Module`` with ``blocks[3].conv2``, taking the README's
(B, 64, 64, 3) images) and ``eqx_model`` (an ``eqx.Module`` with ``layers``, taking one
(3, 64, 64) image, channels first, as Equinox models do); and ``photo.jpg``, the
reader's own photo, in the folder the blocks run in (a temporary one).
"""

import os
import re
import textwrap
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import pytest
from flax import nnx

pytestmark = pytest.mark.slow  # the fast loop is pytest -m "not slow"

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
FENCE = re.compile(r"^( *)```python\n(.*?)^\1```", re.S | re.M)


def documents() -> list[Path]:
  """The README, then the guide's pages in the order docs/index.md lists them."""
  index = (ROOT / "docs" / "index.md").read_text()
  pages = re.findall(r"^guide/(\w+)$", index, re.M)
  assert pages, "docs/index.md lists no guide page"
  return [README] + [ROOT / "docs" / "guide" / f"{p}.md" for p in pages]


def python_blocks() -> list[tuple[str, str]]:
  blocks = []
  for doc in documents():
    text = doc.read_text()
    blocks += [(f"{doc.relative_to(ROOT)}, block at line {text[:m.start()].count(chr(10)) + 1}",
                textwrap.dedent(m.group(2))) for m in FENCE.finditer(text)]
  return blocks


class _NNXBlock(nnx.Module):
  def __init__(self, cin, cout, rngs):
    self.conv1 = nnx.Conv(cin, cout, (3, 3), rngs=rngs)
    self.conv2 = nnx.Conv(cout, cout, (3, 3), rngs=rngs)

  def __call__(self, x):
    return nnx.relu(self.conv2(nnx.relu(self.conv1(x))))


class _NNXNet(nnx.Module):
  def __init__(self, rngs):
    self.blocks = nnx.List([_NNXBlock(c, 8, rngs) for c in (3, 8, 8, 8)])
    self.head = nnx.Linear(8, 10, rngs=rngs)

  def __call__(self, x):
    for b in self.blocks:
      x = b(x)
    return self.head(x.mean((1, 2)))


class _EqxNet(eqx.Module):
  layers: list

  def __init__(self, key):
    k1, k2, k3 = jax.random.split(key, 3)
    self.layers = [eqx.nn.Conv2d(3, 4, 3, padding=1, key=k1), eqx.nn.Lambda(jax.nn.relu),
                   eqx.nn.Conv2d(4, 6, 3, padding=1, key=k2), eqx.nn.Lambda(jax.nn.relu),
                   eqx.nn.Lambda(lambda a: a.mean((1, 2))), eqx.nn.Linear(6, 10, key=k3)]

  def __call__(self, x):  # one (C, H, W) image, as Equinox models are written
    for layer in self.layers:
      x = layer(x)
    return x


def test_the_readme_has_python_blocks():
  assert len(python_blocks()) >= 8


def test_readme_blocks_run_in_order(monkeypatch, tmp_path):
  import cv2
  from gradcam_jax.zoo.demo import load_samples
  monkeypatch.chdir(tmp_path)  # the blocks write their pictures here
  cv2.imwrite("photo.jpg", load_samples()[0][0][..., ::-1])
  # the CPU-notes block sets XLA_FLAGS, as a reader's program would before JAX
  # starts: give it this test's own copy, restored afterwards
  monkeypatch.setenv("XLA_FLAGS", "--xla_force_host_platform_device_count=4")
  namespace = {"__name__": "readme",
               "nnx_model": _NNXNet(nnx.Rngs(0)),
               "eqx_model": _EqxNet(jax.random.key(0))}
  for where, code in python_blocks():
    try:
      exec(compile(code, where, "exec"), namespace)
    except Exception as err:  # noqa: BLE001 (name the block that failed)
      pytest.fail(f"{where} failed: {type(err).__name__}: {err}\n{code}")
  assert (tmp_path / "overlay.png").exists() and (tmp_path / "guided_gradcam.png").exists()
  for picture in ("ecg.png", "ct.png", "clip.gif", "clip.png"):  # signals, volumes, video
    assert (tmp_path / picture).stat().st_size > 0, picture
  assert os.environ["XLA_FLAGS"] == ("--xla_force_host_platform_device_count=4 "
                                     "--xla_cpu_experimental_ynn_fusion_type=")
  # the loss block's gradient is a real one: finite everywhere, not all zero
  leaves = jax.tree_util.tree_leaves(namespace["grads"])
  assert all(jnp.isfinite(g).all() for g in leaves)
  assert any(jnp.abs(g).max() > 0 for g in leaves)
