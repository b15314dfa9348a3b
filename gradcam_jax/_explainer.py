"""The explainer as a value (:class:`Explainer`, both API forms) and ``gcj.jit``."""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax

from gradcam_jax._errors import ArgumentError

__all__ = ["Explainer", "as_explainer", "jit"]


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True, eq=False)
class Explainer:
  """What every factory returns: an explainer and the params it is bound to.

  Called as ``explain(images, targets=None)`` when it carries `params`, or as
  ``explain(params, images, targets=None)`` (the params-as-argument form) when
  `params` is None. Wrappers (``noise_tunnel``, ``augment``, ``gcj.jit``) take and
  return Explainers, keeping the form.

  It is a pytree whose leaves are the params: passed as an argument to a jitted
  function (``jax.jit(lambda e, x: e(x))(explain, x)``), its params are arguments of
  the compiled program, and ``jax.tree_util.tree_map`` reaches them (to cast them to
  bfloat16, say). ``jax.jit(explain)`` itself sees a function that closes over them
  (see :func:`jit`).

  Attributes:
    with_params: the params-as-argument form, ``(params, images, targets=None,
      **options) -> Explanation``.
    params: the bound params, or None.
    name: what it computes (e.g. ``"guided_gradcam"``).
    takes_key: whether it takes a PRNG key, ``explain(..., key=key)`` (a
      ``noise_tunnel`` anywhere inside it).
  """

  with_params: Callable = dataclasses.field(metadata={"static": True})
  params: Any = None
  name: str = dataclasses.field(default="explain", metadata={"static": True})
  takes_key: bool = dataclasses.field(default=False, metadata={"static": True})

  def __call__(self, *args, **kwargs):
    if "key" in kwargs and not self.takes_key:
      raise ArgumentError(
        f"{self.name}: got key=, but this explainer draws nothing at random (only "
        "gcj.noise_tunnel, and wrappers around one, take a key)."
      )
    if self.params is None:
      return self.with_params(*args, **kwargs)
    return self.with_params(self.params, *args, **kwargs)

  def __repr__(self) -> str:
    leaves = jax.tree_util.tree_leaves(self.params)
    size = sum(getattr(leaf, "size", 1) for leaf in leaves)
    bound = (
      "none (params-as-argument form)"
      if self.params is None
      else (f"{len(leaves)} arrays, {size:,} values")
    )
    return f"Explainer({self.name!r}, params: {bound})"

  def wrap(
    self, with_params: Callable, name: str, takes_key: bool | None = None
  ) -> "Explainer":
    """Another explainer bound to the same params (or to none, like this one); it
    takes a key where this one does, unless `takes_key` says."""
    return Explainer(
      with_params, self.params, name, self.takes_key if takes_key is None else takes_key
    )

  def with_key(self, key) -> Callable:
    """The params-as-argument form with `key` passed where this explainer takes one
    (wrappers call the explainer inside them through it)."""
    if not self.takes_key:
      return self.with_params
    return lambda *args, **kwargs: self.with_params(*args, key=key, **kwargs)


def as_explainer(explain: Callable) -> Explainer:
  """`explain` as an :class:`Explainer`: itself; the Explainer a ``jax.jit`` (or
  another ``functools.wraps`` wrapper) was made from, keeping its form; or any other
  function taken as ``explain(images, targets=None)``."""
  if isinstance(explain, Explainer):
    return explain
  inner = getattr(explain, "__wrapped__", None)
  if isinstance(inner, Explainer):
    if inner.params is None:
      return Explainer(explain, None, inner.name, inner.takes_key)
    return Explainer(
      lambda params, *args, **kwargs: explain(*args, **kwargs),
      inner.params,
      inner.name,
      inner.takes_key,
    )
  return Explainer(
    lambda params, *args, **kwargs: explain(*args, **kwargs),
    (),
    getattr(explain, "__name__", "explain"),
  )


def jit(explain: Callable, **jit_kwargs) -> Explainer:
  """``jax.jit`` for explainers that keeps bound params out of the program.

  ``jax.jit(gradcam(apply_fn, params))`` works, but in jax 0.10 arrays a jitted
  function closes over are embedded in the program as constants: a VGG16 (138 M
  params) then takes seconds more to compile (see benchmarks/RESULTS.md). This
  function jits the params-as-argument form instead and binds the params at call
  time: same signature, same results, the compile time of the fast form. Explainers
  without params are jitted as they are.

  Example:
    >>> import jax, jax.numpy as jnp
    >>> import gradcam_jax as gcj
    >>> split = gcj.Split(lambda p, x: jax.nn.relu(x * p), lambda p, a: a.mean((1, 2)))
    >>> explain = gcj.jit(gcj.gradcam(split, jnp.float32(2.0)))
    >>> explain(jnp.ones((1, 4, 4, 3))).cam.shape
    (1, 4, 4)
  """
  explain = as_explainer(explain)
  return explain.wrap(jax.jit(explain.with_params, **jit_kwargs), explain.name)
