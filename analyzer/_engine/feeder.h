/* feeder.c: capture file -> batches of decoded packets, and the frame counts. */
#ifndef SYNFIN_FEEDER_H
#define SYNFIN_FEEDER_H

#include <pthread.h>

#include "filter.h"
#include "reader.h"

#define NAMED_PROBLEMS 5   /* pipeline.NAMED_PROBLEMS */
#define BATCH_PACKETS 4096
#define BATCHES 4

/* Reasons and link types are counted through an Index (feeder.c): an open-addressing
 * table of item numbers, so a capture with 65,000 distinct link types costs a probe or
 * two per frame, not a scan. Each item starts with its hash, for rehashing. */
typedef struct {
    uint32_t *slots;   /* item index + 1; 0: empty */
    size_t cap;        /* 0 or a power of two, at least twice the items */
} Index;

typedef struct {
    uint64_t hash;
    char *reason;
    int malformed;
    int64_t count;
} Reason;

typedef struct {
    uint64_t hash;
    uint32_t linktype;
    int64_t count;
} LinkCount;

typedef struct {
    int64_t frame;
    char *what;
} Problem;

typedef struct {  /* what pipeline.Stats counts */
    int64_t frames, segments;
    int64_t last_number;               /* the last whole frame's number (a gzip cut is numbered after it) */
    int64_t unmatched;                 /* frames the filter rejected (Stats.unmatched) */
    Reason *reasons;
    size_t n_reasons, cap_reasons, last_reason;
    Index reason_index;
    Problem problems[NAMED_PROBLEMS];  /* the first bad frames, malformed or damaged */
    size_t n_problems;
    Problem damage[NAMED_PROBLEMS];    /* the first damaged spots (pipeline.Stats.damage) ... */
    size_t n_damage;
    int64_t damaged;                   /* ... and how many there were (Stats.damaged) */
    LinkCount *links;
    size_t n_links, cap_links, last_link;
    Index link_index;
    int64_t tunnelled;                     /* segments through encapsulations (Stats.tunnelled) ... */
    int64_t tunnels[N_TUNNEL_KINDS];       /* ... through each kind (Stats.tunnels) */
} FrameStats;

/* With keep_raw (the ladder's collect.c): each packet's frame as captured, copied into a
 * batch's arena, so the caller can hand the frames of the connections it wants to Python.
 * A batch ends early once its arena holds RAW_BATCH_BYTES: memory stays at a few batches
 * whatever the frames' sizes. */
#define RAW_BATCH_BYTES (4u << 20)
typedef struct {
    size_t offset;           /* into RawFrames.data */
    uint32_t caplen, wire_len, linktype;
} RawRef;

typedef struct {
    RawRef refs[BATCH_PACKETS];
    uint8_t *data;
    size_t len, cap;
} RawFrames;

typedef struct {
    Packet packets[BATCH_PACKETS];
    size_t count;
    int last;                /* 0, or how reading ended: READ_END, READ_ERROR, READ_FAILED */
    RawFrames *raw;          /* keep_raw: packets[i]'s frame is raw->refs[i]; else NULL */
    char *texts;             /* the tunnel texts of its packets, one after another (NULL: none yet) */
    size_t texts_len, texts_cap;
} Batch;

typedef struct {
    Reader reader;
    Filter *filter;          /* NULL: every frame */
    FrameStats stats;
    char message[160];       /* READ_ERROR: why the file cannot be read */
    int threaded, stop, finished;
    int keep_raw;            /* copy every packet's frame into its batch (set before feeder_open's thread) */
    /* with a thread: a ring of batches, filled by the thread, drained by the caller */
    pthread_t thread;
    pthread_mutex_t lock;
    pthread_cond_t filled, drained;
    Batch *ring;
    size_t head, count;
    Batch *inline_batch;
    int64_t bytes;           /* read so far, for progress */
    char text[TUNNEL_TEXT_MAX];  /* a packet's tunnel text, from decode_frame until kept in its batch */
} Feeder;

/* Start reading. With `fd` >= 0 a thread reads it with read(2); otherwise
 * batches are read on demand through `fill`. Frames that `filter` (if not NULL) rejects
 * are only counted. READ_FRAME, READ_ERROR or READ_FAILED. */
int feeder_open(Feeder *f, int fd, FillFn fill, void *fill_ctx, Filter *filter);
int feeder_open_set(Feeder *f, int fd, const int *more, size_t n_more, Filter *filter);
/* The same, keeping each packet's frame as captured (Batch.raw). */
int feeder_open_raw(Feeder *f, int fd, const int *more, size_t n_more, FillFn fill, void *fill_ctx,
                    Filter *filter);
int feeder_frame(Feeder *f, const Frame *frame, Packet *p);  /* live.c: one frame, counted and decoded */
int feeder_open_part(Feeder *f, int fd, Filter *filter, int keep_raw, int64_t base);
Batch *feeder_next(Feeder *f);   /* the next batch (NULL: out of memory) */
void feeder_done(Feeder *f);     /* the caller is through with the batch feeder_next gave */
void feeder_stop(Feeder *f);     /* stop the thread (its counts stay) */
void feeder_close(Feeder *f);    /* stop the thread, free everything */

#endif
