"""``layer=None`` with a reshape: the last candidate layer whose reshaped activation
reaches the model's output.

A transformer whose head reads the class token only never lets the last block's
patch tokens reach the logits: every gradient method would give an all-zero map
there. Whether an activation reaches the output is a property of the network's
structure, not of its weights, so one probe answers it: the gradient of the summed
outputs with respect to every candidate at once (one compiled run on uniform random
images; on the model's own weights when they are known while tracing, else on
positive random weights of the same shapes), read after the reshape.
"""

from __future__ import annotations

from typing import Callable, Sequence

import jax
import jax.numpy as jnp

from gradcam_jax._edits import Edit
from gradcam_jax._errors import LayerShapeError
from gradcam_jax._layers import LayerInfo, LayerRef, describe_layers

__all__ = ["reaching_layer"]


def _add(a, delta):
  return a + delta


def _stand_ins(variables):
  """Positive floats (a variance stays a variance) and integer zeros of the shapes
  of `variables`, for weights that are traced (unknown) while the layer is chosen."""
  leaves, tree = jax.tree_util.tree_flatten(variables)
  keys = jax.random.split(jax.random.key(0), max(len(leaves), 1))

  def stand_in(leaf, key):
    if not hasattr(leaf, "shape"):
      return leaf
    if jnp.issubdtype(leaf.dtype, jnp.floating):
      return jax.random.uniform(key, leaf.shape, leaf.dtype, 0.5, 1.5)
    return jnp.zeros(leaf.shape, leaf.dtype)

  return jax.tree_util.tree_unflatten(tree, [stand_in(l, k) for l, k in zip(leaves, keys)])


def reaching_layer(
  adapter, variables, images, candidates: Sequence[LayerInfo], reshape: Callable
) -> LayerInfo:
  """The last of `candidates` (in the order the model finishes them) whose
  activation, after `reshape`, has a gradient that is not identically zero."""
  refs = [LayerRef(i.path, i.call, i.method) for i in candidates]

  def gradients(variables, x):  # does each candidate's activation reach the output
    def total(deltas):
      edits = [(r, Edit(_add, (d,))) for r, d in zip(refs, deltas)]
      out = adapter.run_with_edits(variables, x, edits)
      leaves = jax.tree_util.tree_leaves(out)
      return sum(jnp.sum(l.astype(jnp.float32)) for l in leaves if hasattr(l, "dtype"))

    zeros = [jnp.zeros(i.shape, i.dtype) for i in candidates]
    grads = jax.grad(total)(zeros)
    return [jnp.any(reshape(g) != 0) for g in grads]

  shape = jax.ShapeDtypeStruct(images.shape, images.dtype)
  traced = any(isinstance(l, jax.core.Tracer) for l in jax.tree_util.tree_leaves(variables))
  if traced:  # only their shapes are known: stand-ins made inside the probe
    specs = jax.tree_util.tree_map(
      lambda l: jax.ShapeDtypeStruct(l.shape, l.dtype) if hasattr(l, "shape") else l,
      variables,
    )

  def probe(variables):
    variables = _stand_ins(specs) if traced else variables
    x = jax.random.uniform(jax.random.key(1), shape.shape, shape.dtype)
    return gradients(variables, x)

  with jax.ensure_compile_time_eval():  # a concrete answer while tracing
    reaches = jax.jit(probe)(None if traced else variables)
  for info, ok in zip(candidates[::-1], reaches[::-1]):
    if bool(ok):
      return info
  raise LayerShapeError(
    "layer=None: no candidate layer's activation reaches the model's output after "
    "the reshape (every gradient there is identically zero). Candidates:\n"
    + describe_layers(candidates)
  )
