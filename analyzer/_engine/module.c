/* The Python face of the compiled engine: analyzer._engine.
 *
 *   configure(step, send, receive, synchronized, state_names, event_names, linktype_names, mapped_dotted)
 *       hands over the state machine of fsm.py as tables (see analyzer/engine.py);
 *   run(readinto, fd_in, progress, write, fd_out, format, timeouts, capture, colour[, filter[, where]]) -> dict
 *       reads a whole capture (from file descriptor fd_in on a thread of its
 *       own, or, if fd_in is -1, through `readinto`), writes every finished
 *       connection to fd_out from another thread (or, if fd_out is -1,
 *       through `write` in ~1 MB pieces), and returns the counts that Stats
 *       and Census hold in the Python path. With `filter` (a BPF expression,
 *       str or None), only the frames it matches are analyzed (filter.c); with
 *       `where` (bytes: analyzer/where.py's Where.for_engine()), only the
 *       connections it matches are counted in the census and written (where.c);
 *   collect(readinto, fd_in, timeouts, ids, stop_early[, filter]) -> dict
 *       reads a capture as run() does, and returns the frames of the
 *       connections numbered `ids`, stopping once they have all finished if
 *       `stop_early` (collect.c: the ladder's source);
 *   live(iface, filter, snaplen, buffer_bytes, promiscuous, loopback, dump, events, fd_out, format, colour, timeouts,
 *        count, census, handler) -> dict
 *       captures from a live interface (live.c) until handler() asks it to stop, the count is reached or
 *       the interface is lost: see live_capture below;
 *   FILTERS: 1 if the engine was built with libpcap (filters, live capture), else 0.
 *
 * For both, fd_in may be a tuple of descriptors: a rotated set (analyzer/rotated.py), its files read one
 * after another as one capture, frame numbers going on (reader.c, reader_chain); run() then also returns
 * "last_ts", each file's last frame time (None: no frame), and both "file", the file reading ended in.
 *
 * run() holds the GIL only to call Python (readinto, write, progress) and between batches: the
 * tracking and formatting run without it, so the Python API (analyzer/records.py) runs the engine on a
 * thread of its own and reads its output (format 3, FORMAT_RECORDS) on the caller's thread meanwhile.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <string.h>

#include "collect.h"
#include "halfopen.h"
#include "handover.h"
#include "parts.h"
#include "engine.h"
#include "feeder.h"
#include "filter.h"
#include "live.h"
#include "sink.h"
#include "where.h"


static int configured;
static int running;  /* runs in progress (several, on threads): configure() must not replace their tables */

/* ---- configure ---------------------------------------------------------------- */

static int copy_names(PyObject *seq, size_t count, size_t width, char *out) {
    if (!PySequence_Check(seq) || (size_t)PySequence_Size(seq) != count) {
        PyErr_SetString(PyExc_ValueError, "wrong number of names");
        return -1;
    }
    for (size_t i = 0; i < count; i++) {
        PyObject *item = PySequence_GetItem(seq, (Py_ssize_t)i);
        const char *text = item ? PyUnicode_AsUTF8(item) : NULL;
        if (text == NULL || strlen(text) >= width) {
            Py_XDECREF(item);
            if (!PyErr_Occurred()) PyErr_SetString(PyExc_ValueError, "name too long");
            return -1;
        }
        strcpy(out + i * width, text);
        Py_DECREF(item);
    }
    return 0;
}

/* decode.LINKTYPE_NAMES into decode.c's table, which it replaces; a key that is not a
 * link type (an int from 0 to 2**32 - 1) or a name too long to report raises ValueError. */
static int copy_linktype_names(PyObject *linktypes) {
    clear_linktype_names();
    PyObject *key, *value;
    Py_ssize_t pos = 0;
    while (PyDict_Next(linktypes, &pos, &key, &value)) {
        unsigned long linktype = PyLong_Check(key) ? PyLong_AsUnsignedLong(key) : (unsigned long)-1;
        if ((linktype == (unsigned long)-1 && PyErr_Occurred()) || linktype > UINT32_MAX || !PyLong_Check(key)) {
            PyErr_Clear();
            PyErr_Format(PyExc_ValueError, "link type names: the key %R is not a link type (0 to 4294967295)", key);
            return -1;
        }
        const char *name = PyUnicode_AsUTF8(value);
        if (name == NULL) return -1;
        int status = set_linktype_name((uint32_t)linktype, name);
        if (status > 0)
            PyErr_Format(PyExc_ValueError, "link type %lu: the name %R is longer than %d bytes", linktype, value,
                         LINKTYPE_NAME_MAX);
        else if (status < 0)
            PyErr_NoMemory();
        if (status) return -1;
    }
    return 0;
}

static PyObject *configure(PyObject *self, PyObject *args) {
    Py_buffer step, send, receive;
    unsigned int synchronized;
    PyObject *states, *events, *linktypes;
    int mapped_dotted;
    if (!PyArg_ParseTuple(args, "y*y*y*IOOO!p", &step, &send, &receive, &synchronized, &states, &events,
                          &PyDict_Type, &linktypes, &mapped_dotted))
        return NULL;
    PyObject *result = NULL;
    if (running) {
        PyErr_SetString(PyExc_RuntimeError, "configure() while the engine is analyzing a capture");
        goto done;
    }
    configured = 0;  /* until the new tables are all in: a failed configure() leaves the engine refusing to run */
    if ((size_t)step.len != sizeof machine.step || (size_t)send.len != sizeof machine.send ||
        (size_t)receive.len != sizeof machine.receive) {
        PyErr_SetString(PyExc_ValueError, "tables of the wrong size");
        goto done;
    }
    memcpy(machine.step, step.buf, sizeof machine.step);
    memcpy(machine.send, send.buf, sizeof machine.send);
    memcpy(machine.receive, receive.buf, sizeof machine.receive);
    machine.synchronized = (uint16_t)synchronized;
    ipv4_mapped_dotted = mapped_dotted;
    if (copy_names(states, N_STATES, sizeof machine.state_names[0], &machine.state_names[0][0]) ||
        copy_names(events, N_EVENTS, sizeof machine.event_names[0], &machine.event_names[0][0]))
        goto done;
    for (int i = 0; i < N_STATES; i++) machine.state_name_lengths[i] = (uint8_t)strlen(machine.state_names[i]);
    if (copy_linktype_names(linktypes)) goto done;
    configured = 1;
    result = Py_NewRef(Py_None);
done:
    PyBuffer_Release(&step);
    PyBuffer_Release(&send);
    PyBuffer_Release(&receive);
    return result;
}

/* ---- one run ---------------------------------------------------------------------- */

typedef struct {
    PyObject *readinto, *progress, *write;
    Sink sink;
    Feeder feeder;
    Filter filter;
    int filtered;
    int64_t base;    /* >= 0: one file of a set read on its own, its frames numbered after this (parallel.py) */
    Buffer handed;   /* a part's connections still open at its end, packed (handover.c) */
} Run;

/* A part's open connection at its end: packed for the merge, not finished. */
static int take_packed(void *ctx, Ref r) {
    return is_half(r) ? half_pack(half_of(r), ctx) : conn_pack(conn_of(r), ctx);
}

long python_fill(void *ctx, uint8_t *dst, size_t n) {
    PyObject *readinto = ctx;
    PyObject *view = PyMemoryView_FromMemory((char *)dst, (Py_ssize_t)n, PyBUF_WRITE);
    if (view == NULL) return -1;
    PyObject *got = PyObject_CallOneArg(readinto, view);
    Py_DECREF(view);
    if (got == NULL) return -1;
    long count = got == Py_None ? 0 : PyLong_AsLong(got);
    Py_DECREF(got);
    if (count == -1 && PyErr_Occurred()) return -1;
    if (count < 0 || (unsigned long)count > n) {  /* the reader would read past its buffer */
        PyErr_Format(PyExc_ValueError, "readinto() returned %ld for a buffer of %zu bytes", count, n);
        return -1;
    }
    return count;
}

/* Called without the GIL (from pump) or with it (feeder_open): PyGILState_Ensure takes it if need be. */
static long fill(void *ctx, uint8_t *dst, size_t n) {
    PyGILState_STATE gil = PyGILState_Ensure();
    long count = python_fill(ctx, dst, n);
    PyGILState_Release(gil);
    return count;
}

/* The inline sink's output, through Python (the GIL taken: pump runs without it). */
static int write_python(void *ctx, const char *data, size_t len) {
    PyGILState_STATE gil = PyGILState_Ensure();
    PyObject *done = PyObject_CallFunction(ctx, "y#", data, (Py_ssize_t)len);
    Py_XDECREF(done);
    PyGILState_Release(gil);
    return done == NULL ? -1 : 0;
}

/* Now and then: let Ctrl-C through, and tell the progress bar how far reading got. */
static int between_batches(Run *run, int64_t batches) {
    if ((batches & 63) != 0) return 0;
    if (PyErr_CheckSignals()) return -1;
    if (run->progress == Py_None || !run->feeder.threaded) return 0;
    PyObject *done = PyObject_CallFunction(run->progress, "L",
                                           (long long)__atomic_load_n(&run->feeder.bytes, __ATOMIC_RELAXED));
    Py_XDECREF(done);
    return done ? 0 : -1;
}

/* The main loop: batches of packets in, connections out to the sink. Within a
 * batch, table entries are prefetched 8 packets ahead, and connections 4 ahead. */
#ifndef SLOT_AHEAD
#define SLOT_AHEAD 16
#endif
#ifndef CONN_AHEAD
#define CONN_AHEAD 8
#endif
/* One batch: its packets into the tracker. Runs without the GIL. */
static int track_batch(Run *run, Tracker *tracker, int *ended) {
    Batch *batch = feeder_next(&run->feeder);
    size_t n = batch->count;
    for (size_t i = 0; i < n && i < SLOT_AHEAD; i++) tracker_prefetch(tracker, &batch->packets[i], 0);
    for (size_t i = 0; i < n; i++) {
        if (i + SLOT_AHEAD < n) tracker_prefetch(tracker, &batch->packets[i + SLOT_AHEAD], 0);
        if (i + CONN_AHEAD < n) tracker_prefetch(tracker, &batch->packets[i + CONN_AHEAD], 1);
        if (tracker_add(tracker, &batch->packets[i])) {
            feeder_done(&run->feeder);
            return -1;
        }
    }
    *ended = batch->last;
    feeder_done(&run->feeder);
    return 0;
}

/* The work runs without the GIL, so that Python threads run meanwhile: the API (analyzer/records.py)
 * reads the output on the calling thread while the engine runs on another. What calls Python (fill,
 * write_python) takes the GIL itself; between batches, signals and progress are handled with it. */
static int pump(Run *run, Tracker *tracker, int *ended) {
    int status = 0;
    for (int64_t batches = 1;; batches++) {
        Py_BEGIN_ALLOW_THREADS
        status = track_batch(run, tracker, ended);
        Py_END_ALLOW_THREADS
        if (status) return -1;
        if (*ended) break;
        if (between_batches(run, batches)) return -1;
    }
    if (*ended == READ_FAILED) {  /* a read error: what finished before it stays written, as in Python */
        if (run->feeder.reader.fd_errno) {
            errno = run->feeder.reader.fd_errno;
            PyErr_SetFromErrno(PyExc_OSError);
        }
        PyObject *type, *value, *traceback;
        PyErr_Fetch(&type, &value, &traceback);
        Py_BEGIN_ALLOW_THREADS
        (void)sink_finish(&run->sink);  /* the read error is the one to report */
        Py_END_ALLOW_THREADS
        if (type != NULL) PyErr_Restore(type, value, traceback);
        return -1;
    }
    Py_BEGIN_ALLOW_THREADS
    if (*ended == READ_ERROR) status = sink_finish(&run->sink);  /* what finished stays written, as in Python */
    else if (run->base >= 0) status = tracker_hand_over(tracker, take_packed, &run->handed) ? -1 : sink_finish(&run->sink);
    else status = tracker_flush(tracker) ? -1 : sink_finish(&run->sink);
    Py_END_ALLOW_THREADS
    return status;
}

PyObject *named_counts(const int64_t *values, const char *const *names, int n) {
    PyObject *dict = PyDict_New();
    for (int i = 0; dict && i < n; i++) {
        if (!values[i]) continue;
        PyObject *value = PyLong_FromLongLong(values[i]);
        if (value == NULL || PyDict_SetItemString(dict, names[i], value)) Py_CLEAR(dict);
        Py_XDECREF(value);
    }
    return dict;
}

static PyObject *reasons(const FrameStats *stats, int malformed) {
    PyObject *dict = PyDict_New();
    for (size_t i = 0; dict && i < stats->n_reasons; i++) {
        if (stats->reasons[i].malformed != malformed) continue;
        PyObject *value = PyLong_FromLongLong(stats->reasons[i].count);
        if (value == NULL || PyDict_SetItemString(dict, stats->reasons[i].reason, value)) Py_CLEAR(dict);
        Py_XDECREF(value);
    }
    return dict;
}

static PyObject *problems(const Problem *items, size_t n) {
    PyObject *list = PyList_New((Py_ssize_t)n);
    for (size_t i = 0; list && i < n; i++) {
        PyObject *item = Py_BuildValue("(Ls)", (long long)items[i].frame, items[i].what);
        if (item == NULL) Py_CLEAR(list);
        else PyList_SET_ITEM(list, (Py_ssize_t)i, item);
    }
    return list;
}

static PyObject *linktypes(const FrameStats *stats) {
    PyObject *dict = PyDict_New();
    for (size_t i = 0; dict && i < stats->n_links; i++) {
        PyObject *key = PyLong_FromUnsignedLong(stats->links[i].linktype);
        PyObject *value = PyLong_FromLongLong(stats->links[i].count);
        if (key == NULL || value == NULL || PyDict_SetItem(dict, key, value)) Py_CLEAR(dict);
        Py_XDECREF(key);
        Py_XDECREF(value);
    }
    return dict;
}

/* The first link type the filter could not be compiled for, and libpcap's reason: (linktype, reason) or None. */
static PyObject *filter_failed(const Run *run) {
    if (!run->filtered || !run->filter.failed) return Py_NewRef(Py_None);
    return Py_BuildValue("(ks)", (unsigned long)run->filter.failed_linktype, run->filter.failed_reason);
}

/* Stats.tunnels: the kinds of encapsulation segments came through, and how many. */
static PyObject *tunnel_counts(const FrameStats *stats) {
    PyObject *dict = PyDict_New();
    for (int k = 0; dict && k < N_TUNNEL_KINDS; k++) {
        if (stats->tunnels[k] == 0) continue;
        PyObject *value = PyLong_FromLongLong(stats->tunnels[k]);
        if (value == NULL || PyDict_SetItemString(dict, TUNNEL_KINDS[k], value)) Py_CLEAR(dict);
        Py_XDECREF(value);
    }
    return dict;
}

/* Per server endpoint, its counts (sink.h EndpointCount): {"ip:port": (n, ...)}. */
PyObject *endpoint_counts(const EndpointTable *t) {
    PyObject *dict = PyDict_New();
    for (size_t i = 0; dict && i < t->cap; i++) {
        const EndpointCount *e = &t->slots[i];
        if (e->len == 0) continue;
        PyObject *row = PyTuple_New(EP_N);
        for (int k = 0; row && k < EP_N; k++) {
            PyObject *n = PyLong_FromLongLong(e->n[k]);
            if (n == NULL) Py_CLEAR(row);
            else PyTuple_SET_ITEM(row, k, n);
        }
        PyObject *key = PyUnicode_FromStringAndSize(e->name, e->len);
        if (row == NULL || key == NULL || PyDict_SetItem(dict, key, row)) Py_CLEAR(dict);
        Py_XDECREF(key);
        Py_XDECREF(row);
    }
    return dict;
}

static PyObject *result(Run *run, const char *error) {
    static const char *const closers[] = {"client", "server", "both", "None"};
    const Census *census = &run->sink.census;
    const FrameStats *stats = &run->feeder.stats;
    const char *states[N_STATES];
    for (int i = 0; i < N_STATES; i++) states[i] = machine.state_names[i];
    return Py_BuildValue(
        "{s:L,s:L,s:L,s:N,s:N,s:N,s:N,s:L,s:N,s:N,s:N,s:N,s:N,s:N,s:L,s:L,s:z,s:L,s:L,s:N,s:L,s:L,s:N,s:L,"
        "s:(LLL),s:N}",
        "frames", (long long)stats->frames, "segments", (long long)stats->segments,
        "connections", (long long)census->connections, "skipped", reasons(stats, 0), "malformed",
        reasons(stats, 1), "problems", problems(stats->problems, stats->n_problems), "damage",
        problems(stats->damage, stats->n_damage), "damaged", (long long)stats->damaged,
        "linktypes", linktypes(stats),
        "open", named_counts(census->open, OPEN_LABELS, 6), "close", named_counts(census->close, CLOSE_LABELS, 7),
        "closer", named_counts(census->closer, closers, 4), "final_client", named_counts(census->final[0], states, N_STATES),
        "final_server", named_counts(census->final[1], states, N_STATES), "half_close", (long long)census->half_close,
        "anomalies", (long long)census->anomalies, "error", error,
        "formatted_by_tracker", (long long)run->sink.helped, "unmatched", (long long)stats->unmatched,
        "filter_failed", filter_failed(run), "matched", (long long)census->matched, "tunnelled", (long long)stats->tunnelled,
        "tunnels", tunnel_counts(stats), "last_frame", (long long)stats->last_number,
        "retransmits", (long long)census->retransmits[0], (long long)census->retransmits[1],
        (long long)census->retransmits[2],
        "endpoints", endpoint_counts(&run->sink.endpoints));
}

/* Whether run() or collect() can go: the engine configured, and libpcap built in for a filter; if not, an
 * exception is set. */
static int can_run(const char *expression) {
    if (!configured) {
        PyErr_SetString(PyExc_RuntimeError, "the engine is not configured: call configure() first");
        return 0;
    }
    if (expression != NULL && !FILTERS_BUILT) {
        PyErr_SetString(PyExc_ValueError, "the engine was built without libpcap: no filters");
        return 0;
    }
    return 1;
}

static PyObject *run_inputs(Run *run_, int fd_in, const int *more, size_t n_more, int is_set,
                            const Timeouts *limits, const char *capture, Py_ssize_t capture_len,
                            const char *expression, const char *program, Py_ssize_t program_len);

/* fd_in: a descriptor, or a tuple of them (a rotated set, read as one capture: reader_chain); -1: an exception. */
static int input_fds(PyObject *given, int *fd, int **more, size_t *n_more) {
    *more = NULL;
    *n_more = 0;
    if (!PyTuple_Check(given)) {
        long value = PyLong_AsLong(given);
        if (value == -1 && PyErr_Occurred()) return -1;
        if (value < INT_MIN || value > INT_MAX) {
            PyErr_SetString(PyExc_ValueError, "not a file descriptor");
            return -1;
        }
        *fd = (int)value;
        return 0;
    }
    Py_ssize_t n = PyTuple_GET_SIZE(given);
    if (n < 1) {
        PyErr_SetString(PyExc_ValueError, "a set of no files");
        return -1;
    }
    *more = PyMem_Calloc((size_t)n, sizeof **more);
    if (*more == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        long value = PyLong_AsLong(PyTuple_GET_ITEM(given, i));
        if (value < 0 || value > INT_MAX) {
            if (!PyErr_Occurred()) PyErr_SetString(PyExc_ValueError, "a set's descriptors must be >= 0");
            PyMem_Free(*more);
            *more = NULL;
            return -1;
        }
        (*more)[i] = (int)value;
    }
    *fd = (*more)[0];
    *n_more = (size_t)n - 1;
    return 0;
}

/* A set's own counts: the file reading stopped in, and each file's last frame time (None: no frame). */
static PyObject *with_set_counts(PyObject *out, const Reader *r, size_t n_files) {
    if (out == NULL || n_files == 0) return out;
    PyObject *times = PyList_New((Py_ssize_t)n_files);
    for (size_t i = 0; times != NULL && i < n_files; i++) {
        double ts = r->last_ts ? r->last_ts[i] : NAN;
        PyObject *item = isnan(ts) ? Py_NewRef(Py_None) : PyFloat_FromDouble(ts);
        if (item == NULL) Py_CLEAR(times);
        else PyList_SET_ITEM(times, (Py_ssize_t)i, item);
    }
    PyObject *file = PyLong_FromSize_t(r->file);
    int failed = times == NULL || file == NULL || PyDict_SetItemString(out, "last_ts", times)
                 || PyDict_SetItemString(out, "file", file);
    Py_XDECREF(times);
    Py_XDECREF(file);
    if (failed) Py_CLEAR(out);
    return out;
}

/* A part's own counts (parallel.py): the file's last frame time ("last_ts", None: no frame; the set's gaps
 * and overlaps), and the connections open at its end, packed ("handover": handover.c). What the merge needs
 * of the file's numbers and packet times its scan gave first (parts.c). */
static PyObject *with_part_counts(PyObject *out, const Reader *r, const Buffer *handed) {
    if (out == NULL) return NULL;
    double last = r->last_ts != NULL ? r->last_ts[0] : NAN;
    PyObject *packed = PyBytes_FromStringAndSize(handed->data ? handed->data : "", (Py_ssize_t)handed->len);
    PyObject *last_ts = isnan(last) ? Py_NewRef(Py_None) : PyFloat_FromDouble(last);
    if (packed == NULL || last_ts == NULL || PyDict_SetItemString(out, "handover", packed) ||
        PyDict_SetItemString(out, "last_ts", last_ts))
        Py_CLEAR(out);
    Py_XDECREF(packed);
    Py_XDECREF(last_ts);
    return out;
}

static PyObject *run_capture(PyObject *self, PyObject *args) {
    Run run = {0};
    Timeouts timeouts;
    const char *capture = NULL;
    Py_ssize_t capture_len = 0;
    const char *expression = NULL;
    const char *program = NULL;
    Py_ssize_t program_len = 0;
    int fd_in, *more = NULL;
    size_t n_more = 0;
    PyObject *fds;
    run.sink.fd = -1;
    long long base = -1;
    if (!PyArg_ParseTuple(args, "OOOOii(dddd)z#p|zz#Lp", &run.readinto, &fds, &run.progress, &run.write,
                          &run.sink.fd, &run.sink.style.format, &timeouts.msl, &timeouts.idle, &timeouts.handshake,
                          &timeouts.close_linger, &capture, &capture_len, &run.sink.style.colour, &expression,
                          &program, &program_len, &base, &run.sink.style.meta))
        return NULL;
    run.base = base;
    if (base >= 0 && PyTuple_Check(fds)) {
        PyErr_SetString(PyExc_ValueError, "a part (base >= 0) is one file");
        return NULL;
    }
    if (!can_run(expression)) return NULL;
    if (input_fds(fds, &fd_in, &more, &n_more)) return NULL;
    PyObject *out = run_inputs(&run, fd_in, more ? more + 1 : NULL, n_more, PyTuple_Check(fds), &timeouts, capture, capture_len,
                               expression, program, program_len);
    PyMem_Free(more);
    return out;
}

static PyObject *run_inputs(Run *run_, int fd_in, const int *more, size_t n_more, int is_set,
                            const Timeouts *limits, const char *capture, Py_ssize_t capture_len,
                            const char *expression, const char *program, Py_ssize_t program_len) {
    Run run = *run_;
    Timeouts timeouts = *limits;
    Where where;
    if (program != NULL) {
        const char *why;
        int parsed = where_parse(&where, (const uint8_t *)program, (size_t)program_len, &why);
        if (parsed) {
            where_free(&where);
            if (parsed == -2) return PyErr_NoMemory();
            return PyErr_Format(PyExc_ValueError, "a malformed --where program: %s", why);
        }
        run.sink.where = &where;
    }
    if (expression != NULL) {
        if (filter_init(&run.filter, expression)) {
            if (program != NULL) where_free(&where);
            return PyErr_NoMemory();
        }
        run.filtered = 1;
    }
    running++;
    run.sink.style.capture = capture;
    run.sink.style.capture_len = (size_t)capture_len;
    run.sink.write = write_python;
    run.sink.write_ctx = run.write;
    Tracker tracker;
    PyObject *out = NULL;
    int tracker_ready = 0, ended = 0;
    Filter *filter = run.filtered ? &run.filter : NULL;
    int status = run.base >= 0 ? feeder_open_part(&run.feeder, fd_in, filter, 0, run.base)
                 : is_set ? feeder_open_set(&run.feeder, fd_in, more, n_more, filter)
                          : feeder_open(&run.feeder, fd_in, fill, run.readinto, filter);
    if (status == READ_ERROR) {
        status = 0;
        ended = READ_ERROR;
    } else if (status == READ_FRAME) {
        status = tracker_init(&tracker, &timeouts, sink_take, sink_new_conn, &run.sink);
        tracker_ready = status == 0;
        if (status == 0) status = sink_start(&run.sink);
        if (status == 0) status = pump(&run, &tracker, &ended);
    } else {
        status = -1;
    }
    Py_BEGIN_ALLOW_THREADS
    feeder_stop(&run.feeder);  /* first: it may still be reading */
    Py_END_ALLOW_THREADS
    if (status == 0 && run.sink.error == 0) {
        out = result(&run, ended == READ_ERROR ? run.feeder.message : NULL);
        if (is_set) out = with_set_counts(out, &run.feeder.reader, n_more + 1);
        if (run.base >= 0) out = with_part_counts(out, &run.feeder.reader, &run.handed);
    } else if (!PyErr_Occurred()) {
        if (run.sink.error > 0) {
            errno = run.sink.error;
            PyErr_SetFromErrno(PyExc_OSError);  /* EPIPE makes a BrokenPipeError */
        } else {
            PyErr_NoMemory();
        }
    }
    Py_BEGIN_ALLOW_THREADS  /* after an error the writer may still be writing to a reader that needs the GIL */
    if (tracker_ready) tracker_free(&tracker);  /* connections still open after an error */
    sink_free(&run.sink);
    Py_END_ALLOW_THREADS
    feeder_close(&run.feeder);
    free(run.handed.data);
    if (run.filtered) filter_free(&run.filter);
    if (program != NULL) where_free(&where);
    running--;
    return out;
}

/* ---- the ladder's frames (collect.c) ----------------------------------------------------- */

/* The wanted ids, a sorted sequence of distinct ints >= 0, as a C array (PyMem_Free it); NULL: an exception. */
static int64_t *wanted_ids(PyObject *seq, size_t *n) {
    PyObject *items = PySequence_Fast(seq, "the connection ids must be a sequence");
    if (items == NULL) return NULL;
    Py_ssize_t count = PySequence_Fast_GET_SIZE(items);
    int64_t *ids = PyMem_Calloc(count ? (size_t)count : 1, sizeof *ids);
    for (Py_ssize_t i = 0; ids != NULL && i < count; i++) {
        long long id = PyLong_AsLongLong(PySequence_Fast_GET_ITEM(items, i));
        if ((id == -1 && PyErr_Occurred()) || id < 0 || (i > 0 && id <= ids[i - 1])) {
            if (!PyErr_Occurred()) PyErr_SetString(PyExc_ValueError, "connection ids: sorted, distinct, >= 0");
            PyMem_Free(ids);
            ids = NULL;
        } else {
            ids[i] = id;
        }
    }
    if (ids == NULL && !PyErr_Occurred()) PyErr_NoMemory();
    Py_DECREF(items);
    *n = (size_t)count;
    return ids;
}

static PyObject *collect(PyObject *self, PyObject *args) {
    PyObject *readinto, *wanted, *fds;
    Timeouts timeouts;
    int fd_in, stop_early, *more = NULL;
    size_t n_more = 0;
    const char *expression = NULL;
    if (!PyArg_ParseTuple(args, "OO(dddd)Op|y", &readinto, &fds, &timeouts.msl, &timeouts.idle,
                          &timeouts.handshake, &timeouts.close_linger, &wanted, &stop_early, &expression))
        return NULL;
    if (!can_run(expression)) return NULL;
    size_t n;
    int64_t *ids = wanted_ids(wanted, &n);
    if (ids == NULL) return NULL;
    if (input_fds(fds, &fd_in, &more, &n_more)) {
        PyMem_Free(ids);
        return NULL;
    }
    Filter filter;
    if (expression != NULL && filter_init(&filter, expression)) {
        PyMem_Free(ids);
        PyMem_Free(more);
        return PyErr_NoMemory();
    }
    running++;
    PyObject *out = collect_frames(readinto, fd_in, more ? more + 1 : NULL, n_more, &timeouts, ids, n, stop_early,
                                   expression ? &filter : NULL);
    running--;
    if (expression != NULL) filter_free(&filter);
    PyMem_Free(ids);
    PyMem_Free(more);
    return out;
}

/* ---- live capture (live.c) ----------------------------------------------------------------- */

#define LIVE_READ_SECONDS 0.1      /* back to Python (signals, printing, the clock) at least this often */
#define LIVE_EVENT_BYTES (1 << 20) /* ... or once this many bytes of events are waiting */
#define LIVE_DRAIN_SECONDS 2.0     /* on stop, frames already in the ring are read, this long at most */
#define LIVE_BLOCK_MS 10           /* a ring block is handed over once full or this old */

/* Hand the events waiting to handler(events, frames, received, dropped, (opens, closes, resets), census):
 * its truth (stop), or -1 with an exception. census: the open connections' states, 2 x N_STATES ints
 * (clients', servers'), when asked for (--summary), else None. */
static int call_handler(Live *live, PyObject *handler, int with_census) {
    live_stats(live);
    PyObject *census = Py_None;
    Py_INCREF(census);
    if (with_census) {
        int64_t counts[2][N_STATES];
        live_census(live, counts);
        Py_DECREF(census);
        census = PyTuple_New(2 * N_STATES);
        for (int i = 0; census != NULL && i < 2 * N_STATES; i++) {
            PyObject *n = PyLong_FromLongLong(counts[i / N_STATES][i % N_STATES]);
            if (n == NULL) Py_CLEAR(census);
            else PyTuple_SET_ITEM(census, i, n);
        }
        if (census == NULL) return -1;
    }
    const Events *e = &live->events;
    PyObject *got = PyObject_CallFunction(handler, "y#LLL(LLL)N", e->out.data ? e->out.data : "",
                                          (Py_ssize_t)e->out.len, (long long)live->frames,
                                          (long long)live->received, (long long)live->dropped, (long long)e->opens,
                                          (long long)e->closes, (long long)e->resets, census);
    live->events.out.len = 0;
    if (got == NULL) return -1;
    int stop = PyObject_IsTrue(got);
    Py_DECREF(got);
    return stop;
}

static int live_counted(const Live *live) { return live->count && live->frames >= live->count; }

/* Read until the handler says stop (or the count, or the interface is gone); then what the ring still
 * holds, for LIVE_DRAIN_SECONDS at most; then finish every connection. 0, -1 (l->failed) or -2 (an
 * exception). */
static int live_loop(Live *live, PyObject *handler, int with_census) {
    int status = 0;
    int stop = call_handler(live, handler, with_census);  /* once before reading: the capture is on */
    if (stop < 0) return -2;
    while (!stop) {
        Py_BEGIN_ALLOW_THREADS
        status = live_pump(live, LIVE_READ_SECONDS, LIVE_EVENT_BYTES, 0);
        Py_END_ALLOW_THREADS
        if (status) return -1;
        if (PyErr_CheckSignals()) return -2;
        stop = call_handler(live, handler, with_census);
        if (stop < 0) return -2;
        stop = stop || live->lost || live_counted(live);
    }
    double until = 0;
    if (!live->lost && !live_counted(live)) {
        struct timespec now;
        clock_gettime(CLOCK_MONOTONIC, &now);
        until = (double)now.tv_sec + (double)now.tv_nsec * 1e-9 + LIVE_DRAIN_SECONDS;
    }
    for (;;) {  /* captured before the stop */
        struct timespec now;
        clock_gettime(CLOCK_MONOTONIC, &now);
        double left = until - ((double)now.tv_sec + (double)now.tv_nsec * 1e-9);
        if (left <= 0) break;
        Py_BEGIN_ALLOW_THREADS
        status = live_pump(live, left, LIVE_EVENT_BYTES, 1);
        Py_END_ALLOW_THREADS
        if (status) return -1;
        int full = live->events.out.len >= LIVE_EVENT_BYTES;
        if (call_handler(live, handler, with_census) < 0) return -2;
        if (!full || live->lost) break;
    }
    Py_BEGIN_ALLOW_THREADS
    status = live_finish(live);
    Py_END_ALLOW_THREADS
    if (status) return -1;
    return call_handler(live, handler, with_census) < 0 ? -2 : 0;
}

/* live(iface, filter, snaplen, buffer_bytes, promiscuous, loopback, dump, events, fd_out, format, colour,
 *      (msl, idle, handshake, close_linger), count, census, handler) -> dict
 * events: 0 counted only, 1 text lines, 2 JSON Lines (events.c); each finished connection's record is
 * written to fd_out as `format` (as run() writes them) by the sink's thread. Returns run()'s counts and
 * "received", "dropped" (the kernel's), "drained" (the ring was read empty at the stop), "lost" (libpcap's
 * reason the interface could no longer be read, or None); or, if the capture cannot start, {"open_error": LIVE_PERMISSION.., "message": libpcap's}. */
static PyObject *live_capture(PyObject *self, PyObject *args) {
    LiveOptions options = {.block_ms = LIVE_BLOCK_MS};
    Timeouts timeouts;
    long long count;
    int events, with_census;
    PyObject *handler;
    Run run = {0};
    if (!PyArg_ParseTuple(args, "ssiippziiip(dddd)LpO", &options.iface, &options.filter, &options.snaplen,
                          &options.buffer_bytes, &options.promiscuous, &options.loopback, &options.dump_path, &events, &run.sink.fd,
                          &run.sink.style.format, &run.sink.style.colour, &timeouts.msl, &timeouts.idle,
                          &timeouts.handshake, &timeouts.close_linger, &count, &with_census, &handler))
        return NULL;
    if (!can_run(NULL)) return NULL;
    if (run.sink.fd < 0) return PyErr_Format(PyExc_ValueError, "live() writes its records to a descriptor");
    Live live = {0};
    live.feeder = &run.feeder;
    live.sink = &run.sink;
    live.count = count;
    live.events.format = events;
    PyObject *out = NULL;
    running++;
    int code = live_open(&live, &options), sink_started = 0, status = -1;
    if (code != LIVE_OK) {
        out = Py_BuildValue("{s:i,s:s}", "open_error", code, "message", live.error);
        goto close;
    }
    if (sink_start(&run.sink) == 0) sink_started = 1;
    if (!sink_started || live_start(&live, &timeouts)) {
        PyErr_NoMemory();
        goto close;
    }
    status = live_loop(&live, handler, with_census);
    PyObject *type, *value, *traceback;
    PyErr_Fetch(&type, &value, &traceback);
    int sunk;
    Py_BEGIN_ALLOW_THREADS
    sunk = sink_finish(&run.sink);
    Py_END_ALLOW_THREADS
    sink_started = 0;
    if (type != NULL) PyErr_Restore(type, value, traceback);
    if (status == -2) goto close;
    if (status == -1 || sunk) {
        if (sunk > 0) {
            errno = sunk;
            PyErr_SetFromErrno(PyExc_OSError);
        } else {
            PyErr_NoMemory();
        }
        goto close;
    }
    live_stats(&live);
    out = result(&run, NULL);
    if (out != NULL) {
        PyObject *received = PyLong_FromLongLong(live.received), *dropped = PyLong_FromLongLong(live.dropped);
        PyObject *lost = live.lost ? PyUnicode_FromString(live.error) : Py_NewRef(Py_None);
        if (received == NULL || dropped == NULL || lost == NULL || PyDict_SetItemString(out, "received", received) ||
            PyDict_SetItemString(out, "dropped", dropped) || PyDict_SetItemString(out, "lost", lost) ||
            PyDict_SetItemString(out, "drained", live.drained ? Py_True : Py_False))
            Py_CLEAR(out);
        Py_XDECREF(received);
        Py_XDECREF(dropped);
        Py_XDECREF(lost);
    }
close:
    Py_BEGIN_ALLOW_THREADS
    if (sink_started) (void)sink_finish(&run.sink);
    live_close(&live);  /* the tracker first: its connections are the sink's memory */
    sink_free(&run.sink);
    Py_END_ALLOW_THREADS
    feeder_close(&run.feeder);
    running--;
    return out;
}

/* ---- number formatting, exposed so tests can hold it to repr() ------------------------ */

static PyObject *format_with(int (*format)(Buffer *, double), PyObject *arg) {
    double x = PyFloat_AsDouble(arg);
    if (x == -1.0 && PyErr_Occurred()) return NULL;
    Buffer b = {0};
    PyObject *text = format(&b, x) ? NULL : PyUnicode_FromStringAndSize(b.data, (Py_ssize_t)b.len);
    free(b.data);
    return text;
}

static PyObject *float_repr(PyObject *self, PyObject *arg) { return format_with(buf_float, arg); }
static PyObject *round9_repr(PyObject *self, PyObject *arg) { return format_with(buf_round9, arg); }
static PyObject *round6_repr(PyObject *self, PyObject *arg) { return format_with(buf_round6, arg); }

static PyMethodDef methods[] = {
    {"float_repr", float_repr, METH_O, "repr(x) as the engine writes it."},
    {"round9_repr", round9_repr, METH_O, "repr(round(x, 9)) as the engine writes it."},
    {"round6_repr", round6_repr, METH_O, "repr(round(x, 6)) as the engine writes it (the timing figures)."},
    {"configure", configure, METH_VARARGS, "Hand the state machine of analyzer.fsm to the engine, as tables."},
    {"run", run_capture, METH_VARARGS, "Analyze one capture; write its connections; return the counts."},
    {"collect", collect, METH_VARARGS, "The frames of some connections of a capture, for the ladder (collect.c)."},
    {"live", live_capture, METH_VARARGS, "Analyze a live interface (live.c) until told to stop; return the counts."},
    {"scan", scan_part, METH_VARARGS, "One file of a set read: its numbers, times, some 4-tuples' frames (parts.c)."},
    {"handover_keys", handover_keys, METH_VARARGS, "The keys of the connections a part handed over (parts.c)."},
    {"merger", merger_new, METH_VARARGS, "The merge's tracker of connections carried across files (parts.c)."},
    {"merger_enter", merger_enter, METH_O, "A file begins: the keys the merge holds (parts.c)."},
    {"merger_feed", merger_feed, METH_VARARGS, "A file's frames of the merge's keys, and its ticks (parts.c)."},
    {"merger_adopt", merger_adopt, METH_VARARGS, "The connections a file's own run ended with open (parts.c)."},
    {"merger_held", merger_held, METH_VARARGS, "The first frames of the connections the merge holds (parts.c)."},
    {"merger_finish", merger_finish, METH_VARARGS, "The set's end: the merge's connections finished (parts.c)."},
    {"split_meta", split_meta, METH_VARARGS, "A run's meta lines and texts as arrays (parts.c)."},
    {"renumber", renumber, METH_VARARGS, "Records' texts joined, each with its id put in (parts.c)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "analyzer._engine",
                                    "synfin's compiled engine (see analyzer/engine.py).", -1, methods};

PyMODINIT_FUNC PyInit__engine(void) {
    PyObject *m = PyModule_Create(&module);
    if (m != NULL && PyModule_AddIntConstant(m, "FILTERS", FILTERS_BUILT)) Py_CLEAR(m);
    if (m != NULL && (PyModule_AddIntConstant(m, "LIVE_PERMISSION", LIVE_PERMISSION) ||
                      PyModule_AddIntConstant(m, "LIVE_NO_DEVICE", LIVE_NO_DEVICE) ||
                      PyModule_AddIntConstant(m, "LIVE_BAD_FILTER", LIVE_BAD_FILTER)))
        Py_CLEAR(m);
    return m;
}
