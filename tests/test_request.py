"""One call of an explainer (gradcam_jax/_request.py): the (B, T) target axis carried
throughout and squeezed once, the T = 1 shortcut, the pullback over targets."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gradcam_jax as gcj
from gradcam_jax._request import Request, adapt, batch_first, over_t, over_targets
from tests.models import assert_close


def test_over_t_equals_vmap_also_for_one_entry():
  f = lambda x: {"s": jnp.sin(x).sum(-1), "x": x * 2}
  for t in (1, 3):
    xs = jax.random.normal(jax.random.key(t), (t, 4, 5))
    got, want = over_t(f, xs), jax.vmap(f)(xs)
    assert jax.tree_util.tree_map(jnp.shape, got) == jax.tree_util.tree_map(jnp.shape, want)
    jax.tree_util.tree_map(lambda a, b: np.testing.assert_array_equal(a, b), got, want)


def test_over_targets_maps_the_columns_and_none():
  targets = jnp.array([[0, 1, 2], [3, 4, 5]])
  assert over_targets(lambda t: t * 10, targets).tolist() == [[0, 30], [10, 40],
                                                             [20, 50]]
  assert over_targets(lambda t: jnp.ones(2) if t is None else t, None).shape == (1, 2)
  x = jnp.arange(24).reshape(2, 3, 4)  # (T, B, ...)
  assert batch_first(x).shape == (3, 2, 4) and batch_first((x,))[0][1, 0, 0] == 4


def _split():
  features = lambda p, x: jax.nn.relu(x * p["w"])
  head = lambda p, a: a.mean((1, 2)) @ p["v"]
  params = {"w": jnp.float32(1.5),
            "v": jnp.asarray(np.random.default_rng(0).normal(size=(3, 4)), jnp.float32)}
  return gcj.Split(features, head), params


@pytest.mark.parametrize("targets, t, squeeze", [(None, 1, True),
                                                 (jnp.array([0, 2]), 1, True),
                                                 (jnp.array([[0, 2, 3], [1, 1, 0]]), 3,
                                                  False)])
def test_targets_are_carried_as_b_t(targets, t, squeeze):
  split, params = _split()
  adapter, params, layer = adapt(split, params, None)
  x = jax.random.uniform(jax.random.key(1), (2, 4, 4, 3))
  r = Request(adapter, params, x, targets, layer)
  assert r.squeeze == squeeze
  output, got, cts, pullback = r.scores_vjp(lambda x: adapter(r.variables, x), x)
  assert got.shape == (2, t) and cts.shape == (t, 2, 4)
  (grads,) = pullback(cts)
  assert grads.shape == (t, *x.shape)
  for j in range(t):  # each target's pullback is the gradient of its score alone
    score = lambda x: jnp.take_along_axis(adapter(r.variables, x), got[:, j:j + 1], 1).sum()
    assert_close(grads[j], jax.grad(score)(x), atol=1e-6)


def test_squeezed_result_equals_the_first_column_of_the_general_one():
  split, params = _split()
  explain = gcj.guided_gradcam(split, params)
  x = jax.random.uniform(jax.random.key(2), (2, 4, 4, 3))
  one = explain(x, jnp.array([1, 3]))
  several = explain(x, jnp.array([[1, 0], [3, 2]]))
  for field in ("cam", "cam_raw", "guided", "guided_gradcam", "targets"):
    assert_close(getattr(one, field), getattr(several, field)[:, 0], atol=1e-6)
  assert several.cam.shape == (2, 2, 4, 4) and one.cam.shape == (2, 4, 4)
