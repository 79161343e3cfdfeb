#!/usr/bin/env bash
# bench-transports.sh MODEL [ROUNDS] [DECODE_TOKENS] - decode tokens/s of one
# model across the layouts of issue 10's targets, alternating within each
# round so a busy machine's load falls on every layout alike:
#   1x2      1 rank x 2 threads
#   2x1/shm  2 ranks x 1 thread, shared-memory ring      2x1/tcp  the same over TCP
#   4x1/shm  4 ranks x 1 thread (on 2 cores), shared memory   4x1/tcp  over TCP
# A layout ending in +numa adds --numa (and --pin-threads), e.g. 4x1/shm+numa.
# Then `bench-comm --compare` (shared memory, TCP, MPI). Each line is one
# `shardlm bench -p 0 -n N -r 1` (median of its repetitions) with the
# 1-minute load average when it started; the summary gives each layout's
# median over rounds and the target ratios. BIN overrides the binary
# (default build/release/shardlm); LAYOUTS overrides the list.
set -euo pipefail
model=${1:?usage: bench-transports.sh MODEL [ROUNDS] [DECODE_TOKENS]}
rounds=${2:-3}
n=${3:-32}
bin=${BIN:-build/release/shardlm}
layouts=${LAYOUTS:-"1x2 2x1/shm 2x1/tcp 4x1/shm 4x1/tcp"}
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT

echo "# $(date -u +%FT%TZ) $(uname -n) $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
echo "# $bin bench -m $model -p 0 -n $n -r 1, $rounds rounds, order rotating"
for r in $(seq 1 "$rounds"); do
  set -- $layouts
  for _ in $(seq 2 "$r"); do set -- "${@:2}" "$1"; done  # rotate the order each round
  for l in "$@"; do
    base=${l%+numa}; ranks=${base%%x*}; rest=${base#*x}; threads=${rest%%/*}
    tr=${base#*/}; [ "$tr" = "$base" ] && tr=
    args=(bench -m "$model" -p 0 -n "$n" -r 1 --world-size "$ranks" -t "$threads" --json)
    [ -n "$tr" ] && args+=(--ring-transport "$tr")
    [ "$base" != "$l" ] && args+=(--numa --pin-threads)
    load=$(cut -d' ' -f1 /proc/loadavg)
    tg=$("$bin" "${args[@]}" 2>/dev/null | sed -n 's/.*"tg_tok_s":\([0-9.]*\).*/\1/p')
    echo "round $r  $l  tg_tok_s ${tg:-FAILED}  load $load"
    echo "$tg" >> "$out/$(echo "$l" | tr / _)"
  done
done

med() { sort -g "$1" | awk '{v[NR]=$1} END {print NR%2 ? v[(NR+1)/2] : (v[NR/2]+v[NR/2+1])/2}'; }
echo "# medians over rounds (tokens/s)"
for l in $layouts; do f="$out/$(echo "$l" | tr / _)"; echo "$l $(med "$f")"; done | tee "$out/med"
get() { awk -v k="$1" '$1==k {print $2}' "$out/med"; }
ratio() { awk -v a="$(get "$1")" -v b="$(get "$2")" 'BEGIN {if (a && b) printf "%.2f", a / b; else print "n/a"}'; }
echo "# 4x1/shm / 2x1/shm = $(ratio 4x1/shm 2x1/shm) (target >= 0.8); 4x1/tcp / 2x1/tcp = $(ratio 4x1/tcp 2x1/tcp)"
echo "# 2x1/shm / 1x2 = $(ratio 2x1/shm 1x2) (target >= 1.0); 2x1/tcp / 1x2 = $(ratio 2x1/tcp 1x2)"
case " $layouts " in *" 4x1/shm+numa "*)
  echo "# with --numa: 4x1/shm / 2x1/shm = $(ratio 4x1/shm+numa 2x1/shm+numa); 2x1/shm / 1x2 = $(ratio 2x1/shm+numa 1x2+numa)";;
esac
echo "# bench-comm --compare"
"$bin" bench-comm --compare --rounds "$rounds"
