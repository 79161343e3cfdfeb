#!/usr/bin/env bash
# netns.sh - the partition test of serve's supervision (ctest: heal_netns).
# One rank per network namespace on a bridge (as tests/netns/run.sh), the
# workers started by hand with RING_CONFIG and --rejoin (what a supervisor
# would run). Mid-stream, rank 2's link is cut (no FIN, no RST): the stream
# in flight gets an SSE error naming rank 2 within --timeout-ms + 2 s,
# /health turns 503; the link comes back after 2 s and /health must be 200
# again within 15 s of the cut, rank 0 still the same process, and the next
# request gives the golden text; the queued streams complete.
#   netns.sh SHARDLM_BIN SHARED_DIR
# Exit 0: passed; 77: skipped (not root / no netns / no model, outside CI).
set -euo pipefail
BIN=${1:?usage: netns.sh SHARDLM_BIN SHARED_DIR}
SHARED=${2:?usage: netns.sh SHARDLM_BIN SHARED_DIR}
MODEL=$SHARED/models/stories260K.gguf
GOLD=$SHARED/models/stories260K.greedy.txt
TIMEOUT_MS=3000
PIDS=()
WORK=$(mktemp -d)
TEST_NAME=heal_netns FAIL_TAIL=12
# shellcheck source=../lib.sh
. "$(dirname "$0")/../lib.sh"
cleanup() { kill_all "${PIDS[@]}"; netns_down; rm -rf "$WORK"; }
trap cleanup EXIT
trap 'exit 130' INT TERM
[ -f "$MODEL" ] && [ -f "$GOLD" ] || skip "$MODEL or $GOLD is missing"
command -v curl >/dev/null || fail "curl is not installed"
netns_up sh 10.214.0 4
cfg() {
  local i=$1 f=$WORK/ring$1.json
  echo "{\"master_ip\": \"$(ns_ip 0)\", \"master_port\": 29410, \"port\": 29510, \"right_ip\": \"$(ns_ip $(( (i + 1) % 4 )))\", \"right_port\": 29510, \"rank\": $i, \"world_size\": 4}" >"$f"
  echo "$f"
}
for i in 1 2 3; do
  ip netns exec "${NS[$i]}" env RING_CONFIG="$(cfg "$i")" "$BIN" worker -m "$MODEL" --rejoin --threads 1 \
    --timeout-ms $TIMEOUT_MS >"$WORK/w$i.err" 2>&1 &
  PIDS+=("$!")
done
ip netns exec "${NS[0]}" env RING_CONFIG="$(cfg 0)" "$BIN" serve -m "$MODEL" --port 8080 --threads 1 \
  --timeout-ms $TIMEOUT_MS --max-seqs 1 --heartbeat-ms 300 --heartbeat-timeout-ms 2000 >"$WORK/serve.out" 2>"$WORK/serve.err" &
SRV=$!; PIDS+=("$SRV")
in0() { ip netns exec "${NS[0]}" "$@"; }
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.2f", b - a }'; }
le() { awk -v a="$1" -v b="$2" 'BEGIN { exit !(a <= b) }'; }
health() { in0 curl -s -m 2 -o "$WORK/health.body" -w '%{http_code}' http://127.0.0.1:8080/health 2>/dev/null || echo 000; }
for _ in $(seq 300); do [ "$(health)" = 200 ] && break; sleep 0.1; done
[ "$(health)" = 200 ] || fail "the namespaced cluster never became healthy"
GOLD_ESC=$(sed -e 's/\\/\\\\/g' -e 's/"/\\"/g' "$GOLD" | awk 'NR > 1 { printf "\\n" } { printf "%s", $0 }')
golden() {
  local r; r=$(in0 curl -s -m 30 http://127.0.0.1:8080/v1/completions -H 'content-type: application/json' \
    -d '{"prompt":"","max_tokens":256,"temperature":0}')
  case "$r" in *"\"text\":\"$GOLD_ESC\""*) return 0 ;; esac
  echo "$r" | head -c 300 >&2; return 1
}
golden || fail "no golden text before the cut"
ok "world size 4 across namespaces, golden text"
sp=()
for i in 1 2 3 4; do
  in0 curl -sN -m 60 http://127.0.0.1:8080/v1/completions -H 'content-type: application/json' \
    -d '{"prompt":"","max_tokens":2000,"temperature":0,"stream":true}' >"$WORK/s$i" 2>&1 &
  sp+=("$!"); sleep 0.01
done
for _ in $(seq 300); do grep -q '"text"' "$WORK/s1" 2>/dev/null && break; sleep 0.01; done
ns_link 2 down
T0=$(now); t_err=; seen503=0; restored=0
while :; do
  code=$(health)
  [ "$code" = 503 ] && seen503=1
  [ -z "$t_err" ] && grep -q '^data: {"error".*rank 2 is lost' "$WORK"/s[1-4] 2>/dev/null && t_err=$(since "$T0")
  if [ "$restored" = 0 ] && [ "$seen503" = 1 ] && le 2 "$(since "$T0")"; then
    ns_link 2 up; restored=$(since "$T0")
  fi
  [ "$restored" != 0 ] && [ "$code" = 200 ] && break
  le "$(since "$T0")" 15 || fail "/health not back to 200 within 15 s of the cut (last $code: $(cat "$WORK/health.body"))"
  sleep 0.05
done
back=$(since "$T0")
for p in "${sp[@]}"; do wait "$p" || true; done
[ -n "$t_err" ] || fail "no stream got an error naming rank 2"
le "$t_err" $(( TIMEOUT_MS / 1000 + 2 )) || fail "the error came $t_err s after the cut"
for i in 1 2 3 4; do
  grep -q '^data: \[DONE\]' "$WORK/s$i" || fail "stream $i did not end"
done
kill -0 "$SRV" 2>/dev/null || fail "rank 0 exited"
golden || fail "no golden text after the link came back"
ok "link of rank 2 cut: error after $t_err s, /health 503, link back at $restored s, 200 after $back s, golden text"
