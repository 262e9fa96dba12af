#!/usr/bin/env bash
# Installs what is missing (with the tests' own needs: ImageMagick for JPEG fixtures, NumPy for the int-export
# reader), builds, and runs the whole test suite (ctest).
set -euo pipefail
cd "$(dirname "$0")/.."
QIL_EXTRA_PKGS="imagemagick python3-numpy" bash scripts/setup.sh
build=${QIL_BUILD_DIR:-build}
cd "$build"
ctest --output-on-failure -j "$(nproc)" --timeout 900
