#!/usr/bin/env bash
# run.sh - chat templates against the reference renderer (ctest:
# chat_templates_reference). Installs @huggingface/jinja (pinned in
# package.json; the engine transformers.js uses) into .cache/, renders every
# case of tests/data/chat_fixtures/*.json with it and with shardlm's engine
# (chat_render), and compares the two byte for byte (compare.mjs); then the
# same for 600 random templates (random_cases.mjs, a fixed seed: expressions
# and whitespace control) wherever the reference renders them. It also
# checks that tests/data/chat_fixtures/reference.json, which test_chat.c
# pins without npm, is what the reference renders today.
#   run.sh CHAT_RENDER_BIN SHARED_DIR
# Exit 0: passed; 77: skipped (no templates, node or npm outside CI); else failed.
set -euo pipefail

BIN=${1:?usage: run.sh CHAT_RENDER_BIN SHARED_DIR}
SHARED=${2:?usage: run.sh CHAT_RENDER_BIN SHARED_DIR}
HERE=$(cd "$(dirname "$0")" && pwd)
SRC=$(cd "$HERE/../.." && pwd)
TEMPLATES=$SHARED/models/templates
FIXTURES=()
for f in "$SRC"/tests/data/chat_fixtures/*.json; do
  [ "$(basename "$f")" = reference.json ] || FIXTURES+=("$f")
done
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

TEST_NAME=jinja
# shellcheck source=../lib.sh
. "$(dirname "$0")/../lib.sh"
[ -d "$TEMPLATES" ] || skip "$TEMPLATES is missing"
command -v node >/dev/null && command -v npm >/dev/null || skip "node/npm are not installed"

CACHE=${SHARDLM_JINJA_CACHE:-$SRC/.cache/jinja-reference}
mkdir -p "$CACHE"
cp "$HERE"/package.json "$HERE"/*.mjs "$CACHE/"
WANT=$(node -p "require('$HERE/package.json').dependencies['@huggingface/jinja']")
HAVE=$(node -p "try { require('$CACHE/node_modules/@huggingface/jinja/package.json').version } catch { '' }")
if [ "$HAVE" != "$WANT" ]; then
  echo "jinja: installing @huggingface/jinja@$WANT into $CACHE"
  (cd "$CACHE" && timeout 300 npm install --no-audit --no-fund --loglevel=error) || {
    echo "jinja: FAIL: npm install failed" >&2; exit 1; }
fi

# the clock is the fixtures' "now"; strftime_now reads it in local time
export TZ=UTC LANG=en_US.UTF-8
node "$CACHE/render.mjs" "$TEMPLATES" "${FIXTURES[@]}" >"$WORK/reference.json"
"$BIN" "$TEMPLATES" "${FIXTURES[@]}" >"$WORK/shardlm.json"
node "$CACHE/compare.mjs" "$WORK/reference.json" "$WORK/shardlm.json" "${FIXTURES[@]}"
# random templates (fixed seed): wherever the reference renders, the same bytes
node "$CACHE/random_cases.mjs" "$WORK/random" 600 20261207
RANDOM_FX=("$WORK"/random/*.json)
node "$CACHE/render.mjs" "$WORK/random" "${RANDOM_FX[@]}" >"$WORK/random-ref.json"
"$BIN" "$WORK/random" "${RANDOM_FX[@]}" >"$WORK/random-ours.json"
node "$CACHE/compare_random.mjs" "$WORK/random-ref.json" "$WORK/random-ours.json"
if ! cmp -s "$WORK/reference.json" "$SRC/tests/data/chat_fixtures/reference.json"; then
  diff "$SRC/tests/data/chat_fixtures/reference.json" "$WORK/reference.json" | head -20 >&2 || true
  echo "jinja: FAIL: tests/data/chat_fixtures/reference.json is stale (regenerate: node render.mjs ... > it)" >&2
  exit 1
fi
echo "jinja: reference.json is current"
