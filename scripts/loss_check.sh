#!/usr/bin/env bash
# A smoke check of the whole ImageNet-folder path: ResNet-18 at 64x64 trained for a few hundred steps on a
# generated tree whose content depends on the class (scripts/make_jpeg_tree.py), decoded by the loader.
# The training loss must fall; prints the loss of each epoch and the first/last ratio.
# Too long for a test (a few minutes on 2 cores).
# Usage: scripts/loss_check.sh [DIR] [EPOCHS]   (DIR is generated when missing: 10 classes x 50 images)
set -euo pipefail
cd "$(dirname "$0")/.."
dir=${1:-/tmp/qil-loss-check-tree}
epochs=${2:-20}
QIL=${QIL_BUILD_DIR:-build}/qil
[[ -d "$dir/train" ]] || /usr/bin/python3 scripts/make_jpeg_tree.py "$dir" --classes 10 --per-class 50
n=$(find "$dir/train" -type f | wc -l)
spe=$(( (n - 32 + 31) / 32 ))  # steps per epoch (32 images held out)
out=$(mktemp -d /tmp/qil-loss-check-XXXXXX)
trap 'rm -rf "$out"' EXIT
"$QIL" train --model resnet18 --data imagenet --data-dir "$dir" --image-size 64 --batch 32 --workers 1 \
  --epochs "$epochs" --val-size 32 --lr 0.05 --weight-decay 0.0001 --seed 1 --progress none --out "$out/run" \
  > "$out/log" 2>&1 || { cat "$out/log"; exit 1; }
awk -F, -v spe="$spe" 'NR==1 {for (i=1;i<=NF;i++) h[$i]=i; next}
         {printf "epoch %2d  steps %4d  train_loss %.4f  train_top1 %5.1f  val_top1 %5.1f  img/s %6.1f\n",
                 $h["epoch"], (NR-1)*spe, $h["train_loss"], $h["train_top1"], $h["val_top1"], $h["img_per_s"];
          if (NR==2) first=$h["train_loss"]; last=$h["train_loss"]}
         END {printf "train loss %.4f -> %.4f (x%.2f): %s\n", first, last, last/first,
                     last < 0.7*first ? "falling" : "NOT falling"; exit !(last < 0.7*first)}' "$out/run/metrics.csv"
