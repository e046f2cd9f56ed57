/* feeder.c: capture file -> batches of decoded packets, and the frame counts. */
#ifndef SYNFIN_FEEDER_H
#define SYNFIN_FEEDER_H

#include <pthread.h>

#include "reader.h"

#define NAMED_PROBLEMS 5   /* pipeline.NAMED_PROBLEMS */
#define BATCH_PACKETS 4096
#define BATCHES 4

typedef struct {
    char *reason;
    int malformed;
    int64_t count;
} Reason;

typedef struct {
    int64_t frame;
    char *what;
} Problem;

typedef struct {  /* what pipeline.Stats counts */
    int64_t frames, segments;
    Reason *reasons;
    size_t n_reasons, cap_reasons;
    Problem problems[NAMED_PROBLEMS];  /* the first bad frames, malformed or damaged */
    size_t n_problems;
    Problem *damage;
    size_t n_damage, cap_damage;
    struct { uint32_t linktype; int64_t count; } links[32];
    size_t n_links;
} FrameStats;

typedef struct {
    Packet packets[BATCH_PACKETS];
    size_t count;
    int last;                /* 0, or how reading ended: READ_END, READ_ERROR, READ_FAILED */
} Batch;

typedef struct {
    Reader reader;
    FrameStats stats;
    char message[160];       /* READ_ERROR: why the file cannot be read */
    int threaded, stop, finished;
    /* with a thread: a ring of batches, filled by the thread, drained by the caller */
    pthread_t thread;
    pthread_mutex_t lock;
    pthread_cond_t filled, drained;
    Batch *ring;
    size_t head, count;
    Batch *inline_batch;
    int64_t bytes;           /* read so far, for progress */
} Feeder;

/* Start reading. With `fd` >= 0 a thread reads it with read(2); otherwise
 * batches are read on demand through `fill`. READ_FRAME, READ_ERROR or READ_FAILED. */
int feeder_open(Feeder *f, int fd, FillFn fill, void *fill_ctx);
Batch *feeder_next(Feeder *f);   /* the next batch (NULL: out of memory) */
void feeder_done(Feeder *f);     /* the caller is through with the batch feeder_next gave */
void feeder_stop(Feeder *f);     /* stop the thread (its counts stay) */
void feeder_close(Feeder *f);    /* stop the thread, free everything */

#endif
