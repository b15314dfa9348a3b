"""Guided backpropagation as a function transform.

* ``transform.py``: :func:`guided` / :func:`replace_relus`, which trace a function to
  a jaxpr and evaluate it again with every ReLU replaced;
* ``relus.py``: the guided ReLU, and which operations of a jaxpr are ReLU activations;
* ``report.py``: :func:`guided_report`, what is replaced and what is left, and why;
* ``fast_vjp.py``: faster backward rules for max pools and strided convolutions,
  applied while re-evaluating.
"""

from gradcam_jax._guided.relus import guided_relu
from gradcam_jax._guided.report import GuidedReport
from gradcam_jax._guided.report import guided_report
from gradcam_jax._guided.report import relu_count
from gradcam_jax._guided.transform import guided
from gradcam_jax._guided.transform import replace_relus

__all__ = (
  "GuidedReport",
  "guided",
  "guided_relu",
  "guided_report",
  "relu_count",
  "replace_relus",
)
