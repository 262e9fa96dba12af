#!/usr/bin/env bash
# Installs what is missing (with the tests' own needs: ImageMagick for JPEG fixtures, NumPy for the int-export
# reader, clang and its libFuzzer runtime for the fuzz targets' build check), builds, and runs the whole test
# suite (ctest). Arguments go to ctest: scripts/test.sh -R engine/dist.
set -euo pipefail
cd "$(dirname "$0")/.."
QIL_EXTRA_PKGS="imagemagick python3-numpy clang libclang-rt-14-dev iproute2" bash scripts/setup.sh
build=${QIL_BUILD_DIR:-build}
# ONNX Runtime for the ONNX export test: npm's onnxruntime-node (its CPU library ships in the package; the
# install script, which fetches GPU parts, is skipped). A test tool, not a qil dependency.
if [[ ! -d $build/npm/node_modules/onnxruntime-node ]]; then
  command -v npm >/dev/null || QIL_EXTRA_PKGS="nodejs npm" bash scripts/setup.sh --deps-only
  npm install --prefix "$build/npm" --ignore-scripts --no-audit --no-fund --loglevel=error onnxruntime-node@1.30.0
fi
cd "$build"
# Every case that cannot run here reports Skipped (tests/skip.h) and is listed in this file. On a machine this
# script has prepared, only a CPU feature the machine lacks (kind "isa") may be missing: any other skip fails.
skips=$(mktemp)
trap 'rm -f "$skips"' EXIT
rc=0
QIL_SKIP_LOG=$skips ctest --output-on-failure -j "$(nproc)" --timeout 900 "$@" || rc=$?
if [[ -s $skips ]]; then
  echo "test.sh: skipped test cases (kind, test, reason):"
  sort "$skips" | sed 's/^/  /'
  if grep -qv '^isa'$'\t' "$skips"; then
    echo "test.sh: FAILED: a test case skipped for a reason other than the CPU (kind isa); this script installs" \
         "everything else the tests need" >&2
    exit 1
  fi
fi
exit $rc
