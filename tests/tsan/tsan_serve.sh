#!/usr/bin/env bash
# tsan_serve.sh BIN SHARED - the TSan-built `shardlm serve` at world size 2
# under 8 concurrent clients (streamed and not, one cancelled mid-stream),
# then SIGTERM: the HTTP threads, the scheduler and the engine share state,
# and any TSan report (exit code 66) or wrong text fails the run. Meanwhile
# slow clients (a header byte every 0.3 s) and idle ones must be closed by
# the request deadline (--http-header-timeout 2), which races MHD's own
# closes, while the streams (slow under TSan) are not cut.
set -u
bin=$1; shared=$2
model=$shared/models/stories260K.gguf
if [ ! -r "$model" ]; then
  if [ "${CI:-}" = true ]; then echo "FAIL: $model missing under CI=true"; exit 1; fi
  echo "SKIP: $model missing"; exit 0
fi
export TSAN_OPTIONS="halt_on_error=1 exitcode=66"
work=$(mktemp -d); trap 'kill -KILL $srv 2>/dev/null; rm -rf "$work"' EXIT
port=$(( 21000 + $$ % 20000 ))
"$bin" serve -m "$model" --world-size 2 --threads 2 --port $port --http-header-timeout 2 2>"$work/serve.err" &
srv=$!
for _ in $(seq 600); do curl -sf -m 2 "http://127.0.0.1:$port/health" >/dev/null && break; sleep 0.1; done
want='Once upon a time, there was a little girl named Lily. She loved to play'
fail=0
# slow I / idle I: writes "closed" to $work/slowI (idleI) once the server closes it, within 20 s
slow() {
  trap '' PIPE
  exec 3<>"/dev/tcp/127.0.0.1/$port" || exit 1
  printf 'GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: ' >&3
  for _ in $(seq 66); do printf X >&3 2>/dev/null || { echo closed >"$work/slow$1"; exit 0; }; sleep 0.3; done
}
idle() {
  exec 3<>"/dev/tcp/127.0.0.1/$port" || exit 1
  local x rc=0
  read -r -t 20 -u 3 x || rc=$?
  [ "$rc" = 1 ] && echo closed >"$work/idle$1"
}
for i in 1 2 3 4 5 6; do (slow $i) & (idle $i) & done
for i in 1 2 3 4 5 6 7; do
  stream=$([ $((i % 2)) = 0 ] && echo true || echo false)
  curl -s -m 120 "http://127.0.0.1:$port/v1/completions" -H 'content-type: application/json' \
    -d "{\"prompt\":\"\",\"max_tokens\":20,\"temperature\":0,\"stream\":$stream}" >"$work/r$i" &
done
# one client that goes away mid-stream: its sequence must be cancelled
curl -s -m 1 -N "http://127.0.0.1:$port/v1/completions" -H 'content-type: application/json' \
  -d '{"prompt":"","max_tokens":2000,"temperature":0.8,"stream":true}' >/dev/null 2>&1 &
wait $(jobs -p | grep -v "^$srv$") 2>/dev/null
for i in 1 3 5 7; do grep -qF "\"text\":\"$want\"" "$work/r$i" || { echo "FAIL: client $i: $(head -c 300 "$work/r$i")"; fail=1; }; done
for i in 2 4 6; do
  grep -q '\[DONE\]' "$work/r$i" || { echo "FAIL: stream $i did not finish"; fail=1; }
done
for i in 1 2 3 4 5 6; do
  [ -f "$work/slow$i" ] || { echo "FAIL: slow client $i was not closed by the deadline"; fail=1; }
  [ -f "$work/idle$i" ] || { echo "FAIL: idle client $i was not closed by the deadline"; fail=1; }
done
kill -TERM $srv
rc=0; wait $srv || rc=$?
if [ $rc -ne 0 ]; then echo "FAIL: serve exited $rc"; tail -30 "$work/serve.err"; fail=1; fi
grep -q "ThreadSanitizer" "$work/serve.err" && { echo "FAIL: TSan report"; grep -A20 ThreadSanitizer "$work/serve.err" | head -40; fail=1; }
[ $fail -eq 0 ] && echo "ok: serve at world size 2 under 8 concurrent clients and 12 slow or idle ones, no TSan report"
exit $fail
