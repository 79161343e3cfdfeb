#!/usr/bin/env bash
# run.sh - multi-host test in network namespaces (ctest: netns_ring). Each
# rank runs in its own network namespace with its own IP on a private
# bridge, so the ring and the control channel cross real (virtual) links
# exactly as on separate machines, started by hand with RING_CONFIG files
# that use right_ip and master_ip:
#   1. `shardlm doctor` on 4 ranks at once passes, every hop on TCP (the
#      namespaces share one kernel, but shared memory must not cross them);
#   2. stories260K's greedy text comes out byte for byte at world sizes 2, 4;
#   3. (deploy/k8s/entrypoint.sh as a StatefulSet runs it, with the
#      manifests' environment and a pod restart: tests/netns/k8s.sh);
#   4. at world size 4, rank 2's link is taken down mid-generation (no FIN,
#      no RST: the peers only see silence); rank 0 must exit 1 naming
#      "rank 2" within the collective timeout + 2 s, and every rank must exit.
#   run.sh SHARDLM_BIN SHARED_DIR
# Exit 0: passed; 77: skipped (no privilege for namespaces, or no model,
# outside CI); anything else: failed. Under CI=true a skip is a failure.
set -euo pipefail

BIN=${1:?usage: run.sh SHARDLM_BIN SHARED_DIR}
SHARED=${2:?usage: run.sh SHARDLM_BIN SHARED_DIR}
MODEL=$SHARED/models/stories260K.gguf
GOLD=$SHARED/models/stories260K.greedy.txt
TIMEOUT_MS=3000         # collective timeout of the failure run
REPORT_SLACK_S=2        # rank 0 must report within TIMEOUT_MS + this
HARD_LIMIT_S=30         # any rank still running this long after link-down is a hang
PIDS=()
WORK=$(mktemp -d)
TEST_NAME=netns FAIL_LOGS="$WORK/*.err $WORK/*.log"
# shellcheck source=../lib.sh
. "$(dirname "$0")/../lib.sh"
cleanup() { kill_all "${PIDS[@]}"; netns_down; rm -rf "$WORK"; }
trap cleanup EXIT
trap 'exit 130' INT TERM

[ -f "$MODEL" ] && [ -f "$GOLD" ] || skip "$MODEL or $GOLD is missing"
[ -x "$BIN" ] || fail "$BIN is not executable"

# ---- topology: a bridge and one namespace per rank, 10.213.0.(i+1)/24 ----
netns_up sl 10.213.0 4
ok "bridge $BR and namespaces ${NS[*]}"

# write_cfg W I: rank I's RING_CONFIG for world size W, printed as its path
write_cfg() {
  local w=$1 i=$2 f=$WORK/ring$1-$2.json
  cat >"$f" <<EOF
{"master_ip": "$(ns_ip 0)", "master_port": 29400, "port": 29500,
 "right_ip": "$(ns_ip $(( (i + 1) % w )))", "right_port": 29500, "rank": $i, "world_size": $w}
EOF
  echo "$f"
}

# in_ns I CMD...: runs CMD in rank I's namespace in the background (PID in LAST)
in_ns() {
  local i=$1; shift
  ip netns exec "${NS[$i]}" "$@" &
  LAST=$!
  PIDS+=("$LAST")
}

# wait_exit PID SECONDS: its exit status, or 124 after killing it
wait_exit() {
  local pid=$1 end=$(( $(date +%s) + $2 ))
  while kill -0 "$pid" 2>/dev/null && [ "$(date +%s)" -lt "$end" ]; do sleep 0.05; done
  if kill -0 "$pid" 2>/dev/null; then kill -KILL "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; return 124; fi
  local rc=0
  wait "$pid" || rc=$?
  return "$rc"
}

# ---- 1. doctor on every rank at once ----
dpids=()
for i in 0 1 2 3; do
  in_ns "$i" "$BIN" doctor --ring-config "$(write_cfg 4 "$i")" --timeout-ms 10000 >"$WORK/doctor$i.log" 2>&1
  dpids+=("$LAST")
done
for i in 0 1 2 3; do
  rc=0; wait_exit "${dpids[$i]}" 30 || rc=$?
  [ "$rc" = 0 ] || fail "doctor on rank $i exited $rc: $(grep FAIL "$WORK/doctor$i.log" || true)"
done
for i in 0 1 2 3; do  # one host, but each rank in its own network namespace: every hop is TCP
  grep -q 'ok   transport    hop from left rank [0-9]: tcp (another network namespace); hop to right rank [0-9]: tcp (another network namespace)' \
    "$WORK/doctor$i.log" || fail "rank $i: hops not TCP across namespaces: $(grep transport "$WORK/doctor$i.log" || true)"
done
ok "doctor on 4 namespaces: $(grep -o 'latency [0-9]* us' "$WORK/doctor0.log"), every hop TCP (another network namespace)"

# ---- 2. golden text at world sizes 2 and 4 ----
golden() {
  local w=$1 wp=() i
  for (( i = 1; i < w; i++ )); do
    in_ns "$i" env RING_CONFIG="$(write_cfg "$w" "$i")" "$BIN" worker -m "$MODEL" >"$WORK/g$w-$i.log" 2>&1
    wp+=("$LAST")
  done
  in_ns 0 env RING_CONFIG="$(write_cfg "$w" 0)" "$BIN" generate -m "$MODEL" --temp 0 -n 256 \
    >"$WORK/g$w.out" 2>"$WORK/g$w.err"
  local rc=0
  wait_exit "$LAST" 120 || rc=$?
  [ "$rc" = 0 ] || fail "world size $w: generate exited $rc"
  for p in "${wp[@]}"; do rc=0; wait_exit "$p" 20 || rc=$?; [ "$rc" = 0 ] || fail "world size $w: a worker exited $rc"; done
  cmp -s "$WORK/g$w.out" "$GOLD" || fail "world size $w: output differs from $GOLD"
  ok "world size $w across namespaces: greedy text identical to stories260K.greedy.txt"
}
golden 2
golden 4

# ---- 3. the Kubernetes entrypoint: tests/netns/k8s.sh (ctest netns_k8s) ----

# ---- 4. a link goes silent mid-generation ----
SLOW=$WORK/slow.gguf
"$BIN" synth -o "$SLOW" --dim 512 --layers 8 --heads 8 --kv-heads 4 --ffn 1376 --vocab 2048 --type f32 \
  --context 8192 --seed 7 >"$WORK/synth.log" 2>&1 || fail "synth failed"
wp=()
for i in 1 2 3; do
  # a worker that lost its link while waiting for rank 0's next step only
  # learns it at the idle timeout: keep that short so every rank must exit
  in_ns "$i" env RING_CONFIG="$(write_cfg 4 "$i")" "$BIN" worker -m "$SLOW" --timeout-ms "$TIMEOUT_MS" \
    --idle-timeout-ms 8000 >"$WORK/f$i.err" 2>&1
  wp+=("$LAST")
done
in_ns 0 env RING_CONFIG="$(write_cfg 4 0)" "$BIN" generate -m "$SLOW" -n 100000 --timeout-ms "$TIMEOUT_MS" \
  >"$WORK/f0.out" 2>"$WORK/f0.err"
G=$LAST
for _ in $(seq 600); do [ "$(stat -c %s "$WORK/f0.out" 2>/dev/null || echo 0)" -ge 40 ] && break; sleep 0.1; done
[ "$(stat -c %s "$WORK/f0.out")" -ge 40 ] || fail "the failure run never started generating"
kill -0 "$G" 2>/dev/null || fail "generation ended before the link went down"
ns_link 2 down
T0=$(date +%s%N)
rc=0; wait_exit "$G" "$HARD_LIMIT_S" || rc=$?
T1=$(date +%s%N)
MS=$(( (T1 - T0) / 1000000 ))
[ "$rc" != 124 ] || fail "rank 0 still running ${HARD_LIMIT_S} s after the link went down"
[ "$rc" = 1 ] || fail "rank 0 exited $rc, expected 1"
grep -q "rank 2 is lost" "$WORK/f0.err" || fail "rank 0 did not name rank 2: $(tail -2 "$WORK/f0.err")"
grep -q "rank 1 is lost\|rank 3 is lost" "$WORK/f0.err" && fail "rank 0 blamed a healthy rank: $(tail -2 "$WORK/f0.err")"
[ "$MS" -le $(( TIMEOUT_MS + REPORT_SLACK_S * 1000 )) ] ||
  fail "rank 0 took $MS ms after link-down, over the ${TIMEOUT_MS} ms timeout + ${REPORT_SLACK_S} s"
ok "link of rank 2 down: rank 0 exited 1 after $MS ms: $(grep 'rank 2 is lost' "$WORK/f0.err" | head -1)"
for i in 1 2 3; do
  rc=0; wait_exit "${wp[$((i - 1))]}" "$HARD_LIMIT_S" || rc=$?
  [ "$rc" != 124 ] || fail "worker rank $i still running ${HARD_LIMIT_S} s after the link went down"
  # rank 1 may have sent its part before the link died and then taken rank
  # 0's Shutdown (exit 0); ranks 2 and 3 lost their ring connection
  [ "$i" = 1 ] || [ "$rc" != 0 ] || fail "worker rank $i exited 0 after losing the ring"
done
ok "every rank exited ($(( ($(date +%s%N) - T0) / 1000000 )) ms after link-down)"
echo "netns: PASS"
