"""``gcj.Split``: a model given as two pure functions, split at the target layer."""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax

from gradcam_jax._adapters.base import LayerEdits
from gradcam_jax._errors import LayerNotFoundError, UnsupportedError
from gradcam_jax._layers import LayerInfo, parse_layers

__all__ = ["Split"]


class Split(NamedTuple):
  """A model given as two pure functions split at the target layer.

  Attributes:
    features: ``features(params, x) -> A`` with ``A`` of shape (B, h, w, C) (for
      signals (B, w, C), for volumes (B, d, h, w, C); channels first with a
      channels-first ``image_layout``).
    head: ``head(params, A) -> output`` (logits of shape (B, num_classes) usually).

  Example:
    >>> import jax.numpy as jnp, gradcam_jax as gcj
    >>> split = gcj.Split(features=lambda p, x: x * p, head=lambda p, a: a.mean((1, 2)))
    >>> split.features(2.0, jnp.ones((1, 4, 4, 3))).shape
    (1, 4, 4, 3)
  """

  features: Callable[[Any, jax.Array], jax.Array]
  head: Callable[[Any, jax.Array], Any]

  @property
  def inference_mode(self) -> str:
    return (
      "features(params, x) and head(params, a) take the params and one array: bind "
      "anything else inside them (functools.partial, deterministic=True)"
    )

  @staticmethod
  def claims(model) -> bool:
    return isinstance(model, Split)

  @classmethod
  def adapt(cls, model, params):
    return model, params

  def __call__(self, params, x):
    return self.head(params, self.features(params, x))

  def variables(self, params):
    return params

  def parse_layer(self, layer):
    return self, parse_layers(layer)

  def list_layers(self, variables, x):
    """One layer: the output of ``features`` (path ``("features",)``)."""
    a = jax.eval_shape(self.features, variables, x)
    out = jax.eval_shape(self.head, variables, a)
    return [LayerInfo.of_output(("features",), "__call__", 0, a, "Split.features")], out

  def bias_layers(self, variables, x):
    raise UnsupportedError(
      "a Split model is two functions whose layers gradcam-jax cannot see; FullGrad "
      "needs every convolution and batch normalisation: pass the model itself "
      "(linen, NNX, Equinox or Keras)."
    )

  def run_with_edits(self, variables, x, edits: LayerEdits):
    if len(edits) != 1:
      raise LayerNotFoundError(
        f"a Split model has one layer (its features); got {len(edits)}."
      )
    ((_, edit),) = edits
    return self.head(variables, edit(self.features(variables, x)))
