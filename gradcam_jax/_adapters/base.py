"""The adapter protocol (:class:`Adapter`) and the call bookkeeping every adapter
shares: numbering the calls of each layer within one trace (:class:`CallCounter`), and
applying edits at their calls, each reached exactly once (:class:`EditsAt`)."""

from __future__ import annotations

from typing import Any, Callable, Hashable, Protocol, Sequence, Tuple

from gradcam_jax._edits import Edit
from gradcam_jax._errors import ModelError, UnsupportedError
from gradcam_jax._layers import LayerInfo, LayerRef, first_array
from gradcam_jax._loops import LoopEdit, mark

__all__ = [
  "BIAS_TYPES",
  "Adapter",
  "CallCounter",
  "EditsAt",
  "LayerEdits",
  "has_bias",
  "zero_input",
]

# FullGrad's layers (pytorch-grad-cam's Conv2d and BatchNorm2d) as the frameworks name
# their classes: linen's and NNX's Conv and BatchNorm, Keras' ConvND and
# BatchNormalization (Equinox finds its own by class: equinox.py)
BIAS_TYPES = frozenset(
  {
    "Conv",
    "BatchNorm",
    "Conv1D",
    "Conv2D",
    "Conv3D",
    "DepthwiseConv1D",
    "DepthwiseConv2D",
    "BatchNormalization",
  }
)

# what run_with_edits takes: each resolved layer (its call index set where the model
# calls it several times) with the edit of its activation
LayerEdits = Sequence[Tuple[LayerRef, Edit]]


class Adapter(Protocol):
  """What the explainers run instead of the user's model object: one class per
  framework implements it (``linen.py``, ``nnx.py``, ``equinox.py``, ``keras.py``,
  ``split.py``), and :func:`gradcam_jax._adapters.pick` chooses by :meth:`claims`.

  Contracts every adapter keeps (``tests/test_adapter_contract.py``): a layer called
  more than once must be named with its call index; the user's model and variables
  are never modified, also when running fails; a model that cannot run raises the
  model's own error.
  """

  @property
  def inference_mode(self) -> str:
    """How to run this framework's model in inference mode with what its call needs
    bound, in the framework's idiom (said when the model fails to run)."""
    ...

  @staticmethod
  def claims(model: Any) -> bool:
    """Whether this adapter takes `model` (what the user passed as ``apply_fn``)."""
    ...

  @classmethod
  def adapt(cls, model: Any, params: Any) -> tuple["Adapter", Any]:
    """The adapter of `model` and the params it runs on (the model's own when it
    carries them and `params` is None)."""
    ...

  def __call__(self, variables: Any, x: Any) -> Any:
    """Run the model."""
    ...

  def variables(self, params: Any) -> Any:
    """The tree the model runs on, from what the user passed as params."""
    ...

  def parse_layer(self, layer: Any) -> tuple["Adapter", Any]:
    """The layer argument in this framework's terms: ``(adapter, LayerRef | list |
    None)`` (an adapter that learns its layers from the argument returns a new one)."""
    ...

  def list_layers(self, variables: Any, x: Any) -> tuple[list[LayerInfo], Any]:
    """Every activation the model computes, each call of a layer numbered, and the
    output's shape (traced with ``jax.eval_shape``, not run)."""
    ...

  def run_with_edits(self, variables: Any, x: Any, edits: LayerEdits) -> Any:
    """The model with each edit applied to the output of its layer's call; an edit
    ``with_zero`` also gets the layer's output for an all-zero input."""
    ...

  def bias_layers(self, variables: Any, x: Any) -> tuple["Adapter", list[LayerInfo]]:
    """Every call of a convolution with a bias or a batch normalisation in the model
    (FullGrad's layers, :data:`BIAS_TYPES`, :func:`has_bias`), in call order, and the
    adapter that reaches them."""
    ...


def has_bias(module) -> bool:
  """Whether a layer FullGrad counts adds a constant: a batch normalisation always
  (its ``beta - mean * gamma / sqrt(var + eps)``), a convolution unless it was built
  without a bias (``use_bias=False`` in every framework: its term is zero, so it is
  not run)."""
  if "BatchNorm" in type(module).__name__:
    return True
  return getattr(module, "use_bias", True) is not False


def zero_input(layer: Callable, args: tuple, kwargs: dict, batched: bool = True):
  """A thunk running ``layer`` on zeros shaped like its first argument (one example
  of a batch when `batched`), the other arguments as they were: the layer's constant
  term, for edits ``with_zero`` (None for a layer called without arguments)."""
  import jax.numpy as jnp

  if not args or not hasattr(args[0], "shape"):
    return None
  x = args[0]
  shape = (1, *x.shape[1:]) if batched and x.ndim else x.shape
  return lambda: layer(jnp.zeros(shape, x.dtype), *args[1:], **kwargs)


def _on_first(fn, out):
  """``fn(out)``, or `out` with ``fn`` applied to its first item where it is a tuple
  led by an array (:func:`~gradcam_jax._layers.first_array`)."""
  if first_array(out) is out:
    return fn(out)
  return (fn(out[0]), *out[1:])


class CallCounter:
  """Numbers the calls of each layer within one trace: 0 for its first call."""

  def __init__(self):
    self._calls: dict = {}

  def __call__(self, key: Hashable) -> int:
    index = self._calls[key] = self._calls.get(key, -1) + 1
    return index


class EditsAt:
  """The edits of one run, keyed by (layer key, call index).

  Call it with each layer output the model produces (``at(key, out)``): it numbers
  the call and returns the edited output where an edit is wanted. :meth:`check`
  then raises unless every edit was applied exactly once (a model whose calls
  differ between the trace that listed its layers and this run).

  A layer inside a loop over a stack of layers (``nnx.scan``) is called once for
  all iterations; its call index names the iteration. There ``at(key, out,
  in_loop=True)`` raises :class:`~gradcam_jax._loops.LoopEdit` unless `marking`, and
  with `marking` leaves a mark :func:`gradcam_jax._loops.run` applies the edits at.

  Args:
    edits: ``(LayerRef, Edit)`` pairs.
    key: the key of a LayerRef in the adapter's terms (its path by default).
    marking: mark edits inside loops (the run goes through ``_loops.run``).
  """

  def __init__(
    self,
    edits: LayerEdits,
    key: Callable[[LayerRef], Hashable] = lambda ref: ref.path,
    marking: bool = False,
  ):
    self.marking = marking
    self.layers = [ref for ref, _ in edits]
    self.wanted = {(key(ref), ref.call or 0): edit for ref, edit in edits}
    self.keys = {k for k, _ in self.wanted}
    self._count = CallCounter()
    self._applied: list = []

  def __call__(
    self,
    key: Hashable,
    out,
    lane: Any = None,
    in_loop: bool = False,
    zero: Callable | None = None,
  ):
    """`out` of this call of `key`, edited if wanted (`lane`: the example of an
    unbatched activation, for models run under ``vmap``; see :meth:`Edit.lane`;
    `in_loop`: the call stands for every iteration of a loop; `zero`: runs the layer
    again on an all-zero input, for edits ``with_zero``)."""
    if in_loop:
      return self._in_loop(key, out)
    index = self._count(key)
    edit = self.wanted.get((key, index))
    if edit is None:
      return out
    self._applied.append((key, index))
    if edit.with_zero:
      if zero is None:
        raise UnsupportedError(
          f"layer {key!r}: this edit needs the layer's output for a zero input, and "
          "the layer is not one the adapter can run by itself."
        )
      a0 = first_array(zero())
      edit = edit.bind_zero(a0 if lane is None else a0[None])
    return _on_first(edit if lane is None else edit.lane(lane), out)

  def _in_loop(self, key: Any, out):
    wanted = sorted(
      ((i, edit) for (k, i), edit in self.wanted.items() if k == key), key=lambda w: w[0]
    )
    if not wanted:
      return out
    if not self.marking:
      raise LoopEdit(key)
    self._applied.extend((key, i) for i, _ in wanted if (key, i) not in self._applied)
    path = key[0] if isinstance(key[0], tuple) else key
    name = "/".join(map(str, path))
    return _on_first(lambda a: mark(a, wanted, name), out)

  def check(self) -> None:
    if sorted(map(repr, self._applied)) != sorted(map(repr, self.wanted)):
      raise ModelError(
        f"layers {[str(l) for l in self.layers]}: reached {len(self._applied)} "
        f"edit(s) of {len(self.wanted)} while running the model; expected each "
        "once. The model calls its layers differently from the run that listed "
        "them (a data-dependent branch, or a different batch)."
      )
