"""Model adapters: one class per kind of model, one protocol, one place that picks.

An adapter is what the explainers run instead of the user's model object; every
adapter implements :class:`~gradcam_jax._adapters.base.Adapter` (``base.py``) and keeps
its contracts, tested once for all of them (``tests/test_adapter_contract.py``):
``linen.py`` (a Flax linen ``apply``), ``nnx.py`` (Flax NNX), ``equinox.py``,
``keras.py`` (Keras 3 on JAX), ``split.py`` (``gcj.Split``: two pure functions).

Adding a framework is one module here with one class implementing the protocol, and
one entry in :data:`ADAPTERS`.
"""

from __future__ import annotations

from gradcam_jax._adapters.base import Adapter
from gradcam_jax._adapters.equinox import EquinoxModel
from gradcam_jax._adapters.keras import KerasModel
from gradcam_jax._adapters.linen import LinenModel
from gradcam_jax._adapters.nnx import NNXModel
from gradcam_jax._adapters.split import Split
from gradcam_jax._errors import ArgumentError

__all__ = ["ADAPTERS", "Adapter", "pick"]

# Tried in order: the first whose claims() accepts the model adapts it. linen comes
# last: it takes any other function of (variables, x) (a Keras model is one too).
ADAPTERS: tuple[type[Adapter], ...] = (
  Split,
  NNXModel,
  EquinoxModel,
  KerasModel,
  LinenModel,
)


def pick(model, params) -> tuple[Adapter, object]:
  """The adapter for what the user passed as the model, and the params it runs on
  (None for the params-as-argument form, unless the model carries its own)."""
  for adapter in ADAPTERS:
    if adapter.claims(model):
      return adapter.adapt(model, params)
  raise ArgumentError(
    f"apply_fn: expected a model: a function apply_fn(variables, images) (a Flax "
    f"linen model.apply), an nnx.Module, (graphdef, state) or GraphDef, an "
    f"eqx.Module, a Keras 3 model, or gcj.Split(features, head); got "
    f"{type(model).__name__}."
  )
