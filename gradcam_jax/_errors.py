"""Error classes: one per failure, each message says what was expected, what came, and
the valid choices."""

from __future__ import annotations


class GradCAMError(ValueError):
  """Base class of every error gradcam-jax raises on bad input."""


class LayerNotFoundError(GradCAMError):
  """The requested target layer is not called by the model."""


class LayerShapeError(GradCAMError):
  """The target layer's output is not a spatial (B, h, w, C) activation (or one of
  the inputs' spatial rank: (B, w, C) for signals, (B, d, h, w, C) for volumes)."""


class ImageError(GradCAMError):
  """Images of the wrong rank, dtype or shape, or with non-finite values."""


class TargetError(GradCAMError):
  """Targets of the wrong shape or dtype, or out of range."""


class NoReLUError(GradCAMError):
  """`guided(fn)` found no ReLU to replace in `fn`."""


class MethodError(GradCAMError):
  """Unknown CAM method name."""


class ArgumentError(GradCAMError):
  """An explainer's or transform's argument is out of its valid range."""


class LayerSpecError(GradCAMError, TypeError):
  """A `layer` argument of a type or form no adapter understands."""


class ModelError(GradCAMError):
  """The model itself failed to run (a missing rng, argument, variable collection
  or parameter), or ran differently from the run it was traced with."""


class WeightsError(GradCAMError):
  """A weights file that is missing, of an unknown format, or not this model's."""


class UnsupportedError(GradCAMError, NotImplementedError):
  """A model construct gradcam-jax cannot transform (named in the message)."""


def model_failure(err: Exception, images, inference_mode: str) -> Exception:
  """The model's own failure on its first (shape-only) run, as the error to raise:
  a :class:`ModelError` naming the missing piece where the model's error says what
  is missing (an rng, an argument, a variable collection, a parameter), else an
  :class:`ImageError` (a model that cannot run on these images). `inference_mode`
  says, in the model's framework's idiom, how to run it in inference mode with what
  its call needs bound (the adapter's ``inference_mode``)."""
  import flax.errors as fe

  said = f"the model raised {type(err).__name__}: {err}"
  if isinstance(err, fe.InvalidRngError):
    return ModelError(
      f"the model needs a random key to run ({said}). Explain it in inference mode: "
      f"{inference_mode}."
    )
  if isinstance(err, fe.ScopeCollectionNotFound):
    return ModelError(
      f"the variables lack a collection the model reads ({said}). Pass every "
      "collection init or training returned, e.g. {'params': ..., 'batch_stats': "
      "...}, not the params alone."
    )
  if isinstance(err, (fe.ModifyScopeVariableError, fe.ImmutableVariableError)):
    return ModelError(
      f"the model tries to update its variables, as BatchNorm does in training mode "
      f"({said}). Explain it in inference mode: {inference_mode}."
    )
  # (a ScopeParamShapeError is left to the end: a parameter of another shape than the
  # input implies is most often images of the wrong shape, e.g. 5 channels for 3)
  if isinstance(err, (fe.ScopeParamNotFoundError, fe.ScopeVariableNotFoundError)):
    return ModelError(
      f"the params do not match the model ({said}): pass the "
      "variables this model was initialised or trained with."
    )
  if isinstance(err, TypeError) and "required" in str(err) and "argument" in str(err):
    return ModelError(
      f"the model's call needs an argument the explainer does not pass ({said}). "
      f"Run it in inference mode with its arguments bound: {inference_mode}."
    )
  one = (
    " A rank-3 array is read as a batch of (B, L, C) signals; if it is one image "
    "(H, W, C), add a batch axis: images[None]."
    if images.ndim == 3
    else ""
  )
  return ImageError(
    f"the model could not run on images of shape {tuple(images.shape)} "
    f"{images.dtype} (expected a batch in the layout the model takes: (B, H, W, C) "
    f"for image_layout='NHWC', (B, C, H, W) for 'NCHW'; (B, L, C) signals for "
    f"'NWC', (B, D, H, W, C) volumes for 'NDHWC'); {said}{one}"
  )


def check_count(name: str, value, *, allow_none: bool = False) -> None:
  """`value` must be a whole number >= 1 (or None where `allow_none`)."""
  if value is None and allow_none:
    return
  if isinstance(value, bool) or not isinstance(value, (int,)) or value < 1:
    expected = "a whole number >= 1" + (" or None" if allow_none else "")
    raise ArgumentError(f"{name}: expected {expected}; got {value!r}.")


def format_choices(choices, limit: int | None = 40) -> str:
  """One choice per line, at most `limit` of them (None: all)."""
  choices = list(choices)
  limit = len(choices) if limit is None else limit
  lines = [f"  {c}" for c in choices[:limit]]
  if len(choices) > limit:
    lines.append(f"  ... and {len(choices) - limit} more")
  return "\n".join(lines) if lines else "  (none)"
