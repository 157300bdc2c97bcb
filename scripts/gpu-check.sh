#!/usr/bin/env bash
# The GPU check, in two steps (README, "GPU check"):
#
#   scripts/gpu-check.sh fetch   on a Debian 12 machine with network: downloads the Debian
#                                packages the build needs besides LibTorch (headers, CMake files
#                                and run-time libraries, no LibTorch) into .deps/debs/ (git-ignored,
#                                about 25 MiB: it travels with the source tree).
#   scripts/gpu-check.sh run     on a GPU machine with PyTorch (torch 2.x wheel, CUDA), cmake and
#                                ninja but no Debian packages and no network: unpacks .deps/debs
#                                into .deps/prefix (never /), builds the host, plugins, tests and
#                                benchmarks against the wheel's LibTorch, runs the CUDA tests and
#                                the GPU benchmarks, and writes every figure to one file:
#                                $OUT/gpu-check.txt when OUT is set, else build-gpu/gpu-check.txt.
#
# `run` prints progress and is meant to finish within 8 minutes on 16 cores; set
# GPU_CHECK_STEPS (default 20) to time more or fewer steps per benchmark.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
deps="$here/.deps"
debs="$deps/debs"

# Headers, CMake files and .so links (dev) and the run-time libraries with the dependencies a
# bare userland may lack (libc, libstdc++ and libgcc are the machine's own).
dev_packages=(
  libtomlplusplus-dev libboost1.74-dev libboost-program-options1.74-dev
  libboost-filesystem1.74-dev libboost-system1.74-dev libhdf5-dev libspdlog-dev libfmt-dev
  doctest-dev zlib1g-dev libpng-dev libjpeg62-turbo-dev libgloo-dev
)
run_packages=(
  libtomlplusplus3 libboost-program-options1.74.0 libboost-filesystem1.74.0
  libboost-system1.74.0 libhdf5-103-1 libsz2 libaec0 libcurl4 libspdlog1.10 libfmt9 libpng16-16
  libjpeg62-turbo zlib1g libbrotli1 libcom-err2 libffi8 libgmp10 libgnutls30 libgssapi-krb5-2
  libhogweed6 libidn2-0 libk5crypto3 libkeyutils1 libkrb5-3 libkrb5support0 libldap-2.5-0
  libnettle8 libnghttp2-14 libp11-kit0 libpsl5 librtmp1 libsasl2-2 libsasl2-modules-db libssh2-1
  libssl3 libtasn1-6 libunistring2 libzstd1 libdb5.3
)

fetch() {
  command -v apt-get >/dev/null || { echo "gpu-check fetch: needs apt-get (Debian 12)" >&2; exit 1; }
  mkdir -p "$debs"
  cd "$debs"
  echo "gpu-check fetch: downloading ${#dev_packages[@]} + ${#run_packages[@]} packages into $debs"
  if ! apt-get download "${dev_packages[@]}" "${run_packages[@]}"; then
    echo "gpu-check fetch: apt-get download failed: no network or no Debian mirror reachable" \
      "(run 'apt-get update' first, or fetch on a machine that reaches a mirror)" >&2
    exit 1
  fi
  echo "gpu-check fetch: $(ls "$debs" | wc -l) files, $(du -sh "$debs" | cut -f1) in $debs"
  echo "send it with the tree (the device tool's carry: .deps), then run: scripts/gpu-check.sh run"
}

# Unpacks every .deb into a prefix of its own (dpkg-deb where there is one, else ar + tar).
unpack() {
  local prefix="$1"
  [ -d "$debs" ] && ls "$debs"/*.deb >/dev/null 2>&1 ||
    { echo "gpu-check: no packages in $debs: run 'scripts/gpu-check.sh fetch' first" >&2; exit 1; }
  rm -rf "$prefix"
  mkdir -p "$prefix"
  local tmp
  tmp="$(mktemp -d)"
  for deb in "$debs"/*.deb; do
    if command -v dpkg-deb >/dev/null; then
      dpkg-deb -x "$deb" "$prefix"
    else
      (cd "$tmp" && rm -f data.tar.* && ar x "$deb" && tar -xf data.tar.* -C "$prefix")
    fi
  done
  rm -rf "$tmp"
  # Debian's absolute links (e.g. libfoo.so -> /usr/lib/...) made relative to the prefix.
  find "$prefix" -type l | while read -r link; do
    target="$(readlink "$link")"
    case "$target" in /*) ln -sfn "$prefix$target" "$link" ;; esac
  done
}

# CMake arguments that find everything in the prefix (FindHDF5 is told its files: Debian keeps
# the serial HDF5 in hdf5/serial and h5cc is not part of the packages).
prefix_cmake_args() {
  local prefix="$1" arch=x86_64-linux-gnu
  echo "-DHDF5_C_INCLUDE_DIR=$prefix/usr/include/hdf5/serial"
  echo "-DHDF5_C_LIBRARY=$prefix/usr/lib/$arch/hdf5/serial/libhdf5.so"
  echo "-DHDF5_C_LIBRARY_hdf5=$prefix/usr/lib/$arch/hdf5/serial/libhdf5.so"
  echo "-DBoost_ROOT=$prefix/usr"
  echo "-DBoost_NO_SYSTEM_PATHS=ON"
}

prefix_library_path() {
  local prefix="$1" arch=x86_64-linux-gnu
  echo "$prefix/usr/lib/$arch:$prefix/lib/$arch:$prefix/usr/lib/$arch/hdf5/serial"
}

run() {
  local start=$SECONDS
  local build="$here/build-gpu" prefix="$deps/prefix"
  local out_dir="${OUT:-$build}"
  mkdir -p "$out_dir" "$build"
  local report="$out_dir/gpu-check.txt"
  local steps="${GPU_CHECK_STEPS:-20}"
  : >"$report"
  say() { echo "[gpu-check $((SECONDS - start)) s] $*"; }
  record() { echo "$*" | tee -a "$report"; }

  record "# workbench GPU check, $(date -u '+%Y-%m-%d %H:%M UTC'), commit $(git -C "$here" rev-parse --short=12 HEAD 2>/dev/null || echo unknown)"
  record "os: $(. /etc/os-release 2>/dev/null && echo "$PRETTY_NAME" || uname -a)"
  record "compiler: $(c++ --version | head -1)"
  record "cmake: $(cmake --version | head -1), ninja: $(ninja --version 2>/dev/null || echo none)"
  local python="${PYTHON:-python3}"
  local torch_prefix
  torch_prefix="$("$python" -c 'import torch; print(torch.utils.cmake_prefix_path)')"
  record "torch: $("$python" -c 'import torch; print(torch.__version__, "cuda", torch.version.cuda)')"
  record "gpu: $(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || echo 'nvidia-smi missing')"

  say "unpacking $(ls "$debs"/*.deb | wc -l) packages into $prefix"
  unpack "$prefix"
  # The wheel's headers may lack gloo's: take Debian's then (headers only, the wheel has the code).
  local torch_include="$torch_prefix/../../include"
  local extra_include=""
  [ -d "$torch_include/gloo" ] || extra_include="$prefix/usr/include"
  export LD_LIBRARY_PATH="$(prefix_library_path "$prefix")${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"

  say "configuring (torch from $torch_prefix)"
  local jobs
  jobs="$(nproc)"
  mapfile -t extra < <(prefix_cmake_args "$prefix")
  cmake -S "$here" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release \
    -DCMAKE_PREFIX_PATH="$torch_prefix;$prefix/usr" "${extra[@]}" \
    ${extra_include:+-DCMAKE_CXX_FLAGS=-isystem$extra_include} \
    -DWORKBENCH_USE_PCH=ON >"$build/configure.log" 2>&1 ||
    { tail -40 "$build/configure.log"; record "configure FAILED (build-gpu/configure.log)"; exit 1; }
  grep -E "LibTorch|NCCL|GROUPED" "$build/configure.log" | tee -a "$report" || true
  say "building with $jobs jobs"
  cmake --build "$build" -j "$jobs" >"$build/build.log" 2>&1 ||
    { grep -E "error|Error" "$build/build.log" | head -40; record "build FAILED (build-gpu/build.log)"; exit 1; }
  record "build: $((SECONDS - start)) s since start, warnings: $(grep -c 'warning:' "$build/build.log" || true)"

  say "CUDA tests, then the CPU tests of the dispatch, the precision and the host reads"
  local tests="$build/tests/wb_tests"
  local ok=1
  "$tests" -tc='cuda:*' -s 2>&1 | tail -40 | tee -a "$report" || ok=0
  "$tests" -tc='*dispatch*,*precision*,*host reads*,*masked reference*' 2>&1 | tail -5 |
    tee -a "$report" || ok=0
  record "tests: $([ $ok = 1 ] && echo passed || echo FAILED)"

  say "benchmarks: V-MoE-S/16 CR-MoE step, 224 px, batch 256, bf16, $steps steps each"
  local bench="$build/bin/workbench-bench"
  local config="$here/bench/crmoe_step_gpu.toml"
  "$bench" step --config "$config" --device cuda --steps "$steps" 2>&1 | tee -a "$report" || ok=0
  "$bench" step --config "$config" --device cuda --steps "$steps" --set backbone.experts=0 \
    --set backbone.moe_every=0 2>&1 | tee -a "$report" || ok=0
  record "PyTorch eager, the same step (images/s, then peak memory):"
  "$python" "$here/bench/pytorch_crmoe_step.py" --device cuda --precision bf16 --threads 8 \
    --batch 256 --image 224 --channels 3 --patch 16 --dim 384 --depth 12 --heads 6 \
    --experts 16 --k 2 --expert-hidden 768 --hidden 4096 --out 256 --steps "$steps" 2>&1 |
    tee -a "$report" || ok=0
  record "one MoE layer against the FLOP-matched dense MLP, V-MoE-S/16 sizes, bf16:"
  "$bench" moe --device cuda --precision bf16 --batch 256 --tokens 197 --dim 384 --naive 0 2>&1 |
    tee -a "$report" || ok=0
  record "total: $((SECONDS - start)) s; figures in $report"
  [ $ok = 1 ]
}

# The prefix path, configured here against the system's LibTorch with CMake pointed only at the
# prefix first for the other libraries: proves the package list complete (scripts/gpu-check.sh
# selftest; no GPU needed).
selftest() {
  local prefix="$deps/prefix-selftest" build="$here/build-gpu-selftest"
  unpack "$prefix"
  mapfile -t extra < <(prefix_cmake_args "$prefix")
  rm -rf "$build"
  cmake -S "$here" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release \
    -DCMAKE_PREFIX_PATH="$prefix/usr" \
    -DTorch_DIR=/usr/lib/x86_64-linux-gnu/cmake/Torch "${extra[@]}" | tail -5
  echo "found in the prefix:"
  grep -E "^(Boost|spdlog|fmt|tomlplusplus|HDF5_C_LIBRARY|HDF5_C_INCLUDE|PNG_LIBRARY|JPEG_LIBRARY|ZLIB_LIBRARY|doctest)[A-Za-z_]*(DIR|LIBRARY|INCLUDE_DIR)?:" \
    "$build/CMakeCache.txt" | grep -v NOTFOUND
  ! grep -E "^(Boost_DIR|spdlog_DIR|fmt_DIR|tomlplusplus_DIR|doctest_DIR):" "$build/CMakeCache.txt" |
    grep -v "$prefix" || { echo "selftest: something was found outside the prefix" >&2; exit 1; }
  echo "selftest: configure against the prefix passed"
}

case "${1:-}" in
  fetch) fetch ;;
  run) run ;;
  selftest) selftest ;;
  *)
    echo "usage: scripts/gpu-check.sh fetch | run | selftest" >&2
    exit 2
    ;;
esac
