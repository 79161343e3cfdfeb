#!/usr/bin/env bash
# run.sh - supervision and healing of `shardlm serve` (ctest: heal_serve).
# World size 4 on stories260K, local workers, --max-seqs 1 so that one
# stream is in flight while the others queue behind it:
#   1. kill: 10 rounds, each a random worker SIGKILLed at a random point
#      while 4 streams are queued: the stream in flight gets an SSE error
#      naming the lost rank within --timeout-ms + 2 s, every other stream
#      completes (none vanishes), /health goes 503 and back to 200 within
#      15 s with rank 0 still the same process, the next request gives the
#      golden text, and exactly 3 workers are left (no orphan, no extra);
#   2. stop: a worker SIGSTOPped mid-stream (the collective timeout finds
#      it; it is SIGKILLed and restarted), and one SIGSTOPped while idle (the
#      heartbeats find it);
#   3. drain: SIGTERM with streams queued: new requests get 503
#      "draining", every stream finishes, serve and every worker exit 0.
#   run.sh SHARDLM_BIN SHARED_DIR
# Exit 0: passed; 77: skipped (no model, outside CI); else failed.
set -euo pipefail

BIN=${1:?usage: run.sh SHARDLM_BIN SHARED_DIR}
SHARED=${2:?usage: run.sh SHARDLM_BIN SHARED_DIR}
MODEL=$SHARED/models/stories260K.gguf
GOLD=$SHARED/models/stories260K.greedy.txt
TIMEOUT_MS=3000
SLACK_S=2
ROUNDS=${HEAL_ROUNDS:-10}
WORK=$(mktemp -d)
SRV=
ALL_WORKERS=()

TEST_NAME=heal FAIL_LOGS="$WORK/serve.err" FAIL_TAIL=25
# shellcheck source=../lib.sh
. "$(dirname "$0")/../lib.sh"
cleanup() {
  [ -n "$SRV" ] && kill -KILL "$SRV" 2>/dev/null || true
  for p in "${ALL_WORKERS[@]}"; do kill -KILL "$p" 2>/dev/null || true; done
  jobs -p | xargs -r kill 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

[ -f "$MODEL" ] && [ -f "$GOLD" ] || skip "$MODEL or $GOLD is missing"
[ -x "$BIN" ] || fail "$BIN is not executable"
command -v curl >/dev/null || fail "curl is not installed (scripts/install-deps.sh)"

now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", b - a }'; }
le() { awk -v a="$1" -v b="$2" 'BEGIN { exit !(a <= b) }'; }
# the golden text (256 greedy tokens after BOS), JSON-escaped as the server writes it
GOLD_ESC=$(sed -e 's/\\/\\\\/g' -e 's/"/\\"/g' "$GOLD" | awk 'NR > 1 { printf "\\n" } { printf "%s", $0 }')

PORT=$(( 20000 + ($$ * 13 + RANDOM) % 30000 ))
BASE=http://127.0.0.1:$PORT
"$BIN" serve -m "$MODEL" --world-size 4 --port "$PORT" --threads 1 --timeout-ms $TIMEOUT_MS --max-seqs 1 \
  --heartbeat-ms 300 --heartbeat-timeout-ms 2000 --drain-timeout 20 >"$WORK/serve.out" 2>"$WORK/serve.err" &
SRV=$!

health() { curl -s -m 2 -o "$WORK/health.body" -w '%{http_code}' "$BASE/health" 2>/dev/null || echo 000; }
wait_health_200() { # SECONDS: 0 when /health says 200 within that time
  local end; end=$(awk -v t="$(now)" -v s="$1" 'BEGIN { printf "%.2f", t + s }')
  while le "$(now)" "$end"; do [ "$(health)" = 200 ] && return 0; sleep 0.05; done
  return 1
}
wait_health_200 60 || fail "serve did not become healthy"

workers() { # rank -> pid of serve's children
  local p
  for p in $(pgrep -P "$SRV" || true); do
    tr '\0' '\n' <"/proc/$p/environ" 2>/dev/null | sed -n "s/^SHARDLM_RANK=\([0-9]*\)$/\1 $p/p"
  done | sort -n
}
worker_pid() { workers | awk -v r="$1" '$1 == r { print $2 }'; }
note_workers() { local p; for p in $(workers | awk '{ print $2 }'); do ALL_WORKERS+=("$p"); done; }
note_workers
[ "$(workers | wc -l)" = 3 ] || fail "expected 3 workers, got: $(workers | tr '\n' ' ')"

golden_request() {
  local r
  r=$(curl -s -m 30 "$BASE/v1/completions" -H 'content-type: application/json' \
    -d '{"prompt":"","max_tokens":256,"temperature":0}')
  case "$r" in *"\"text\":\"$GOLD_ESC\""*) return 0 ;; esac
  echo "$r" | head -c 400 >&2; echo >&2
  return 1
}
golden_request || fail "the first request did not give the golden text"
ok "world size 4 up, 3 workers, golden text"

# stream I MAX_TOKENS: a streamed greedy completion into $WORK/sI
stream() {
  curl -sN -m 60 "$BASE/v1/completions" -H 'content-type: application/json' \
    -d "{\"prompt\":\"\",\"max_tokens\":$2,\"temperature\":0,\"stream\":true}" >"$WORK/s$1" 2>&1
}
stream_text() { sed -n 's/^data: {.*"text":"\(.*\)","logprobs".*/\1/p' "$WORK/s$1" | tr -d '\n'; }
# check_stream I RANK: 0 when stream I finished (its text starts with the golden one), 2 when it
# ended with an error event naming rank RANK; 1 otherwise
check_stream() {
  grep -q '^data: \[DONE\]' "$WORK/s$1" || return 1
  if grep -q '^data: {"error"' "$WORK/s$1"; then
    grep '^data: {"error"' "$WORK/s$1" | grep -q "rank $2 is lost" && return 2
    return 1
  fi
  case "$(stream_text "$1")" in "$GOLD_ESC"*) return 0 ;; esac
  return 1
}
metric() { curl -s -m 2 "$BASE/metrics" | awk -v n="shardlm:$1" '$1 ~ "^"n"[{ ]" || $1 == n { print $2 }' | head -1; }

# incident KIND ROUND: queue 4 streams, hit a random worker with KIND (KILL or STOP) at a
# random point of the first, then check everything the round must show
ERRORS=0
incident() {
  local kind=$1 round=$2 rank pid i t_hit t_err=
  rank=$(( 1 + RANDOM % 3 ))
  pid=$(worker_pid "$rank")
  [ -n "$pid" ] || fail "round $round: no worker rank $rank"
  local reforms; reforms=$(metric cluster_reforms_total)
  local spids=()
  for i in 1 2 3 4; do stream "$round-$i" 2000 & spids+=("$!"); sleep 0.01; done
  for _ in $(seq 200); do grep -q '"text"' "$WORK/s$round-1" 2>/dev/null && break; sleep 0.01; done
  sleep "0.$(printf '%02d' $(( RANDOM % 30 )))"
  kill -"$kind" "$pid"
  t_hit=$(now)
  local seen503=0 code
  while :; do  # the streams end, /health turns 503 and then 200 again
    code=$(health)
    [ "$code" = 503 ] && { seen503=1; grep -q "rank $rank is lost" "$WORK/health.body" || fail "round $round: /health 503 does not name rank $rank: $(cat "$WORK/health.body")"; }
    if [ -z "$t_err" ]; then
      for i in 1 2 3 4; do grep -q '^data: {"error"' "$WORK/s$round-$i" 2>/dev/null && t_err=$(now); done
    fi
    [ "$(metric cluster_reforms_total)" != "$reforms" ] && [ "$code" = 200 ] && break
    le "$(elapsed "$t_hit" "$(now)")" 15 || fail "round $round ($kind rank $rank): /health not back to 200 within 15 s (last $code: $(cat "$WORK/health.body"))"
    sleep 0.05
  done
  local t_back; t_back=$(elapsed "$t_hit" "$(now)")
  for p in "${spids[@]}"; do wait "$p" || true; done
  local errs=0 rc
  for i in 1 2 3 4; do
    rc=0; check_stream "$round-$i" "$rank" || rc=$?
    [ "$rc" = 1 ] && fail "round $round: stream $i neither finished with the golden text nor got an error naming rank $rank: $(tail -c 300 "$WORK/s$round-$i")"
    [ "$rc" = 2 ] && errs=$(( errs + 1 ))
  done
  [ "$errs" -le 1 ] || fail "round $round: $errs streams failed; only the one in flight may"
  ERRORS=$(( ERRORS + errs ))
  local lat=-
  if [ -n "$t_err" ]; then
    lat=$(elapsed "$t_hit" "$t_err")
    le "$lat" "$(( TIMEOUT_MS / 1000 + SLACK_S ))" || fail "round $round: the error came $lat s after the $kind (limit $(( TIMEOUT_MS / 1000 + SLACK_S )) s)"
  fi
  kill -0 "$SRV" 2>/dev/null || fail "round $round: rank 0 exited"
  golden_request || fail "round $round: the request after re-forming did not give the golden text"
  [ "$(workers | wc -l)" = 3 ] || fail "round $round: expected 3 workers, got: $(workers | tr '\n' ' ')"
  [ "$(worker_pid "$rank")" != "$pid" ] || fail "round $round: rank $rank was not restarted"
  note_workers
  ok "round $round: $kind rank $rank: $errs stream(s) failed (error after $lat s), $(( 4 - errs )) finished; 503 seen: $seen503; /health 200 after $t_back s; golden text"
}

for r in $(seq "$ROUNDS"); do incident KILL "$r"; done
[ "$ERRORS" -ge 1 ] || fail "no round had a stream in flight when the worker died"
incident STOP stop
ok "$ROUNDS kill rounds and one stop round: $ERRORS stream(s) failed in flight, none lost"

# ---- a worker stopped while idle: only the heartbeats can tell ----
rank=$(( 1 + RANDOM % 3 )); pid=$(worker_pid "$rank")
reforms=$(metric cluster_reforms_total)
sleep 0.5
kill -STOP "$pid"; t0=$(now); seen=
while [ -z "$seen" ]; do
  [ "$(health)" = 503 ] && grep -q "rank $rank is lost: no answer to heartbeats" "$WORK/health.body" && seen=$(now)
  le "$(elapsed "$t0" "$(now)")" 8 || fail "idle stop of rank $rank: /health never said the heartbeats lost it: $(cat "$WORK/health.body")"
  sleep 0.05
done
wait_health_200 15 || fail "idle stop: /health not back to 200"
golden_request || fail "idle stop: no golden text after re-forming"
[ "$(worker_pid "$rank")" != "$pid" ] || fail "idle stop: rank $rank not restarted"
note_workers
ok "idle SIGSTOP of rank $rank: heartbeats lost it after $(elapsed "$t0" "$seen") s, back and golden"

# ---- drain on SIGTERM ----
spids=()
for i in 1 2 3 4; do stream "drain-$i" 2000 & spids+=("$!"); sleep 0.01; done
# SIGTERM only once every stream has been taken in (a request that reaches
# the server after it is rightly refused as new, which is not what this tests)
for _ in $(seq 500); do
  n=0; for i in 1 2 3 4; do grep -q '"text"' "$WORK/sdrain-$i" 2>/dev/null && n=$((n + 1)); done
  [ "$n" = 4 ] && break; sleep 0.01
done
[ "$n" = 4 ] || fail "drain: only $n of 4 streams had started after 5 s"
kill -TERM "$SRV"
sleep 0.05
r=$(curl -s -m 5 -w ' %{http_code}' "$BASE/v1/completions" -H 'content-type: application/json' \
  -d '{"prompt":"Once upon a time","max_tokens":5}' || true)
case "$r" in *draining*503) ;; *) fail "drain: a new request was not refused with 503 draining: $r" ;; esac
for p in "${spids[@]}"; do wait "$p" || true; done
for i in 1 2 3 4; do
  rc=0; check_stream "drain-$i" 0 || rc=$?
  [ "$rc" = 0 ] || fail "drain: stream $i did not finish: $(tail -c 300 "$WORK/sdrain-$i")"
done
rc=0
for _ in $(seq 300); do kill -0 "$SRV" 2>/dev/null || break; sleep 0.1; done
wait "$SRV" || rc=$?
SRV_DONE=$SRV; SRV=
[ "$rc" = 0 ] || fail "drain: serve exited $rc"
sleep 0.2
for p in "${ALL_WORKERS[@]}"; do kill -0 "$p" 2>/dev/null && fail "worker process $p outlived serve (orphan)"; done
pgrep -P "$SRV_DONE" >/dev/null && fail "serve's children outlived it"
ok "SIGTERM drained: new requests 503, 4 streams finished, serve exited 0, no process of ${#ALL_WORKERS[@]} left"
