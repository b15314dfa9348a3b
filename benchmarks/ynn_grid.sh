#!/bin/bash
# The YNN-fusion grid of RESULTS.md ("XLA's YNN fusion: the grid"), as it was run: three
# XLA settings alternating process by process, in four parts (the perturbation methods
# at batch 1 only: each is a stack of forwards, and at batch 8 one process costs minutes
# on a 2-core machine).
set -eu
P=".venv/bin/python benchmarks/throughput.py --envs default noynn ynn --rounds 2 --no-closure"
R=benchmarks/results
$P --models resnet50 vgg16 --dtypes float32 bfloat16 --batches 1 8 \
   --methods forward gradcam guided_backprop guided_gradcam --json $R/ynn_grid_big.json
$P --models resnet50 vgg16 --dtypes float32 --batches 1 \
   --methods forward scorecam ablationcam --json $R/ynn_grid_perturbation.json
$P --models demo vit --dtypes float32 bfloat16 --batches 1 8 32 --json $R/ynn_grid_small.json
$P --models resnet50 --dtypes float32 --batches 32 \
   --methods forward gradcam guided_gradcam --json $R/ynn_grid_b32.json
