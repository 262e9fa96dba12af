#!/usr/bin/env bash
# The main job: installs what is missing, builds, then trains a LeNet-class CNN on Fashion-MNIST in full
# precision and quantizes it progressively with QIL (W4A4 -> W3A3 -> W2A2), printing each stage's accuracy
# and the interval every quantized layer learned. About 5-8 minutes of training on 2 cores.
# Extra arguments go to `qil train` (e.g. --threads 2, --out DIR, --model resnet20 --stage-epochs 30,5,5,5).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
build=${QIL_BUILD_DIR:-build}
out=${QIL_DEMO_OUT:-runs/demo}
rm -rf "$out"
"$build/qil" train --model lenet --data fashion-mnist --stages 32,4,3,2 --stage-epochs 3,1,1,1 \
  --stage-lr 0.05,0.005,0.005,0.005 --augment flip --out "$out" "$@"
echo
echo "Run directory: $out  (metrics.csv, intervals.jsonl, checkpoints)."
echo "See what each layer learned: $build/qil inspect $out --html $out/report.html"
