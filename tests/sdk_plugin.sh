#!/usr/bin/env bash
# Installs the SDK from the build tree into a temporary prefix, builds the out-of-tree example
# plugin against it with find_package(workbench), and checks that the installed host loads it.
set -euo pipefail
build="$1" source="$2" out="$3"
rm -rf "$out" && mkdir -p "$out"
cmake --install "$build" --prefix "$out/prefix" > "$out/install.log"
cmake -S "$source/examples/centre_matcher" -B "$out/build" -G Ninja -DCMAKE_BUILD_TYPE=Release \
  -DCMAKE_PREFIX_PATH="$out/prefix" > "$out/configure.log"
cmake --build "$out/build" > "$out/build.log"
listing="$("$out/prefix/bin/workbench" plugins --plugin-path "$out/build")"
echo "$listing"
grep -q "^matcher centre_distance " <<< "$listing" || { echo "centre_distance not listed"; exit 1; }
grep -q "max_distance = 0.5" <<< "$listing" || { echo "parameter default not listed"; exit 1; }
if grep -q "^FAILED.*centre_matcher" <<< "$listing"; then echo "example failed to load"; exit 1; fi
