/* shardlm_synth.h - writes a synthetic llama-architecture GGUF (random
 * weights from a fixed-seed PRNG, a small valid SentencePiece vocabulary),
 * for tests and benchmarks of any model shape. */
#ifndef SHARDLM_SYNTH_H
#define SHARDLM_SYNTH_H

#include <stdint.h>

typedef struct {
    int dim, layers, heads, kv_heads, ffn, vocab, context;
    /* Matrices: SHARDLM_DT_F32, F16, Q8_0, Q4_0, Q4_K or Q6_K; norms are
     * always F32. With Q4_K, output.weight is Q6_K (as in llama.cpp's
     * Q4_K_M); with either k-quant, matrices whose rows are not a multiple
     * of 256 are written as Q8_0. */
    uint32_t type;
    uint64_t seed;
} shardlm_synth_opts;

/* The defaults `shardlm synth` uses: dim 256, layers 4, heads 8, kv_heads 4,
 * ffn 768, vocab 512, context 2048, f32, seed 42. */
void shardlm_synth_defaults(shardlm_synth_opts *o);

/* Checks the options; SHARDLM_EINPUT with a message naming the option
 * (as its command-line flag, e.g. "--heads") when one is invalid. */
int shardlm_synth_check(const shardlm_synth_opts *o);

/* Writes the file (via PATH.tmp). The same options give a byte-identical
 * file. Shows progress on a terminal. */
int shardlm_synth_write(const shardlm_synth_opts *o, const char *path);

#endif
