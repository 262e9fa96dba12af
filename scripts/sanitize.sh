#!/usr/bin/env bash
# Builds qil and its tests with AddressSanitizer + UndefinedBehaviorSanitizer (g++, the compiler of the
# product build, so Debian's libgomp-based oneDNN links as usual) into build-asan/ and runs the whole test
# suite there. Any sanitizer report fails the test that triggered it (UBSan does not recover).
# Usage: scripts/sanitize.sh [ctest arguments, e.g. -R apps/]
# Environment: QIL_ASAN_DIR (build folder, default build-asan), QIL_JOBS (default: number of cores).
# Leak checking is off: OpenMPI and libgomp keep process-lifetime allocations that LeakSanitizer reports
# as leaks; every other check is on.
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ "${1:-}" == "-h" || "${1:-}" == "--help" ]]; then sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//'; exit 0; fi

QIL_EXTRA_PKGS="imagemagick" bash scripts/setup.sh --deps-only
build=${QIL_ASAN_DIR:-build-asan}
jobs=${QIL_JOBS:-$(nproc)}
san="-fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer"
cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_CXX_FLAGS="$san" \
      -DCMAKE_EXE_LINKER_FLAGS="$san" >/dev/null
cmake --build "$build" -j "$jobs"
export ASAN_OPTIONS="detect_leaks=0:abort_on_error=1:strict_string_checks=1:check_initialization_order=1"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1"
cd "$build"
ctest --output-on-failure -j "$(nproc)" --timeout 3600 "$@"
