/* Events as they happen, in C: events.py's EventWatcher, format_event and event_json.
 *
 * After each segment (events_segment) and when a connection is finished
 * (events_finished) the new entries of both histories are announced as
 * "state" events, sorted by (time, frame), then "open" once the open label is
 * decided and "close" once neither end can move but by a timer, with a
 * revised "close" if the finished labels differ. What has been announced is
 * kept in the Conn itself (the told_ fields), so nothing outlives it. The
 * lines are byte for byte what the reference prints: floats as repr, the text
 * form's times through localtime and printf's correctly rounded %.Nf, as
 * Python's format() rounds.
 */
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "events.h"

static const char *const ROLE_NAMES[] = {"client", "server"};

static void put(Events *e, const char *s, size_t n) {
    Buffer *b = &e->out;
    if (b->len + n > b->cap && buf_reserve(b, n)) {
        e->failed = 1;
        return;
    }
    memcpy(b->data + b->len, s, n);
    b->len += n;
}

static void puts_(Events *e, const char *s) { put(e, s, strlen(s)); }

static void put_int(Events *e, int64_t v) {
    char text[32];
    put(e, text, (size_t)snprintf(text, sizeof text, "%lld", (long long)v));
}

static void put_float(Events *e, double x) {
    if (buf_float(&e->out, x)) e->failed = 1;
}

static void put_json_str(Events *e, const char *s) {
    if (s == NULL) {
        puts_(e, "null");
        return;
    }
    put(e, "\"", 1);
    puts_(e, s);
    put(e, "\"", 1);
}

static void put_endpoint(Events *e, const Conn *c, int role) {
    if (buf_reserve(&e->out, 64)) e->failed = 1;
    else buf_endpoint(&e->out, &c->ep[role], c->ip_version);
}

static const char *state_name(uint8_t state) { return machine.state_names[state]; }

/* format_event's "HH:MM:SS.ffffff #id" */
static void text_head(Events *e, double ts, int64_t id) {
    time_t whole = (time_t)floor(ts);
    struct tm parts;
    char text[64];
    localtime_r(&whole, &parts);
    size_t n = strftime(text, sizeof text, "%H:%M:%S", &parts);
    char fraction[32];
    snprintf(fraction, sizeof fraction, "%.6f", ts - floor(ts));  /* f"{ts % 1:.6f}"[1:] */
    put(e, text, n);
    puts_(e, fraction + 1);
    put(e, " #", 2);
    put_int(e, id);
}

/* events.format_duration */
static void text_duration(Events *e, double seconds) {
    char text[64];
    if (seconds < 1e-4) snprintf(text, sizeof text, "%.0f \xc2\xb5s", seconds * 1e6);
    else if (seconds < 1) snprintf(text, sizeof text, "%.1f ms", seconds * 1e3);
    else snprintf(text, sizeof text, "%.2f s", seconds);
    puts_(e, text);
}

/* ---- the three kinds of event ------------------------------------------------------------ */

static void state_event(Events *e, const Conn *c, int role, uint32_t index) {
    const Endpoint *ep = &c->ep[role];
    const Transition *entry = &ep->history.items[index];
    const char *previous = NULL;
    int has_after = index > 0;
    double after = 0;
    if (index) {
        previous = state_name(ep->history.items[index - 1].state);
        after = round9(entry->ts - ep->history.items[index - 1].ts);
    } else if (c->bare_syn[0] || c->bare_syn[1]) {
        previous = state_name(ep->passive ? ST_LISTEN : ST_CLOSED);
    }
    if (e->format == EVENTS_JSON) {
        puts_(e, "{\"event\": \"state\", \"ts\": ");
        put_float(e, entry->ts);
        puts_(e, ", \"id\": ");
        put_int(e, c->id);
        puts_(e, ", \"endpoint\": \"");
        put_endpoint(e, c, role);
        puts_(e, "\", \"role\": \"");
        puts_(e, ROLE_NAMES[role]);
        puts_(e, "\", \"from\": ");
        put_json_str(e, previous);
        puts_(e, ", \"to\": ");
        put_json_str(e, state_name(entry->state));
        puts_(e, ", \"after\": ");
        if (has_after) put_float(e, after);
        else puts_(e, "null");
        puts_(e, ", \"frame\": ");
        if (entry->frame >= 0) put_int(e, entry->frame);
        else puts_(e, "null");
        puts_(e, "}\n");
    } else if (e->format == EVENTS_TEXT) {
        text_head(e, entry->ts, c->id);
        put(e, " ", 1);
        put_endpoint(e, c, role);
        put(e, " ", 1);
        puts_(e, previous ? previous : "(mid-connection)");
        puts_(e, " -> ");
        puts_(e, state_name(entry->state));
        if (has_after) {
            puts_(e, " after ");
            text_duration(e, after);
        }
        put(e, "\n", 1);
    }
}

static void pair_json(Events *e, const Conn *c) {
    puts_(e, ", \"client\": \"");
    put_endpoint(e, c, ROLE_CLIENT);
    puts_(e, "\", \"server\": \"");
    put_endpoint(e, c, ROLE_SERVER);
    puts_(e, "\"");
}

static void pair_text(Events *e, const Conn *c) {
    put_endpoint(e, c, ROLE_CLIENT);
    puts_(e, " > ");
    put_endpoint(e, c, ROLE_SERVER);
}

static void open_event(Events *e, Conn *c, const char *open, double ts) {
    c->told_open = 1;
    if (strcmp(open, "refused") != 0) e->opens++;
    if (e->format == EVENTS_JSON) {
        puts_(e, "{\"event\": \"open\", \"ts\": ");
        put_float(e, ts);
        puts_(e, ", \"id\": ");
        put_int(e, c->id);
        pair_json(e, c);
        puts_(e, ", \"open\": ");
        put_json_str(e, open);
        puts_(e, "}\n");
    } else if (e->format == EVENTS_TEXT) {
        text_head(e, ts, c->id);
        puts_(e, " opened ");
        pair_text(e, c);
        puts_(e, ": ");
        puts_(e, open);
        put(e, "\n", 1);
    }
}

/* The labels events.py's CLOSE_KEYS name, as the told_ fields keep them. */
static void note_labels(Conn *c, const Labels *l) {
    c->told_labels[0] = l->open;
    c->told_labels[1] = l->close;
    c->told_labels[2] = l->active_closer;
    c->told_half_close = c->half_close;
    c->told_reset = c->has_reset ? (uint8_t)(c->reset_role + 1) : 0;
    c->told_reset_state = c->has_reset ? c->reset_state : 0;
}

static int labels_differ(const Conn *c, const Labels *l) {
    return c->told_labels[0] != l->open || c->told_labels[1] != l->close || c->told_labels[2] != l->active_closer ||
           c->told_half_close != c->half_close || c->told_reset != (c->has_reset ? c->reset_role + 1 : 0) ||
           c->told_reset_state != (c->has_reset ? c->reset_state : 0);
}

static void close_event(Events *e, Conn *c, const Labels *l, double ts, int revised) {
    c->told_close = 1;
    note_labels(c, l);
    if (!revised) {
        e->closes++;
        if (strcmp(l->close, "reset") == 0 || strcmp(l->open, "refused") == 0) e->resets++;
    }
    const char *reset_by = c->told_reset ? ROLE_NAMES[c->told_reset - 1] : NULL;
    const char *reset_state = c->told_reset ? state_name(c->told_reset_state) : NULL;
    double duration = round9(c->end - c->start);
    if (e->format == EVENTS_JSON) {
        puts_(e, "{\"event\": \"close\", \"ts\": ");
        put_float(e, ts);
        puts_(e, ", \"id\": ");
        put_int(e, c->id);
        pair_json(e, c);
        puts_(e, ", \"open\": ");
        put_json_str(e, l->open);
        puts_(e, ", \"close\": ");
        put_json_str(e, l->close);
        puts_(e, c->half_close ? ", \"half_close\": true" : ", \"half_close\": false");
        puts_(e, ", \"active_closer\": ");
        put_json_str(e, l->active_closer);
        puts_(e, ", \"reset_by\": ");
        put_json_str(e, reset_by);
        puts_(e, ", \"reset_state\": ");
        put_json_str(e, reset_state);
        puts_(e, ", \"duration\": ");
        put_float(e, duration);
        puts_(e, revised ? ", \"revised\": true}\n" : "}\n");
    } else if (e->format == EVENTS_TEXT) {
        text_head(e, ts, c->id);
        puts_(e, " closed ");
        pair_text(e, c);
        puts_(e, ": ");
        puts_(e, l->close);
        if (l->active_closer) {
            puts_(e, ", closed by ");
            puts_(e, l->active_closer);
        }
        if (c->half_close) puts_(e, ", half-closed");
        if (reset_by) {
            puts_(e, ", reset by ");
            puts_(e, reset_by);
            puts_(e, " in ");
            puts_(e, reset_state);
        }
        puts_(e, " (");
        text_duration(e, duration);
        puts_(e, revised ? ") [revised]\n" : ")\n");
    }
}

/* ---- the watcher ------------------------------------------------------------------------ */

typedef struct { double ts; int64_t frame; int role; uint32_t index; } NewState;

/* EventWatcher._states: the new entries of both histories, client's first, stably sorted by (ts, frame or 0). */
static void announce_states(Events *e, Conn *c) {
    NewState fixed[16], *items = fixed;
    size_t n = 0, want = 0;
    for (int role = 0; role < 2; role++) {  /* a history can be rewritten shorter (connection.py: awaiting) */
        if (c->told_states[role] > c->ep[role].history.count) c->told_states[role] = c->ep[role].history.count;
        want += c->ep[role].history.count - c->told_states[role];
    }
    if (want == 0) return;
    if (want > 16 && (items = malloc(want * sizeof *items)) == NULL) {
        e->failed = 1;
        return;
    }
    for (int role = 0; role < 2; role++) {
        const History *h = &c->ep[role].history;
        for (uint32_t i = c->told_states[role]; i < h->count; i++) {
            NewState item = {h->items[i].ts, h->items[i].frame < 0 ? 0 : h->items[i].frame, role, i};
            size_t at = n++;
            while (at > 0 && (items[at - 1].ts > item.ts ||
                              (items[at - 1].ts == item.ts && items[at - 1].frame > item.frame))) {
                items[at] = items[at - 1];
                at--;
            }
            items[at] = item;
        }
        c->told_states[role] = h->count;
    }
    for (size_t i = 0; i < n; i++) state_event(e, c, items[i].role, items[i].index);
    if (items != fixed) free(items);
}

static int at_rest(const Conn *c) {
    for (int role = 0; role < 2; role++) {
        uint8_t state = c->ep[role].state;
        if (!(state == ST_CLOSED || state == ST_LISTEN || state == ST_TIME_WAIT) || c->ep[role].unreceived.count)
            return 0;
    }
    return 1;
}

static int decided(const char *open) {  /* events.DECIDED_OPENS */
    return strcmp(open, "handshake") == 0 || strcmp(open, "simultaneous-open") == 0 ||
           strcmp(open, "refused") == 0 || strcmp(open, "partial") == 0;
}

void events_segment(Events *e, Conn *c, double ts) {
    announce_states(e, c);
    if (c->told_open && c->told_close) return;
    Labels labels;
    conn_labels(c, &labels);
    if (!c->told_open && decided(labels.open)) open_event(e, c, labels.open, ts);
    if (!c->told_close && at_rest(c)) close_event(e, c, &labels, ts, 0);
}

void events_finished(Events *e, Conn *c) {
    announce_states(e, c);
    Labels labels;
    conn_labels(c, &labels);
    if (!c->told_open) open_event(e, c, labels.open, c->end);
    if (!c->told_close) close_event(e, c, &labels, c->end, 0);
    else if (labels_differ(c, &labels)) close_event(e, c, &labels, c->end, 1);
}

void events_free(Events *e) {
    free(e->out.data);
    e->out = (Buffer){0};
}
