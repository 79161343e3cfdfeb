#!/usr/bin/env bash
# cli-docs.sh [SHARDLM_BIN] - rewrites docs/CLI.md's generated flag tables
# (between '<!-- BEGIN flags' and '<!-- END flags -->') from the flag table,
# as tests/cli/docs_check.sh expects them.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${1:-build/release/shardlm}
gen=$(mktemp)
trap 'rm -f "$gen"' EXIT
"$BIN" help --markdown >"$gen"
awk -v gen="$gen" '
  /^<!-- BEGIN flags/ {print; while ((getline l < gen) > 0) print l; skip=1; next}
  /^<!-- END flags -->/ {skip=0}
  !skip' docs/CLI.md >docs/CLI.md.new
mv docs/CLI.md.new docs/CLI.md
