#!/usr/bin/env bash
# k8s.sh - deploy/k8s simulated in network namespaces (ctest: netns_k8s).
# The cpu overlay is rendered with kustomize and its StatefulSet's container
# environment, arguments and mounts are read out of it (tests/k8s/
# manifests.mjs), so every "pod" runs the image's entrypoint with exactly the
# manifest's env: pod shardlm-K in its own namespace, its host name, an
# /etc/hosts standing in for the headless service, its own directories for
# its mounts (the per-pod claim, /tmp) and the Secret's files. A "kubelet"
# loop per pod restarts its container when it exits (restartPolicy Always),
# and the readiness probe is the manifest's exec probe, run in the pod.
#   1. all 4 pods become Ready (rank 0: /health 200; workers: ready file);
#   2. a completion from another pod, with the Secret's API key, is the greedy
#      text; without the key it is 401;
#   3. pod shardlm-3's process is SIGKILLed; its kubelet restarts it, and
#      within RECOVER_S the cluster is Ready again and serves the greedy text,
#      the restarted worker taking its shard from its own volume (no transfer).
#      Rank 0 heals (docs/DEPLOY.md): its container must not restart (its
#      HTTP server and queue outlive the loss); the surviving workers are told
#      to re-form and, without --rejoin, exit and are restarted; the test
#      prints which pods restarted;
#   4. deleting the pods (SIGTERM to rank 0) stops every rank with status 0
#      and removes the workers' ready files.
#   k8s.sh SHARDLM_BIN SHARED_DIR SOURCE_DIR
# Exit 0: passed; 77: skipped (no privilege for namespaces, no model or a
# missing tool, outside CI); anything else: failed. Under CI=true a skip is a failure.
set -euo pipefail

BIN=$(cd "$(dirname "${1:?usage: k8s.sh SHARDLM_BIN SHARED_DIR SOURCE_DIR}")" && pwd)/$(basename "$1")
SHARED=${2:?usage: k8s.sh SHARDLM_BIN SHARED_DIR SOURCE_DIR}
SRC=$(cd "${3:?usage: k8s.sh SHARDLM_BIN SHARED_DIR SOURCE_DIR}" && pwd)
MODEL=$SHARED/models/stories260K.gguf
ENTRY=$SRC/deploy/k8s/entrypoint.sh
TOOLS=${SHARDLM_K8S_TOOLS:-$SRC/.cache/k8s-tools}
GOLD='"text":"Once upon a time, there was a little girl named Lily. She loved to play"'
UP_S=180        # first bring-up: every pod Ready
RECOVER_S=240   # after the kill: Ready again and serving
MAX_RESTARTS=30 # a kubelet loop gives up after this many container restarts
WORK=$(mktemp -d)
LOOPS=()
TEST_NAME=netns_k8s FAIL_LOGS="$WORK/pod*/log" FAIL_TAIL=20
# shellcheck source=../lib.sh
. "$(dirname "$0")/../lib.sh"

cleanup() {  # never fails part-way: every step runs
  set +e
  touch "$WORK/stop"
  kill_pods() { local i; for i in 0 1 2 3; do [ -f "$WORK/pod$i/pid" ] && kill -KILL "$(cat "$WORK/pod$i/pid")" 2>/dev/null; done; }
  kill_pods
  for p in "${LOOPS[@]}"; do kill -KILL "$p" 2>/dev/null; wait "$p" 2>/dev/null; done
  kill_pods  # one a loop started while dying
  netns_down
  if [ -n "${SHARDLM_KEEP_LOGS:-}" ]; then  # a directory to keep each pod's log in
    mkdir -p "$SHARDLM_KEEP_LOGS"
    for i in 0 1 2 3; do cp "$WORK/pod$i/log" "$SHARDLM_KEEP_LOGS/pod$i.log" 2>/dev/null; done
  fi
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

[ -f "$MODEL" ] || skip "$MODEL is missing"
command -v ip >/dev/null || skip "iproute2 (ip) is not installed"
command -v curl >/dev/null || skip "curl is not installed"
command -v node >/dev/null && command -v npm >/dev/null || skip "node/npm are not installed"
command -v unzip >/dev/null || skip "unzip is not installed (scripts/install-deps.sh)"
[ -x "$BIN" ] || fail "$BIN is not executable"
"$SRC/tests/k8s/install-tools.sh" "$TOOLS" || fail "tests/k8s/install-tools.sh failed"

# ---- the pod spec, from the rendered cpu overlay ----
cp -r "$SRC/deploy/k8s" "$WORK/k8s"
rm -rf "$WORK/k8s/base/secrets"
"$WORK/k8s/make-secrets.sh" >/dev/null
cp -r "$WORK/k8s/base/secrets" "$WORK/secrets"  # the Secret's files, as its volume shows them
(cd "$TOOLS" && ./kubectl kustomize "$WORK/k8s/overlays/cpu") >"$WORK/cpu.yaml" 2>"$WORK/render.err" ||
  fail "kustomize: $(cat "$WORK/render.err")"
(cd "$TOOLS" && node "$SRC/tests/k8s/manifests.mjs" env "$WORK/cpu.yaml") >"$WORK/pod.env" || fail "manifests.mjs env"
WORLD=$(sed -n 's/^SHARDLM_WORLD_SIZE=//p' "$WORK/pod.env")
[ "$WORLD" = 4 ] || fail "the cpu overlay's world size is '$WORLD', this test runs 4 pods"
SVC=$(sed -n 's/^SHARDLM_SERVICE=//p' "$WORK/pod.env")
KEY=$(cat "$WORK/secrets/api-key")
READY=$(sed -n 's/^SHARDLM_READY_FILE=//p' "$WORK/pod.env")
[ -n "$READY" ] || fail "the manifest sets no SHARDLM_READY_FILE"

# pod_path I PATH: where the pod's path lies here: under its own directory
# for each of its volumes, the one Secret directory for the secret volume
pod_path() {
  local i=$1 p=$2 m v
  while read -r _ m v; do
    case $p in
      "$m"|"$m"/*)
        if [ "$v" = secrets ]; then echo "$WORK/secrets${p#"$m"}"; else echo "$WORK/pod$i/$v${p#"$m"}"; fi
        return ;;
    esac
  done < <(grep '^#mount ' "$WORK/pod.env")
  echo "$p"
}
# pod_env I: the manifest's env for pod I, one NAME=VALUE a line, paths mapped
pod_env() {
  local i=$1 line name val
  echo "HOSTNAME=shardlm-$i"
  echo "PATH=$(dirname "$BIN"):/usr/local/bin:/usr/bin:/bin"
  echo "SHARDLM_RING_CONFIG_PATH=$(pod_path "$i" /tmp/ring.json)"  # the entrypoint's default, in the pod's /tmp
  while IFS= read -r line; do
    case $line in
      '#from SHARDLM_THREADS') echo "SHARDLM_THREADS=1" ;;  # limits.cpu, scaled to this machine
      '#from '*) fail "the manifest sets ${line#\#from } from a valueFrom this test does not simulate" ;;
      '#'*) ;;
      *) name=${line%%=*}; val=${line#*=}; echo "$name=$(pod_path "$i" "$val")" ;;
    esac
  done <"$WORK/pod.env"
}
mapfile -t ARGS < <(sed -n 's/^#arg //p' "$WORK/pod.env")

# ---- topology: a bridge, one namespace per pod, names as the headless service gives them ----
netns_up sk 10.214.0 4
for i in 0 1 2 3; do
  n=${NS[$i]}
  mkdir -p "/etc/netns/$n"  # `ip netns exec` mounts it over /etc/hosts
  { echo "127.0.0.1 localhost"; for j in 0 1 2 3; do echo "$(ns_ip "$j") shardlm-$j.$SVC shardlm-$j"; done; } >"/etc/netns/$n/hosts"
  while read -r _ m v; do [ "$v" = secrets ] || mkdir -p "$WORK/pod$i/$v"; done < <(grep '^#mount ' "$WORK/pod.env")
  pod_env "$i" >"$WORK/pod$i/env"
done
cp "$MODEL" "$(pod_path 0 "$(sed -n 's/^SHARDLM_MODEL=//p' "$WORK/pod.env")")"  # what kubectl cp puts on rank 0's claim
ok "4 pods in namespaces ${NS[*]}, env from the rendered cpu overlay: $(grep -c = "$WORK/pod.env") variables, args ${ARGS[*]}"

# ---- the kubelet: runs a pod's container, and again whenever it exits ----
kubelet() {
  local i=$1 n=0 rc
  while [ ! -e "$WORK/stop" ] && [ "$n" -lt "$MAX_RESTARTS" ]; do
    mapfile -t envs <"$WORK/pod$i/env"
    ip netns exec "${NS[$i]}" env -i "${envs[@]}" "$ENTRY" "${ARGS[@]}" >>"$WORK/pod$i/log" 2>&1 &
    echo $! >"$WORK/pod$i/pid"
    rc=0; wait $! || rc=$?
    echo "container exited $rc" >>"$WORK/pod$i/log"
    echo "$rc" >>"$WORK/pod$i/exits"
    n=$((n + 1))
    sleep 1  # kubelet's back-off, shortened
  done
}
start_pods() { for i in 3 2 1 0; do kubelet "$i" & LOOPS+=("$!"); done; }
probe() {  # probe I: the manifest's readinessProbe, run in pod I
  mapfile -t envs <"$WORK/pod$1/env"
  ip netns exec "${NS[$1]}" env -i "${envs[@]}" timeout 5 "$ENTRY" probe >/dev/null 2>&1
}
all_ready() { for i in 0 1 2 3; do probe "$i" || return 1; done; }
restarts() { [ -f "$WORK/pod$1/exits" ] && wc -l <"$WORK/pod$1/exits" || echo 0; }
complete() {  # complete [KEY]: a completion sent from pod 1 to rank 0, as a client of the API service would
  local auth=()
  [ -z "${1:-}" ] || auth=(-H "authorization: Bearer $1")
  ip netns exec "${NS[1]}" curl -s -m 30 "${auth[@]}" "http://$(ns_ip 0):8080/v1/completions" \
    -H 'content-type: application/json' -d '{"prompt":"","max_tokens":20,"temperature":0}' 2>&1 || true
}

# ---- 1. every pod Ready ----
start_pods
T0=$(date +%s)
until all_ready; do
  [ $(( $(date +%s) - T0 )) -lt "$UP_S" ] || fail "the pods were not all Ready within $UP_S s"
  sleep 0.5
done
ok "all 4 pods Ready after $(( $(date +%s) - T0 )) s (rank 0: /health 200; ranks 1-3: their ready files)"
for i in 1 2 3; do grep -q "received .* of weights from rank 0" "$WORK/pod$i/log" || fail "pod $i did not get its shard from rank 0"; done
# With --cluster-token-file the entrypoint passes the Secret's token and rank 0
# must not warn that its ports are open; without it, the entrypoint says so.
serve_help=$("$BIN" serve --help)  # not piped into grep -q: pipefail and SIGPIPE
if printf '%s\n' "$serve_help" | grep -q -- --cluster-token-file; then
  ! grep -q "no cluster token\|NOT authenticated" "$WORK/pod0/log" ||
    fail "rank 0 runs without the Secret's cluster token: $(grep -m1 "no cluster token\|NOT authenticated" "$WORK/pod0/log")"
else
  grep -q "ranks are NOT authenticated" "$WORK/pod0/log" || fail "rank 0 said nothing about the missing cluster token"
fi

# ---- 2. the API, from another pod, with and without the Secret's key ----
body=$(complete "$KEY")
case $body in *"$GOLD"*) ;; *) fail "completion with the API key: $body" ;; esac
body=$(complete)
case $body in *invalid_api_key*) ;; *) fail "completion without the API key was not refused: $body" ;; esac
ok "completion from pod 1 to 0.0.0.0:8080 with the Secret's API key is the greedy text; without it 401"

# ---- 3. a pod's process is killed; its container restarts ----
before=(); for i in 0 1 2 3; do before+=("$(restarts "$i")"); done
cache_hits=$(grep -c "weights from the cache" "$WORK/pod3/log" || true)
kill -KILL "$(cat "$WORK/pod3/pid")"
T0=$(date +%s)
first=$(complete "$KEY")  # the request that meets the lost rank
served=0
while [ $(( $(date +%s) - T0 )) -lt "$RECOVER_S" ]; do
  if all_ready; then
    body=$(complete "$KEY")
    case $body in *"$GOLD"*) served=1; break ;; esac
  fi
  sleep 1
done
[ "$served" = 1 ] || fail "the cluster did not serve the greedy text again within $RECOVER_S s of the kill (last: ${body:-none})"
REC=$(( $(date +%s) - T0 ))
r=(); for i in 0 1 2 3; do r+=("$(( $(restarts "$i") - before[i] ))"); done
[ "${r[3]}" -ge 1 ] || fail "pod 3 was killed but its container did not restart"
[ "${r[0]}" = 0 ] || fail "rank 0's container restarted ${r[0]} time(s) after a worker was lost: it should have re-formed the cluster"
[ "$(grep -c "weights from the cache" "$WORK/pod3/log" || true)" -gt "$cache_hits" ] ||
  fail "the restarted pod 3 did not take its shard from its own volume"
echo "     the request that met the lost rank got: $(printf '%s' "$first" | head -c 200)"
ok "pod 3 SIGKILLed: Ready and serving the greedy text again after $REC s; container restarts per pod 0-3: ${r[*]}; pod 3 loaded its shard from its volume"

# ---- 4. the pods are deleted: SIGTERM, every rank exits 0 ----
touch "$WORK/stop"
pids=(); for i in 0 1 2 3; do pids+=("$(cat "$WORK/pod$i/pid")"); done
kill -TERM "${pids[0]}"
for p in "${LOOPS[@]}"; do
  end=$(( $(date +%s) + 30 ))
  while kill -0 "$p" 2>/dev/null && [ "$(date +%s)" -lt "$end" ]; do sleep 0.2; done
  kill -0 "$p" 2>/dev/null && fail "a pod was still running 30 s after rank 0's SIGTERM"
done
LOOPS=()
for i in 0 1 2 3; do
  [ "$(tail -1 "$WORK/pod$i/exits")" = 0 ] || fail "pod $i's last container exited $(tail -1 "$WORK/pod$i/exits")"
  [ "$i" = 0 ] || [ ! -e "$(pod_path "$i" "$READY")" ] || fail "pod $i's ready file outlived it"
done
ok "SIGTERM to rank 0: every pod exited 0, no ready file left"
echo "netns_k8s: PASS"
