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
#include "halfopen.h"
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

/* A frame as collect_keys packs it (then its caplen bytes, padded to 8), and replay reads it. */
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

static int collect_batch(const Batch *batch, const Wanted *wanted, size_t n, double *now, Buffer *out) {
    for (size_t i = 0; i < batch->count; i++) {
        const Packet *p = &batch->packets[i];
        double before = *now;
        if (p->ts > *now) *now = p->ts;  /* as tracker.c's expire moves its packet time */
        const Wanted *w = find(wanted, n, &p->key);
        if (w != NULL && p->frame >= w->from && pack(out, p, batch->raw, i, before)) return -1;
    }
    return 0;
}

/* collect_keys(fd, base, now, keys, sinces, firsts, index[, filter]) -> {"frames": the frames packed one after
 * another (Packed, then the frame's bytes, padded to 8), "error": str or None}: `keys` the Keys (48 bytes each)
 * one after another, sorted as bytes; `sinces` (int64s) the file each is carried from, `firsts` (int64s) the
 * first frame of the connection carried there: in file `index`, a key's frames from `firsts` on in its own
 * file, all of them in later files, none before. `now` the packet time the files before reached. */
PyObject *collect_keys(PyObject *self, PyObject *args) {
    int fd;
    long long base;
    double now;
    Py_buffer keys, sinces, firsts;
    long long index;
    const char *expression = NULL;
    if (!PyArg_ParseTuple(args, "iLdy*y*y*L|z", &fd, &base, &now, &keys, &sinces, &firsts, &index, &expression))
        return NULL;
    size_t n = (size_t)keys.len / sizeof(Key);
    PyObject *out = NULL;
    Buffer packed = {0};
    Wanted *wanted = calloc(n ? n : 1, sizeof *wanted);
    Feeder *feeder = calloc(1, sizeof *feeder);
    Filter filter;
    int filtered = 0, opened = -1;
    if (wanted == NULL || feeder == NULL) goto done;
    if ((size_t)keys.len % sizeof(Key) || (size_t)sinces.len != n * sizeof(int64_t) ||
        (size_t)firsts.len != n * sizeof(int64_t)) {
        PyErr_SetString(PyExc_ValueError, "keys: 48 bytes each, sorted, with a file and a first frame each");
        goto done;
    }
    for (size_t i = 0; i < n; i++) {
        memcpy(&wanted[i].key, (const char *)keys.buf + i * sizeof(Key), sizeof(Key));
        int64_t since = ((const int64_t *)sinces.buf)[i];
        wanted[i].from = since < index ? 0 : since == index ? ((const int64_t *)firsts.buf)[i] : INT64_MAX;
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
        Py_BEGIN_ALLOW_THREADS
        status = collect_batch(batch, wanted, n, &now, &packed);
        Py_END_ALLOW_THREADS
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
        out = Py_BuildValue("{s:y#,s:z}", "frames", packed.data ? packed.data : "", (Py_ssize_t)packed.len, "error",
                            ended == READ_ERROR ? feeder->message : NULL);
done:
    if (out == NULL && !PyErr_Occurred()) PyErr_NoMemory();
    if (opened != -1) feeder_close(feeder);
    if (filtered) filter_free(&filter);
    free(feeder);
    free(wanted);
    free(packed.data);
    PyBuffer_Release(&keys);
    PyBuffer_Release(&sinces);
    PyBuffer_Release(&firsts);
    return out;
}

/* ---- replay ---------------------------------------------------------------------------- */

static int write_python(void *ctx, const char *data, size_t len) {
    PyObject *done = PyObject_CallFunction(ctx, "y#", data, (Py_ssize_t)len);
    Py_XDECREF(done);
    return done == NULL ? -1 : 0;
}

/* A tick: the timers as a frame left out ran them (to the packet time before it, then to its own). */
static int replay_tick(Tracker *t, int64_t number, double ts, double before) {
    if (tracker_tick_as(t, before, number, before, ts, RETIRED_BEFORE)) return -1;
    return tracker_tick_as(t, ts, number, before, ts, RETIRED_TIMER);
}

typedef struct {
    Key *keys;
    size_t n;
} KeySet;  /* sorted as bytes */

static int in_set(const KeySet *set, const Key *key) {
    return set->n && bsearch(key, set->keys, set->n, sizeof *set->keys, by_key) != NULL;
}

typedef struct {
    Py_buffer *files;        /* each file's packed frames */
    size_t n_files, file, at;
    const int64_t *bases;    /* file j's frames are numbered after bases[j] */
    Py_buffer *open_keys, *open_firsts;  /* each file's keys open at its own run's end, their connections' first frames */
    KeySet *dirty;           /* each file's keys held by a connection here when it begins (filled as it comes) */
    size_t current;          /* the file whose items are replayed now (+ 1; 0: none yet) */
    const int64_t *numbers;  /* the ticks: numbers, times, packet times before (sorted by number) */
    const double *times, *befores;
    size_t n_ticks, tick;
} Items;

/* The keys that hold a connection in the table now. */
static int snapshot(const Tracker *t, KeySet *out) {
    out->keys = malloc((t->open_count ? t->open_count : 1) * sizeof *out->keys);
    if (out->keys == NULL) return -1;
    out->n = 0;
    for (size_t i = 0; i < t->table_size; i++)
        if (t->table[i].ref != 0) out->keys[out->n++] = *key_of(t->table[i].ref);
    qsort(out->keys, out->n, sizeof *out->keys, by_key);
    return 0;
}

/* Before the item numbered `number`: the files it is past begin (their dirty keys noted). */
static int enter(const Tracker *t, Items *items, int64_t number) {
    while (items->current < items->n_files && number > items->bases[items->current]) {
        if (snapshot(t, &items->dirty[items->current])) return -1;
        items->current++;
    }
    return 0;
}

/* Whether a frame of the current file is replayed: its key held a connection when the file began (the
 * file's own run started it afresh: wrong), or it was open at the file's own end, from the first frame of
 * the connection open there (its own run was right until then, and only then tells it). */
static int wanted_here(const Items *items, const Packet *p) {
    size_t file = items->current - 1;
    if (in_set(&items->dirty[file], &p->key)) return 1;
    const Py_buffer *keys = &items->open_keys[file];
    size_t n = (size_t)keys->len / sizeof(Key);
    const Key *found = n ? bsearch(&p->key, keys->buf, n, sizeof(Key), by_key) : NULL;
    return found != NULL && p->frame >= ((const int64_t *)items->open_firsts[file].buf)[found - (const Key *)keys->buf];
}

/* A packed frame: tracked if wanted here (the timers to the packet time before it first), else a tick. */
static int replay_frame(Tracker *t, const Items *items, const Packed *head, const uint8_t *data, char *text) {
    Frame frame = {head->number, head->ts, head->linktype, data, head->caplen, head->wire_len};
    Packet p;
    Skip skip;
    if (decode_frame(&frame, &p, &skip, text)) return 0;  /* never: collect_keys keeps decoded frames only */
    packet_key(&p);
    if (!wanted_here(items, &p)) return replay_tick(t, head->number, head->ts, head->before);
    if (tracker_tick_as(t, head->before, head->number, head->before, head->ts, RETIRED_BEFORE)) return -1;
    return tracker_add(t, &p);
}

/* The next packed frame (NULL: none left); its bytes follow it. */
static const Packed *next_frame(Items *items) {
    while (items->file < items->n_files && items->at >= (size_t)items->files[items->file].len) {
        items->file++;
        items->at = 0;
    }
    if (items->file == items->n_files) return NULL;
    return (const Packed *)((const char *)items->files[items->file].buf + items->at);
}

/* Every frame and tick in order of number (a tick at a frame's number is that frame's: left out). */
static int replay_all(Tracker *t, Items *items, char *text) {
    for (;;) {
        const Packed *head = next_frame(items);
        int64_t tick = items->tick < items->n_ticks ? items->numbers[items->tick] : INT64_MAX;
        if (head == NULL && tick == INT64_MAX) return enter(t, items, INT64_MAX);
        int64_t number = head != NULL && head->number <= tick ? head->number : tick;
        if (enter(t, items, number)) return -1;
        if (head != NULL && head->number <= tick) {
            if (head->number == tick) items->tick++;
            if (replay_frame(t, items, head, (const uint8_t *)(head + 1), text)) return -1;
            items->at += sizeof *head + (((size_t)head->caplen + 7) & ~(size_t)7);
        } else {
            size_t k = items->tick++;
            if (replay_tick(t, items->numbers[k], items->times[k], items->befores[k])) return -1;
        }
    }
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

/* census["dirty"]: each file's keys that held a connection here when it began (sorted, 48 bytes each). */
static PyObject *with_dirty(PyObject *census, const Items *items) {
    PyObject *list = census ? PyList_New((Py_ssize_t)items->n_files) : NULL;
    for (size_t i = 0; list && i < items->n_files; i++) {
        const KeySet *set = &items->dirty[i];
        PyObject *keys = PyBytes_FromStringAndSize(set->n ? (const char *)set->keys : "", (Py_ssize_t)(set->n * sizeof(Key)));
        if (keys == NULL) Py_CLEAR(list);
        else PyList_SET_ITEM(list, (Py_ssize_t)i, keys);
    }
    if (list == NULL || PyDict_SetItemString(census, "dirty", list)) Py_CLEAR(census);
    Py_XDECREF(list);
    return census;
}

/* replay(files, bases, opens, numbers, times, befores, write, format, (msl, idle, handshake, close_linger), capture,
 * colour, end[, program]) -> census, with "dirty": `files` each file's packed frames (collect_keys: those of
 * every key that may carry state into it), in the set's order; `bases` (int64s) the number each file's frames
 * come after; `opens` for each file (keys, firsts): the keys its own run ended with open (sorted; int64 first
 * frames of those connections). A frame is tracked if its key held a connection here when its file began,
 * or from the open connection's first frame on; any other is a tick. The ticks as
 * three arrays (int64 numbers, sorted; double times; double packet times before); `end` the set's last packet
 * time; `program` the --where terms or None. The text (with OutputStyle.meta) goes to `write` in pieces. */
PyObject *replay(PyObject *self, PyObject *args) {
    PyObject *files, *write, *opens;
    Py_buffer numbers, times, befores, bases;
    Sink sink;
    memset(&sink, 0, sizeof sink);
    sink.fd = -1;
    Timeouts timeouts;
    const char *capture = NULL, *program = NULL;
    Py_ssize_t capture_len = 0, program_len = 0;
    double end;
    if (!PyArg_ParseTuple(args, "Oy*Oy*y*y*Oi(dddd)z#pd|z#", &files, &bases, &opens, &numbers, &times, &befores, &write,
                          &sink.style.format, &timeouts.msl, &timeouts.idle, &timeouts.handshake,
                          &timeouts.close_linger, &capture, &capture_len, &sink.style.colour, &end, &program,
                          &program_len))
        return NULL;
    Items items = {0};
    items.numbers = numbers.buf;
    items.times = times.buf;
    items.befores = befores.buf;
    items.n_ticks = (size_t)numbers.len / sizeof(int64_t);
    PyObject *out = NULL, *sequence = PySequence_Fast(files, "files: a sequence of bytes");
    Py_ssize_t n_files = sequence ? PySequence_Fast_GET_SIZE(sequence) : 0;
    items.files = PyMem_Calloc((size_t)n_files + 1, sizeof *items.files);
    items.open_keys = PyMem_Calloc((size_t)n_files + 1, sizeof *items.open_keys);
    items.open_firsts = PyMem_Calloc((size_t)n_files + 1, sizeof *items.open_firsts);
    items.dirty = PyMem_Calloc((size_t)n_files + 1, sizeof *items.dirty);
    items.bases = bases.buf;
    size_t n_opens = 0;
    Where where;
    int have_where = 0, status = sequence != NULL && items.files && items.open_keys && items.open_firsts && items.dirty
                                 ? 0 : -1;
    if (status == 0 && ((size_t)bases.len != (size_t)n_files * sizeof(int64_t) || PySequence_Length(opens) != n_files)) {
        PyErr_SetString(PyExc_ValueError, "bases and opens: one for each file");
        status = -1;
    }
    for (Py_ssize_t i = 0; status == 0 && i < n_files; i++) {
        PyObject *pair = PySequence_GetItem(opens, i);
        status = pair == NULL ? -1 : PyArg_ParseTuple(pair, "y*y*", &items.open_keys[i], &items.open_firsts[i]) ? 0 : -1;
        Py_XDECREF(pair);
        if (status == 0) n_opens++;
        if (status == 0 && items.open_firsts[i].len / (Py_ssize_t)sizeof(int64_t) != items.open_keys[i].len / (Py_ssize_t)sizeof(Key)) {
            PyErr_SetString(PyExc_ValueError, "opens: a first frame for each key");
            status = -1;
        }
    }
    if (status == 0 && ((size_t)times.len != items.n_ticks * sizeof(double) ||
                        (size_t)befores.len != items.n_ticks * sizeof(double))) {
        PyErr_SetString(PyExc_ValueError, "ticks: as many times and packet times as numbers");
        status = -1;
    }
    for (Py_ssize_t i = 0; status == 0 && i < n_files; i++) {
        status = PyObject_GetBuffer(PySequence_Fast_GET_ITEM(sequence, i), &items.files[i], PyBUF_SIMPLE);
        if (status == 0) items.n_files++;
    }
    if (status == 0 && program != NULL) {
        const char *why;
        int parsed = where_parse(&where, (const uint8_t *)program, (size_t)program_len, &why);
        have_where = 1;
        if (parsed == -2) PyErr_NoMemory();
        else if (parsed) PyErr_Format(PyExc_ValueError, "a malformed --where program: %s", why);
        status = parsed ? -1 : 0;
        sink.where = &where;
    }
    sink.style.capture = capture;
    sink.style.capture_len = (size_t)capture_len;
    sink.style.meta = 1;
    sink.write = write_python;
    sink.write_ctx = write;
    char *text = malloc(TUNNEL_TEXT_MAX);
    Tracker tracker;
    int ready = status == 0 && text != NULL && tracker_init(&tracker, &timeouts, sink_take, sink_new_conn, &sink) == 0;
    if (status == 0) status = ready ? replay_all(&tracker, &items, text) : -1;
    if (status == 0) status = tracker_tick_as(&tracker, end, INT64_MAX, end, end, RETIRED_END);
    if (status == 0 && tracker.last_ts < end) tracker.last_ts = end;  /* the set's last frame, which the replay may not hold */
    if (status == 0) status = tracker_flush(&tracker);
    if (status == 0) status = sink_finish(&sink);
    if (status == 0 && sink.error == 0) out = with_dirty(census_dict(&sink.census, &sink.endpoints), &items);
    else if (!PyErr_Occurred()) PyErr_NoMemory();
    for (size_t i = 0; items.dirty != NULL && i < items.n_files; i++) free(items.dirty[i].keys);
    for (size_t i = 0; i < n_opens; i++) {
        PyBuffer_Release(&items.open_keys[i]);
        PyBuffer_Release(&items.open_firsts[i]);
    }
    PyMem_Free(items.open_keys);
    PyMem_Free(items.open_firsts);
    PyMem_Free(items.dirty);
    PyBuffer_Release(&bases);
    if (ready) tracker_free(&tracker);
    sink_free(&sink);
    free(text);
    for (size_t i = 0; i < items.n_files; i++) PyBuffer_Release(&items.files[i]);
    PyMem_Free(items.files);
    Py_XDECREF(sequence);
    if (have_where) where_free(&where);
    PyBuffer_Release(&numbers);
    PyBuffer_Release(&times);
    PyBuffer_Release(&befores);
    return out;
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
