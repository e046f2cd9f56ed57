/* The engine's side of a rotated set analyzed file by file, in parallel (analyzer/parallel.py).
 *
 * Each file is first run on its own (module.c's run with a frame base and OutputStyle.meta: each
 * connection's facts before its text). Connections on a 4-tuple that was open at the end of some file
 * may carry state across files; parallel.py drops their records and has them made again here:
 *   count()        how many frame numbers a file takes (its frames and damaged spots, as reader.c numbers
 *                  them), read without decoding: the next file's base;
 *   collect_keys() the frames of chosen keys in one file, each with the tracker's packet time before it
 *                  (the files before it included), as collect.c keeps them for the ladder;
 *   replay()       those frames, from every file in order, tracked as one run would track them: before each
 *                  frame the timers run to the packet time before it (what the frames left out did), and at
 *                  the frames where the other connections were retired the timers run as they did there
 *                  (ticks), so each connection is retired at the frame and in the place one run retires it
 *                  (Conn.retired_*); at the end the timers run to the set's last packet time, and the rest
 *                  is flushed. Written with OutputStyle.meta, as the parts are.
 */
#include <errno.h>
#include <math.h>
#include <string.h>

#include "engine.h"
#include "feeder.h"
#include "parts.h"
#include "sink.h"
#include "where.h"

/* count(fd) -> {"number": the last number taken, "error": why the file cannot be read, or None} */
PyObject *count_numbers(PyObject *self, PyObject *args) {
    int fd;
    if (!PyArg_ParseTuple(args, "i", &fd)) return NULL;
    int64_t number = 0;
    char message[160] = "";
    int fd_errno = 0, status;
    Py_BEGIN_ALLOW_THREADS
    status = feeder_count(fd, &number, message, sizeof message, &fd_errno);
    Py_END_ALLOW_THREADS
    if (status == READ_FAILED) {
        if (fd_errno == 0) return PyErr_NoMemory();
        errno = fd_errno;
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    return Py_BuildValue("{s:L,s:z}", "number", (long long)number, "error", status == READ_ERROR ? message : NULL);
}

/* ---- collect_keys -------------------------------------------------------------------- */

typedef struct {
    Key key;
    int64_t from;  /* its frames from this number on */
} Wanted;

static int by_key(const void *x, const void *y) { return memcmp(x, y, sizeof(Key)); }

static const Wanted *find(const Wanted *wanted, size_t n, const Key *key) {
    return bsearch(key, wanted, n, sizeof *wanted, by_key);  /* the key is a Wanted's first member */
}

static PyObject *frame_tuple(const Packet *p, const RawFrames *raw, size_t i, double before) {
    const RawRef *ref = &raw->refs[i];
    return Py_BuildValue("(LdIy#Id)", (long long)p->frame, p->ts, (unsigned int)ref->linktype,
                         (const char *)raw->data + ref->offset, (Py_ssize_t)ref->caplen,
                         (unsigned int)ref->wire_len, before);
}

static int collect_batch(const Batch *batch, const Wanted *wanted, size_t n, double *now, PyObject *out) {
    for (size_t i = 0; i < batch->count; i++) {
        const Packet *p = &batch->packets[i];
        double before = *now;
        if (p->ts > *now) *now = p->ts;  /* as tracker.c's expire moves its packet time */
        const Wanted *w = find(wanted, n, &p->key);
        if (w == NULL || p->frame < w->from) continue;
        PyObject *frame = frame_tuple(p, batch->raw, i, before);
        if (frame == NULL || PyList_Append(out, frame)) {
            Py_XDECREF(frame);
            return -1;
        }
        Py_DECREF(frame);
    }
    return 0;
}

/* collect_keys(fd, base, now, keys, froms[, filter]) -> {"frames": [(number, ts, linktype, data, wire_len,
 * before), ...], "error": str or None}: `keys` is the Keys (48 bytes each) one after another, sorted as bytes,
 * `froms` each one's first frame number wanted; `now` the packet time the files before reached. */
PyObject *collect_keys(PyObject *self, PyObject *args) {
    int fd;
    long long base;
    double now;
    Py_buffer keys;
    PyObject *froms;
    const char *expression = NULL;
    if (!PyArg_ParseTuple(args, "iLdy*O|z", &fd, &base, &now, &keys, &froms, &expression)) return NULL;
    size_t n = (size_t)keys.len / sizeof(Key);
    PyObject *out = NULL, *frames = PyList_New(0);
    Wanted *wanted = calloc(n ? n : 1, sizeof *wanted);
    Feeder *feeder = calloc(1, sizeof *feeder);
    Filter filter;
    int filtered = 0, opened = -1;
    if (frames == NULL || wanted == NULL || feeder == NULL) goto done;
    if ((size_t)keys.len % sizeof(Key) || PySequence_Length(froms) != (Py_ssize_t)n) {
        PyErr_SetString(PyExc_ValueError, "keys: 48 bytes each, sorted, one first frame each");
        goto done;
    }
    for (size_t i = 0; i < n; i++) {
        memcpy(&wanted[i].key, (const char *)keys.buf + i * sizeof(Key), sizeof(Key));
        PyObject *item = PySequence_GetItem(froms, (Py_ssize_t)i);
        wanted[i].from = item ? PyLong_AsLongLong(item) : -1;
        Py_XDECREF(item);
        if (PyErr_Occurred()) goto done;
    }
    if (expression != NULL) {
        if (filter_init(&filter, expression)) goto done;
        filtered = 1;
    }
    opened = feeder_open_part(feeder, fd, filtered ? &filter : NULL, 1, base);
    int ended = opened == READ_FRAME ? 0 : opened, status = opened == READ_FAILED ? -1 : 0;
    while (!ended && status == 0) {
        Batch *batch = feeder_next(feeder);
        if (batch == NULL) {
            status = -1;
            break;
        }
        status = collect_batch(batch, wanted, n, &now, frames);
        ended = batch->last;
        feeder_done(feeder);
    }
    Py_BEGIN_ALLOW_THREADS
    feeder_stop(feeder);
    Py_END_ALLOW_THREADS
    if (status == 0 && ended == READ_FAILED) {
        status = -1;
        if (feeder->reader.fd_errno) {
            errno = feeder->reader.fd_errno;
            PyErr_SetFromErrno(PyExc_OSError);
        }
    }
    if (status == 0)
        out = Py_BuildValue("{s:O,s:z}", "frames", frames, "error", ended == READ_ERROR ? feeder->message : NULL);
done:
    if (out == NULL && !PyErr_Occurred()) PyErr_NoMemory();
    if (opened != -1) feeder_close(feeder);
    if (filtered) filter_free(&filter);
    free(feeder);
    free(wanted);
    Py_XDECREF(frames);
    PyBuffer_Release(&keys);
    return out;
}

/* ---- replay ---------------------------------------------------------------------------- */

static int write_python(void *ctx, const char *data, size_t len) {
    PyObject *done = PyObject_CallFunction(ctx, "y#", data, (Py_ssize_t)len);
    Py_XDECREF(done);
    return done == NULL ? -1 : 0;
}

/* One item: a frame (number, ts, linktype, data, wire_len, before) or a tick (number, ts, before). */
static int replay_item(Tracker *t, PyObject *item, char *text) {
    long long number;
    double ts, before;
    unsigned int linktype, wire_len;
    const char *data;
    Py_ssize_t len;
    if (PyTuple_Check(item) && PyTuple_GET_SIZE(item) == 3) {
        if (!PyArg_ParseTuple(item, "Ldd", &number, &ts, &before)) return -1;
        if (tracker_tick(t, before, number, before, ts, RETIRED_BEFORE)) return -2;
        return tracker_tick(t, ts, number, before, ts, RETIRED_TIMER) ? -2 : 0;
    }
    if (!PyArg_ParseTuple(item, "LdIy#Id", &number, &ts, &linktype, &data, &len, &wire_len, &before)) return -1;
    Frame frame = {number, ts, linktype, (const uint8_t *)data, (uint32_t)len, wire_len};
    Packet p;
    Skip skip;
    if (decode_frame(&frame, &p, &skip, text)) return 0;  /* never: collect_keys keeps decoded frames only */
    packet_key(&p);
    if (tracker_tick(t, before, number, before, ts, RETIRED_BEFORE)) return -2;
    return tracker_add(t, &p) ? -2 : 0;
}

static PyObject *named_counts(const int64_t *values, const char *const *names, int n) {
    PyObject *dict = PyDict_New();
    for (int i = 0; dict && i < n; i++) {
        if (!values[i]) continue;
        PyObject *value = PyLong_FromLongLong(values[i]);
        if (value == NULL || PyDict_SetItemString(dict, names[i], value)) Py_CLEAR(dict);
        Py_XDECREF(value);
    }
    return dict;
}

static PyObject *census_dict(const Census *census) {
    static const char *const closers[] = {"client", "server", "both", "None"};
    const char *states[N_STATES];
    for (int i = 0; i < N_STATES; i++) states[i] = machine.state_names[i];
    return Py_BuildValue("{s:L,s:N,s:N,s:N,s:N,s:N,s:L,s:L,s:L}", "connections", (long long)census->connections,
                         "open", named_counts(census->open, OPEN_LABELS, 6),
                         "close", named_counts(census->close, CLOSE_LABELS, 7),
                         "closer", named_counts(census->closer, closers, 4),
                         "final_client", named_counts(census->final[0], states, N_STATES),
                         "final_server", named_counts(census->final[1], states, N_STATES),
                         "half_close", (long long)census->half_close, "anomalies", (long long)census->anomalies,
                         "matched", (long long)census->matched);
}

/* replay(items, write, format, (msl, idle, handshake, close_linger), capture, colour, end, program) -> census:
 * the items in order of frame number; `end` the set's last packet time; `program` the --where terms or None.
 * The text (with OutputStyle.meta) goes to `write` in pieces. */
PyObject *replay(PyObject *self, PyObject *args) {
    PyObject *items, *write;
    Sink sink;
    memset(&sink, 0, sizeof sink);
    sink.fd = -1;
    Timeouts timeouts;
    const char *capture = NULL, *program = NULL;
    Py_ssize_t capture_len = 0, program_len = 0;
    double end;
    if (!PyArg_ParseTuple(args, "OOi(dddd)z#pd|z#", &items, &write, &sink.style.format, &timeouts.msl,
                          &timeouts.idle, &timeouts.handshake, &timeouts.close_linger, &capture, &capture_len,
                          &sink.style.colour, &end, &program, &program_len))
        return NULL;
    Where where;
    if (program != NULL) {
        const char *why;
        int parsed = where_parse(&where, (const uint8_t *)program, (size_t)program_len, &why);
        if (parsed) {
            where_free(&where);
            return parsed == -2 ? PyErr_NoMemory() : PyErr_Format(PyExc_ValueError, "a malformed --where program: %s", why);
        }
        sink.where = &where;
    }
    sink.style.capture = capture;
    sink.style.capture_len = (size_t)capture_len;
    sink.style.meta = 1;
    sink.write = write_python;
    sink.write_ctx = write;
    PyObject *out = NULL, *iterator = PyObject_GetIter(items);
    char *text = malloc(TUNNEL_TEXT_MAX);
    Tracker tracker;
    int ready = iterator != NULL && text != NULL && tracker_init(&tracker, &timeouts, sink_take, sink_new_conn, &sink) == 0;
    int status = ready ? 0 : -2;
    for (PyObject *item; status == 0 && (item = PyIter_Next(iterator)) != NULL;) {
        status = replay_item(&tracker, item, text);
        Py_DECREF(item);
    }
    if (status == 0 && PyErr_Occurred()) status = -1;
    if (status == 0) status = tracker_tick(&tracker, end, INT64_MAX, end, end, RETIRED_END) ? -2 : 0;
    if (status == 0) status = tracker_flush(&tracker) ? -2 : 0;
    if (status == 0) status = sink_finish(&sink) ? -2 : 0;
    if (status == 0 && sink.error == 0) out = census_dict(&sink.census);
    else if (!PyErr_Occurred()) PyErr_NoMemory();
    if (ready) tracker_free(&tracker);
    sink_free(&sink);
    free(text);
    Py_XDECREF(iterator);
    if (program != NULL) where_free(&where);
    return out;
}
