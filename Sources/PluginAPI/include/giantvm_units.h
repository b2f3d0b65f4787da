/*
 * giantvm_units.h — the one grammar for durations and sizes.
 *
 * Every duration and size GiantVM reads — the cluster YAML (`timeouts:`, `memory:`, fault rules),
 * every plugin's `settings:` and the CLI — goes through these functions, so one text means one
 * value everywhere and a C plugin parses exactly as the host and the Swift plugins do (Swift code
 * reaches them through PluginKit's `Units` or directly). Implementation: units.c (libc only; an
 * out-of-tree C plugin compiles it beside its own sources).
 *
 * Grammar (leading and trailing spaces ignored; units are case-sensitive):
 *
 *   value    = number [spaces] [unit]
 *   number   = digits ["." [digits]] [exponent]  |  "." digits [exponent]
 *   exponent = ("e" | "E") ["+" | "-"] digits
 *
 *   duration units: ns, us (also µs), ms, s, m (minutes), h (hours).
 *                   A BARE NUMBER IS SECONDS, in every field and every setting: "10" = "10s".
 *   size units:     B, KiB, MiB, GiB, TiB (powers of 1024); K, M, G, T are the same as
 *                   KiB .. TiB. A BARE NUMBER IS BYTES. KB, MB, GB, TB (and kB) are refused as
 *                   ambiguous (1000 or 1024?).
 *
 * The number is decimal, converted exactly (no floating point): "1.5s" is 1500000000 ns, "0.5KiB"
 * is 512 bytes. A duration is rounded to the nearest nanosecond; a size must come out a whole
 * number of bytes ("1.3KiB" is refused). Digits past the 19th significant one are dropped from a
 * duration (under 1 part in 10^18) and refused in a size unless they are zeros. Refused with a distinct status: an empty value, no number,
 * a minus sign, nan/inf, an unknown unit or trailing text, a value that does not fit 64 bits of
 * nanoseconds or bytes, and a value outside the caller's [min, max]. Nothing is clamped.
 *
 * Thread: any (pure functions, no global state). Strings are NUL-terminated UTF-8, borrowed.
 */
#ifndef GIANTVM_UNITS_H
#define GIANTVM_UNITS_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/** What a parse returned: GVM_UNIT_OK (0) or one negative reason. */
typedef enum gvm_unit_status {
    GVM_UNIT_OK = 0,
    GVM_UNIT_EMPTY = -1,        /* nothing but spaces */
    GVM_UNIT_NOT_NUMBER = -2,   /* no number where one belongs: "fast", "ms", "1.2.3" */
    GVM_UNIT_NEGATIVE = -3,     /* a minus sign: durations and sizes are never negative */
    GVM_UNIT_NOT_FINITE = -4,   /* nan, inf, infinity, .inf, .nan (any case) */
    GVM_UNIT_BAD_UNIT = -5,     /* an unknown unit or trailing text: "5 parsecs", "5s later" */
    GVM_UNIT_OVERFLOW = -6,     /* more than 2^64-1 nanoseconds or bytes */
    GVM_UNIT_TOO_SMALL = -7,    /* below the caller's minimum */
    GVM_UNIT_TOO_LARGE = -8,    /* above the caller's maximum */
    GVM_UNIT_FRACTION = -9,     /* a size that is not a whole number of bytes */
    GVM_UNIT_AMBIGUOUS = -10,   /* KB, MB, GB, TB, kB: write KiB, MiB, GiB, TiB */
    GVM_UNIT_INVALID = -11,     /* a NULL argument, or min > max */
} gvm_unit_status;

/** Which grammar a message is about. */
typedef enum gvm_unit_kind {
    GVM_UNIT_DURATION = 1,
    GVM_UNIT_SIZE = 2,
} gvm_unit_kind;

/** Nanoseconds in common durations, for ranges. */
#define GVM_NS_PER_US 1000ull
#define GVM_NS_PER_MS 1000000ull
#define GVM_NS_PER_S 1000000000ull
#define GVM_NS_PER_DAY (86400ull * GVM_NS_PER_S)

/**
 * Parses a duration (bare number = seconds) into nanoseconds and checks min_ns <= value <= max_ns.
 * Returns GVM_UNIT_OK and sets *out_ns, or a negative gvm_unit_status and leaves *out_ns alone.
 * Example: gvm_parse_duration("200ms", GVM_NS_PER_MS, GVM_NS_PER_DAY, &ns) -> 0, ns = 200000000.
 */
int gvm_parse_duration(const char *text, uint64_t min_ns, uint64_t max_ns, uint64_t *out_ns);

/**
 * Parses a size (bare number = bytes) into bytes and checks min_bytes <= value <= max_bytes.
 * Returns GVM_UNIT_OK and sets *out_bytes, or a negative gvm_unit_status.
 * Example: gvm_parse_size("64MiB", 0, UINT64_MAX, &b) -> 0, b = 67108864.
 */
int gvm_parse_size(const char *text, uint64_t min_bytes, uint64_t max_bytes, uint64_t *out_bytes);

/**
 * Checks a duration already held as floating-point seconds (a CLI option such as --timeout 2.5)
 * with the same rules and range, without ever converting an out-of-range double to an integer.
 * NaN and infinities give GVM_UNIT_NOT_FINITE, negatives GVM_UNIT_NEGATIVE.
 */
int gvm_check_seconds(double seconds, uint64_t min_ns, uint64_t max_ns, uint64_t *out_ns);

/**
 * Writes a duration exactly, in the largest unit that divides it: 86400000000000 -> "24h",
 * 1500000000 -> "1500ms", 0 -> "0s". Returns the length it needed (like snprintf); the output is
 * always NUL-terminated when cap > 0.
 */
size_t gvm_format_duration(uint64_t ns, char *buf, size_t cap);

/** Writes a size exactly in the largest binary unit that divides it: 3221225472 -> "3GiB". */
size_t gvm_format_size(uint64_t bytes, char *buf, size_t cap);

/**
 * Writes the message for a failed parse, e.g. "'2e10s' is above the maximum 24h (range 1ms to
 * 24h)" or "'5 parsecs' has an unknown unit or trailing text (duration units: ns, us, ms, s, m,
 * h; a bare number is seconds)". `text` is the value that was parsed (NULL: "the value"; it is
 * quoted, shortened and stripped of control characters); `min` and `max` the range that was
 * passed, in ns or bytes. The caller adds where the value came from (file:line, field or
 * setting). Returns the length needed, like snprintf.
 */
size_t gvm_unit_message(int status, gvm_unit_kind kind, const char *text, uint64_t min, uint64_t max,
                        char *buf, size_t cap);

#ifdef __cplusplus
}
#endif

#endif /* GIANTVM_UNITS_H */
