#!/usr/bin/env bash
# A longer kill-anywhere soak: the test case of tests/apps/test_kill_resume.cpp (SIGKILL at seeded-random
# instants, inside checkpoint writes too, resume each time, compare bit for bit with an uninterrupted run) with
# more kills, another seed, and any model and training flags. The runs and each process's log stay in --dir.
# Usage: scripts/kill_soak.sh [--kills N] [--seed S] [--slow-save MS] [--dir DIR] [-- TRAIN FLAGS...]
#   e.g. scripts/kill_soak.sh --kills 40 --seed 7 --dir /tmp/soak -- --model resnet20 --data cifar10 \
#            --train-subset 2048 --val-size 256 --test-subset 512 --stages 32,4 --stage-epochs 2 --batch 64 \
#            --checkpoint-every-steps 3 --seed 1 --threads 2 --progress none
# The flags need --checkpoint-every-steps (kills aim at its checkpoints) and --progress none; without flags, the
# CI run (LeNet on Fashion-MNIST). Needs the build (scripts/setup.sh; QIL_BUILD_DIR for another folder).
# docs/reliability.md says what is checked.
set -euo pipefail
cd "$(dirname "$0")/.."
build=${QIL_BUILD_DIR:-build}
dir=""
while (($#)); do
  case "$1" in
    --kills) export QIL_KILL_SOAK_KILLS="$2"; shift 2 ;;
    --seed) export QIL_KILL_SOAK_SEED="$2"; shift 2 ;;
    --slow-save) export QIL_KILL_SOAK_SLOW_MS="$2"; shift 2 ;;
    --dir) dir="$2"; shift 2 ;;
    --) shift; export QIL_KILL_SOAK_ARGS="$*"; break ;;
    *) echo "kill_soak.sh: unknown option '$1' (see the header of $0)" >&2; exit 2 ;;
  esac
done
[[ -x "$build/test_apps" && -x "$build/qil" ]] || { echo "kill_soak.sh: no $build/test_apps or $build/qil: build first (scripts/setup.sh)" >&2; exit 2; }
if [[ -n "$dir" ]]; then
  [[ ! -e "$dir/killed" ]] || { echo "kill_soak.sh: $dir already holds a soak; choose another --dir" >&2; exit 2; }
  export QIL_KILL_SOAK_DIR="$(realpath -m "$dir")"
fi
QIL_BINARY="$(realpath "$build/qil")" QIL_SOURCE_DIR="$PWD" "$build/test_apps" --test-case="kill anywhere*" --success=false
