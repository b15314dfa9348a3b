"""gradcam-jax vs Captum, pytorch-grad-cam and torch-cam, side by side: Grad-CAM,
guided backprop, Guided Grad-CAM and Score-CAM (and with --methods the pixel methods,
FullGrad, FinerCAM, ShapleyCAM, FEM, KPCA-CAM, CAM and Smooth Grad-CAM++) on the same
architecture, batch and input, each (implementation, model, method) in its own process,
the processes interleaved round by round.

Needs the optional peers (never dependencies of the library). Captum alone:
``pip install torch==2.13.0 captum`` (the CPU torch pin on this disk). With
pytorch-grad-cam, which needs torchvision (PyPI's torchvision does not import beside
that pin), in a separate venv: ``pip install torch==2.14.1 torchvision==0.29.1 grad-cam
captum`` then ``pip install -e .``. A peer that is not installed is skipped.

    python benchmarks/peers.py                       # batch 8, ResNet-50 and VGG16
    python benchmarks/peers.py --models resnet50 --rounds 3
    python benchmarks/peers.py --torch-device cuda --batch 64   # on a GPU machine
    PYTHONPATH=/tmp/pgc python benchmarks/peers.py --methods fullgrad finercam \
        shapleycam fem kpcacam cam smoothgradcam++ --scorecam-models

pytorch-grad-cam can also be installed beside the test venv without torchvision
(``pip install --target /tmp/pgc --no-deps grad-cam==1.5.7 ttach``, as ``.ci/run``
does): it is then imported with a torchvision stand-in, which none of its CAM methods
reach (``tests.torch_reference.import_pytorch_grad_cam``).

Each worker makes one warm-up (compile) call, then times `--reps` calls and reports
the median. Memory, read from the kernel (``/proc/self/status``): `peak_rss_gb` is the
process's peak over everything (runtime, weights, compile, calls); `working_gb` is the
peak during the timed calls above the RSS just before them, i.e. the memory one call
needs beyond what the process already holds; `above_model_gb` is the peak during the
timed calls above the RSS once the model and input were loaded (compiled program,
activations and whatever the allocator keeps, together).

What each peer runs (their documented usage): Captum's ``LayerGradCam`` (with
``relu_attributions``), ``GuidedBackprop`` and ``GuidedGradCam`` on the batch;
pytorch-grad-cam's ``GradCAM`` and ``ScoreCAM`` on the batch, and its
``GuidedBackpropReLUModel``, which explains one image per call, on each image in turn
(Guided Grad-CAM = ``GradCAM`` on the batch, guided backprop per image, product), as in
its README. Score-CAM scores every channel of the layer on both sides (pytorch-grad-cam
has no top-N option), one image, in chunks of 16 masked images.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from _common import _xla_setting, measured, run_worker, status_gb, versions, write_json  # noqa: E402

METHODS = ("gradcam", "guided_backprop", "guided_gradcam")
# pixel-space methods both we and Captum have (pytorch-grad-cam has none of them):
# --methods saliency input_x_gradient deconvnet integrated_gradients
PIXEL = ("saliency", "input_x_gradient", "deconvnet", "integrated_gradients")
IG_STEPS = 32
# CAM methods we and pytorch-grad-cam both have beyond Grad-CAM (issue 21):
# --methods fullgrad finercam shapleycam fem kpcacam randomcam
PGC_ONLY = ("fullgrad", "finercam", "shapleycam", "fem", "kpcacam", "randomcam")
# ... and torch-cam: --methods cam smoothgradcam++ (its SS-CAM and IS-CAM score every
# channel of the layer num_samples times: far beyond a CPU run on these models)
TORCHCAM_ONLY = ("cam", "smoothgradcam++")
IMPLS = {"gradcam-jax": "gradcam_jax", "captum": "captum",
         "pytorch-grad-cam": "pytorch_grad_cam", "torch-cam": "torchcam"}
# Score-CAM with every channel costs one forward per channel per image (512 for
# VGG16, 2048 for ResNet-50): one image, and not Captum (it has no Score-CAM).
SCORECAM_BATCH = 1


def _inputs(batch, layout):
  import numpy as np
  x = np.random.default_rng(0).normal(size=(batch, 224, 224, 3)).astype(np.float32)
  return x if layout == "nhwc" else np.ascontiguousarray(x.transpose(0, 3, 1, 2))


def _ours(model_name, method, batch):
  import jax
  import gradcam_jax as gcj
  from gradcam_jax import zoo
  m = zoo.load(model_name, random_init=True)
  layer = "layer4" if model_name == "resnet50" else "features_28"
  build = {"gradcam": lambda: gcj.gradcam(m.apply_fn, layer=layer),
           "guided_backprop": lambda: gcj.guided_backprop(m.apply_fn),
           "guided_gradcam": lambda: gcj.guided_gradcam(m.apply_fn, layer=layer),
           "scorecam": lambda: gcj.cam(m.apply_fn, method="scorecam", layer=layer,
                                       batch_size=16),
           "saliency": lambda: gcj.saliency(m.apply_fn),
           "input_x_gradient": lambda: gcj.input_x_gradient(m.apply_fn),
           "deconvnet": lambda: gcj.deconvnet(m.apply_fn),
           "integrated_gradients": lambda: gcj.integrated_gradients(
             m.apply_fn, steps=IG_STEPS),
           "fullgrad": lambda: gcj.cam(m.apply_fn, method="fullgrad")}.get(method)
  if build is None:  # every other CAM method at the layer
    build = lambda: gcj.cam(m.apply_fn, method=method, layer=layer)  # noqa: E731
  explain = jax.jit(build())
  x = jax.numpy.asarray(_inputs(batch, "nhwc"))
  t = jax.numpy.arange(batch) % 1000
  if gcj.ALL_METHODS.get(method) is not None and gcj.ALL_METHODS[method].keyed:
    key = jax.random.key(0)
    return lambda: jax.block_until_ready(explain(m.variables, x, t, key=key))
  return lambda: jax.block_until_ready(explain(m.variables, x, t))


def _torch_device():
  return os.environ.get("PEERS_TORCH_DEVICE", "cpu")


def _synced(fn):
  """`fn` followed by a wait for the GPU, so that a timed call includes its kernels."""
  import torch
  if _torch_device() == "cpu":
    return fn

  def call():
    out = fn()
    torch.cuda.synchronize()
    return out
  return call


def _torch_net(model_name):
  import torch
  sys.path.insert(0, os.path.dirname(HERE))
  from tests.torch_reference import torch_resnet50, torch_vgg16
  torch.set_num_threads(os.cpu_count() or 1)
  net = (torch_resnet50() if model_name == "resnet50" else torch_vgg16()).eval()
  net = net.to(_torch_device())
  for mod in net.modules():  # guided backprop in both peers needs non-inplace ReLUs
    if isinstance(mod, torch.nn.ReLU):
      mod.inplace = False
  layer = net.layer4 if model_name == "resnet50" else net.features[28]
  return net, layer


def _captum(model_name, method, batch):
  import torch
  from captum import attr
  net, layer = _torch_net(model_name)
  explainer = {"gradcam": lambda: attr.LayerGradCam(net, layer),
               "guided_backprop": lambda: attr.GuidedBackprop(net),
               "guided_gradcam": lambda: attr.GuidedGradCam(net, layer),
               "saliency": lambda: attr.Saliency(net),
               "input_x_gradient": lambda: attr.InputXGradient(net),
               "deconvnet": lambda: attr.Deconvolution(net),
               "integrated_gradients": lambda: attr.IntegratedGradients(net)}[method]()
  x = torch.from_numpy(_inputs(batch, "nchw")).to(_torch_device())
  t = (torch.arange(batch) % 1000).to(_torch_device())
  kwargs = {"gradcam": {"relu_attributions": True}, "saliency": {"abs": True},
            "integrated_gradients": {"n_steps": IG_STEPS}}.get(method, {})
  return _synced(lambda: explainer.attribute(x.clone().requires_grad_(), target=t,
                                             **kwargs).detach())


def _pytorch_grad_cam(model_name, method, batch):
  import numpy as np
  import torch
  from tests.torch_reference import import_pytorch_grad_cam
  pgc, _, model_targets = import_pytorch_grad_cam()  # with a torchvision stand-in
  GradCAM, GuidedBackpropReLUModel, ScoreCAM = (
    pgc.GradCAM, pgc.GuidedBackpropReLUModel, pgc.ScoreCAM)
  net, layer = _torch_net(model_name)
  x = torch.from_numpy(_inputs(batch, "nchw")).to(_torch_device())
  targets = [model_targets.ClassifierOutputTarget(i % 1000) for i in range(batch)]
  if method in PGC_ONLY:
    if method == "fullgrad":
      cam = pgc.FullGrad(model=net, target_layers=[])
    else:
      cls = {"finercam": pgc.FinerCAM, "shapleycam": pgc.ShapleyCAM, "fem": pgc.FEM,
             "kpcacam": pgc.KPCA_CAM, "randomcam": pgc.RandomCAM}[method]
      cam = cls(model=net, target_layers=[layer])
    if method == "finercam":  # its own targets: the predicted class against the nearest
      return lambda: cam(input_tensor=x)
    return lambda: cam(input_tensor=x, targets=targets)
  if method == "scorecam":
    cam = ScoreCAM(model=net, target_layers=[layer])
    cam.batch_size = 16
    return lambda: cam(input_tensor=x, targets=targets)
  gradcam = GradCAM(model=net, target_layers=[layer])
  guided_bp = GuidedBackpropReLUModel(model=net, device=_torch_device())

  def guided_backprop():
    return np.stack([guided_bp(x[i:i + 1], target_category=i % 1000)
                     for i in range(batch)])

  def guided_gradcam():
    cams = gradcam(input_tensor=x, targets=targets)
    return cams[..., None] * guided_backprop()

  return {"gradcam": lambda: gradcam(input_tensor=x, targets=targets),
          "guided_backprop": guided_backprop, "guided_gradcam": guided_gradcam}[method]


def _torch_cam(model_name, method, batch):
  import torch
  from torchcam import methods
  net, layer = _torch_net(model_name)
  name = "layer4" if model_name == "resnet50" else "features.28"
  x = torch.from_numpy(_inputs(batch, "nchw")).to(_torch_device())
  t = [i % 1000 for i in range(batch)]
  if method == "cam":
    extractor = methods.CAM(net, target_layer=name, fc_layer="fc")
  else:
    extractor = methods.SmoothGradCAMpp(net, target_layer=name)

  def call():
    with torch.no_grad() if method == "cam" else torch.enable_grad():
      scores = net(x)
    return extractor(class_idx=t, scores=scores)

  return _synced(call)


def worker(impl, model_name, method, batch, reps) -> dict:
  build = {"gradcam-jax": _ours, "captum": _captum, "pytorch-grad-cam": _pytorch_grad_cam,
           "torch-cam": _torch_cam}
  run = build[impl.split("[")[0]](model_name, method, batch)
  loaded = status_gb("VmRSS")
  first = measured(run)
  calls = [measured(run) for _ in range(reps)]
  return {"impl": impl, "model": model_name, "method": method, "batch": batch,
          "median_s": statistics.median(c.seconds for c in calls),
          "first_call_s": first.seconds,
          "page_faults": statistics.median(c.faults for c in calls),
          "working_gb": max(c.peak_gb for c in calls),
          # each call's hwm_gb carries the mark of the call before it
          "above_model_gb": max([status_gb("VmHWM")] + [c.hwm_gb for c in calls[1:]])
                            - loaded,
          "peak_rss_gb": max(first.hwm_gb, *(c.hwm_gb for c in calls))}


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--models", nargs="+", default=["resnet50", "vgg16"])
  parser.add_argument("--methods", nargs="+", default=list(METHODS))
  parser.add_argument("--batch", type=int, default=8)
  parser.add_argument("--reps", type=int, default=3)
  parser.add_argument("--rounds", type=int, default=2)
  parser.add_argument("--scorecam-models", nargs="*", default=["vgg16"],
                      help="models for the all-channel Score-CAM rows (batch 1, one rep)")
  parser.add_argument("--torch-device", default="cpu", choices=["cpu", "cuda"],
                      help="where the peers' torch models run (gradcam-jax runs on JAX's "
                           "default device)")
  parser.add_argument("--ours-settings", nargs="+", choices=list(_xla_setting.SETTINGS),
                      help="run gradcam-jax under each of these XLA settings, side by "
                           "side (default: under this process's XLA_FLAGS only)")
  parser.add_argument("--json", default="benchmarks/results/peers.json")
  parser.add_argument("--worker", nargs=3, metavar=("IMPL", "MODEL", "METHOD"))
  args = parser.parse_args()
  if args.worker:
    print(json.dumps(worker(*args.worker, args.batch, args.reps)))
    return
  import importlib.util
  peers = [i for i, module in IMPLS.items()
           if i != "gradcam-jax" and importlib.util.find_spec(module)]
  if not peers:
    raise SystemExit("peers.py found no peer: pip install torch==2.13.0 captum "
                     "(see this script's docstring for pytorch-grad-cam)")
  ours = ([f"gradcam-jax[{name}]" for name in args.ours_settings] if args.ours_settings
          else ["gradcam-jax"])
  impls = ours + peers
  env = {f"gradcam-jax[{name}]": {"XLA_FLAGS": flags}
         for name, flags in _xla_setting.SETTINGS.items()}
  tasks = [(m, method, args.batch, args.reps) for m in args.models for method in args.methods]
  tasks += [(m, "scorecam", SCORECAM_BATCH, 1) for m in args.scorecam_models]
  os.environ["PEERS_TORCH_DEVICE"] = args.torch_device  # inherited by the workers
  rows = []
  for r in range(args.rounds):
    for model_name, method, batch, reps in tasks:
      for impl in impls:
        if not _implements(impl, method, model_name):
          continue
        row = run_worker(__file__, ["--worker", impl, model_name, method,
                                    "--batch", batch, "--reps", reps], env.get(impl),
                         keep_going=True)
        row.update(round=r, impl=impl, model=model_name, method=method, batch=batch)
        rows.append(row)
        if "error" in row:
          print(f"round {r} {model_name:9s} {method:16s} b{batch:<3d} {impl:16s} "
                f"FAILED: {row['error'][-600:]}", flush=True)
          continue
        print(f"round {r} {model_name:9s} {method:16s} b{batch:<3d} {impl:16s} "
              f"{row['median_s']:8.3f} s  above model {row['above_model_gb']:5.2f} GB  "
              f"working {row['working_gb']:5.2f} GB  peak {row['peak_rss_gb']:5.2f} GB  "
              f"faults {row['page_faults']:8.0f}  first {row['first_call_s']:6.2f} s",
              flush=True)
  summary = []
  for model_name, method, batch, _ in tasks:
    mine = [x for x in rows if x["model"] == model_name and x["method"] == method
            and "error" not in x]
    if not any(x["impl"] in ours for x in mine):
      continue
    entry = {"model": model_name, "method": method, "batch": batch}
    for impl in impls:
      got = [x for x in mine if x["impl"] == impl]
      if got:
        entry[impl] = {"median_s": statistics.median(x["median_s"] for x in got),
                       "above_model_gb": max(x["above_model_gb"] for x in got),
                       "peak_rss_gb": max(x["peak_rss_gb"] for x in got)}
    # speed-up of each of ours over each peer: the peer's time / ours
    entry["speedup"] = {f"{mine_} vs {peer}": entry[peer]["median_s"] / entry[mine_]["median_s"]
                        for mine_ in ours for peer in peers
                        if mine_ in entry and peer in entry}
    summary.append(entry)
    print(f"{model_name:9s} {method:16s} b{batch:<3d} " + "; ".join(
        f"{impl} {entry[impl]['median_s']:.3f} s" for impl in impls if impl in entry)
        + "; " + "; ".join(f"{k} {x:.2f}x" for k, x in entry["speedup"].items()))
  write_json(args.json, {"date": time.strftime("%Y-%m-%d"), "versions": versions(),
                         "peer_versions": _peer_versions(impls),
                         "torch_device": args.torch_device, "xla_flags":
                         os.environ.get("XLA_FLAGS", ""), "batch": args.batch,
                         "reps": args.reps, "rounds": args.rounds, "rows": rows,
                         "summary": summary})


def _implements(impl, method, model_name) -> bool:
  """Whether `impl` has `method` (ours has every one) for this model: the original CAM
  reads an fc layer after a global pool, which VGG16's head is not."""
  if method == "cam" and model_name == "vgg16":
    return False
  if impl == "captum":
    return method in METHODS + PIXEL
  if impl == "pytorch-grad-cam":
    return method in METHODS + PGC_ONLY + ("scorecam",)
  if impl == "torch-cam":
    return method in TORCHCAM_ONLY
  return True


def _peer_versions(impls) -> dict:
  import importlib.metadata as md
  names = {"torch": "torch", "captum": "captum", "pytorch-grad-cam": "grad-cam",
           "torch-cam": "torchcam", "torchvision": "torchvision"}
  out = {}
  for key, dist in names.items():
    try:
      out[key] = md.version(dist)
    except md.PackageNotFoundError:
      pass
  return out


if __name__ == "__main__":
  main()
