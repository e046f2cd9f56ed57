/* A live interface into the engine: live.py's LiveCapture and live_cli.Session's loop, in C.
 *
 * libpcap opens the interface (pcap_create ... pcap_activate, a ring of
 * TPACKET_V3 blocks of `buffer_bytes`, nanosecond stamps), compiles the filter
 * and puts it in the kernel. Frames are read a ring block at a time
 * (pcap_dispatch, non-blocking, poll(2) on the ring between blocks), written
 * to the -w file (pcap_dump), counted and decoded as a file's are
 * (feeder_frame), tracked, and announced (events.c) into a buffer that
 * module.c hands to Python between reads: no Python runs per frame. When the
 * ring is empty the tracker is told the time (tracker_tick), so idle
 * connections finish without packets, as Pipeline.tick does.
 *
 * Order is the reference's: a segment's own events come first, then those of
 * the connections its time finished (tracker.py's add returns them after
 * on_segment has run); finished connections then go to the sink, whose
 * thread writes their records for the final report.
 *
 * Loopback: every packet passes twice; libpcap skips the outgoing copy on
 * the loopback device (also under "any"), as live.py does.
 */
#include <errno.h>
#include <math.h>
#include <linux/if_packet.h>
#include <poll.h>
#include <sys/socket.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "live.h"

#ifdef SYNFIN_HAVE_PCAP
#include <pcap/pcap.h>

#define DISPATCH_MAX 4096
#ifndef PACKET_IGNORE_OUTGOING
#define PACKET_IGNORE_OUTGOING 23
#endif

static double wall_clock(void) {  /* time.time() */
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    return (double)now.tv_sec + (double)now.tv_nsec * 1e-9;
}

static double monotonic(void) {
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (double)now.tv_sec + (double)now.tv_nsec * 1e-9;
}

static int failure(Live *l, int code, const char *what, const char *why) {
    snprintf(l->error, sizeof l->error, "%s%s%s", what, why && *why ? ": " : "", why ? why : "");
    return code;
}

int live_open(Live *l, const LiveOptions *o) {
    char errbuf[PCAP_ERRBUF_SIZE] = "";
    pcap_t *p = pcap_create(o->iface, errbuf);
    if (p == NULL) return failure(l, LIVE_FAILED, "cannot open the interface", errbuf);
    l->pcap = p;
    if (pcap_set_snaplen(p, o->snaplen) || pcap_set_promisc(p, o->promiscuous) ||
        pcap_set_buffer_size(p, o->buffer_bytes) || pcap_set_timeout(p, o->block_ms) ||
        pcap_set_tstamp_precision(p, PCAP_TSTAMP_PRECISION_NANO))
        return failure(l, LIVE_FAILED, "cannot set up the capture", pcap_geterr(p));
    int status = pcap_activate(p);
    if (status == PCAP_ERROR_PERM_DENIED) return failure(l, LIVE_PERMISSION, pcap_geterr(p), NULL);
    if (status == PCAP_ERROR_NO_SUCH_DEVICE) return failure(l, LIVE_NO_DEVICE, pcap_geterr(p), NULL);
    if (status < 0) return failure(l, LIVE_FAILED, pcap_statustostr(status), pcap_geterr(p));
    l->linktype = (uint32_t)pcap_datalink(p);
    struct bpf_program program;
    if (pcap_compile(p, &program, o->filter, 1, PCAP_NETMASK_UNKNOWN))
        return failure(l, LIVE_BAD_FILTER, pcap_geterr(p), NULL);
    status = pcap_setfilter(p, &program);
    pcap_freecode(&program);
    if (status) return failure(l, LIVE_FAILED, "the kernel refused the compiled filter", pcap_geterr(p));
    /* live.py's PACKET_IGNORE_OUTGOING (Linux 4.20+): libpcap skips loopback's outgoing copies itself, but the
     * kernel would still count them as passing the filter */
    if (o->loopback) {
        int one = 1;
        (void)setsockopt(pcap_fileno(p), SOL_PACKET, PACKET_IGNORE_OUTGOING, &one, sizeof one);
    }
    if (pcap_setnonblock(p, 1, errbuf)) return failure(l, LIVE_FAILED, "cannot read without blocking", errbuf);
    l->fd = pcap_get_selectable_fd(p);
    l->block_ms = o->block_ms;
    if (o->dump_path != NULL) {
        l->dump = pcap_dump_open(p, o->dump_path);
        if (l->dump == NULL) return failure(l, LIVE_FAILED, "cannot write", pcap_geterr(p));
    }
    struct pcap_stat stats;
    (void)pcap_stats(p, &stats);  /* the kernel's counts start from here, as live.py's do */
    return LIVE_OK;
}

/* ---- frames in ------------------------------------------------------------------------- */

/* A FinishedFn: finish c (its last history entries, its labels) and keep it until the segment that
 * finished it has been announced. */
static int on_finished(void *ctx, Conn *c) {
    Live *l = ctx;
    if (l->n_pending == l->cap_pending) {
        Conn **more = grown(l->pending, &l->cap_pending, sizeof *more, 64);
        if (more == NULL) return -1;
        l->pending = more;
    }
    l->pending[l->n_pending++] = c;
    return conn_finish(c);
}

/* The connections finished meanwhile: announced, then the sink's. */
static int hand_over(Live *l) {
    int status = 0;
    for (size_t i = 0; i < l->n_pending; i++) {
        if (status == 0) events_finished(&l->events, l->pending[i]);
        if (sink_take(l->sink, l->pending[i])) status = -1;  /* the sink frees it either way */
    }
    l->n_pending = 0;
    return status || l->events.failed ? -1 : 0;
}

static void on_frame(u_char *user, const struct pcap_pkthdr *h, const u_char *bytes) {
    Live *l = (Live *)user;
    if (l->failed) return;
    if (l->dump != NULL) pcap_dump(l->dump, h, bytes);
    Frame frame = {++l->frames, (double)h->ts.tv_sec + (double)h->ts.tv_usec * 1e-9, l->linktype, bytes,
                   h->caplen, h->len};
    Packet p;
    int got = feeder_frame(l->feeder, &frame, &p);
    if (got == 1) {
        if (tracker_add(&l->tracker, &p)) got = -1;
        else if (l->tracker.last_conn != NULL) events_segment(&l->events, l->tracker.last_conn, p.ts);
    }
    if (got < 0 || hand_over(l)) {
        l->failed = 1;
        pcap_breakloop(l->pcap);
    }
    if (l->count && l->frames >= l->count) pcap_breakloop(l->pcap);
}

static Conn *new_conn(void *ctx) { return sink_new_conn(((Live *)ctx)->sink); }

int live_start(Live *l, const Timeouts *timeouts) {
    if (tracker_init(&l->tracker, timeouts, on_finished, new_conn, l)) return -1;
    l->tracker.half_open = 0;  /* every connection a Conn from its first packet: its events need the histories */
    l->tracker_ready = 1;
    return 0;
}

/* The ring's socket reports an error (poll): if it is that the interface went down or is gone (live.py's
 * INTERFACE_GONE), read what the ring still holds, then mark the capture lost. libpcap notices only a deleted
 * interface by itself, not one set down, when it reads without blocking. */
static int interface_gone(Live *l, short revents) {
    int err = 0;
    socklen_t len = sizeof err;
    if (getsockopt(l->fd, SOL_SOCKET, SO_ERROR, &err, &len)) err = errno;
    if (!(revents & (POLLHUP | POLLNVAL)) && err != ENETDOWN && err != ENODEV && err != ENXIO) return 0;
    while (!l->failed && !(l->count && l->frames >= l->count) && pcap_dispatch(l->pcap, DISPATCH_MAX, on_frame,
                                                                             (u_char *)l) > 0) {}
    l->lost = 1;
    snprintf(l->error, sizeof l->error, "%s", strerror(err ? err : ENODEV));
    return 1;
}

int live_pump(Live *l, double seconds, size_t enough, int drain) {
    double until = monotonic() + seconds;
    l->drained = 0;
    while (!l->failed && !l->lost && !(l->count && l->frames >= l->count) && l->events.out.len < enough) {
        int want = DISPATCH_MAX;
        if (l->count && l->count - l->frames < want) want = (int)(l->count - l->frames);
        int got = pcap_dispatch(l->pcap, want, on_frame, (u_char *)l);
        if (got == PCAP_ERROR_BREAK) continue;  /* the count, or a failure: the loop's test says which */
        if (got < 0) {
            l->lost = 1;
            snprintf(l->error, sizeof l->error, "%s", pcap_geterr(l->pcap));
            break;
        }
        l->drained = got == 0;
        if (got > 0) continue;
        /* the ring is empty: everything up to now is in */
        if (tracker_tick(&l->tracker, wall_clock()) || hand_over(l)) l->failed = 1;
        double left = until - monotonic();
        if (left <= 0) break;
        /* Draining, the ring counts as empty only once no block has come for two block timeouts: the kernel
         * hands over the block it is filling only when it is full or `block_ms` old, and the frames in it
         * were captured before the stop. */
        int wait_ms = drain ? 2 * l->block_ms + 10 : (int)ceil(left * 1000);
        if (wait_ms > left * 1000 + 1) wait_ms = (int)ceil(left * 1000);
        struct pollfd wait = {l->fd, POLLIN, 0};
        int ready = poll(&wait, 1, wait_ms);
        if (ready < 0) {
            if (errno == EINTR) break;  /* a signal: back to Python */
            l->failed = 1;
        }
        if (ready == 0 && drain) break;
        if (ready > 0 && (wait.revents & (POLLERR | POLLHUP | POLLNVAL)) && interface_gone(l, wait.revents)) break;
    }
    if (l->dump != NULL) pcap_dump_flush(l->dump);
    return l->failed ? -1 : 0;
}

int live_finish(Live *l) {
    if (tracker_flush(&l->tracker) || hand_over(l)) l->failed = 1;
    return l->failed ? -1 : 0;
}

void live_census(const Live *l, int64_t census[2][N_STATES]) {
    memset(census, 0, 2 * N_STATES * sizeof census[0][0]);
    const Tracker *t = &l->tracker;
    for (size_t i = 0; i < t->table_size; i++) {
        const Conn *c = (const Conn *)t->table[i].ref;  /* never a HalfOpen: live_start turned them off */
        if (c == NULL) continue;
        census[0][c->ep[ROLE_CLIENT].state]++;
        census[1][c->ep[ROLE_SERVER].state]++;
    }
}

void live_stats(Live *l) {
    struct pcap_stat stats;
    if (l->pcap != NULL && pcap_stats(l->pcap, &stats) == 0) {
        l->received = stats.ps_recv;
        l->dropped = stats.ps_drop;
    }
}

void live_close(Live *l) {
    if (l->dump != NULL) {
        pcap_dump_flush(l->dump);
        pcap_dump_close(l->dump);
        l->dump = NULL;
    }
    if (l->pcap != NULL) pcap_close(l->pcap);
    l->pcap = NULL;
    if (l->tracker_ready) tracker_free(&l->tracker);
    l->tracker_ready = 0;
    for (size_t i = 0; i < l->n_pending; i++) conn_free(l->pending[i]);
    free(l->pending);
    l->pending = NULL;
    l->n_pending = l->cap_pending = 0;
    events_free(&l->events);
}

#else  /* built without libpcap: no live capture in the engine (live_cli.py runs the reference) */

int live_open(Live *l, const LiveOptions *o) {
    snprintf(l->error, sizeof l->error, "the engine was built without libpcap");
    return LIVE_NO_PCAP;
}
int live_start(Live *l, const Timeouts *timeouts) { return -1; }
int live_pump(Live *l, double seconds, size_t enough, int drain) { return -1; }
int live_finish(Live *l) { return -1; }
void live_census(const Live *l, int64_t census[2][N_STATES]) { memset(census, 0, 2 * N_STATES * sizeof census[0][0]); }
void live_stats(Live *l) {}
void live_close(Live *l) { events_free(&l->events); }

#endif
