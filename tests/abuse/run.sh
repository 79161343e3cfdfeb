#!/usr/bin/env bash
# run.sh - abuse test of `shardlm serve` (ctest: abuse_http). Serves
# stories260K at world size 2 with an API key read from a file, then
# abuse.mjs (node, no packages) measures a good request's normal latency
# and holds a 100 MB body, 500 slow clients (a header byte a second) and
# 1000 idle connections open while good requests must still return the
# golden text within 2 s of normal; the slow and idle ones must then be
# closed at --http-header-timeout (3 s here; --http-timeout is 30 s, so it
# is the deadline that closes them); a stream delayed past the deadline (a
# worker SIGSTOPped) must finish golden; --max-connections-per-ip's overflow
# is closed at once; also --max-prompt-tokens and a wrong key. serve's open
# descriptors are counted before and after (no leak).
#   run.sh SHARDLM_BIN SHARED_DIR
# Exit 0: passed; 77: skipped (no model or node, outside CI); else failed.
set -euo pipefail

BIN=${1:?usage: run.sh SHARDLM_BIN SHARED_DIR}
SHARED=${2:?usage: run.sh SHARDLM_BIN SHARED_DIR}
HERE=$(cd "$(dirname "$0")" && pwd)
MODEL=$SHARED/models/stories260K.gguf
REF=$SHARED/models/stories260K.runc-prompt.txt
WORK=$(mktemp -d)
SRV=

skip() {
  if [ "${CI:-}" = true ]; then echo "abuse: FAIL (CI): $*" >&2; exit 1; fi
  echo "abuse: SKIP: $*"; exit 77
}
fail() { echo "abuse: FAIL: $*" >&2; tail -30 "$WORK/serve.log" >&2; exit 1; }
cleanup() {
  if [ -n "$SRV" ]; then
    kill -TERM "$SRV" 2>/dev/null || true
    for _ in $(seq 100); do kill -0 "$SRV" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$SRV" 2>/dev/null || true
  fi
  rm -rf "$WORK"
}
trap cleanup EXIT

[ -f "$MODEL" ] && [ -f "$REF" ] || skip "$MODEL is missing"
command -v node >/dev/null || skip "node is not installed"
# 1500 held connections need as many descriptors in both processes
hard=$(ulimit -Hn); [ "$hard" = unlimited ] && hard=65536
[ "$hard" -ge 4000 ] || skip "the descriptor limit (ulimit -Hn $hard) is below 4000"
ulimit -n "$((hard < 8192 ? hard : 8192))"

HEADER_S=3 PER_IP=100
printf 'abuse-key\n' >"$WORK/key"   # the trailing newline a Secret file often has
node -e "const t=require('fs').readFileSync('$REF','utf8'); process.stdout.write(t.replace(/\n\$/,'').slice('Once upon a time'.length))" >"$WORK/want.txt"

"$BIN" serve -m "$MODEL" --world-size 2 --port 0 --api-key-file "$WORK/key" --max-prompt-tokens 64 \
  --max-body-kb 1024 --http-timeout 30 --http-header-timeout "$HEADER_S" --max-connections-per-ip "$PER_IP" \
  --heartbeat-timeout-ms 30000 >"$WORK/serve.log" 2>&1 &
SRV=$!
PORT=
for _ in $(seq 600); do
  PORT=$(sed -n 's|.*ready on http://127.0.0.1:\([0-9]*\).*|\1|p' "$WORK/serve.log" | head -1)
  [ -n "$PORT" ] && break
  kill -0 "$SRV" 2>/dev/null || fail "serve exited before it was ready"
  sleep 0.1
done
[ -n "$PORT" ] || fail "serve was not ready in 60 s"
fds() { ls "/proc/$SRV/fd" | wc -l; }
before=$(fds)
# the worker (serve's child) that abuse.mjs stops to delay a stream
WORKER=$(pgrep -P "$SRV" | head -1)
[ -n "$WORKER" ] || fail "serve has no worker process"

rc=0
timeout 300 node "$HERE/abuse.mjs" 127.0.0.1 "$PORT" abuse-key "$WORK/want.txt" "$HEADER_S" "$PER_IP" "$WORKER" || rc=$?
if [ "$rc" != 0 ]; then kill -CONT "$WORKER" 2>/dev/null || true; fail "abuse.mjs failed (rc $rc)"; fi

# every held connection is gone: serve's descriptors are back where they were
after=$(fds)
for _ in $(seq 50); do [ "$after" -le "$((before + 2))" ] && break; sleep 0.2; after=$(fds); done
echo "serve's descriptors: $before before, $after after"
[ "$after" -le "$((before + 2))" ] || fail "descriptors leaked: $before before, $after after"
kill -0 "$SRV" 2>/dev/null || fail "serve died"

# a missing or empty key file is refused by name at start-up
: >"$WORK/empty"
if out=$("$BIN" serve -m "$MODEL" --port 0 --api-key-file "$WORK/empty" 2>&1); then fail "an empty key file was accepted"; fi
grep -q -- "--api-key-file: secret file $WORK/empty is empty" <<<"$out" || fail "empty key file message: $out"
if out=$("$BIN" serve -m "$MODEL" --port 0 --api-key-file "$WORK/nope" 2>&1); then fail "a missing key file was accepted"; fi
grep -q -- "--api-key-file: cannot read secret file $WORK/nope: No such file" <<<"$out" || fail "missing key file message: $out"
echo "abuse: PASS"
