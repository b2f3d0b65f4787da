/* u_virtio.c - a polled virtio-mmio (version 2) driver in ring 3 and the
 * workloads that use it: readfile, disk-verify, net-echo, virtio-hostile.
 *
 * The user part of the image is identity-mapped and user-accessible from
 * 2 MiB to 0xFE000000, so ring 3 reaches both the device registers and
 * guest-physical memory directly: rings and buffers are plain arrays whose
 * virtual address is their guest-physical address. Only vCPU 0 drives the
 * devices; the other vCPUs idle at the final barrier. The devices complete
 * requests synchronously in the QueueNotify write, but the driver still
 * polls the used index (with the run's timeout), as a driver must.
 *
 * Devices are found at the bases given on the command line: blk=<addr>
 * (default 0xd0000000) and net=<addr> (default 0xd0001000), hex or decimal.
 * docs/virtio.md is the contract (checksum, patterns, echo protocol). */
#include "u_lib.h"
#include "u_work.h"

/* ---- options (u_main.c consults virtio_option for keys it does not know) ---- */
static struct {
    u64 blk, net, chunk, passes, seed, blocks, packets, size, window;
} vo;
static const struct { const char *key; u64 *dst; u64 def; } vopts[] = {
    {"blk", &vo.blk, 0xD0000000UL},      /* virtio-blk register base */
    {"net", &vo.net, 0xD0001000UL},      /* virtio-net register base */
    {"chunk", &vo.chunk, 1 << 20},       /* readfile/disk-verify: bytes per request */
    {"passes", &vo.passes, 1},           /* readfile: whole-disk reads */
    {"seed", &vo.seed, 1},               /* disk-verify: pattern seed */
    {"blocks", &vo.blocks, 0},           /* disk-verify: sectors to test (0 = whole disk) */
    {"packets", &vo.packets, 1000},      /* net-echo: frames per phase */
    {"size", &vo.size, 1024},            /* net-echo: frame payload bytes (64-1500) */
    {"window", &vo.window, 8},           /* net-echo: frames in flight in the stream phase */
};

static int streq_(const char *a, const char *b)
{
    while (*a && *a == *b) a++, b++;
    return *a == *b;
}

u64 *virtio_option(const char *key)
{
    for (u32 i = 0; i < sizeof(vopts) / sizeof(vopts[0]); i++)
        if (streq_(key, vopts[i].key)) return vopts[i].dst;
    return 0;
}

void virtio_defaults(void)
{
    for (u32 i = 0; i < sizeof(vopts) / sizeof(vopts[0]); i++) *vopts[i].dst = vopts[i].def;
}

/* ---- registers ---- */
enum {
    R_MAGIC = 0x000, R_VERSION = 0x004, R_DEVICE = 0x008, R_DFEAT = 0x010, R_DFEATSEL = 0x014,
    R_GFEAT = 0x020, R_GFEATSEL = 0x024, R_QSEL = 0x030, R_QMAX = 0x034, R_QNUM = 0x038,
    R_QREADY = 0x044, R_NOTIFY = 0x050, R_ISR = 0x060, R_IACK = 0x064, R_STATUS = 0x070,
    R_QDESC = 0x080, R_QAVAIL = 0x090, R_QUSED = 0x0A0, R_CONFIG = 0x100,
};
enum { S_ACK = 1, S_DRIVER = 2, S_OK = 4, S_FEAT = 8, S_RESET = 0x40, S_FAILED = 0x80 };
#define F_VERSION_1_HI 1u   /* bit 32 = bit 0 of the high word */
#define D_NEXT 1
#define D_WRITE 2

struct vdesc { u64 addr; u32 len; u16 flags; u16 next; };

/* One queue in one page: descriptors at 0, available ring at 0x400, used at 0x800. */
#define QSIZE 16
struct vqpage {
    struct vdesc desc[QSIZE];
    u8 pad0[0x400 - QSIZE * 16];
    volatile u16 aflags, aidx, aring[QSIZE], aevent;
    u8 pad1[0x400 - 6 - 2 * QSIZE];
    volatile u16 uflags, uidx;
    volatile struct { u32 id, len; } uring[QSIZE];
} PAGE_ALIGNED;

struct vq { struct vqpage *p; u16 last_used; u32 num; };
struct vdev { u64 base; const char *what; struct vq q[2]; };

static struct vqpage vq_pages[3] PAGE_ALIGNED;    /* blk, net rx, net tx */

static inline u32 rd(struct vdev *d, u32 off) { return *(volatile u32 *)(d->base + off); }
static inline void wr(struct vdev *d, u32 off, u32 v) { *(volatile u32 *)(d->base + off) = v; }
static void wr64(struct vdev *d, u32 off, u64 v) { wr(d, off, (u32)v); wr(d, off + 4, (u32)(v >> 32)); }

static char verr[160];
static int vfail(const char *what, const char *dev, u64 v)
{
    struct buf b = BUF_INIT(verr);
    buf_str(&b, dev);
    buf_str(&b, ": ");
    buf_str(&b, what);
    buf_str(&b, " (0x");
    buf_hex(&b, v);
    buf_char(&b, ')');
    buf_term(&b);
    return 0;
}

/* Reset, negotiate VERSION_1 plus `want` (low word) of what is offered, set
 * up `nq` queues on pages `pages`, DRIVER_OK. Returns 1, or 0 with verr set. */
static int vdev_init(struct vdev *d, u32 device_id, u32 want, u32 nq, struct vqpage *pages)
{
    if (rd(d, R_MAGIC) != 0x74726976) return vfail("no virtio-mmio device at this base", d->what, d->base);
    if (rd(d, R_VERSION) != 2) return vfail("not virtio-mmio version 2", d->what, rd(d, R_VERSION));
    if (rd(d, R_DEVICE) != device_id) return vfail("unexpected device ID", d->what, rd(d, R_DEVICE));
    wr(d, R_STATUS, 0);
    wr(d, R_STATUS, S_ACK);
    wr(d, R_STATUS, S_ACK | S_DRIVER);
    wr(d, R_DFEATSEL, 1);
    if (!(rd(d, R_DFEAT) & F_VERSION_1_HI)) return vfail("device does not offer VERSION_1", d->what, 0);
    wr(d, R_DFEATSEL, 0);
    u32 lo = rd(d, R_DFEAT) & want;
    wr(d, R_GFEATSEL, 0);
    wr(d, R_GFEAT, lo);
    wr(d, R_GFEATSEL, 1);
    wr(d, R_GFEAT, F_VERSION_1_HI);
    wr(d, R_STATUS, S_ACK | S_DRIVER | S_FEAT);
    if (!(rd(d, R_STATUS) & S_FEAT)) return vfail("device refused the features", d->what, lo);
    for (u32 i = 0; i < nq; i++) {
        struct vq *q = &d->q[i];
        q->p = &pages[i];
        memset(q->p, 0, sizeof(*q->p));
        q->last_used = 0;
        q->num = 0;
        wr(d, R_QSEL, i);
        if (rd(d, R_QMAX) < QSIZE) return vfail("queue too small", d->what, rd(d, R_QMAX));
        wr(d, R_QNUM, QSIZE);
        wr64(d, R_QDESC, (u64)q->p->desc);
        wr64(d, R_QAVAIL, (u64)&q->p->aflags);
        wr64(d, R_QUSED, (u64)&q->p->uflags);
        q->p->aflags = 1;                     /* polled: no interrupts */
        wr(d, R_QREADY, 1);
    }
    wr(d, R_STATUS, S_ACK | S_DRIVER | S_FEAT | S_OK);
    return 1;
}

/* Publish chain head `head` on queue `qi` and notify. */
static void vq_submit(struct vdev *d, u32 qi, u16 head)
{
    struct vq *q = &d->q[qi];
    q->p->aring[q->p->aidx % QSIZE] = head;
    barrier();
    q->p->aidx = (u16)(q->p->aidx + 1);
    barrier();
    wr(d, R_NOTIFY, qi);
}

/* Next used entry of queue `qi` within the deadline: returns 1 and fills
 * id/len, or 0 on timeout or when the device wants a reset. */
static int vq_poll(struct vdev *d, u32 qi, u64 deadline, u32 *id, u32 *len)
{
    struct vq *q = &d->q[qi];
    /* the status register is an exit to the VMM: look at it only every 4096 spins */
    for (u32 spins = 1; q->p->uidx == q->last_used; spins++) {
        if (rdtsc() > deadline || (!(spins & 4095) && (rd(d, R_STATUS) & S_RESET))) return 0;
        cpu_relax();
    }
    barrier();
    *id = q->p->uring[q->last_used % QSIZE].id;
    *len = q->p->uring[q->last_used % QSIZE].len;
    q->last_used++;
    return 1;
}

/* ---- virtio-blk ---- */
struct blkreq { u32 type, reserved; u64 sector; u8 status; } PAGE_ALIGNED;
static struct blkreq breq;
static struct vdev blk = {.what = "virtio-blk"};
static u64 blk_sectors;

static int blk_open(void)
{
    blk.base = vo.blk;
    if (!vdev_init(&blk, 2, 0, 1, &vq_pages[0])) return 0;
    blk_sectors = rd(&blk, R_CONFIG) | ((u64)rd(&blk, R_CONFIG + 4) << 32);
    u32 size_max = rd(&blk, R_CONFIG + 8);
    if (vo.chunk > size_max) vo.chunk = size_max;
    vo.chunk &= ~511UL;
    if (!vo.chunk) vo.chunk = 512;
    return 1;
}

/* One request: 0 = IN, 1 = OUT, 4 = FLUSH. Returns the status byte, or
 * 0xFF on timeout / NEEDS_RESET. */
static u32 blk_rw(u32 type, u64 sector, void *buf, u32 len)
{
    struct vdesc *dt = blk.q[0].p->desc;
    breq.type = type;
    breq.reserved = 0;
    breq.sector = sector;
    breq.status = 0xEE;
    dt[0] = (struct vdesc){(u64)&breq, 16, D_NEXT, (u16)(len ? 1 : 2)};
    if (len) dt[1] = (struct vdesc){(u64)buf, len, (u16)(D_NEXT | (type == 0 ? D_WRITE : 0)), 2};
    dt[2] = (struct vdesc){(u64)&breq.status, 1, D_WRITE, 0};
    vq_submit(&blk, 0, 0);
    u32 id, got;
    if (!vq_poll(&blk, 0, tsc_deadline(g_cfg.timeout_s), &id, &got)) return 0xFF;
    if (id != 0) return 0xFE;
    return breq.status;
}

/* The disk checksum (docs/virtio.md): FNV-1a over 64-bit little-endian
 * words, h = (h ^ w) * 0x100000001b3 from 0xcbf29ce484222325. */
static u64 fnv_words(u64 h, const u64 *w, u64 n)
{
    for (u64 i = 0; i < n; i++) h = (h ^ w[i]) * 0x100000001b3UL;
    return h;
}

static void result_err(const char *name, const char *err)
{
    char r[300];
    struct buf j = BUF_INIT(r);
    buf_char(&j, '{');
    buf_kv_str(&j, "workload", name);
    buf_kv_bool(&j, "ok", 0);
    buf_kv_str(&j, "error", err);
    buf_char(&j, '}');
    emit_result(&j);
}

int w_readfile(u32 id)
{
    if (id) return 1;
    if (!blk_open()) { result_err("readfile", verr); return 0; }
    u8 *buf = (u8 *)g_info.heap_start;
    if (heap_size() < vo.chunk) { result_err("readfile", "heap smaller than one chunk"); return 0; }
    u64 total = blk_sectors * 512, h = 0, io_cycles = 0, best = ~0UL;
    u64 t0 = rdtsc();
    for (u64 pass = 0; pass < (vo.passes ? vo.passes : 1); pass++) {
        u64 p0 = rdtsc();
        h = 0xcbf29ce484222325UL;
        for (u64 off = 0; off < total; off += vo.chunk) {
            u32 n = (u32)(total - off < vo.chunk ? total - off : vo.chunk);
            u64 a = rdtsc();
            u32 st = blk_rw(0, off / 512, buf, n);
            io_cycles += rdtsc() - a;
            if (st) {
                struct buf e = BUF_INIT(verr);
                buf_str(&e, "read at sector ");
                buf_u64(&e, off / 512);
                buf_str(&e, st == 0xFF ? " timed out or the device needs reset" : " failed with status ");
                if (st != 0xFF) buf_u64(&e, st);
                buf_term(&e);
                result_err("readfile", verr);
                return 0;
            }
            h = fnv_words(h, (const u64 *)buf, n / 8);
        }
        u64 c = rdtsc() - p0;
        if (c < best) best = c;
    }
    u64 cyc = rdtsc() - t0, bytes = total * (vo.passes ? vo.passes : 1);
    char r[400];
    struct buf j = BUF_INIT(r);
    buf_char(&j, '{');
    buf_kv_str(&j, "workload", "readfile");
    buf_kv_u64(&j, "bytes", total);
    buf_kv_u64(&j, "passes", vo.passes ? vo.passes : 1);
    buf_kv_u64(&j, "chunk", vo.chunk);
    buf_str(&j, ",\"checksum\":\"");
    buf_hex(&j, h);
    buf_char(&j, '"');
    buf_kv_u64(&j, "elapsed_us", cycles_to_us(cyc));
    buf_kv_fix2(&j, "mib_s", rate_x100(bytes >> 10, cyc) / 1024);
    buf_kv_fix2(&j, "best_pass_mib_s", rate_x100(total >> 10, best) / 1024);
    buf_kv_fix2(&j, "io_mib_s", rate_x100(bytes >> 10, io_cycles) / 1024);
    buf_kv_bool(&j, "ok", 1);
    buf_char(&j, '}');
    emit_result(&j);
    return 1;
}

/* disk-verify pattern (docs/virtio.md): the 64-bit word at byte offset o of
 * the disk is (o * 0x9E3779B97F4A7C15) ^ (seed * 0xD6E8FEB86659FD93). */
static inline u64 pattern(u64 o) { return (o * 0x9E3779B97F4A7C15UL) ^ (vo.seed * 0xD6E8FEB86659FD93UL); }

int w_disk_verify(u32 id)
{
    if (id) return 1;
    if (!blk_open()) { result_err("disk-verify", verr); return 0; }
    u8 *buf = (u8 *)g_info.heap_start;
    u64 sectors = vo.blocks && vo.blocks < blk_sectors ? vo.blocks : blk_sectors;
    u64 total = sectors * 512, mismatches = 0, first_bad = ~0UL, reqs = 0;
    /* request sizes cycle through 1 sector, 8 sectors and a whole chunk */
    static const u64 shapes[3] = {512, 4096, 0};
    u64 t0 = rdtsc();
    for (u64 off = 0, k = 0; off < total; k++) {
        u64 n = shapes[k % 3] ? shapes[k % 3] : vo.chunk;
        if (n > total - off) n = total - off;
        for (u64 i = 0; i < n / 8; i++) ((u64 *)buf)[i] = pattern(off + 8 * i);
        if (blk_rw(1, off / 512, buf, (u32)n)) { result_err("disk-verify", "write failed"); return 0; }
        off += n;
        reqs++;
    }
    if (blk_rw(4, 0, 0, 0)) { result_err("disk-verify", "flush failed"); return 0; }
    for (u64 off = 0; off < total; off += vo.chunk) {
        u64 n = total - off < vo.chunk ? total - off : vo.chunk;
        memset(buf, 0, n);
        if (blk_rw(0, off / 512, buf, (u32)n)) { result_err("disk-verify", "read back failed"); return 0; }
        for (u64 i = 0; i < n / 8; i++)
            if (((u64 *)buf)[i] != pattern(off + 8 * i)) {
                if (!mismatches) first_bad = off + 8 * i;
                mismatches++;
            }
        reqs++;
    }
    /* a read past the end must fail with IOERR (1), and the device keep working */
    u32 past = blk_rw(0, blk_sectors, buf, 512);
    u32 again = blk_rw(0, 0, buf, 512);
    int ok = !mismatches && past == 1 && again == 0 && ((u64 *)buf)[0] == pattern(0);
    char r[400];
    struct buf j = BUF_INIT(r);
    buf_char(&j, '{');
    buf_kv_str(&j, "workload", "disk-verify");
    buf_kv_u64(&j, "bytes", total);
    buf_kv_u64(&j, "seed", vo.seed);
    buf_kv_u64(&j, "requests", reqs);
    buf_kv_u64(&j, "mismatches", mismatches);
    if (mismatches) buf_kv_u64(&j, "first_bad_offset", first_bad);
    buf_kv_u64(&j, "past_end_status", past);
    buf_kv_u64(&j, "elapsed_us", cycles_to_us(rdtsc() - t0));
    buf_kv_bool(&j, "ok", ok);
    buf_char(&j, '}');
    emit_result(&j);
    return ok;
}

/* ---- virtio-net ---- */
#define NET_HDR 12
#define RXBUF 2048
static struct vdev net = {.what = "virtio-net"};
static u8 rxbufs[QSIZE][RXBUF] PAGE_ALIGNED;
static u8 txbufs[QSIZE][RXBUF] PAGE_ALIGNED;

static void rx_post(u16 i)
{
    struct vq *q = &net.q[0];
    q->p->desc[i] = (struct vdesc){(u64)rxbufs[i], RXBUF, D_WRITE, 0};
    q->p->aring[q->p->aidx % QSIZE] = i;
    barrier();
    q->p->aidx = (u16)(q->p->aidx + 1);
}

static int net_open(void)
{
    net.base = vo.net;
    if (!vdev_init(&net, 1, 1u << 5, 2, &vq_pages[1])) return 0;
    for (u16 i = 0; i < QSIZE; i++) rx_post(i);
    wr(&net, R_NOTIFY, 0);
    return 1;
}

/* Frame k: broadcast destination, our MAC as source, ethertype 0x88B5 (local
 * experimental), then the payload: u64 sequence, then bytes (k*31 + i) & 0xff. */
static void make_frame(u8 *f, u64 k, u32 size)
{
    for (int i = 0; i < 6; i++) f[i] = 0xFF;
    for (int i = 0; i < 6; i++) f[6 + i] = (u8)rd(&net, R_CONFIG + i);
    f[12] = 0x88; f[13] = 0xB5;
    *(u64 *)(f + 14) = k;
    for (u32 i = 8; i < size; i++) f[14 + i] = (u8)(k * 31 + i);
}

static void tx_send(u64 k, u32 size)
{
    u16 slot = (u16)(k % QSIZE);
    u8 *b = txbufs[slot];
    memset(b, 0, NET_HDR);
    make_frame(b + NET_HDR, k, size);
    net.q[1].p->desc[slot] = (struct vdesc){(u64)b, NET_HDR + 14 + size, 0, 0};
    vq_submit(&net, 1, slot);
}

/* Reap transmit completions (they return at once: the device sends synchronously). */
static void tx_reap(void)
{
    u32 id, len;
    while (net.q[1].p->uidx != net.q[1].last_used) vq_poll(&net, 1, ~0UL, &id, &len);
}

/* Receive one frame and check it is frame `k` exactly. Returns 1 ok, 0 bad, -1 timeout. */
static u64 rx_ignored;
#define PROBE (~0UL)

/* Wait until the link carries frames both ways: a probe frame (sequence PROBE) every 100 ms
 * until one comes back (the host peer may start after the NIC). Returns probes sent, or 0. */
static u64 link_up(u32 size, u64 deadline)
{
    for (u64 n = 1; rdtsc() < deadline; n++) {
        tx_send(PROBE, size);
        tx_reap();
        u64 until = rdtsc() + g_info.tsc_hz / 10;
        u32 id, len;
        while (vq_poll(&net, 0, until, &id, &len)) {
            int probe = id < QSIZE && len >= NET_HDR + 22 && *(u64 *)(rxbufs[id] + NET_HDR + 14) == PROBE;
            rx_post((u16)(id < QSIZE ? id : 0));
            wr(&net, R_NOTIFY, 0);
            if (probe) return n;
            rx_ignored++;
        }
    }
    return 0;
}
static int rx_expect(u64 k, u32 size, u64 deadline)
{
    u32 id, len;
    if (!vq_poll(&net, 0, deadline, &id, &len)) return -1;
    /* frames of another protocol (a TAP's host may send some) and late link probes are not
     * the echo: skip them */
    while (id < QSIZE && len >= NET_HDR + 14 &&
           (rxbufs[id][NET_HDR + 12] != 0x88 || rxbufs[id][NET_HDR + 13] != 0xB5 ||
            (len >= NET_HDR + 22 && *(u64 *)(rxbufs[id] + NET_HDR + 14) == PROBE))) {
        rx_ignored++;
        rx_post((u16)id);
        wr(&net, R_NOTIFY, 0);
        if (!vq_poll(&net, 0, deadline, &id, &len)) return -1;
    }
    int ok = id < QSIZE && len == NET_HDR + 14 + size;
    if (ok) {
        u8 want[14 + 1500];
        make_frame(want, k, size);
        const u8 *got = rxbufs[id] + NET_HDR;
        for (u32 i = 0; i < 14 + size && ok; i++) ok = got[i] == want[i];
    }
    rx_post((u16)(id < QSIZE ? id : 0));
    wr(&net, R_NOTIFY, 0);
    return ok;
}

int w_net_echo(u32 id)
{
    if (id) return 1;
    if (vo.size < 64 || vo.size > 1500) { result_err("net-echo", "size must be 64-1500"); return 0; }
    if (vo.window < 1 || vo.window > QSIZE / 2) vo.window = QSIZE / 2;
    if (!net_open()) { result_err("net-echo", verr); return 0; }
    u32 size = (u32)vo.size;
    u64 n = vo.packets, bad = 0, lost = 0, rtt_min = ~0UL, rtt_sum = 0, k = 0;
    u64 probes = link_up(size, tsc_deadline(g_cfg.timeout_s));
    if (!probes) { result_err("net-echo", "no probe frame came back: is the host echo peer running?"); return 0; }
    /* phase 1: ping-pong, one frame in flight */
    for (u64 i = 0; i < n; i++, k++) {
        u64 a = rdtsc();
        tx_send(k, size);
        tx_reap();
        int r = rx_expect(k, size, tsc_deadline(g_cfg.timeout_s));
        u64 c = rdtsc() - a;
        if (r < 0) { lost++; break; }
        if (!r) bad++;
        rtt_sum += c;
        if (c < rtt_min) rtt_min = c;
    }
    /* phase 2: stream with `window` frames in flight */
    u64 t0 = rdtsc(), sent = 0, recvd = 0, base = k;
    while (!lost && recvd < n) {
        while (sent < n && sent - recvd < vo.window) { tx_send(base + sent, size); sent++; }
        tx_reap();
        int r = rx_expect(base + recvd, size, tsc_deadline(g_cfg.timeout_s));
        if (r < 0) { lost++; break; }
        if (!r) bad++;
        recvd++;
    }
    u64 stream = rdtsc() - t0;
    int ok = !bad && !lost;
    char r[400];
    struct buf j = BUF_INIT(r);
    buf_char(&j, '{');
    buf_kv_str(&j, "workload", "net-echo");
    buf_kv_u64(&j, "packets", n);
    buf_kv_u64(&j, "size", size);
    buf_kv_u64(&j, "bad", bad);
    buf_kv_u64(&j, "lost", lost);
    buf_kv_u64(&j, "ignored", rx_ignored);
    buf_kv_u64(&j, "link_probes", probes);
    buf_kv_u64(&j, "rtt_avg_us_x100", n ? muldiv(rtt_sum, 100000000, g_info.tsc_hz) / n : 0);
    buf_kv_u64(&j, "rtt_min_us_x100", rtt_min != ~0UL ? muldiv(rtt_min, 100000000, g_info.tsc_hz) : 0);
    buf_kv_fix2(&j, "stream_frames_s", rate_x100(recvd, stream));
    buf_kv_fix2(&j, "stream_mib_s", rate_x100((recvd * size) >> 10, stream) / 1024);
    buf_kv_bool(&j, "ok", ok);
    buf_char(&j, '}');
    emit_result(&j);
    return ok;
}

/* ---- virtio-hostile: malformed rings must set NEEDS_RESET, not harm the VMM ---- */
static u8 hbuf[4096] PAGE_ALIGNED;

/* Submit head 0 with descriptors already written; returns the status register. */
static u32 hostile_case(int which)
{
    struct vdesc *dt = blk.q[0].p->desc;
    breq.type = 0; breq.sector = 0; breq.status = 0xEE;
    switch (which) {
    case 0: /* loop: 0 -> 1 -> 2 -> 1 */
        dt[0] = (struct vdesc){(u64)&breq, 16, D_NEXT, 1};
        dt[1] = (struct vdesc){(u64)hbuf, 512, D_NEXT | D_WRITE, 2};
        dt[2] = (struct vdesc){(u64)&breq.status, 1, D_NEXT | D_WRITE, 1};
        break;
    case 1: /* next past the table */
        dt[0] = (struct vdesc){(u64)&breq, 16, D_NEXT, 200};
        break;
    case 2: /* buffer outside guest RAM (in the MMIO hole) */
        dt[0] = (struct vdesc){(u64)&breq, 16, D_NEXT, 1};
        dt[1] = (struct vdesc){0xF0000000UL, 512, D_NEXT | D_WRITE, 2};
        dt[2] = (struct vdesc){(u64)&breq.status, 1, D_WRITE, 0};
        break;
    case 3: /* oversized length */
        dt[0] = (struct vdesc){(u64)&breq, 16, D_NEXT, 1};
        dt[1] = (struct vdesc){(u64)hbuf, 0xFFFFFFF0u, D_NEXT | D_WRITE, 2};
        dt[2] = (struct vdesc){(u64)&breq.status, 1, D_WRITE, 0};
        break;
    case 4: /* address that wraps */
        dt[0] = (struct vdesc){(u64)&breq, 16, D_NEXT, 1};
        dt[1] = (struct vdesc){~0UL - 100, 512, D_NEXT | D_WRITE, 2};
        dt[2] = (struct vdesc){(u64)&breq.status, 1, D_WRITE, 0};
        break;
    case 5: /* readable after writable */
        dt[0] = (struct vdesc){(u64)&breq, 16, D_NEXT, 1};
        dt[1] = (struct vdesc){(u64)&breq.status, 1, D_WRITE | D_NEXT, 2};
        dt[2] = (struct vdesc){(u64)hbuf, 512, 0, 0};
        break;
    case 6: /* head index out of range, and an available index far ahead */
        blk.q[0].p->aring[blk.q[0].p->aidx % QSIZE] = 999;
        blk.q[0].p->aidx = (u16)(blk.q[0].p->aidx + 1);
        barrier();
        wr(&blk, R_NOTIFY, 0);
        return rd(&blk, R_STATUS);
    default: /* available index jumps by more than the queue size */
        blk.q[0].p->aidx = (u16)(blk.q[0].p->aidx + 100);
        barrier();
        wr(&blk, R_NOTIFY, 0);
        return rd(&blk, R_STATUS);
    }
    vq_submit(&blk, 0, 0);
    return rd(&blk, R_STATUS);
}

int w_virtio_hostile(u32 id)
{
    if (id) return 1;
    static const char *names[] = {"loop", "next_out_of_range", "outside_ram", "oversized", "wraps",
                                  "readable_after_writable", "head_out_of_range", "avail_jump"};
    char r[700];
    struct buf j = BUF_INIT(r);
    buf_char(&j, '{');
    buf_kv_str(&j, "workload", "virtio-hostile");
    int ok = 1;
    for (int c = 0; c < 8; c++) {
        if (!blk_open()) { result_err("virtio-hostile", verr); return 0; }
        u16 used0 = blk.q[0].p->uidx;
        u32 st = hostile_case(c);
        /* flagged, nothing returned to the driver, and after a reset the device works */
        int flagged = (st & S_RESET) && blk.q[0].p->uidx == used0 && (rd(&blk, R_ISR) & 2);
        wr(&blk, R_IACK, 3);
        int works = blk_open() && blk_rw(0, 0, hbuf, 512) == 0;
        buf_kv_bool(&j, names[c], flagged && works);
        ok &= flagged && works;
    }
    buf_kv_bool(&j, "ok", ok);
    buf_char(&j, '}');
    emit_result(&j);
    return ok;
}
