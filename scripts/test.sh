#!/usr/bin/env bash
# Installs what is missing (with the tests' own needs: ImageMagick for JPEG fixtures, NumPy for the int-export
# reader, clang and its libFuzzer runtime for the fuzz targets' build check), builds, and runs the whole test
# suite (ctest).
set -euo pipefail
cd "$(dirname "$0")/.."
QIL_EXTRA_PKGS="imagemagick python3-numpy clang libclang-rt-14-dev" bash scripts/setup.sh
build=${QIL_BUILD_DIR:-build}
# ONNX Runtime for the ONNX export test: npm's onnxruntime-node (its CPU library ships in the package; the
# install script, which fetches GPU parts, is skipped). A test tool, not a qil dependency.
if [[ ! -d $build/npm/node_modules/onnxruntime-node ]]; then
  command -v npm >/dev/null || QIL_EXTRA_PKGS="nodejs npm" bash scripts/setup.sh --deps-only
  npm install --prefix "$build/npm" --ignore-scripts --no-audit --no-fund --loglevel=error onnxruntime-node@1.30.0
fi
cd "$build"
ctest --output-on-failure -j "$(nproc)" --timeout 900
