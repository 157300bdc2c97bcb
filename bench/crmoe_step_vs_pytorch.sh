#!/usr/bin/env bash
# Images/s of one CR-MoE training step (V-MoE 192 / 6 / 3 heads, 16 experts top-2 every other
# block, batch 128, moco + load_balance + ogar): the workbench (`workbench bench step`, which
# also times the step without ogar) against the same step in plain PyTorch, same threads and
# batch. Usage: bench/crmoe_step_vs_pytorch.sh [BUILD_DIR] [THREADS] [STEPS]
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
build="${1:-$here/../build}"
threads="${2:-2}"
steps="${3:-20}"
exe="$build/bin/workbench"
[[ -x "$exe" ]] || { echo "no $exe: build first (cmake -S . -B build -G Ninja && ninja -C build)"; exit 1; }

echo "== workbench (C++), $threads threads, $steps timed steps"
cpp_out="$("$exe" bench step --config "$here/crmoe_step.toml" --threads "$threads" --steps "$steps" --without ogar)"
echo "$cpp_out"
cpp="$(awk '/^images_per_s/ {print $2}' <<< "$cpp_out")"

echo
echo "== plain PyTorch (Python), $threads threads, $steps timed steps"
py="$(/usr/bin/python3 "$here/pytorch_crmoe_step.py" --threads "$threads" --steps "$steps")"
py_noogar="$(/usr/bin/python3 "$here/pytorch_crmoe_step.py" --threads "$threads" --steps "$steps" --no-ogar)"
echo "PyTorch step: $py images/s (without ogar: $py_noogar images/s)"

echo
awk -v c="$cpp" -v p="$py" 'BEGIN { printf "workbench %.1f images/s, PyTorch %.1f images/s: ratio %.2fx\n", c, p, c / p }'
