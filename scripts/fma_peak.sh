#!/usr/bin/env bash
# Builds scripts/fma_peak.cpp (independent FMA chains per thread, no memory traffic) for this CPU and runs it:
# prints the CPU's SIMD flags and the FP32 FMA peak in GFLOP/s on each thread count, the ceiling for
# `qil bench --peak-gflops`. Not part of qil's build: a measuring stick for docs/performance.md.
# Usage: scripts/fma_peak.sh [threads...]   (default: 1 and OpenMP's default)
# Environment: CXX (default g++), FMA_PEAK_BIN (default /tmp/qil_fma_peak).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
bin="${FMA_PEAK_BIN:-/tmp/qil_fma_peak}"
if grep -qw avx512f /proc/cpuinfo; then isa=(-mavx512f -mfma); else isa=(-mavx2 -mfma); fi
"${CXX:-g++}" -std=c++17 -O2 "${isa[@]}" -fopenmp "$here/fma_peak.cpp" -o "$bin"
"$bin" "$@"
