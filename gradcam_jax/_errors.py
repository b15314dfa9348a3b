"""Error classes: one per failure, each message says what was expected, what came, and
the valid choices."""

from __future__ import annotations


class GradCAMError(ValueError):
  """Base class of every error gradcam-jax raises on bad input."""


class LayerNotFoundError(GradCAMError):
  """The requested target layer is not called by the model."""


class LayerShapeError(GradCAMError):
  """The target layer's output is not a spatial (B, h, w, C) activation."""


class ImageError(GradCAMError):
  """Images of the wrong rank, dtype or shape, or with non-finite values."""


class TargetError(GradCAMError):
  """Targets of the wrong shape or dtype, or out of range."""


class NoReLUError(GradCAMError):
  """`guided(fn)` found no ReLU to replace in `fn`."""


class MethodError(GradCAMError):
  """Unknown CAM method name."""


def format_choices(choices, limit: int = 40) -> str:
  """One choice per line, at most `limit` of them."""
  choices = list(choices)
  lines = [f"  {c}" for c in choices[:limit]]
  if len(choices) > limit:
    lines.append(f"  ... and {len(choices) - limit} more")
  return "\n".join(lines) if lines else "  (none)"
