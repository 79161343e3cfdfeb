#!/bin/sh
# entrypoint.sh - one rank of a shardlm StatefulSet (deploy/k8s). The pod's
# ordinal (the number at the end of its host name, shardlm-3 -> 3) is its
# rank; it writes its RING_CONFIG from that and starts rank 0 as `serve`,
# the others as `worker --weights-from rank0` (only rank 0 needs the model).
#
#   shardlm-entrypoint [ARGS...]  run this pod's rank; ARGS go to `shardlm serve`
#                                 (rank 0) or `shardlm worker` (the others)
#   shardlm-entrypoint probe      the readiness probe: rank 0 is ready when GET /health
#                                 is 200 (every rank joined and loaded); a worker when
#                                 its --ready-file exists (joined rank 0 and loaded)
#
#   SHARDLM_WORLD_SIZE   ranks in the StatefulSet; kustomize copies spec.replicas here
#                        (deploy/k8s/base/kustomization.yaml); a power of two
#   SHARDLM_SERVICE      the headless service name (default: shardlm)
#   SHARDLM_MODEL        GGUF path on rank 0 (default: /data/model.gguf)
#   SHARDLM_MODEL_WAIT_S rank 0 waits this long for the model to appear (default 0)
#   SHARDLM_THREADS      kernel threads (--threads), e.g. the pod's CPU limit
#   SHARDLM_HTTP_PORT    rank 0's HTTP port (default 8080)
#   SHARDLM_RING_PORT    every rank's ring port (default 29500)
#   SHARDLM_CTRL_PORT    rank 0's control port (default 29400)
#   SHARDLM_READY_FILE   a worker's ready file (default /tmp/shardlm-ready)
#   SHARDLM_CLUSTER_TOKEN_FILE  the cluster token (default /etc/shardlm/secrets/cluster-token)
#   SHARDLM_API_KEY_FILE rank 0's API key (default /etc/shardlm/secrets/api-key)
#   SHARDLM_ALLOW_NO_API_KEY=1  let rank 0 serve 0.0.0.0 without an API key
#   SHARDLM_DRY_RUN=1    print the RING_CONFIG and the command instead of running
set -eu
die() { echo "entrypoint: $*" >&2; exit 2; }

host=${HOSTNAME:-$(hostname)}
rank=${host##*-}
set_name=${host%-*}
case $rank in
  ''|*[!0-9]*|0?*) die "host name '$host' does not end in -ORDINAL (not a StatefulSet pod?)" ;;
esac
http_port=${SHARDLM_HTTP_PORT:-8080}
ready_file=${SHARDLM_READY_FILE:-/tmp/shardlm-ready}

if [ "${1:-}" = probe ]; then
  if [ "$rank" -eq 0 ]; then
    command -v curl >/dev/null || die "probe: curl is not installed"
    exec curl -sf -m 2 -o /dev/null "http://127.0.0.1:$http_port/health"
  fi
  [ -f "$ready_file" ] || { echo "rank $rank: not joined to rank 0 ($ready_file is absent)" >&2; exit 1; }
  exit 0
fi

world=${SHARDLM_WORLD_SIZE:-}
case $world in
  ''|*[!0-9]*|0?*) die "SHARDLM_WORLD_SIZE='$world' is not a number: set it to the StatefulSet's replicas" \
                       "(kustomize does: kubectl apply -k deploy/k8s/overlays/cpu)" ;;
esac
[ "$world" -ge 1 ] || die "SHARDLM_WORLD_SIZE=$world: at least 1 rank"
[ $((world & (world - 1))) -eq 0 ] ||
  die "SHARDLM_WORLD_SIZE=$world is not a power of two (1, 2, 4, 8...): shardlm splits heads and rows by powers" \
      "of two; set the StatefulSet's replicas to one"
[ "$rank" -lt "$world" ] ||
  die "pod $host is rank $rank but SHARDLM_WORLD_SIZE=$world (ranks 0..$((world - 1))): replicas and" \
      "SHARDLM_WORLD_SIZE disagree, or this pod is left over from a larger StatefulSet"
svc=${SHARDLM_SERVICE:-shardlm}
ring_port=${SHARDLM_RING_PORT:-29500}
ctrl_port=${SHARDLM_CTRL_PORT:-29400}
cmd=serve
[ "$rank" -eq 0 ] || cmd=worker
shardlm_has() { shardlm "$cmd" --help 2>/dev/null | grep -q -- "$1"; }

# The cluster token authenticates rank-to-rank connections: passed on when
# this shardlm has --cluster-token-file, else named as missing.
tok_set=${SHARDLM_CLUSTER_TOKEN_FILE+x}
tok=${SHARDLM_CLUSTER_TOKEN_FILE:-/etc/shardlm/secrets/cluster-token}
if [ -f "$tok" ]; then
  if shardlm_has --cluster-token-file; then
    set -- --cluster-token-file "$tok" "$@"
    echo "entrypoint: rank-to-rank connections prove the cluster token in $tok (--cluster-token-file)" >&2
  else
    echo "entrypoint: warning: this shardlm has no --cluster-token-file: rank-to-rank connections are NOT" \
         "authenticated; keep the ctrl and ring ports on a private network" >&2
  fi
elif [ -n "$tok_set" ]; then
  die "SHARDLM_CLUSTER_TOKEN_FILE=$tok does not exist (is the Secret mounted?)"
fi

if [ "$rank" -eq 0 ]; then
  key=${SHARDLM_API_KEY_FILE:-/etc/shardlm/secrets/api-key}
  if [ -f "$key" ]; then
    [ -s "$key" ] || die "the API key file $key is empty"
    if shardlm_has --api-key-file; then
      set -- --api-key-file "$key" "$@"
    else  # serve reads the key from SHARDLM_API_KEY
      SHARDLM_API_KEY=$(cat "$key")
      export SHARDLM_API_KEY
    fi
  elif [ -z "${SHARDLM_API_KEY:-}" ] && [ "${SHARDLM_ALLOW_NO_API_KEY:-0}" != 1 ]; then
    die "rank 0 serves 0.0.0.0:$http_port but has no API key: mount the Secret's api-key at $key" \
        "(or set SHARDLM_API_KEY_FILE / SHARDLM_API_KEY; SHARDLM_ALLOW_NO_API_KEY=1 serves without one)"
  fi
  model=${SHARDLM_MODEL:-/data/model.gguf}
  wait_s=${SHARDLM_MODEL_WAIT_S:-0}
  case $wait_s in ''|*[!0-9]*) die "SHARDLM_MODEL_WAIT_S='$wait_s': expected whole seconds" ;; esac
  waited=0
  while [ ! -f "$model" ] && [ "$waited" -lt "$wait_s" ]; do
    [ $((waited % 60)) -ne 0 ] ||
      echo "entrypoint: waiting for $model ($waited of $wait_s s); copy it in with" \
           "kubectl cp MODEL.gguf $host:$model.part && kubectl exec $host -- mv $model.part $model" >&2
    sleep 5
    waited=$((waited + 5))
  done
  [ -f "$model" ] || { echo "entrypoint: rank 0: the model $model does not exist" >&2; exit 1; }
  set -- serve -m "$model" --host 0.0.0.0 --port "$http_port" "$@"
else
  rm -f "$ready_file"  # a killed worker's file survives in the pod's /tmp; the worker also removes it
  set -- worker --weights-from rank0 --ready-file "$ready_file" "$@"
fi
[ -z "${SHARDLM_THREADS:-}" ] || set -- "$@" --threads "$SHARDLM_THREADS"

if [ "$world" -gt 1 ]; then
  right=$(( (rank + 1) % world ))
  cfg=${SHARDLM_RING_CONFIG_PATH:-/tmp/ring.json}
  cat > "$cfg" <<JSON
{
  "master_ip": "$set_name-0.$svc",
  "master_port": $ctrl_port,
  "port": $ring_port,
  "right_ip": "$set_name-$right.$svc",
  "right_port": $ring_port,
  "rank": $rank,
  "world_size": $world
}
JSON
  export RING_CONFIG="$cfg"
else
  unset RING_CONFIG
  cfg=
fi
if [ "${SHARDLM_DRY_RUN:-0}" = 1 ]; then
  [ -z "$cfg" ] || cat "$cfg"
  echo "shardlm $*"
  exit 0
fi
echo "entrypoint: $host is rank $rank of $world: shardlm $1" >&2
exec shardlm "$@"
