/* textidx.h - the word count / inverted index algorithm, shared verbatim by the
 * test guest's `wordcount` and `invindex` workloads (u_data.c, freestanding,
 * ring 3) and the host reference program (Guests/tools/wordcount-ref.c, libc,
 * pthreads), so both compute and print exactly the same thing. Definitions
 * (word, document, checksum) are in docs/guest.md "Data workloads".
 *
 * Shape of a run over n workers (vCPUs or threads), the caller synchronising:
 *   1. ti_scan     worker i counts the words of its slice of the text into its
 *                  own hash table (and, for the index, its postings);
 *   2. ti_export   worker i writes its table as compact records, grouped by
 *                  partition (hash >> 32) % n, into memory only it writes;
 *   -- every worker has exported --
 *   3. ti_merge    worker k merges partition k of every worker, in worker
 *                  order, into its own table: distinct words, checksum part,
 *                  its top 10;
 *   -- every worker has merged --
 *   4. ti_combine  one worker sums the parts and merges the top-10 lists;
 *      ti_format   prints the canonical result line.
 * No function allocates: each worker hands in its own arena (struct ti_mem).
 * Integer-only (the guest has no SSE/x87). */
#ifndef TEXTIDX_H
#define TEXTIDX_H

#include <stdint.h>

#define TI_TOP 10
#define TI_MAX_WORKERS 64
#define TI_WORDCOUNT 0
#define TI_INVINDEX 1

typedef uint64_t ti_u64;
typedef uint32_t ti_u32;

/* Bump allocator over one worker's own memory. */
struct ti_mem { unsigned char *base; ti_u64 size, used; };

struct ti_entry {
    ti_u64 hash;          /* FNV-1a 64 of the lower-case word; 0 = empty slot (hash 0 is mapped to 1) */
    ti_u64 count;         /* occurrences */
    const char *word;     /* lower-case bytes (own arena, or a record of some worker's export) */
    ti_u32 len;
    ti_u32 df;            /* documents (lines) holding the word (index only) */
    ti_u64 last_doc;      /* last document posted + 1 (0 = none) */
    ti_u64 fold;          /* merge: fold of the document ids in ascending order */
};

struct ti_table { struct ti_entry *e; ti_u64 mask, used, limit; };

/* Posting of the scan: entry index and the document (line) index inside the slice. */
struct ti_posting { ti_u32 entry, doc; };

struct ti_top { ti_u64 key; const char *word; ti_u32 len, pad; };

/* What a worker publishes to the others (caller puts it where every worker can read it). */
struct ti_pub {
    ti_u64 words;                    /* words of the slice */
    ti_u64 lines;                    /* '\n' bytes in [start, end) of the slice */
    ti_u64 postings;                 /* (word, document) pairs of the slice */
    const unsigned char *exp;        /* export: records of partition k at exp + part_off[k] */
    ti_u64 part_off[TI_MAX_WORKERS + 1];
    /* merge results of partition `self` */
    ti_u64 distinct, checksum, merged_postings;
    struct ti_top top[TI_TOP];
    ti_u32 ntop;
    int error;                       /* nonzero: see ti_error_text */
};

struct ti_result {
    ti_u64 bytes, words, distinct, postings, checksum;
    struct ti_top top[TI_TOP];
    ti_u32 ntop;
};

enum { TI_OK, TI_ENOMEM, TI_ETABLE, TI_EWORKERS };
static inline const char *ti_error_text(int e)
{
    return e == TI_ENOMEM ? "worker memory exhausted (give the guest more RAM or use fewer distinct words)"
         : e == TI_ETABLE ? "hash table full (more than 3/4 of 2^table distinct words: raise table=)"
         : e == TI_EWORKERS ? "too many workers (at most 64)" : "ok";
}

/* ---- primitives ---- */

static inline ti_u64 ti_mix(ti_u64 z)
{
    z ^= z >> 30; z *= 0xBF58476D1CE4E5B9UL;
    z ^= z >> 27; z *= 0x94D049BB133111EBUL;
    return z ^ (z >> 31);
}

/* 1 for ASCII letters, 0 otherwise */
static inline int ti_letter(unsigned char c) { return (unsigned char)((c | 0x20) - 'a') < 26; }

static void *ti_alloc(struct ti_mem *m, ti_u64 bytes)
{
    ti_u64 at = (m->used + 63) & ~63UL;
    if (at > m->size || bytes > m->size - at) return 0;
    m->used = at + bytes;
    return m->base + at;
}

/* A table of 2^bits slots in `reuse` (memory already touched: no first-touch faults), or new. */
static int ti_table_init(struct ti_table *t, struct ti_mem *m, ti_u32 bits, struct ti_entry *reuse)
{
    ti_u64 cap = 1UL << bits;
    t->e = reuse ? reuse : ti_alloc(m, cap * sizeof(struct ti_entry));
    if (!t->e) return TI_ENOMEM;
    /* zero with 8-byte stores (no libc in the guest) */
    ti_u64 *z = (ti_u64 *)t->e;
    for (ti_u64 i = 0, q = cap * sizeof(struct ti_entry) / 8; i < q; i++) z[i] = 0;
    t->mask = cap - 1;
    t->used = 0;
    t->limit = cap / 4 * 3;
    return TI_OK;
}

static inline int ti_same_lower(const char *lower, const unsigned char *text, ti_u32 len)
{
    for (ti_u32 i = 0; i < len; i++)
        if ((unsigned char)lower[i] != (text[i] | 0x20)) return 0;
    return 1;
}

static inline int ti_same(const char *a, const char *b, ti_u32 len)
{
    for (ti_u32 i = 0; i < len; i++)
        if (a[i] != b[i]) return 0;
    return 1;
}

/* ---- 1. scan ---- */

struct ti_worker {
    struct ti_mem mem;
    struct ti_table table;
    char *arena; ti_u64 arena_used, arena_size;
    struct ti_posting *post; ti_u64 npost;
    struct ti_table merged;
};

/* Slice i of n over len bytes: [len*i/n, len*(i+1)/n) (len <= 2^40, n <= 64: no overflow). */
static inline ti_u64 ti_slice(ti_u64 len, ti_u32 i, ti_u32 n) { return len * i / n; }

/* Worker `i` of `n` scans its slice of text[0, len). mode: TI_WORDCOUNT or TI_INVINDEX. */
static int ti_scan(struct ti_worker *w, struct ti_pub *pub, const unsigned char *text, ti_u64 len,
                   ti_u32 i, ti_u32 n, int mode, ti_u32 table_bits)
{
    if (n > TI_MAX_WORKERS) return TI_EWORKERS;
    int r = ti_table_init(&w->table, &w->mem, table_bits, 0);
    if (r) return r;
    w->arena_size = (w->table.mask + 1) * 16;
    w->arena = ti_alloc(&w->mem, w->arena_size);
    if (!w->arena) return TI_ENOMEM;
    w->arena_used = 0;
    /* postings grow into the memory left (the export and the merge table follow them) */
    ti_u64 pstart = (w->mem.used + 63) & ~63UL;
    w->post = (struct ti_posting *)(w->mem.base + pstart);
    ti_u64 post_cap = pstart <= w->mem.size ? (w->mem.size - pstart) / sizeof(struct ti_posting) : 0;
    w->npost = 0;

    ti_u64 s = ti_slice(len, i, n), e = ti_slice(len, i + 1, n), p = s;
    ti_u64 words = 0, lines = 0;
    if (s > 0)                                   /* the word running into the slice is the previous worker's */
        while (p < len && ti_letter(text[p]) && ti_letter(text[p - 1])) p++;
    struct ti_entry *tab = w->table.e;
    ti_u64 mask = w->table.mask;
    while (p < e) {
        unsigned char c = text[p];
        if (!ti_letter(c)) {
            lines += c == '\n';
            p++;
            continue;
        }
        ti_u64 start = p, h = 0xCBF29CE484222325UL;
        while (p < len && ti_letter(text[p])) {
            h = (h ^ (ti_u64)(text[p] | 0x20)) * 0x100000001B3UL;
            p++;
        }
        if (!h) h = 1;
        ti_u32 wl = (ti_u32)(p - start);
        ti_u64 k = h & mask;
        for (;;) {
            struct ti_entry *x = &tab[k];
            if (!x->hash) {
                if (w->table.used >= w->table.limit) return TI_ETABLE;
                if (wl > w->arena_size - w->arena_used) return TI_ENOMEM;
                char *dst = w->arena + w->arena_used;
                for (ti_u32 b = 0; b < wl; b++) dst[b] = (char)(text[start + b] | 0x20);
                w->arena_used += wl;
                x->hash = h; x->word = dst; x->len = wl;
                w->table.used++;
                break;
            }
            if (x->hash == h && x->len == wl && ti_same_lower(x->word, text + start, wl)) break;
            k = (k + 1) & mask;
        }
        struct ti_entry *x = &tab[k];
        x->count++;
        words++;
        if (mode == TI_INVINDEX && x->last_doc != lines + 1) {
            if (w->npost >= post_cap) return TI_ENOMEM;
            w->post[w->npost].entry = (ti_u32)k;
            w->post[w->npost].doc = (ti_u32)lines;
            w->npost++;
            x->last_doc = lines + 1;
            x->df++;
        }
    }
    w->mem.used = pstart + w->npost * sizeof(struct ti_posting);
    pub->words = words;
    pub->lines = lines;
    pub->postings = w->npost;
    pub->error = 0;
    return TI_OK;
}

/* ---- 2. export ----
 * Record: u64 hash, u64 count, u32 len, u32 ndocs, word bytes padded to 8,
 * u32 docs[ndocs] (slice-relative, ascending) padded to 8. */
static inline ti_u64 ti_pad8(ti_u64 x) { return (x + 7) & ~7UL; }
static inline ti_u32 ti_part(ti_u64 hash, ti_u32 n) { return (ti_u32)((hash >> 32) % n); }

static int ti_export(struct ti_worker *w, struct ti_pub *pub, ti_u32 n, int mode)
{
    ti_u64 size[TI_MAX_WORKERS];
    for (ti_u32 k = 0; k < n; k++) size[k] = 0;
    struct ti_entry *tab = w->table.e;
    for (ti_u64 k = 0; k <= w->table.mask; k++) {
        if (!tab[k].hash) continue;
        size[ti_part(tab[k].hash, n)] += 24 + ti_pad8(tab[k].len) + (mode == TI_INVINDEX ? ti_pad8(4UL * tab[k].df) : 0);
    }
    ti_u64 total = 0;
    for (ti_u32 k = 0; k < n; k++) { pub->part_off[k] = total; total += size[k]; }
    pub->part_off[n] = total;
    unsigned char *exp = ti_alloc(&w->mem, total ? total : 8);
    if (!exp) return TI_ENOMEM;
    ti_u64 at[TI_MAX_WORKERS];
    for (ti_u32 k = 0; k < n; k++) at[k] = pub->part_off[k];
    /* records; for the index, remember in last_doc where each record's docs go (reused field) */
    for (ti_u64 k = 0; k <= w->table.mask; k++) {
        struct ti_entry *x = &tab[k];
        if (!x->hash) continue;
        ti_u32 q = ti_part(x->hash, n);
        unsigned char *r = exp + at[q];
        *(ti_u64 *)r = x->hash;
        *(ti_u64 *)(r + 8) = x->count;
        *(ti_u32 *)(r + 16) = x->len;
        *(ti_u32 *)(r + 20) = mode == TI_INVINDEX ? x->df : 0;
        char *wd = (char *)(r + 24);
        for (ti_u32 b = 0; b < x->len; b++) wd[b] = x->word[b];
        for (ti_u32 b = x->len; b < ti_pad8(x->len); b++) wd[b] = 0;
        at[q] += 24 + ti_pad8(x->len);
        if (mode == TI_INVINDEX) {
            x->last_doc = at[q];                      /* offset of this record's docs */
            if (x->df & 1) *(ti_u32 *)(exp + at[q] + 4UL * x->df) = 0;   /* padding */
            at[q] += ti_pad8(4UL * x->df);
        }
    }
    if (mode == TI_INVINDEX)   /* postings are in document order: each record's docs come out ascending */
        for (ti_u64 j = 0; j < w->npost; j++) {
            struct ti_entry *x = &tab[w->post[j].entry];
            *(ti_u32 *)(exp + x->last_doc) = w->post[j].doc;
            x->last_doc += 4;
        }
    pub->exp = exp;
    return TI_OK;
}

/* ---- 3. merge ---- */

/* a before b: larger key first, then the word in byte order (shorter first on a common prefix) */
static inline int ti_before(ti_u64 ka, const char *a, ti_u32 la, ti_u64 kb, const char *b, ti_u32 lb)
{
    if (ka != kb) return ka > kb;
    for (ti_u32 i = 0; i < la && i < lb; i++)
        if (a[i] != b[i]) return (unsigned char)a[i] < (unsigned char)b[i];
    return la < lb;
}

static void ti_top_add(struct ti_top *top, ti_u32 *n, ti_u64 key, const char *word, ti_u32 len)
{
    if (*n == TI_TOP && !ti_before(key, word, len, top[TI_TOP - 1].key, top[TI_TOP - 1].word, top[TI_TOP - 1].len)) return;
    ti_u32 i = *n < TI_TOP ? (*n)++ : TI_TOP - 1;
    while (i > 0 && ti_before(key, word, len, top[i - 1].key, top[i - 1].word, top[i - 1].len)) {
        top[i] = top[i - 1];
        i--;
    }
    top[i].key = key; top[i].word = word; top[i].len = len; top[i].pad = 0;
}

/* Worker `self` merges partition `self` of every worker's export (pubs[0..n-1], in order). */
static int ti_merge(struct ti_worker *w, struct ti_pub *const *pubs, ti_u32 self, ti_u32 n, int mode, ti_u32 table_bits)
{
    /* the scan table is no longer needed once exported: the merge table takes its memory */
    int r = ti_table_init(&w->merged, &w->mem, table_bits, w->table.mask + 1 == 1UL << table_bits ? w->table.e : 0);
    if (r) return r;
    struct ti_entry *tab = w->merged.e;
    ti_u64 mask = w->merged.mask, base = 0, postings = 0;
    for (ti_u32 p = 0; p < n; p++) {
        const unsigned char *rec = pubs[p]->exp + pubs[p]->part_off[self];
        const unsigned char *end = pubs[p]->exp + pubs[p]->part_off[self + 1];
        while (rec < end) {
            ti_u64 h = *(const ti_u64 *)rec, cnt = *(const ti_u64 *)(rec + 8);
            ti_u32 len = *(const ti_u32 *)(rec + 16), nd = *(const ti_u32 *)(rec + 20);
            const char *wd = (const char *)(rec + 24);
            const ti_u32 *docs = (const ti_u32 *)(rec + 24 + ti_pad8(len));
            ti_u64 k = h & mask;
            for (;;) {
                struct ti_entry *x = &tab[k];
                if (!x->hash) {
                    if (w->merged.used >= w->merged.limit) return TI_ETABLE;
                    x->hash = h; x->word = wd; x->len = len;
                    w->merged.used++;
                    break;
                }
                if (x->hash == h && x->len == len && ti_same(x->word, wd, len)) break;
                k = (k + 1) & mask;
            }
            struct ti_entry *x = &tab[k];
            x->count += cnt;
            for (ti_u32 d = 0; d < nd; d++) {
                ti_u64 doc = base + docs[d] + 1;       /* document id + 1 */
                if (doc == x->last_doc) continue;      /* a line split between two slices */
                x->last_doc = doc;
                x->df++;
                x->fold = ti_mix(x->fold + doc);
                postings++;
            }
            rec += 24 + ti_pad8(len) + (mode == TI_INVINDEX ? ti_pad8(4UL * nd) : 0);
        }
        base += pubs[p]->lines;
    }
    struct ti_pub *me = pubs[self];
    ti_u64 sum = 0;
    me->ntop = 0;
    for (ti_u64 k = 0; k <= mask; k++) {
        struct ti_entry *x = &tab[k];
        if (!x->hash) continue;
        if (mode == TI_INVINDEX) {
            sum += ti_mix(x->hash ^ x->fold);
            ti_top_add(me->top, &me->ntop, x->df, x->word, x->len);
        } else {
            sum += ti_mix(x->hash + x->count);
            ti_top_add(me->top, &me->ntop, x->count, x->word, x->len);
        }
    }
    me->distinct = w->merged.used;
    me->checksum = sum;
    me->merged_postings = postings;
    return TI_OK;
}

/* ---- 4. combine and print ---- */

static void ti_combine(struct ti_result *res, struct ti_pub *const *pubs, ti_u32 n, ti_u64 bytes)
{
    res->bytes = bytes;
    res->words = res->distinct = res->postings = res->checksum = 0;
    res->ntop = 0;
    for (ti_u32 p = 0; p < n; p++) {
        res->words += pubs[p]->words;
        res->distinct += pubs[p]->distinct;
        res->postings += pubs[p]->merged_postings;
        res->checksum += pubs[p]->checksum;
        for (ti_u32 t = 0; t < pubs[p]->ntop; t++)
            ti_top_add(res->top, &res->ntop, pubs[p]->top[t].key, pubs[p]->top[t].word, pubs[p]->top[t].len);
    }
}

struct ti_out { char *p; ti_u32 len, cap; };
static void ti_putc(struct ti_out *o, char c) { if (o->len + 1 < o->cap) o->p[o->len++] = c; }
static void ti_puts(struct ti_out *o, const char *s) { while (*s) ti_putc(o, *s++); }
static void ti_putu(struct ti_out *o, ti_u64 v)
{
    char t[24];
    int i = 0;
    do { t[i++] = (char)('0' + v % 10); v /= 10; } while (v);
    while (i) ti_putc(o, t[--i]);
}
static void ti_puthex(struct ti_out *o, ti_u64 v)
{
    ti_puts(o, "0x");
    for (int s = 60; s >= 0; s -= 4) ti_putc(o, "0123456789abcdef"[(v >> s) & 15]);
}

/* The canonical result line (no newline), identical in the guest and the host reference:
 * DATA <workload> bytes=B words=W distinct=D [postings=P] checksum=0x%016x top=w:k,w:k,...
 * (k = occurrences for wordcount, documents for invindex; a word longer than 40 bytes is cut to
 * 40 in the line). Returns the length; the buffer is NUL-terminated. */
static ti_u32 ti_format(char *buf, ti_u32 cap, const struct ti_result *r, int mode)
{
    struct ti_out o = {buf, 0, cap};
    ti_puts(&o, mode == TI_INVINDEX ? "DATA invindex bytes=" : "DATA wordcount bytes=");
    ti_putu(&o, r->bytes);
    ti_puts(&o, " words=");
    ti_putu(&o, r->words);
    ti_puts(&o, " distinct=");
    ti_putu(&o, r->distinct);
    if (mode == TI_INVINDEX) { ti_puts(&o, " postings="); ti_putu(&o, r->postings); }
    ti_puts(&o, " checksum=");
    ti_puthex(&o, r->checksum);
    ti_puts(&o, " top=");
    for (ti_u32 t = 0; t < r->ntop; t++) {
        if (t) ti_putc(&o, ',');
        for (ti_u32 b = 0; b < r->top[t].len && b < 40; b++) ti_putc(&o, r->top[t].word[b]);
        ti_putc(&o, ':');
        ti_putu(&o, r->top[t].key);
    }
    if (cap) buf[o.len] = 0;
    return o.len;
}

#endif
