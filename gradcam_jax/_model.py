"""Edits at a layer, the explainers' vocabulary for every adapter
(``gradcam_jax._adapters``): ``run(adapter, variables, x, layer, edit)`` runs the
model with ``edit(A) -> A'`` in place of the target layer's activation ``A``.

Explainers read ``A`` and ``dy/dA`` through :func:`tap` (a zero-cost identity whose
cotangent for a dummy input is ``A``), so activations inside lifted transforms such as
``nn.remat`` never leak out of their trace.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax

from gradcam_jax._errors import ModelError
from gradcam_jax._layers import LayerInfo, LayerRef

__all__ = ["Edit", "Layers", "list_layers", "model_failure", "replace", "run", "tap",
           "tap_add"]


class Edit(NamedTuple):
  """An edit of a layer's activation: ``fn(A, *operands)``, elementwise over the
  batch (example b of the result depends on example b of `A` and of each operand).

  Models written for one example (Equinox) are run under ``vmap``; there the edit is
  applied lane by lane with :meth:`lane`, each lane taking its own operand rows.
  """
  fn: Callable
  operands: tuple = ()

  def __call__(self, a):
    return self.fn(a, *self.operands)

  def lane(self, i) -> Callable:
    """The edit of example `i` alone, for an unbatched activation."""
    return lambda a: self.fn(a[None], *(o[i][None] for o in self.operands))[0]


def tap_add(a, probe, delta):
  """``tap(a, probe) + delta``: read A (via `probe`) and dy/dA (via `delta`)."""
  return tap(a, probe) + delta


def replace(a, value):
  """Ignore the activation, use `value` (the model after the layer, on `value`)."""
  del a
  return value


@jax.custom_vjp
def tap(a, probe):
  """Identity in `a`; the cotangent it returns for `probe` is `a` itself.

  ``jax.vjp(lambda probe: f(tap(a, probe)), zeros)`` yields the activation ``a``
  from the backward pass, which works inside lifted transforms (remat, scan) where
  a side-effect capture would leak a tracer.
  """
  del probe
  return a


def _tap_fwd(a, probe):
  del probe
  return a, a


def _tap_bwd(a, g):
  return g, a


tap.defvjp(_tap_fwd, _tap_bwd)


def model_failure(err: Exception, images) -> Exception:
  """The model's own failure on its first (shape-only) run, as the error to raise:
  a :class:`ModelError` naming the missing piece where the model's error says what
  is missing (an rng, an argument, a variable collection, a parameter), else an
  :class:`ImageError` (a model that cannot run on these images)."""
  import flax.errors as fe
  from gradcam_jax._errors import ImageError
  said = f"the model raised {type(err).__name__}: {err}"
  if isinstance(err, fe.InvalidRngError):
    return ModelError(
        f"the model needs a random key to run ({said}). Explain it in inference mode, "
        "e.g. functools.partial(model.apply, train=False) or deterministic=True, or "
        "pass the key: functools.partial(model.apply, rngs={'dropout': key}).")
  if isinstance(err, fe.ScopeCollectionNotFound):
    return ModelError(
        f"the variables lack a collection the model reads ({said}). Pass every "
        "collection init or training returned, e.g. {'params': ..., 'batch_stats': "
        "...}, not the params alone.")
  if isinstance(err, (fe.ModifyScopeVariableError, fe.ImmutableVariableError)):
    return ModelError(
        f"the model tries to update its variables, as BatchNorm does in training mode "
        f"({said}). Explain it in inference mode, e.g. "
        "functools.partial(model.apply, train=False).")
  # (a ScopeParamShapeError is left to the end: a parameter of another shape than the
  # input implies is most often images of the wrong shape, e.g. 5 channels for 3)
  if isinstance(err, (fe.ScopeParamNotFoundError, fe.ScopeVariableNotFoundError)):
    return ModelError(f"the params do not match the model ({said}): pass the "
                      "variables this model was initialised or trained with.")
  if isinstance(err, TypeError) and "required" in str(err) and "argument" in str(err):
    return ModelError(
        f"the model's apply needs an argument the explainer does not pass ({said}). "
        "Bind it: functools.partial(model.apply, train=False).")
  return ImageError(
      f"the model could not run on images of shape {tuple(images.shape)} "
      f"{images.dtype} (expected (B, H, W, C) as the model expects); {said}")


class Layers(NamedTuple):
  """What :func:`list_layers` returns: unpack it (``layers, output = ...``) or print
  it (a table: layer, module type, shape)."""
  layers: list[LayerInfo]
  output: Any

  def __str__(self) -> str:
    from gradcam_jax._layers import describe_layers
    out = jax.tree_util.tree_map(lambda a: tuple(a.shape), self.output)
    return (f"  {'layer (as layer= takes it)':40s} {'module':20s} shape\n"
            + describe_layers(self.layers, None) + f"\n  output: {out}")


def list_layers(apply_fn, variables, x) -> Layers:
  """Every activation the model computes on `x`, in the order they finish (each call
  of a module numbered), and the shape of the model's output; ``print`` it for a
  table.

  `apply_fn` and `variables` as an explainer takes them (a linen ``apply``, an NNX
  module, an Equinox module, a :class:`Split`, ...). Uses ``jax.eval_shape``:
  nothing is computed.

  Example:
    >>> import jax, jax.numpy as jnp, flax.linen as nn, gradcam_jax as gcj
    >>> class Net(nn.Module):
    ...   @nn.compact
    ...   def __call__(self, x):
    ...     x = nn.relu(nn.Conv(4, (3, 3), name="conv")(x))
    ...     return nn.Dense(3, name="fc")(x.mean((1, 2)))
    >>> net = Net()
    >>> x = jnp.ones((2, 8, 8, 3))
    >>> print(gcj.list_layers(net.apply, net.init(jax.random.key(0), x), x))
    layer (as layer= takes it)               module               shape
      conv                                     Conv                 (2, 8, 8, 4) float32
      fc                                       Dense                (2, 3) float32
      output: (2, 3)
  """
  from gradcam_jax._adapters import pick
  adapter, params = pick(apply_fn, variables)
  return Layers(*adapter.list_layers(adapter.variables(params), x))


def run(adapter, variables, x, layer: LayerRef, edit: Callable[[jax.Array], jax.Array]):
  """The model with the activation ``A`` at `layer` (resolved: its ``call`` is the
  call index) replaced by ``edit(A)``."""
  return adapter.run_many(variables, x, (layer,), (edit,))
