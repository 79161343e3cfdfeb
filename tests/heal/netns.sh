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
TAG=$(printf '%04x' $(( ($$ * 11 + RANDOM) % 65536 )))
BR=shbr$TAG
NS=(); PIDS=()
WORK=$(mktemp -d)
skip() {
  if [ "${CI:-}" = true ]; then echo "heal_netns: FAIL (CI=true, must run): $*" >&2; exit 1; fi
  echo "SKIP: $*"; exit 77
}
fail() {
  echo "heal_netns: FAIL: $*" >&2
  for f in "$WORK"/*.err; do [ -f "$f" ] && { echo "--- $f" >&2; tail -12 "$f" >&2; }; done
  exit 1
}
ok() { echo "ok   $*"; }
cleanup() {
  for p in "${PIDS[@]}"; do kill -KILL "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  for n in "${NS[@]}"; do ip netns del "$n" 2>/dev/null || true; done
  ip link del "$BR" 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
[ -f "$MODEL" ] && [ -f "$GOLD" ] || skip "$MODEL or $GOLD is missing"
command -v ip >/dev/null || skip "iproute2 (ip) is not installed"
command -v curl >/dev/null || fail "curl is not installed"
ns_ip() { echo "10.214.0.$(( $1 + 1 ))"; }
make_ns() {
  local i=$1 n=sh$TAG-$1
  ip netns add "$n" 2>"$WORK/netns.log" || return 1
  NS+=("$n")
  ip link add "shv$TAG$i" type veth peer name "shp$TAG$i"
  ip link set "shp$TAG$i" netns "$n"
  ip link set "shv$TAG$i" master "$BR" up
  ip -n "$n" addr add "$(ns_ip "$i")/24" dev "shp$TAG$i"
  ip -n "$n" link set "shp$TAG$i" up
  ip -n "$n" link set lo up
}
ip link add "$BR" type bridge 2>"$WORK/netns.log" || skip "cannot create a bridge (needs root): $(cat "$WORK/netns.log")"
ip link set "$BR" up
make_ns 0 || skip "cannot create network namespaces (needs root): $(cat "$WORK/netns.log")"
for i in 1 2 3; do make_ns "$i" || fail "ip netns add failed"; done
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
ip -n "${NS[2]}" link set "shp${TAG}2" down
T0=$(now); t_err=; seen503=0; restored=0
while :; do
  code=$(health)
  [ "$code" = 503 ] && seen503=1
  [ -z "$t_err" ] && grep -q '^data: {"error".*rank 2 is lost' "$WORK"/s[1-4] 2>/dev/null && t_err=$(since "$T0")
  if [ "$restored" = 0 ] && [ "$seen503" = 1 ] && le 2 "$(since "$T0")"; then
    ip -n "${NS[2]}" link set "shp${TAG}2" up; restored=$(since "$T0")
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
