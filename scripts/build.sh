#!/usr/bin/env bash
# build.sh NAME [CMAKE ARGS...] - configures and builds build/NAME.
set -euo pipefail
cd "$(dirname "$0")/.."
name=$1; shift
cmake -S . -B "build/$name" "$@" >/dev/null
cmake --build "build/$name" -j"$(nproc)"
