/* test_grammar.c - the GBNF compiler and the pushdown machine: good
 * grammars accept exactly the texts they describe (fed byte by byte, and
 * split anywhere), bad grammars fail with their exact "line L column C"
 * message, UTF-8 is matched by character and never let through malformed,
 * and a state's copy, end and flush behave. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>

#include "../runtime/grammar_internal.h"
#include "shardlm_common.h"

static shardlm_grammar *compile(const char *text)
{
    char why[256];
    shardlm_grammar *g = NULL;
    int rc = shardlm_grammar_compile(text, strlen(text), &g, why, sizeof why);
    cr_assert_eq(rc, SHARDLM_OK, "%s: %s", text, why);
    return g;
}

/* 1 when the whole text is a sentence: fed one byte at a time, then again
 * in one piece, which must agree. */
static int matches(shardlm_grammar *g, const char *text, size_t n)
{
    shardlm_grammar_state *a, *b;
    cr_assert_eq(shardlm_grammar_state_new(g, 0, &a), 0);
    cr_assert_eq(shardlm_grammar_state_new(g, 0, &b), 0);
    int ok = 1;
    for (size_t i = 0; i < n && ok; i++) ok = shardlm_grammar_accept_bytes(a, text + i, 1) == SHARDLM_OK;
    ok = ok && shardlm_grammar_can_end(a);
    int whole = shardlm_grammar_accept_bytes(b, text, n) == SHARDLM_OK && shardlm_grammar_can_end(b);
    cr_assert_eq(ok, whole, "byte by byte and whole disagree on '%.*s'", (int)n, text);
    shardlm_grammar_state_free(a);
    shardlm_grammar_state_free(b);
    return ok;
}

static void expect(const char *gbnf, const char *const *yes, const char *const *no)
{
    shardlm_grammar *g = compile(gbnf);
    for (int i = 0; yes[i]; i++) cr_expect(matches(g, yes[i], strlen(yes[i])), "%s should match '%s'", gbnf, yes[i]);
    for (int i = 0; no[i]; i++) cr_expect(!matches(g, no[i], strlen(no[i])), "%s should not match '%s'", gbnf, no[i]);
    shardlm_grammar_unref(g);
}

#define L(...) ((const char *const[]){__VA_ARGS__, NULL})

Test(grammar, literals_and_sequences)
{
    expect("root ::= \"hello\" \" \" \"world\"", L("hello world"), L("hello", "hello world!", "", "hello  world"));
    expect("root ::= \"\"", L(""), L("a"));
    expect("root ::= \"a\\\"b\\\\c\\n\\t\\x41\\u00e9\\U0001F600\"", L("a\"b\\c\n\tA\xc3\xa9\xf0\x9f\x98\x80"),
           L("a\"b\\c\n\tA"));
}

Test(grammar, alternatives_groups_and_rules)
{
    const char *g = "root ::= greeting \" \" name\n"
                    "greeting ::= \"hi\" | \"hello\" | \"hey\"  # comments are skipped\n"
                    "name ::= ( \"bob\" | \"al\" ( \"ice\" | \"\" ) )\n";
    expect(g, L("hi bob", "hello al", "hey alice"), L("hi", "hello alic", "yo bob", "hi  bob"));
    /* a rule continues after '|' or inside parentheses across lines */
    expect("root ::= \"a\" |\n  \"b\"\nother ::= (\n  \"c\"\n)", L("a", "b"), L("c", "ab"));
}

Test(grammar, repetitions)
{
    expect("root ::= \"ab\"* \"c\"", L("c", "abc", "ababc"), L("ac", "abab", "abcc"));
    expect("root ::= [0-9]+", L("0", "123456789"), L("", "12a"));
    expect("root ::= \"x\"?", L("", "x"), L("xx"));
    expect("root ::= \"a\"{3}", L("aaa"), L("aa", "aaaa"));
    expect("root ::= \"a\"{2,}", L("aa", "aaaaaaa"), L("a"));
    expect("root ::= \"a\"{1,3} \"b\"", L("ab", "aab", "aaab"), L("b", "aaaab"));
    expect("root ::= \"a\"{,2}", L("", "a", "aa"), L("aaa"));
    expect("root ::= \"a\"{0}", L(""), L("a"));
    expect("root ::= (\"a\" \"b\"?){2,3}", L("aa", "abab", "aba", "ababab"), L("a", "abababa"));
}

Test(grammar, classes)
{
    expect("root ::= [a-cx]+", L("abcx", "x"), L("d", "abcd"));
    expect("root ::= [^a-z\"]+", L("ABC", "1\xc3\xa9"), L("a", "\"", "Ab"));
    expect("root ::= [\\]\\-\\\\]+", L("]-\\"), L("a"));
    expect("root ::= [-a]", L("-", "a"), L("b"));
    expect("root ::= .", L("x", "\xe4\xb8\x80", "\xf0\x9f\x98\x80"), L("", "xy"));
    expect("root ::= [\\u4e00-\\u9fff]", L("\xe4\xb8\x80", "\xe9\xbf\xbf"), L("\xe3\x80\x80", "a"));
}

Test(grammar, utf8_is_matched_by_character)
{
    shardlm_grammar *g = compile("root ::= \"\xc3\xa9\" [^x]");
    cr_assert(matches(g, "\xc3\xa9\xe2\x82\xac", 5));
    const char *bad[] = {"\xc3\xa9\x80", "\xc3\xa9\xc0\x80", "\xc3\xa9\xe0\x80\x80", "\xc3\xa9\xed\xa0\x80",
                         "\xc3\xa9\xf4\x90\x80\x80", "\xc3\xa9\xf5\x80\x80\x80", "\xc3\xa9\xc3"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        cr_expect(!matches(g, bad[i], strlen(bad[i])), "malformed UTF-8 %zu passed", i);
    /* a character split across feeds completes in the next one */
    shardlm_grammar_state *s;
    cr_assert_eq(shardlm_grammar_state_new(g, 0, &s), 0);
    cr_assert_eq(shardlm_grammar_accept_bytes(s, "\xc3", 1), 0);
    cr_assert(!shardlm_grammar_can_end(s));
    cr_assert_eq(shardlm_grammar_accept_bytes(s, "\xa9\xe2\x82", 3), 0);
    cr_assert_eq(shardlm_grammar_accept_bytes(s, "x", 1), SHARDLM_EINPUT, "'x' cannot continue a character");
    cr_assert_eq(shardlm_grammar_accept_bytes(s, "\xac", 1), 0);
    cr_assert(shardlm_grammar_can_end(s) && shardlm_grammar_must_end(s));
    shardlm_grammar_state_free(s);
    /* an ASCII-only class prunes at the lead byte already */
    shardlm_grammar *a = compile("root ::= [a-z]");
    cr_assert_eq(shardlm_grammar_state_new(a, 0, &s), 0);
    cr_assert_eq(shardlm_grammar_accept_bytes(s, "\xc3", 1), SHARDLM_EINPUT);
    shardlm_grammar_state_free(s);
    shardlm_grammar_unref(a);
    shardlm_grammar_unref(g);
}

Test(grammar, recursion_and_nesting)
{
    const char *g = "root ::= list\nlist ::= \"[\" ( item ( \",\" item )* )? \"]\"\nitem ::= [0-9] | list\n";
    expect(g, L("[]", "[1,[2,[]],3]", "[[[[[[[[[[]]]]]]]]]]"), L("[", "[1,]", "[1]]", "[[]"));
}

Test(grammar, end_and_must_end)
{
    shardlm_grammar *g = compile("root ::= \"a\" \"b\"?");
    shardlm_grammar_state *s, *c;
    cr_assert_eq(shardlm_grammar_state_new(g, 0, &s), 0);
    cr_assert(!shardlm_grammar_can_end(s));
    cr_assert_eq(shardlm_grammar_accept_bytes(s, "a", 1), 0);
    cr_assert(shardlm_grammar_can_end(s));
    cr_assert(!shardlm_grammar_must_end(s), "'b' may still follow");
    cr_assert_eq(shardlm_grammar_state_copy(s, &c), 0);
    cr_assert_eq(shardlm_grammar_accept_bytes(c, "b", 1), 0);
    cr_assert(shardlm_grammar_must_end(c));
    cr_assert(!shardlm_grammar_must_end(s), "the copy is independent");
    cr_assert_eq(shardlm_grammar_accept_bytes(c, "b", 1), SHARDLM_EINPUT);
    cr_assert(shardlm_grammar_must_end(c), "a refused byte leaves the state as it was");
    shardlm_grammar_state_free(c);
    shardlm_grammar_state_free(s);
    shardlm_grammar_unref(g);
}

Test(grammar, a_flush_keeps_every_sequence_in_place)
{
    shardlm_grammar *g = compile("root ::= ( \"k\" [0-9]{1,3} \",\" )* \"end\"");
    shardlm_grammar_state *s;
    cr_assert_eq(shardlm_grammar_state_new(g, 0, &s), 0);
    cr_assert_eq(shardlm_grammar_accept_bytes(s, "k12,k3", 6), 0);
    uint32_t epoch = g->m.epoch;
    g->m.oom = 1; /* the next use flushes the caches */
    cr_assert_eq(shardlm_grammar_accept_bytes(s, ",k999,", 6), 0);
    cr_assert_neq(g->m.epoch, epoch, "the caches were flushed");
    cr_assert_eq(shardlm_grammar_accept_bytes(s, "k1000", 5), SHARDLM_EINPUT);
    cr_assert_eq(shardlm_grammar_accept_bytes(s, "end", 3), 0);
    cr_assert(shardlm_grammar_must_end(s));
    shardlm_grammar_state_free(s);
    shardlm_grammar_unref(g);
}

static void bad(const char *gbnf, const char *want)
{
    char why[256] = "";
    shardlm_grammar *g = NULL;
    cr_expect_eq(shardlm_grammar_compile(gbnf, strlen(gbnf), &g, why, sizeof why), SHARDLM_EINPUT, "%s", gbnf);
    cr_expect_null(g);
    cr_expect_str_eq(why, want, "for grammar: %s\n got: %s", gbnf, why);
}

Test(grammar, errors_name_line_and_column)
{
    bad("", "line 1 column 1: the grammar has no rule named 'root'");
    bad("start ::= \"a\"", "line 1 column 1: the grammar has no rule named 'root'");
    bad("root ::= foo", "line 1 column 10: undefined rule 'foo'");
    bad("root ::= \"a\"\nroot ::= \"b\"", "line 2 column 1: rule 'root' is defined twice (first on line 1)");
    bad("root = \"a\"", "line 1 column 6: expected '::=' after the rule name 'root'");
    bad("::= \"a\"", "line 1 column 1: expected a rule name, found ':'");
    bad("root ::= \"abc", "line 1 column 10: unterminated string literal");
    bad("root ::= \"a\nb\"", "line 1 column 10: unterminated string literal");
    bad("root ::= [abc", "line 1 column 10: unterminated character class");
    bad("root ::= []", "line 1 column 10: empty character class");
    bad("root ::= [z-a]", "line 1 column 11: the range is reversed (U+0061 after U+007A)");
    bad("root ::= [^\\x00-\\U0010FFFF]", "line 1 column 10: the character class matches no character");
    bad("root ::= \"\\q\"", "line 1 column 11: unknown escape '\\q'");
    bad("root ::= \"\\x4\"", "line 1 column 14: expected 2 hex digits in the escape");
    bad("root ::= \"\\ud800\"", "line 1 column 11: U+D800 is a surrogate, which UTF-8 cannot carry");
    bad("root ::= \"\\U00110000\"", "line 1 column 11: code point U+110000 is beyond U+10FFFF");
    bad("root ::= ( \"a\"", "line 1 column 10: '(' is not closed");
    bad("root ::= \"a\" )", "line 1 column 14: unexpected ')'");
    bad("root ::= \"a\" @", "line 1 column 14: unexpected '@'");
    bad("root ::= * \"a\"", "line 1 column 10: '*' has nothing to repeat");
    bad("root ::= \"a\"{3,2}", "line 1 column 13: the repetition bounds are reversed ({3,2})");
    bad("root ::= \"a\"{20000}", "line 1 column 18: repetition bounds are at most 10000");
    bad("root ::= \"a\"{2", "line 1 column 15: expected ',' or '}' in the repetition bounds");
    bad("root ::= \"a\" b ::= \"c\"", "line 1 column 16: '::=' inside a rule (a rule ends at a newline)");
    bad("root ::= root \"a\" | \"b\"",
        "line 1 column 1: rule 'root' is left-recursive (it can reach itself before matching any text)");
    bad("root ::= x\nx ::= y \"a\"\ny ::= \"\" | x",
        "line 2 column 1: rule 'x' is left-recursive (it can reach itself before matching any text)");
    bad("root ::= ( \"a\"* )*", "line 1 column 18: the repeated expression can match empty text");
    bad("root ::= \"\xff\"", "line 1 column 11: invalid UTF-8");
    bad("# only\n\n  root ::= \"a\" |\n    foo\n", "line 4 column 5: undefined rule 'foo'");
    bad("root ::= \"a\"\n  | \"b\"",
        "line 2 column 3: a rule ends at a newline: end the line before with '|', or use ( ) around the alternatives");
}

Test(grammar, size_limits)
{
    /* nested bounded repetitions multiply: refused, not allocated */
    static char big[4096];
    size_t n = (size_t)snprintf(big, sizeof big, "root ::=");
    for (int i = 0; i < 110; i++) n += (size_t)snprintf(big + n, sizeof big - n, " \"x\"{10000}");
    bad(big, "line 1 column 1164: the grammar is too large (more than 1048576 elements)");
    char deep[1200];
    size_t k = (size_t)snprintf(deep, sizeof deep, "root ::= ");
    for (int i = 0; i < 250; i++) deep[k++] = '(';
    deep[k] = 0;
    bad(deep, "line 1 column 210: groups are nested more than 200 deep");
}
