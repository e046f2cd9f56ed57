/* From the capture file to batches of decoded packets: reader.c and decode.c, driven.
 *
 * Reading and decoding are a sixth of the work. When the capture is a plain
 * file they run on a thread of their own, a few batches ahead of the tracker
 * (which keeps the state machines on the caller's thread); memory stays at
 * BATCHES batches. A gzip capture is read through Python on the caller's
 * thread instead, one batch at a time. The counts of pipeline.Stats (frames,
 * segments, skip reasons, bad frames, link types) are kept here.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "feeder.h"

#define PYTHON_BLOCK (1u << 20)  /* capture.BLOCK */

/* ---- counting --------------------------------------------------------------------- */

static int note_problem(FrameStats *s, int64_t frame, const char *what) {
    if (s->n_problems == NAMED_PROBLEMS) return 0;
    char *copy = strdup(what);
    if (copy == NULL) return -1;
    s->problems[s->n_problems++] = (Problem){frame, copy};
    return 0;
}

static int note_skip(FrameStats *s, int64_t frame, const Skip *skip) {
    for (size_t i = 0; i < s->n_reasons; i++) {
        Reason *r = &s->reasons[i];
        if (r->malformed == skip->malformed && strcmp(r->reason, skip->reason) == 0) {
            r->count++;
            return skip->malformed ? note_problem(s, frame, skip->reason) : 0;
        }
    }
    if (s->n_reasons == s->cap_reasons) {
        Reason *more = grown(s->reasons, &s->cap_reasons, sizeof *more, 16);
        if (more == NULL) return -1;
        s->reasons = more;
    }
    char *copy = strdup(skip->reason);
    if (copy == NULL) return -1;
    s->reasons[s->n_reasons++] = (Reason){copy, skip->malformed, 1};
    return skip->malformed ? note_problem(s, frame, skip->reason) : 0;
}

static int note_damage(FrameStats *s, const Reader *r) {
    if (s->n_damage == s->cap_damage) {
        Problem *more = grown(s->damage, &s->cap_damage, sizeof *more, 8);
        if (more == NULL) return -1;
        s->damage = more;
    }
    char *copy = strdup(r->message);
    if (copy == NULL) return -1;
    s->damage[s->n_damage++] = (Problem){r->damage_frame, copy};
    return note_problem(s, r->damage_frame, r->message);
}

static void count_link(FrameStats *s, uint32_t linktype) {
    for (size_t i = 0; i < s->n_links; i++) {
        if (s->links[i].linktype == linktype) {
            s->links[i].count++;
            return;
        }
    }
    if (s->n_links < sizeof s->links / sizeof s->links[0]) {
        s->links[s->n_links].linktype = linktype;
        s->links[s->n_links++].count = 1;
    }
}

/* Fill `batch` with up to BATCH_PACKETS decoded packets; mark how reading ended, if it did. */
static void fill_batch(Feeder *f, Batch *batch) {
    Frame frame;
    Skip skip;
    batch->count = 0;
    batch->last = 0;
    while (batch->count < BATCH_PACKETS) {
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
        f->stats.frames++;
        count_link(&f->stats, frame.linktype);
        Packet *p = &batch->packets[batch->count];
        if (decode_frame(&frame, p, &skip)) {
            if (note_skip(&f->stats, frame.number, &skip)) {
                batch->last = READ_FAILED;
                return;
            }
            continue;
        }
        f->stats.segments++;
        packet_key(p);
        batch->count++;
    }
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

int feeder_open(Feeder *f, int fd, FillFn fill, void *fill_ctx) {
    memset(f, 0, sizeof *f);
    f->reader.fd = fd;
    f->reader.read_size = fd >= 0 ? 0 : PYTHON_BLOCK;
    int status = fd >= 0 ? reader_open(&f->reader, read_fd, f) : reader_open(&f->reader, fill, fill_ctx);
    if (status == READ_ERROR) memcpy(f->message, f->reader.message, sizeof f->message);
    if (status != READ_FRAME) return status;
    if (fd < 0) {
        f->inline_batch = malloc(sizeof *f->inline_batch);
        return f->inline_batch ? READ_FRAME : READ_FAILED;
    }
    f->ring = malloc(BATCHES * sizeof *f->ring);
    if (f->ring == NULL) return READ_FAILED;
    pthread_mutex_init(&f->lock, NULL);
    pthread_cond_init(&f->filled, NULL);
    pthread_cond_init(&f->drained, NULL);
    if (pthread_create(&f->thread, NULL, reader_main, f)) return READ_FAILED;
    f->threaded = 1;
    return READ_FRAME;
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

void feeder_close(Feeder *f) {
    feeder_stop(f);
    FrameStats *s = &f->stats;
    for (size_t i = 0; i < s->n_reasons; i++) free(s->reasons[i].reason);
    for (size_t i = 0; i < s->n_problems; i++) free(s->problems[i].what);
    for (size_t i = 0; i < s->n_damage; i++) free(s->damage[i].what);
    free(s->reasons);
    free(s->damage);
    free(f->ring);
    free(f->inline_batch);
    reader_close(&f->reader);
}
