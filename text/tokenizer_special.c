/* tokenizer_special.c - the tokens that are more than text: what llama.cpp
 * (llama_vocab::impl::load) derives from the vocabulary beyond the GGUF keys
 * (the EOT, EOM and FIM tokens it recognises by their text, the
 * end-of-generation set, the strip attributes of Phi-3), and special-token
 * text in prompts, split out as tokenizer_st_partition does: the longest
 * special token first, each of its occurrences carved out of the text left
 * over, then the next. */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "shardlm_common.h"
#include "tokenizer_internal.h"

/* ---- the texts llama.cpp recognises (llama-vocab.cpp) ---- */

static const char *const EOT_TEXT[] = {"<|eot_id|>", "<|im_end|>", "<|end|>", "<end_of_turn>", "<|endoftext|>",
                                       "<|end_of_text|>", "<EOT>", "_<EOT>", "[EOT]",
                                       "<\xef\xbd\x9c" "end\xe2\x96\x81of\xe2\x96\x81sentence\xef\xbd\x9c>",
                                       "<end_of_utterance>", NULL};
static const char *const EOM_TEXT[] = {"<|eom_id|>", NULL};
static const char *const FIM_PRE_TEXT[] = {"<|fim_prefix|>", "<fim-prefix>", "<fim_prefix>",
                                           "<\xef\xbd\x9c" "fim\xe2\x96\x81" "begin\xef\xbd\x9c>", "<PRE>",
                                           "\xe2\x96\x81<PRE>", "<|code_prefix|>", "<|prefix|>", NULL};
static const char *const FIM_SUF_TEXT[] = {"<|fim_suffix|>", "<fim-suffix>", "<fim_suffix>",
                                           "<\xef\xbd\x9c" "fim\xe2\x96\x81hole\xef\xbd\x9c>", "<SUF>",
                                           "\xe2\x96\x81<SUF>", "<|code_suffix|>", "<|suffix|>", NULL};
static const char *const FIM_MID_TEXT[] = {"<|fim_middle|>", "<fim-middle>", "<fim_middle>",
                                           "<\xef\xbd\x9c" "fim\xe2\x96\x81" "end\xef\xbd\x9c>", "<MID>",
                                           "\xe2\x96\x81<MID>", "<|code_middle|>", "<|middle|>", NULL};
static const char *const FIM_PAD_TEXT[] = {"<|fim_pad|>", "<fim-pad>", "<fim_pad>", "<PAD>", "[PAD]", NULL};
static const char *const FIM_REP_TEXT[] = {"<|fim_repo|>", "<|repo_name|>", "<fim-repo>", "<REPO>", "<reponame>", NULL};
static const char *const FIM_SEP_TEXT[] = {"<|file_sep|>", NULL};
static const char *const EOG_TEXT[] = {"<|eot_id|>", "<|im_end|>", "<|end|>", "<|return|>", "<|call|>", "<|flush|>",
                                       "<|calls|>", "<end_of_turn>", "<|endoftext|>", "</s>", "<|eom_id|>", "<EOT>",
                                       "_<EOT>", "[EOT]", "[EOS]", "<|end_of_text|>", "<end_of_utterance>", "<eos>",
                                       "<turn|>", "<|tool_response>",
                                       "<\xef\xbd\x9c" "end\xe2\x96\x81of\xe2\x96\x81sentence\xef\xbd\x9c>", "[e~[",
                                       NULL};
/* gpt-oss: always rendered (llama.cpp makes them user-defined). */
static const char *const RENDERED_TEXT[] = {"<|channel|>", "<|message|>", "<|start|>", "<|constrain|>", NULL};

static int text_is(const shardlm_tokenizer *t, int32_t id, const char *s)
{
    size_t k = strlen(s);
    return tok_len(t, id) == k && memcmp(tok_text(t, id), s, k) == 0;
}

static int text_in(const shardlm_tokenizer *t, int32_t id, const char *const *list)
{
    unsigned c = tok_len(t, id) ? (unsigned char)tok_text(t, id)[0] : 0;
    if (c != '<' && c != '[' && c != '_' && c != 0xE2) return 0; /* every listed text starts so */
    for (; *list; list++)
        if (text_is(t, id, *list)) return 1;
    return 0;
}

static int32_t find_text(const shardlm_tokenizer *t, const char *s)
{
    for (int32_t id = 0; id < t->n; id++)
        if (text_is(t, id, s)) return id;
    return -1;
}

/* llama.cpp makes a token it recognises by its text a control token
 * ("control-looking token ... its type will be overridden"). */
static void make_control(shardlm_tokenizer *t, int32_t id) { t->type[id] = TOK_CONTROL; }

/* When *id is not set by its GGUF key, the first token with a listed text. */
static void detect(shardlm_tokenizer *t, int32_t *id, const char *const *list)
{
    if (*id >= 0) return;
    for (int32_t i = 0; i < t->n; i++)
        if (text_in(t, i, list)) {
            *id = i;
            make_control(t, i);
            return;
        }
}

/* ---- the end-of-generation set ---- */

static void eog_add(shardlm_tokenizer *t, int32_t id)
{
    if (id >= 0) t->attr[id] |= ATTR_EOG;
}

/* llama.cpp's two exceptions: with <|return|> and <|call|> (o200k_harmony)
 * or <|calls|> and <|flush|> (solar-open), <|end|> is not EOG but rendered;
 * with <|tool_response> (gemma4), </s> is not EOG but normal text. */
static void eog_exceptions(shardlm_tokenizer *t)
{
    int32_t ret = -1, call = -1, flush = -1, end = -1, tool = -1, s = -1;
    for (int32_t id = 0; id < t->n; id++) {
        if (!(t->attr[id] & ATTR_EOG)) continue;
        if (text_is(t, id, "<|return|>")) ret = id;
        else if (text_is(t, id, "<|call|>") || text_is(t, id, "<|calls|>")) call = id;
        else if (text_is(t, id, "<|flush|>")) flush = id;
        else if (text_is(t, id, "<|end|>")) end = id;
        else if (text_is(t, id, "<|tool_response>")) tool = id;
        else if (text_is(t, id, "</s>")) s = id;
    }
    if (end >= 0 && call >= 0 && (ret >= 0 || flush >= 0)) {
        t->attr[end] &= (uint8_t)~ATTR_EOG;
        t->type[end] = TOK_USER;
    }
    if (tool >= 0 && s >= 0) {
        t->attr[s] &= (uint8_t)~ATTR_EOG;
        t->type[s] = TOK_NORMAL;
    }
}

static int eog_collect(shardlm_tokenizer *t)
{
    t->n_eog = 0;
    for (int32_t id = 0; id < t->n; id++) t->n_eog += (t->attr[id] & ATTR_EOG) != 0;
    t->eog = malloc(((size_t)t->n_eog + 1) * sizeof *t->eog);
    if (!t->eog) return SHARDLM_ENOMEM;
    int32_t k = 0;
    for (int32_t id = 0; id < t->n; id++)
        if (t->attr[id] & ATTR_EOG) t->eog[k++] = id;
    return SHARDLM_OK;
}

static int load_eog(shardlm_tokenizer *t, const shardlm_gguf *g, const char *path)
{
    int32_t pre = -1, suf = -1, mid = -1, pad = -1, rep = -1, sep = -1;
    int rc = shardlm_tok_load_id(g, path, "tokenizer.ggml.fim_pre_token_id", t->n, &pre);
    if (!rc) rc = shardlm_tok_load_id(g, path, "tokenizer.ggml.fim_suf_token_id", t->n, &suf);
    if (!rc) rc = shardlm_tok_load_id(g, path, "tokenizer.ggml.fim_mid_token_id", t->n, &mid);
    if (!rc) rc = shardlm_tok_load_id(g, path, "tokenizer.ggml.fim_pad_token_id", t->n, &pad);
    if (!rc) rc = shardlm_tok_load_id(g, path, "tokenizer.ggml.fim_rep_token_id", t->n, &rep);
    if (!rc) rc = shardlm_tok_load_id(g, path, "tokenizer.ggml.fim_sep_token_id", t->n, &sep);
    if (rc) return rc;
    detect(t, &t->eot, EOT_TEXT);
    detect(t, &t->eom, EOM_TEXT);
    detect(t, &pre, FIM_PRE_TEXT);
    detect(t, &suf, FIM_SUF_TEXT);
    detect(t, &mid, FIM_MID_TEXT);
    detect(t, &pad, FIM_PAD_TEXT);
    detect(t, &rep, FIM_REP_TEXT);
    detect(t, &sep, FIM_SEP_TEXT);
    eog_add(t, pad);
    eog_add(t, rep);
    eog_add(t, sep);
    for (int32_t id = 0; id < t->n; id++)
        if (text_in(t, id, EOG_TEXT)) {
            eog_add(t, id);
            make_control(t, id);
        }
    for (int32_t id = 0; id < t->n; id++)
        if (text_in(t, id, RENDERED_TEXT)) t->type[id] = TOK_USER;
    eog_add(t, t->eos);
    eog_add(t, t->eot);
    eog_add(t, t->eom);
    eog_exceptions(t);
    return eog_collect(t);
}

/* ---- special tokens ---- */

static int is_special_type(uint8_t ty) { return ty == TOK_CONTROL || ty == TOK_USER || ty == TOK_UNKNOWN; }

/* Phi-3's added tokens swallow the whitespace after them (llama.cpp keys
 * this on general.name). */
static void strip_attrs(shardlm_tokenizer *t, const shardlm_gguf *g)
{
    shardlm_gguf_str name;
    if (shardlm_gguf_get_str(g, "general.name", &name) != SHARDLM_OK) return;
    char low[128];
    size_t k = name.len < sizeof low - 1 ? name.len : sizeof low - 1;
    for (size_t i = 0; i < k; i++) low[i] = (char)tolower((unsigned char)name.ptr[i]);
    low[k] = 0;
    if (!strstr(low, "phi-3") && !strstr(low, "phi3")) return;
    for (int32_t id = 0; id < t->n; id++)
        if (is_special_type(t->type[id])) t->attr[id] |= ATTR_RSTRIP;
    int32_t id = find_text(t, "</s>");
    if (id >= 0) t->attr[id] |= ATTR_RSTRIP;
    static const char *const keep[] = {"<unk>", "<s>", "<|endoftext|>"};
    for (size_t i = 0; i < 3; i++)
        if ((id = find_text(t, keep[i])) >= 0) t->attr[id] &= (uint8_t)~ATTR_RSTRIP;
}

static int longer_first(const void *a, const void *b, void *ctx)
{
    const shardlm_tokenizer *t = ctx;
    int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
    size_t lx = tok_len(t, x), ly = tok_len(t, y);
    return lx != ly ? (lx > ly ? -1 : 1) : (x > y) - (x < y);
}

static int trie_add(shardlm_tokenizer *t, int32_t idx)
{
    const unsigned char *s = (const unsigned char *)tok_text(t, t->special[idx]);
    size_t n = tok_len(t, t->special[idx]);
    int32_t *link = &t->trie_root[s[0]];
    for (size_t i = 0;; i++) {
        int32_t node = *link;
        while (node >= 0 && t->trie[node].byte != s[i]) node = t->trie[node].sibling;
        if (node < 0) {
            node = t->n_trie++;
            t->trie[node] = (tok_trie_node){-1, *link, -1, s[i]};
            *link = node;
        }
        if (i + 1 == n) {
            if (t->trie[node].special < 0) t->trie[node].special = idx;
            return SHARDLM_OK;
        }
        link = &t->trie[node].child;
    }
}

static int build_specials(shardlm_tokenizer *t)
{
    size_t total = 0;
    t->n_special = 0;
    for (int32_t id = 0; id < t->n; id++)
        if (is_special_type(t->type[id]) && tok_len(t, id) > 0) t->n_special++, total += tok_len(t, id);
    t->special = malloc(((size_t)t->n_special + 1) * sizeof *t->special);
    t->trie = malloc((total + 1) * sizeof *t->trie);
    if (!t->special || !t->trie) return SHARDLM_ENOMEM;
    int32_t k = 0;
    for (int32_t id = 0; id < t->n; id++)
        if (is_special_type(t->type[id]) && tok_len(t, id) > 0) t->special[k++] = id;
    qsort_r(t->special, (size_t)t->n_special, sizeof *t->special, longer_first, t);
    for (int b = 0; b < 256; b++) t->trie_root[b] = -1;
    t->n_trie = 0;
    for (int32_t i = 0; i < t->n_special; i++) trie_add(t, i);
    return SHARDLM_OK;
}

int shardlm_tok_load_special(shardlm_tokenizer *t, const shardlm_gguf *g, const char *path)
{
    int rc = load_eog(t, g, path);
    if (rc) return rc;
    rc = build_specials(t);
    if (!rc) strip_attrs(t, g);
    return rc;
}

void shardlm_tok_free_special(shardlm_tokenizer *t)
{
    free(t->special);
    free(t->trie);
    free(t->eog);
}

int shardlm_tokenizer_is_eog(const shardlm_tokenizer *t, int32_t id)
{
    return id >= 0 && id < t->n && (t->attr[id] & ATTR_EOG);
}

size_t shardlm_tokenizer_eog(const shardlm_tokenizer *t, int32_t *out, size_t cap)
{
    for (int32_t i = 0; i < t->n_eog && (size_t)i < cap; i++) out[i] = t->eog[i];
    return (size_t)t->n_eog;
}

/* ---- special-token text in a prompt ---- */

typedef struct {
    size_t start, len;
    int32_t id; /* -1: raw text */
} tok_frag;

typedef struct {
    tok_frag *v;
    size_t n, cap;
} frag_list;

static int frag_push(frag_list *l, size_t start, size_t len, int32_t id)
{
    if (l->n == l->cap) {
        size_t cap = l->cap ? 2 * l->cap : 16;
        tok_frag *v = realloc(l->v, cap * sizeof *v);
        if (!v) return SHARDLM_ENOMEM;
        l->v = v;
        l->cap = cap;
    }
    l->v[l->n++] = (tok_frag){start, len, id};
    return SHARDLM_OK;
}

static int eligible(const shardlm_tokenizer *t, int32_t id, int all)
{
    return t->type[id] == TOK_USER || (all && (t->type[id] == TOK_CONTROL || t->type[id] == TOK_UNKNOWN));
}

/* Marks in seen[] (by index into t->special) every eligible special token
 * that occurs in text; returns how many distinct ones do. */
static int32_t find_present(const shardlm_tokenizer *t, const char *text, size_t len, int all, uint8_t *seen)
{
    int32_t found = 0;
    for (size_t p = 0; p < len; p++) {
        int32_t node = t->trie_root[(unsigned char)text[p]];
        for (size_t i = p; node >= 0;) {
            int32_t sp = t->trie[node].special;
            if (sp >= 0 && !seen[sp] && eligible(t, t->special[sp], all)) seen[sp] = 1, found++;
            if (++i == len) break;
            node = t->trie[node].child;
            while (node >= 0 && t->trie[node].byte != (unsigned char)text[i]) node = t->trie[node].sibling;
        }
    }
    return found;
}

static int is_space(char c) { return c == ' ' || (c >= '\t' && c <= '\r'); }

/* Carves every occurrence of token id out of the raw fragments of in. */
static int carve(const shardlm_tokenizer *t, const char *text, int32_t id, const frag_list *in, frag_list *out)
{
    const char *s = tok_text(t, id);
    size_t k = tok_len(t, id);
    int rc = SHARDLM_OK;
    for (size_t f = 0; rc == SHARDLM_OK && f < in->n; f++) {
        tok_frag fr = in->v[f];
        if (fr.id >= 0) {
            rc = frag_push(out, fr.start, fr.len, fr.id);
            continue;
        }
        size_t at = fr.start, end = fr.start + fr.len;
        for (;;) {
            const char *m = end - at >= k ? memmem(text + at, end - at, s, k) : NULL;
            if (!m) break;
            size_t pos = (size_t)(m - text), left = pos - at;
            if (t->attr[id] & ATTR_LSTRIP)
                while (left > 0 && is_space(text[at + left - 1])) left--;
            if (left > 0 && (rc = frag_push(out, at, left, -1))) return rc;
            if ((rc = frag_push(out, pos, k, id))) return rc;
            at = pos + k;
            if (t->attr[id] & ATTR_RSTRIP)
                while (at < end && is_space(text[at])) at++;
        }
        if (at < end) rc = frag_push(out, at, end - at, -1);
    }
    return rc;
}

static int encode_frags(const shardlm_tokenizer *t, const char *text, const frag_list *l, int32_t *out, size_t cap,
                        size_t *n)
{
    int prev_special = 1, rc = SHARDLM_OK;
    for (size_t f = 0; rc == SHARDLM_OK && f < l->n; f++) {
        const tok_frag *fr = &l->v[f];
        if (fr->id >= 0) {
            shardlm_tok_emit(n, out, cap, fr->id);
            prev_special = 1;
            continue;
        }
        /* SentencePiece gives text after a special token (or at the start)
         * its dummy-prefix space, as llama.cpp does */
        if (t->kind == TOKZ_BPE) rc = shardlm_tok_encode_bpe(t, text + fr->start, fr->len, out, cap, n);
        else rc = shardlm_tok_encode_spm(t, text + fr->start, fr->len, t->add_space_prefix && prev_special, out, cap, n);
        prev_special = 0;
    }
    return rc;
}

int shardlm_tok_encode_parts(const shardlm_tokenizer *t, const char *text, size_t len, int all, int32_t *out,
                             size_t cap, size_t *n)
{
    if (len == 0) return SHARDLM_OK;
    uint8_t *seen = t->n_special ? calloc((size_t)t->n_special, 1) : NULL;
    if (t->n_special && !seen) return SHARDLM_ENOMEM;
    int32_t present = seen ? find_present(t, text, len, all, seen) : 0;
    frag_list a = {0}, b = {0};
    int rc = frag_push(&a, 0, len, -1);
    for (int32_t i = 0; rc == SHARDLM_OK && present > 0 && i < t->n_special; i++) {
        if (!seen[i]) continue;
        b.n = 0;
        rc = carve(t, text, t->special[i], &a, &b);
        frag_list tmp = a;
        a = b;
        b = tmp;
        present--;
    }
    if (rc == SHARDLM_OK) rc = encode_frags(t, text, &a, out, cap, n);
    else shardlm_err_set("tokenizer: out of memory splitting %zu bytes of text at its special tokens", len);
    free(a.v);
    free(b.v);
    free(seen);
    return rc;
}
