"""guided_report (gradcam_jax/_guided/report.py): what the rewrite replaces, what it leaves, and why."""


import jax
import jax.numpy as jnp

import gradcam_jax as gcj
from tests import models


def test_guided_report_counts_what_is_left():
  x = jnp.ones(3)
  leaky_and_relu6 = lambda x: jax.nn.relu6(x) + jnp.maximum(x, 0.1 * x)  # noqa: E731
  report = gcj.guided_report(leaky_and_relu6, x)
  # relu6 is left whole, as the peers leave ReLU6 modules; the leaky max too; said why
  assert report == gcj.GuidedReport(0, {"max": 1, "relu6": 1})
  assert str(report).splitlines() == [
      "guided replaces 0 ReLU(s); left unguided: 1 max, 1 relu6",
      "  max: a max against something other than 0 (leaky ReLU, a cap)",
      "  relu6: jax.nn.relu6, also inside hard_sigmoid and hard_swish: a capped ReLU, "
      "which Captum and pytorch-grad-cam do not guide either"]
  # written by hand, a capped ReLU has its max guided and its cap left
  hand = gcj.guided_report(lambda x: jnp.minimum(jnp.maximum(x, 0.0), 6.0), x)
  assert hand == gcj.GuidedReport(1, {"min": 1})
  model, variables = models.init(models.VggNet)
  clean = gcj.guided_report(model.apply, variables, models.images(1))
  assert clean.replaced == 3 and clean.left == {}  # conv1, conv2, fc1
