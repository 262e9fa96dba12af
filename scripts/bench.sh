#!/usr/bin/env bash
# Training-step throughput of qil against PyTorch on this machine: for each configuration, runs `qil bench`
# and the PyTorch reference (scripts/torch_ref.py, Debian's python3-torch; a comparison tool, never a dependency)
# INTERLEAVED — ours, torch, ours, torch, ... — on the same thread count, and prints a Markdown table of the
# median images/s and the ratio ours/PyTorch. Interleaving spreads load from other processes over both sides.
#
# Usage: scripts/bench.sh [--heavy] [--bf16] [--quantizers] [--runs N] [--threads T] [--qil PATH]
#                         [--torch-ref PATH] [--out FILE]
#   --heavy       also ResNet-18 @224 batch 32 (FP32 and QIL W4A4); takes several minutes
#   --bf16        also one qil --precision bf16 run and one PyTorch autocast-bf16 run per configuration (one run
#                 each: context, not a ratio; without AVX512_BF16 qil's bf16 is its slower exact emulation)
#   --quantizers  instead: qil alone, ResNet-20 @32 batch 128, FP32 and W4A4 with each quantizer
#                 (qil, lsq, pact, dorefa) interleaved, step time relative to FP32
#   --runs N      runs per side (default 3)
set -euo pipefail

here="$(cd "$(dirname "$0")/.." && pwd)"
qil="$here/build/qil"
python="${PYTHON:-/usr/bin/python3}"  # Debian's interpreter, where python3-torch lives
torch_ref="${TORCH_REF:-$here/scripts/torch_ref.py}"
runs=3
threads=2
heavy=0
bf16=0
quantizers=0
out=""
while [[ $# -gt 0 ]]; do
  case "$1" in
    --heavy) heavy=1 ;;
    --bf16) bf16=1 ;;
    --quantizers) quantizers=1 ;;
    --runs) runs="$2"; shift ;;
    --threads) threads="$2"; shift ;;
    --qil) qil="$2"; shift ;;
    --torch-ref) torch_ref="$2"; shift ;;
    --out) out="$2"; shift ;;
    -h|--help) sed -n '2,14p' "$0"; exit 0 ;;
    *) echo "bench.sh: unknown argument $1" >&2; exit 2 ;;
  esac
  shift
done
[[ -x "$qil" ]] || { echo "bench.sh: $qil not built" >&2; exit 1; }
# qil alone: the cost of each quantizer in a training step, as images/s relative to the FP32 step, all
# configurations interleaved round by round (FP32, qil, lsq, pact, dorefa, FP32, ...).
bench_quantizers() {
  local names=(fp32 qil lsq pact dorefa) n i r
  declare -A got
  for ((i = 0; i < runs; ++i)); do
    for n in "${names[@]}"; do
      local q=(--quant 4 --quantizer "$n")
      [[ $n == fp32 ]] && q=(--quant 32)
      r=$("$qil" bench --model resnet20 --batch 128 --image-size 32 --num-classes 10 --steps 6 --warmup 2 \
            --repeat 1 --threads "$threads" "${q[@]}" | rate)
      got[$n]+="$r "
      echo "quantizers: run $((i + 1)) $n $r img/s" >&2
    done
  done
  local fp; fp=$(echo "${got[fp32]}" | median)
  local t="| ResNet-20 @32 b128 | img/s (median) | step time / FP32 | runs |"$'\n'"|---|---:|---:|---|"$'\n'
  for n in "${names[@]}"; do
    local m; m=$(echo "${got[$n]}" | median)
    local rel; rel=$(awk -v a="$fp" -v b="$m" 'BEGIN {printf "%.2f", a / b}')
    local label="W4A4 $n"; [[ $n == fp32 ]] && label="FP32"
    t+="| $label | $m | $rel | ${got[$n]}|"$'\n'
  done
  echo "$t"
}

[[ $quantizers == 1 || -f "$torch_ref" ]] || { echo "bench.sh: PyTorch reference $torch_ref not found" >&2; exit 1; }

# name | model | batch | res | classes | steps | bits (32 = full precision)
configs=(
  "resnet20 FP32|resnet20|128|32|10|6|32"
  "resnet20 QIL W4A4|resnet20|128|32|10|6|4"
)
if [[ $heavy == 1 ]]; then
  configs+=(
    "resnet18@224 FP32|resnet18|32|224|1000|3|32"
    "resnet18@224 QIL W4A4|resnet18|32|224|1000|3|4"
  )
fi

# The number after the last "img/s=" on the last line of a command's output.
rate() { tail -n 1 | sed -n 's/.*img\/s=\([0-9.]*\).*/\1/p'; }
median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{a[NR]=$1} END {if (NR % 2) print a[(NR+1)/2]; else printf "%.2f\n", (a[NR/2]+a[NR/2+1])/2}'; }

export OMP_NUM_THREADS="$threads"
if [[ $quantizers == 1 ]]; then
  report="Threads: $threads; $runs interleaved runs each; $(nproc --all) CPUs: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'); ISA: $(grep -o -w -E 'avx512[a-z_0-9]*|avx2|fma|amx[a-z_]*' /proc/cpuinfo | sort -u | tr '\n' ' ')"$'\n'
  report+="Load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"$'\n\n'"$(bench_quantizers)"
  report+=$'\n'"Load average at end: $(cut -d' ' -f1-3 /proc/loadavg)"
  echo "$report"
  if [[ -n $out ]]; then echo "$report" >"$out"; fi
  exit 0
fi
busy="$(ps -eo pcpu=,comm= | awk -v me="$$" '$1 > 20 {print $2}' | sort | uniq -c | tr '\n' ' ')"
table="| configuration | qil img/s (median) | PyTorch img/s (median) | qil / PyTorch | runs (qil; PyTorch) |"$'\n'
table+="|---|---:|---:|---:|---|"$'\n'
bf16_rows=""
for c in "${configs[@]}"; do
  IFS='|' read -r name model batch res classes steps bits <<<"$c"
  ours=() theirs=()
  qargs=(); targs=()
  if [[ $bits != 32 ]]; then qargs=(--quant "$bits"); targs=(--qil "$bits"); fi
  for ((i = 0; i < runs; ++i)); do
    r=$("$qil" bench --model "$model" --batch "$batch" --image-size "$res" --num-classes "$classes" \
          --steps "$steps" --warmup 2 --repeat 1 --threads "$threads" "${qargs[@]}" | rate)
    ours+=("$r")
    r=$("$python" "$torch_ref" "$model" "$batch" "$res" "$steps" --repeat 1 --threads "$threads" "${targs[@]}" | rate)
    theirs+=("$r")
    echo "$name: run $((i + 1)): qil ${ours[-1]} img/s, PyTorch ${theirs[-1]} img/s" >&2
  done
  mo=$(echo "${ours[*]}" | median)
  mt=$(echo "${theirs[*]}" | median)
  ratio=$(awk -v a="$mo" -v b="$mt" 'BEGIN {printf "%.2f", a / b}')
  table+="| $name | $mo | $mt | $ratio | ${ours[*]}; ${theirs[*]} |"$'\n'
  if [[ $bf16 == 1 ]]; then
    q=$("$qil" bench --model "$model" --batch "$batch" --image-size "$res" --num-classes "$classes" \
          --steps "$steps" --warmup 2 --repeat 1 --threads "$threads" --precision bf16 "${qargs[@]}" | rate)
    r=$("$python" "$torch_ref" "$model" "$batch" "$res" "$steps" --repeat 1 --threads "$threads" --bf16 "${targs[@]}" | rate)
    bf16_rows+="| $name | $q | $r |"$'\n'
  fi
done

report="Threads: $threads; $runs interleaved runs per side; $(nproc --all) CPUs: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"$'\n'
report+="Busy processes at start (>20% CPU): ${busy:-none}"$'\n\n'"$table"
if [[ -n $bf16_rows ]]; then
  report+=$'\n'"| configuration | qil --precision bf16 img/s | PyTorch autocast bf16 img/s (one run each, context only) |"$'\n'"|---|---:|---:|"$'\n'"$bf16_rows"
fi
echo "$report"
if [[ -n $out ]]; then echo "$report" >"$out"; fi
