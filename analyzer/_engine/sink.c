/* Where finished connections go: labelled, counted, written, freed.
 *
 * With a file descriptor to write to, this runs on a second thread, so
 * formatting the output (a third of the work for JSON) overlaps with reading
 * and tracking on the first: the tracker hands over each retired connection
 * through a bounded queue and forgets it. Without one (the caller's stream is
 * not a file, e.g. a StringIO), everything happens inline and the text goes
 * to a Python callback in ~1 MB pieces. Either way the bytes are the same, in
 * the same order: the order in which connections finished.
 *
 * The queue is consumed in units (a batch of connections, numbered as they
 * are taken). When it is full, the tracker's thread stops waiting and
 * formats a unit itself: at the end of a capture, when every connection
 * still open is handed over at once, both threads format. Each thread writes
 * into its own buffer and counts into its own census; a unit's text goes out
 * only on its turn (`next_write`), so the output keeps its order.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "sink.h"

#define FLUSH_AT (1u << 20)
#define QUEUE_CAPACITY 32768
#define BATCH 4096  /* connections handed over at a time */
#define UNIT 1024   /* connections formatted, and their text written, at a time */
#define SLAB (4u << 20)

/* Connections live in 4 MiB slabs (huge pages were tried: the kernel's
 * compaction on fault cost more than the TLB misses saved) and are never
 * freed one by one: a finished connection's memory is reused for a
 * new one (warm in cache, no malloc), linked to the next spare through its
 * first bytes. The slabs go when the run ends. While connections pile up
 * (TIME_WAIT lasts a minute), a new slab is needed every ~5,000 connections:
 * the writer thread, which has time to spare then, allocates it and faults
 * its pages in (a thousand page faults, ~1 ms) before the tracker needs it. */
static inline void push_conn(Conn **list, Conn *c) {
    *(Conn **)c = *list;
    *list = c;
}

/* ---- the work on one connection (either thread) ---------------------------------- */

static void census_indices(const Labels *labels, int *open, int *close, int *closer);

static uint64_t name_hash(const char *name, size_t len) {  /* FNV-1a */
    uint64_t h = 1469598103934665603u;
    for (size_t i = 0; i < len; i++) h = (h ^ (uint8_t)name[i]) * 1099511628211u;
    return h;
}

static EndpointCount *endpoint_slot(EndpointCount *slots, size_t cap, const char *name, size_t len) {
    size_t i = name_hash(name, len) & (cap - 1);
    while (slots[i].len && (slots[i].len != len || memcmp(slots[i].name, name, len))) i = (i + 1) & (cap - 1);
    return &slots[i];
}

int endpoint_add(EndpointTable *t, const char *name, size_t len, const int64_t *n) {
    if (len == 0 || len >= sizeof t->slots->name) return 0;  /* never: "ip:port" is at most 55 bytes */
    if (2 * (t->used + 1) > t->cap) {  /* at most half full */
        size_t cap = t->cap ? 2 * t->cap : 64;
        EndpointCount *slots = calloc(cap, sizeof *slots);
        if (slots == NULL) return -1;
        for (size_t i = 0; i < t->cap; i++)
            if (t->slots[i].len) *endpoint_slot(slots, cap, t->slots[i].name, t->slots[i].len) = t->slots[i];
        free(t->slots);
        t->slots = slots;
        t->cap = cap;
    }
    EndpointCount *slot = endpoint_slot(t->slots, t->cap, name, len);
    if (slot->len == 0) {
        memcpy(slot->name, name, len);
        slot->len = (uint8_t)len;
        t->used++;
    }
    for (int k = 0; k < EP_N; k++) slot->n[k] += n[k];
    return 0;
}

static int final_index(uint8_t state) {
    const char *name = machine.state_names[state];
    return strcmp(name, "TIME_WAIT") == 0 ? 0 : strcmp(name, "CLOSE_WAIT") == 0 ? 1
         : strcmp(name, "FIN_WAIT_2") == 0 ? 2 : -1;
}

/* The connection's counts in its server endpoint's row. */
static int count_endpoint(Share *share, const Conn *c, int open, int close) {
    Buffer *name = &share->name;
    name->len = 0;
    server_name(name, c);
    if (name->data == NULL) return -1;
    int64_t n[EP_N] = {0};
    n[EP_CONNECTIONS] = 1;
    n[EP_HANDSHAKES] = open == 0;
    n[EP_CLOSED] = close <= 2;  /* four-way, three-way, simultaneous */
    n[EP_RESET] = CLOSE_LABELS[close][0] == 'r';
    n[EP_REFUSED] = OPEN_LABELS[open][0] == 'r';
    for (int role = 0; role < 2; role++) {
        int which = final_index(c->ep[role].state);
        if (which >= 0) n[EP_FINALS + role * EP_FINAL_STATES + which] = 1;
    }
    return endpoint_add(&share->endpoints, name->data, name->len, n);
}

static int count(Share *share, const Conn *c, const Labels *labels) {
    Census *census = &share->census;
    int open, close, closer;
    census_indices(labels, &open, &close, &closer);
    census->open[open]++;
    census->close[close]++;
    census->closer[closer]++;
    for (int i = 0; i < 3; i++) census->retransmits[i] += c->retransmits[i];
    census->final[0][c->ep[ROLE_CLIENT].state]++;
    census->final[1][c->ep[ROLE_SERVER].state]++;
    census->half_close += c->half_close;
    census->anomalies += c->anomalies_total;
    census->matched++;
    return count_endpoint(share, c, open, close);
}

static int write_fd(int fd, Buffer *out) {
    size_t done = 0;
    while (done < out->len) {
        ssize_t wrote = write(fd, out->data + done, out->len - done);
        if (wrote < 0 && errno == EINTR) continue;
        if (wrote < 0) return errno;
        done += (size_t)wrote;
    }
    out->len = 0;
    return 0;
}

/* Write out what `out` holds: 0, an errno, or -1. */
static int flush(Sink *sink, Buffer *out) {
    if (out->len == 0) return 0;
    if (sink->fd >= 0) return write_fd(sink->fd, out);
    int status = sink->write(sink->write_ctx, out->data, out->len);
    out->len = 0;
    return status ? -1 : 0;
}

/* The census indices of a connection's labels (Census.open, .close, .closer). */
static void census_indices(const Labels *labels, int *open, int *close, int *closer) {
    *open = *close = 0;
    while (OPEN_LABELS[*open] != labels->open) (*open)++;
    while (CLOSE_LABELS[*close] != labels->close) (*close)++;
    const char *who = labels->active_closer;
    *closer = who == NULL ? 3 : who[0] == 'c' ? 0 : who[0] == 's' ? 1 : 2;
}

/* OutputStyle.meta: a line of facts before a connection's text, for parallel.py's merge (even when --where
 * leaves the text out): "\x1e" key (hex), id, first frame, retired_frame, retired_how, retired_when,
 * retired_before, retired_ts (floats as C's %a: exact), its census indices (open, close, closer, final client
 * and server states), half_close, anomalies, matched, the SYN/SYN-ACK/FIN retransmissions, and last the server
 * endpoint ("ip:port": the summary's row it counts in). */
static int write_meta(Buffer *b, const Conn *c, const Labels *labels, int matched) {
    static const char hex[] = "0123456789abcdef";
    int open, close, closer;
    census_indices(labels, &open, &close, &closer);
    if (buf_reserve(b, 512)) return -1;
    char *out = b->data + b->len;
    *out++ = '\x1e';
    const uint8_t *key = (const uint8_t *)&c->key;
    for (size_t i = 0; i < sizeof c->key; i++) {
        *out++ = hex[key[i] >> 4];
        *out++ = hex[key[i] & 15];
    }
    int len = snprintf(out, 400, " %lld %lld %lld %d %a %a %a %d %d %d %d %d %d %lld %d %lld %lld %lld ", (long long)c->id,
                       (long long)c->first_frame, (long long)c->retired_frame, c->retired_how, c->retired_when,
                       c->retired_before, c->retired_ts, open, close, closer, c->ep[ROLE_CLIENT].state,
                       c->ep[ROLE_SERVER].state, c->half_close, (long long)c->anomalies_total, matched,
                       (long long)c->retransmits[0], (long long)c->retransmits[1], (long long)c->retransmits[2]);
    if (len < 0 || len >= 400) return -1;
    b->len = (size_t)(out - b->data) + (size_t)len;
    server_name(b, c);
    if (b->data == NULL || buf_reserve(b, 1)) return -1;
    b->data[b->len++] = '\n';
    return 0;
}

/* Finish and label one connection; if it passes --where (where.c), count and format it into
 * `share`; release what it holds (not the Conn itself). Nonzero: an errno, or -1. */
static int settle(const Sink *sink, Share *share, Conn *c) {
    int status = conn_finish(c);
    if (status == 0) {
        Labels labels;
        conn_labels(c, &labels);
        share->census.connections++;
        int matched = sink->where == NULL || where_matches(sink->where, c, &labels);
        if (sink->style.meta) status = write_meta(&share->out, c, &labels, matched);
        if (matched && status == 0) {
            status = count(share, c, &labels);
            if (status == 0) status = write_record(&share->out, c, &labels, &sink->style);
        }
    }
    conn_free(c);
    return status;
}

static void fail(Sink *sink, int status) {
    if (status) __atomic_store_n(&sink->error, status, __ATOMIC_RELEASE);
}

static int failed(Sink *sink) { return __atomic_load_n(&sink->error, __ATOMIC_ACQUIRE); }

/* ---- units: taken in order, formatted by either thread, written in order ----------- */

/* Up to UNIT connections from the head of the queue (the lock held); their unit's number. */
static uint64_t take_unit(Sink *sink, Conn **batch, size_t *n) {
    *n = 0;
    while (*n < UNIT && sink->count) {
        batch[(*n)++] = sink->ring[sink->head];
        sink->head = (sink->head + 1) % QUEUE_CAPACITY;
        sink->count--;
    }
    return sink->units_taken++;
}

static int my_turn(Sink *sink, uint64_t unit) {
    return __atomic_load_n(&sink->next_write, __ATOMIC_ACQUIRE) == unit;
}

/* Format a unit into `share`, writing as it goes while it is this unit's turn,
 * then wait for the turn, write the rest and pass the turn on. */
static void format_unit(Sink *sink, Share *share, Conn **batch, size_t n, uint64_t unit) {
    for (size_t i = 0; i < n; i++) {
        if (failed(sink)) {  /* after an error: only release */
            conn_free(batch[i]);
            continue;
        }
        fail(sink, settle(sink, share, batch[i]));
        if (share->out.len >= FLUSH_AT && my_turn(sink, unit)) fail(sink, flush(sink, &share->out));
    }
    if (!my_turn(sink, unit)) {
        pthread_mutex_lock(&sink->lock);
        while (sink->next_write != unit) pthread_cond_wait(&sink->turn, &sink->lock);
        pthread_mutex_unlock(&sink->lock);
    }
    if (failed(sink)) share->out.len = 0;
    else fail(sink, flush(sink, &share->out));
    pthread_mutex_lock(&sink->lock);
    __atomic_store_n(&sink->next_write, unit + 1, __ATOMIC_RELEASE);
    pthread_cond_broadcast(&sink->turn);
    pthread_mutex_unlock(&sink->lock);
}

/* ---- the second thread ---------------------------------------------------------------- */

/* A slab with its pages faulted in; NULL when out of memory. (A write to each
 * page, through volatile: malloc + memset(0) is compiled into calloc, which
 * leaves fresh pages untouched.) */
static char *faulted_slab(void) {
    volatile char *slab = malloc(SLAB);
    for (size_t at = 0; slab != NULL && at < SLAB; at += 4096) slab[at] = 0;
    return (char *)slab;
}

/* Make the slab the tracker asked for (the lock held, and released meanwhile). */
static void make_wanted_slab(Sink *sink) {
    sink->slab_wanted = 0;
    pthread_mutex_unlock(&sink->lock);
    char *slab = faulted_slab();
    pthread_mutex_lock(&sink->lock);
    if (sink->ready_slab == NULL) sink->ready_slab = slab;
    else free(slab);
}

static void *writer_main(void *arg) {
    Sink *sink = arg;
    name_this_thread("synfin-writer");
    Conn *batch[UNIT];
    size_t n = 0;
    for (;;) {
        pthread_mutex_lock(&sink->lock);
        Conn *back = sink->returned;  /* the last unit's connections, back (the tracker peeks without the lock) */
        for (size_t i = 0; i < n; i++) push_conn(&back, batch[i]);
        __atomic_store_n(&sink->returned, back, __ATOMIC_RELAXED);
        while (sink->count == 0 && !sink->closing) {
            if (sink->slab_wanted) make_wanted_slab(sink);
            else pthread_cond_wait(&sink->not_empty, &sink->lock);
        }
        if (sink->slab_wanted && !sink->closing) make_wanted_slab(sink);
        if (sink->count == 0) {  /* closing, and nothing left */
            pthread_mutex_unlock(&sink->lock);
            return NULL;
        }
        uint64_t unit = take_unit(sink, batch, &n);
        pthread_mutex_unlock(&sink->lock);
        format_unit(sink, &sink->own, batch, n, unit);
    }
}

/* The tracker's thread, instead of waiting for room: format the unit at the head
 * (the lock held, and released meanwhile). Its connections become spares. */
static void help(Sink *sink) {
    Conn *batch[UNIT];
    size_t n;
    uint64_t unit = take_unit(sink, batch, &n);
    pthread_mutex_unlock(&sink->lock);
    format_unit(sink, &sink->helper, batch, n, unit);
    sink->helped += (int64_t)n;
    for (size_t i = 0; i < n; i++) push_conn(&sink->spare, batch[i]);
    pthread_mutex_lock(&sink->lock);
}

static int hand_over(Sink *sink) {
    size_t n = sink->pending_len, i = 0;
    pthread_mutex_lock(&sink->lock);
    while (i < n) {
        if (sink->count == QUEUE_CAPACITY) help(sink);
        while (i < n && sink->count < QUEUE_CAPACITY) {
            sink->ring[(sink->head + sink->count) % QUEUE_CAPACITY] = sink->pending[i++];
            sink->count++;
        }
        pthread_cond_signal(&sink->not_empty);
    }
    pthread_mutex_unlock(&sink->lock);
    sink->pending_len = 0;
    return failed(sink);
}

static void add_census(Census *to, const Census *from) {  /* every field of a Census is an int64_t count */
    int64_t *a = (int64_t *)to;
    const int64_t *b = (const int64_t *)from;
    for (size_t i = 0; i < sizeof *to / sizeof *a; i++) a[i] += b[i];
}

/* ---- the public face ---------------------------------------------------------------------- */

int sink_start(Sink *sink) {
    if (sink->fd < 0) return 0;
    sink->ring = malloc(QUEUE_CAPACITY * sizeof *sink->ring);
    sink->pending = malloc(BATCH * sizeof *sink->pending);
    if (sink->ring == NULL || sink->pending == NULL) return -1;
    pthread_mutex_init(&sink->lock, NULL);
    pthread_cond_init(&sink->not_empty, NULL);
    pthread_cond_init(&sink->turn, NULL);
    sink->slab_wanted = 1;  /* the first, made while the tracker starts */
    if (pthread_create(&sink->thread, NULL, writer_main, sink)) return -1;
    sink->threaded = 1;
    return 0;
}

int sink_take(void *ctx, Conn *c) {
    Sink *sink = ctx;
    if (!sink->threaded) {
        int status = settle(sink, &sink->own, c);
        if (status == 0 && sink->own.out.len >= FLUSH_AT) status = flush(sink, &sink->own.out);
        push_conn(&sink->spare, c);
        return status;
    }
    sink->pending[sink->pending_len++] = c;
    return sink->pending_len == BATCH ? hand_over(sink) : 0;
}

int sink_drain(Sink *sink) {
    if (sink->threaded) return 0;
    return sink->error ? sink->error : flush(sink, &sink->own.out);
}

int sink_finish(Sink *sink) {
    if (!sink->threaded) {
        sink->census = sink->own.census;
        sink->endpoints = sink->own.endpoints;
        sink->own.endpoints = (EndpointTable){0};
        return sink->error ? sink->error : flush(sink, &sink->own.out);
    }
    int status = hand_over(sink);
    pthread_mutex_lock(&sink->lock);
    sink->closing = 1;
    pthread_cond_signal(&sink->not_empty);
    while (sink->count) help(sink);  /* the rest, formatted by both threads */
    pthread_mutex_unlock(&sink->lock);
    pthread_join(sink->thread, NULL);
    sink->threaded = 0;
    pthread_mutex_destroy(&sink->lock);
    pthread_cond_destroy(&sink->not_empty);
    pthread_cond_destroy(&sink->turn);
    sink->census = sink->own.census;
    add_census(&sink->census, &sink->helper.census);
    sink->endpoints = sink->own.endpoints;
    sink->own.endpoints = (EndpointTable){0};
    const EndpointTable *more = &sink->helper.endpoints;
    for (size_t i = 0; i < more->cap && status == 0; i++)
        if (more->slots[i].len) status = endpoint_add(&sink->endpoints, more->slots[i].name, more->slots[i].len,
                                                      more->slots[i].n);
    return status ? status : sink->error;
}

/* The slab the writer made ready (and ask for the next), or, inline or when none is ready, one made here. */
static char *next_slab(Sink *sink) {
    if (!sink->threaded) return malloc(SLAB);
    pthread_mutex_lock(&sink->lock);
    char *slab = sink->ready_slab;
    sink->ready_slab = NULL;
    sink->slab_wanted = 1;
    pthread_cond_signal(&sink->not_empty);
    pthread_mutex_unlock(&sink->lock);
    return slab != NULL ? slab : malloc(SLAB);
}

static Conn *carve(Sink *sink) {
    if (sink->slab_left < sizeof(Conn)) {
        if (sink->n_slabs == sink->cap_slabs) {
            void **slabs = grown(sink->slabs, &sink->cap_slabs, sizeof *slabs, 16);
            if (slabs == NULL) return NULL;
            sink->slabs = slabs;
        }
        char *slab = next_slab(sink);
        if (slab == NULL) return NULL;
        sink->slabs[sink->n_slabs++] = slab;
        sink->slab_next = slab;
        sink->slab_left = SLAB;
    }
    Conn *c = (Conn *)sink->slab_next;
    sink->slab_next += sizeof(Conn);
    sink->slab_left -= sizeof(Conn);
    return c;
}

Conn *sink_new_conn(void *ctx) {
    Sink *sink = ctx;
    if (sink->spare == NULL && sink->threaded && __atomic_load_n(&sink->returned, __ATOMIC_RELAXED) != NULL) {
        pthread_mutex_lock(&sink->lock);  /* before a new slab: what the writer gave back */
        sink->spare = sink->returned;
        sink->returned = NULL;
        pthread_mutex_unlock(&sink->lock);
    }
    Conn *c = sink->spare;
    if (c == NULL) return carve(sink);
    Conn *next = sink->spare = *(Conn **)c;
    if (next != NULL)  /* the writer's core has it: ask for it now, for writing, before it is needed */
        for (size_t line = 0; line < sizeof *next; line += 64) __builtin_prefetch((char *)next + line, 1);
    return c;
}

void sink_recycle(Sink *sink, Conn *c) {
    conn_free(c);
    push_conn(&sink->spare, c);
}

void sink_free(Sink *sink) {
    if (sink->threaded) sink_finish(sink);
    for (size_t i = 0; i < sink->pending_len; i++) conn_free(sink->pending[i]);
    for (size_t i = 0; i < sink->n_slabs; i++) free(sink->slabs[i]);
    free(sink->ready_slab);
    free(sink->slabs);
    free(sink->pending);
    free(sink->ring);
    free(sink->own.out.data);
    free(sink->helper.out.data);
    free(sink->own.name.data);
    free(sink->helper.name.data);
    free(sink->own.endpoints.slots);
    free(sink->helper.endpoints.slots);
    free(sink->endpoints.slots);
}
