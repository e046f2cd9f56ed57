/* The ladder's source: the frames of a few connections, found at the engine's speed.
 *
 * `synfin ladder BIG --conn N` draws one connection of a capture that may hold
 * millions of frames. The reference pipeline (pipeline.py, with keep_segments)
 * lays the ladder out, and it needs every frame of connection N; running it
 * over the whole file takes minutes. So the engine reads the capture as
 * `synfin analyze` does (feeder.c, tracker.c: the same ids, the same filter),
 * with each packet's frame as captured kept in its batch (feeder_open_raw).
 * A packet that goes to a wanted connection has its frame copied out, as a
 * Python tuple (number, ts, linktype, data, wire_len, now): capture.RawFrame's
 * fields, and the tracker's packet time before it (later than the frame's
 * own when time went backwards in the capture: the replay ticks to it
 * first, so that the timers have run as far as they had here). When a wanted connection finishes, the time it finished at is kept,
 * and so is the frame being tracked then if it is another connection's (a
 * bare SYN reusing the 4-tuple, or any later frame whose time ran the timers
 * out): replayed after the connection's own frames, it finishes the
 * connection in the reference tracker exactly as it did here. Once every
 * wanted connection has finished, reading stops (the reading thread is
 * stopped, feeder_stop): a connection at the start of a big capture costs
 * the start of the capture.
 *
 * Nothing is written: finished connections only give their memory back
 * (the Sink is the connections' allocator here, never started). Memory is
 * the open connections, a few batches, and the wanted connections' frames.
 */
#include <errno.h>
#include <string.h>

#include "collect.h"
#include "feeder.h"
#include "sink.h"

typedef struct {
    int64_t id;
    PyObject *frames;    /* list of frame tuples */
    PyObject *finisher;  /* the frame it finished during, if another connection's; NULL: none */
    double finished_at;
    int finished;
} Wanted;

typedef struct {
    Sink sink;           /* the connections' memory */
    Wanted *wanted;      /* by id */
    size_t n_wanted, n_finished;
    size_t *just;        /* wanted connections finished during the current packet */
    size_t n_just;
} Collect;

static Wanted *find(const Collect *col, int64_t id) {
    size_t low = 0, high = col->n_wanted;
    while (low < high) {
        size_t mid = low + (high - low) / 2;
        if (col->wanted[mid].id < id) low = mid + 1;
        else high = mid;
    }
    return low < col->n_wanted && col->wanted[low].id == id ? &col->wanted[low] : NULL;
}

/* A FinishedFn: note a wanted connection's finish; give every connection's memory back. */
static int on_finished(void *ctx, Conn *c) {
    Collect *col = ctx;
    Wanted *w = find(col, c->id);
    if (w != NULL && !w->finished) {
        w->finished = 1;
        w->finished_at = c->finished_at;
        col->just[col->n_just++] = (size_t)(w - col->wanted);  /* each finishes once: n_just <= n_wanted */
        col->n_finished++;
    }
    sink_recycle(&col->sink, c);
    return 0;
}

static Conn *new_conn(void *ctx) { return sink_new_conn(&((Collect *)ctx)->sink); }

/* (number, ts, linktype, data, wire_len, now): the frame, and the tracker's packet time before it. */
static PyObject *frame_tuple(const Packet *p, const RawFrames *raw, size_t i, double now) {
    const RawRef *ref = &raw->refs[i];
    return Py_BuildValue("(LdIy#Id)", (long long)p->frame, p->ts, (unsigned int)ref->linktype,
                         (const char *)raw->data + ref->offset, (Py_ssize_t)ref->caplen,
                         (unsigned int)ref->wire_len, now);
}

/* Packet i of the batch, tracked; its frame kept if it is a wanted connection's, or finished one. */
static int take(Collect *col, Tracker *t, const Batch *batch, size_t i) {
    const Packet *p = &batch->packets[i];
    col->n_just = 0;
    double now = t->now;
    if (tracker_add(t, p)) return -1;
    Wanted *w = find(col, t->last_id);
    PyObject *frame = NULL;
    if (w != NULL || col->n_just) {
        frame = frame_tuple(p, batch->raw, i, now);
        if (frame == NULL) return -1;
    }
    int status = w != NULL ? PyList_Append(w->frames, frame) : 0;
    for (size_t k = 0; status == 0 && k < col->n_just; k++) {
        Wanted *done = &col->wanted[col->just[k]];
        if (done->id != t->last_id) {
            Py_XDECREF(done->finisher);
            done->finisher = Py_NewRef(frame);
        }
    }
    Py_XDECREF(frame);
    return status;
}

/* Batches in until the wanted connections have finished (stop_early) or the capture ends. */
static int pump(Collect *col, Feeder *feeder, Tracker *t, int stop_early, int *ended, int *stopped) {
    for (int64_t batches = 1;; batches++) {
        Batch *batch = feeder_next(feeder);
        if (batch == NULL) return -1;
        for (size_t i = 0; i < batch->count && !*stopped; i++) {
            if (take(col, t, batch, i)) {
                feeder_done(feeder);
                return -1;
            }
            *stopped = stop_early && col->n_finished == col->n_wanted;
        }
        *ended = batch->last;
        feeder_done(feeder);
        if (*stopped || *ended) break;
        if ((batches & 63) == 0 && PyErr_CheckSignals()) return -1;
    }
    if (*stopped) return 0;
    if (*ended == READ_FAILED) {
        if (feeder->reader.fd_errno) {
            errno = feeder->reader.fd_errno;
            PyErr_SetFromErrno(PyExc_OSError);
        }
        return -1;
    }
    return *ended == READ_ERROR ? 0 : tracker_flush(t);
}

static int set_item(PyObject *dict, int64_t id, PyObject *value) {
    PyObject *key = PyLong_FromLongLong(id);
    int status = key == NULL || value == NULL ? -1 : PyDict_SetItem(dict, key, value);
    Py_XDECREF(key);
    Py_XDECREF(value);
    return status;
}

static PyObject *result(const Collect *col, const Feeder *feeder, const Tracker *t, int stopped, int ended) {
    PyObject *frames = PyDict_New(), *finished = PyDict_New();
    int status = frames == NULL || finished == NULL ? -1 : 0;
    for (size_t i = 0; status == 0 && i < col->n_wanted; i++) {
        const Wanted *w = &col->wanted[i];
        if (w->id >= t->next_id) continue;  /* never made */
        status = set_item(frames, w->id, Py_NewRef(w->frames));
        if (status == 0 && w->finished)
            status = set_item(finished, w->id, Py_BuildValue("(dO)", w->finished_at,
                                                             w->finisher ? w->finisher : Py_None));
    }
    PyObject *out = NULL;
    if (status == 0)
        out = Py_BuildValue("{s:O,s:O,s:L,s:L,s:O,s:z,s:n}", "frames", frames, "finished", finished, "connections",
                            (long long)t->next_id, "frames_read", (long long)feeder->stats.frames, "stopped",
                            stopped ? Py_True : Py_False, "error", ended == READ_ERROR ? feeder->message : NULL,
                            "file", (Py_ssize_t)feeder->reader.file);
    Py_XDECREF(frames);
    Py_XDECREF(finished);
    return out;
}

static int collect_init(Collect *col, const int64_t *ids, size_t n) {
    memset(col, 0, sizeof *col);
    col->sink.fd = -1;
    col->wanted = calloc(n ? n : 1, sizeof *col->wanted);
    col->just = calloc(n ? n : 1, sizeof *col->just);
    if (col->wanted == NULL || col->just == NULL) return -1;
    for (size_t i = 0; i < n; i++) {
        col->wanted[i].id = ids[i];
        col->wanted[i].frames = PyList_New(0);
        col->n_wanted = i + 1;
        if (col->wanted[i].frames == NULL) return -1;
    }
    return 0;
}

static void collect_free(Collect *col) {
    for (size_t i = 0; col->wanted != NULL && i < col->n_wanted; i++) {
        Py_XDECREF(col->wanted[i].frames);
        Py_XDECREF(col->wanted[i].finisher);
    }
    free(col->wanted);
    free(col->just);
    sink_free(&col->sink);
}

PyObject *collect_frames(PyObject *readinto, int fd_in, const int *more, size_t n_more, const Timeouts *timeouts,
                         const int64_t *ids, size_t n, int stop_early, Filter *filter) {
    Collect col;
    Feeder feeder;
    Tracker tracker;
    PyObject *out = NULL;
    int tracker_ready = 0, ended = 0, stopped = 0, status = -1;
    if (collect_init(&col, ids, n)) {
        collect_free(&col);
        return PyErr_Occurred() ? NULL : PyErr_NoMemory();
    }
    int opened = feeder_open_raw(&feeder, fd_in, more, n_more, python_fill, readinto, filter);
    if (opened == READ_ERROR) {
        ended = READ_ERROR;
        status = 0;
    } else if (opened == READ_FRAME) {
        status = tracker_init(&tracker, timeouts, on_finished, new_conn, &col);
        tracker_ready = status == 0;
        if (status == 0) status = pump(&col, &feeder, &tracker, stop_early, &ended, &stopped);
    }
    feeder_stop(&feeder);  /* first: it may still be reading (stopped early) */
    if (status == 0) {
        Tracker none = {0};
        out = result(&col, &feeder, tracker_ready ? &tracker : &none, stopped, ended);
    } else if (!PyErr_Occurred()) {
        PyErr_NoMemory();
    }
    if (tracker_ready) tracker_free(&tracker);  /* before the sink: the open connections' memory is its */
    feeder_close(&feeder);
    collect_free(&col);
    return out;
}
