/* detok.c - the streaming decoder: ids in, valid UTF-8 out, one token at a
 * time. A token's bytes may end inside a character (a byte-level BPE token
 * of half an emoji, a <0xNN> byte token); those bytes are held until the
 * character is complete, and a sequence that cannot complete comes out as
 * U+FFFD. Control tokens give no text. */
#include <string.h>

#include "tokenizer_internal.h"
#include "unicode.h"

typedef struct {
    char *buf;
    size_t cap, n;
    int raw; /* shardlm_tokenizer_token_bytes: bytes as they are, no UTF-8 checks */
} detok_out;

/* Appends whole units only, so a short buffer never gets half a character. */
static void out_put(detok_out *o, const void *p, size_t k)
{
    if (o->n + k > o->cap) {
        o->cap = o->n; /* full: drop the rest rather than split a character */
        return;
    }
    memcpy(o->buf + o->n, p, k);
    o->n += k;
}

static void out_replacement(detok_out *o) { out_put(o, "\xef\xbf\xbd", 3); }

/* Copies SentencePiece piece text with "▁" turned into ' ' and any invalid
 * UTF-8 (only a corrupt vocabulary could hold some) turned into U+FFFD. */
static void out_piece(detok_out *o, const char *s, size_t n, int drop_space)
{
    size_t i = 0;
    if (drop_space) {
        if (n >= 3 && memcmp(s, "\xe2\x96\x81", 3) == 0) i = 3;
        else if (n >= 1 && s[0] == ' ') i = 1;
    }
    while (i < n) {
        uint32_t cp, cl = shardlm_utf8_decode((const unsigned char *)s + i, n - i, &cp);
        if (cl == 3 && memcmp(s + i, "\xe2\x96\x81", 3) == 0) out_put(o, " ", 1);
        else if (cl == 1 && (unsigned char)s[i] >= 0x80) out_replacement(o);
        else out_put(o, s + i, cl);
        i += cl;
    }
}

/* Expected total length of a sequence starting with lead byte c, or 0. */
static int utf8_need(unsigned c)
{
    return c >= 0xC2 && c <= 0xDF ? 2 : c >= 0xE0 && c <= 0xEF ? 3 : c >= 0xF0 && c <= 0xF4 ? 4 : 0;
}

/* Whether byte b may follow the pending bytes (checks the second byte's
 * narrower ranges that exclude overlongs, surrogates and > U+10FFFF). */
static int utf8_accepts(const shardlm_detok *d, unsigned b)
{
    if ((b & 0xC0) != 0x80) return 0;
    if (d->n_pend != 1) return 1;
    unsigned c = d->pend[0];
    if (c == 0xE0) return b >= 0xA0;
    if (c == 0xED) return b <= 0x9F;
    if (c == 0xF0) return b >= 0x90;
    if (c == 0xF4) return b <= 0x8F;
    return 1;
}

static void flush_pending(shardlm_detok *d, detok_out *o)
{
    if (d->n_pend && !o->raw) out_replacement(o);
    d->n_pend = 0;
}

/* One byte of output. run.c's safe_printf drops stray control bytes from
 * SentencePiece byte tokens (the stories260K golden texts need that);
 * byte-level BPE text is kept byte for byte. */
static void put_byte(shardlm_detok *d, detok_out *o, unsigned b, int drop_controls)
{
    if (o->raw) {
        if (!drop_controls || b >= 0x20 || b == '\t' || b == '\n' || b == '\r') out_put(o, &(char){(char)b}, 1);
        return;
    }
    if (d->n_pend) {
        if (utf8_accepts(d, b)) {
            d->pend[d->n_pend++] = (unsigned char)b;
            if (d->n_pend == utf8_need(d->pend[0])) {
                out_put(o, d->pend, (size_t)d->n_pend);
                d->n_pend = 0;
            }
            return;
        }
        flush_pending(d, o); /* b is then judged on its own */
    }
    if (b < 0x80) {
        if (!drop_controls || b >= 0x20 || b == '\t' || b == '\n' || b == '\r') out_put(o, &(char){(char)b}, 1);
    } else if (utf8_need(b)) {
        d->pend[0] = (unsigned char)b;
        d->n_pend = 1;
    } else {
        out_replacement(o);
    }
}

static void put_bytes(shardlm_detok *d, detok_out *o, const char *s, size_t n, int drop_space)
{
    for (size_t i = drop_space && n && s[0] == ' ' ? 1 : 0; i < n; i++) put_byte(d, o, (unsigned char)s[i], 0);
}

void shardlm_detok_init(shardlm_detok *d)
{
    memset(d, 0, sizeof *d);
    d->prev = -1;
}

static size_t push_spm(const shardlm_tokenizer *t, shardlm_detok *d, int32_t id, int32_t prev, detok_out *o)
{
    if (t->byteval[id] >= 0) {
        put_byte(d, o, (unsigned)t->byteval[id], 1);
        return o->n;
    }
    if (t->type[id] == TOK_CONTROL) return 0;
    flush_pending(d, o);
    out_piece(o, tok_text(t, id), tok_len(t, id), t->add_space_prefix && prev >= 0 && prev == t->bos);
    return o->n;
}

/* As llama.cpp's token_to_piece: normal tokens give the bytes their text
 * spells, user-defined ones their text as it is, byte tokens their byte;
 * control, unknown, unused and undefined ones nothing. */
static size_t push_bpe(const shardlm_tokenizer *t, shardlm_detok *d, int32_t id, int32_t prev, detok_out *o)
{
    int drop = t->add_space_prefix && prev >= 0 && prev == t->bos;
    switch (t->type[id]) {
    case TOK_NORMAL:
        if (t->attr[id] & ATTR_KEYED) put_bytes(d, o, t->key + t->koff[id], tok_key_len(t, id), drop);
        else put_bytes(d, o, tok_text(t, id), tok_len(t, id), drop);
        break;
    case TOK_USER: put_bytes(d, o, tok_text(t, id), tok_len(t, id), drop); break;
    case TOK_BYTE:
        if (t->byteval[id] >= 0) put_byte(d, o, (unsigned)t->byteval[id], 0);
        break;
    default: break;
    }
    return o->n;
}

size_t shardlm_detok_push(const shardlm_tokenizer *t, shardlm_detok *d, int32_t id, char *buf, size_t cap)
{
    detok_out o = {buf, cap, 0, 0};
    int32_t prev = d->prev;
    d->prev = id;
    if (id < 0 || id >= t->n) return 0;
    return t->kind == TOKZ_BPE ? push_bpe(t, d, id, prev, &o) : push_spm(t, d, id, prev, &o);
}

/* The same walk as a push, in raw mode: what id adds to the byte stream
 * before the UTF-8 checks, so the grammar mask tests exactly the bytes a
 * stream will emit (any well-formed sequence comes out unchanged). */
size_t shardlm_tokenizer_token_bytes(const shardlm_tokenizer *t, int32_t id, int after_bos, char *buf, size_t cap)
{
    detok_out o = {buf, cap, 0, 1};
    shardlm_detok d;
    shardlm_detok_init(&d);
    if (id < 0 || id >= t->n) return 0;
    int32_t prev = after_bos ? t->bos : -1;
    return t->kind == TOKZ_BPE ? push_bpe(t, &d, id, prev, &o) : push_spm(t, &d, id, prev, &o);
}

size_t shardlm_detok_flush(shardlm_detok *d, char *buf, size_t cap)
{
    detok_out o = {buf, cap, 0, 0};
    flush_pending(d, &o);
    return o.n;
}

size_t shardlm_detok_max(const shardlm_tokenizer *t) { return 3 * ((size_t)t->max_out + 4); }
