/* zipf-text.c - seeded Zipf-distributed text for the data workloads.
 *
 *   zipf-text --size BYTES[K|M|G] [--seed S] [--vocab V] [--exponent X] [-o FILE]
 *
 * The same (size, seed, vocab, exponent) always gives the same bytes: the
 * generator is splitmix64 seeded with S, and with the default exponent 1 the
 * rank weights are 1/r (IEEE division, no libm), so no platform difference can
 * change a sample. Vocabulary: V words of 1-12 lower-case letters drawn from
 * the generator (rank r is the r-th word drawn). Text: words drawn by rank
 * with P(r) ~ 1/r^X; each word capitalised with probability 1/16, followed by
 * ", " (1/16), ". " (1/16) or " "; a line ends after 4-23 words (a line is a
 * document for invindex). The output is exactly BYTES long (the last word or
 * line may be cut).
 * Defaults: seed 1, vocab 50000, exponent 1. */
#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static uint64_t state;
static uint64_t next(void)
{
    uint64_t z = (state += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}
static double uniform(void) { return (double)(next() >> 11) * (1.0 / 9007199254740992.0); }   /* [0, 1) */

static void usage(void)
{
    fprintf(stderr, "usage: zipf-text --size BYTES[K|M|G] [--seed S] [--vocab V (1-10000000)] [--exponent X (0.5-3)] [-o FILE]\n");
    exit(2);
}

static uint64_t parse_u64(const char *s, const char *what, int suffix)
{
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    uint64_t mul = 1;
    if (suffix && *end) {
        if (!strcmp(end, "K") || !strcmp(end, "KiB")) mul = 1ULL << 10;
        else if (!strcmp(end, "M") || !strcmp(end, "MiB")) mul = 1ULL << 20;
        else if (!strcmp(end, "G") || !strcmp(end, "GiB")) mul = 1ULL << 30;
        else end = (char *)"x";
        if (mul > 1) end = (char *)"";
    }
    if (errno || end == s || *end || v > (1ULL << 40) / mul) {
        fprintf(stderr, "zipf-text: %s '%s' is not a number (at most 1 TiB for sizes)\n", what, s);
        exit(2);
    }
    return v * mul;
}

int main(int argc, char **argv)
{
    uint64_t size = 0, seed = 1, vocab = 50000;
    double expo = 1.0;
    const char *out = NULL;
    int have_size = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--size") && i + 1 < argc) { size = parse_u64(argv[++i], "--size", 1); have_size = 1; }
        else if (!strcmp(argv[i], "--seed") && i + 1 < argc) seed = parse_u64(argv[++i], "--seed", 0);
        else if (!strcmp(argv[i], "--vocab") && i + 1 < argc) vocab = parse_u64(argv[++i], "--vocab", 0);
        else if (!strcmp(argv[i], "--exponent") && i + 1 < argc) {
            char *end;
            expo = strtod(argv[++i], &end);
            if (*end || !(expo >= 0.5 && expo <= 3)) { fprintf(stderr, "zipf-text: --exponent must be 0.5..3\n"); return 2; }
        } else if (!strcmp(argv[i], "-o") && i + 1 < argc) out = argv[++i];
        else usage();
    }
    if (!have_size) usage();
    if (vocab < 1 || vocab > 10000000) { fprintf(stderr, "zipf-text: --vocab must be 1..10000000\n"); return 2; }
    state = seed;
    char (*words)[13] = malloc(vocab * 13);
    double *cdf = malloc(vocab * sizeof(double));
    if (!words || !cdf) { fprintf(stderr, "zipf-text: out of memory\n"); return 1; }
    for (uint64_t r = 0; r < vocab; r++) {
        int len = 1 + (int)(next() % 12);
        for (int k = 0; k < len; k++) words[r][k] = (char)('a' + next() % 26);
        words[r][len] = 0;
    }
    double sum = 0;
    for (uint64_t r = 0; r < vocab; r++) {
        sum += expo == 1.0 ? 1.0 / (double)(r + 1) : 1.0 / pow((double)(r + 1), expo);
        cdf[r] = sum;
    }
    FILE *f = out ? fopen(out, "wb") : stdout;
    if (!f) { fprintf(stderr, "zipf-text: %s: %s\n", out, strerror(errno)); return 1; }
    static char buf[1 << 16];
    uint64_t written = 0;
    size_t fill = 0;
    int left_in_line = 4 + (int)(next() % 20);
    while (written + fill < size) {
        double u = uniform() * sum;
        uint64_t lo = 0, hi = vocab - 1;           /* first rank with cdf > u */
        while (lo < hi) {
            uint64_t mid = (lo + hi) / 2;
            if (cdf[mid] > u) hi = mid; else lo = mid + 1;
        }
        char tok[16];
        int n = 0;
        for (const char *w = words[lo]; *w; w++) tok[n++] = *w;
        if (next() % 16 == 0) tok[0] = (char)(tok[0] - 'a' + 'A');
        uint64_t p = next() % 16;
        if (--left_in_line == 0) {
            tok[n++] = '\n';
            left_in_line = 4 + (int)(next() % 20);
        } else {
            if (p == 0) tok[n++] = ',';
            else if (p == 1) tok[n++] = '.';
            tok[n++] = ' ';
        }
        for (int k = 0; k < n && written + fill < size; k++) {
            buf[fill++] = tok[k];
            if (fill == sizeof(buf)) {
                if (fwrite(buf, 1, fill, f) != fill) { fprintf(stderr, "zipf-text: write failed: %s\n", strerror(errno)); return 1; }
                written += fill;
                fill = 0;
            }
        }
    }
    if (fill && fwrite(buf, 1, fill, f) != fill) { fprintf(stderr, "zipf-text: write failed: %s\n", strerror(errno)); return 1; }
    if (fclose(f) != 0) { fprintf(stderr, "zipf-text: write failed: %s\n", strerror(errno)); return 1; }
    return 0;
}
