/* A connection handed from one file's run to the merge (parallel.py), as bytes.
 *
 * A rotated set analyzed file by file ends each file's run with connections still open: in TIME_WAIT,
 * half-closed, long-lived. One run over the set would carry them on into the next file. So a part's run
 * (module.c, a frame base given) does not flush them as finished records; it packs each one as it stands
 * (`conn_pack`: every field of its Conn, then what its pointers hold), and the merge's tracker
 * (parts.c's Merger) unpacks them (`conn_unpack`) and goes on with them: their state machines, queues,
 * anomalies and timers exactly as they were, so a connection that stays quiet in the next files costs
 * the merge nothing but its timer, and one that goes on is fed only its later frames.
 *
 * The bytes hold the Conn struct as this build lays it out, so both ends must run the same build: each
 * connection begins with a header naming sizeof(Conn) and a version, checked on unpacking. Pointers are
 * rebuilt on unpacking; what only the live path uses (events.c's told_* fields) starts afresh.
 */
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "engine.h"
#include "halfopen.h"
#include "handover.h"

#define HANDOVER_VERSION 2u

typedef struct {
    uint32_t conn_size, version;         /* sizeof(Conn) or sizeof(HalfOpen), as `half` says */
    uint32_t half;                       /* 1: a half-open record (halfopen.h) follows, 0: a Conn */
    uint32_t history[2], unreceived[2];  /* counts of each endpoint's items that follow; a record's later packets */
    uint32_t anomalies, kinds;
    uint32_t tunnel;                     /* the tunnel text's length + 1 (0: none) */
    uint32_t total;                      /* all bytes of this connection, header included, a multiple of 8 */
    uint32_t pad;
} PackedHead;

static size_t padded(size_t n) { return (n + 7) & ~(size_t)7; }

static void put(char **at, const void *data, size_t n) {
    if (n) memcpy(*at, data, n);
    *at += n;
}

int conn_pack(const Conn *c, Buffer *out) {
    PackedHead head = {sizeof(Conn), HANDOVER_VERSION, 0, {0}, {0}, c->n_anomalies, c->n_kinds,
                       c->tunnel != NULL ? (uint32_t)strlen(c->tunnel) + 1 : 0, 0, 0};
    size_t body = sizeof(Conn) + (size_t)c->n_anomalies * sizeof(Anomaly) + (size_t)c->n_kinds * sizeof(AnomalyKind);
    for (int role = 0; role < 2; role++) {
        head.history[role] = c->ep[role].history.count;
        head.unreceived[role] = c->ep[role].unreceived.count;
        body += head.history[role] * sizeof(Transition) + head.unreceived[role] * sizeof(Seg);
    }
    size_t total = padded(sizeof head + body + (head.tunnel ? head.tunnel - 1 : 0));
    if (total > UINT32_MAX || buf_reserve(out, total)) return -1;
    head.total = (uint32_t)total;
    char *at = out->data + out->len;
    memset(at, 0, total);
    put(&at, &head, sizeof head);
    put(&at, c, sizeof *c);
    for (int role = 0; role < 2; role++) {
        put(&at, c->ep[role].history.items, head.history[role] * sizeof(Transition));
        put(&at, c->ep[role].unreceived.items, head.unreceived[role] * sizeof(Seg));
    }
    put(&at, c->anomalies, (size_t)c->n_anomalies * sizeof(Anomaly));
    put(&at, c->kinds, (size_t)c->n_kinds * sizeof(AnomalyKind));
    if (head.tunnel) put(&at, c->tunnel, head.tunnel - 1);
    out->len += total;
    return 0;
}

/* `count` items of `size` bytes from *at into inline room (when they fit) or a new array; NULL: none fit
 * and out of memory. `capacity` is set to the room's size. */
static void *take_items(const char **at, uint32_t count, size_t size, void *inline_items, uint32_t inline_count,
                        uint32_t *capacity) {
    void *items = inline_items;
    *capacity = inline_count;
    if (count > inline_count) {
        items = malloc((size_t)count * size);
        if (items == NULL) return NULL;
        *capacity = count;
    }
    if (count) memcpy(items, *at, (size_t)count * size);
    *at += (size_t)count * size;
    return items;
}

/* The Conn's pointers, none of them owned yet: nothing to free on a failure half-way. */
static void clear_pointers(Conn *c) {
    for (int role = 0; role < 2; role++) {
        c->ep[role].history.items = c->ep[role].history.inline_items;
        c->ep[role].history.count = 0;
        c->ep[role].unreceived.items = c->ep[role].unreceived.inline_items;
        c->ep[role].unreceived.count = 0;
    }
    c->anomalies = NULL;
    c->kinds = NULL;
    c->tunnel = NULL;
    c->n_anomalies = c->cap_anomalies = c->n_kinds = c->cap_kinds = 0;
}

/* The header at `data`, checked: 0, or HANDOVER_*. */
static int read_head(const uint8_t *data, size_t len, PackedHead *head) {
    if (len < sizeof *head) return HANDOVER_MALFORMED;
    memcpy(head, data, sizeof *head);
    size_t size = head->half == 1 ? sizeof(HalfOpen) : sizeof(Conn);
    if (head->conn_size != size || head->version != HANDOVER_VERSION || head->half > 1) return HANDOVER_OTHER_BUILD;
    if (head->total > len || head->total % 8 || head->total < sizeof *head + size) return HANDOVER_MALFORMED;
    return 0;
}

int packed_kind(const uint8_t *data, size_t len, int *half) {
    PackedHead head;
    int status = read_head(data, len, &head);
    if (status == 0) *half = (int)head.half;
    return status;
}

int conn_unpack(const uint8_t *data, size_t len, Conn *c, const Timeouts *timeouts, size_t *used) {
    PackedHead head;
    clear_pointers(c);  /* whatever happens, c holds nothing to free */
    int status = read_head(data, len, &head);
    if (status) return status;
    if (head.half) return HANDOVER_MALFORMED;
    size_t need = sizeof head + sizeof(Conn) + (size_t)head.anomalies * sizeof(Anomaly) +
                  (size_t)head.kinds * sizeof(AnomalyKind) + (head.tunnel ? head.tunnel - 1 : 0);
    for (int role = 0; role < 2; role++)
        need += (size_t)head.history[role] * sizeof(Transition) + (size_t)head.unreceived[role] * sizeof(Seg);
    if (need > head.total) return HANDOVER_MALFORMED;
    const char *at = (const char *)data + sizeof head;
    memcpy(c, at, sizeof *c);
    at += sizeof *c;
    clear_pointers(c);
    c->timeouts = timeouts;
    for (int role = 0; role < 2; role++) {
        Endpoint *ep = &c->ep[role];
        Transition *h = take_items(&at, head.history[role], sizeof(Transition), ep->history.inline_items,
                                   INLINE_HISTORY, &ep->history.capacity);
        if (h == NULL) goto failed;
        ep->history.items = h;
        ep->history.count = head.history[role];
        Seg *q = take_items(&at, head.unreceived[role], sizeof(Seg), ep->unreceived.inline_items, INLINE_UNRECEIVED,
                            &ep->unreceived.capacity);
        if (q == NULL) goto failed;
        ep->unreceived.items = q;
        ep->unreceived.count = head.unreceived[role];
    }
    c->anomalies = take_items(&at, head.anomalies, sizeof(Anomaly), NULL, 0, &c->cap_anomalies);
    if (head.anomalies && c->anomalies == NULL) goto failed;
    c->n_anomalies = head.anomalies;
    c->kinds = take_items(&at, head.kinds, sizeof(AnomalyKind), NULL, 0, &c->cap_kinds);
    if (head.kinds && c->kinds == NULL) goto failed;
    c->n_kinds = head.kinds;
    if (head.tunnel) {
        c->tunnel = malloc(head.tunnel);
        if (c->tunnel == NULL) goto failed;
        memcpy(c->tunnel, at, head.tunnel - 1);
        c->tunnel[head.tunnel - 1] = '\0';
    }
    /* what events.c has told of it: the live path's alone, never a part's */
    c->told_open = c->told_close = c->told_half_close = c->told_reset = c->told_reset_state = 0;
    c->told_states[0] = c->told_states[1] = 0;
    c->told_labels[0] = c->told_labels[1] = c->told_labels[2] = NULL;
    c->in_handshake = 0;  /* the adopting tracker counts it afresh */
    *used = head.total;
    return 0;
failed:
    conn_free(c);
    clear_pointers(c);
    return HANDOVER_NO_MEMORY;
}

int conn_packed_key(const uint8_t *data, size_t len, Key *key, size_t *used) {
    PackedHead head;
    int status = read_head(data, len, &head);
    if (status) return status;
    memcpy(key, data + sizeof head + offsetof(Conn, key), sizeof *key);  /* a HalfOpen's too (halfopen.h) */
    *used = head.total;
    return 0;
}

int half_pack(const HalfOpen *h, Buffer *out) {
    uint32_t later = h->later != NULL ? h->later->count : 0;
    PackedHead head = {sizeof(HalfOpen), HANDOVER_VERSION, 1, {later, 0}, {0}, 0, 0, 0, 0, 0};
    size_t total = padded(sizeof head + sizeof *h + sizeof(double) + (size_t)later * sizeof(Facts));
    if (buf_reserve(out, total)) return -1;
    head.total = (uint32_t)total;
    char *at = out->data + out->len;
    memset(at, 0, total);
    put(&at, &head, sizeof head);
    put(&at, h, sizeof *h);
    double scheduled = later ? h->later->scheduled : 0.0;
    put(&at, &scheduled, sizeof scheduled);
    if (later) put(&at, h->later->items, (size_t)later * sizeof(Facts));
    out->len += total;
    return 0;
}

int half_unpack(const uint8_t *data, size_t len, HalfOpen *h, size_t *used) {
    PackedHead head;
    h->later = NULL;
    int status = read_head(data, len, &head);
    if (status) return status;
    if (!head.half) return HANDOVER_MALFORMED;
    uint32_t later = head.history[0];
    if (later > LATER_MAX || sizeof head + sizeof *h + sizeof(double) + (size_t)later * sizeof(Facts) > head.total)
        return HANDOVER_MALFORMED;
    const char *at = (const char *)data + sizeof head;
    memcpy(h, at, sizeof *h);
    at += sizeof *h;
    h->later = NULL;
    if (later) {
        Later *kept = malloc(sizeof *kept + (size_t)later * sizeof(Facts));
        if (kept == NULL) return HANDOVER_NO_MEMORY;
        memcpy(&kept->scheduled, at, sizeof kept->scheduled);
        memcpy(kept->items, at + sizeof(double), (size_t)later * sizeof(Facts));
        kept->count = kept->capacity = later;
        h->later = kept;
    }
    *used = head.total;
    return 0;
}
