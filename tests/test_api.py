"""The public surface is pinned: names may be added deliberately, never lost."""

import gradcam_jax as gcj

CORE = {"guided_gradcam", "gradcam", "guided_backprop", "guided_relu", "guided",
        "Explanation"}


def test_core_names_exported():
  assert CORE <= set(gcj.__all__)
  for name in gcj.__all__:
    assert hasattr(gcj, name), name


def test_explanation_fields():
  assert gcj.Explanation._fields == ("cam", "cam_raw", "guided", "guided_gradcam",
                                     "logits", "targets")
