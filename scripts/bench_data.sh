#!/usr/bin/env bash
# Input-pipeline measurements for docs/data-speed.md, on an ImageNet-style JPEG tree
# (make one with scripts/make_jpeg_tree.py DIR --classes 10 --per-class 50).
#   1. `qil bench-data` against PIL + torchvision (scripts/bench_pil.py) on the same files and thread
#      count, interleaved (ours, PIL, ours, PIL, ...), with medians and the ratio ours / PIL.
#   2. ResNet-18 training at 224 fed by the loader (`qil train ... --workers W`) against the same steps on
#      in-memory synthetic data (`qil bench`), interleaved: whether the decode threads keep up.
# Usage: scripts/bench_data.sh DIR [--workers "1 2"] [--rounds 3] [--batches 10] [--train-workers 1]
#                                  [--train-subset 160] [--no-loader] [--no-train]
# The machine's load changes the absolute numbers; the medians of interleaved runs are what to compare.
set -euo pipefail
cd "$(dirname "$0")/.."
[[ $# -ge 1 ]] || { sed -n 2,10p "$0" >&2; exit 2; }
dir=$1; shift
workers="1 2"; rounds=3; batches=10; train_workers=1; train_subset=160; do_loader=1; do_train=1
while [[ $# -gt 0 ]]; do
  case "$1" in
    --workers) workers=$2; shift 2 ;;
    --rounds) rounds=$2; shift 2 ;;
    --batches) batches=$2; shift 2 ;;
    --train-workers) train_workers=$2; shift 2 ;;
    --train-subset) train_subset=$2; shift 2 ;;
    --no-loader) do_loader=0; shift ;;
    --no-train) do_train=0; shift ;;
    *) echo "bench_data.sh: unknown argument '$1'" >&2; exit 2 ;;
  esac
done
QIL=${QIL_BUILD_DIR:-build}/qil
PY=/usr/bin/python3
[[ -d "$dir/train" ]] || { echo "bench_data.sh: $dir/train: no such folder" >&2; exit 2; }

last_value() { tail -n 1 | sed -n 's/^img\/s=//p'; }
median() { tr ' ' '\n' | grep . | sort -g | awk '{v[NR]=$1} END {print v[int((NR+1)/2)]}'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.2f", a / b}'; }
load() { cut -d' ' -f1-3 /proc/loadavg; }

if [[ $do_loader == 1 ]]; then
  for w in $workers; do
    ours=""; pil=""
    for r in $(seq "$rounds"); do
      o=$("$QIL" bench-data "$dir" --workers "$w" --batch 32 --batches "$batches" --repeat 1 --train | last_value)
      p=$("$PY" scripts/bench_pil.py "$dir" --workers "$w" --batch 32 --batches "$batches" --repeat 1 | last_value)
      echo "workers $w round $r: qil $o img/s, PIL $p img/s (load $(load))"
      ours+=" $o"; pil+=" $p"
    done
    mo=$(echo "$ours" | median); mp=$(echo "$pil" | median)
    echo "workers $w: median qil $mo img/s ($(ratio "$mo" "$w") per thread), median PIL $mp img/s" \
         "($(ratio "$mp" "$w") per thread), qil/PIL = $(ratio "$mo" "$mp")"
  done
fi

if [[ $do_train == 1 ]]; then
  tmp=$(mktemp -d /tmp/qil-bench-train-XXXXXX)
  trap 'rm -rf "$tmp"' EXIT
  classes=$(find "$dir/train" -mindepth 1 -maxdepth 1 -type d | wc -l)
  fed=""; synth=""
  for r in $(seq "$rounds"); do
    "$QIL" train --model resnet18 --data imagenet --data-dir "$dir" --image-size 224 --batch 32 \
      --workers "$train_workers" --epochs 1 --train-subset "$train_subset" --val-size 32 --progress lines \
      --out "$tmp/run$r" > "$tmp/run$r.log" 2>&1
    f=$(awk -F, 'NR==1 {for (i=1;i<=NF;i++) if ($i=="img_per_s") k=i} NR==2 {print $k}' "$tmp/run$r/metrics.csv")
    s=$("$QIL" bench --model resnet18 --batch 32 --image-size 224 --num-classes "$classes" --steps 4 --warmup 1 --repeat 1 \
        | sed -n 's/.*img\/s=//p')
    echo "round $r: train (loader, $train_workers decode threads) $f img/s, bench (synthetic) $s img/s (load $(load))"
    fed+=" $f"; synth+=" $s"
  done
  mf=$(echo "$fed" | median); ms=$(echo "$synth" | median)
  echo "ResNet-18 @224 batch 32: median train $mf img/s, median bench $ms img/s, train/bench = $(ratio "$mf" "$ms")"
fi
