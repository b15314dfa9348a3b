#!/bin/bash
# The GPU benchmarks as one short script, for a lent GPU machine (jax with CUDA and
# torch already installed there; Captum and pytorch-grad-cam carried as wheels in .whl,
# see RESULTS.md "On a GPU"). Each part has its own time limit, most wanted first, and
# every part writes its JSON as it goes, so a part stopped at its limit keeps its rows.
#
#   OUT=/tmp/gpu bash benchmarks/gpu.sh
set -u
OUT=${OUT:-benchmarks/results/gpu}
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
if [ -d .whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
python3 -c "import jax, flax, torch, gradcam_jax; print('jax', jax.__version__, 'flax',
flax.__version__, 'torch', torch.__version__, jax.devices())" || exit 1
timeout "${T_F32:-240}" python3 benchmarks/throughput.py --dtypes float32 \
  --batches 64 256 --rounds 3 --json "$OUT/throughput_gpu_float32.json"
timeout "${T_PEERS:-150}" python3 benchmarks/peers.py --torch-device cuda --batch 64 \
  --methods gradcam guided_gradcam --rounds 1 --scorecam-models \
  --json "$OUT/peers_gpu.json"
timeout "${T_BF16:-120}" python3 benchmarks/throughput.py --dtypes bfloat16 \
  --batches 64 256 --rounds 3 --json "$OUT/throughput_gpu_bfloat16.json"
exit 0
