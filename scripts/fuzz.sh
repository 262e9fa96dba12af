#!/usr/bin/env bash
# Builds the libFuzzer targets in tests/fuzz/ (clang, AddressSanitizer + UndefinedBehaviorSanitizer) and runs
# each for a set time, starting from its seed corpus in tests/fuzz/corpus/<target>/. A finding (a crash, a
# sanitizer report, an exception other than qil's clean engine::Error, an allocation past 2 GB, an input slower
# than 10 s) stops with the reproducer saved as build-fuzz/<target>/crash-*; a reproducer worth keeping goes
# into tests/fuzz/corpus/<target>/, which every later fuzzing run starts from and the test suite replays
# through the product's own readers (tests/apps/test_corrupt_files.cpp).
# The targets compile only the readers they test (no oneDNN, no OpenMP), so clang's runtime never meets
# Debian's libgomp-based oneDNN; tests/fuzz/fuzz_stubs.cpp stands in for the few oneDNN-backed functions the
# readers' files name, and tests/fuzz/fuzz_quant_families.cpp for the quantizer families (names and options) the
# config reader asks the registry about. The test suite builds and runs every target for a few seconds (ctest
# "fuzz/every target builds and runs"), so a target that stops compiling or linking fails CI.
# Usage: scripts/fuzz.sh [--replay | --check-seeds] [TARGET ...]   (default: every target)
#   --replay: run each committed corpus once; --check-seeds: the same, and every input must read without error
#   (for the seed-* files written by tests/fuzz/make_seeds.py).
# Environment: QIL_FUZZ_SECONDS (per target, default 60), QIL_FUZZ_DIR (build folder, default build-fuzz),
#   QIL_FUZZ_NO_INSTALL=1 (exit 77, "skipped", when clang or a library is missing instead of installing it).
set -euo pipefail
cd "$(dirname "$0")/.."

replay=0
case "${1:-}" in
  --replay) replay=1; shift ;;
  --check-seeds) replay=1; export QIL_FUZZ_EXPECT_VALID=1; shift ;;
esac
if [[ "${1:-}" == "-h" || "${1:-}" == "--help" ]]; then sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'; exit 0; fi

pkgs=(clang libclang-rt-14-dev zlib1g-dev libstb-dev nlohmann-json3-dev libtomlplusplus-dev libcli11-dev pkg-config)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})) && [[ "${QIL_FUZZ_NO_INSTALL:-0}" == 1 ]]; then
  echo "fuzz: skipped: ${missing[*]} not installed (scripts/test.sh installs them)"
  exit 77
fi
if ((${#missing[@]})); then
  echo "fuzz: installing ${missing[*]}"
  if [[ $(id -u) -ne 0 ]]; then SUDO=sudo; else SUDO=; fi
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

out=${QIL_FUZZ_DIR:-build-fuzz}
seconds=${QIL_FUZZ_SECONDS:-60}
tensor_srcs="engine/tensor.cpp engine/autograd.cpp tests/fuzz/fuzz_stubs.cpp"
declare -A srcs=(
  [checkpoint]="engine/serialize.cpp $tensor_srcs"
  [safetensors]="engine/serialize.cpp $tensor_srcs"
  [npy]="apps/npy.cpp $tensor_srcs"
  [idx]="data/idx.cpp data/image_set.cpp $tensor_srcs"
  [cifar]="data/cifar.cpp data/idx.cpp data/image_set.cpp $tensor_srcs"
  [image]="data/image.cpp"
  [config]="apps/config.cpp apps/limits.cpp apps/training/stages.cpp quant/registry.cpp tests/fuzz/fuzz_quant_families.cpp"
)
declare -A libs=(
  [checkpoint]="-lz" [safetensors]="-lz" [npy]="" [idx]="-lz" [cifar]="-lz" [image]="$(pkg-config --libs stb)"
  [config]="$(pkg-config --libs tomlplusplus)"
)
targets=("$@")
((${#targets[@]})) || targets=(checkpoint safetensors npy idx cifar image config)

flags=(-std=c++17 -O1 -g -I. -Itests/fuzz $(pkg-config --cflags stb tomlplusplus) -DFUZZING_BUILD_MODE_UNSAFE_FOR_PRODUCTION
       -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined -Wno-unused-command-line-argument)
cxx=(clang++)
command -v ccache >/dev/null && cxx=(ccache clang++)
# Each source is compiled once into build-fuzz/obj/ (the readers' files are shared by several targets) and
# again when it or any header it may include is newer than its object.
compile() {
  local src=$1 obj="$out/obj/${1%.cpp}.o"
  mkdir -p "$(dirname "$obj")"
  if [[ ! -f "$obj" || "$src" -nt "$obj" ]] ||
     [[ -n "$(find tests/fuzz engine quant layers data apps -newer "$obj" -name '*.h' -print -quit)" ]]; then
    "${cxx[@]}" "${flags[@]}" -c "$src" -o "$obj"
  fi
  echo "$obj"
}
for t in "${targets[@]}"; do
  [[ -n "${srcs[$t]+x}" ]] || { echo "fuzz: no target '$t' (targets: ${!srcs[*]})" >&2; exit 2; }
  mkdir -p "$out/$t" "tests/fuzz/corpus/$t"
  bin="$out/fuzz_$t"
  objs=()
  for src in "tests/fuzz/fuzz_$t.cpp" ${srcs[$t]}; do
    obj=$(compile "$src") || { echo "fuzz: $t: $src does not compile" >&2; exit 1; }
    objs+=("$obj")
  done
  # shellcheck disable=SC2086
  clang++ "${flags[@]}" "${objs[@]}" ${libs[$t]} -o "$bin"
  opts=(-rss_limit_mb=2048 -malloc_limit_mb=2048 -timeout=10 -artifact_prefix="$out/$t/" -print_final_stats=0)
  if ((replay)); then
    echo "fuzz: $t: replaying tests/fuzz/corpus/$t ($(ls "tests/fuzz/corpus/$t" | wc -l) inputs)"
    "$bin" "${opts[@]}" -runs=0 "tests/fuzz/corpus/$t" >"$out/$t/log" 2>&1 || {
      grep -E -A30 "==[0-9]+==ERROR|error without|seed refused|deadly signal|uncaught|terminate" "$out/$t/log" >&2
      echo "fuzz: $t: FINDING while replaying (log in $out/$t/log)" >&2
      exit 1
    }
  else
    echo "fuzz: $t: ${seconds} s"
    # New inputs go to the scratch corpus; the committed seeds are read, never written.
    mkdir -p "$out/$t/corpus"
    rc=0
    "$bin" "${opts[@]}" -max_total_time="$seconds" -max_len=65536 "$out/$t/corpus" "tests/fuzz/corpus/$t" \
      >"$out/$t/log" 2>&1 || rc=$?
    grep -E "^#[0-9]+[[:space:]]+DONE" "$out/$t/log" || true
    if ((rc)); then
      grep -E -A30 "==[0-9]+==ERROR|error without|deadly signal|uncaught|terminate" "$out/$t/log" | head -60 >&2 || true
      echo "fuzz: $t: FINDING (exit $rc; log and reproducer in $out/$t/)" >&2
      exit 1
    fi
  fi
done
echo "fuzz: no finding in ${targets[*]}"
