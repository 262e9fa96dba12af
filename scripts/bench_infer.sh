#!/usr/bin/env bash
# Inference throughput on this machine: for each model and batch, qil FP32, qil W4A4 fake-quantized (f32),
# qil W4A4 integer (--int8) — all `qil bench --infer` — and PyTorch FP32 in eval mode (scripts/torch_infer.py,
# Debian's python3-torch; a comparison tool, never a dependency), INTERLEAVED round by round (qil FP32, W4A4,
# int8, PyTorch, qil FP32, ...) so that load from other processes spreads over every column. Prints a Markdown
# table of the median images/s, the CPU, its vector flags, the load average at start and end, and the oneDNN
# implementations the int8 layers ran on (ONEDNN_VERBOSE).
#
# Usage: scripts/bench_infer.sh [--runs N] [--threads T] [--quick] [--qil PATH] [--out FILE]
#   --runs N     interleaved rounds (default 3; the median is reported)
#   --threads T  compute threads for both sides (default 2)
#   --quick      ResNet-20 @32 only (skips ResNet-18 @224, which takes minutes)
set -euo pipefail

here="$(cd "$(dirname "$0")/.." && pwd)"
qil="$here/build/qil"
python="${PYTHON:-/usr/bin/python3}"  # Debian's interpreter, where python3-torch lives
torch_infer="$here/scripts/torch_infer.py"
runs=3
threads=2
quick=0
out=""
while [[ $# -gt 0 ]]; do
  case "$1" in
    --runs) runs="$2"; shift ;;
    --threads) threads="$2"; shift ;;
    --quick) quick=1 ;;
    --qil) qil="$2"; shift ;;
    --out) out="$2"; shift ;;
    -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
    *) echo "bench_infer.sh: unknown argument $1" >&2; exit 2 ;;
  esac
  shift
done
[[ -x "$qil" ]] || { echo "bench_infer.sh: $qil not built" >&2; exit 1; }
[[ "$runs" =~ ^[1-9][0-9]*$ ]] || { echo "bench_infer.sh: --runs must be a positive integer, got '$runs'" >&2; exit 2; }

# The number after the last "img/s=" on the last line of a command's output.
rate() { tail -n 1 | sed -n 's/.*img\/s=\([0-9.]*\).*/\1/p'; }
median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{a[NR]=$1} END {if (NR % 2) print a[(NR+1)/2]; else printf "%.2f\n", (a[NR/2]+a[NR/2+1])/2}'; }

# name | model | batch | res | classes | qil steps per run | PyTorch steps per run
configs=(
  "ResNet-20 @32 b1|resnet20|1|32|10|200|200"
  "ResNet-20 @32 b64|resnet20|64|32|10|10|10"
)
if [[ $quick == 0 ]]; then
  configs+=(
    "ResNet-18 @224 b1|resnet18|1|224|1000|10|10"
    "ResNet-18 @224 b64|resnet18|64|224|1000|2|2"
  )
fi
columns=(fp32 w4a4 int8 torch)

one_run() {  # column model batch res classes steps tsteps -> img/s
  local col=$1 model=$2 batch=$3 res=$4 classes=$5 steps=$6 tsteps=$7
  local common=(bench --infer --model "$model" --batch "$batch" --image-size "$res" --num-classes "$classes"
                --steps "$steps" --warmup 2 --repeat 1 --threads "$threads")
  case $col in
    fp32) "$qil" "${common[@]}" --quant 32 | rate ;;
    w4a4) "$qil" "${common[@]}" --quant 4 | rate ;;
    int8) "$qil" "${common[@]}" --quant 4 --int8 | rate ;;
    torch) "$python" "$torch_infer" "$model" "$batch" "$res" "$tsteps" --threads "$threads" | rate ;;
  esac
}

export OMP_NUM_THREADS="$threads"
flags="$(grep -m1 '^flags' /proc/cpuinfo | grep -o -w -E 'avx512[a-z_0-9]*|avx_vnni|avx2|fma|amx[a-z_]*' |
         sort -u | tr '\n' ' ')"
cpu="$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"
header="Threads: $threads; $runs interleaved rounds; $(nproc --all) CPUs: $cpu; flags: $flags"$'\n'
header+="Load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"$'\n'
impls="$(ONEDNN_VERBOSE=1 "$qil" bench --infer --int8 --quant 4 --model resnet20 --batch 1 --image-size 32 \
           --num-classes 10 --steps 1 --warmup 0 --repeat 1 2>/dev/null |
         awk -F, '/exec/ && /src_u8/ {print $4 " (" $3 ")"}' | sort | uniq -c | sed 's/^ *//' | tr '\n' ';' || true)"
header+="oneDNN int8 implementations (ResNet-20 W4A4, count): ${impls:-none seen}"$'\n\n'

table="| configuration | qil FP32 | qil W4A4 (f32) | qil W4A4 int8 | PyTorch FP32 | int8 / qil FP32 "
table+="| int8 / PyTorch | runs (FP32; W4A4; int8; PyTorch) |"$'\n'"|---|---:|---:|---:|---:|---:|---:|---|"$'\n'
for c in "${configs[@]}"; do
  IFS='|' read -r name model batch res classes steps tsteps <<<"$c"
  declare -A got=()
  for ((i = 0; i < runs; ++i)); do
    for col in "${columns[@]}"; do
      r=$(one_run "$col" "$model" "$batch" "$res" "$classes" "$steps" "$tsteps")
      got[$col]+="$r "
      echo "$name: round $((i + 1)) $col $r img/s" >&2
    done
  done
  declare -A med=()
  for col in "${columns[@]}"; do med[$col]=$(echo "${got[$col]}" | median); done
  r1=$(awk -v a="${med[int8]}" -v b="${med[fp32]}" 'BEGIN {printf "%.2f", a / b}')
  r2=$(awk -v a="${med[int8]}" -v b="${med[torch]}" 'BEGIN {printf "%.2f", a / b}')
  table+="| $name | ${med[fp32]} | ${med[w4a4]} | ${med[int8]} | ${med[torch]} | $r1 | $r2 "
  table+="| ${got[fp32]}; ${got[w4a4]}; ${got[int8]}; ${got[torch]}|"$'\n'
  unset got med
done

report="$header$table"$'\n'"Load average at end: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "$report"
if [[ -n $out ]]; then echo "$report" >"$out"; fi
