#!/usr/bin/env bash
# Installs what qil needs from Debian's packages (only what is missing) and builds it into build/.
# Usage: scripts/setup.sh [--deps-only]   (--deps-only: install what is missing, build nothing)
# Environment: QIL_BUILD_DIR (default build), QIL_JOBS (default: number of cores), QIL_NATIVE=1 for -march=native,
# QIL_EXTRA_PKGS (more Debian packages to install).
set -euo pipefail
cd "$(dirname "$0")/.."

pkgs=(g++ cmake make pkg-config libdnnl-dev ocl-icd-opencl-dev libstb-dev doctest-dev libopenmpi-dev openmpi-bin
      zlib1g-dev libtomlplusplus-dev nlohmann-json3-dev libcli11-dev libonnx-dev libprotobuf-dev dataset-fashion-mnist)
# Extra packages for one purpose (the test command adds ImageMagick for JPEG fixtures stb cannot write).
read -r -a extra <<< "${QIL_EXTRA_PKGS:-}"
pkgs+=("${extra[@]}")

missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "setup: installing ${missing[*]}"
  if [[ $(id -u) -ne 0 ]]; then SUDO=sudo; else SUDO=; fi
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

[[ "${1:-}" == "--deps-only" ]] && exit 0

build=${QIL_BUILD_DIR:-build}
jobs=${QIL_JOBS:-$(nproc)}
native=OFF; [[ "${QIL_NATIVE:-0}" == 1 ]] && native=ON
cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release -DQIL_NATIVE=$native >/dev/null
cmake --build "$build" -j "$jobs"
