#!/usr/bin/env bash
# fuzz.sh [SECONDS] [TARGET...] - builds the libFuzzer harnesses
# (tests/fuzz/, clang, ASan + UBSan) into build/fuzz and runs each for
# SECONDS (default 25) from its seed corpus, plus what earlier runs found
# (build/fuzz/corpus/NAME/). Fails when any harness finds a crash, a leak
# or a hang (-timeout); the input is left as build/fuzz/crash-NAME-*, to be
# fixed and copied into tests/fuzz/regress/NAME/. docs/FUZZING.md.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-25}
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  targets=(gguf ring_config control server_parse tokenizer chat_template)
fi
export CCACHE_BASEDIR=${CCACHE_BASEDIR:-$PWD}
CC=${FUZZ_CC:-clang} cmake -S . -B build/fuzz -DSHARDLM_FUZZ=ON -DSHARDLM_WERROR=OFF -DSHARDLM_CUDA=OFF \
  -DSHARDLM_MPI=OFF -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build/fuzz -j"$(nproc)" --target "${targets[@]/#/fuzz_}"

export SHARDLM_SRC=$PWD
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
failed=()
for t in "${targets[@]}"; do
  work=build/fuzz/corpus/$t
  mkdir -p "$work"
  seeds=(tests/fuzz/corpus/"$t")
  [ -d tests/fuzz/regress/"$t" ] && seeds+=(tests/fuzz/regress/"$t")
  echo "fuzz.sh: $t for ${secs}s"
  if ! build/fuzz/tests/fuzz/fuzz_"$t" -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -max_len=65536 \
      -print_final_stats=1 -artifact_prefix=build/fuzz/crash-"$t"- "$work" "${seeds[@]}" \
      2>build/fuzz/fuzz-"$t".log; then
    failed+=("$t")
    tail -n 60 build/fuzz/fuzz-"$t".log
  fi
  grep -E '^stat::number_of_executed_units|^stat::new_units_added' build/fuzz/fuzz-"$t".log | sed "s/^/fuzz.sh: $t: /"
done
if [ ${#failed[@]} -gt 0 ]; then
  echo "fuzz.sh: FAILED: ${failed[*]} (inputs: build/fuzz/crash-*)" >&2
  exit 1
fi
echo "fuzz.sh: ${#targets[@]} targets, no crash"
