#!/usr/bin/env bash
# peer-llamacpp.sh - installs llama.cpp as a peer: node-llama-cpp (npm) ships
# prebuilt CPU libraries (@node-llama-cpp/linux-x64, which pick the best CPU
# variant at run time) and a git bundle of the matching llama.cpp source; only
# small tools are compiled, against those libraries. Needs node/npm, g++, git.
#   peer-llamacpp.sh          builds llama-bench and prints its path (the
#                             benchmark peer of docs/PERFORMANCE.md)
#   peer-llamacpp.sh tools    also builds, into TOOLS_DIR, llama.cpp's
#                             llama-quantize and the project's reference
#                             program tests/llamacpp/llama_ref.c, and prints
#                             TOOLS_DIR (what tests/llamacpp/run.sh uses)
#   PEER_DIR (default: ~/.cache/shardlm-peers/llamacpp, the same install as
#   ../shared/peers/llamacpp/setup.sh) receives the package and llama-bench;
#   TOOLS_DIR (default: .cache/llamacpp in this checkout) the tools, which
#   are rebuilt when their sources are newer.
set -euo pipefail
SRC_ROOT=$(cd "$(dirname "$0")/.." && pwd)
PEER_DIR=${PEER_DIR:-$HOME/.cache/shardlm-peers/llamacpp}
TOOLS_DIR=${TOOLS_DIR:-$SRC_ROOT/.cache/llamacpp}
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
LINK=(-L"$libs" -l:libllama.v0.5.0.so -l:libggml.v0.5.0.so -l:libggml-base.so -Wl,-rpath,"$libs" -pthread)
INC=(-I"$src/include" -I"$src/ggml/include")
if [ ! -x bin/llama-bench ]; then
  echo "peer-llamacpp: compiling llama-bench" >&2
  mkdir -p bin
  g++ -O2 -DNDEBUG -std=c++17 -o bin/llama-bench \
    "$src/tools/llama-bench/llama-bench.cpp" "$src/tools/llama-bench/main.cpp" \
    -I"$src/tools/llama-bench" "${INC[@]}" -I"$src/common" -I"$src/vendor" -l:libllama-common.so "${LINK[@]}"
  for f in "$libs"/libggml-cpu-*.so; do ln -sf "$f" bin/; done  # ggml loads its CPU variant from beside the binary
fi
if [ "${1:-}" != tools ]; then
  echo "$PEER_DIR/bin/llama-bench"
  exit 0
fi

# ---- the comparison tools (tests/llamacpp/run.sh) ----
mkdir -p "$TOOLS_DIR"
# stale FILE SOURCES...: true when FILE is missing or older than a source
stale() { local f=$1; shift; [ -x "$f" ] || return 0; for s; do [ "$s" -nt "$f" ] && return 0; done; return 1; }
q=$src/tools/quantize
if stale "$TOOLS_DIR/llama-quantize" "$q/quantize.cpp" "$q/main.cpp"; then
  echo "peer-llamacpp: compiling llama-quantize" >&2
  g++ -O2 -DNDEBUG -std=c++17 -o "$TOOLS_DIR/llama-quantize.tmp" "$q/main.cpp" "$q/quantize.cpp" \
    -I"$q" "${INC[@]}" -I"$src/common" -I"$src/vendor" -l:libllama-common.so "${LINK[@]}"
  mv "$TOOLS_DIR/llama-quantize.tmp" "$TOOLS_DIR/llama-quantize"
fi
ref=$SRC_ROOT/tests/llamacpp/llama_ref.c
if stale "$TOOLS_DIR/llama_ref" "$ref"; then
  echo "peer-llamacpp: compiling llama_ref" >&2
  gcc -O2 -std=c17 -Wall -Wextra -Werror -o "$TOOLS_DIR/llama_ref.tmp" "$ref" "${INC[@]}" "${LINK[@]}"
  mv "$TOOLS_DIR/llama_ref.tmp" "$TOOLS_DIR/llama_ref"
fi
for f in "$libs"/libggml-cpu-*.so; do ln -sf "$f" "$TOOLS_DIR/"; done
echo "$TOOLS_DIR"
