"""Model adapters: one module per kind of model, one protocol, one place that picks.

An adapter is what the explainers run instead of the user's model object. Each one
implements the same small protocol:

* ``adapter(variables, x) -> output``: run the model;
* ``adapter.variables(params)``: the tree it runs on, from what the user passed
  (a linen variables dict from a bare params tree, an Equinox model's arrays, ...);
* ``adapter.parse_layer(layer) -> (adapter, LayerRef | list | None)``: the layer
  argument in this framework's terms (paths, or Equinox selectors);
* ``adapter.list_layers(variables, x) -> (list[LayerInfo], output shape)``: every
  activation the model computes, each call of a layer numbered (traced, not run);
* ``adapter.run_many(variables, x, layers, edits) -> output``: the model with
  ``edits[i]`` applied to the output of ``layers[i]`` (resolved, with a call index).

and the same contracts, tested once for all of them (``tests/test_adapter_contract.py``): a
layer called more than once must be named with its call index; the user's model and
variables are never modified; a model that cannot run raises the model's error.

Adding a framework is one module here with ``claims(model) -> bool`` and
``adapt(model, params) -> (adapter, params)``, and one entry in :data:`ADAPTERS`.
"""

from __future__ import annotations

from gradcam_jax._adapters import equinox, keras, linen, nnx, split
from gradcam_jax._errors import ArgumentError

__all__ = ["ADAPTERS", "pick"]

# Tried in order: the first whose claims() accepts the model adapts it. linen comes
# last: it takes any other function of (variables, x) (a Keras model is one too).
ADAPTERS = (split, nnx, equinox, keras, linen)


def pick(model, params):
  """The adapter for what the user passed as the model, and the params it runs on
  (None for the params-as-argument form, unless the model carries its own)."""
  for module in ADAPTERS:
    if module.claims(model):
      return module.adapt(model, params)
  raise ArgumentError(
      f"apply_fn: expected a model: a function apply_fn(variables, images) (a Flax "
      f"linen model.apply), an nnx.Module, (graphdef, state) or GraphDef, an "
      f"eqx.Module, a Keras 3 model, or gcj.Split(features, head); got {type(model).__name__}.")
