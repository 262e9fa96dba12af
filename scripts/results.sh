#!/usr/bin/env bash
# Runs the accuracy experiments on real data and regenerates docs/results.md from their run directories.
# Usage: scripts/results.sh [--long] [--doc-only]
#   --long      also the ResNet-20 run (about an hour and a half on 2 cores)
#   --doc-only  rebuild docs/results.md from the runs already in $QIL_RESULTS (default runs/results)
# A finished run is not repeated; delete its folder to run it again. QIL_THREADS sets --threads.
set -euo pipefail
cd "$(dirname "$0")/.."
long=0; doc_only=0
for a in "$@"; do
  case "$a" in
    --long) long=1 ;;
    --doc-only) doc_only=1 ;;
    *) echo "results.sh: unknown argument '$a' (--long, --doc-only)" >&2; exit 2 ;;
  esac
done
R=${QIL_RESULTS:-runs/results}
QIL=${QIL_BUILD_DIR:-build}/qil
DIGITS=${QIL_DIGITS:-../shared/data/mnist-digits}
mkdir -p "$R"

# run NAME ARGS...: trains into $R/NAME unless a finished run is there.
run() {
  local name=$1; shift
  if [[ -f "$R/$name/done" ]]; then return; fi
  rm -rf "${R:?}/$name"
  echo "== $name: qil train $*" >&2
  "$QIL" train --progress lines --out "$R/$name" ${QIL_THREADS:+--threads "$QIL_THREADS"} "$@" > "$R/$name.log" 2>&1
  touch "$R/$name/done"
}

if [[ $doc_only == 0 ]]; then
  [[ -x "$QIL" ]] || bash scripts/setup.sh
  run lenet-fp --model lenet --epochs 3 --lr 0.05 --augment flip
  FP=$R/lenet-fp/best.ckpt
  run lenet-w4a4 --model lenet --init "$FP" --stages 4 --epochs 1 --lr 0.005 --augment flip
  run lenet-w4a4-qonly --model lenet --init "$FP" --stages 4 --epochs 1 --lr 0.005 --freeze-weights
  run lenet-progressive --model lenet --init "$FP" --stages 4,3,2 --stage-epochs 1 --lr 0.005 --augment flip
  run lenet-w2a2-direct --model lenet --init "$FP" --stages 2 --epochs 3 --lr 0.005 --augment flip
  if [[ -d "$DIGITS" ]]; then
    run lenet-w4a4-qonly-digits --model lenet --init "$FP" --stages 4 --epochs 1 --lr 0.005 --freeze-weights \
      --targets teacher --data idx --data-dir "$DIGITS" --val-size 1000 --eval-data fashion-mnist
  fi
  if [[ $long == 1 ]]; then
    run resnet20-fp --model resnet20 --epochs 15 --lr 0.1
    run resnet20-w4a4 --model resnet20 --init "$R/resnet20-fp/best.ckpt" --stages 4 --epochs 1 --lr 0.005
  fi
fi

# The last row of a run's metrics.csv, one column by name.
col() {  # col FILE COLUMN [ROW: last|N]
  awk -F, -v c="$2" -v row="${3:-last}" 'NR==1{for(i=1;i<=NF;i++) if($i==c) k=i; next}
    {v[NR-1]=$k} END{print (row=="last") ? v[NR-1] : v[row]}' "$1"
}
line() {  # line NAME DESCRIPTION
  local m=$R/$1/metrics.csv
  [[ -f "$R/$1/done" && -f $m ]] || { echo "| $2 | (not run) | | | |"; return; }
  printf '| %s | %s | %.2f | %.2f | %s |\n' "$2" "$(col "$m" stage_name)" "$(col "$m" val_top1)" "$(col "$m" test_top1)" \
    "$(awk -F, 'NR>1{e++} END{print e}' "$m")"
}

{
  echo "# Results"
  echo
  echo "Measured by \`scripts/results.sh\` (regenerate with it; \`--long\` adds ResNet-20) on a 2-core machine."
  echo "Fashion-MNIST from Debian's \`dataset-fashion-mnist\`: 55,000 training images, a seeded hold-out of 5,000"
  echo "for validation, the 10,000 test images for the test column. Top-1 accuracy in percent, last epoch."
  echo "Each run's exact command is in \`$R/<name>/config.toml\`."
  echo
  echo "| run | final stage | val top-1 | test top-1 | epochs |"
  echo "|---|---|---|---|---|"
  line lenet-fp "LeNet, full precision, 3 epochs"
  line lenet-w4a4 "LeNet W4A4, 1 epoch from the FP checkpoint"
  line lenet-w4a4-qonly "LeNet W4A4 quantizer-only (weights and BN frozen), 1 epoch"
  line lenet-w4a4-qonly-digits "LeNet W4A4 quantizer-only, intervals trained on MNIST digits (teacher targets), tested on Fashion-MNIST"
  line lenet-progressive "LeNet progressive W4A4 → W3A3 → W2A2, 1 epoch each"
  line lenet-w2a2-direct "LeNet W2A2 direct from FP, 3 epochs"
  line resnet20-fp "ResNet-20, full precision, 15 epochs"
  line resnet20-w4a4 "ResNet-20 W4A4, 1 epoch from the FP checkpoint"
  echo
  echo "The quantized LeNet runs start from the full-precision run's \`best.ckpt\` (the first conv and the last"
  echo "linear stay full precision). The MNIST-digits run trains only the intervals and output scales, toward the"
  echo "full-precision network's own predictions (\`--targets teacher\`); its val column is digits against their digit"
  echo "labels, which this Fashion-MNIST network does not predict, and means nothing."
  echo
  if [[ -f $R/lenet-progressive/metrics.csv ]]; then
    echo "Progressive run, per stage (test top-1 after each stage's epoch):"
    echo
    echo '```'
    awk -F, 'NR==1{for(i=1;i<=NF;i++){if($i=="stage_name")s=i; if($i=="test_top1")t=i}; next} {printf "%s: %.2f%%\n", $s, $t}' \
      "$R/lenet-progressive/metrics.csv"
    echo '```'
    echo
    echo "Learned intervals at the end of the progressive run (\`qil inspect\`):"
    echo
    echo '```'
    "$QIL" inspect "$R/lenet-progressive" | tail -n +2
    echo '```'
  fi
  if [[ -f docs/performance.md ]]; then
    echo
    echo "Training speed against PyTorch on the same machine and thread count: see \`docs/performance.md\`."
  fi
} > docs/results.md
echo "wrote docs/results.md" >&2
