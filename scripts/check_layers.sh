#!/usr/bin/env bash
# Checks that apps/'s include graph only points down (docs/architecture.md, "Inside apps/"): apps/ is a stack of
# layers, lowest first below; a file includes apps/ headers of lower layers only, and of its own layer only its
# own header (the folders apps/training/ and apps/inspect/ are one layer each, free inside). Also: engine/,
# quant/, layers/ and data/ include nothing of apps/, and the training library (apps/training/) includes neither
# CLI11 nor toml++. A file of apps/ that is in no layer is an error too: a new file is placed here on purpose.
# Prints each offending include as FILE:LINE and exits 1; prints nothing and exits 0 when the graph is clean.
# Usage: scripts/check_layers.sh   (ctest runs it as scripts/check_layers)
set -euo pipefail
cd "$(dirname "$0")/.."

layers=(
  "training/"                      # the training library (qil_training): layers, data, engine only
  "inspect/"                       # qil inspect's readers, statistics and page
  "limits machine npy model_file quant_flags"  # what several commands share, needing nothing else of apps/
  "data_setup config"              # datasets from data flags; train's typed flags and config file
  "export"                         # the safetensors export formats
  "export_onnx"                    # the ONNX graph, made of export's weights
  "train eval models_cmd inspect_cmd bench bench_data export_cmd predict compare"  # one file per subcommand
  "main"                           # the table of subcommands
)

# The layer of a path under apps/ ("apps/training/trainer.h", "apps/eval.cpp"), or -1.
layer_of() {
  local p=${1#apps/} i name
  for i in "${!layers[@]}"; do
    for name in ${layers[$i]}; do
      if [[ $name == */ ]]; then
        [[ $p == "$name"* ]] && { echo "$i"; return; }
      elif [[ ${p%.*} == "$name" && $p != */* ]]; then
        echo "$i"; return
      fi
    done
  done
  echo -1
}

bad=0
say() { echo "$1"; bad=1; }
include='^[[:space:]]*#[[:space:]]*include[[:space:]]*'

while IFS= read -r f; do
  lf=$(layer_of "$f")
  if ((lf < 0)); then say "$f: in no layer of scripts/check_layers.sh (place it in one)"; continue; fi
  while IFS=: read -r line inc; do
    li=$(layer_of "$inc")
    if ((li < 0)); then
      say "$f:$line: includes $inc, which is in no layer"
    elif ((li > lf)); then
      say "$f:$line: includes $inc, which is in a higher layer ($((li + 1)) above $((lf + 1)))"
    elif ((li == lf)) && [[ ${layers[$lf]} != */ && ${inc%.h} != "${f%.*}" ]]; then
      say "$f:$line: includes $inc, a file of its own layer (only its own header may be)"
    fi
  done < <(grep -n "$include\"apps/" "$f" | sed -E 's/^([0-9]+):.*"(apps\/[^"]*)".*/\1:\2/')
done < <(find apps -name '*.h' -o -name '*.cpp' | sort)

while IFS= read -r hit; do say "$hit: a library below apps/ includes apps/"; done \
  < <(grep -rn "$include\"apps/" engine quant layers data || true)
while IFS= read -r hit; do say "$hit: the training library includes the command line's parsers"; done \
  < <(grep -rnE "$include[<\"](CLI/|toml\\+\\+/)" apps/training || true)

exit $bad
