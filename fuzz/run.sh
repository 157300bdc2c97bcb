#!/usr/bin/env bash
# Builds and runs the fuzz targets (see docs/fuzzing.md).
#   fuzz/run.sh build BUILD_DIR                 configure + build them with clang
#   fuzz/run.sh run BUILD_DIR SECONDS TARGET... run targets for SECONDS each (built already)
#   fuzz/run.sh all BUILD_DIR SECONDS           both, every target
# Targets: experiment idx cifar image. Seeds: fuzz/corpus/TARGET (and experiments/ for
# experiment); what the fuzzer adds goes to BUILD_DIR/corpus/TARGET, findings (the crashing
# input) to BUILD_DIR/findings/TARGET/. Exits non-zero on a finding.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
all_targets=(experiment idx cifar image)

build() {
  local dir="$1" cxx cc
  cxx="${WORKBENCH_FUZZ_CXX:-$(command -v clang++-14 || command -v clang++ || true)}"
  cc="${WORKBENCH_FUZZ_CC:-$(command -v clang-14 || command -v clang || true)}"
  if [ -z "$cxx" ] || [ -z "$cc" ]; then
    echo "fuzz/run.sh: no clang found (Debian: apt-get install clang libclang-rt-14-dev)" >&2
    exit 1
  fi
  cmake -S "$here/fuzz" -B "$dir" -G Ninja -DCMAKE_BUILD_TYPE=None \
    -DCMAKE_CXX_COMPILER="$cxx" -DCMAKE_C_COMPILER="$cc" >/dev/null
  cmake --build "$dir" -j "${WORKBENCH_FUZZ_JOBS:-2}"
}

run() {
  local dir="$1" seconds="$2" target
  shift 2
  for target in "$@"; do
    local seeds=("$here/fuzz/corpus/$target")
    [ "$target" = experiment ] && seeds+=("$here/experiments")
    mkdir -p "$dir/corpus/$target" "$dir/findings/$target"
    echo "== fuzz_$target for ${seconds} s"
    # -rss_limit_mb / -malloc_limit_mb: an allocation a lying header could cause is a finding.
    local log="$dir/fuzz_$target.log" status=0
    "$dir/fuzz_$target" -max_total_time="$seconds" -timeout=20 -rss_limit_mb=2560 \
      -malloc_limit_mb=1024 -print_final_stats=1 -artifact_prefix="$dir/findings/$target/" \
      "$dir/corpus/$target" "${seeds[@]}" >"$log" 2>&1 || status=$?
    if [ "$status" -ne 0 ]; then
      tail -n 60 "$log" >&2
      echo "fuzz_$target: finding (exit $status), input in $dir/findings/$target/" >&2
      exit 1
    fi
    grep -E '^(INFO: seed corpus|#[0-9]+ *(INITED|DONE))|^stat::(number_of_executed_units|new_units_added)' "$log" || true
  done
}

case "${1:-}" in
  build) build "$2" ;;
  run) run "$2" "$3" "${@:4}" ;;
  all)
    build "$2"
    run "$2" "$3" "${all_targets[@]}"
    ;;
  *)
    sed -n 2,8p "${BASH_SOURCE[0]}" >&2
    exit 2
    ;;
esac
