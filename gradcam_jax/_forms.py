"""The two API forms of an explainer, and ``gcj.jit`` for the closure form."""

from __future__ import annotations

import functools
from typing import Callable

import jax

__all__ = ["bind_params", "jit"]


def bind_params(explain_with: Callable, params, doc: str) -> Callable:
  """The two API forms: ``explain(params, images, targets=None)`` when `params` is
  None, else ``explain(images, targets=None)`` closing over `params`."""
  if params is None:
    explain_with.__doc__ = doc
    return explain_with

  def explain(images, targets=None):
    return explain_with(params, images, targets)

  explain.__doc__ = doc
  explain.__name__ = explain_with.__name__
  explain.params = params  # read by gradcam_jax.jit
  explain.with_params = explain_with
  return explain


def jit(explain: Callable, **jit_kwargs) -> Callable:
  """``jax.jit`` for explainers that keeps closed-over params out of the program.

  ``jax.jit(gradcam(apply_fn, params))`` works, but in jax 0.10 arrays a jitted
  function closes over are embedded in the program as constants: a VGG16 (138 M
  params) then takes seconds more to compile (see benchmarks/RESULTS.md). This
  function jits the params-as-argument form instead and binds `params` at call
  time: same signature, same results, the compile time of the fast form.
  Explainers built without params are passed to ``jax.jit`` unchanged.

  Example:
    >>> import jax, jax.numpy as jnp
    >>> import gradcam_jax as gcj
    >>> split = gcj.Split(lambda p, x: jax.nn.relu(x * p), lambda p, a: a.mean((1, 2)))
    >>> explain = gcj.jit(gcj.gradcam(split, jnp.float32(2.0)))
    >>> explain(jnp.ones((1, 4, 4, 3))).cam.shape
    (1, 4, 4)
  """
  params = getattr(explain, "params", None)
  if params is None:
    return jax.jit(explain, **jit_kwargs)
  jitted = jax.jit(explain.with_params, **jit_kwargs)

  @functools.wraps(explain)
  def explain_jitted(images, targets=None):
    return jitted(params, images, targets)

  return explain_jitted
