#!/usr/bin/env bash
# peer-llamacpp.sh - installs llama.cpp as a benchmark peer and prints the
# path of its llama-bench. node-llama-cpp (npm) ships prebuilt CPU libraries
# (@node-llama-cpp/linux-x64, which pick the best CPU variant at run time)
# and a git bundle of the matching llama.cpp source; only llama-bench's two
# .cpp files are compiled, against those libraries. Needs node/npm, g++, git.
#   PEER_DIR (default: ~/.cache/shardlm-peers/llamacpp) receives everything.
set -euo pipefail
PEER_DIR=${PEER_DIR:-$HOME/.cache/shardlm-peers/llamacpp}
VERSION=3.22.1
mkdir -p "$PEER_DIR"
cd "$PEER_DIR"
if [ ! -d node_modules/@node-llama-cpp/linux-x64 ]; then
  echo "peer-llamacpp: installing node-llama-cpp@$VERSION into $PEER_DIR" >&2
  [ -f package.json ] || echo '{"name":"shardlm-llamacpp-peer","private":true}' >package.json
  NODE_LLAMA_CPP_SKIP_DOWNLOAD=true npm install --no-audit --no-fund --silent \
    "node-llama-cpp@$VERSION" "@node-llama-cpp/linux-x64@$VERSION" >/dev/null
fi
libs=$PEER_DIR/node_modules/@node-llama-cpp/linux-x64/bins/linux-x64
src=$PEER_DIR/llama.cpp-src
if [ ! -f "$src/include/llama.h" ]; then
  git -c advice.detachedHead=false clone -q node_modules/node-llama-cpp/llama/gitRelease.bundle "$src"
fi
if [ ! -x bin/llama-bench ]; then
  echo "peer-llamacpp: compiling llama-bench" >&2
  mkdir -p bin
  g++ -O2 -DNDEBUG -std=c++17 -o bin/llama-bench \
    "$src/tools/llama-bench/llama-bench.cpp" "$src/tools/llama-bench/main.cpp" \
    -I"$src/tools/llama-bench" -I"$src/include" -I"$src/ggml/include" -I"$src/common" -I"$src/vendor" \
    -L"$libs" -l:libllama-common.so -l:libllama.v0.5.0.so -l:libggml.v0.5.0.so -l:libggml-base.so \
    -Wl,-rpath,"$libs" -pthread
  for f in "$libs"/libggml-cpu-*.so; do ln -sf "$f" bin/; done  # ggml loads its CPU variant from beside the binary
fi
echo "$PEER_DIR/bin/llama-bench"
