#!/usr/bin/env bash
# tokenizer_xcheck.sh [--write] [SHARED] - llama.cpp's tokenizer as the
# oracle for tests/data/: builds tests/peer/llama_tok.c against the peer's
# libllama (scripts/peer-llamacpp.sh installs it), runs it over
# tests/data/bpe-stress.inp and bpe-fuzz.inp (plain and with special tokens
# parsed) with every vocabulary in SHARED/models/vocab and
# over the gpt-2 vocabulary re-labelled with the smollm and default
# pre-tokenizers, and compares with the committed .out files (--write
# rewrites them instead). Exit 77 (skipped) when the peer or python3 is
# missing.
set -euo pipefail
cd "$(dirname "$0")/../.."
write=0
if [ "${1:-}" = --write ]; then write=1; shift; fi
shared=${1:-../shared}
peer=${PEER_DIR:-$HOME/.cache/shardlm-peers/llamacpp}
libs=$peer/node_modules/@node-llama-cpp/linux-x64/bins/linux-x64
src=$peer/llama.cpp-src
if [ ! -f "$src/include/llama.h" ] || [ ! -d "$libs" ]; then
  echo "tokenizer_xcheck: llama.cpp peer not installed in $peer (scripts/peer-llamacpp.sh); skipped" >&2
  exit 77
fi
if ! command -v python3 >/dev/null 2>&1; then
  echo "tokenizer_xcheck: python3 is needed to relabel the gpt-2 vocabulary; skipped" >&2
  exit 77
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
gcc -O2 -std=c17 -D_GNU_SOURCE -o "$work/llama_tok" tests/peer/llama_tok.c -I"$src/include" \
  -I"$src/ggml/include" -L"$libs" -l:libllama.v0.5.0.so -l:libggml.v0.5.0.so -l:libggml-base.so \
  -Wl,-rpath,"$libs" -pthread
for f in "$libs"/libggml-cpu-*.so; do ln -sf "$f" "$work/"; done  # ggml loads its CPU variant from beside the binary
vocab=$shared/models/vocab
python3 tests/peer/gguf_set_pre.py "$vocab/ggml-vocab-gpt-2.gguf" "$work/gpt-2.smollm.gguf" smollm
python3 tests/peer/gguf_set_pre.py "$vocab/ggml-vocab-gpt-2.gguf" "$work/gpt-2.default.gguf" default
fail=0
check() { # NAME GGUF INP [--special]
  "$work/llama_tok" "$2" vectors "$3" ${4:-} >"$work/$1.out"
  if [ $write = 1 ]; then
    cp "$work/$1.out" "tests/data/$1.out"
  elif ! cmp -s "$work/$1.out" "tests/data/$1.out"; then
    echo "tokenizer_xcheck: tests/data/$1.out differs from llama.cpp's ids" >&2
    fail=1
  fi
}
for v in llama-bpe qwen2 qwen35 gpt-2 phi-3; do
  check "bpe-stress.$v" "$vocab/ggml-vocab-$v.gguf" tests/data/bpe-stress.inp
  check "bpe-fuzz.$v" "$vocab/ggml-vocab-$v.gguf" tests/data/bpe-fuzz.inp
  check "bpe-fuzz.$v.special" "$vocab/ggml-vocab-$v.gguf" tests/data/bpe-fuzz.inp --special
done
for p in smollm default; do
  check "bpe-stress.gpt-2.$p" "$work/gpt-2.$p.gguf" tests/data/bpe-stress.inp
  check "bpe-fuzz.gpt-2.$p" "$work/gpt-2.$p.gguf" tests/data/bpe-fuzz.inp
  check "vocab-gpt-2.$p" "$work/gpt-2.$p.gguf" "$vocab/ggml-vocab-gpt-2.gguf.inp"
done
if [ $write = 1 ]; then echo "tokenizer_xcheck: tests/data rewritten from llama.cpp's ids"
elif [ $fail = 0 ]; then echo "tokenizer_xcheck: llama.cpp agrees with tests/data"; fi
exit $fail
