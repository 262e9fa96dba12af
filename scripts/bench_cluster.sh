#!/usr/bin/env bash
# The measured inputs of the scaling model (scripts/scaling_model.py, docs/cluster.md "Scaling") on this machine,
# and the step time of the two all-reduce modes. A benchmark, never a test. Measures:
#   1. one all-reduce of ResNet-18's and AlexNet's whole gradient (qil bench --allreduce-only), 2 and 4 ranks,
#      one thread each (4 ranks oversubscribe a 2-core machine), --allreduce end and overlap (bucketed)
#      interleaved, plus the 8-byte all-reduce (latency);
#   2. the data-parallel step time, --allreduce end against overlap, 2 ranks x 1 thread, ResNet-20 @32 b64 and
#      ResNet-18 @224 b16, interleaved run by run;
#   3. one process's step time (all cores, or --compute-threads) of ResNet-18 and AlexNet @224 at the per-node
#      batches of a global batch of 256 on 8, 16 and 64 nodes (32, 16, 4), with its backward share.
# Writes a JSON file (every run, the medians, CPU flags, load average before and after) and a Markdown summary.
#
# Usage: scripts/bench_cluster.sh [--runs N] [--compute-runs N] [--compute-threads T] [--bucket-mb LIST]
#                                 [--quick] [--qil PATH] [--out-json FILE] [--out-md FILE]
#   --runs N          interleaved runs per all-reduce mode and step configuration (default 5)
#   --compute-runs N  runs per single-process compute configuration (default 3)
#   --compute-threads T  threads of the single-process runs (default: all cores; on a machine that another job
#                     keeps busy, 1, since OpenMP's threads then wait for each other at every barrier)
#   --bucket-mb LIST  bucket sizes (MiB) of the overlap runs, e.g. "25 5" (default 25)
#   --quick           a smoke run: small models and batches, 2 runs (checks the script, measures nothing)
#   --out-json FILE   default docs/results/cluster-bench.json; --out-md FILE default docs/results/cluster-bench.md
set -euo pipefail

here="$(cd "$(dirname "$0")/.." && pwd)"
qil="$here/build/qil"
runs=5
compute_runs=3
compute_threads="$(nproc)"
buckets="25"
quick=0
out_json="$here/docs/results/cluster-bench.json"
out_md="$here/docs/results/cluster-bench.md"
while [[ $# -gt 0 ]]; do
  case "$1" in
    --runs) runs="$2"; shift ;;
    --compute-runs) compute_runs="$2"; shift ;;
    --compute-threads) compute_threads="$2"; shift ;;
    --bucket-mb) buckets="$2"; shift ;;
    --quick) quick=1 ;;
    --qil) qil="$2"; shift ;;
    --out-json) out_json="$2"; shift ;;
    --out-md) out_md="$2"; shift ;;
    -h|--help) sed -n '2,22p' "$0"; exit 0 ;;
    *) echo "bench_cluster.sh: unknown argument $1" >&2; exit 2 ;;
  esac
  shift
done
[[ -x "$qil" ]] || { echo "bench_cluster.sh: $qil not built" >&2; exit 1; }
command -v mpirun >/dev/null || { echo "bench_cluster.sh: mpirun not found (openmpi-bin)" >&2; exit 1; }

raw="$(mktemp)"
trap 'rm -f "$raw"' EXIT
# --bind-to none: a rank is not pinned to a core another process keeps busy.
mpi() { local np="$1"; shift; mpirun --allow-run-as-root --oversubscribe --bind-to none -np "$np" -x OMP_NUM_THREADS=1 "$qil" "$@"; }
# One JSON result line, tagged with what it measured: record KIND [key=value ...] -- command...
record() {
  local kind="$1"; shift
  local tags=()
  while [[ "$1" != "--" ]]; do tags+=("$1"); shift; done
  shift
  local line
  line=$("$@" | grep '^{' | tail -n 1)
  python3 -c 'import json,sys; d=json.loads(sys.argv[1]); d["kind"]=sys.argv[2]
for t in sys.argv[3:]: k,v=t.split("=",1); d[k]=v
print(json.dumps(d))' "$line" "$kind" "${tags[@]}" >>"$raw"
  echo "$kind ${tags[*]}: $line" >&2
}

load_before="$(cut -d' ' -f1-3 /proc/loadavg)"
flags="$(grep -o -w -E 'avx512[a-z_0-9]*|avx2|fma' /proc/cpuinfo | sort -u | tr '\n' ' ')"
cpu="$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"

ar_models=(resnet18 alexnet)
step_configs=("resnet20|64|32|10" "resnet18|16|224|1000")   # model|batch|image size|classes
compute_batches=(32 16 4)
ar_calls=(--warmup 2 --steps 10 --repeat 1)
step_calls=(--warmup 1 --steps 3 --repeat 1)
if [[ $quick == 1 ]]; then
  runs=2; compute_runs=1
  ar_models=(resnet20)
  step_configs=("resnet20|8|32|10")
  compute_batches=(4)
  ar_calls=(--warmup 1 --steps 3 --repeat 1)
  step_calls=(--warmup 1 --steps 2 --repeat 1)
fi
modes=(end)
for b in $buckets; do modes+=("overlap:$b"); done

# 1. All-reduce of a whole gradient.
for np in 2 4; do
  for model in "${ar_models[@]}"; do
    for ((i = 0; i < runs; ++i)); do
      for m in "${modes[@]}"; do
        mode=${m%%:*}; mb=${m#*:}; [[ $mode == end ]] && mb=25
        record allreduce "ranks=$np" "bucket_mb=$mb" "run=$i" -- mpi "$np" bench --model "$model" --allreduce-only \
          --allreduce "$mode" --bucket-mb "$mb" --threads 1 "${ar_calls[@]}" --json
      done
    done
  done
done

# 2. Data-parallel step, end against overlap, interleaved.
for c in "${step_configs[@]}"; do
  IFS='|' read -r model batch res classes <<<"$c"
  for ((i = 0; i < runs; ++i)); do
    for m in "${modes[@]}"; do
      mode=${m%%:*}; mb=${m#*:}; [[ $mode == end ]] && mb=25
      record step "bucket_mb=$mb" "run=$i" -- mpi 2 bench --model "$model" --batch "$batch" --image-size "$res" \
        --num-classes "$classes" --allreduce "$mode" --bucket-mb "$mb" --threads 1 "${step_calls[@]}" --json
    done
  done
done

# 3. One process (all cores) at the per-node batches.
for model in "${ar_models[@]}"; do
  res=224; classes=1000
  [[ $quick == 1 ]] && { res=32; classes=10; }
  for batch in "${compute_batches[@]}"; do
    for ((i = 0; i < compute_runs; ++i)); do
      record compute "run=$i" -- "$qil" bench --model "$model" --batch "$batch" --image-size "$res" \
        --num-classes "$classes" --threads "$compute_threads" "${step_calls[@]}" --json
    done
  done
done

load_after="$(cut -d' ' -f1-3 /proc/loadavg)"
mkdir -p "$(dirname "$out_json")" "$(dirname "$out_md")"
python3 - "$raw" "$out_json" "$out_md" "$cpu" "$flags" "$(nproc)" "$load_before" "$load_after" "$runs" <<'EOF'
import json, statistics, sys
raw, out_json, out_md, cpu, flags, cores, load_before, load_after, runs = sys.argv[1:]
rows = [json.loads(l) for l in open(raw)]
med = lambda xs: statistics.median(xs) if xs else None

def group(kind, key):
    out = {}
    for r in rows:
        if r["kind"] == kind:
            out.setdefault(key(r), []).append(r)
    return out

allreduce = []
for (model, ranks, mode, mb), rs in sorted(group("allreduce", lambda r: (r["model"], int(r["ranks"]), r["allreduce"], float(r["bucket_mb"]))).items()):
    allreduce.append({"model": model, "parameters": rs[0]["parameters"], "bytes": rs[0]["bytes"], "ranks": ranks,
                      "allreduce": mode, "bucket_mb": mb, "buckets": rs[0]["buckets"], "runs": len(rs),
                      "median_ms": med([r["median_ms"] for r in rs]), "small_ms": med([r["small_ms"] for r in rs]),
                      "all_ms": [r["median_ms"] for r in rs]})
steps = []
for (model, batch, res, mode, mb), rs in sorted(group("step", lambda r: (r["model"], r["batch"], r["image_size"], r["allreduce"], float(r["bucket_mb"]))).items()):
    steps.append({"model": model, "batch": batch, "image_size": res, "ranks": rs[0]["ranks"], "allreduce": mode,
                  "bucket_mb": mb, "buckets": rs[0]["buckets"], "runs": len(rs),
                  **{k: med([r[k] for r in rs]) for k in ("step_ms", "forward_ms", "backward_ms", "reduce_ms", "update_ms")},
                  "all_step_ms": [r["step_ms"] for r in rs]})
compute = []
for (model, batch, res), rs in sorted(group("compute", lambda r: (r["model"], r["batch"], r["image_size"])).items()):
    compute.append({"model": model, "batch": batch, "image_size": res, "threads": rs[0]["threads"], "runs": len(rs),
                    **{k: med([r[k] for r in rs]) for k in ("step_ms", "forward_ms", "backward_ms", "update_ms")},
                    "all_step_ms": [r["step_ms"] for r in rs]})
doc = {"machine": {"cpu": cpu, "flags": flags.split(), "cores": int(cores)},
       "load_average_before": load_before, "load_average_after": load_after,
       "mpirun": "--oversubscribe --bind-to none, OMP_NUM_THREADS=1 per rank",
       "allreduce": allreduce, "steps": steps, "compute": compute, "raw": rows}
json.dump(doc, open(out_json, "w"), indent=1)

md = [f"Machine: {cpu}, {cores} cores, flags {flags}; load average before {load_before}, after {load_after}.", "",
      "One all-reduce of the whole gradient (`qil bench --allreduce-only`, median of the runs' medians):", "",
      "| model | MB | ranks | mode | buckets | ms | 8-byte all-reduce ms | runs (ms) |", "|---|---:|---:|---|---:|---:|---:|---|"]
for a in allreduce:
    mode = a["allreduce"] + (f" {a['bucket_mb']:g} MiB" if a["allreduce"] == "overlap" else "")
    md.append(f"| {a['model']} | {a['bytes'] / 1e6:.1f} | {a['ranks']} | {mode} | {a['buckets']} | {a['median_ms']:.1f} | "
              f"{a['small_ms']:.3f} | {' '.join(f'{x:.1f}' for x in a['all_ms'])} |")
md += ["", "Data-parallel step, 2 ranks x 1 thread, modes interleaved run by run (median ms per step):", "",
       "| model | batch/rank | mode | step | forward | backward | all-reduce wait | update | runs (step ms) |",
       "|---|---:|---|---:|---:|---:|---:|---:|---|"]
for s in steps:
    mode = s["allreduce"] + (f" {s['bucket_mb']:g} MiB ({s['buckets']} buckets)" if s["allreduce"] == "overlap" else "")
    md.append(f"| {s['model']} @{s['image_size']} | {s['batch']} | {mode} | {s['step_ms']:.0f} | {s['forward_ms']:.0f} | "
              f"{s['backward_ms']:.0f} | {s['reduce_ms']:.1f} | {s['update_ms']:.0f} | {' '.join(f'{x:.0f}' for x in s['all_step_ms'])} |")
md += ["", "One process (median ms per step):", "",
       "| model | batch | threads | step | backward | runs (step ms) |", "|---|---:|---:|---:|---:|---|"]
for c in compute:
    md.append(f"| {c['model']} @{c['image_size']} | {c['batch']} | {c['threads']} | {c['step_ms']:.0f} | {c['backward_ms']:.0f} | "
              f"{' '.join(f'{x:.0f}' for x in c['all_step_ms'])} |")
open(out_md, "w").write("\n".join(md) + "\n")
print("\n".join(md))
EOF
