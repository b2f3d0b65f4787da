/*
 * units.c — the duration and size grammar of giantvm_units.h (see there for the grammar).
 *
 * A number is read into an exact decimal (at most 19 significant digits and a power of ten) and
 * scaled by the unit's integer factor in 128-bit arithmetic, so no value is ever rounded through a
 * double and no conversion can trap or wrap: everything out of range is a status.
 */
#include "giantvm_units.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

typedef unsigned __int128 u128;

typedef struct unit {
    const char *name;
    uint64_t factor;
} unit;

static const unit duration_units[] = {
    {"ns", 1ull},
    {"us", GVM_NS_PER_US},
    {"\xC2\xB5s", GVM_NS_PER_US}, /* µs, MICRO SIGN */
    {"\xCE\xBCs", GVM_NS_PER_US}, /* μs, GREEK SMALL LETTER MU */
    {"ms", GVM_NS_PER_MS},
    {"s", GVM_NS_PER_S},
    {"m", 60ull * GVM_NS_PER_S},
    {"h", 3600ull * GVM_NS_PER_S},
};

static const unit size_units[] = {
    {"B", 1ull},
    {"KiB", 1ull << 10}, {"MiB", 1ull << 20}, {"GiB", 1ull << 30}, {"TiB", 1ull << 40},
    {"K", 1ull << 10},   {"M", 1ull << 20},   {"G", 1ull << 30},   {"T", 1ull << 40},
};

static const char *const ambiguous_units[] = {"KB", "kB", "MB", "GB", "TB", "kb", "mb", "gb", "tb"};

static int is_space(char c) { return c == ' ' || c == '\t'; }
static int is_digit(char c) { return c >= '0' && c <= '9'; }
static char lower(char c) { return (c >= 'A' && c <= 'Z') ? (char)(c - 'A' + 'a') : c; }

/* Whether [s, s+n) equals `word`, ignoring ASCII case. */
static int equal_nocase(const char *s, size_t n, const char *word) {
    if (strlen(word) != n) return 0;
    for (size_t i = 0; i < n; i++)
        if (lower(s[i]) != word[i]) return 0;
    return 1;
}

/* An exact decimal: mantissa * 10^exponent; `inexact` when nonzero digits were dropped. */
typedef struct decimal {
    uint64_t mantissa;
    int64_t exponent;
    int inexact;
} decimal;

/*
 * Reads the number at *p (after leading spaces) and advances *p past it. Returns GVM_UNIT_OK or
 * the reason there is no number there.
 */
static int read_number(const char **p, decimal *d) {
    const char *s = *p;
    if (*s == '-') return GVM_UNIT_NEGATIVE;
    /* nan / inf words, also YAML's .nan / .inf; a sign has already been refused above. */
    {
        const char *w = s + (*s == '.' || *s == '+' ? 1 : 0);
        size_t n = 0;
        while ((w[n] >= 'a' && w[n] <= 'z') || (w[n] >= 'A' && w[n] <= 'Z')) n++;
        if (equal_nocase(w, n, "nan") || equal_nocase(w, n, "inf") || equal_nocase(w, n, "infinity"))
            return GVM_UNIT_NOT_FINITE;
    }
    d->mantissa = 0;
    d->exponent = 0;
    d->inexact = 0;
    int digits = 0, significant = 0;
    while (is_digit(*s)) {
        digits++;
        unsigned v = (unsigned)(*s - '0');
        if (significant == 0 && v == 0) { s++; continue; }  /* leading zeros */
        if (significant < 19) {
            d->mantissa = d->mantissa * 10 + v;
            significant++;
        } else {
            d->exponent++;
            if (v) d->inexact = 1;
        }
        s++;
    }
    if (*s == '.') {
        s++;
        while (is_digit(*s)) {
            digits++;
            unsigned v = (unsigned)(*s - '0');
            if (significant == 0 && v == 0) { d->exponent--; s++; continue; }
            if (significant < 19) {
                d->mantissa = d->mantissa * 10 + v;
                significant++;
                d->exponent--;
            } else if (v) {
                d->inexact = 1;
            }
            s++;
        }
    }
    if (digits == 0) return GVM_UNIT_NOT_NUMBER;
    if ((*s == 'e' || *s == 'E') && (is_digit(s[1]) || ((s[1] == '+' || s[1] == '-') && is_digit(s[2])))) {
        s++;
        int negative = 0;
        if (*s == '+' || *s == '-') negative = (*s++ == '-');
        int64_t e = 0;
        while (is_digit(*s)) {
            if (e < 100000) e = e * 10 + (*s - '0');  /* beyond this, 0 or overflow anyway */
            s++;
        }
        d->exponent += negative ? -e : e;
    }
    *p = s;
    return GVM_UNIT_OK;
}

/* mantissa * 10^exponent * factor, rounded to nearest (round) or required exact. */
static int scale(const decimal *d, uint64_t factor, int must_be_whole, uint64_t *out) {
    if (d->mantissa == 0) {
        *out = 0;
        return GVM_UNIT_OK;
    }
    u128 value = (u128)d->mantissa * factor;  /* < 2^64 * 2^47 */
    if (d->exponent >= 0) {
        for (int64_t i = 0; i < d->exponent; i++) {
            value *= 10;
            if (value > UINT64_MAX) return GVM_UNIT_OVERFLOW;
        }
        if (value > UINT64_MAX) return GVM_UNIT_OVERFLOW;
        if (must_be_whole && d->inexact) return GVM_UNIT_FRACTION;
        *out = (uint64_t)value;
        return GVM_UNIT_OK;
    }
    int64_t k = -d->exponent;
    u128 quotient = 0, remainder = value, divisor = 1;
    if (k <= 38) {
        for (int64_t i = 0; i < k; i++) divisor *= 10;
        quotient = value / divisor;
        remainder = value % divisor;
        if (!must_be_whole && remainder * 2 >= divisor) quotient++;  /* remainder < divisor < 2^127 */
    } else if (!must_be_whole) {
        quotient = 0;  /* far below one unit */
    }
    if (must_be_whole && (remainder != 0 || d->inexact)) return GVM_UNIT_FRACTION;
    if (quotient > UINT64_MAX) return GVM_UNIT_OVERFLOW;
    *out = (uint64_t)quotient;
    return GVM_UNIT_OK;
}

static int parse(const char *text, const unit *units, size_t unit_count, uint64_t default_factor,
                 int sizes, uint64_t min, uint64_t max, uint64_t *out) {
    if (!text || !out || min > max) return GVM_UNIT_INVALID;
    const char *s = text;
    while (is_space(*s)) s++;
    if (*s == 0) return GVM_UNIT_EMPTY;
    decimal d;
    int rc = read_number(&s, &d);
    if (rc != GVM_UNIT_OK) return rc;
    while (is_space(*s)) s++;
    const char *u = s;
    while (*s && !is_space(*s)) s++;
    size_t n = (size_t)(s - u);
    while (is_space(*s)) s++;
    if (*s != 0) return GVM_UNIT_BAD_UNIT;  /* text after the unit */
    uint64_t factor = default_factor;
    if (n > 0) {
        factor = 0;
        for (size_t i = 0; i < unit_count; i++)
            if (strlen(units[i].name) == n && memcmp(units[i].name, u, n) == 0) factor = units[i].factor;
        if (factor == 0) {
            if (sizes)
                for (size_t i = 0; i < sizeof ambiguous_units / sizeof *ambiguous_units; i++)
                    if (strlen(ambiguous_units[i]) == n && memcmp(ambiguous_units[i], u, n) == 0)
                        return GVM_UNIT_AMBIGUOUS;
            return GVM_UNIT_BAD_UNIT;
        }
    }
    uint64_t v;
    rc = scale(&d, factor, sizes, &v);
    if (rc != GVM_UNIT_OK) return rc;
    if (v < min) return GVM_UNIT_TOO_SMALL;
    if (v > max) return GVM_UNIT_TOO_LARGE;
    *out = v;
    return GVM_UNIT_OK;
}

int gvm_parse_duration(const char *text, uint64_t min_ns, uint64_t max_ns, uint64_t *out_ns) {
    return parse(text, duration_units, sizeof duration_units / sizeof *duration_units, GVM_NS_PER_S, 0,
                 min_ns, max_ns, out_ns);
}

int gvm_parse_size(const char *text, uint64_t min_bytes, uint64_t max_bytes, uint64_t *out_bytes) {
    return parse(text, size_units, sizeof size_units / sizeof *size_units, 1, 1, min_bytes, max_bytes,
                 out_bytes);
}

int gvm_check_seconds(double seconds, uint64_t min_ns, uint64_t max_ns, uint64_t *out_ns) {
    if (!out_ns || min_ns > max_ns) return GVM_UNIT_INVALID;
    if (isnan(seconds) || isinf(seconds)) return GVM_UNIT_NOT_FINITE;
    if (seconds < 0) return GVM_UNIT_NEGATIVE;
    /* Compare in the double domain first (1.9e10 s is past 2^64 ns): never convert above it. */
    double ns = seconds * 1e9 + 0.5;
    if (!(ns < 18446744073709551616.0)) return GVM_UNIT_OVERFLOW;
    uint64_t v = (uint64_t)ns;  /* in range, so defined: rounds to the nearest nanosecond */
    if (v < min_ns) return GVM_UNIT_TOO_SMALL;
    if (v > max_ns) return GVM_UNIT_TOO_LARGE;
    *out_ns = v;
    return GVM_UNIT_OK;
}

static size_t format_exact(uint64_t v, const unit *units, size_t count, char *buf, size_t cap) {
    /* units are listed smallest first; pick the largest whose factor divides v. */
    const char *name = units[0].name;
    uint64_t factor = units[0].factor;
    for (size_t i = 0; i < count; i++)
        if (units[i].factor > factor && v % units[i].factor == 0) {
            name = units[i].name;
            factor = units[i].factor;
        }
    int n = snprintf(buf, cap, "%llu%s", (unsigned long long)(v / factor), name);
    return n < 0 ? 0 : (size_t)n;
}

size_t gvm_format_duration(uint64_t ns, char *buf, size_t cap) {
    static const unit shown[] = {
        {"ns", 1ull}, {"us", GVM_NS_PER_US}, {"ms", GVM_NS_PER_MS}, {"s", GVM_NS_PER_S},
        {"m", 60ull * GVM_NS_PER_S}, {"h", 3600ull * GVM_NS_PER_S},
    };
    if (ns == 0) {
        int n = snprintf(buf, cap, "0s");
        return n < 0 ? 0 : (size_t)n;
    }
    return format_exact(ns, shown, sizeof shown / sizeof *shown, buf, cap);
}

size_t gvm_format_size(uint64_t bytes, char *buf, size_t cap) {
    static const unit shown[] = {
        {"B", 1ull}, {"KiB", 1ull << 10}, {"MiB", 1ull << 20}, {"GiB", 1ull << 30}, {"TiB", 1ull << 40},
    };
    if (bytes == 0) {
        int n = snprintf(buf, cap, "0B");
        return n < 0 ? 0 : (size_t)n;
    }
    return format_exact(bytes, shown, sizeof shown / sizeof *shown, buf, cap);
}

/* The value as shown in a message: quoted, at most 40 bytes, control bytes as '?'. */
static void quote(const char *text, char *out, size_t cap) {
    if (!text) {
        snprintf(out, cap, "the value");
        return;
    }
    size_t len = strlen(text), shown = len > 40 ? 40 : len, j = 0;
    out[j++] = '\'';
    for (size_t i = 0; i < shown && j + 5 < cap; i++) {
        unsigned char c = (unsigned char)text[i];
        out[j++] = (c < 0x20 || c == 0x7f) ? '?' : (char)c;
    }
    if (shown < len && j + 5 < cap) { out[j++] = '.'; out[j++] = '.'; out[j++] = '.'; }
    out[j++] = '\'';
    out[j] = 0;
}

size_t gvm_unit_message(int status, gvm_unit_kind kind, const char *text, uint64_t min, uint64_t max,
                        char *buf, size_t cap) {
    char q[64], lo[32], hi[32], range[96];
    quote(text, q, sizeof q);
    int durations = kind != GVM_UNIT_SIZE;
    if (durations) {
        gvm_format_duration(min, lo, sizeof lo);
        gvm_format_duration(max, hi, sizeof hi);
    } else {
        gvm_format_size(min, lo, sizeof lo);
        gvm_format_size(max, hi, sizeof hi);
    }
    snprintf(range, sizeof range, "range %s to %s", lo, hi);
    const char *what = durations ? "a duration" : "a size";
    const char *units = durations ? "duration units: ns, us, ms, s, m, h; a bare number is seconds"
                                  : "size units: B, KiB, MiB, GiB, TiB (or K, M, G, T); a bare number is bytes";
    const char *example = durations ? "500ms, 10s" : "4KiB, 64MiB";
    int n;
    switch (status) {
    case GVM_UNIT_OK: n = snprintf(buf, cap, "%s is valid", q); break;
    case GVM_UNIT_EMPTY: n = snprintf(buf, cap, "empty: expected %s (e.g. %s)", what, example); break;
    case GVM_UNIT_NOT_NUMBER:
        n = snprintf(buf, cap, "%s is not %s (e.g. %s): a number and a unit (%s)", q, what, example, units);
        break;
    case GVM_UNIT_NEGATIVE: n = snprintf(buf, cap, "%s is negative: expected %s >= %s", q, what, lo); break;
    case GVM_UNIT_NOT_FINITE: n = snprintf(buf, cap, "%s is not a finite number (%s)", q, range); break;
    case GVM_UNIT_BAD_UNIT: n = snprintf(buf, cap, "%s has an unknown unit or trailing text (%s)", q, units); break;
    case GVM_UNIT_OVERFLOW: /* beyond 64 bits: above any maximum, said the same way */
    case GVM_UNIT_TOO_LARGE: n = snprintf(buf, cap, "%s is above the maximum %s (%s)", q, hi, range); break;
    case GVM_UNIT_TOO_SMALL: n = snprintf(buf, cap, "%s is below the minimum %s (%s)", q, lo, range); break;
    case GVM_UNIT_FRACTION: n = snprintf(buf, cap, "%s is not a whole number of bytes", q); break;
    case GVM_UNIT_AMBIGUOUS:
        n = snprintf(buf, cap, "%s: KB, MB, GB and TB are ambiguous (1000 or 1024?): write KiB, MiB, GiB, TiB", q);
        break;
    case GVM_UNIT_INVALID: n = snprintf(buf, cap, "invalid call (NULL argument or minimum above maximum)"); break;
    default: n = snprintf(buf, cap, "%s: unknown unit status %d", q, status); break;
    }
    return n < 0 ? 0 : (size_t)n;
}
