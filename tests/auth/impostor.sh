#!/usr/bin/env bash
# impostor.sh - the cluster token end to end (ctest: impostor_e2e). Rank 0
# (`serve`, RING_CONFIG on loopback, --cluster-token-file) waits for its
# worker while impostors try the control port: a worker with a wrong token,
# one with none, and 64 KiB of random bytes. Each must be refused, rank 0
# must log the refusal with the source address, and the wrong-token worker
# must exit 2 naming the token. Then the real worker joins and the answer
# is the golden text; garbage sent to the control and ring ports after
# start-up must not disturb serving. Late peers at the control port (wrong
# token, none, garbage) are refused within 5 s and logged; a late one with
# the right token is refused as "the cluster is complete"; the ring ports
# refuse connections once the ring has formed.
#   impostor.sh SHARDLM_BIN SHARED_DIR
# Exit 0: passed; 77: skipped (no model or curl, outside CI); else failed.
set -euo pipefail

BIN=${1:?usage: impostor.sh SHARDLM_BIN SHARED_DIR}
SHARED=${2:?usage: impostor.sh SHARDLM_BIN SHARED_DIR}
MODEL=$SHARED/models/stories260K.gguf
REF=$SHARED/models/stories260K.runc-prompt.txt
WORK=$(mktemp -d)
PIDS=()

TEST_NAME=impostor FAIL_LOGS="$WORK/*.log"
# shellcheck source=../lib.sh
. "$(dirname "$0")/../lib.sh"
cleanup() { stop_all "${PIDS[@]}"; rm -rf "$WORK"; }
trap cleanup EXIT
[ -f "$MODEL" ] && [ -f "$REF" ] || skip "$MODEL is missing"
command -v curl >/dev/null || skip "curl is not installed"
unset SHARDLM_CLUSTER_TOKEN SHARDLM_CLUSTER_TOKEN_FILE

# three consecutive free ports: control, rank 0's ring, rank 1's ring
P=$((20000 + $$ % 20000))
cfg() { # cfg RANK PORT RIGHT_PORT
  printf '{"master_ip":"127.0.0.1","master_port":%d,"port":%d,"right_ip":"127.0.0.1","right_port":%d,"rank":%d,"world_size":2}\n' \
    "$P" "$2" "$3" "$1" >"$WORK/ring$1.json"
}
cfg 0 $((P + 1)) $((P + 2)); cfg 1 $((P + 2)) $((P + 1))
printf 'the-real-token\n' >"$WORK/good"; printf 'not-the-token\n' >"$WORK/bad"

RING_CONFIG=$WORK/ring0.json "$BIN" serve -m "$MODEL" --port 0 --cluster-token-file "$WORK/good" \
  --connect-timeout-ms 60000 >"$WORK/rank0.log" 2>&1 &
PIDS+=($!); R0=$!
for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$P") 2>/dev/null && break; sleep 0.1; done

refusals() { grep -c "refused a control connection from 127.0.0.1:" "$WORK/rank0.log" || true; }
expect_refusal() { # expect_refusal N WHAT: the Nth refusal is logged within 10 s
  for _ in $(seq 100); do [ "$(refusals)" -ge "$1" ] && { ok "$2: refused, logged with the source address"; return; }; sleep 0.1; done
  fail "$2: no refusal logged by rank 0"
}

# a worker with the wrong token
rc=0; RING_CONFIG=$WORK/ring1.json timeout 30 "$BIN" worker -m "$MODEL" --cluster-token-file "$WORK/bad" \
  >"$WORK/bad.log" 2>&1 || rc=$?
[ "$rc" = 2 ] || fail "the wrong-token worker exited $rc, not 2"
grep -qi "token" "$WORK/bad.log" || fail "the wrong-token worker's message does not name the token: $(cat "$WORK/bad.log")"
expect_refusal 1 "wrong token"
# a worker with no token at all
rc=0; RING_CONFIG=$WORK/ring1.json timeout 30 "$BIN" worker -m "$MODEL" >"$WORK/none.log" 2>&1 || rc=$?
[ "$rc" != 0 ] || fail "the worker without a token joined"
expect_refusal 2 "no token"
# random bytes
head -c 65536 /dev/urandom >"$WORK/garbage"
timeout 10 bash -c "cat '$WORK/garbage' >/dev/tcp/127.0.0.1/$P" 2>/dev/null || true
expect_refusal 3 "64 KiB of garbage"
kill -0 "$R0" 2>/dev/null || fail "rank 0 died"

# the real worker
RING_CONFIG=$WORK/ring1.json "$BIN" worker -m "$MODEL" --cluster-token-file "$WORK/good" >"$WORK/rank1.log" 2>&1 &
PIDS+=($!)
PORT=
for _ in $(seq 600); do
  PORT=$(sed -n 's|.*ready on http://127.0.0.1:\([0-9]*\).*|\1|p' "$WORK/rank0.log" | head -1)
  [ -n "$PORT" ] && break; sleep 0.1
done
[ -n "$PORT" ] || fail "the cluster did not form with the real worker"
WANT=$(sed -e '$!b' -e 's/\n$//' "$REF" | tr -d '\r')
WANT=${WANT#Once upon a time}
golden() {
  got=$(curl -sS --max-time 30 "http://127.0.0.1:$PORT/v1/completions" -H 'Content-Type: application/json' \
    -d '{"prompt":"Once upon a time","max_tokens":60,"temperature":0}' |
    sed -n 's/.*"text":"\([^"]*\)".*/\1/p')
  [ "$got" = "$(printf '%s' "$WANT" | sed 's/$/\\n/' | tr -d '\n' | sed 's/\\n$//')" ] || fail "$1: text differs: $got"
  ok "$1: golden text"
}
golden "after the impostors"

# garbage at every port once the cluster runs: serving goes on
for port in "$P" $((P + 1)) $((P + 2)); do
  timeout 5 bash -c "cat '$WORK/garbage' >/dev/tcp/127.0.0.1/$port" 2>/dev/null || true
done
# the ring listeners close once the ring has formed: a late connect is refused
for port in $((P + 1)) $((P + 2)); do
  err=$(timeout 5 bash -c "exec 3<>/dev/tcp/127.0.0.1/$port" 2>&1) && fail "ring port $port still accepts connections"
  case $err in *"refused"*) ok "ring port $port after formation: connection refused" ;;
    *) fail "ring port $port after formation: not refused: $err" ;; esac
done
# Late peers, once the cluster has formed: rank 0 answers its control port
# from a thread of its own. Each is refused within 5 s and logged with its
# source address, and serving goes on.
late_refused() { # late_refused N WHAT PATTERN: N late refusals are logged, the last names the source IP:PORT and PATTERN
  for _ in $(seq 100); do
    if [ "$(refusals)" -ge $((n0 + $1)) ]; then
      grep "refused a control connection from" "$WORK/rank0.log" | tail -1 |
        grep -qE "from 127\.0\.0\.1:[0-9]+: .*$3" || fail "$2: the refusal does not say '$3': $(tail -1 "$WORK/rank0.log")"
      ok "$2: refused, logged with the source address"; return
    fi
    sleep 0.1
  done
  fail "$2: no refusal logged by rank 0"
}
within5() { # within5 WHAT CMD...: CMD ends (rank 0 closed on it) within 5 s; its status is in $rc
  local t0; t0=$(date +%s%N); rc=0
  timeout 5 "${@:2}" || rc=$?
  [ "$rc" != 124 ] || fail "$1: the connection was not closed by rank 0 within 5 s"
  echo "$1: closed after $((($(date +%s%N) - t0) / 1000000)) ms (exit $rc)"
}
LATE=(env RING_CONFIG="$WORK/ring1.json" "$BIN" worker -m "$MODEL" --connect-timeout-ms 30000)
n0=$(refusals)
within5 "a late wrong-token worker" "${LATE[@]}" --cluster-token-file "$WORK/bad" >"$WORK/late_bad.log" 2>&1
[ "$rc" = 2 ] || fail "the late wrong-token worker exited $rc, not 2"
grep -q "token" "$WORK/late_bad.log" || fail "the late wrong-token worker does not name the token: $(cat "$WORK/late_bad.log")"
late_refused 1 "a late wrong-token worker" "wrong cluster token"
within5 "a late worker without a token" "${LATE[@]}" >"$WORK/late_none.log" 2>&1
[ "$rc" != 0 ] || fail "the late worker without a token joined"
late_refused 2 "a late worker without a token" "no cluster-token handshake"
within5 "64 KiB of garbage at the control port" \
  bash -c "exec 3<>/dev/tcp/127.0.0.1/$P; cat '$WORK/garbage' >&3 2>/dev/null; cat <&3 >/dev/null" 2>/dev/null
late_refused 3 "late garbage" "no cluster-token handshake"
# the right token while every rank is connected: held 10 s for a
# re-formation that does not come, then refused with the reason
rc=0; timeout 30 "${LATE[@]}" --cluster-token-file "$WORK/good" >"$WORK/late_good.log" 2>&1 || rc=$?
[ "$rc" = 2 ] || fail "a late worker with the right token exited $rc, not 2: $(tail -2 "$WORK/late_good.log")"
grep -q "cluster is complete" "$WORK/late_good.log" || fail "the late right-token worker was not told why: $(cat "$WORK/late_good.log")"
late_refused 4 "a late worker with the right token" "proved the cluster token as rank 1, but the cluster is complete"
golden "after garbage at the control and ring ports and the late peers"
kill -0 "$R0" 2>/dev/null || fail "rank 0 died"
echo "impostor: PASS"
