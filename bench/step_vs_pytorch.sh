#!/usr/bin/env bash
# Training images/s of the quickstart model (dense ViT 64 / 4 / 4 heads, 4-pixel patches on
# 28 x 28 grey images, classify loss, AdamW, batch 128): the workbench's own step (`workbench
# bench step`, wb::train_step on a pre-made batch) against the same model and step written in
# plain PyTorch (bench/pytorch_supervised_step.py), same threads and batch, alternating runs.
# Usage: bench/step_vs_pytorch.sh [BUILD_DIR] [THREADS] [STEPS] [ROUNDS]
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
build="${1:-$here/../build}"
threads="${2:-2}"
steps="${3:-30}"
rounds="${4:-3}"
exe="$build/bin/workbench"
[[ -x "$exe" ]] || { echo "no $exe: build first (scripts/setup.sh build)"; exit 1; }

cpp_all=() py_all=()
for ((r = 1; r <= rounds; ++r)); do
  cpp="$("$exe" bench step --config "$here/../experiments/quickstart.toml" --threads "$threads" \
    --steps "$steps" | awk '/^images_per_s/ {print $2}')"
  py="$(/usr/bin/python3 "$here/pytorch_supervised_step.py" --threads "$threads" --steps "$steps")"
  echo "round $r: workbench $cpp images/s, PyTorch $py images/s"
  cpp_all+=("$cpp") py_all+=("$py")
done
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR] = $1} END {print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2}'; }
c="$(median "${cpp_all[@]}")" p="$(median "${py_all[@]}")"
awk -v c="$c" -v p="$p" -v t="$threads" 'BEGIN { printf "median of rounds, %d threads: workbench %.1f images/s, PyTorch %.1f images/s: ratio %.2fx\n", t, c, p, c / p }'
