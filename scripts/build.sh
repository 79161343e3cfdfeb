#!/usr/bin/env bash
# build.sh NAME [CMAKE ARGS...] - configures and builds build/NAME.
set -euo pipefail
cd "$(dirname "$0")/.."
# ccache keys on paths relative to the checkout, so clones and worktrees share hits.
export CCACHE_BASEDIR=${CCACHE_BASEDIR:-$PWD}
name=$1; shift
cmake -S . -B "build/$name" "$@" >/dev/null
cmake --build "build/$name" -j"$(nproc)"
