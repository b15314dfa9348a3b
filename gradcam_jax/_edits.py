"""Edits at a layer, the explainers' vocabulary for every adapter
(``gradcam_jax._adapters``): ``adapter.run_with_edits(variables, x, [(layer, edit)])``
runs the model with ``edit(A) -> A'`` in place of the target layer's activation ``A``.

Explainers read ``A`` and ``dy/dA`` through :func:`tap` (a zero-cost identity whose
cotangent for a dummy input is ``A``), so activations inside lifted transforms such as
``nn.remat`` never leak out of their trace.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import jax

__all__ = ["Edit", "replace", "tap", "tap_add"]


class Edit(NamedTuple):
  """An edit of a layer's activation: ``fn(A, *operands)``, elementwise over the
  batch (example b of the result depends on example b of `A` and of each operand).

  Models written for one example (Equinox) are run under ``vmap``; there the edit is
  applied lane by lane with :meth:`lane`, each lane taking its own operand rows.
  """

  fn: Callable
  operands: tuple = ()
  # fn(A, A0, *operands): A0 is the layer's output for an all-zero input (batch 1),
  # its constant term (a convolution's bias; a batch normalisation's
  # beta - mean * gamma / sqrt(var + eps) in inference), which FullGrad weighs
  with_zero: bool = False

  def __call__(self, a):
    return self.fn(a, *self.operands)

  def bind_zero(self, a0) -> "Edit":
    """This edit with the layer's output on zeros `a0` bound as its second argument."""
    fn = self.fn
    return Edit(lambda a, *ops: fn(a, a0, *ops), self.operands)

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
