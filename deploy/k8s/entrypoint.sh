#!/bin/sh
# entrypoint.sh - one rank of a shardlm StatefulSet. The pod's ordinal (the
# number at the end of its host name, shardlm-3 -> 3) is its rank; it writes
# its RING_CONFIG from that and starts rank 0 as `serve`, the others as
# `worker --weights-from rank0` (only rank 0 needs the model volume).
#
#   SHARDLM_WORLD_SIZE  ranks in the StatefulSet (= replicas), a power of two
#   SHARDLM_SERVICE     the headless service name (default: shardlm)
#   SHARDLM_MODEL       GGUF path on rank 0 (default: /models/model.gguf)
#   SHARDLM_RING_PORT   every rank's ring port (default 29500)
#   SHARDLM_CTRL_PORT   rank 0's control port (default 29400)
#   SHARDLM_DRY_RUN=1   print the RING_CONFIG and the command instead of running
# Extra arguments go to `shardlm serve` (rank 0) or `shardlm worker`.
set -eu
host=${HOSTNAME:-$(hostname)}
rank=${host##*-}
world=${SHARDLM_WORLD_SIZE:?set SHARDLM_WORLD_SIZE to the number of replicas}
svc=${SHARDLM_SERVICE:-shardlm}
set_name=${host%-*}
ring_port=${SHARDLM_RING_PORT:-29500}
ctrl_port=${SHARDLM_CTRL_PORT:-29400}
case $rank in
  ''|*[!0-9]*) echo "entrypoint: host name '$host' does not end in -ORDINAL (not a StatefulSet pod?)" >&2; exit 2 ;;
esac
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
if [ "$rank" -eq 0 ]; then
  set -- serve -m "${SHARDLM_MODEL:-/models/model.gguf}" --host 0.0.0.0 --port 8080 "$@"
else
  set -- worker --weights-from rank0 "$@"
fi
if [ "${SHARDLM_DRY_RUN:-0}" = 1 ]; then
  cat "$cfg"
  echo "shardlm $*"
  exit 0
fi
exec shardlm "$@"
