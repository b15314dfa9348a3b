"""The model seam: run a model with an edit at one layer, without touching the model.

Two adapters share one signature, ``run(variables, x, layer, edit) -> output``, where
``edit(A) -> A'`` replaces the activation ``A`` of the target layer inside the model:

* any function that calls Flax linen modules (``model.apply``, a ``partial`` of it,
  a ``TrainState.apply_fn``): ``flax.linen.intercept_methods`` applies `edit` to the
  output of the module at ``layer`` (a module path). The model's class, instance and
  variables are untouched.
* :class:`Split`: an explicit pair of pure functions ``features(params, x) -> A`` and
  ``head(params, A) -> output`` for Equinox, Haiku or raw-JAX models.

Explainers read ``A`` and ``dy/dA`` through :func:`tap` (a zero-cost identity whose
cotangent for a dummy input is ``A``), so activations inside lifted transforms such as
``nn.remat`` never leak out of their trace.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import flax.linen as nn
import jax

from gradcam_jax._layers import LayerInfo, LayerRef
from gradcam_jax._errors import LayerNotFoundError, ModelError

__all__ = ["Edit", "Split", "as_variables", "list_layers", "replace", "run", "run_many",
           "tap", "tap_add"]


class Split(NamedTuple):
  """A model given as two pure functions split at the target layer.

  Attributes:
    features: ``features(params, x) -> A`` with ``A`` of shape (B, h, w, C).
    head: ``head(params, A) -> output`` (logits of shape (B, num_classes) usually).

  Example:
    >>> import jax.numpy as jnp, gradcam_jax as gcj
    >>> split = gcj.Split(features=lambda p, x: x * p, head=lambda p, a: a.mean((1, 2)))
    >>> split.features(2.0, jnp.ones((1, 4, 4, 3))).shape
    (1, 4, 4, 3)
  """
  features: Callable[[Any, jax.Array], jax.Array]
  head: Callable[[Any, jax.Array], Any]

  def __call__(self, params, x):
    return self.head(params, self.features(params, x))


def as_variables(apply_fn, params):
  """Flax variables for `params`: a variables dict stays, a bare tree is wrapped.

  A dict-like with a ``"params"`` key is a variables dict (``{"params": ...,
  "batch_stats": ...}``); anything else is a bare params tree (the ``TrainState``
  convention) and becomes ``{"params": params}``. :class:`Split` models get `params`
  unchanged.
  """
  from gradcam_jax._equinox import EquinoxModel
  from gradcam_jax._nnx import NNXModel
  if isinstance(apply_fn, EquinoxModel):
    return apply_fn.arrays(params)
  if isinstance(apply_fn, (Split, NNXModel)):
    return params
  if hasattr(params, "keys") and "params" in params.keys():
    return params
  return {"params": params}


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


def _skip(method_name: str) -> bool:
  return method_name == "setup" or method_name.startswith("<")


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


def _numbered(on_output: Callable) -> Callable:
  """A linen method interceptor that numbers the calls of each (module path,
  method) and passes each module output through ``on_output((path, method), index,
  module, out)``, which returns what the caller of the method gets."""
  calls: dict = {}

  def intercept(next_fun, args, kwargs, context):
    module, method = context.module, context.method_name
    if _skip(method) or not module.path:
      return next_fun(*args, **kwargs)
    key = (tuple(module.path), method)
    index = calls[key] = calls.get(key, -1) + 1
    return on_output(key, index, module, next_fun(*args, **kwargs))
  return intercept


def list_layers(apply_fn, variables, x) -> tuple[list[LayerInfo], Any]:
  """Every module output the model computes on `x`, in the order they finish, and
  the shape of the model's output.

  Uses ``jax.eval_shape``: nothing is computed. For a :class:`Split` model the one
  layer is the output of ``features`` (path ``("features",)``).
  """
  from gradcam_jax import _equinox, _nnx
  if isinstance(apply_fn, _nnx.NNXModel):
    return _nnx.list_layers(apply_fn, variables, x)
  if isinstance(apply_fn, _equinox.EquinoxModel):
    return _equinox.list_layers(apply_fn, variables, x)
  if isinstance(apply_fn, Split):
    a = jax.eval_shape(apply_fn.features, variables, x)
    out = jax.eval_shape(apply_fn.head, variables, a)
    return [LayerInfo(("features",), "__call__", 0, tuple(a.shape), str(a.dtype),
                      "Split.features")], out
  infos: list[LayerInfo] = []

  def record(key, index, module, out):
    is_array = hasattr(out, "shape") and hasattr(out, "dtype")
    infos.append(LayerInfo(key[0], key[1], index,
                           tuple(out.shape) if is_array else None,
                           str(out.dtype) if is_array else None,
                           type(module).__name__))
    return out

  def traced(variables, x):
    with nn.intercept_methods(_numbered(record)):
      return apply_fn(variables, x)

  out = jax.eval_shape(traced, variables, x)
  return infos, out


def run(apply_fn, variables, x, layer: LayerRef, edit: Callable[[jax.Array], jax.Array]):
  """``apply_fn(variables, x)`` with the target activation ``A`` replaced by ``edit(A)``.

  `layer` must be resolved (see ``select_layer``): its ``call`` is the call index.
  """
  return run_many(apply_fn, variables, x, (layer,), (edit,))


def run_many(apply_fn, variables, x, layers, edits):
  """:func:`run` with an edit at each of several layers, in one forward pass."""
  from gradcam_jax import _equinox, _nnx
  if isinstance(apply_fn, _nnx.NNXModel):
    return _nnx.run_many(apply_fn, variables, x, layers, edits)
  if isinstance(apply_fn, _equinox.EquinoxModel):
    return _equinox.run_many(apply_fn, variables, x, layers, edits)
  if isinstance(apply_fn, Split):
    if len(layers) != 1:
      raise LayerNotFoundError(f"a Split model has one layer (its features); got "
                               f"{len(layers)}.")
    return apply_fn.head(variables, edits[0](apply_fn.features(variables, x)))
  wanted = {(ref.path, ref.method, ref.call or 0): edit for ref, edit in zip(layers, edits)}
  edited: list = []

  def apply_edit(key, index, module, out):
    edit = wanted.get((*key, index))
    if edit is None:
      return out
    edited.append(key)
    return edit(out)

  with nn.intercept_methods(_numbered(apply_edit)):
    out = apply_fn(variables, x)
  if len(edited) != len(wanted):  # a model whose calls differ between traces
    raise ModelError(f"layers {[str(l) for l in layers]}: reached {len(edited)} of "
                       f"{len(wanted)} while running the model; expected each once.")
  return out
