# Sourced by train-mpirun.sbatch and train-srun.sbatch: the per-rank layout and the `qil train` arguments of a
# run, from the allocation and the environment. Sets RANKS, RANKS_PER_NODE, CORES_PER_RANK, THREADS, WORKERS,
# and QIL_ARGS (an array).
#
# Environment (all optional):
#   QIL            the qil binary, the same on every node (default: build/qil beside these scripts)
#   GLOBAL_BATCH   images per optimizer step over all ranks (default 256, the configs' LRs; another value needs
#                  lr and stage_lr scaled by GLOBAL_BATCH / 256, docs/cluster.md "LR scaling")
#   MAX_BATCH      the largest per-rank micro-batch (default 128); above it the rank accumulates micro-batches
#   RANKS_PER_NODE 1 (default: one rank per node) or the node's sockets (one rank per socket)
#   CORES_PER_NODE physical cores of a node (default: counted on the node this script runs on, by lscpu)
#   WORKERS        decode threads per rank (default: the config's `workers`, 2 if it has none)
#   DATA_DIR       the ImageNet folder (default: the config's data_dir)

die() { echo "qil job: $*" >&2; exit 1; }

[[ $# -ge 2 ]] || die "usage: sbatch [--nodes=N] $0 CONFIG.toml RUN_DIR [more qil train flags]"
CONFIG="$1"
RUN_DIR="$2"
shift 2
EXTRA=("$@")

here="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
QIL="${QIL:-$here/build/qil}"
[[ -x "$QIL" ]] || die "no qil binary at $QIL (set QIL=/shared/path/to/qil)"
[[ -f "$CONFIG" ]] || die "no config file $CONFIG"

NODES="${SLURM_JOB_NUM_NODES:?not inside a SLURM job (submit with sbatch)}"
RANKS_PER_NODE="${RANKS_PER_NODE:-1}"
RANKS=$((NODES * RANKS_PER_NODE))
CORES_PER_NODE="${CORES_PER_NODE:-$(lscpu -p=core,socket | grep -v '^#' | sort -u | wc -l)}"
CORES_PER_RANK=$((CORES_PER_NODE / RANKS_PER_NODE))

cfg_value() {  # the config's value of a simple key, or nothing
  sed -n "s/^[[:space:]]*$1[[:space:]]*=[[:space:]]*\"\{0,1\}\([^\"#[:space:]]*\).*/\1/p" "$CONFIG" | head -1
}
WORKERS="${WORKERS:-$(cfg_value workers)}"
WORKERS="${WORKERS:-2}"
THREADS=$((CORES_PER_RANK - WORKERS))  # threads + workers = the cores of the rank (docs/cluster.md)
[[ $THREADS -ge 1 ]] || die "$CORES_PER_RANK cores per rank leave no compute thread beside $WORKERS workers"

GLOBAL_BATCH="${GLOBAL_BATCH:-256}"
MAX_BATCH="${MAX_BATCH:-128}"
(( GLOBAL_BATCH % RANKS == 0 )) || die "a global batch of $GLOBAL_BATCH does not divide over $RANKS ranks"
PER_RANK=$((GLOBAL_BATCH / RANKS))
ACCUMULATE=1
while (( PER_RANK / ACCUMULATE > MAX_BATCH || PER_RANK % ACCUMULATE != 0 )); do ACCUMULATE=$((ACCUMULATE + 1)); done
BATCH=$((PER_RANK / ACCUMULATE))

if [[ -f "$RUN_DIR/config.toml" ]]; then
  # The run exists: continue it. It keeps its global batch on this number of ranks by taking another
  # --accumulate itself, or refuses, naming the flag (docs/cluster.md, "Resuming on another number of ranks").
  QIL_ARGS=(train --resume "$RUN_DIR")
  LAYOUT="the run's own global batch, resumed on $RANKS ranks"
else
  QIL_ARGS=(train --config "$CONFIG" --out "$RUN_DIR" --batch "$BATCH" --accumulate "$ACCUMULATE")
  [[ -n "${DATA_DIR:-}" ]] && QIL_ARGS+=(--data-dir "$DATA_DIR")
  LAYOUT="global batch $GLOBAL_BATCH = $BATCH x $ACCUMULATE x $RANKS"
fi
QIL_ARGS+=(--threads "$THREADS" --workers "$WORKERS" "${EXTRA[@]}")

echo "qil job: $NODES nodes x $RANKS_PER_NODE ranks, $CORES_PER_RANK cores per rank ($THREADS threads +" \
     "$WORKERS workers); $LAYOUT; $QIL ${QIL_ARGS[*]}"
