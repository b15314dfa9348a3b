"""Pretrained weights by name (gradcam_jax/zoo/_download.py), against a local HTTP
server on 127.0.0.1 reached through the documented GRADCAM_JAX_WEIGHTS_URL: success,
cache hit, hash mismatch, a connection dropped mid-file, the server down."""

import hashlib
import http.server
import socket
import threading
import time

import numpy as np
import pytest

import gradcam_jax as gcj
from gradcam_jax import zoo
from gradcam_jax.zoo import _download

PATH = _download.KERAS_FILES["vgg16"].path


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
  """The table's md5 for vgg16 set to `body`'s: the published file is 528 MB."""
  monkeypatch.setitem(_download.KERAS_FILES, "vgg16",
                      _download.KerasFile(PATH, hashlib.md5(body).hexdigest()))


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
  with pytest.raises(gcj.WeightsError, match="md5 is .*expected 64373286793e3c8b2b4e32"
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


def test_only_vgg16_has_weights_by_name(server):
  with pytest.raises(gcj.ArgumentError, match="exist for \\['vgg16'\\]; got model "
                     "'resnet50'"):
    zoo.load("resnet50", weights="imagenet")


def test_the_default_home_and_url(monkeypatch):
  monkeypatch.delenv("GRADCAM_JAX_HOME", raising=False)
  monkeypatch.delenv("GRADCAM_JAX_WEIGHTS_URL", raising=False)
  assert str(_download.home()).endswith(".cache/gradcam-jax")
  assert _download.url_of("vgg16") == (
      "https://storage.googleapis.com/tensorflow/keras-applications/vgg16/"
      "vgg16_weights_tf_dim_ordering_tf_kernels.h5")


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


def test_a_download_stopped_by_sigterm_leaves_nothing(server, tmp_path):
  """Issue 23 case 13: each SIGTERM-ed attempt left a .part file in the cache."""
  import signal
  server.files[PATH] = b"z" * 100_000
  server.trickle.add(PATH)
  child = _child(server, tmp_path)
  _wait_for_part(tmp_path, child)
  child.send_signal(signal.SIGTERM)
  child.communicate(timeout=60)
  assert child.returncode == -signal.SIGTERM  # it still dies of the signal
  assert list(_cache(tmp_path).iterdir()) == []


def test_the_next_attempt_removes_what_a_killed_one_left(server, monkeypatch, tmp_path):
  """SIGKILL cannot be caught: its .part stays until the next download removes it."""
  import signal
  server.files[PATH] = b"z" * 100_000
  server.trickle.add(PATH)
  child = _child(server, tmp_path)
  _wait_for_part(tmp_path, child)
  child.send_signal(signal.SIGKILL)
  child.communicate(timeout=60)
  assert len(_parts(tmp_path)) == 1
  body = b"w" * 5000
  server.files[PATH] = body
  server.trickle.clear()
  _known(monkeypatch, body)
  assert _download.weights_file("vgg16").read_bytes() == body
  assert _parts(tmp_path) == []
