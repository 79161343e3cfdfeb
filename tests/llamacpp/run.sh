#!/usr/bin/env bash
# run.sh - the forward pass against llama.cpp, the reference implementation
# (ctest: llamacpp_ref; docs/MODELS.md, "How it is verified"). For every
# architecture x tensor type x world size below:
#   1. `shardlm synth` writes the architecture's F32 model (a bigram chain:
#      see ARCHS), once;
#   2. llama.cpp's own llama-quantize turns it into the type, so both
#      engines read the very same weight bytes;
#   3. llama_ref (llama.cpp, CPU, 1 thread, f32 KV cache) and `shardlm
#      generate --world-size W` each feed the same prompt ids one at a time
#      and generate 32 greedy tokens, writing every step's full logits;
#   4. llamacpp_cmp demands equal tokens, and per step max |dlogit| <= the
#      type's bound, in standard deviations of llama.cpp's logits at that
#      step, and a top-1 margin of at least twice the bound (no near ties).
# Plus stories260K.gguf (a trained model) and a negative control: a RoPE base
# 2% off in llama.cpp must fail the comparison, so the harness can fail.
#   run.sh SHARDLM_BIN LLAMACPP_CMP_BIN SHARED_DIR
#   LLREF_ONLY=REGEX   only the combinations whose name (arch/type/wW) matches
#   LLREF_KEEP=DIR     keep the models, logits and logs in DIR
# Exit 0: passed; 77: skipped (llama.cpp cannot be installed, outside CI);
# 1: a combination failed (each failure names it), or anything under CI=true
# that would have been a skip.
set -euo pipefail

BIN=${1:?usage: run.sh SHARDLM_BIN LLAMACPP_CMP_BIN SHARED_DIR}
CMP=${2:?usage: run.sh SHARDLM_BIN LLAMACPP_CMP_BIN SHARED_DIR}
SHARED=${3:?usage: run.sh SHARDLM_BIN LLAMACPP_CMP_BIN SHARED_DIR}
HERE=$(cd "$(dirname "$0")" && pwd)
SRC=$(cd "$HERE/../.." && pwd)

# ---- what is compared: add an architecture or a type with one line ----

# Architectures: NAME|`shardlm synth` options|prompt ids. Shapes split
# whole at world sizes 1, 2 and 4: heads and KV heads divide by 4, and every
# per-rank slice of a row (dim / 4 = 256 columns of attn_output, ffn / 4 =
# 256 of ffn_down) is whole 256-value k-quant super-blocks. --bigram 8 makes
# the greedy path a walk along one random cycle of the vocabulary with a
# top-1 margin of several standard deviations (plain random weights give
# near ties within 32 steps); the layers still move the logits by whole
# standard deviations, which the bounds are far below. The prompt is BOS and
# 7 ordinary ids. llama3 adds Llama 3.1's rope_freqs.weight; qwen2 has q/k/v
# and output biases and NeoX RoPE; qwen3 per-head q/k norms and a head size
# (128) that is not dim / heads. These use the 512-token SentencePiece
# vocabulary: a real 128k-152k vocabulary makes the F32 embedding and output
# V x 1024 floats each, too big to quantise 16 ways inside CI's time (the
# real vocabularies are checked against llama.cpp by tokenizer_peer).
ARCHS=(
  "llama|--dim 1024 --layers 2 --heads 16 --kv-heads 4 --ffn 1024 --vocab 512 --bigram 8|1,300,301,302,303,304,305,306"
  "llama3|--dim 1024 --layers 2 --heads 16 --kv-heads 4 --ffn 1024 --vocab 512 --bigram 8 --rope-scaling llama3|1,300,301,302,303,304,305,306"
  "qwen2|--arch qwen2 --biases all --dim 1024 --layers 2 --heads 16 --kv-heads 4 --ffn 1024 --vocab 512 --bigram 8|1,300,301,302,303,304,305,306"
  "qwen3|--arch qwen3 --head-dim 128 --dim 1024 --layers 2 --heads 16 --kv-heads 4 --ffn 1024 --vocab 512 --bigram 8|1,300,301,302,303,304,305,306"
)
# Tensor types: NAME|llama-quantize arguments (- : the F32 file itself)|bound
# in standard deviations of the logits, or ? to measure a new type: it then
# runs, prints what it measured and fails until a bound is written here.
# Bounds are about 3x the largest gap measured (5 synth seeds x 3 world
# sizes; docs/MODELS.md has the figures and the reasons for each gap).
TYPES=(
  "f32|-|1e-4"
  "f16|--pure F16|5e-3"
  "bf16|--pure BF16|4e-2"
  "q8_0|--pure Q8_0|0.1"
  "q4_0|--pure Q4_0|0.1"
  "q4_k|--pure Q4_K_S|0.2"
  "q6_k|--pure Q6_K|0.2"
  "q4_k_m|Q4_K_M|0.2"
  "q4_1|--pure Q4_1|0.15"
  "q5_0|--pure Q5_0|0.1"
  "q5_1|--pure Q5_1|0.15"
  "q2_k|--pure Q2_K|0.2"
  "q3_k|--pure Q3_K_S|0.2"
  "q5_k|--pure Q5_K_S|0.2"
  "iq4_nl|--pure IQ4_NL|0.1"
  "iq4_xs|--pure IQ4_XS|0.2"
)
# A bound for one architecture and type only, when it needs its own.
declare -A BOUND_OVERRIDE=()
WORLDS=(1 2 4)
N_NEW=32

# ---- set-up ----
TEST_NAME=llamacpp
# shellcheck source=../lib.sh
. "$(dirname "$0")/../lib.sh"
WORK=${LLREF_KEEP:-$(mktemp -d)}
mkdir -p "$WORK"
[ -n "${LLREF_KEEP:-}" ] || trap 'rm -rf "$WORK"' EXIT
STORIES=$SHARED/models/stories260K.gguf
[ -f "$STORIES" ] || skip "$STORIES is missing"
command -v npm >/dev/null && command -v g++ >/dev/null && command -v git >/dev/null ||
  skip "npm, g++ and git are needed to install llama.cpp"
TOOLS=$(timeout 600 "$SRC/scripts/peer-llamacpp.sh" tools 2>"$WORK/peer.log") ||
  skip "llama.cpp could not be installed: $(tail -3 "$WORK/peer.log")"
QUANT=$TOOLS/llama-quantize
REF=$TOOLS/llama_ref

PASSED=0
FAILED=()
# check NAME BOUND MODEL PROMPT WORLD REF_PREFIX: shardlm at world size
# WORLD against llama_ref's files REF_PREFIX.{ids,logits}.
check() {
  local name=$1 bound=$2 model=$3 prompt=$4 world=$5 ref=$6 out=$WORK/${1//\//_}
  local n_prompt bound_args=(--tol "$bound")
  n_prompt=$(n_ids "$prompt")
  [ "$bound" = "?" ] && bound_args=(--measure)
  local rc=0
  "$BIN" generate -m "$model" --prompt-ids "$prompt" -n "$N_NEW" --temp 0 --ignore-eos \
    --world-size "$world" --threads 1 --ids-out "$out.ids" --logits-out "$out.logits" \
    >"$out.txt" 2>"$out.log" || rc=$?
  if [ "$rc" != 0 ]; then
    echo "$name: FAIL: shardlm generate exited $rc:" >&2; tail -5 "$out.log" >&2
    FAILED+=("$name"); return
  fi
  if "$CMP" --name "$name" --vocab "$REF_VOCAB" --n-prompt "$n_prompt" "${bound_args[@]}" \
      --ref-logits "$ref.logits" --ref-ids "$ref.ids" --test-logits "$out.logits" --test-ids "$out.ids"; then
    if [ "$bound" = "?" ]; then
      echo "$name: FAIL: no bound for this type yet: write one into TYPES in tests/llamacpp/run.sh" >&2
      FAILED+=("$name")
    else
      PASSED=$((PASSED + 1))
    fi
  else
    FAILED+=("$name")
  fi
}
# reference MODEL PROMPT PREFIX [llama_ref options]: llama.cpp's tokens and logits.
reference() {
  local model=$1 prompt=$2 prefix=$3; shift 3
  "$REF" -m "$model" -p "$prompt" -n "$N_NEW" -o "$prefix.ids" -l "$prefix.logits" "$@" 2>"$prefix.log" ||
    { echo "llama_ref failed on $model:" >&2; tail -5 "$prefix.log" >&2; return 1; }
  # its rows: one per prompt id, then one per generated token but the last
  local rows=$(( $(n_ids "$prompt") + N_NEW - 1 ))
  REF_VOCAB=$(( $(stat -c %s "$prefix.logits") / 4 / rows ))
}
n_ids() { tr ',' '\n' <<<"$1" | grep -c .; }
# wanted NAME...: whether LLREF_ONLY (unset: everything) picks one of the names.
wanted() {
  [ -z "${LLREF_ONLY:-}" ] && return 0
  local n; for n; do [[ $n =~ $LLREF_ONLY ]] && return 0; done; return 1
}
# combos ARCH TYPE...: the names of those types' combinations at every world size.
combos() { local a=$1 t w; shift; for t; do for w in "${WORLDS[@]}"; do echo "$a/$t/w$w"; done; done; }
type_names() { local t; for t in "${TYPES[@]}"; do echo "${t%%|*}"; done; }

# ---- a trained model: stories260K (F32) ----
if wanted $(combos stories260k f32); then
  if reference "$STORIES" 1 "$WORK/stories.ref"; then
    for w in "${WORLDS[@]}"; do check "stories260k/f32/w$w" 1e-4 "$STORIES" 1 "$w" "$WORK/stories.ref"; done
  else
    FAILED+=("stories260k")
  fi
fi

# ---- every architecture x type x world size ----
for a in "${ARCHS[@]}"; do
  IFS='|' read -r arch synth prompt <<<"$a"
  # shellcheck disable=SC2046 # one name per word
  wanted $(combos "$arch" $(type_names)) || continue
  f32=$WORK/$arch.f32.gguf
  # shellcheck disable=SC2086 # the synth options are words
  "$BIN" synth -o "$f32" $synth >"$WORK/$arch.synth.log" 2>&1 ||
    { echo "$arch: FAIL: shardlm synth $synth:" >&2; tail -3 "$WORK/$arch.synth.log" >&2; FAILED+=("$arch"); continue; }
  for t in "${TYPES[@]}"; do
    IFS='|' read -r type qargs bound <<<"$t"
    # shellcheck disable=SC2046
    wanted $(combos "$arch" "$type") || continue
    bound=${BOUND_OVERRIDE[$arch/$type]:-$bound}
    model=$f32
    if [ "$qargs" != - ]; then
      model=$WORK/$arch.$type.gguf
      read -ra qa <<<"$qargs" # options, then the file type last
      "$QUANT" "${qa[@]:0:${#qa[@]}-1}" "$f32" "$model" "${qa[-1]}" 1 >"$WORK/$arch.$type.quant.log" 2>&1 ||
        { echo "$arch/$type: FAIL: llama-quantize $qargs:" >&2; tail -3 "$WORK/$arch.$type.quant.log" >&2
          FAILED+=("$arch/$type"); continue; }
    fi
    reference "$model" "$prompt" "$WORK/$arch.$type.ref" || { FAILED+=("$arch/$type"); continue; }
    for w in "${WORLDS[@]}"; do
      if wanted "$arch/$type/w$w"; then check "$arch/$type/w$w" "$bound" "$model" "$prompt" "$w" "$WORK/$arch.$type.ref"; fi
    done
  done
done

# ---- negative control: a RoPE base 2% off must be caught ----
a=${ARCHS[0]}
IFS='|' read -r arch synth prompt <<<"$a"
if wanted control && [ -f "$WORK/$arch.f32.gguf" ]; then
  if ! reference "$WORK/$arch.f32.gguf" "$prompt" "$WORK/control.ref" --rope-freq-base 10200 ||
     ! "$BIN" generate -m "$WORK/$arch.f32.gguf" --prompt-ids "$prompt" -n "$N_NEW" --temp 0 --ignore-eos \
       --threads 1 --ids-out "$WORK/control.ids" --logits-out "$WORK/control.logits" >/dev/null 2>"$WORK/control.log"; then
    echo "control: FAIL: llama_ref or shardlm did not run" >&2
    FAILED+=("control")
  elif "$CMP" --name "control: $arch/f32, llama.cpp RoPE base 10200" --vocab "$REF_VOCAB" \
      --n-prompt "$(n_ids "$prompt")" --tol 1e-4 --ref-logits "$WORK/control.ref.logits" \
      --ref-ids "$WORK/control.ref.ids" --test-logits "$WORK/control.logits" --test-ids "$WORK/control.ids" 2>/dev/null; then
    echo "control: FAIL: a 2% RoPE base error in llama.cpp went unnoticed: the harness cannot fail" >&2
    FAILED+=("control")
  else
    echo "control: ok: a 2% RoPE base error fails the F32 comparison, as it must"
    PASSED=$((PASSED + 1))
  fi
fi

echo "llamacpp: ${PASSED} passed, ${#FAILED[@]} failed"
if [ ${#FAILED[@]} -gt 0 ]; then
  printf 'llamacpp: FAILED: %s\n' "${FAILED[@]}" >&2
  exit 1
fi
