/* logits_cmp.c - the judge of the llama.cpp comparison (tests/llamacpp/run.sh):
 * compares shardlm's greedy token ids and per-step logits with llama_ref's
 * for one combination (architecture, tensor type, world size) and says, in
 * one line that names the combination, whether they agree.
 *
 * Per step s (one row of V logits each), with r the reference and t the test:
 *   scale_s = standard deviation of r_s over the vocabulary
 *   err_s   = max_j |t_sj - r_sj| / scale_s         must be <= --tol
 *   margin_s = (top-1 minus top-2 of r_s) / scale_s  on the steps that pick a
 *              token; must be >= 2 * --tol, or a difference within the bound
 *              could flip the greedy choice and the model is not a fair test.
 * The standard deviation is the natural unit: softmax ignores a common
 * offset, and for the error of the final hidden state h, max_j |dlogit_j| is
 * about 3.5 |dh| / |h| standard deviations (output rows in random directions).
 * Exit status: 0 agree, 1 disagree (the reason on stderr), 2 bad input. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    const char *name, *ref_logits, *ref_ids, *test_logits, *test_ids;
    long vocab, n_prompt;
    double tol;
    int measure; /* --measure: a type with no bound yet; report, check tokens only */
} cmp_opts;

typedef struct {
    float *v;
    long rows;
} logits_file;

typedef struct {
    double err_max, margin_min, scale_at_err;
    long err_step, err_token, margin_step, rows_checked;
} cmp_stats;

static void usage(FILE *f)
{
    fputs("usage: llamacpp_cmp --name COMBO --vocab V --n-prompt P --tol X\n"
          "                    --ref-logits F --ref-ids F --test-logits F --test-ids F [--measure]\n"
          "Logits files: rows of V f32 (shardlm generate --logits-out, llama_ref -l);\n"
          "ids files: the generated token ids, one per line. --measure (for a type that has\n"
          "no bound yet; --tol is then not needed): print the gap and a bound of 3x it, and\n"
          "check only the tokens.\n",
          f);
}

static int parse_args(int argc, char **argv, cmp_opts *o)
{
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        char *end = NULL;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(stdout);
            return 1;
        }
        if (!strcmp(a, "--measure")) {
            o->measure = 1;
            continue;
        }
        if (!v) {
            fprintf(stderr, "llamacpp_cmp: %s needs a value\n", a);
            return 2;
        }
        i++;
        if (!strcmp(a, "--name")) o->name = v;
        else if (!strcmp(a, "--ref-logits")) o->ref_logits = v;
        else if (!strcmp(a, "--ref-ids")) o->ref_ids = v;
        else if (!strcmp(a, "--test-logits")) o->test_logits = v;
        else if (!strcmp(a, "--test-ids")) o->test_ids = v;
        else if (!strcmp(a, "--vocab")) o->vocab = strtol(v, &end, 10);
        else if (!strcmp(a, "--n-prompt")) o->n_prompt = strtol(v, &end, 10);
        else if (!strcmp(a, "--tol")) o->tol = strtod(v, &end);
        else {
            fprintf(stderr, "llamacpp_cmp: unknown option '%s'\n", a);
            return 2;
        }
        if (end && *end) {
            fprintf(stderr, "llamacpp_cmp: %s: '%s' is not a number\n", a, v);
            return 2;
        }
    }
    if (!o->name || !o->ref_logits || !o->ref_ids || !o->test_logits || !o->test_ids || o->vocab < 2 ||
        o->n_prompt < 1 || !(o->tol > 0 || o->measure)) {
        usage(stderr);
        return 2;
    }
    return 0;
}

static int read_logits(const char *path, long vocab, logits_file *out)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "llamacpp_cmp: cannot read %s: %s\n", path, strerror(errno));
        return 2;
    }
    fseek(f, 0, SEEK_END);
    long bytes = ftell(f), row = vocab * (long)sizeof(float);
    rewind(f);
    if (bytes <= 0 || bytes % row) {
        fprintf(stderr, "llamacpp_cmp: %s is %ld bytes, not whole rows of %ld f32 logits\n", path, bytes, vocab);
        fclose(f);
        return 2;
    }
    out->rows = bytes / row;
    out->v = malloc((size_t)bytes);
    size_t got = out->v ? fread(out->v, 1, (size_t)bytes, f) : 0;
    fclose(f);
    if (got != (size_t)bytes) {
        fprintf(stderr, "llamacpp_cmp: cannot read %s\n", path);
        return 2;
    }
    return 0;
}

/* Reads up to cap ids, one per line; *n gets how many. */
static int read_ids(const char *path, long *ids, long cap, long *n)
{
    FILE *f = fopen(path, "r");
    if (!f) {
        fprintf(stderr, "llamacpp_cmp: cannot read %s: %s\n", path, strerror(errno));
        return 2;
    }
    *n = 0;
    while (*n < cap && fscanf(f, "%ld", &ids[*n]) == 1) (*n)++;
    int bad = !feof(f) && *n < cap;
    fclose(f);
    if (bad) fprintf(stderr, "llamacpp_cmp: %s holds something other than token ids\n", path);
    return bad ? 2 : 0;
}

static double row_std(const float *r, long n)
{
    double s = 0, s2 = 0;
    for (long j = 0; j < n; j++) {
        s += r[j];
        s2 += (double)r[j] * r[j];
    }
    double var = s2 / (double)n - (s / (double)n) * (s / (double)n);
    return var > 0 ? sqrt(var) : 0;
}

/* Top-1 minus top-2 of a row. */
static double row_margin(const float *r, long n)
{
    double a = -INFINITY, b = -INFINITY;
    for (long j = 0; j < n; j++) {
        if (r[j] > a) {
            b = a;
            a = r[j];
        } else if (r[j] > b) {
            b = r[j];
        }
    }
    return a - b;
}

/* Logit error and margin of rows [0, rows), in units of each row's std. */
static int compare_rows(const cmp_opts *o, const float *ref, const float *test, long rows, cmp_stats *st)
{
    st->margin_min = INFINITY;
    for (long s = 0; s < rows; s++) {
        const float *r = ref + s * o->vocab, *t = test + s * o->vocab;
        double scale = row_std(r, o->vocab);
        if (!(scale > 0) || !isfinite(scale)) {
            fprintf(stderr, "%s: FAIL: llama.cpp's logits at step %ld are constant or not finite\n", o->name, s);
            return 1;
        }
        for (long j = 0; j < o->vocab; j++) {
            double e = fabs((double)t[j] - r[j]) / scale;
            if (isnan(e)) e = INFINITY; /* a NaN from shardlm is as wrong as it gets */
            if (e > st->err_max) {
                st->err_max = e;
                st->err_step = s;
                st->err_token = j;
                st->scale_at_err = scale;
            }
        }
        if (s >= o->n_prompt - 1) {
            double m = row_margin(r, o->vocab) / scale;
            if (m < st->margin_min) {
                st->margin_min = m;
                st->margin_step = s;
            }
        }
    }
    st->rows_checked = rows;
    return 0;
}

/* The first generated token that differs, or -1. */
static long first_diff(const long *a, long na, const long *b, long nb)
{
    long n = na < nb ? na : nb;
    for (long i = 0; i < n; i++)
        if (a[i] != b[i]) return i;
    return na == nb ? -1 : n;
}

static int judge(const cmp_opts *o, const logits_file *ref, const logits_file *test, const long *rid, long nr,
                 const long *tid, long nt)
{
    long d = first_diff(rid, nr, tid, nt);
    /* compare only the rows whose context both engines share */
    long rows = d < 0 ? ref->rows : o->n_prompt + d;
    if (rows > ref->rows) rows = ref->rows;
    if (rows > test->rows) rows = test->rows;
    cmp_stats st = {0};
    if (compare_rows(o, ref->v, test->v, rows, &st)) return 1;
    const float *r = ref->v + st.err_step * o->vocab, *t = test->v + st.err_step * o->vocab;
    printf("%s: %ld/%ld tokens equal; max |dlogit| = %.3g std (bound %.3g) at step %ld; "
           "min top-1 margin = %.3g std (%.0fx the bound) at step %ld\n",
           o->name, d < 0 ? nr : d, nr, st.err_max, o->measure ? NAN : o->tol, st.err_step, st.margin_min,
           o->measure ? NAN : st.margin_min / o->tol, st.margin_step);
    int fail = 0;
    if (o->measure)
        printf("%s: no bound yet: measured %.3g std; a bound of 3x that would be %.2g\n", o->name, st.err_max,
               3 * st.err_max);
    if (d >= 0) {
        fprintf(stderr, "%s: FAIL: generated token %ld differs: llama.cpp %ld, shardlm %ld%s\n", o->name, d,
                d < nr ? rid[d] : -1, d < nt ? tid[d] : -1, d < nr && d < nt ? "" : " (one stopped early)");
        fail = 1;
    }
    if (ref->rows != test->rows && d < 0) {
        fprintf(stderr, "%s: FAIL: llama.cpp wrote %ld logit rows, shardlm %ld\n", o->name, ref->rows, test->rows);
        fail = 1;
    }
    if (!o->measure && !(st.err_max <= o->tol)) {
        fprintf(stderr, "%s: FAIL: logits differ by %.3g std > %.3g at step %ld, token %ld: llama.cpp %.6g, "
                "shardlm %.6g (std %.4g)\n", o->name, st.err_max, o->tol, st.err_step, st.err_token,
                r[st.err_token], t[st.err_token], st.scale_at_err);
        fail = 1;
    }
    if (!o->measure && st.margin_min < 2 * o->tol) {
        fprintf(stderr, "%s: FAIL: near tie: llama.cpp's top-1 margin at step %ld is %.3g std, under twice the "
                "bound %.3g, so the greedy tokens are a coin toss; pick a model with a wider logit spread\n",
                o->name, st.margin_step, st.margin_min, o->tol);
        fail = 1;
    }
    return fail;
}

int main(int argc, char **argv)
{
    cmp_opts o = {0};
    int rc = parse_args(argc, argv, &o);
    if (rc) return rc == 1 ? 0 : rc;
    logits_file ref = {0}, test = {0};
    long cap = 1 << 16, nr = 0, nt = 0;
    long *rid = malloc((size_t)cap * sizeof *rid), *tid = malloc((size_t)cap * sizeof *tid);
    if (!rid || !tid) rc = 2;
    if (!rc) rc = read_logits(o.ref_logits, o.vocab, &ref);
    if (!rc) rc = read_logits(o.test_logits, o.vocab, &test);
    if (!rc) rc = read_ids(o.ref_ids, rid, cap, &nr);
    if (!rc) rc = read_ids(o.test_ids, tid, cap, &nt);
    if (!rc && ref.rows < o.n_prompt) {
        fprintf(stderr, "llamacpp_cmp: %s has %ld rows, fewer than the %ld prompt tokens\n", o.ref_logits, ref.rows,
                o.n_prompt);
        rc = 2;
    }
    if (!rc) rc = judge(&o, &ref, &test, rid, nr, tid, nt);
    free(ref.v);
    free(test.v);
    free(rid);
    free(tid);
    return rc;
}
