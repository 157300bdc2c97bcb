#!/usr/bin/env bash
# Plugins include only SDK headers (docs/plugins.md): every quoted #include under plugins/ and
# examples/ must name workbench/<header>.h, never a host header or another plugin's file.
set -euo pipefail
source="$1"
bad="$(grep -rn --include='*.cpp' --include='*.h' '^[[:space:]]*#[[:space:]]*include[[:space:]]*"' \
  "$source/plugins" "$source/examples" | grep -v '"workbench/[a-z_]*\.h"' || true)"
if [ -n "$bad" ]; then
  echo "plugins must include only SDK headers (workbench/*.h):"
  echo "$bad"
  exit 1
fi
count="$(grep -rln --include='*.cpp' '#include "workbench/plugin.h"' "$source/plugins" | wc -l)"
[ "$count" -gt 0 ] || { echo "no plugin found under $source/plugins"; exit 1; }
echo "$count plugin sources include only SDK headers"
