#!/usr/bin/env bash
# demo.sh - the README's first command: installs what is missing, builds,
# and runs a real 2-rank generation with the model shipped in assets/
# (stories260K, a small Llama trained on TinyStories: it tells a story).
# MODEL=path.gguf uses another model.
#   MODEL=...  WORLD_SIZE=2  PROMPT="Once upon a time"  N=200  TEMP=0.8
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
scripts/build.sh release -DCMAKE_BUILD_TYPE=Release
bin=build/release/shardlm

model=${MODEL:-assets/stories260K.gguf}
prompt=${PROMPT:-Once upon a time}
echo "demo: generating with $model across ${WORLD_SIZE:-2} ranks" >&2
"$bin" generate -m "$model" --world-size "${WORLD_SIZE:-2}" -p "$prompt" \
  -n "${N:-200}" --temp "${TEMP:-0.8}" --seed 42 --echo
