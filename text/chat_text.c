/* chat_text.c - strings the way the reference (JavaScript) sees them,
 * over UTF-8: lengths and indices in UTF-16 code units, JavaScript's
 * whitespace for trim(), case mapping (towupper/towlower of the C.UTF-8
 * locale: one character to one, so "ß".upper() stays "ß" where JavaScript
 * gives "SS"), \b\w title case, replace() and strftime_now's formats. */
#include <locale.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <wctype.h>

#include "chat_internal.h"

uint32_t chat_utf8_next(chat_str s, size_t *i)
{
    unsigned char c = (unsigned char)s.p[*i];
    size_t len = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
    if (!len || *i + len > s.n) {
        (*i)++;
        return 0xFFFD; /* what the reference's UTF-8 decoder makes of a bad byte */
    }
    uint32_t cp = len == 1 ? c : c & (0x7Fu >> len);
    for (size_t k = 1; k < len; k++) {
        unsigned char cc = (unsigned char)s.p[*i + k];
        if ((cc & 0xC0) != 0x80) {
            (*i)++;
            return 0xFFFD;
        }
        cp = (cp << 6) | (cc & 0x3F);
    }
    *i += len;
    return cp;
}

void chat_utf8_put(chat_sb *b, uint32_t cp)
{
    char u[4];
    size_t n;
    if (cp < 0x80) u[0] = (char)cp, n = 1;
    else if (cp < 0x800) u[0] = (char)(0xC0 | cp >> 6), u[1] = (char)(0x80 | (cp & 0x3F)), n = 2;
    else if (cp < 0x10000) {
        if (cp >= 0xD800 && cp <= 0xDFFF) cp = 0xFFFD; /* a lone surrogate cannot be UTF-8 */
        u[0] = (char)(0xE0 | cp >> 12), u[1] = (char)(0x80 | ((cp >> 6) & 0x3F)), u[2] = (char)(0x80 | (cp & 0x3F));
        n = 3;
    } else {
        u[0] = (char)(0xF0 | cp >> 18), u[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
        u[2] = (char)(0x80 | ((cp >> 6) & 0x3F)), u[3] = (char)(0x80 | (cp & 0x3F));
        n = 4;
    }
    chat_sb_put(b, u, n);
}

int chat_js_space(uint32_t c)
{
    return c == ' ' || (c >= 9 && c <= 13) || c == 0xA0 || c == 0x1680 || (c >= 0x2000 && c <= 0x200A) ||
           c == 0x2028 || c == 0x2029 || c == 0x202F || c == 0x205F || c == 0x3000 || c == 0xFEFF;
}

chat_str chat_trim(chat_str s, int left, int right)
{
    size_t a = 0, b = s.n;
    while (left && a < b) {
        size_t i = a;
        if (!chat_js_space(chat_utf8_next(s, &i))) break;
        a = i;
    }
    while (right && b > a) {
        size_t st = b - 1;
        while (st > a && b - st < 4 && ((unsigned char)s.p[st] & 0xC0) == 0x80) st--;
        size_t i = st;
        uint32_t c = chat_utf8_next(s, &i);
        if (i != b || !chat_js_space(c)) break;
        b = st;
    }
    return (chat_str){s.p + a, b - a};
}

size_t chat_u16_len(chat_str s)
{
    size_t n = 0;
    for (size_t i = 0; i < s.n;) n += chat_utf8_next(s, &i) >= 0x10000 ? 2 : 1;
    return n;
}

/* String.prototype.at(i): one UTF-16 unit (half an astral character
 * becomes U+FFFD, as it would printed through UTF-8). */
chat_val chat_u16_at(chat_ctx *r, chat_str s, double x)
{
    double len = (double)chat_u16_len(s);
    if (x < 0) x += len;
    if (x < 0 || x >= len || x != (double)(size_t)x) return chat_v_undef();
    size_t want = (size_t)x, u = 0;
    for (size_t i = 0; i < s.n;) {
        size_t at = i;
        uint32_t c = chat_utf8_next(s, &i);
        size_t w = c >= 0x10000 ? 2 : 1;
        if (want < u + w) {
            if (w == 2) return chat_v_str(chat_str_dup(r->e, "\xEF\xBF\xBD", 3));
            return chat_v_str((chat_str){s.p + at, i - at});
        }
        u += w;
    }
    return chat_v_undef();
}

chat_list *chat_chars(chat_ctx *r, chat_str s)
{
    chat_list *l = chat_list_new(r, 0);
    for (size_t i = 0; i < s.n;) {
        size_t at = i;
        chat_utf8_next(s, &i);
        chat_list_push(r, l, chat_v_str((chat_str){s.p + at, i - at}));
    }
    return l;
}

static locale_t utf8_locale(void)
{
    static locale_t loc;
    static int tried;
    if (!__atomic_load_n(&tried, __ATOMIC_ACQUIRE)) {
        locale_t l = newlocale(LC_CTYPE_MASK, "C.UTF-8", (locale_t)0);
        locale_t none = (locale_t)0;
        if (l && !__atomic_compare_exchange_n(&loc, &none, l, 0, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE)) freelocale(l);
        __atomic_store_n(&tried, 1, __ATOMIC_RELEASE);
    }
    return __atomic_load_n(&loc, __ATOMIC_ACQUIRE);
}

static uint32_t map_cp(uint32_t c, int upper)
{
    if (c < 0x80) {
        if (upper && c >= 'a' && c <= 'z') return c - 32;
        if (!upper && c >= 'A' && c <= 'Z') return c + 32;
        return c;
    }
    locale_t l = utf8_locale();
    if (!l) return c;
    return (uint32_t)(upper ? towupper_l((wint_t)c, l) : towlower_l((wint_t)c, l));
}

chat_str chat_case(chat_ctx *r, chat_str s, int upper)
{
    chat_sb b = {.e = r->e};
    for (size_t i = 0; i < s.n;) chat_utf8_put(&b, map_cp(chat_utf8_next(s, &i), upper));
    return chat_sb_str(&b);
}

static int ascii_word(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_';
}

/* value.replace(/\b\w/g, c => c.toUpperCase()): only word starts change. */
chat_str chat_title(chat_ctx *r, chat_str s)
{
    char *p = chat_alloc(r->e, s.n + 1);
    for (size_t i = 0; i < s.n; i++) {
        char c = s.p[i];
        int start = ascii_word(c) && (i == 0 || !ascii_word(s.p[i - 1]));
        p[i] = start && c >= 'a' && c <= 'z' ? (char)(c - 32) : c;
    }
    p[s.n] = 0;
    return (chat_str){p, s.n};
}

/* charAt(0).toUpperCase() + slice(1): the rest is left as it is. */
chat_str chat_capitalize(chat_ctx *r, chat_str s)
{
    if (!s.n) return s;
    size_t i = 0;
    uint32_t c = chat_utf8_next(s, &i);
    chat_sb b = {.e = r->e};
    chat_utf8_put(&b, c >= 0x10000 ? c : map_cp(c, 1));
    chat_sb_put(&b, s.p + i, s.n - i);
    return chat_sb_str(&b);
}

/* count < 0 or NaN: all. An empty old inserts rep between characters. */
chat_str chat_replace(chat_ctx *r, chat_str s, chat_str old, chat_str rep, double count)
{
    if (count == 0) return s;
    double left = count < 0 || count != count ? 1e300 : count;
    chat_sb b = {.e = r->e};
    if (!old.n) {
        for (size_t i = 0;;) {
            if (left > 0) chat_sb_put(&b, rep.p, rep.n), left--;
            if (i >= s.n) break;
            size_t at = i;
            chat_utf8_next(s, &i);
            chat_sb_put(&b, s.p + at, i - at);
        }
        return chat_sb_str(&b);
    }
    size_t i = 0;
    while (i < s.n) {
        if (left > 0 && i + old.n <= s.n && !memcmp(s.p + i, old.p, old.n)) {
            chat_sb_put(&b, rep.p, rep.n);
            i += old.n, left--;
        } else {
            chat_sb_put(&b, s.p + i++, 1);
        }
    }
    return chat_sb_str(&b);
}

/* The reference's strftime: %Y %m %d %b %B %H %M %% in local time, month
 * names in English; any other directive is left as it is. */
chat_str chat_strftime(chat_ctx *r, chat_str fmt, int64_t now)
{
    static const char *const months[] = {"January", "February", "March",     "April",   "May",      "June",
                                         "July",    "August",   "September", "October", "November", "December"};
    time_t t = (time_t)now;
    struct tm tm;
    localtime_r(&t, &tm);
    chat_sb b = {.e = r->e};
    char buf[32];
    for (size_t i = 0; i < fmt.n; i++) {
        char c = i + 1 < fmt.n && fmt.p[i] == '%' ? fmt.p[i + 1] : 0;
        const char *out = NULL;
        switch (c) {
        case 'Y': snprintf(buf, sizeof buf, "%d", tm.tm_year + 1900), out = buf; break;
        case 'm': snprintf(buf, sizeof buf, "%02d", tm.tm_mon + 1), out = buf; break;
        case 'd': snprintf(buf, sizeof buf, "%02d", tm.tm_mday), out = buf; break;
        case 'H': snprintf(buf, sizeof buf, "%02d", tm.tm_hour), out = buf; break;
        case 'M': snprintf(buf, sizeof buf, "%02d", tm.tm_min), out = buf; break;
        case 'b': snprintf(buf, sizeof buf, "%.3s", months[tm.tm_mon]), out = buf; break;
        case 'B': out = months[tm.tm_mon]; break;
        case '%': out = "%"; break;
        }
        if (out) {
            chat_sb_putz(&b, out);
            i++;
        } else {
            chat_sb_put(&b, fmt.p + i, 1);
        }
    }
    return chat_sb_str(&b);
}
