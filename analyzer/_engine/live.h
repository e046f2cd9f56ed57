/* live.c: a live interface through libpcap (a TPACKET_V3 ring) into the tracker, with events. */
#ifndef SYNFIN_LIVE_H
#define SYNFIN_LIVE_H

#include "events.h"
#include "feeder.h"
#include "filter.h"
#include "sink.h"

/* What live_open returns. */
enum { LIVE_OK, LIVE_PERMISSION, LIVE_NO_DEVICE, LIVE_BAD_FILTER, LIVE_FAILED, LIVE_NO_PCAP };

typedef struct {
    const char *iface, *filter, *dump_path;  /* dump_path NULL: no -w */
    int snaplen, buffer_bytes, promiscuous;
    int loopback;        /* the device is a loopback: the kernel is asked to skip outgoing copies (Linux 4.20+) */
    int block_ms;        /* how long the kernel fills a ring block before handing it over */
} LiveOptions;

typedef struct {
    void *pcap;              /* pcap_t *, opaque here so that module.c needs no pcap.h */
    void *dump;              /* pcap_dumper_t * (-w), or NULL */
    int fd;                  /* the ring's descriptor, to wait on */
    int block_ms;            /* LiveOptions.block_ms */
    uint32_t linktype;
    Feeder *feeder;          /* its counts only (feeder_frame) */
    Sink *sink;
    Tracker tracker;
    int tracker_ready;
    Events events;
    Conn **pending;          /* finished while a packet was tracked: announced after its own events */
    size_t n_pending, cap_pending;
    int64_t frames, count;   /* frames read; stop at `count` (0: never) */
    int lost;                /* the interface can no longer be read (went down, disappeared) */
    int drained;             /* the last read found the ring empty */
    int failed;              /* out of memory, or the sink failed */
    int64_t received, dropped;  /* pcap_stats: passed the filter, dropped by the kernel */
    char error[512];
} Live;

int live_open(Live *l, const LiveOptions *o);   /* LIVE_OK, or a code and l->error */
int live_start(Live *l, const Timeouts *timeouts);  /* the tracker; 0, or -1: out of memory */
/* Read what the ring holds for up to `seconds` (waiting for more meanwhile), until l->events holds
 * `enough` bytes, the count is reached, or the interface is lost. With `drain`, stop once the ring is
 * empty and no block has come for two block timeouts. 0, or -1 (l->failed). Runs without the GIL. */
int live_pump(Live *l, double seconds, size_t enough, int drain);
int live_finish(Live *l);   /* every open connection finished and announced; 0 or -1 */
void live_census(const Live *l, int64_t census[2][N_STATES]);  /* the open connections' states */
void live_stats(Live *l);   /* received, dropped */
void live_close(Live *l);   /* the ring, the -w file (flushed), the tracker */

#endif
