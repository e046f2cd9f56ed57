/* The Python face of the compiled engine: analyzer._engine.
 *
 *   configure(step, send, receive, synchronized, state_names, event_names, linktype_names)
 *       hands over the state machine of fsm.py as tables (see analyzer/engine.py);
 *   run(readinto, write, format, timeouts, capture, colour) -> dict
 *       reads a whole capture through `readinto`, writes every finished
 *       connection through `write` in ~1 MB pieces, and returns the counts
 *       that Stats and Census hold in the Python path.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <string.h>

#include "engine.h"
#include "reader.h"

#define FLUSH_AT (1u << 20)
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
    Buffer out;
    OutputStyle style;
    int64_t frames, segments, connections;
    Reason *reasons;
    size_t n_reasons, cap_reasons;
    PyObject *problems, *damage, *linktypes;
    int64_t open[6], close[7], closer[4], final[2][N_STATES], half_close, anomalies;
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

static int flush(Run *run) {
    if (run->out.len == 0) return 0;
    PyObject *done = PyObject_CallFunction(run->write, "y#", run->out.data, (Py_ssize_t)run->out.len);
    run->out.len = 0;
    if (done == NULL) return -1;
    Py_DECREF(done);
    return 0;
}

static int label_index(const char *const *labels, int n, const char *label) {
    for (int i = 0; i < n; i++)
        if (labels[i] == label) return i;
    return n - 1;
}

static int finished(void *ctx, Conn *c) {
    Run *run = ctx;
    Labels labels;
    conn_labels(c, &labels);
    run->connections++;
    run->open[label_index(OPEN_LABELS, 6, labels.open)]++;
    run->close[label_index(CLOSE_LABELS, 7, labels.close)]++;
    const char *closer = labels.active_closer;
    run->closer[closer == NULL ? 3 : closer[0] == 'c' ? 0 : closer[0] == 's' ? 1 : 2]++;
    run->final[0][c->ep[ROLE_CLIENT].state]++;
    run->final[1][c->ep[ROLE_SERVER].state]++;
    run->half_close += c->half_close;
    run->anomalies += c->n_anomalies;
    if (write_record(&run->out, c, &labels, &run->style)) return -1;
    if (run->out.len >= FLUSH_AT) return flush(run);
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

static int pump(Run *run, Reader *reader, Tracker *tracker, PyObject **error) {
    Frame frame;
    Packet packet;
    Skip skip;
    LinkRun link = {0, 0};
    for (;;) {
        int status = reader_next(reader, &frame);
        if (status == READ_END) break;
        if (status == READ_FAILED) return -1;
        if (status == READ_ERROR) {
            *error = PyUnicode_FromString(reader->message);
            return *error ? 0 : -1;
        }
        if (status == READ_DAMAGE) {
            if (note_damage(run, reader)) return -1;
            continue;
        }
        run->frames++;
        if (frame.linktype != link.linktype && close_link_run(run, &link)) return -1;
        link.linktype = frame.linktype;
        link.count++;
        if ((run->frames & SIGNAL_CHECK_MASK) == 0 && PyErr_CheckSignals()) return -1;
        if (decode_frame(&frame, &packet, &skip)) {
            if (note_skip(run, frame.number, &skip)) return -1;
            continue;
        }
        run->segments++;
        if (tracker_add(tracker, &packet)) return -1;
    }
    if (close_link_run(run, &link)) return -1;
    return tracker_flush(tracker);
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
    const char *states[N_STATES];
    for (int i = 0; i < N_STATES; i++) states[i] = machine.state_names[i];
    return Py_BuildValue(
        "{s:L,s:L,s:L,s:N,s:N,s:O,s:O,s:O,s:N,s:N,s:N,s:N,s:N,s:L,s:L,s:O}",
        "frames", (long long)run->frames, "segments", (long long)run->segments,
        "connections", (long long)run->connections, "skipped", reasons(run, 0), "malformed", reasons(run, 1),
        "problems", run->problems, "damage", run->damage, "linktypes", run->linktypes,
        "open", counts(run->open, OPEN_LABELS, 6), "close", counts(run->close, CLOSE_LABELS, 7),
        "closer", counts(run->closer, closers, 4), "final_client", counts(run->final[0], states, N_STATES),
        "final_server", counts(run->final[1], states, N_STATES), "half_close", (long long)run->half_close,
        "anomalies", (long long)run->anomalies, "error", error ? error : Py_None);
}

static PyObject *run_capture(PyObject *self, PyObject *args) {
    Run run = {0};
    Timeouts timeouts;
    const char *capture = NULL;
    Py_ssize_t capture_len = 0;
    if (!PyArg_ParseTuple(args, "OOi(dddd)z#p", &run.readinto, &run.write, &run.style.format, &timeouts.msl,
                          &timeouts.idle, &timeouts.handshake, &timeouts.close_linger, &capture, &capture_len,
                          &run.style.colour))
        return NULL;
    if (!configured) {
        PyErr_SetString(PyExc_RuntimeError, "the engine is not configured: call configure() first");
        return NULL;
    }
    run.style.capture = capture;
    run.style.capture_len = (size_t)capture_len;
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
            status = tracker_init(&tracker, &timeouts, finished, &run);
            tracker_ready = status == 0;
            if (status == 0) status = pump(&run, &reader, &tracker, &error);
            if (status == 0) status = flush(&run);
        } else {
            status = -1;
        }
        reader_close(&reader);
    }
    if (tracker_ready) tracker_free(&tracker);
    if (status == 0) out = result(&run, error);
    else if (!PyErr_Occurred()) PyErr_NoMemory();
    Py_XDECREF(error);
    Py_XDECREF(run.problems);
    Py_XDECREF(run.damage);
    Py_XDECREF(run.linktypes);
    for (size_t i = 0; i < run.n_reasons; i++) free(run.reasons[i].reason);
    free(run.reasons);
    free(run.out.data);
    return out;
}

static PyMethodDef methods[] = {
    {"configure", configure, METH_VARARGS, "Hand the state machine of analyzer.fsm to the engine, as tables."},
    {"run", run_capture, METH_VARARGS, "Analyze one capture; write its connections; return the counts."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "analyzer._engine",
                                    "synfin's compiled engine (see analyzer/engine.py).", -1, methods};

PyMODINIT_FUNC PyInit__engine(void) { return PyModule_Create(&module); }
