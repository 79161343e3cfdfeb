#!/usr/bin/env bash
# entrypoint.sh - deploy/k8s/entrypoint.sh on its own (ctest: k8s_entrypoint),
# with a stand-in `shardlm` on PATH whose --help has, or lacks, the auth
# flags: the RING_CONFIG and command of each pod, the refusals (world size
# not a power of two, an ordinal past it, no API key, a missing token file,
# a host name without an ordinal), the secrets passed as flags or as
# SHARDLM_API_KEY, and the probe of a worker.
#   entrypoint.sh SOURCE_DIR
set -euo pipefail
SRC=$(cd "${1:?usage: entrypoint.sh SOURCE_DIR}" && pwd)
ENTRY=$SRC/deploy/k8s/entrypoint.sh
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
fail() { echo "k8s_entrypoint: FAIL: $*" >&2; exit 1; }
ok() { echo "ok   $*"; }

# a stand-in shardlm: --help lists the auth flags when FAKE_AUTH=1; a run
# prints its arguments and the API key it was given in the environment
mkdir -p "$WORK/bin" "$WORK/secrets"
cat >"$WORK/bin/shardlm" <<'EOF'
#!/bin/sh
if [ "${2:-}" = --help ]; then
  echo "usage: shardlm $1"
  [ "${FAKE_AUTH:-0}" = 1 ] && echo "  --cluster-token-file FILE" && echo "  --api-key-file FILE"
  exit 0
fi
echo "ran: $* key=${SHARDLM_API_KEY:-none} ring=${RING_CONFIG:-none}"
EOF
chmod +x "$WORK/bin/shardlm"
printf 'tok' >"$WORK/secrets/cluster-token"
printf 'sekrit' >"$WORK/secrets/api-key"
printf 'gguf' >"$WORK/model.gguf"

# pod NAME WORLD [VAR=VALUE...]: runs the entrypoint as pod NAME; output in OUT, status in RC
pod() {
  local name=$1 world=$2
  shift 2
  RC=0
  OUT=$(env -i PATH="$WORK/bin:/usr/bin:/bin" HOSTNAME="$name" SHARDLM_WORLD_SIZE="$world" \
    SHARDLM_MODEL="$WORK/model.gguf" SHARDLM_RING_CONFIG_PATH="$WORK/ring-$name.json" \
    SHARDLM_READY_FILE="$WORK/ready-$name" SHARDLM_CLUSTER_TOKEN_FILE="$WORK/secrets/cluster-token" \
    SHARDLM_API_KEY_FILE="$WORK/secrets/api-key" "$@" sh "$ENTRY" --timeout-ms 5000 2>&1) || RC=$?
}
expect() {  # expect RC PHRASE WHAT
  [ "$RC" = "$1" ] || fail "$3: exit $RC, expected $1: $OUT"
  case $OUT in *"$2"*) ;; *) fail "$3: output lacks '$2': $OUT" ;; esac
}

# ---- the command and RING_CONFIG of each rank ----
pod shardlm-0 4
expect 0 "ran: serve -m $WORK/model.gguf --host 0.0.0.0 --port 8080 --timeout-ms 5000 key=sekrit ring=$WORK/ring-shardlm-0.json" "rank 0"
expect 0 "this shardlm has no --cluster-token-file: rank-to-rank connections are NOT authenticated" "rank 0 without auth"
pod shardlm-3 4
expect 0 "ran: worker --weights-from rank0 --ready-file $WORK/ready-shardlm-3 --timeout-ms 5000 key=none" "rank 3"
grep -q '"right_ip": "shardlm-0.shardlm"' "$WORK/ring-shardlm-3.json" || fail "rank 3 does not close the ring"
grep -q '"master_ip": "shardlm-0.shardlm"' "$WORK/ring-shardlm-3.json" || fail "rank 3: master_ip"
grep -q '"world_size": 4' "$WORK/ring-shardlm-3.json" || fail "rank 3: world_size"
grep -q '"rank": 3' "$WORK/ring-shardlm-3.json" || fail "rank 3: rank"
pod web-1 2 SHARDLM_SERVICE=web-svc SHARDLM_THREADS=3
expect 0 "--timeout-ms 5000 --threads 3" "threads"
grep -q '"right_ip": "web-0.web-svc"' "$WORK/ring-web-1.json" || fail "StatefulSet and service names: $(cat "$WORK/ring-web-1.json")"
pod shardlm-0 1
expect 0 "ring=none" "world size 1 (no ring)"
ok "rank 0 serves, ranks 1..3 are workers with --weights-from rank0 and a ready file; the ring closes on rank 0"

# ---- the secrets as flags, when this shardlm has them ----
pod shardlm-0 2 FAKE_AUTH=1
expect 0 "serve -m $WORK/model.gguf --host 0.0.0.0 --port 8080 --api-key-file $WORK/secrets/api-key --cluster-token-file $WORK/secrets/cluster-token --timeout-ms 5000 key=none" "rank 0 with auth"
pod shardlm-1 2 FAKE_AUTH=1
expect 0 "worker --weights-from rank0 --ready-file $WORK/ready-shardlm-1 --cluster-token-file $WORK/secrets/cluster-token --timeout-ms 5000" "worker with auth"
ok "token and key passed as --cluster-token-file / --api-key-file when shardlm has them, else the key as SHARDLM_API_KEY"

# ---- refusals ----
pod shardlm-1 3; expect 2 "SHARDLM_WORLD_SIZE=3 is not a power of two" "world size 3"
pod shardlm-4 4; expect 2 "pod shardlm-4 is rank 4 but SHARDLM_WORLD_SIZE=4" "ordinal past the world"
pod shardlm-0 0; expect 2 "SHARDLM_WORLD_SIZE=0: at least 1 rank" "world size 0"
pod shardlm-0 '$(SHARDLM_REPLICAS)'; expect 2 "is not a number: set it to the StatefulSet's replicas" "world size not set"
pod shardlm-0 set-by-the-overlay; expect 2 "is not a number" "base without an overlay"
pod shardlm 4; expect 2 "does not end in -ORDINAL" "no ordinal"
pod shardlm-01 4; expect 2 "does not end in -ORDINAL" "ordinal with a leading zero"
pod shardlm-0 2 SHARDLM_API_KEY_FILE="$WORK/none"; expect 2 "has no API key" "no API key"
pod shardlm-0 2 SHARDLM_API_KEY_FILE="$WORK/none" SHARDLM_ALLOW_NO_API_KEY=1; expect 0 "ran: serve" "no API key, allowed"
pod shardlm-1 2 SHARDLM_CLUSTER_TOKEN_FILE="$WORK/none"; expect 2 "SHARDLM_CLUSTER_TOKEN_FILE=$WORK/none does not exist" "missing token"
pod shardlm-0 2 SHARDLM_MODEL="$WORK/none.gguf"; expect 1 "the model $WORK/none.gguf does not exist" "no model"
pod shardlm-0 2 SHARDLM_MODEL_WAIT_S=soon; expect 2 "SHARDLM_MODEL_WAIT_S='soon': expected whole seconds" "wait not a number"
( sleep 1; printf 'gguf' >"$WORK/late.gguf" ) &
pod shardlm-0 2 SHARDLM_MODEL="$WORK/late.gguf" SHARDLM_MODEL_WAIT_S=20
wait
expect 0 "ran: serve -m $WORK/late.gguf" "a model copied in late"
expect 0 "entrypoint: waiting for $WORK/late.gguf (0 of 20 s); copy it in with kubectl cp" "the wait's message"
ok "rank 0 waits for a model copied in after it started (SHARDLM_MODEL_WAIT_S)"
ok "refused: world size 3, 0 or unset, ordinal 4 of 4, no ordinal, no API key, a missing token file, no model"

# ---- the probe of a worker, and a stale ready file ----
touch "$WORK/ready-shardlm-2"
pod shardlm-2 4
[ ! -e "$WORK/ready-shardlm-2" ] || fail "the entrypoint left a stale ready file"
RC=0; OUT=$(HOSTNAME=shardlm-2 SHARDLM_READY_FILE="$WORK/ready-shardlm-2" sh "$ENTRY" probe 2>&1) || RC=$?
expect 1 "rank 2: not joined to rank 0" "probe without the file"
touch "$WORK/ready-shardlm-2"
RC=0; OUT=$(HOSTNAME=shardlm-2 SHARDLM_READY_FILE="$WORK/ready-shardlm-2" sh "$ENTRY" probe 2>&1) || RC=$?
[ "$RC" = 0 ] || fail "probe with the ready file: exit $RC: $OUT"
ok "worker probe: 1 without its ready file, 0 with it; a stale file is removed at start"
echo "k8s_entrypoint: PASS"
