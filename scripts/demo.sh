#!/usr/bin/env bash
# demo.sh - the README's first command: installs what is missing, builds,
# and runs a real 2-rank generation. Without MODEL it first writes a
# synthetic model with `shardlm synth` (random weights: the text is noise,
# the sharding and the ring are real). MODEL=path.gguf uses a real model.
#   MODEL=...  WORLD_SIZE=2  PROMPT="Once upon a time"  N=64  TEMP=0.8
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
scripts/build.sh release -DCMAKE_BUILD_TYPE=Release
bin=build/release/shardlm

model=${MODEL:-}
if [ -z "$model" ]; then
  model=build/demo-synth-q8_0.gguf
  if [ ! -f "$model" ]; then
    "$bin" synth -o "$model" --dim 512 --layers 8 --heads 8 --kv-heads 4 --ffn 1376 --vocab 4096 \
      --type q8_0 --seed 1
  fi
fi
echo "demo: generating with $model across ${WORLD_SIZE:-2} ranks" >&2
"$bin" generate -m "$model" --world-size "${WORLD_SIZE:-2}" -p "${PROMPT:-Once upon a time}" \
  -n "${N:-64}" --temp "${TEMP:-0.8}" --seed 42
