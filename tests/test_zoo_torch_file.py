"""torch.save files read without torch (gradcam_jax/zoo/_torch_file.py): every dtype
a state dict holds, views with offsets and strides, scalars, the state_dict wrapper,
and a pickle that names anything else refused without running it."""

import pickle
import zipfile

import numpy as np
import pytest

import gradcam_jax as gcj
from gradcam_jax.zoo._torch_file import read_torch_file

torch = pytest.importorskip("torch")


def test_tensors_of_every_kind_read_as_torch_reads_them(tmp_path):
  g = torch.Generator().manual_seed(0)
  base = torch.randn(6, 7, generator=g)
  state = {
      "weight": torch.randn(4, 3, 3, 3, generator=g),
      "transposed": base.t(),  # strides, not contiguous
      "sliced": base[2:5, 1::3],  # an offset into a shared storage
      "half": torch.randn(5, generator=g).half(),
      "double": torch.randn(2, 2, generator=g).double(),
      "num_batches_tracked": torch.tensor(7),  # a scalar int64
      "mask": torch.tensor([True, False, True]),
      "bytes": torch.arange(4, dtype=torch.uint8),
      "ints": torch.arange(3, dtype=torch.int32),
  }
  for wrapped in (False, True):
    path = tmp_path / f"w{wrapped}.pth"
    torch.save({"state_dict": state} if wrapped else state, path)
    got = read_torch_file(path)
    assert list(got) == list(state)
    for k, v in state.items():
      want = v.numpy()
      assert got[k].dtype == want.dtype and got[k].shape == want.shape, k
      np.testing.assert_array_equal(got[k], want, err_msg=k)


class _Boom:
  def __reduce__(self):
    import os
    return (os.system, ("echo pwned > /dev/null",))


def test_a_pickle_that_names_anything_else_is_refused_unrun(tmp_path):
  path = tmp_path / "evil.pth"
  with zipfile.ZipFile(path, "w") as z:
    z.writestr("evil/data.pkl", pickle.dumps({"w": _Boom()}, protocol=2))
  with pytest.raises(gcj.WeightsError, match=r"names posix\.system"):
    read_torch_file(path)


def test_a_file_that_is_not_a_zip_is_named(tmp_path):
  path = tmp_path / "old.pth"
  path.write_bytes(b"\x80\x02legacy")
  with pytest.raises(gcj.WeightsError, match="legacy torch.save format"):
    read_torch_file(path)
