/* wordcount-ref.c - host reference for the test guest's `wordcount` and
 * `invindex` workloads: the same algorithm (../src/textidx.h, included
 * verbatim) over a file with N POSIX threads, printing the same DATA line.
 *
 *   wordcount-ref [--invindex] [--threads N] [--table BITS] [--repeat R] FILE
 *
 * stdout: the DATA line (docs/guest.md); stderr: "time_ms=<best job time>
 * threads=N" where the job time covers exactly what the guest's job_us covers
 * (scan, export, merge and combine; not reading the file). --repeat runs the
 * job R times over the same file already in memory and reports the best. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "textidx.h"

struct job {
    const unsigned char *text;
    ti_u64 len;
    ti_u32 n, bits;
    int mode;
    pthread_barrier_t bar;
    struct ti_pub *pubs[TI_MAX_WORKERS];
    unsigned char *mem[TI_MAX_WORKERS];
    ti_u64 memsize;
    int err;
};

struct arg { struct job *job; ti_u32 id; };

static void *worker(void *p)
{
    struct arg *a = p;
    struct job *j = a->job;
    struct ti_worker w;
    w.mem.base = j->mem[a->id];
    w.mem.size = j->memsize;
    w.mem.used = 0;
    struct ti_pub *me = j->pubs[a->id];
    int err = ti_scan(&w, me, j->text, j->len, a->id, j->n, j->mode, j->bits);
    if (!err) err = ti_export(&w, me, j->n, j->mode);
    me->error = err;
    pthread_barrier_wait(&j->bar);
    for (ti_u32 q = 0; q < j->n; q++)
        if (j->pubs[q]->error) return NULL;
    me->error = ti_merge(&w, j->pubs, a->id, j->n, j->mode, j->bits);
    return NULL;
}

static double now_ms(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e3 + t.tv_nsec / 1e6;
}

static void usage(void)
{
    fprintf(stderr, "usage: wordcount-ref [--invindex] [--threads N (1-64)] [--table BITS (8-26)] [--repeat R (1-100)] FILE\n");
    exit(2);
}

static unsigned long number(const char *s, const char *what, unsigned long lo, unsigned long hi)
{
    char *end;
    errno = 0;
    unsigned long v = strtoul(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi) {
        fprintf(stderr, "wordcount-ref: %s '%s' is not a number in %lu..%lu\n", what, s, lo, hi);
        exit(2);
    }
    return v;
}

int main(int argc, char **argv)
{
    struct job *j = calloc(1, sizeof(*j));
    const char *file = NULL;
    unsigned long threads = 1, repeat = 1;
    j->bits = 16;
    j->mode = TI_WORDCOUNT;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--invindex")) j->mode = TI_INVINDEX;
        else if (!strcmp(argv[i], "--threads") && i + 1 < argc) threads = number(argv[++i], "--threads", 1, TI_MAX_WORKERS);
        else if (!strcmp(argv[i], "--table") && i + 1 < argc) j->bits = (ti_u32)number(argv[++i], "--table", 8, 26);
        else if (!strcmp(argv[i], "--repeat") && i + 1 < argc) repeat = number(argv[++i], "--repeat", 1, 100);
        else if (argv[i][0] == '-' || file) usage();
        else file = argv[i];
    }
    if (!file) usage();
    int fd = open(file, O_RDONLY);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) != 0) { fprintf(stderr, "wordcount-ref: %s: %s\n", file, strerror(errno)); return 1; }
    if (!S_ISREG(st.st_mode)) { fprintf(stderr, "wordcount-ref: %s: not a regular file\n", file); return 1; }
    if ((unsigned long long)st.st_size > (1ULL << 40)) { fprintf(stderr, "wordcount-ref: %s: larger than 1 TiB\n", file); return 1; }
    j->len = (ti_u64)st.st_size;
    /* read the whole file into private memory first (the guest has it in RAM too) */
    unsigned char *text = malloc(j->len ? j->len : 1);
    for (ti_u64 got = 0; got < j->len;) {
        ssize_t r = read(fd, text + got, j->len - got);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) { fprintf(stderr, "wordcount-ref: %s: short read\n", file); return 1; }
        got += (ti_u64)r;
    }
    close(fd);
    j->text = text;
    j->n = (ti_u32)threads;
    /* every worker's own memory: tables, arena, postings, export, merge table (reserve, touch lazily) */
    ti_u64 slots = 1UL << j->bits;
    j->memsize = 2 * slots * sizeof(struct ti_entry) + slots * 16 + (j->len / j->n + 4096) * 8 + (64UL << 20);
    for (ti_u32 i = 0; i < j->n; i++) {
        j->mem[i] = mmap(NULL, j->memsize, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
        j->pubs[i] = aligned_alloc(4096, (sizeof(struct ti_pub) + 4095) & ~4095UL);
        if (j->mem[i] == MAP_FAILED || !j->pubs[i]) { fprintf(stderr, "wordcount-ref: out of memory\n"); return 1; }
    }
    double best = 1e300;
    struct ti_result res;
    for (unsigned long r = 0; r < repeat; r++) {
        pthread_t t[TI_MAX_WORKERS];
        struct arg a[TI_MAX_WORKERS];
        pthread_barrier_init(&j->bar, NULL, j->n);
        double t0 = now_ms();
        for (ti_u32 i = 0; i < j->n; i++) {
            a[i].job = j;
            a[i].id = i;
            if (pthread_create(&t[i], NULL, worker, &a[i])) { fprintf(stderr, "wordcount-ref: cannot start a thread\n"); return 1; }
        }
        for (ti_u32 i = 0; i < j->n; i++) pthread_join(t[i], NULL);
        for (ti_u32 i = 0; i < j->n; i++)
            if (j->pubs[i]->error) {
                fprintf(stderr, "wordcount-ref: %s\n", ti_error_text(j->pubs[i]->error));
                return 1;
            }
        ti_combine(&res, j->pubs, j->n, j->len);
        double ms = now_ms() - t0;
        if (ms < best) best = ms;
        pthread_barrier_destroy(&j->bar);
        /* the next round starts from untouched memory again, like a fresh guest */
        for (ti_u32 i = 0; i < j->n && r + 1 < repeat; i++) madvise(j->mem[i], j->memsize, MADV_DONTNEED);
    }
    char line[800];
    ti_format(line, sizeof(line), &res, j->mode);
    printf("%s\n", line);
    fprintf(stderr, "time_ms=%.3f threads=%u\n", best, j->n);
    return 0;
}
