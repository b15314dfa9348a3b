"""Pretrained weights by name (gradcam_jax/zoo/_download.py), against a local HTTP
server on 127.0.0.1 reached through the documented GRADCAM_JAX_WEIGHTS_URL: success,
cache hit, hash mismatch, a connection dropped mid-file, the server down."""

import hashlib
import http.server
import socket
import threading

import numpy as np
import pytest

import gradcam_jax as gcj
from gradcam_jax import zoo
from gradcam_jax.zoo import _download

PATH = _download.KERAS_FILES["vgg16"].path


class Server:
  """Serves `files` ({url path: bytes}); a path in `drop` sends its Content-Length
  and half of its bytes, then closes the connection. Counts the requests."""

  def __init__(self):
    self.files, self.drop, self.requests = {}, set(), []
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
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
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
