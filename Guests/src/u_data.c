/* u_data.c - data workloads over the text the VMM loaded as module 0
 * (YAML guest.modules): `wordcount` and `invindex` (algorithm in textidx.h,
 * shared with the host reference Guests/tools/wordcount-ref.c), and
 * `seqread`, one vCPU reading sequentially a region another vCPU (on another
 * node when there is one) wrote.
 *
 * Placement: every vCPU works in its own region of RAM, taken from the part
 * of RAM its node manages under dsm-ivy's default `manager_chunk: auto` (node
 * k manages the k-th 1/N of RAM), so its tables start as local zero pages;
 * the per-vCPU results (struct ti_pub) are on a page of their own. */
#include "u_lib.h"
#include "u_work.h"
#include "textidx.h"

static struct pubpage { struct ti_pub p; } PAGE_ALIGNED data_pub[MAX_VCPUS];

/* Region [lo, hi) of vCPU id (4 KiB aligned). */
static void vcpu_region(u32 id, u64 *lo, u64 *hi)
{
    u32 n = g_info.vcpus, nodes = g_info.nodes ? g_info.nodes : 1, node = g_info.vcpu_node[id];
    u64 hs = g_info.heap_start, he = g_info.heap_end, mem = g_info.memory_bytes;
    u32 here = 0, rank = 0;
    for (u32 v = 0; v < n; v++)
        if (g_info.vcpu_node[v] == node) { if (v < id) rank++; here++; }
    u64 a = mem / nodes * node, b = node + 1 == nodes ? mem : mem / nodes * (node + 1);
    if (a < hs) a = hs;
    if (b > he) b = he;
    u64 per = b > a ? (b - a) / here : 0;
    if (node >= nodes || per < (8UL << 20)) {      /* the node's part is (nearly) all image/module: split the heap */
        a = hs;
        per = (he - hs) / n;
        rank = id;
    }
    *lo = (a + per * rank + 0xFFF) & ~0xFFFUL;
    *hi = (a + per * (rank + 1)) & ~0xFFFUL;
}

static u64 span(void)
{
    u64 lo = ~0UL, hi = 0;
    for (u32 i = 0; i < g_info.vcpus; i++) {
        if (g_ucpu[i].t0 < lo) lo = g_ucpu[i].t0;
        if (g_ucpu[i].t1 > hi) hi = g_ucpu[i].t1;
    }
    return hi > lo ? hi - lo : 1;
}

static void data_fail(const char *workload, int err)
{
    char m[200];
    struct buf b = BUF_INIT(m);
    buf_str(&b, workload);
    buf_str(&b, ": ");
    buf_str(&b, ti_error_text(err));
    buf_term(&b);
    fail(m);
}

static int run_text(u32 id, int mode)
{
    const char *name = mode == TI_INVINDEX ? "invindex" : "wordcount";
    u32 n = g_info.vcpus;
    if (!g_info.nmods) {
        if (id) sys_idle();
        char m[160];
        struct buf b = BUF_INIT(m);
        buf_str(&b, name);
        buf_str(&b, ": no text: give the VM the text as its first module (YAML guest.modules)");
        buf_term(&b);
        fail(m);
    }
    u64 bits = g_cfg.table_bits;
    if (bits < 8 || bits > 26) {
        if (id) sys_idle();
        fail("table must be 8..26 (log2 of the hash table slots)");
    }
    const unsigned char *text = (const unsigned char *)g_info.mod_start[0];
    u64 len = g_info.mod_len[0];
    struct ti_worker w;
    u64 lo, hi;
    vcpu_region(id, &lo, &hi);
    w.mem.base = (unsigned char *)lo;
    w.mem.size = hi > lo ? hi - lo : 0;
    w.mem.used = 0;
    struct ti_pub *pubs[MAX_VCPUS];          /* on this vCPU's stack: no page written by all */
    for (u32 p = 0; p < n; p++) pubs[p] = &data_pub[p].p;
    struct ti_pub *me = pubs[id];
    barrier_all(id);
    u64 t[4];
    g_ucpu[id].t0 = t[0] = rdtsc();
    int err = ti_scan(&w, me, text, len, id, n, mode, (u32)bits);
    if (!err) err = ti_export(&w, me, n, mode);
    me->error = err;
    t[1] = rdtsc();
    barrier_all(id);
    for (u32 p = 0; p < n; p++)
        if (pubs[p]->error) { if (id) sys_idle(); data_fail(name, pubs[p]->error); }
    t[2] = rdtsc();
    err = ti_merge(&w, pubs, id, n, mode, (u32)bits);
    me->error = err;
    g_ucpu[id].t1 = t[3] = rdtsc();
    g_ucpu[id].val[0] = t[1] - t[0];        /* scan + export */
    g_ucpu[id].val[1] = t[3] - t[2];        /* merge */
    g_ucpu[id].val[2] = w.mem.used;
    barrier_all(id);
    if (id) return 1;
    for (u32 p = 0; p < n; p++)
        if (pubs[p]->error) data_fail(name, pubs[p]->error);
    struct ti_result res;
    ti_combine(&res, pubs, n, len);
    char line[800];
    ti_format(line, sizeof(line), &res, mode);
    struct buf d = {line, 0, sizeof(line)};
    while (line[d.len]) d.len++;
    print_line(&d);
    u64 scan = 0, merge = 0, mem = 0;
    for (u32 p = 0; p < n; p++) {
        if (g_ucpu[p].val[0] > scan) scan = g_ucpu[p].val[0];
        if (g_ucpu[p].val[1] > merge) merge = g_ucpu[p].val[1];
        if (g_ucpu[p].val[2] > mem) mem = g_ucpu[p].val[2];
    }
    char r[1200];
    struct buf j = BUF_INIT(r);
    buf_char(&j, '{');
    buf_kv_str(&j, "workload", name);
    buf_kv_u64(&j, "vcpus", n);
    buf_kv_u64(&j, "bytes", res.bytes);
    buf_kv_u64(&j, "words", res.words);
    buf_kv_u64(&j, "distinct", res.distinct);
    if (mode == TI_INVINDEX) buf_kv_u64(&j, "postings", res.postings);
    buf_str(&j, ",\"checksum\":\"");
    buf_hex(&j, res.checksum);
    buf_char(&j, '"');
    buf_kv_u64(&j, "job_us", cycles_to_us(span()));
    buf_kv_u64(&j, "scan_us_max", cycles_to_us(scan));
    buf_kv_u64(&j, "merge_us_max", cycles_to_us(merge));
    buf_kv_u64(&j, "mem_bytes_max", mem);
    buf_kv_bool(&j, "ok", 1);
    buf_char(&j, '}');
    emit_result(&j);
    return 1;
}

int w_wordcount(u32 id) { return run_text(id, TI_WORDCOUNT); }
int w_invindex(u32 id) { return run_text(id, TI_INVINDEX); }

/* seqread: the last vCPU writes `total` MiB of its region (pattern), then
 * vCPU 0 reads it once front to back, one 8-byte load per 64 bytes (every
 * cache line, so every page is touched in order) and checks the pattern. */
static struct { volatile u64 sum; } PAGE_ALIGNED seq_state;

int w_seqread(u32 id)
{
    u32 n = g_info.vcpus, writer = n - 1;
    u64 bytes = g_cfg.total_mib << 20;
    u64 lo, hi;
    vcpu_region(writer, &lo, &hi);
    if (!bytes || bytes > hi - lo) {
        if (id) sys_idle();
        fail("seqread: total must be 1.. the writer's region (MiB); give the guest more RAM");
    }
    volatile u64 *p = (volatile u64 *)lo;
    u64 words = bytes / 8;
    if (id == writer)
        for (u64 i = 0; i < words; i += 8) p[i] = i * 0x9E3779B97F4A7C15UL;
    barrier_all(id);
    int ok = 1;
    if (id == 0) {
        u64 t0 = rdtsc(), bad = 0;
        for (u64 i = 0; i < words; i += 8) bad += p[i] != i * 0x9E3779B97F4A7C15UL;
        u64 c = rdtsc() - t0;
        seq_state.sum = bad;
        ok = bad == 0;
        char r[400];
        struct buf j = BUF_INIT(r);
        buf_char(&j, '{');
        buf_kv_str(&j, "workload", "seqread");
        buf_kv_u64(&j, "vcpus", n);
        buf_kv_u64(&j, "writer", writer);
        buf_kv_bool(&j, "cross_node", g_info.vcpu_node[writer] != g_info.vcpu_node[0]);
        buf_kv_u64(&j, "bytes", bytes);
        buf_kv_u64(&j, "us", cycles_to_us(c));
        buf_kv_fix2(&j, "pages_per_s", rate_x100(bytes / PAGE, c));
        buf_kv_fix2(&j, "mib_s", rate_x100(bytes >> 10, c) / 1024);
        buf_kv_u64(&j, "bad", bad);
        buf_kv_bool(&j, "ok", ok);
        buf_char(&j, '}');
        emit_result(&j);
    }
    barrier_all(id);
    return ok;
}

/* modwrite: coherence of the module's pages after a write. Every vCPU reads
 * word 1 of module pages 0-2 and of three pages in the module's middle; then
 * the last vCPU (on the last node) writes the second page of each three and
 * vCPU 0 the third; after a barrier every vCPU must see all four writes and
 * the first pages unchanged. With replicated modules (every node starts with
 * its own read copy) this is the write-invalidates-the-copies path; the middle
 * pages lie in the part the VMM backs with huge pages when the module is large
 * enough (docs/performance.md), the first ones in its 4 KiB edge. */
int w_modwrite(u32 id)
{
    u32 n = g_info.vcpus, last = n - 1;
    if (!g_info.nmods || g_info.mod_len[0] < 3 * PAGE) {
        if (id) sys_idle();
        fail("modwrite: give the VM a module of at least 3 pages (YAML guest.modules)");
    }
    u64 mid = (g_info.mod_len[0] / PAGE - 3) / 2;
    if (mid < 3) mid = 0;                   /* too small to hold two apart: the same three pages */
    volatile u64 *pg[6];
    for (int k = 0; k < 3; k++) {
        pg[k] = (volatile u64 *)(g_info.mod_start[0] + (u64)k * PAGE);
        pg[3 + k] = (volatile u64 *)(g_info.mod_start[0] + (mid + (u64)k) * PAGE);
    }
    u64 before0 = pg[0][1], before3 = pg[3][1];
    for (int k = 1; k < 6; k++) (void)pg[k][1];
    barrier_all(id);
    u64 mark1 = 0x5EED000000000001UL + ((u64)last << 8), mark2 = 0x5EED000000000002UL;
    if (id == last) { pg[1][1] = mark1; pg[4][1] = mark1; }
    if (id == 0) { pg[2][1] = mark2; pg[5][1] = mark2; }
    barrier_all(id);
    u64 bad = (pg[1][1] != mark1) + (pg[2][1] != mark2) + (pg[4][1] != mark1) + (pg[5][1] != mark2)
            + (pg[0][1] != before0) + (pg[3][1] != before3);
    g_ucpu[id].val[0] = bad;
    barrier_all(id);
    if (id) return 1;
    u64 all = 0;
    for (u32 v = 0; v < n; v++) all += g_ucpu[v].val[0];
    char r[300];
    struct buf j = BUF_INIT(r);
    buf_char(&j, '{');
    buf_kv_str(&j, "workload", "modwrite");
    buf_kv_u64(&j, "vcpus", n);
    buf_kv_u64(&j, "writer", last);
    buf_kv_bool(&j, "cross_node", g_info.vcpu_node[last] != g_info.vcpu_node[0]);
    buf_kv_u64(&j, "bad", all);
    buf_kv_bool(&j, "ok", all == 0);
    buf_char(&j, '}');
    emit_result(&j);
    return all == 0;
}
