# lib.sh - what the shell tests share: skip/fail/ok reporting, reaping what
# they started, and ranks in network namespaces on a private bridge (real
# links between ranks without real machines).
#
# Source it after setting TEST_NAME and WORK (a scratch directory). On a
# failure the files matching FAIL_LOGS (globs, default $WORK/*.err) are
# tailed (FAIL_LOGS= for none). A skip exits 77, which ctest reads as skipped, except under
# CI=true, where a test that cannot run is a failure.
# shellcheck shell=bash

NS=()
BR=

skip() {
  if [ "${CI:-}" = true ]; then echo "$TEST_NAME: FAIL (CI=true, must run): $*" >&2; exit 1; fi
  echo "SKIP: $*"; exit 77
}
fail() {
  echo "$TEST_NAME: FAIL: $*" >&2
  local g f
  for g in ${FAIL_LOGS-"$WORK/*.err"}; do
    for f in $g; do [ -f "$f" ] && { echo "--- $f" >&2; tail -"${FAIL_TAIL:-15}" "$f" >&2; }; done
  done
  exit 1
}
ok() { echo "ok   $*"; }

# kill_all PID...: SIGKILL then reap each; never fails, so cleanups run whole.
kill_all() {
  local p
  for p in "$@"; do kill -KILL "$p" 2>/dev/null || true; done
  for p in "$@"; do wait "$p" 2>/dev/null || true; done
}

# stop_all PID...: SIGTERM, up to 5 s for each to exit, then SIGKILL; never fails.
stop_all() {
  local p
  for p in "$@"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "$@"; do
    for _ in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$p" 2>/dev/null || true
  done
}

# netns_up PREFIX SUBNET N: a bridge and namespaces 0..N-1, namespace i at
# SUBNET.(i+1)/24 with lo up. Sets BR and NS (names unique per run, so
# parallel runs do not clash); skips when the caller lacks the privilege.
netns_up() {
  local pfx=$1 i n
  NETNS_PFX=$1 NETNS_SUBNET=$2
  TAG=$(printf '%04x' $(( ($$ * 7 + RANDOM) % 65536 )))
  BR=${pfx}br$TAG
  NS=()
  command -v ip >/dev/null || skip "iproute2 (ip) is not installed"
  ip link add "$BR" type bridge 2>"$WORK/netns.log" ||
    skip "cannot create a bridge (needs root/CAP_NET_ADMIN): $(cat "$WORK/netns.log")"
  ip link set "$BR" up
  for ((i = 0; i < $3; i++)); do
    n=$pfx$TAG-$i
    if ! ip netns add "$n" 2>"$WORK/netns.log"; then
      [ "$i" = 0 ] && skip "cannot create network namespaces (needs root/CAP_SYS_ADMIN): $(cat "$WORK/netns.log")"
      fail "ip netns add: $(cat "$WORK/netns.log")"
    fi
    NS+=("$n")
    ip link add "${pfx}v$TAG$i" type veth peer name "${pfx}p$TAG$i"
    ip link set "${pfx}p$TAG$i" netns "$n"
    ip link set "${pfx}v$TAG$i" master "$BR" up
    ip -n "$n" addr add "$(ns_ip "$i")/24" dev "${pfx}p$TAG$i"
    ip -n "$n" link set "${pfx}p$TAG$i" up
    ip -n "$n" link set lo up
  done
}
ns_ip() { echo "$NETNS_SUBNET.$(( $1 + 1 ))"; }
# ns_link I up|down: namespace I's link to the bridge (a cut sends no FIN, no RST).
ns_link() { ip -n "${NS[$1]}" link set "${NETNS_PFX}p$TAG$1" "$2"; }

# netns_down: removes what netns_up made (and /etc/netns/NAME, which
# `ip netns exec` mounts over /etc); never fails.
netns_down() {
  local n
  for n in "${NS[@]}"; do ip netns del "$n" 2>/dev/null || true; rm -rf "/etc/netns/$n"; done
  [ -n "${BR:-}" ] && ip link del "$BR" 2>/dev/null || true
}
