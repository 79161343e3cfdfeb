/* pretok.c - the pre-tokenizers of byte-level BPE vocabularies. Each
 * tokenizer.ggml.pre name stands for a list of regexes that llama.cpp
 * (llama-vocab.cpp) applies in turn: every regex splits each piece the one
 * before it left into its matches and the gaps between them, and a piece is
 * matched on its own, so its end is the end of the text for lookaheads such
 * as \s+(?!\S). Each regex is written here as a hand-made matcher over
 * Unicode categories (unicode.h), equal to the regex on every input:
 *
 *   gpt2     's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)
 *   llama3   (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|
 *            ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+
 *   qwen2    llama3 with \p{N} for \p{N}{1,3}
 *   qwen35   qwen2 with [\p{L}\p{M}]+ for \p{L}+ and \p{M} added to the
 *            excluded set of the punctuation run
 *   digit    \p{N}             digits   \p{N}+
 *   punct    [\p{P}\$\+<=>\^~\|]+
 *   triple   [0-9][0-9][0-9]
 *
 * The case-insensitive contractions compare ASCII only: no other codepoint
 * lowercases to s, t, r, e, v, m, l or d. */
#include "pretok.h"

#include <stdlib.h>
#include <string.h>

#include "shardlm_common.h"
#include "unicode.h"

typedef enum { ST_GPT2, ST_LLAMA3, ST_QWEN2, ST_QWEN35, ST_DIGIT, ST_DIGITS, ST_PUNCT, ST_TRIPLE } pt_stage;

#define PT_MAX_STAGES 4

struct shardlm_pretok {
    pt_stage stage[PT_MAX_STAGES];
    int n_stages;
    int ignore_merges, add_bos;
};

static const shardlm_pretok PT_LLAMA3 = {{ST_LLAMA3}, 1, 1, 1};
static const shardlm_pretok PT_LLAMA3_PLAIN = {{ST_LLAMA3}, 1, 0, 0};
static const shardlm_pretok PT_QWEN2 = {{ST_QWEN2}, 1, 0, 0};
static const shardlm_pretok PT_QWEN35 = {{ST_QWEN35}, 1, 0, 0};
static const shardlm_pretok PT_GPT2 = {{ST_GPT2}, 1, 0, 0};
static const shardlm_pretok PT_SMOLLM = {{ST_DIGIT, ST_GPT2}, 2, 0, 0};
static const shardlm_pretok PT_DEFAULT = {{ST_PUNCT, ST_GPT2, ST_DIGITS, ST_TRIPLE}, 4, 0, 0};

/* The names llama.cpp maps onto these regexes with no other setting that
 * this tokenizer would ignore. */
static const struct {
    const char *name;
    const shardlm_pretok *p;
} pt_names[] = {
    {"default", &PT_DEFAULT},        {"llama-bpe", &PT_LLAMA3},     {"llama3", &PT_LLAMA3},
    {"llama-v3", &PT_LLAMA3},        {"falcon3", &PT_LLAMA3},       {"falcon-h1", &PT_LLAMA3},
    {"pixtral", &PT_LLAMA3},         {"midm-2.0", &PT_LLAMA3},      {"lfm2", &PT_LLAMA3},
    {"dbrx", &PT_LLAMA3_PLAIN},      {"smaug-bpe", &PT_LLAMA3_PLAIN}, {"qwen2", &PT_QWEN2},
    {"deepseek-r1-qwen", &PT_QWEN2}, {"megrez", &PT_QWEN2},         {"stablelm2", &PT_QWEN2},
    {"hunyuan", &PT_QWEN2},          {"grok-2", &PT_QWEN2},         {"qwen35", &PT_QWEN35},
    {"gpt-2", &PT_GPT2},             {"phi-2", &PT_GPT2},           {"mpt", &PT_GPT2},
    {"olmo", &PT_GPT2},              {"jais", &PT_GPT2},            {"exaone4", &PT_GPT2},
    {"smollm", &PT_SMOLLM},          {"starcoder", &PT_SMOLLM},     {"refact", &PT_SMOLLM},
    {"command-r", &PT_SMOLLM},       {"codeshell", &PT_SMOLLM},     {"exaone", &PT_SMOLLM},
    {"minerva-7b", &PT_SMOLLM},
};

#define PT_N_NAMES (sizeof pt_names / sizeof pt_names[0])

const shardlm_pretok *shardlm_pretok_find(const char *name, size_t len)
{
    for (size_t i = 0; i < PT_N_NAMES; i++)
        if (strlen(pt_names[i].name) == len && memcmp(pt_names[i].name, name, len) == 0) return pt_names[i].p;
    return NULL;
}

void shardlm_pretok_names(char *buf, size_t cap)
{
    size_t at = 0;
    buf[0] = 0;
    for (size_t i = 0; i < PT_N_NAMES; i++) {
        size_t k = strlen(pt_names[i].name);
        if (at + k + 3 > cap) break;
        if (i) memcpy(buf + at, ", ", 2), at += 2;
        memcpy(buf + at, pt_names[i].name, k);
        at += k;
        buf[at] = 0;
    }
}

int shardlm_pretok_ignore_merges(const shardlm_pretok *p) { return p->ignore_merges; }
int shardlm_pretok_add_bos(const shardlm_pretok *p) { return p->add_bos; }

/* ---- the text as codepoints ----
 * ch[i] is codepoint i itself when it is ASCII, else 0x80 | its UTF-8
 * length; fl[i] is its flags. Indexes are codepoints; words come out in
 * order, so their byte offsets are kept as a running sum. */

typedef struct {
    const shardlm_pretok *p;
    const uint8_t *ch, *fl;
    const char *text;
    size_t at; /* bytes before the next word */
    shardlm_pretok_word_fn word;
    void *ctx;
} pt_run;

#define CH(i) ((i) < b ? r->ch[i] : 0xFF)
#define FL(i) ((i) < b ? r->fl[i] : 0)

static void pt_piece(pt_run *r, int stage, uint32_t a, uint32_t b);

/* The first index at or after i whose flags lack all of want. */
static uint32_t run_of(const pt_run *r, uint32_t i, uint32_t b, uint8_t want)
{
    while (i < b && (r->fl[i] & want)) i++;
    return i;
}

/* The first index at or after i whose flags have any of bad. */
static uint32_t run_not(const pt_run *r, uint32_t i, uint32_t b, uint8_t bad)
{
    while (i < b && !(r->fl[i] & bad)) i++;
    return i;
}

static int is_nl(uint8_t c) { return c == '\r' || c == '\n'; }

static uint8_t lower(uint8_t c) { return c >= 'A' && c <= 'Z' ? (uint8_t)(c | 0x20) : c; }

/* 's 't 'm 'd 're 've 'll at p: the end of the match, or p. */
static uint32_t contraction(const pt_run *r, uint32_t p, uint32_t b, int fold)
{
    if (CH(p) != '\'' || p + 1 >= b) return p;
    uint8_t c1 = CH(p + 1), c2 = p + 2 < b ? CH(p + 2) : 0;
    if (fold) c1 = lower(c1), c2 = lower(c2);
    if (c1 == 's' || c1 == 't' || c1 == 'm' || c1 == 'd') return p + 2;
    if ((c1 == 'r' && c2 == 'e') || (c1 == 'v' && c2 == 'e') || (c1 == 'l' && c2 == 'l')) return p + 3;
    return p;
}

static uint32_t match_gpt2(const pt_run *r, uint32_t p, uint32_t b)
{
    uint32_t e = contraction(r, p, b, 0);
    if (e > p) return e;
    uint32_t q = p + (CH(p) == ' ');
    uint8_t f = FL(q);
    if (f & SHARDLM_UNI_L) return run_of(r, q, b, SHARDLM_UNI_L);
    if (f & SHARDLM_UNI_N) return run_of(r, q, b, SHARDLM_UNI_N);
    if (q < b && !(f & (SHARDLM_UNI_WS | SHARDLM_UNI_L | SHARDLM_UNI_N)))
        return run_not(r, q, b, SHARDLM_UNI_WS | SHARDLM_UNI_L | SHARDLM_UNI_N);
    e = run_of(r, p, b, SHARDLM_UNI_WS);
    if (e - p > 1 && e < b) return e - 1; /* \s+(?!\S) leaves the last one to the word after */
    return e > p ? e : p + 1;
}

/* llama3, qwen2 and qwen35: digits is the longest number run, word the
 * classes of a word run. */
static uint32_t match_llama3(const pt_run *r, uint32_t p, uint32_t b, uint32_t digits, uint8_t word)
{
    uint32_t e = contraction(r, p, b, 1);
    if (e > p) return e;
    uint8_t c = CH(p), f = FL(p);
    if (!is_nl(c) && !(f & SHARDLM_UNI_N) && ((f & word) || (FL(p + 1) & word))) return run_of(r, p + 1, b, word);
    if (f & SHARDLM_UNI_N) {
        for (e = p + 1; e < b && e - p < digits && (r->fl[e] & SHARDLM_UNI_N); e++) {}
        return e;
    }
    uint8_t excl = SHARDLM_UNI_WS | SHARDLM_UNI_L | SHARDLM_UNI_N | (word & SHARDLM_UNI_M);
    uint32_t q = p + (c == ' ');
    if (q < b && !(r->fl[q] & excl)) {
        for (e = run_not(r, q, b, excl); e < b && is_nl(r->ch[e]); e++) {}
        return e;
    }
    uint32_t nl_end = 0;
    int nl = 0;
    for (e = p; e < b && (r->fl[e] & SHARDLM_UNI_WS); e++)
        if (is_nl(r->ch[e])) nl = 1, nl_end = e + 1;
    if (nl) return nl_end; /* \s*[\r\n]+ */
    if (e - p > 1 && e < b) return e - 1;
    return e > p ? e : p + 1;
}

static int is_default_punct(const pt_run *r, uint32_t i)
{
    uint8_t c = r->ch[i];
    return (r->fl[i] & SHARDLM_UNI_P) || c == '$' || c == '+' || c == '<' || c == '=' || c == '>' || c == '^' ||
           c == '~' || c == '|';
}

static int is_digit(const pt_run *r, uint32_t i) { return r->ch[i] >= '0' && r->ch[i] <= '9'; }

/* The end of the stage's match at p, or p when none starts there. */
static uint32_t pt_match(const pt_run *r, pt_stage st, uint32_t p, uint32_t b)
{
    uint32_t e = p;
    switch (st) {
    case ST_GPT2: return match_gpt2(r, p, b);
    case ST_LLAMA3: return match_llama3(r, p, b, 3, SHARDLM_UNI_L);
    case ST_QWEN2: return match_llama3(r, p, b, 1, SHARDLM_UNI_L);
    case ST_QWEN35: return match_llama3(r, p, b, 1, SHARDLM_UNI_L | SHARDLM_UNI_M);
    case ST_DIGIT: return r->fl[p] & SHARDLM_UNI_N ? p + 1 : p;
    case ST_DIGITS: return run_of(r, p, b, SHARDLM_UNI_N);
    case ST_PUNCT:
        while (e < b && is_default_punct(r, e)) e++;
        return e;
    case ST_TRIPLE: return p + 2 < b && is_digit(r, p) && is_digit(r, p + 1) && is_digit(r, p + 2) ? p + 3 : p;
    }
    return p;
}

/* Splits [a, b) into matches and the gaps between them, as a regex
 * iterator does, and hands each on to the next stage. */
static void pt_split(pt_run *r, int stage, uint32_t a, uint32_t b)
{
    pt_stage st = r->p->stage[stage];
    uint32_t gap = a;
    for (uint32_t p = a; p < b;) {
        uint32_t e = pt_match(r, st, p, b);
        if (e == p) {
            p++;
            continue;
        }
        if (gap < p) pt_piece(r, stage + 1, gap, p);
        pt_piece(r, stage + 1, p, e);
        p = gap = e;
    }
    if (gap < b) pt_piece(r, stage + 1, gap, b);
}

static void pt_piece(pt_run *r, int stage, uint32_t a, uint32_t b)
{
    if (stage < r->p->n_stages) {
        pt_split(r, stage, a, b);
        return;
    }
    size_t n = 0;
    for (uint32_t i = a; i < b; i++) n += r->ch[i] < 0x80 ? 1 : r->ch[i] & 7;
    r->word(r->ctx, r->text + r->at, n);
    r->at += n;
}

int shardlm_pretok_split(const shardlm_pretok *p, const char *text, size_t len, shardlm_pretok_word_fn word,
                         void *ctx)
{
    if (len == 0) return SHARDLM_OK;
    if (len >= UINT32_MAX) return SHARDLM_ENOMEM;
    uint8_t *ch = malloc(2 * len);
    if (!ch) return SHARDLM_ENOMEM;
    uint8_t *fl = ch + len;
    uint32_t n = 0;
    for (size_t i = 0; i < len; n++) {
        uint32_t cp, k = shardlm_utf8_decode((const unsigned char *)text + i, len - i, &cp);
        ch[n] = cp < 0x80 ? (uint8_t)cp : (uint8_t)(0x80 | k);
        fl[n] = shardlm_uni_flags(cp);
        i += k;
    }
    pt_run r = {p, ch, fl, text, 0, word, ctx};
    pt_piece(&r, 0, 0, n);
    free(ch);
    return SHARDLM_OK;
}
