#!/usr/bin/env bash
# Builds scripts/conv_impls.cpp against the system's oneDNN and runs it: every non-reference oneDNN
# implementation of every ResNet-18 @224 convolution shape, each direction, in the blocked (`any`), NCHW and NHWC
# activation layouts, with ms and GFLOP/s; the CPU's SIMD flags first. Not part of qil's build: a measuring
# stick for docs/performance.md ("Every oneDNN kernel, layer by layer"). Needs a quiet machine (`uptime`).
# `cold` evicts the caches before every timed call (as inside a training step), `warm` (default) does not.
# Usage: scripts/conv_impls.sh [batch] [fwd|bwd_data|bwd_weights|all] [warm|cold] [all|any|nchw|nhwc]
#        (OMP_NUM_THREADS sets the threads)
# Environment: CXX (default g++), CONV_IMPLS_BIN (default /tmp/qil_conv_impls).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
bin="${CONV_IMPLS_BIN:-/tmp/qil_conv_impls}"
"${CXX:-g++}" -std=c++17 -O2 -fopenmp "$here/conv_impls.cpp" -o "$bin" -ldnnl
echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs) [$(grep -m1 '^flags' /proc/cpuinfo | tr ' ' '\n' | grep -E '^(avx2|fma|avx512.*|amx.*|avx_vnni)$' | sort | xargs)]; threads=${OMP_NUM_THREADS:-default}; load: $(cut -d' ' -f1-3 /proc/loadavg)"
"$bin" "$@"
