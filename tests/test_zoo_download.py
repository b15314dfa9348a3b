"""Pretrained weights by name (gradcam_jax/zoo/_download.py), against a local HTTP
server on 127.0.0.1 reached through the documented GRADCAM_JAX_WEIGHTS_URL: success,
cache hit, hash mismatch, a connection dropped mid-file, the server down."""

import hashlib
import http.server
from pathlib import Path
import socket
import threading
import time

import numpy as np
import pytest

import gradcam_jax as gcj
from gradcam_jax import zoo
from gradcam_jax.zoo import _download

PATH = _download.PUBLISHED["vgg16"].path


class Server:
  """Serves `files` ({url path: bytes}); a path in `drop` sends its Content-Length
  and half of its bytes, then closes the connection; a path in `trickle` sends one
  byte every 20 ms; `length` replaces the Content-Length header. Counts the
  requests."""

  def __init__(self):
    self.files, self.drop, self.requests = {}, set(), []
    self.trickle, self.length = set(), None
    server = self

    class Handler(http.server.BaseHTTPRequestHandler):
      def do_GET(self):
        path = self.path.lstrip("/")
        server.requests.append(path)
        if path not in server.files:
          self.send_error(404)
          return
        body = server.files[path]
        self.send_response(200)
        self.send_header("Content-Length", server.length or str(len(body)))
        self.end_headers()
        if path in server.trickle:
          for i in range(len(body)):
            try:
              self.wfile.write(body[i:i + 1])
              self.wfile.flush()
            except OSError:
              return  # the client gave up
            time.sleep(0.02)
          return
        if path in server.drop:
          self.wfile.write(body[:len(body) // 2])
          self.wfile.flush()
          self.connection.shutdown(socket.SHUT_RDWR)
          return
        self.wfile.write(body)

      def log_message(self, *args):
        pass

    self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/"
    self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
    self.thread.start()

  def close(self):
    self.httpd.shutdown()
    self.httpd.server_close()


@pytest.fixture
def server(monkeypatch, tmp_path):
  s = Server()
  monkeypatch.setenv("GRADCAM_JAX_WEIGHTS_URL", s.url)
  monkeypatch.setenv("GRADCAM_JAX_HOME", str(tmp_path / "home"))
  yield s
  s.close()


def _cache(tmp_path):
  return tmp_path / "home" / "weights"


def _known(monkeypatch, body: bytes):
  """The table's md5 for vgg16 set to `body`'s: the published file is 553 MB."""
  monkeypatch.setitem(_download.PUBLISHED, "vgg16", _download.PUBLISHED["vgg16"]._replace(
      check="md5:" + hashlib.md5(body).hexdigest(), size=len(body)))


def test_success_then_a_cache_hit(server, monkeypatch, tmp_path, keras_vgg16_h5):
  """The Keras-written VGG16 file served under Keras' published path: zoo.load
  downloads it once, then reads the cache without asking the server again."""
  body = keras_vgg16_h5[1].read_bytes()
  server.files[PATH] = body
  _known(monkeypatch, body)
  zm = zoo.load("vgg16", weights="imagenet")
  cached = _cache(tmp_path) / "vgg16_weights_tf_dim_ordering_tf_kernels.h5"
  assert cached.read_bytes() == body and sorted(p.name for p in cached.parent.iterdir()) \
      == [cached.name]
  assert server.requests == [PATH]
  again = zoo.load("vgg16", weights="imagenet")
  assert server.requests == [PATH]  # a cache hit: nothing fetched
  x = np.zeros((1, 32, 32, 3), np.float32)
  np.testing.assert_array_equal(again.apply_fn(again.variables, x),
                                zm.apply_fn(zm.variables, x))
  assert zm.layer == "block5_conv3"


def test_a_small_file_downloads_and_is_checked(server, monkeypatch, tmp_path):
  body = np.random.default_rng(0).bytes(300_000)
  server.files[PATH] = body
  _known(monkeypatch, body)
  path = _download.weights_file("vgg16")
  assert path.read_bytes() == body and path.parent == _cache(tmp_path)


def test_a_hash_mismatch_keeps_nothing(server, tmp_path):
  server.files[PATH] = b"not the published file" * 1000
  with pytest.raises(gcj.WeightsError, match="md5 [0-9a-f]+, expected md5:64373286793e3c8b2b4e32"
                     "19cbf3544b: not the published file; nothing was kept"):
    zoo.load("vgg16", weights="imagenet")
  assert list(_cache(tmp_path).iterdir()) == []


def test_a_connection_dropped_mid_file_keeps_nothing(server, monkeypatch, tmp_path):
  body = np.random.default_rng(1).bytes(2_000_000)
  server.files[PATH] = body
  server.drop.add(PATH)
  _known(monkeypatch, body)
  with pytest.raises(gcj.WeightsError, match="could not download .*"
                     + PATH.replace(".", r"\.")):
    zoo.load("vgg16", weights="imagenet")
  assert list(_cache(tmp_path).iterdir()) == []


def test_server_down_names_the_url_and_where_to_put_the_file(server, tmp_path):
  url = server.url + PATH
  server.close()
  with pytest.raises(gcj.WeightsError) as err:
    zoo.load("vgg16", weights="imagenet")
  said = str(err.value)
  assert f"could not download {url}" in said
  assert str(_cache(tmp_path) / "vgg16_weights_tf_dim_ordering_tf_kernels.h5") in said
  assert list(_cache(tmp_path).iterdir()) == []


def test_a_cached_file_that_is_not_the_published_one_is_left_alone(server, tmp_path):
  cache = _cache(tmp_path)
  cache.mkdir(parents=True)
  (cache / "vgg16_weights_tf_dim_ordering_tf_kernels.h5").write_bytes(b"mine")
  with pytest.raises(gcj.WeightsError, match="not the published file: delete it"):
    zoo.load("vgg16", weights="imagenet")
  assert (cache / "vgg16_weights_tf_dim_ordering_tf_kernels.h5").read_bytes() == b"mine"
  assert server.requests == []


def test_published_weights_exist_for_vgg16_and_resnet50(server):
  with pytest.raises(gcj.ArgumentError, match="exist for \\['resnet50', 'vgg16'\\]; got "
                     "model 'demo'"):
    _download.weights_file("demo")


def _published(monkeypatch, name, body):
  """The table's sha256 prefix for `name` set to `body`'s (as torchvision checks)."""
  monkeypatch.setitem(_download.PUBLISHED, name, _download.PUBLISHED[name]._replace(
      check="sha256:" + hashlib.sha256(body).hexdigest()[:8], size=len(body)))


def test_a_sha256_prefix_mismatch_keeps_nothing(server, tmp_path):
  server.files[_download.PUBLISHED["resnet50"].path] = b"not resnet" * 100
  with pytest.raises(gcj.WeightsError, match="sha256 [0-9a-f]+, expected sha256:0676ba61: "
                     "not the published file; nothing was kept"):
    zoo.load("resnet50", weights="imagenet")
  assert list(_cache(tmp_path).iterdir()) == []


@pytest.fixture(scope="module")
def resnet50_pth(tmp_path_factory):
  """A torchvision-layout ResNet-50 (random weights) saved with torch.save, as
  torchvision publishes its files."""
  torch = pytest.importorskip("torch")
  from tests.torch_reference import torch_resnet50
  torch.manual_seed(3)
  model = torch_resnet50().eval()
  path = tmp_path_factory.mktemp("r50") / "resnet50-0676ba61.pth"
  torch.save(model.state_dict(), path)
  return model, path


@pytest.mark.slow
def test_resnet50_imagenet_downloads_and_reads_without_torch(
    server, monkeypatch, tmp_path, resnet50_pth):
  """Issue 24: torchvision's published file, downloaded and checked as torchvision
  checks it (the sha256 prefix in its name), read without torch: the logits of the
  PyTorch model it came from."""
  import sys
  torch = pytest.importorskip("torch")
  model, path = resnet50_pth
  body = path.read_bytes()
  server.files[_download.PUBLISHED["resnet50"].path] = body
  _published(monkeypatch, "resnet50", body)
  monkeypatch.setitem(sys.modules, "torch", None)  # the reader must not need it
  zm = zoo.load("resnet50", weights="imagenet")
  monkeypatch.undo()
  assert "resnet50-0676ba61.pth" in zm.about
  x = np.random.default_rng(3).normal(size=(2, 64, 64, 3)).astype(np.float32)
  with torch.no_grad():
    want = model(torch.from_numpy(x.transpose(0, 3, 1, 2))).numpy()
  np.testing.assert_allclose(np.asarray(zm.apply_fn(zm.variables, x)), want, rtol=1e-4,
                             atol=1e-4 * np.abs(want).max())


@pytest.mark.slow
@pytest.mark.parametrize("name", ["resnet50", "vgg16"])
def test_the_command_takes_weights_imagenet(server, monkeypatch, tmp_path, name,
                                            resnet50_pth, keras_vgg16_h5):
  """Issue 24: `gradcam-jax explain --model NAME --weights imagenet` downloads the
  published file into the cache (a local server here), checks it and explains."""
  import json
  import os
  import subprocess
  import sys
  from tests import job_helpers as jh
  path = resnet50_pth[1] if name == "resnet50" else keras_vgg16_h5[1]
  body = path.read_bytes()
  known = _download.PUBLISHED[name]
  server.files[known.path] = body
  check = ("md5:" + hashlib.md5(body).hexdigest() if name == "vgg16"
           else "sha256:" + hashlib.sha256(body).hexdigest()[:8])
  jh.write_png(tmp_path / "in" / "a.png", jh.scenes(1)[0])
  code = (  # the published table as the test serves it, then the command
      "import sys; from gradcam_jax.zoo import _download as d; "
      f"d.PUBLISHED[{name!r}] = d.PUBLISHED[{name!r}]._replace(check={check!r}); "
      "from gradcam_jax.cli import main; sys.exit(main(sys.argv[1:]))")
  env = dict(jh.CHILD_ENV, GRADCAM_JAX_WEIGHTS_URL=server.url,
             GRADCAM_JAX_HOME=str(tmp_path / "home"))
  said = subprocess.run([sys.executable, "-c", code, "explain", str(tmp_path / "in"),
                         "--model", name, "--weights", "imagenet", "--out",
                         str(tmp_path / "out"), "--batch-size", "1"],
                        env=env, capture_output=True, text=True, timeout=600)
  assert said.returncode == 0, said.stderr[-3000:]
  assert "gradcam-jax: downloading" in said.stderr and "100%" in said.stderr
  assert (tmp_path / "home" / "weights" / Path(known.path).name).read_bytes() == body
  (record,) = [json.loads(l) for l in (tmp_path / "out" / "index.jsonl").read_text()
               .splitlines()]
  assert record["status"] == "ok" and record["settings"]["weights"].startswith("sha256:")
  assert os.path.basename(known.path) in said.stdout  # the start-up line names it


def test_weights_imagenet_is_a_usage_error_where_nothing_is_published(tmp_path, capsys):
  from tests.conftest import explain
  (tmp_path / "in").mkdir()
  code, _, err = explain(tmp_path / "in", "--model", "demo", "--weights", "imagenet",
                         "--out", tmp_path / "o", capsys=capsys)
  assert code == 2 and "published weights are downloaded for vgg16, resnet50" in err
  code, _, err = explain(tmp_path / "in", "--model", "resnet50", "--out", tmp_path / "o",
                         capsys=capsys)
  assert code == 2 and "--weights imagenet (downloads torchvision's ResNet-50" in err
  assert "103 MB from https://download.pytorch.org/models/resnet50-0676ba61.pth" in err


def test_the_default_home_and_url(monkeypatch):
  monkeypatch.delenv("GRADCAM_JAX_HOME", raising=False)
  monkeypatch.delenv("GRADCAM_JAX_WEIGHTS_URL", raising=False)
  assert str(_download.home()).endswith(".cache/gradcam-jax")
  assert _download.url_of("vgg16") == (
      "https://storage.googleapis.com/tensorflow/keras-applications/vgg16/"
      "vgg16_weights_tf_dim_ordering_tf_kernels.h5")
  assert _download.url_of("resnet50") == (
      "https://download.pytorch.org/models/resnet50-0676ba61.pth")


def _parts(tmp_path):
  return sorted(p.name for p in _cache(tmp_path).glob("*.part"))


def test_a_length_that_is_not_a_number_is_a_weights_error(server, monkeypatch, tmp_path):
  """Issue 23 case 13: a non-numeric Content-Length was a bare ValueError."""
  body = b"x" * 1000
  server.files[PATH], server.length = body, "lots"
  _known(monkeypatch, body)
  with pytest.raises(gcj.WeightsError, match="Content-Length 'lots', not a number"):
    zoo.load("vgg16", weights="imagenet")
  assert list(_cache(tmp_path).iterdir()) == []


def test_a_trickling_server_is_given_up_on(server, monkeypatch, tmp_path):
  """Issue 23 case 13: one byte at a time never hit a deadline. Now a minimum rate
  over a window (made short here) gives up, and keeps nothing."""
  body = b"y" * 10_000
  server.files[PATH] = body
  server.trickle.add(PATH)
  _known(monkeypatch, body)
  monkeypatch.setattr(_download, "MIN_RATE", 1000)
  monkeypatch.setattr(_download, "RATE_WINDOW", 0.5)
  start = time.monotonic()
  with pytest.raises(gcj.WeightsError, match=r"bytes/s over the last 1 s \(at least "
                     r"1000 are needed\).*given up"):
    zoo.load("vgg16", weights="imagenet")
  assert time.monotonic() - start < 10
  assert list(_cache(tmp_path).iterdir()) == []


def test_the_download_shows_its_progress(server, monkeypatch, tmp_path, capsys):
  body = np.random.default_rng(2).bytes(300_000)
  server.files[PATH] = body
  _known(monkeypatch, body)
  _download.weights_file("vgg16")
  err = capsys.readouterr().err
  assert "gradcam-jax: downloading" in err and "100% 0.3/0.3 MB" in err, err


def _child(server, tmp_path):
  import os
  import subprocess
  import sys
  env = dict(os.environ, GRADCAM_JAX_WEIGHTS_URL=server.url,
             GRADCAM_JAX_HOME=str(tmp_path / "home"))
  return subprocess.Popen(
      [sys.executable, "-c",
       "from gradcam_jax.zoo import _download; _download.weights_file('vgg16')"],
      env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _wait_for_part(tmp_path, child):
  end = time.monotonic() + 60
  while not _parts(tmp_path) and time.monotonic() < end and child.poll() is None:
    time.sleep(0.02)
  assert _parts(tmp_path), child.communicate()


def _download_stopped_by(signum, server, tmp_path):
  """A child process downloading from a trickling server, sent `signum` once its
  temporary file exists; the child, once it has ended."""
  server.files[PATH] = b"z" * 100_000
  server.trickle.add(PATH)
  child = _child(server, tmp_path)
  _wait_for_part(tmp_path, child)
  child.send_signal(signum)
  child.communicate(timeout=60)
  return child


def test_a_download_stopped_by_sigterm_leaves_nothing(server, tmp_path):
  """Issue 23 case 13: each SIGTERM-ed attempt left a .part file in the cache."""
  import signal
  child = _download_stopped_by(signal.SIGTERM, server, tmp_path)
  assert child.returncode == -signal.SIGTERM  # it still dies of the signal
  assert list(_cache(tmp_path).iterdir()) == []


def test_the_next_attempt_removes_what_a_killed_one_left(server, monkeypatch, tmp_path):
  """SIGKILL cannot be caught: its .part stays until the next download removes it."""
  import signal
  _download_stopped_by(signal.SIGKILL, server, tmp_path)
  assert len(_parts(tmp_path)) == 1
  body = b"w" * 5000
  server.files[PATH] = body
  server.trickle.clear()
  _known(monkeypatch, body)
  assert _download.weights_file("vgg16").read_bytes() == body
  assert _parts(tmp_path) == []
