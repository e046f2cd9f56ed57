/* The Python face of the compiled engine: analyzer._engine.
 *
 *   configure(step, send, receive, synchronized, state_names, event_names, linktype_names)
 *       hands over the state machine of fsm.py as tables (see analyzer/engine.py);
 *   run(readinto, write, fd, format, timeouts, capture, colour) -> dict
 *       reads a whole capture through `readinto`, writes every finished
 *       connection to file descriptor `fd` from a second thread (or, if fd
 *       is -1, through `write` in ~1 MB pieces), and returns the counts that
 *       Stats and Census hold in the Python path.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <errno.h>
#include <string.h>

#include "engine.h"
#include "reader.h"
#include "sink.h"

#define NAMED_PROBLEMS 5
#define SIGNAL_CHECK_MASK 0xFFFF

static int configured;

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

static PyObject *configure(PyObject *self, PyObject *args) {
    Py_buffer step, send, receive;
    unsigned int synchronized;
    PyObject *states, *events, *linktypes;
    if (!PyArg_ParseTuple(args, "y*y*y*IOOO!", &step, &send, &receive, &synchronized, &states, &events,
                          &PyDict_Type, &linktypes))
        return NULL;
    PyObject *result = NULL;
    if ((size_t)step.len != sizeof machine.step || (size_t)send.len != sizeof machine.send ||
        (size_t)receive.len != sizeof machine.receive) {
        PyErr_SetString(PyExc_ValueError, "tables of the wrong size");
        goto done;
    }
    memcpy(machine.step, step.buf, sizeof machine.step);
    memcpy(machine.send, send.buf, sizeof machine.send);
    memcpy(machine.receive, receive.buf, sizeof machine.receive);
    machine.synchronized = (uint16_t)synchronized;
    if (copy_names(states, N_STATES, sizeof machine.state_names[0], &machine.state_names[0][0]) ||
        copy_names(events, N_EVENTS, sizeof machine.event_names[0], &machine.event_names[0][0]))
        goto done;
    for (int i = 0; i < N_STATES; i++) machine.state_name_lengths[i] = (uint8_t)strlen(machine.state_names[i]);
    PyObject *key, *value;
    Py_ssize_t pos = 0;
    while (PyDict_Next(linktypes, &pos, &key, &value)) {
        const char *name = PyUnicode_AsUTF8(value);
        if (name == NULL) goto done;
        set_linktype_name((uint32_t)PyLong_AsUnsignedLong(key), name);
    }
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
    char *reason;
    int malformed;
    int64_t count;
} Reason;

typedef struct {
    PyObject *readinto, *write;
    Sink sink;
    int64_t frames, segments;
    Reason *reasons;
    size_t n_reasons, cap_reasons;
    PyObject *problems, *damage, *linktypes;
} Run;

static long fill(void *ctx, uint8_t *dst, size_t n) {
    Run *run = ctx;
    PyObject *view = PyMemoryView_FromMemory((char *)dst, (Py_ssize_t)n, PyBUF_WRITE);
    if (view == NULL) return -1;
    PyObject *got = PyObject_CallOneArg(run->readinto, view);
    Py_DECREF(view);
    if (got == NULL) return -1;
    long count = got == Py_None ? 0 : PyLong_AsLong(got);
    Py_DECREF(got);
    return count < 0 && PyErr_Occurred() ? -1 : count;
}

static int write_python(void *ctx, const char *data, size_t len) {
    PyObject *done = PyObject_CallFunction(ctx, "y#", data, (Py_ssize_t)len);
    if (done == NULL) return -1;
    Py_DECREF(done);
    return 0;
}

static int note_problem(Run *run, int64_t frame, const char *what) {
    if (PyList_GET_SIZE(run->problems) >= NAMED_PROBLEMS) return 0;
    PyObject *item = Py_BuildValue("(Ls)", (long long)frame, what);
    if (item == NULL) return -1;
    int status = PyList_Append(run->problems, item);
    Py_DECREF(item);
    return status;
}

static int note_skip(Run *run, int64_t frame, const Skip *skip) {
    for (size_t i = 0; i < run->n_reasons; i++) {
        Reason *r = &run->reasons[i];
        if (r->malformed == skip->malformed && strcmp(r->reason, skip->reason) == 0) {
            r->count++;
            goto named;
        }
    }
    if (run->n_reasons == run->cap_reasons) {
        size_t cap = run->cap_reasons ? run->cap_reasons * 2 : 16;
        Reason *more = realloc(run->reasons, cap * sizeof *more);
        if (more == NULL) return -1;
        run->reasons = more;
        run->cap_reasons = cap;
    }
    char *copy = strdup(skip->reason);
    if (copy == NULL) return -1;
    run->reasons[run->n_reasons++] = (Reason){copy, skip->malformed, 1};
named:
    return skip->malformed ? note_problem(run, frame, skip->reason) : 0;
}

static int note_damage(Run *run, const Reader *reader) {
    PyObject *item = Py_BuildValue("(Ls)", (long long)reader->damage_frame, reader->message);
    if (item == NULL) return -1;
    int status = PyList_Append(run->damage, item);
    Py_DECREF(item);
    return status ? -1 : note_problem(run, reader->damage_frame, reader->message);
}

/* Frames of one link type come in runs: count a run at a time, not a dict update per frame. */
typedef struct {
    uint32_t linktype;
    int64_t count;
} LinkRun;

static int close_link_run(Run *run, LinkRun *link) {
    if (link->count == 0) return 0;
    PyObject *key = PyLong_FromUnsignedLong(link->linktype);
    if (key == NULL) return -1;
    PyObject *old = PyDict_GetItemWithError(run->linktypes, key);
    PyObject *value = PyLong_FromLongLong((old ? PyLong_AsLongLong(old) : 0) + link->count);
    int status = value ? PyDict_SetItem(run->linktypes, key, value) : -1;
    Py_XDECREF(value);
    Py_DECREF(key);
    link->count = 0;
    return status;
}

/* Read and decode frames until `ahead` holds AHEAD packets (or the file ends);
 * return READ_FRAME to go on, READ_END, READ_ERROR (message in *error) or READ_FAILED. */
#define AHEAD 16
typedef struct {
    Packet packets[AHEAD];
    size_t head, count;
    LinkRun link;
} Lookahead;

static int top_up(Run *run, Reader *reader, const Tracker *tracker, Lookahead *ahead, PyObject **error) {
    Frame frame;
    Skip skip;
    while (ahead->count < AHEAD) {
        int status = reader_next(reader, &frame);
        if (status == READ_END || status == READ_FAILED) return status;
        if (status == READ_ERROR) {
            *error = PyUnicode_FromString(reader->message);
            return *error ? READ_ERROR : READ_FAILED;
        }
        if (status == READ_DAMAGE) {
            if (note_damage(run, reader)) return READ_FAILED;
            continue;
        }
        run->frames++;
        if (frame.linktype != ahead->link.linktype && close_link_run(run, &ahead->link)) return READ_FAILED;
        ahead->link.linktype = frame.linktype;
        ahead->link.count++;
        if ((run->frames & SIGNAL_CHECK_MASK) == 0 && PyErr_CheckSignals()) return READ_FAILED;
        Packet *p = &ahead->packets[(ahead->head + ahead->count) % AHEAD];
        if (decode_frame(&frame, p, &skip)) {
            if (note_skip(run, frame.number, &skip)) return READ_FAILED;
            continue;
        }
        run->segments++;
        packet_key(p);
        tracker_prefetch(tracker, p, 0);
        ahead->count++;
    }
    return READ_FRAME;
}

/* The main loop: frames in, connections out to the sink. Packets are decoded
 * AHEAD frames before they are tracked, so their table entries (and then their
 * connections) can be prefetched while earlier packets are processed. */
static int pump(Run *run, Reader *reader, Tracker *tracker, PyObject **error) {
    Lookahead ahead = {.head = 0, .count = 0, .link = {0, 0}};
    int status = READ_FRAME;
    for (;;) {
        if (status == READ_FRAME) status = top_up(run, reader, tracker, &ahead, error);
        if (status == READ_FAILED) return -1;
        if (ahead.count == 0) break;
        if (ahead.count > AHEAD / 2) tracker_prefetch(tracker, &ahead.packets[(ahead.head + AHEAD / 2) % AHEAD], 1);
        if (tracker_add(tracker, &ahead.packets[ahead.head])) return -1;
        ahead.head = (ahead.head + 1) % AHEAD;
        ahead.count--;
    }
    if (close_link_run(run, &ahead.link)) return -1;
    if (status == READ_ERROR) return sink_finish(&run->sink);  /* what finished stays written, as in Python */
    return tracker_flush(tracker) ? -1 : sink_finish(&run->sink);
}

static PyObject *counts(const int64_t *values, const char *const *names, int n) {
    PyObject *dict = PyDict_New();
    for (int i = 0; dict && i < n; i++) {
        if (!values[i]) continue;
        PyObject *value = PyLong_FromLongLong(values[i]);
        if (value == NULL || PyDict_SetItemString(dict, names[i], value)) Py_CLEAR(dict);
        Py_XDECREF(value);
    }
    return dict;
}

static PyObject *reasons(const Run *run, int malformed) {
    PyObject *dict = PyDict_New();
    for (size_t i = 0; dict && i < run->n_reasons; i++) {
        if (run->reasons[i].malformed != malformed) continue;
        PyObject *value = PyLong_FromLongLong(run->reasons[i].count);
        if (value == NULL || PyDict_SetItemString(dict, run->reasons[i].reason, value)) Py_CLEAR(dict);
        Py_XDECREF(value);
    }
    return dict;
}

static PyObject *result(Run *run, PyObject *error) {
    static const char *const closers[] = {"client", "server", "both", "None"};
    const Census *census = &run->sink.census;
    const char *states[N_STATES];
    for (int i = 0; i < N_STATES; i++) states[i] = machine.state_names[i];
    return Py_BuildValue(
        "{s:L,s:L,s:L,s:N,s:N,s:O,s:O,s:O,s:N,s:N,s:N,s:N,s:N,s:L,s:L,s:O}",
        "frames", (long long)run->frames, "segments", (long long)run->segments,
        "connections", (long long)census->connections, "skipped", reasons(run, 0), "malformed", reasons(run, 1),
        "problems", run->problems, "damage", run->damage, "linktypes", run->linktypes,
        "open", counts(census->open, OPEN_LABELS, 6), "close", counts(census->close, CLOSE_LABELS, 7),
        "closer", counts(census->closer, closers, 4), "final_client", counts(census->final[0], states, N_STATES),
        "final_server", counts(census->final[1], states, N_STATES), "half_close", (long long)census->half_close,
        "anomalies", (long long)census->anomalies, "error", error ? error : Py_None);
}

static PyObject *run_capture(PyObject *self, PyObject *args) {
    Run run = {0};
    Timeouts timeouts;
    const char *capture = NULL;
    Py_ssize_t capture_len = 0;
    run.sink.fd = -1;
    if (!PyArg_ParseTuple(args, "OOii(dddd)z#p", &run.readinto, &run.write, &run.sink.fd, &run.sink.style.format,
                          &timeouts.msl, &timeouts.idle, &timeouts.handshake, &timeouts.close_linger, &capture,
                          &capture_len, &run.sink.style.colour))
        return NULL;
    if (!configured) {
        PyErr_SetString(PyExc_RuntimeError, "the engine is not configured: call configure() first");
        return NULL;
    }
    run.sink.style.capture = capture;
    run.sink.style.capture_len = (size_t)capture_len;
    run.sink.write = write_python;
    run.sink.write_ctx = run.write;
    run.problems = PyList_New(0);
    run.damage = PyList_New(0);
    run.linktypes = PyDict_New();
    Reader reader;
    Tracker tracker;
    PyObject *error = NULL, *out = NULL;
    int tracker_ready = 0, status = -1;
    if (run.problems && run.damage && run.linktypes) {
        status = reader_open(&reader, fill, &run);
        if (status == READ_ERROR) {
            error = PyUnicode_FromString(reader.message);
            status = error ? 0 : -1;
        } else if (status == READ_FRAME) {
            status = tracker_init(&tracker, &timeouts, sink_take, sink_new_conn, &run.sink);
            tracker_ready = status == 0;
            if (status == 0) status = sink_start(&run.sink);
            if (status == 0) status = pump(&run, &reader, &tracker, &error);
        } else {
            status = -1;
        }
        reader_close(&reader);
    }
    if (tracker_ready) tracker_free(&tracker);  /* connections still open after an error */
    if (status == 0 && run.sink.error == 0) {
        out = result(&run, error);
    } else if (!PyErr_Occurred()) {
        if (run.sink.error > 0) {
            errno = run.sink.error;
            PyErr_SetFromErrno(PyExc_OSError);  /* EPIPE makes a BrokenPipeError */
        } else {
            PyErr_NoMemory();
        }
    }
    sink_free(&run.sink);
    Py_XDECREF(error);
    Py_XDECREF(run.problems);
    Py_XDECREF(run.damage);
    Py_XDECREF(run.linktypes);
    for (size_t i = 0; i < run.n_reasons; i++) free(run.reasons[i].reason);
    free(run.reasons);
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

static PyMethodDef methods[] = {
    {"float_repr", float_repr, METH_O, "repr(x) as the engine writes it."},
    {"round9_repr", round9_repr, METH_O, "repr(round(x, 9)) as the engine writes it."},
    {"configure", configure, METH_VARARGS, "Hand the state machine of analyzer.fsm to the engine, as tables."},
    {"run", run_capture, METH_VARARGS, "Analyze one capture; write its connections; return the counts."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "analyzer._engine",
                                    "synfin's compiled engine (see analyzer/engine.py).", -1, methods};

PyMODINIT_FUNC PyInit__engine(void) { return PyModule_Create(&module); }
