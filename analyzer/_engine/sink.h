/* sink.c: finished connections -> census and output text, inline or on a second thread. */
#ifndef SYNFIN_SINK_H
#define SYNFIN_SINK_H

#include <pthread.h>

#include "engine.h"
#include "where.h"

typedef struct {
    int64_t connections;   /* every connection finished, matched by --where or not */
    int64_t open[6], close[7], closer[4];  /* closer: client, server, both, none */
    int64_t final[2][N_STATES];
    int64_t half_close, anomalies;
    int64_t matched;       /* connections that passed --where (all of them without one): the counts above */
    int64_t retransmits[3];  /* SYN, SYN-ACK, FIN segments sent again */
} Census;

/* Per server endpoint ("ip:port", as output.c names it), for the summary (report.Census.endpoints): the
 * counts of EP_COUNT_NAMES (module.c). Open addressing; grows with the endpoints seen. */
enum { EP_CONNECTIONS, EP_HANDSHAKES, EP_CLOSED, EP_RESET, EP_REFUSED, EP_FINALS, EP_N = EP_FINALS + 6 };
#define EP_FINAL_STATES 3  /* TIME_WAIT, CLOSE_WAIT, FIN_WAIT_2: client's, then server's */
typedef struct {
    char name[64];
    uint8_t len;           /* 0: a free slot */
    int64_t n[EP_N];
} EndpointCount;
typedef struct {
    EndpointCount *slots;
    size_t cap, used;
} EndpointTable;
int endpoint_add(EndpointTable *t, const char *name, size_t len, const int64_t *n);  /* 0, or -1: no memory */

typedef int (*WriteFn)(void *ctx, const char *data, size_t len);  /* nonzero: failed */

typedef struct {  /* one thread's output: text not yet written, and what it counted */
    Buffer out;
    Census census;
    EndpointTable endpoints;
    Buffer name;           /* scratch: the server endpoint's name */
} Share;

typedef struct {
    OutputStyle style;
    const Where *where;    /* --where: only the connections it matches are counted and written; NULL: all */
    int fd;                /* >= 0: write here from a second thread; < 0: call `write` inline */
    WriteFn write;
    void *write_ctx;
    Share own;             /* the writer's (or, inline, the only) share */
    Share helper;          /* the tracker's, from units it formats when the queue is full */
    Census census;         /* both shares' counts, after sink_finish */
    EndpointTable endpoints;  /* both shares' endpoints, after sink_finish */
    int64_t helped;        /* connections the tracker's thread formatted */
    int error;             /* an errno from writing, or -1 */
    /* the second thread's queue */
    int threaded, closing;
    pthread_t thread;
    pthread_mutex_t lock;
    pthread_cond_t not_empty, turn;
    uint64_t units_taken;  /* units are taken in order, formatted by either thread, written in order */
    uint64_t next_write;   /* the unit whose text may be written now */
    Conn **ring;
    size_t head, count;
    Conn **pending;        /* a batch collected before taking the lock */
    size_t pending_len;
    /* connections to reuse: the writer returns them (under the lock), the tracker takes them */
    Conn *returned, *spare;
    /* where connections live (sink.c: slabs) */
    void **slabs;
    size_t n_slabs, cap_slabs, slab_left;
    char *slab_next;
    char *ready_slab;      /* the next slab, its pages already faulted in by the writer (under the lock) */
    int slab_wanted;       /* the tracker took the ready one: the writer makes another (under the lock) */
} Sink;

int sink_start(Sink *sink);
int sink_take(void *sink, Conn *c);   /* a FinishedFn: takes ownership of c */
Conn *sink_new_conn(void *sink);      /* a NewConnFn: a reused connection, or a new one */
void sink_recycle(Sink *sink, Conn *c);  /* an unstarted sink (collect.c): c's memory, to reuse, unwritten */
/* sink_free frees every connection's memory: the tracker must be freed first */
int sink_finish(Sink *sink);          /* drain and stop; 0, an errno, or -1 */
int sink_drain(Sink *sink);           /* inline only: write out what is formatted so far; 0, an errno, or -1 */
void sink_free(Sink *sink);

#endif
