#!/usr/bin/env bash
# One-command set-up on Debian 12: installs the packages, builds, then runs the main job
# ("main": builds only the host and the plugins), the test suite ("test": builds everything),
# or nothing more ("build": builds everything).
#   scripts/setup.sh main | test | build
set -euo pipefail

what="${1:-main}"
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build="${WORKBENCH_BUILD_DIR:-$here/build}"

packages=(
  build-essential cmake ninja-build ccache git pkg-config
  libtorch-dev libgloo-dev
  libopenblas0-openmp            # LibTorch otherwise runs on the reference BLAS: ~10x slower
  libboost-dev libboost-program-options-dev libboost-filesystem-dev
  libtomlplusplus-dev libhdf5-dev libspdlog-dev libfmt-dev doctest-dev
  zlib1g-dev libpng-dev libjpeg-dev
  dataset-fashion-mnist          # the embedded default data set
  python3-sklearn                # its digits.csv.gz: the second data set (data.dataset = "digits")
  gnuplot-nox                    # report plots
  clang-14 libclang-rt-14-dev    # the fuzz targets (libFuzzer), run briefly by the test suite
  python3-torch python3-h5py     # benchmarks against PyTorch, reading results from Python
  python3-pandas python3-numpy   # python/workbench_results.py and its test
)

install_packages() {
  local missing=()
  for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  local sudo=()
  [ "$(id -u)" -ne 0 ] && sudo=(sudo)
  echo "installing: ${missing[*]}"
  "${sudo[@]}" apt-get update -q
  DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -q --no-install-recommends "${missing[@]}"
}

# build_tree [TARGET]: configures and builds everything, or only TARGET and what it needs.
build_tree() {
  local jobs target=()
  jobs="$(nproc)"
  [ $# -gt 0 ] && target=(--target "$1")
  cmake -S "$here" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release
  cmake --build "$build" -j "$jobs" "${target[@]}"
}

install_packages
case "$what" in
  main) build_tree workbench_main ;;  # the host and the plugins: no tests, no benchmarks
  *) build_tree ;;
esac

case "$what" in
  build) ;;
  main)
    cd "$here"
    "$build/bin/workbench" run experiments/crmoe_small.toml
    ;;
  test)
    cd "$build"
    ctest --output-on-failure -j "$(nproc)" --timeout 900
    ;;
  *)
    echo "usage: scripts/setup.sh main|test|build" >&2
    exit 2
    ;;
esac
