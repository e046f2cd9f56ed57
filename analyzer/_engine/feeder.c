/* From the capture file to batches of decoded packets: reader.c and decode.c, driven.
 *
 * Reading and decoding are a sixth of the work. When the capture is a plain
 * file they run on a thread of their own, a few batches ahead of the tracker
 * (which keeps the state machines on the caller's thread); memory stays at
 * BATCHES batches. A gzip capture is read through Python on the caller's
 * thread instead, one batch at a time. The counts of pipeline.Stats (frames,
 * segments, skip reasons, bad frames, link types, frames the filter rejected)
 * are kept here. For the ladder (collect.c), each packet's frame as captured is
 * copied into its batch too (feeder_open_raw).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "feeder.h"

#define PYTHON_BLOCK (1u << 20)  /* capture.BLOCK */

/* ---- counting --------------------------------------------------------------------- */

/* Room in `ix` for item number `n` (items of `size` bytes, each starting with its
 * uint64_t hash): the table doubles, and is rebuilt, to stay at most half full. */
static int index_room(Index *ix, size_t n, const void *items, size_t size) {
    if (n < ix->cap / 2) return 0;
    if (n >= UINT32_MAX - 1 || ix->cap > SIZE_MAX / 2 / sizeof *ix->slots) return -1;
    size_t cap = ix->cap ? ix->cap * 2 : 64;
    uint32_t *slots = calloc(cap, sizeof *slots);
    if (slots == NULL) return -1;
    for (size_t i = 0; i < n; i++) {
        uint64_t hash;
        memcpy(&hash, (const char *)items + i * size, sizeof hash);
        size_t at = (size_t)hash & (cap - 1);
        while (slots[at]) at = (at + 1) & (cap - 1);
        slots[at] = (uint32_t)(i + 1);
    }
    free(ix->slots);
    ix->slots = slots;
    ix->cap = cap;
    return 0;
}

/* The first empty slot from `hash`'s: where a new item with that hash goes (index_room made room). */
static size_t index_empty_from(const Index *ix, uint64_t hash) {
    size_t at = (size_t)hash & (ix->cap - 1);
    while (ix->slots[at]) at = (at + 1) & (ix->cap - 1);
    return at;
}

static uint64_t hash_reason(const char *text, int malformed) {  /* FNV-1a */
    uint64_t hash = 0xcbf29ce484222325ull ^ (uint64_t)(malformed != 0);
    for (const unsigned char *p = (const unsigned char *)text; *p; p++) hash = (hash ^ *p) * 0x100000001b3ull;
    return hash;
}

static uint64_t hash_link(uint32_t linktype) { return ((uint64_t)linktype + 1) * 0x9e3779b97f4a7c15ull >> 16; }

static int note_problem(FrameStats *s, int64_t frame, const char *what) {
    if (s->n_problems == NAMED_PROBLEMS) return 0;
    char *copy = strdup(what);
    if (copy == NULL) return -1;
    s->problems[s->n_problems++] = (Problem){frame, copy};
    return 0;
}

static Reason *find_reason(const FrameStats *s, const Skip *skip, uint64_t hash) {
    if (s->reason_index.cap == 0) return NULL;
    const Index *ix = &s->reason_index;
    for (size_t at = (size_t)hash & (ix->cap - 1); ix->slots[at]; at = (at + 1) & (ix->cap - 1)) {
        Reason *r = &s->reasons[ix->slots[at] - 1];
        if (r->hash == hash && r->malformed == skip->malformed && strcmp(r->reason, skip->reason) == 0) return r;
    }
    return NULL;
}

static int note_skip(FrameStats *s, int64_t frame, const Skip *skip) {
    Reason *found = s->n_reasons ? &s->reasons[s->last_reason] : NULL;  /* often: the same as last time */
    uint64_t hash = 0;
    if (found == NULL || found->malformed != skip->malformed || strcmp(found->reason, skip->reason) != 0) {
        hash = hash_reason(skip->reason, skip->malformed);
        found = find_reason(s, skip, hash);
    }
    if (found != NULL) {
        found->count++;
        s->last_reason = (size_t)(found - s->reasons);
        return skip->malformed ? note_problem(s, frame, skip->reason) : 0;
    }
    if (index_room(&s->reason_index, s->n_reasons, s->reasons, sizeof *s->reasons)) return -1;
    if (s->n_reasons == s->cap_reasons) {
        Reason *more = grown(s->reasons, &s->cap_reasons, sizeof *more, 16);
        if (more == NULL) return -1;
        s->reasons = more;
    }
    char *copy = strdup(skip->reason);
    if (copy == NULL) return -1;
    s->reason_index.slots[index_empty_from(&s->reason_index, hash)] = (uint32_t)(s->n_reasons + 1);
    s->last_reason = s->n_reasons;
    s->reasons[s->n_reasons++] = (Reason){hash, copy, skip->malformed, 1};
    return skip->malformed ? note_problem(s, frame, skip->reason) : 0;
}

/* Every damaged spot is counted; the first few are kept, by frame, as pipeline.Stats keeps them. */
static int note_damage(FrameStats *s, const Reader *r) {
    s->damaged++;
    if (s->n_damage < NAMED_PROBLEMS) {
        char *copy = strdup(r->message);
        if (copy == NULL) return -1;
        s->damage[s->n_damage++] = (Problem){r->damage_frame, copy};
    }
    return note_problem(s, r->damage_frame, r->message);
}

static LinkCount *find_link(const FrameStats *s, uint32_t linktype, uint64_t hash) {
    if (s->link_index.cap == 0) return NULL;
    const Index *ix = &s->link_index;
    for (size_t at = (size_t)hash & (ix->cap - 1); ix->slots[at]; at = (at + 1) & (ix->cap - 1)) {
        LinkCount *link = &s->links[ix->slots[at] - 1];
        if (link->linktype == linktype) return link;
    }
    return NULL;
}

static int count_link(FrameStats *s, uint32_t linktype) {
    if (s->n_links && s->links[s->last_link].linktype == linktype) {  /* nearly always: one link type */
        s->links[s->last_link].count++;
        return 0;
    }
    uint64_t hash = hash_link(linktype);
    LinkCount *found = find_link(s, linktype, hash);
    if (found != NULL) {
        found->count++;
        s->last_link = (size_t)(found - s->links);
        return 0;
    }
    if (index_room(&s->link_index, s->n_links, s->links, sizeof *s->links)) return -1;
    if (s->n_links == s->cap_links) {
        LinkCount *more = grown(s->links, &s->cap_links, sizeof *more, 4);
        if (more == NULL) return -1;
        s->links = more;
    }
    s->link_index.slots[index_empty_from(&s->link_index, hash)] = (uint32_t)(s->n_links + 1);
    s->links[s->n_links] = (LinkCount){hash, linktype, 1};
    s->last_link = s->n_links++;
    return 0;
}

/* keep_raw: the frame of the packet just decoded, as batch->raw->refs[batch->count]; -1: out of memory. */
static int keep_frame(RawFrames *raw, size_t index, const Frame *frame) {
    size_t need = frame->caplen;
    if (need > SIZE_MAX - raw->len) return -1;
    while (raw->len + need > raw->cap) {
        uint8_t *more = grown(raw->data, &raw->cap, 1, RAW_BATCH_BYTES);
        if (more == NULL) return -1;
        raw->data = more;
    }
    if (need) memcpy(raw->data + raw->len, frame->data, need);
    raw->refs[index] = (RawRef){raw->len, frame->caplen, frame->wire_len, frame->linktype};
    raw->len += need;
    return 0;
}

/* Whether the batch has room for another packet: BATCH_PACKETS, and with keep_raw, RAW_BATCH_BYTES. */
static inline int batch_room(const Batch *batch) {
    return batch->count < BATCH_PACKETS && (batch->raw == NULL || batch->raw->len < RAW_BATCH_BYTES);
}

static void read_batch(Feeder *f, Batch *batch);

/* Keep the tunnel text of a batch's packet p, and count its kinds; nonzero: out of memory. */
static int keep_tunnel(Feeder *f, Batch *batch, Packet *p) {
    FrameStats *s = &f->stats;
    s->tunnelled++;
    for (int k = 0; k < N_TUNNEL_KINDS; k++) s->tunnels[k] += (p->kinds >> k) & 1;
    size_t n = strlen(p->tunnel) + 1;  /* under TUNNEL_TEXT_MAX */
    while (batch->texts_cap - batch->texts_len < n) {
        char *more = grown(batch->texts, &batch->texts_cap, 1, 4096);
        if (more == NULL) return -1;
        batch->texts = more;
    }
    memcpy(batch->texts + batch->texts_len, p->tunnel, n);
    batch->texts_len += n;
    p->tunnel_at = (uint32_t)(batch->texts_len - n + 1);  /* texts stay under BATCH_PACKETS * TUNNEL_TEXT_MAX */
    return 0;
}

/* The batch is full: its packets' texts stay where they are now, until the batch is refilled. */
static void point_at_texts(Batch *batch) {
    if (batch->texts_len == 0) return;
    for (size_t i = 0; i < batch->count; i++) {
        Packet *p = &batch->packets[i];
        if (p->tunnel_at) p->tunnel = batch->texts + p->tunnel_at - 1;
    }
}

/* Fill `batch` with up to BATCH_PACKETS decoded packets; mark how reading ended, if it did. */
static void fill_batch(Feeder *f, Batch *batch) {
    batch->texts_len = 0;
    read_batch(f, batch);
    point_at_texts(batch);
}

static void read_batch(Feeder *f, Batch *batch) {
    Frame frame;
    Skip skip;
    batch->count = 0;
    batch->last = 0;
    if (batch->raw != NULL) batch->raw->len = 0;
    while (batch_room(batch)) {
        int status = reader_next(&f->reader, &frame);
        if (status == READ_DAMAGE) {
            if (note_damage(&f->stats, &f->reader) == 0) continue;
            status = READ_FAILED;
        }
        if (status != READ_FRAME) {
            if (status == READ_ERROR) memcpy(f->message, f->reader.message, sizeof f->message);
            batch->last = status;
            return;
        }
        f->stats.last_number = frame.number;
        if (f->filter != NULL) {
            int match = filter_match(f->filter, &frame);
            if (match < 0) {
                batch->last = READ_FAILED;
                return;
            }
            if (match == 0) {
                f->stats.unmatched++;
                continue;
            }
        }
        f->stats.frames++;
        if (count_link(&f->stats, frame.linktype)) {
            batch->last = READ_FAILED;
            return;
        }
        Packet *p = &batch->packets[batch->count];
        if (decode_frame(&frame, p, &skip, f->text)) {
            if (note_skip(&f->stats, frame.number, &skip)) {
                batch->last = READ_FAILED;
                return;
            }
            continue;
        }
        if (batch->raw != NULL && keep_frame(batch->raw, batch->count, &frame)) {
            batch->last = READ_FAILED;
            return;
        }
        f->stats.segments++;
        p->tunnel_at = 0;
        if (p->tunnel != NULL && keep_tunnel(f, batch, p)) {
            batch->last = READ_FAILED;
            return;
        }
        packet_key(p);
        batch->count++;
    }
}

/* One frame from a live capture (live.c), already filtered by the kernel: counted as read_batch counts it,
 * and decoded into p, its key made. 1: p is a segment to track (its tunnel text, if any, in f->text until the
 * next frame); 0: not a segment (counted); -1: out of memory. */
int feeder_frame(Feeder *f, const Frame *frame, Packet *p) {
    Skip skip;
    FrameStats *s = &f->stats;
    s->last_number = frame->number;
    s->frames++;
    if (count_link(s, frame->linktype)) return -1;
    if (decode_frame(frame, p, &skip, f->text)) return note_skip(s, frame->number, &skip) ? -1 : 0;
    s->segments++;
    p->tunnel_at = 0;
    if (p->tunnel != NULL) {
        s->tunnelled++;
        for (int k = 0; k < N_TUNNEL_KINDS; k++) s->tunnels[k] += (p->kinds >> k) & 1;
    }
    packet_key(p);
    return 1;
}

/* ---- the reading thread --------------------------------------------------------------- */

static long read_fd(void *ctx, uint8_t *dst, size_t n) {
    Feeder *f = ctx;
    for (;;) {
        ssize_t got = read(f->reader.fd, dst, n);
        if (got < 0 && errno == EINTR) continue;
        if (got < 0) {
            f->reader.fd_errno = errno;
            return -1;
        }
        __atomic_add_fetch(&f->bytes, got, __ATOMIC_RELAXED);
        return (long)got;
    }
}

static void *reader_main(void *arg) {
    Feeder *f = arg;
    name_this_thread("synfin-reader");
    for (;;) {
        pthread_mutex_lock(&f->lock);
        while (f->count == BATCHES && !f->stop) pthread_cond_wait(&f->drained, &f->lock);
        if (f->stop) {
            pthread_mutex_unlock(&f->lock);
            return NULL;
        }
        Batch *batch = &f->ring[(f->head + f->count) % BATCHES];
        pthread_mutex_unlock(&f->lock);
        fill_batch(f, batch);  /* the slot is ours until it is counted in */
        pthread_mutex_lock(&f->lock);
        f->count++;
        pthread_cond_signal(&f->filled);
        pthread_mutex_unlock(&f->lock);
        if (batch->last) return NULL;
    }
}

/* ---- the public face ---------------------------------------------------------------------- */

/* keep_raw: an arena for each batch (freed by feeder_close); -1: out of memory. */
static int give_raw(Feeder *f, Batch *batches, size_t n) {
    for (size_t i = 0; i < n; i++) {
        batches[i].raw = f->keep_raw ? calloc(1, sizeof *batches[i].raw) : NULL;
        if (f->keep_raw && batches[i].raw == NULL) return -1;
    }
    return 0;
}

static int open_feeder(Feeder *f, int fd, const int *more, size_t n_more, FillFn fill, void *fill_ctx,
                       Filter *filter, int keep_raw, int64_t base) {
    memset(f, 0, sizeof *f);
    f->filter = filter;
    f->keep_raw = keep_raw;
    f->reader.fd = fd;
    f->reader.read_size = fd >= 0 ? 0 : PYTHON_BLOCK;
    int status = fd >= 0 ? reader_open(&f->reader, read_fd, f) : reader_open(&f->reader, fill, fill_ctx);
    if (status == READ_ERROR) memcpy(f->message, f->reader.message, sizeof f->message);
    if (status != READ_FRAME) return status;
    f->reader.number = base < 0 ? 0 : base;
    if (base >= 0 && reader_chain(&f->reader, NULL, 0)) return READ_FAILED;  /* a part: its last frame time */
    if (n_more && (fd < 0 || reader_chain(&f->reader, more, n_more))) return READ_FAILED;
    if (fd < 0) {
        f->inline_batch = calloc(1, sizeof *f->inline_batch);
        return f->inline_batch && give_raw(f, f->inline_batch, 1) == 0 ? READ_FRAME : READ_FAILED;
    }
    f->ring = calloc(BATCHES, sizeof *f->ring);
    if (f->ring == NULL || give_raw(f, f->ring, BATCHES)) return READ_FAILED;
    pthread_mutex_init(&f->lock, NULL);
    pthread_cond_init(&f->filled, NULL);
    pthread_cond_init(&f->drained, NULL);
    if (pthread_create(&f->thread, NULL, reader_main, f)) return READ_FAILED;
    f->threaded = 1;
    return READ_FRAME;
}

int feeder_open(Feeder *f, int fd, FillFn fill, void *fill_ctx, Filter *filter) {
    return open_feeder(f, fd, NULL, 0, fill, fill_ctx, filter, 0, -1);
}

/* A rotated set: `fd`, then the `n_more` files on `more` (kept by the caller until feeder_close), as one. */
int feeder_open_set(Feeder *f, int fd, const int *more, size_t n_more, Filter *filter) {
    return open_feeder(f, fd, more, n_more, NULL, NULL, filter, 0, -1);
}

int feeder_open_raw(Feeder *f, int fd, const int *more, size_t n_more, FillFn fill, void *fill_ctx,
                    Filter *filter) {
    return open_feeder(f, fd, more, n_more, fill, fill_ctx, filter, 1, -1);
}

/* One file of a rotated set read on its own (parts.c, parallel.py): its frames numbered after `base`. */
int feeder_open_part(Feeder *f, int fd, Filter *filter, int keep_raw, int64_t base) {
    return open_feeder(f, fd, NULL, 0, NULL, NULL, filter, keep_raw, base);
}

Batch *feeder_next(Feeder *f) {
    if (!f->threaded) {
        fill_batch(f, f->inline_batch);
        return f->inline_batch;
    }
    pthread_mutex_lock(&f->lock);
    while (f->count == 0) pthread_cond_wait(&f->filled, &f->lock);
    Batch *batch = &f->ring[f->head];
    pthread_mutex_unlock(&f->lock);
    return batch;
}

void feeder_done(Feeder *f) {
    if (!f->threaded) return;
    pthread_mutex_lock(&f->lock);
    f->head = (f->head + 1) % BATCHES;
    f->count--;
    pthread_cond_signal(&f->drained);
    pthread_mutex_unlock(&f->lock);
}

void feeder_stop(Feeder *f) {
    if (f->threaded) {
        pthread_mutex_lock(&f->lock);
        f->stop = 1;
        pthread_cond_signal(&f->drained);
        pthread_mutex_unlock(&f->lock);
        pthread_join(f->thread, NULL);
        pthread_mutex_destroy(&f->lock);
        pthread_cond_destroy(&f->filled);
        pthread_cond_destroy(&f->drained);
        f->threaded = 0;
    }
}

static void free_raw(RawFrames *raw) {
    if (raw != NULL) free(raw->data);
    free(raw);
}

void feeder_close(Feeder *f) {
    feeder_stop(f);
    FrameStats *s = &f->stats;
    for (size_t i = 0; i < s->n_reasons; i++) free(s->reasons[i].reason);
    for (size_t i = 0; i < s->n_problems; i++) free(s->problems[i].what);
    for (size_t i = 0; i < s->n_damage; i++) free(s->damage[i].what);
    free(s->reasons);
    free(s->reason_index.slots);
    free(s->links);
    free(s->link_index.slots);
    for (size_t i = 0; f->ring != NULL && i < BATCHES; i++) free_raw(f->ring[i].raw);
    if (f->inline_batch != NULL) free_raw(f->inline_batch->raw);
    for (size_t i = 0; f->ring != NULL && i < BATCHES; i++) free(f->ring[i].texts);
    if (f->inline_batch != NULL) free(f->inline_batch->texts);
    free(f->ring);
    free(f->inline_batch);
    reader_close(&f->reader);
}
