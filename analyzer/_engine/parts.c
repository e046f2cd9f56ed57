/* The engine's side of a rotated set analyzed file by file, in parallel (analyzer/parallel.py).
 *
 * Each file is first run on its own (module.c's run with a frame base and OutputStyle.meta: each
 * connection's facts before its text), and ends with the connections still open packed, not finished
 * (handover.c). The merge then goes through the files in order with one tracker of its own, the Merger,
 * holding only connections carried across a boundary:
 *   scan()          a file read without tracking: how many frame numbers it takes, its first packet's time and
 *                   the packet time at its end; and the frames of chosen keys, each with the packet time
 *                   before it (the keys the Merger holds when the file begins);
 *   merger_enter()  a file begins: the keys held now are the merge's in it (the file's own run began them
 *                   afresh: its records of them are dropped);
 *   merger_feed()   the file's frames of those keys, tracked as one run would track them: before each frame the
 *                   timers run to the packet time before it (what the frames left out did), and at the frames
 *                   where the file's own run retired connections the timers run as they did there (ticks), so
 *                   each connection is retired at the frame and in the place one run retires it (Conn.retired_*);
 *   merger_adopt()  the connections the file's own run ended with open, carried on as they stand;
 *   merger_finish() at the set's end the timers run to its last packet time, and the rest is flushed.
 * Written with OutputStyle.meta, as the parts are; the Merger's ids are first frames (parallel.py numbers).
 */
#include <errno.h>
#include <math.h>
#include <string.h>

#include "engine.h"
#include "feeder.h"
#include "halfopen.h"
#include "handover.h"
#include "parts.h"
#include "sink.h"
#include "where.h"

/* ---- scan -------------------------------------------------------------------------------- */

static int by_key(const void *x, const void *y) { return memcmp(x, y, sizeof(Key)); }

static int by_frame(const void *x, const void *y) {
    int64_t a = *(const int64_t *)x, b = *(const int64_t *)y;
    return (a > b) - (a < b);
}

/* The keys sorted as bytes, each once; how many are left. */
static size_t unique_keys(Key *keys, size_t n) {
    if (n == 0) return 0;
    qsort(keys, n, sizeof *keys, by_key);
    size_t kept = 1;
    for (size_t i = 1; i < n; i++)
        if (memcmp(&keys[i], &keys[kept - 1], sizeof *keys) != 0) keys[kept++] = keys[i];
    return kept;
}

/* A frame as scan packs it (then its caplen bytes, padded to 8), and Merger.feed reads it. */
typedef struct {
    int64_t number;
    double ts, before;  /* before: the tracker's packet time before it */
    uint32_t linktype, caplen, wire_len, pad;
} Packed;

static int pack(Buffer *out, const Packet *p, const RawFrames *raw, size_t i, double before) {
    const RawRef *ref = &raw->refs[i];
    size_t padded = ((size_t)ref->caplen + 7) & ~(size_t)7;
    if (buf_reserve(out, sizeof(Packed) + padded)) return -1;
    Packed head = {p->frame, p->ts, before, ref->linktype, ref->caplen, ref->wire_len, 0};
    memcpy(out->data + out->len, &head, sizeof head);
    memcpy(out->data + out->len + sizeof head, raw->data + ref->offset, ref->caplen);
    memset(out->data + out->len + sizeof head + ref->caplen, 0, padded - ref->caplen);
    out->len += sizeof head + padded;
    return 0;
}

typedef struct {
    const Key *keys;  /* sorted as bytes */
    size_t n;
    double now, first_ts;  /* the packet time, as tracker.c's expire moves it; the first packet's (NAN: none) */
    Buffer packed;
} Scan;

static int scan_batch(const Batch *batch, Scan *scan) {
    for (size_t i = 0; i < batch->count; i++) {
        const Packet *p = &batch->packets[i];
        double before = scan->now;
        if (isnan(scan->first_ts)) scan->first_ts = p->ts;
        if (p->ts > scan->now) scan->now = p->ts;
        if (scan->n && bsearch(&p->key, scan->keys, scan->n, sizeof(Key), by_key) != NULL &&
            pack(&scan->packed, p, batch->raw, i, before))
            return -1;
    }
    return 0;
}

/* Every batch of an opened feeder through scan_batch; 0, or -1 (an exception set, or none: out of memory). */
static int scan_all(Feeder *feeder, Scan *scan, int *ended) {
    int status = 0;
    while (!*ended && status == 0) {
        Batch *batch = feeder_next(feeder);
        if (batch == NULL) return -1;
        Py_BEGIN_ALLOW_THREADS
        status = scan_batch(batch, scan);
        Py_END_ALLOW_THREADS
        *ended = batch->last;
        feeder_done(feeder);
    }
    Py_BEGIN_ALLOW_THREADS
    feeder_stop(feeder);
    Py_END_ALLOW_THREADS
    if (status == 0 && *ended == READ_FAILED) {
        status = -1;
        if (feeder->reader.fd_errno) {
            errno = feeder->reader.fd_errno;
            PyErr_SetFromErrno(PyExc_OSError);
        }
    }
    return status;
}

/* scan(fd, base, now, keys[, filter]) -> {"frames", "number", "first_ts", "now", "error"}: one file of a set
 * read (decoded, through the BPF filter as a run reads it; its frames numbered after `base`): the frames of
 * the `keys` (48 bytes each, in any order, repeats allowed) packed one after another (Packed, then the frame's bytes, padded
 * to 8), each with the packet time before it, the files before having reached `now`; the last number the
 * file takes; its first packet's time (None: none) and the packet time at its end; why it stopped (None: it
 * did not). */
PyObject *scan_part(PyObject *self, PyObject *args) {
    int fd;
    long long base;
    Py_buffer keys;
    const char *expression = NULL;
    Scan scan = {0};
    scan.first_ts = NAN;
    if (!PyArg_ParseTuple(args, "iLdy*|z", &fd, &base, &scan.now, &keys, &expression)) return NULL;
    PyObject *out = NULL;
    Feeder *feeder = calloc(1, sizeof *feeder);
    Key *wanted = malloc(keys.len ? (size_t)keys.len : 1);
    Filter filter;
    int filtered = 0, opened = -1;
    if (feeder == NULL || wanted == NULL) goto done;
    if ((size_t)keys.len % sizeof(Key)) {
        PyErr_SetString(PyExc_ValueError, "keys: 48 bytes each");
        goto done;
    }
    memcpy(wanted, keys.buf, (size_t)keys.len);
    scan.keys = wanted;
    scan.n = unique_keys(wanted, (size_t)keys.len / sizeof(Key));
    if (expression != NULL) {
        if (filter_init(&filter, expression)) goto done;
        filtered = 1;
    }
    opened = feeder_open_part(feeder, fd, filtered ? &filter : NULL, 1, base);
    int ended = opened == READ_FRAME ? 0 : opened;
    if (opened != READ_FAILED && scan_all(feeder, &scan, &ended) == 0)
        out = Py_BuildValue("{s:y#,s:L,s:N,s:d,s:z}", "frames", scan.packed.data ? scan.packed.data : "",
                            (Py_ssize_t)scan.packed.len, "number", (long long)feeder->reader.number, "first_ts",
                            isnan(scan.first_ts) ? Py_NewRef(Py_None) : PyFloat_FromDouble(scan.first_ts), "now",
                            scan.now, "error", ended == READ_ERROR ? feeder->message : NULL);
done:
    if (out == NULL && !PyErr_Occurred()) PyErr_NoMemory();
    if (opened != -1) feeder_close(feeder);
    if (filtered) filter_free(&filter);
    free(feeder);
    free(wanted);
    free(scan.packed.data);
    PyBuffer_Release(&keys);
    return out;
}

/* handover_keys(handover) -> the keys (48 bytes each, in their order) of the connections packed there. */
PyObject *handover_keys(PyObject *self, PyObject *args) {
    Py_buffer packed;
    if (!PyArg_ParseTuple(args, "y*", &packed)) return NULL;
    Buffer keys = {0};
    const uint8_t *at = packed.buf;
    size_t left = (size_t)packed.len, used = 0;
    int status = 0;
    while (status == 0 && left) {
        Key key;
        status = conn_packed_key(at, left, &key, &used);
        if (status == 0 && buf_reserve(&keys, sizeof key)) status = HANDOVER_NO_MEMORY;
        if (status) break;
        memcpy(keys.data + keys.len, &key, sizeof key);
        keys.len += sizeof key;
        at += used;
        left -= used;
    }
    PyObject *out = NULL;
    if (status == HANDOVER_NO_MEMORY) PyErr_NoMemory();
    else if (status) PyErr_SetString(PyExc_ValueError, "a malformed handover, or one from another build of synfin");
    else out = PyBytes_FromStringAndSize(keys.data ? keys.data : "", (Py_ssize_t)keys.len);
    free(keys.data);
    PyBuffer_Release(&packed);
    return out;
}

/* ---- the merge's tracker ------------------------------------------------------------------ */

static int write_python(void *ctx, const char *data, size_t len) {
    PyObject *done = PyObject_CallFunction(ctx, "y#", data, (Py_ssize_t)len);
    Py_XDECREF(done);
    return done == NULL ? -1 : 0;
}

/* The merge's state between files: a tracker of the connections carried across boundaries (ids: their
 * first frames), the sink that writes them (OutputStyle.meta), the keys it held when the current file began. */
typedef struct {
    Tracker tracker;
    Sink sink;
    Where where;
    int have_where, tracker_ready;
    int ending;           /* merger_finish has begun: the timers ran to the set's end, the flush is under way */
    Flushing flushing;
    Key *dirty;
    size_t n_dirty;
    char *text;
    PyObject *write, *capture;
} Merger;

static const char MERGER[] = "synfin.Merger";

static void merger_free(PyObject *capsule) {
    Merger *m = PyCapsule_GetPointer(capsule, MERGER);
    if (m == NULL) return;
    if (m->tracker_ready) tracker_flush_end(&m->tracker, &m->flushing);
    if (m->tracker_ready) tracker_free(&m->tracker);
    sink_free(&m->sink);
    if (m->have_where) where_free(&m->where);
    free(m->dirty);
    free(m->text);
    Py_XDECREF(m->write);
    Py_XDECREF(m->capture);
    PyMem_Free(m);
}

static Merger *merger_of(PyObject *capsule) { return PyCapsule_GetPointer(capsule, MERGER); }

/* merger(write, format, (msl, idle, handshake, close_linger), capture, colour[, program]) -> a Merger: its
 * records (OutputStyle.meta) go to `write` in pieces; `program` the --where terms or None. */
PyObject *merger_new(PyObject *self, PyObject *args) {
    PyObject *write, *capture;
    int format, colour;
    Timeouts timeouts;
    const char *program = NULL;
    Py_ssize_t program_len = 0;
    if (!PyArg_ParseTuple(args, "Oi(dddd)Op|z#", &write, &format, &timeouts.msl, &timeouts.idle, &timeouts.handshake,
                          &timeouts.close_linger, &capture, &colour, &program, &program_len))
        return NULL;
    if (capture != Py_None && !PyBytes_Check(capture)) return PyErr_Format(PyExc_TypeError, "capture: bytes or None");
    Merger *m = PyMem_Calloc(1, sizeof *m);
    if (m == NULL) return PyErr_NoMemory();
    m->sink.fd = -1;
    m->sink.style.format = format;
    m->sink.style.colour = colour;
    m->sink.style.meta = 1;
    m->sink.write = write_python;
    m->sink.write_ctx = m->write = Py_NewRef(write);
    m->capture = Py_NewRef(capture);
    if (capture != Py_None) {
        m->sink.style.capture = PyBytes_AS_STRING(capture);
        m->sink.style.capture_len = (size_t)PyBytes_GET_SIZE(capture);
    }
    PyObject *capsule = PyCapsule_New(m, MERGER, merger_free);
    if (capsule == NULL) {
        Py_DECREF(m->write);
        Py_DECREF(m->capture);
        PyMem_Free(m);
        return NULL;
    }
    if (program != NULL) {
        const char *why;
        int parsed = where_parse(&m->where, (const uint8_t *)program, (size_t)program_len, &why);
        m->have_where = 1;
        if (parsed == -2) PyErr_NoMemory();
        else if (parsed) PyErr_Format(PyExc_ValueError, "a malformed --where program: %s", why);
        if (parsed) {
            Py_DECREF(capsule);
            return NULL;
        }
        m->sink.where = &m->where;
    }
    m->text = malloc(TUNNEL_TEXT_MAX);
    if (m->text == NULL || tracker_init(&m->tracker, &timeouts, sink_take, sink_new_conn, &m->sink)) {
        Py_DECREF(capsule);
        return PyErr_NoMemory();
    }
    m->tracker_ready = 1;
    m->tracker.frame_ids = 1;
    return capsule;
}

/* merger_enter(merger) -> the keys it holds now (48 bytes each, sorted): a file begins, and these keys'
 * frames in it are the merge's to track (its own run started them afresh: wrong). */
PyObject *merger_enter(PyObject *self, PyObject *capsule) {
    Merger *m = merger_of(capsule);
    if (m == NULL) return NULL;
    const Tracker *t = &m->tracker;
    free(m->dirty);
    m->n_dirty = 0;
    m->dirty = malloc((t->open_count ? t->open_count : 1) * sizeof *m->dirty);
    if (m->dirty == NULL) return PyErr_NoMemory();
    for (size_t i = 0; i < t->table_size; i++)
        if (t->table[i].ref != 0) m->dirty[m->n_dirty++] = *key_of(t->table[i].ref);
    qsort(m->dirty, m->n_dirty, sizeof *m->dirty, by_key);
    return PyBytes_FromStringAndSize(m->n_dirty ? (const char *)m->dirty : "", (Py_ssize_t)(m->n_dirty * sizeof(Key)));
}

static int is_dirty(const Merger *m, const Key *key) {
    return m->n_dirty && bsearch(key, m->dirty, m->n_dirty, sizeof *m->dirty, by_key) != NULL;
}

/* A tick: the timers as a frame left out ran them (to the packet time before it, then to its own). */
static int tick(Tracker *t, int64_t number, double ts, double before) {
    if (tracker_tick_as(t, before, number, before, ts, RETIRED_BEFORE)) return -1;
    return tracker_tick_as(t, ts, number, before, ts, RETIRED_TIMER);
}

/* A packed frame: tracked if its key is the merge's in this file (the timers to the packet time before it
 * first), else a tick. */
static int feed_frame(Merger *m, const Packed *head) {
    Frame frame = {head->number, head->ts, head->linktype, (const uint8_t *)(head + 1), head->caplen, head->wire_len};
    Packet p;
    Skip skip;
    if (decode_frame(&frame, &p, &skip, m->text)) return 0;  /* never: scan keeps decoded frames only */
    packet_key(&p);
    Tracker *t = &m->tracker;
    if (!is_dirty(m, &p.key)) return tick(t, head->number, head->ts, head->before);
    if (tracker_tick_as(t, head->before, head->number, head->before, head->ts, RETIRED_BEFORE)) return -1;
    return tracker_add(t, &p);
}

/* Every packed frame and tick in order of number (a tick at a frame's number is that frame's: left out). */
static int feed_all(Merger *m, const Py_buffer *frames, const int64_t *numbers, const double *times,
                    const double *befores, size_t n_ticks) {
    size_t at = 0, k = 0, len = (size_t)frames->len;
    while (at < len || k < n_ticks) {
        const Packed *head = at + sizeof(Packed) <= len ? (const Packed *)((const char *)frames->buf + at) : NULL;
        if (at < len && (head == NULL || at + sizeof *head + head->caplen > len)) return -2;
        int64_t next_tick = k < n_ticks ? numbers[k] : INT64_MAX;
        if (head != NULL && head->number <= next_tick) {
            if (head->number == next_tick) k++;
            if (feed_frame(m, head)) return -1;
            at += sizeof *head + (((size_t)head->caplen + 7) & ~(size_t)7);
        } else {
            if (tick(&m->tracker, numbers[k], times[k], befores[k])) return -1;
            k++;
        }
    }
    return 0;
}

static int merger_failed(Merger *m, int status) {
    if (status == -2) PyErr_SetString(PyExc_ValueError, "frames: not as scan packs them");
    else if (!PyErr_Occurred()) {
        if (m->sink.error > 0) {
            errno = m->sink.error;
            PyErr_SetFromErrno(PyExc_OSError);
        } else {
            PyErr_NoMemory();
        }
    }
    return -1;
}

/* merger_feed(merger, frames, numbers, times, befores): one file's frames of the keys carried into it (scan;
 * their packet times before them), and its ticks (int64 numbers, sorted; double times; double packet times
 * before): the frames where the file's own run retired connections, so that the timers run where they ran.
 * The records retired meanwhile are written before it returns. */
PyObject *merger_feed(PyObject *self, PyObject *args) {
    PyObject *capsule;
    Py_buffer frames, numbers, times, befores;
    if (!PyArg_ParseTuple(args, "Oy*y*y*y*", &capsule, &frames, &numbers, &times, &befores)) return NULL;
    Merger *m = merger_of(capsule);
    size_t n = (size_t)numbers.len / sizeof(int64_t);
    int status = m == NULL ? -1 : 0;
    if (status == 0 && ((size_t)times.len != n * sizeof(double) || (size_t)befores.len != n * sizeof(double))) {
        PyErr_SetString(PyExc_ValueError, "ticks: as many times and packet times as numbers");
        status = -1;
    }
    if (status == 0) status = feed_all(m, &frames, numbers.buf, times.buf, befores.buf, n);
    if (status == 0) status = sink_drain(&m->sink);
    if (status != 0 && m != NULL) merger_failed(m, status);
    PyBuffer_Release(&frames);
    PyBuffer_Release(&numbers);
    PyBuffer_Release(&times);
    PyBuffer_Release(&befores);
    return status ? NULL : Py_NewRef(Py_None);
}

/* merger_adopt(merger, handover) -> how many it took: the connections a file's own run ended with open
 * (handover.c), carried on; those on a key the merge held when the file began are left (their run was wrong:
 * the merge has them right). */
PyObject *merger_adopt(PyObject *self, PyObject *args) {
    PyObject *capsule;
    Py_buffer packed;
    if (!PyArg_ParseTuple(args, "Oy*", &capsule, &packed)) return NULL;
    Merger *m = merger_of(capsule);
    long long adopted = 0;
    int status = m == NULL ? -1 : 0;
    const uint8_t *at = packed.buf;
    size_t left = (size_t)packed.len;
    while (status == 0 && left) {
        size_t used = 0;
        int half = 0, taken = 0, unpacked = packed_kind(at, left, &half);
        if (unpacked == 0 && half) {
            HalfOpen record;
            unpacked = half_unpack(at, left, &record, &used);
            if (unpacked == 0) {
                taken = is_dirty(m, &record.key) ? 1 : tracker_adopt_half(&m->tracker, &record);
                if (taken != 0) free(record.later);
            }
        } else if (unpacked == 0) {
            Conn *c = sink_new_conn(&m->sink);
            unpacked = c == NULL ? HANDOVER_NO_MEMORY : conn_unpack(at, left, c, &m->tracker.timeouts, &used);
            if (unpacked == 0) taken = is_dirty(m, &c->key) ? 1 : tracker_adopt(&m->tracker, c);
            if (c != NULL && (unpacked != 0 || taken != 0)) sink_recycle(&m->sink, c);  /* contents freed, memory reused */
        }
        if (unpacked) {
            if (unpacked == HANDOVER_NO_MEMORY) PyErr_NoMemory();
            else PyErr_SetString(PyExc_ValueError, unpacked == HANDOVER_OTHER_BUILD
                                 ? "a part was run by another build of synfin (every worker must run this one)"
                                 : "a malformed handover");
            status = -1;
            break;
        }
        at += used;
        left -= used;
        if (taken < 0) status = merger_failed(m, -1);
        else if (taken == 0) adopted++;
    }
    PyBuffer_Release(&packed);
    return status ? NULL : PyLong_FromLongLong(adopted);
}

/* merger_held(merger, since) -> the first frames (int64s, sorted) of the connections it holds that began at
 * frame `since` or later. */
PyObject *merger_held(PyObject *self, PyObject *args) {
    PyObject *capsule;
    long long since;
    if (!PyArg_ParseTuple(args, "OL", &capsule, &since)) return NULL;
    Merger *m = merger_of(capsule);
    if (m == NULL) return NULL;
    const Tracker *t = &m->tracker;
    int64_t *firsts = malloc((t->open_count ? t->open_count : 1) * sizeof *firsts);
    if (firsts == NULL) return PyErr_NoMemory();
    size_t n = 0;
    for (size_t i = 0; i < t->table_size; i++)
        if (t->table[i].ref != 0 && id_of(t->table[i].ref) >= since) firsts[n++] = id_of(t->table[i].ref);
    qsort(firsts, n, sizeof *firsts, by_frame);
    PyObject *out = PyBytes_FromStringAndSize(n ? (const char *)firsts : "", (Py_ssize_t)(n * sizeof *firsts));
    free(firsts);
    return out;
}

static PyObject *census_dict(const Census *census, const EndpointTable *endpoints) {
    static const char *const closers[] = {"client", "server", "both", "None"};
    const char *states[N_STATES];
    for (int i = 0; i < N_STATES; i++) states[i] = machine.state_names[i];
    return Py_BuildValue("{s:L,s:N,s:N,s:N,s:N,s:N,s:L,s:L,s:L,s:(LLL),s:N}", "connections", (long long)census->connections,
                         "open", named_counts(census->open, OPEN_LABELS, 6),
                         "close", named_counts(census->close, CLOSE_LABELS, 7),
                         "closer", named_counts(census->closer, closers, 4),
                         "final_client", named_counts(census->final[0], states, N_STATES),
                         "final_server", named_counts(census->final[1], states, N_STATES),
                         "half_close", (long long)census->half_close, "anomalies", (long long)census->anomalies,
                         "matched", (long long)census->matched, "retransmits", (long long)census->retransmits[0],
                         (long long)census->retransmits[1], (long long)census->retransmits[2],
                         "endpoints", endpoint_counts(endpoints));
}

/* merger_finish(merger, end, n) -> its census, or None while it is not done: the set is over (its last packet
 * time `end`): the first call runs the timers to it, then each flushes up to `n` of the connections left, in
 * order of id, and writes them (so that the end is written a piece at a time); the last writes everything. */
PyObject *merger_finish(PyObject *self, PyObject *args) {
    PyObject *capsule;
    double end;
    Py_ssize_t n;
    if (!PyArg_ParseTuple(args, "Odn", &capsule, &end, &n)) return NULL;
    Merger *m = merger_of(capsule);
    if (m == NULL) return NULL;
    Tracker *t = &m->tracker;
    int status = 0;
    if (!m->ending) {
        free(m->dirty);
        m->dirty = NULL;
        m->n_dirty = 0;
        m->ending = 1;
        status = tracker_tick_as(t, end, INT64_MAX, end, end, RETIRED_END);
        if (status == 0 && t->last_ts < end) t->last_ts = end;  /* the set's last frame, which the merge may not hold */
        if (status == 0) status = tracker_flush_begin(t, &m->flushing);
    } else {
        status = tracker_flush_some(t, &m->flushing, n > 0 ? (size_t)n : 1);
    }
    int done = status == 0 && m->flushing.next == m->flushing.count;
    if (status == 0) status = done ? sink_finish(&m->sink) : sink_drain(&m->sink);
    if (status != 0 || m->sink.error != 0) {
        merger_failed(m, status);
        return NULL;
    }
    if (!done) return Py_NewRef(Py_None);
    tracker_flush_end(t, &m->flushing);
    return census_dict(&m->sink.census, &m->sink.endpoints);
}

/* ---- split_meta ------------------------------------------------------------------------------ */

enum { META_INTS = 15, META_FLOATS = 3 };

/* One meta line (sink.c write_meta, after its "\x1e"): the key into `key`, the numbers into ints and floats,
 * the server endpoint's name as `*name` (up to the line's end). */
static int parse_meta(const char *at, const char *end, uint8_t *key, int64_t *ints, double *floats,
                      const char **name) {
    for (size_t i = 0; i < sizeof(Key); i++) {
        if (at + 2 > end) return -1;
        int hi = at[0] <= '9' ? at[0] - '0' : at[0] - 'a' + 10, lo = at[1] <= '9' ? at[1] - '0' : at[1] - 'a' + 10;
        key[i] = (uint8_t)(hi << 4 | lo);
        at += 2;
    }
    char *next;
    /* id, first frame, retired frame, how; when, before, ts; then the census's eight, the retransmissions */
    for (int k = 0; k < 4; k++, at = next) ints[k] = strtoll(at, &next, 10);
    for (int k = 0; k < META_FLOATS; k++, at = next) floats[k] = strtod(at, &next);
    for (int k = 4; k < META_INTS; k++, at = next) ints[k] = strtoll(at, &next, 10);
    if (at + 2 > end || *at != ' ' || end[-1] != '\n') return -1;
    *name = at + 1;
    return 0;
}

/* split_meta(data) -> (keys, ints, floats, texts, servers): the records of a run with OutputStyle.meta, as a
 * bytes of their keys (48 each), of int64s (15 each: id, first frame, retired frame, how, open, close, closer,
 * final client and server states, half_close, anomalies, matched, SYN/SYN-ACK/FIN retransmissions), of doubles
 * (3 each: when, before, ts), a list of each one's text, and a list of each one's server endpoint ("ip:port"). */
PyObject *split_meta(PyObject *self, PyObject *args) {
    Py_buffer data;
    if (!PyArg_ParseTuple(args, "y*", &data)) return NULL;
    const char *start = data.buf, *end = start + data.len;
    size_t n = 0;
    for (const char *at = start; (at = memchr(at, '\x1e', (size_t)(end - at))) != NULL; at++) n++;
    PyObject *keys = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)(n * sizeof(Key)));
    PyObject *ints = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)(n * META_INTS * sizeof(int64_t)));
    PyObject *floats = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)(n * META_FLOATS * sizeof(double)));
    PyObject *texts = PyList_New((Py_ssize_t)n), *servers = PyList_New((Py_ssize_t)n), *out = NULL;
    const char *at = n ? memchr(start, '\x1e', (size_t)(end - start)) : NULL;
    for (size_t i = 0; keys && ints && floats && texts && servers && i < n; i++) {
        const char *name = NULL;
        const char *line_end = memchr(at, '\n', (size_t)(end - at));
        const char *next = line_end ? memchr(line_end, '\x1e', (size_t)(end - line_end)) : NULL;
        if (next == NULL) next = end;
        if (line_end == NULL || parse_meta(at + 1, line_end + 1, (uint8_t *)PyBytes_AS_STRING(keys) + i * sizeof(Key),
                                           (int64_t *)PyBytes_AS_STRING(ints) + i * META_INTS,
                                           (double *)PyBytes_AS_STRING(floats) + i * META_FLOATS, &name)) {
            PyErr_SetString(PyExc_ValueError, "a malformed meta line");
            goto done;
        }
        PyObject *text = PyBytes_FromStringAndSize(line_end + 1, next - line_end - 1);
        if (text == NULL) goto done;
        PyList_SET_ITEM(texts, (Py_ssize_t)i, text);
        PyObject *server = PyUnicode_FromStringAndSize(name, line_end - name);
        if (server == NULL) goto done;
        PyList_SET_ITEM(servers, (Py_ssize_t)i, server);
        at = next;
    }
    if (keys && ints && floats && texts && servers) out = PyTuple_Pack(5, keys, ints, floats, texts, servers);
done:
    Py_XDECREF(keys);
    Py_XDECREF(ints);
    Py_XDECREF(floats);
    Py_XDECREF(texts);
    Py_XDECREF(servers);
    PyBuffer_Release(&data);
    return out;
}

/* ---- renumber ------------------------------------------------------------------------------ */

enum { IDS_TABLE, IDS_JSON, IDS_CSV, IDS_RECORDS };
#define TABLE_ID_WIDTH 5  /* report._COLUMNS: the id column */

/* `text` with the id it starts with (after CSV's capture cell, `skip` bytes) replaced by `id`, written at
 * *at (room for len + 24 bytes); 0, or -2: no id there. */
static int put_id(char **at, const char *text, size_t len, int64_t id, int mode, size_t skip) {
    char digits[24];
    int n = snprintf(digits, sizeof digits, "%lld", (long long)id);
    char *out = *at;
    const char *rest;
    if (mode == IDS_TABLE) {
        size_t start = 0;
        while (start < len && text[start] == ' ') start++;
        const char *space = memchr(text + start, ' ', len - start);
        if (space == NULL) {  /* the id alone: up to the newline */
            space = text + len;
            while (space > text + start && space[-1] == '\n') space--;
        }
        for (int pad = n; pad < TABLE_ID_WIDTH; pad++) *out++ = ' ';
        memcpy(out, digits, (size_t)n);
        out += n;
        rest = space;
    } else {
        size_t start = mode == IDS_JSON ? sizeof "{\"id\": " - 1 : skip + 1;
        const char *comma = start <= len ? memchr(text + start, ',', len - start) : NULL;
        if (comma == NULL) return -2;
        memcpy(out, text, start);
        out += start;
        memcpy(out, digits, (size_t)n);
        out += n;
        rest = comma;
    }
    memcpy(out, rest, (size_t)(text + len - rest));
    *at = out + (text + len - rest);
    return 0;
}

/* renumber(texts, ids, mode, skip) -> bytes: the texts (a list of bytes: records as the engine writes them)
 * one after another, each with its id replaced by ids[i] (int64s; < 0: left out), the id where `mode` writes
 * it (0 table, 1 JSON, 2 CSV after `skip` bytes of capture cell, 3 the records format: a CSV row's head
 * then a JSON line). */
PyObject *renumber(PyObject *self, PyObject *args) {
    PyObject *texts;
    Py_buffer ids;
    int mode;
    Py_ssize_t skip;
    if (!PyArg_ParseTuple(args, "O!y*in", &PyList_Type, &texts, &ids, &mode, &skip)) return NULL;
    Py_ssize_t n = PyList_GET_SIZE(texts);
    const int64_t *new_ids = ids.buf;
    int status = (size_t)ids.len == (size_t)n * sizeof(int64_t) && skip >= 0 ? 0 : -2;
    Py_ssize_t room = 0;
    for (Py_ssize_t i = 0; status == 0 && i < n; i++) {
        PyObject *item = PyList_GET_ITEM(texts, i);
        if (!PyBytes_Check(item)) status = -2;
        else if (new_ids[i] >= 0) room += PyBytes_GET_SIZE(item) + 48;  /* two ids of up to 24 characters */
    }
    PyObject *out = status == 0 ? PyBytes_FromStringAndSize(NULL, room) : NULL;
    char *at = out != NULL ? PyBytes_AS_STRING(out) : NULL;
    for (Py_ssize_t i = 0; out != NULL && status == 0 && i < n; i++) {
        if (new_ids[i] < 0) continue;
        PyObject *item = PyList_GET_ITEM(texts, i);
        const char *text = PyBytes_AS_STRING(item);
        size_t len = (size_t)PyBytes_GET_SIZE(item);
        if (mode != IDS_RECORDS) {
            status = put_id(&at, text, len, new_ids[i], mode, (size_t)skip);
            continue;
        }
        const char *newline = memchr(text, '\n', len);
        size_t head = newline != NULL ? (size_t)(newline - text) + 1 : len;
        status = put_id(&at, text, head, new_ids[i], IDS_CSV, 0);
        if (status == 0) status = put_id(&at, text + head, len - head, new_ids[i], IDS_JSON, 0);
    }
    if (status == -2) {
        Py_CLEAR(out);
        PyErr_SetString(PyExc_ValueError, "renumber: texts and ids do not match, or a text has no id");
    }
    if (out != NULL) _PyBytes_Resize(&out, at - PyBytes_AS_STRING(out));
    PyBuffer_Release(&ids);
    return out;
}
