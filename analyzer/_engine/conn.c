/* One connection: two endpoint machines fed by segments, in C.
 *
 * This file follows analyzer/connection.py function by function (the names
 * are the same, less the underscore), and labels.py at the end. Read the
 * docstring of connection.py for the why: when a segment counts as received,
 * how crossing SYNs and FINs are told apart, what a retransmission re-dates.
 * The state machine is not here: step(), the send events and the receive
 * events come from fsm.py as tables (engine.h, Machine). What a passive
 * observer infers (a capture that starts at the SYN-ACK, a SYN captured after
 * it, one-sided captures) has its own section, as in connection.py.
 */
#include <stdlib.h>
#include <string.h>

#include "engine.h"

Machine machine;

const char *const OPEN_LABELS[] = {"handshake", "simultaneous-open", "refused", "unanswered",
                                   "incomplete", "partial"};
const char *const CLOSE_LABELS[] = {"four-way", "three-way", "simultaneous", "reset",
                                    "half-closed", "open", "none"};

/* ---- sequence numbers and small containers ------------------------------ */

static inline int seq_ge(uint32_t a, uint32_t b) { return (uint32_t)(a - b) < 0x80000000u; }
static inline int seq_gt(uint32_t a, uint32_t b) { return a != b && seq_ge(a, b); }

static inline int in_set(uint16_t set, uint8_t state) { return (set >> state) & 1; }
#define GONE ((1u << ST_CLOSED) | (1u << ST_LISTEN))
#define ABORTABLE ((1u << ST_ESTABLISHED) | (1u << ST_FIN_WAIT_1) | (1u << ST_FIN_WAIT_2) | \
                   (1u << ST_CLOSE_WAIT) | (1u << ST_CLOSING) | (1u << ST_LAST_ACK))

static inline int64_t seq_len(const Seg *s) {
    return s->payload_len + ((s->flags & F_SYN) ? 1 : 0) + ((s->flags & F_FIN) ? 1 : 0);
}

/* Twice the room (4 if none), or out of memory when twice would not fit in the uint32_t count. `items` is
 * freed once copied unless it is `inline_items` (NULL for a list with no inline room). */
static void *grow(Conn *c, void *items, void *inline_items, uint32_t *capacity, size_t size) {
    if (*capacity > UINT32_MAX / 2 || (size_t)*capacity * 2 > SIZE_MAX / size) {
        c->out_of_memory = 1;
        return NULL;
    }
    uint32_t cap = *capacity ? *capacity * 2 : 4;
    void *bigger = malloc((size_t)cap * size);
    if (bigger == NULL) {
        c->out_of_memory = 1;
        return NULL;
    }
    if (*capacity) memcpy(bigger, items, (size_t)*capacity * size);
    if (items != inline_items) free(items);
    *capacity = cap;
    return bigger;
}

static void history_push(Conn *c, History *h, uint8_t state, double ts, int64_t frame) {
    if (h->count == h->capacity) {
        Transition *bigger = grow(c, h->items, h->inline_items, &h->capacity, sizeof(Transition));
        if (bigger == NULL) return;
        h->items = bigger;
    }
    h->items[h->count++] = (Transition){frame, ts, state};
}

static void queue_push(Conn *c, SegQueue *q, const Seg *s) {
    if (q->count == q->capacity) {
        Seg *bigger = grow(c, q->items, q->inline_items, &q->capacity, sizeof(Seg));
        if (bigger == NULL) return;
        q->items = bigger;
    }
    q->items[q->count++] = *s;
}

static Seg queue_pop_front(SegQueue *q) {
    Seg first = q->items[0];
    for (uint32_t i = 1; i < q->count; i++) q->items[i - 1] = q->items[i];  /* a few: no memmove call */
    q->count--;
    return first;
}

/* The count of anomalies of this kind (added at 0 if new); NULL when out of memory. Kinds are few (a fixed
 * set of sentences), so a linear search over the ones seen is enough. */
static AnomalyKind *anomaly_kind(Conn *c, uint8_t kind, uint8_t role, uint8_t event, uint8_t state) {
    for (uint32_t i = 0; i < c->n_kinds; i++) {
        AnomalyKind *k = &c->kinds[i];
        if (k->kind == kind && k->role == role && k->event == event && k->state == state) return k;
    }
    if (c->n_kinds == c->cap_kinds) {
        AnomalyKind *bigger = grow(c, c->kinds, NULL, &c->cap_kinds, sizeof(AnomalyKind));
        if (bigger == NULL) return NULL;
        c->kinds = bigger;
    }
    c->kinds[c->n_kinds] = (AnomalyKind){0, kind, role, event, state};
    return &c->kinds[c->n_kinds++];
}

/* Count an anomaly; list it with its frame if it is among the first ANOMALY_EXAMPLES of its kind. */
static void anomaly(Conn *c, int64_t frame, uint8_t kind, uint8_t role, uint8_t event, uint8_t state) {
    AnomalyKind *k = anomaly_kind(c, kind, role, event, state);
    if (k == NULL) return;
    c->anomalies_total++;
    if (++k->count > ANOMALY_EXAMPLES) return;
    if (c->n_anomalies == c->cap_anomalies) {
        Anomaly *bigger = grow(c, c->anomalies, NULL, &c->cap_anomalies, sizeof(Anomaly));
        if (bigger == NULL) return;
        c->anomalies = bigger;
    }
    c->anomalies[c->n_anomalies++] = (Anomaly){frame, kind, role, event, state};
}

/* Take back every anomaly of `kind` (one whose sentence has no role, event or state): later evidence
 * showed it was none (Connection._drop_anomaly). Its kind leaves the counts, which keep their order. */
static void drop_anomalies(Conn *c, uint8_t kind) {
    uint32_t kept = 0;
    for (uint32_t i = 0; i < c->n_anomalies; i++)
        if (c->anomalies[i].kind != kind) c->anomalies[kept++] = c->anomalies[i];
    c->n_anomalies = kept;
    kept = 0;
    for (uint32_t i = 0; i < c->n_kinds; i++) {
        if (c->kinds[i].kind == kind) c->anomalies_total -= c->kinds[i].count;
        else c->kinds[kept++] = c->kinds[i];
    }
    c->n_kinds = kept;
}

/* ---- the machine (fsm.py, through its tables) --------------------------- */

static inline uint8_t step(uint8_t state, uint8_t event, int passive) {
    return machine.step[passive ? 1 : 0][state][event];
}

static inline const uint8_t *send_events(uint8_t flags) {
    int index = ((flags & F_SYN) ? 1 : 0) | ((flags & F_ACK) ? 2 : 0) | ((flags & F_FIN) ? 4 : 0) |
                ((flags & F_RST) ? 8 : 0);
    return machine.send[index];
}

static inline const uint8_t *receive_events(int syn, int fin, int rst, int acks_syn, int acks_fin) {
    return machine.receive[syn | fin << 1 | rst << 2 | acks_syn << 3 | acks_fin << 4];
}

static const uint8_t NO_EVENTS[MAX_EVENTS + 1] = {0};

/* Endpoint.apply: step the machine, record a change of state. */
static int apply(Conn *c, Endpoint *ep, uint8_t event, double ts, int64_t frame) {
    uint8_t target = step(ep->state, event, ep->passive);
    if (target == NO_STATE) return 0;
    if (event == EV_RCV_SYN && ep->state == ST_LISTEN) ep->passive = 1;
    if (target != ep->state) {
        ep->state = target;
        history_push(c, &ep->history, target, ts, frame);
    }
    return 1;
}

static void note_sent(Endpoint *ep, const Seg *s) {
    uint32_t end = s->seq + (uint32_t)seq_len(s);
    if (!ep->has_snd_nxt || seq_gt(end, ep->snd_nxt)) {
        ep->snd_nxt = end;
        ep->has_snd_nxt = 1;
    }
    if ((s->flags & F_ACK) && (!ep->has_ack_sent || seq_gt(s->ack, ep->ack_sent))) {
        ep->ack_sent = s->ack;
        ep->has_ack_sent = 1;
    }
    ep->last_sent_frame = s->frame;
    ep->last_sent_ts = s->ts;
}

static void acknowledged_by(const Endpoint *ep, uint32_t ack, int *syn, int *fin) {
    *syn = ep->has_isn && !ep->syn_acked && seq_ge(ack, ep->syn_end);
    *fin = ep->has_fin && !ep->fin_acked && seq_gt(ack, ep->fin_seq);
}

/* ---- set-up --------------------------------------------------------------- */

static void client_is_source(const Packet *first, int *client_is_src, int *inferred) {
    *inferred = 1;
    if (first->flags & F_SYN) {
        *client_is_src = !(first->flags & F_ACK);
        *inferred = 0;
        return;
    }
    unsigned src = first->sport, dst = first->dport;
    if (src == dst) *client_is_src = 1;
    else if ((src >= 32768) != (dst >= 32768)) *client_is_src = src >= 32768;
    else if ((src < 1024) != (dst < 1024)) *client_is_src = dst < 1024;
    else *client_is_src = src > dst;
}

static void endpoint_init(Endpoint *ep, const uint8_t *addr, uint16_t port) {
    memset(ep, 0, sizeof *ep);
    memcpy(ep->addr, addr, 16);
    ep->port = port;
    ep->state = ST_CLOSED;
    ep->last_sent_ts = -__builtin_inf();
    ep->history.capacity = INLINE_HISTORY;
    ep->history.items = ep->history.inline_items;
    ep->unreceived.capacity = INLINE_UNRECEIVED;
    ep->unreceived.items = ep->unreceived.inline_items;
}

/* A SYN,ACK without its SYN: the SYN it acknowledges was the client's ISN = ack - 1 (infer_client_isn). */
static void infer_client_isn(Conn *c, const Packet *synack) {
    Endpoint *client = &c->ep[ROLE_CLIENT];
    client->has_isn = 1;
    client->isn = synack->ack - 1;
    client->syn_end = synack->ack;
    c->isn_inferred = 1;
}

static void begin(Conn *c, const Packet *first) {
    Endpoint *client = &c->ep[ROLE_CLIENT], *server = &c->ep[ROLE_SERVER];
    if ((first->flags & F_SYN) && !(first->flags & F_ACK)) return;
    if (first->flags & F_SYN) {
        anomaly(c, first->frame, AN_STARTS_AFTER_SYN, 0, 0, 0);
        client->state = ST_SYN_SENT;
        server->state = ST_SYN_RCVD;
        server->passive = 1;
        infer_client_isn(c, first);
    } else {
        client->state = server->state = ST_ESTABLISHED;
        client->syn_acked = server->syn_acked = 1;
    }
    for (int role = 0; role < 2; role++)
        history_push(c, &c->ep[role].history, c->ep[role].state, first->ts, first->frame);
}

int conn_init(Conn *c, int64_t id, const Packet *first, const Timeouts *timeouts) {
    int client_is_src, inferred;
    memset(c, 0, sizeof *c);
    c->id = id;
    c->ip_version = first->ip_version;
    c->timeouts = timeouts;
    client_is_source(first, &client_is_src, &inferred);
    c->roles_inferred = (uint8_t)inferred;
    if (client_is_src) {
        endpoint_init(&c->ep[ROLE_CLIENT], first->src, first->sport);
        endpoint_init(&c->ep[ROLE_SERVER], first->dst, first->dport);
    } else {
        endpoint_init(&c->ep[ROLE_CLIENT], first->dst, first->dport);
        endpoint_init(&c->ep[ROLE_SERVER], first->src, first->sport);
    }
    c->first_frame = c->last_frame = first->frame;
    c->start = c->end = c->last_ts = first->ts;
    c->scheduled = __builtin_inf();
    c->finished_at = first->ts;
    if (first->tunnel != NULL) {  /* connection.py: the first segment's tunnel, kept as it came */
        c->tunnel = strdup(first->tunnel);
        if (c->tunnel == NULL) c->out_of_memory = 1;
    }
    begin(c, first);
    return c->out_of_memory ? -1 : 0;
}

void conn_free(Conn *c) {
    for (int role = 0; role < 2; role++) {
        Endpoint *ep = &c->ep[role];
        if (ep->history.items != ep->history.inline_items) free(ep->history.items);
        if (ep->unreceived.items != ep->unreceived.inline_items) free(ep->unreceived.items);
    }
    free(c->anomalies);
    free(c->tunnel);
    c->tunnel = NULL;
    free(c->kinds);
}

/* ---- the segment path ----------------------------------------------------- */

static int sender_role(const Conn *c, const Packet *p) {
    const Endpoint *client = &c->ep[ROLE_CLIENT];
    return (p->sport == client->port && addr_equal(p->src, client->addr)) ? ROLE_CLIENT : ROLE_SERVER;
}

enum { KIND_NONE, KIND_RETRANSMISSION, KIND_KEEPALIVE, KIND_EARLY_FIN };

static void forbidden(Conn *c, int64_t frame, int role, uint8_t event, uint8_t state) {
    anomaly(c, frame, AN_FORBIDDEN, (uint8_t)role, event, state);
}

/* A FIN sent in SYN-SENT, its own ACK not covering the peer's SYN: not the FIN (RFC 9293 sends none
 * from SYN-SENT, §3.10.4, and SYN-RECEIVED drops it without ACK); the one sent later is (early_fin). */
static int early_fin(const Conn *c, const Packet *p, const Endpoint *sender) {
    if (sender->state != ST_SYN_SENT) return 0;
    const Endpoint *peer = sender == &c->ep[ROLE_CLIENT] ? &c->ep[ROLE_SERVER] : &c->ep[ROLE_CLIENT];
    return !((p->flags & F_ACK) && peer->has_isn && seq_ge(p->ack, peer->syn_end));
}

/* A probe: 0 or 1 byte at snd_nxt - 1, that byte not the sender's FIN, after KEEPALIVE_IDLE quiet. */
#define KEEPALIVE_IDLE 0.5  /* connection.py KEEPALIVE_IDLE */
static int is_keepalive(const Packet *p, const Endpoint *sender) {
    return p->payload_len <= 1 && sender->has_snd_nxt && in_set(machine.synchronized, sender->state) &&
           p->seq == sender->snd_nxt - 1 && !(sender->has_fin && p->seq == sender->fin_seq) &&
           p->ts - sender->last_sent_ts >= KEEPALIVE_IDLE;
}

/* Count retransmissions, keep-alives and SYN facts; return the kind, set the flags to use. */
static int classify(Conn *c, const Packet *p, Endpoint *sender, int role, uint8_t *flags_out) {
    uint8_t flags = p->flags;
    *flags_out = flags;
    if (flags & F_RST) return KIND_NONE;
    if (flags & F_SYN) {
        if (sender->has_isn && p->seq != sender->isn) {
            anomaly(c, p->frame, AN_SECOND_ISN, (uint8_t)role, 0, 0);
            *flags_out = flags & (uint8_t)~F_SYN;
            return KIND_NONE;
        }
        int first_of_kind = !sender->has_isn || ((flags & F_ACK) && !sender->sent_synack);
        if (!first_of_kind) {
            c->retransmits[(flags & F_ACK) ? 1 : 0]++;
            return KIND_RETRANSMISSION;
        }
        if (!sender->has_isn) {
            sender->has_isn = 1;
            sender->isn = p->seq;
            sender->syn_end = p->seq + 1 + (uint32_t)p->payload_len;
            if (p->has_options) sender->options = p->options;
        }
        c->syn_data |= p->payload_len > 0;
        if (flags & F_ACK) sender->sent_synack = c->synack_seen = 1;
        else c->bare_syn[role] = 1;
    }
    if ((flags & F_FIN) && !(flags & F_SYN) && early_fin(c, p, sender)) {
        forbidden(c, p->frame, role, EV_SND_FIN, sender->state);
        return KIND_EARLY_FIN;
    }
    if (flags & F_FIN) {
        uint32_t fin_seq = p->seq + (uint32_t)p->payload_len + ((flags & F_SYN) ? 1 : 0);
        if (!sender->has_fin) {
            const Endpoint *peer = &c->ep[!role];
            sender->has_fin = 1;
            sender->fin_seq = fin_seq;
            c->fin_order[c->n_fins++] = (uint8_t)role;
            c->second_fin_acks_first = peer->has_fin && !peer->fin_acked && (flags & F_ACK) &&
                                       seq_ge(p->ack, peer->fin_seq + 1);
        } else {
            if (fin_seq == sender->fin_seq) c->retransmits[2]++;
            else anomaly(c, p->frame, AN_SECOND_FIN, (uint8_t)role, 0, 0);
            *flags_out = flags & (uint8_t)~F_FIN;
            return KIND_RETRANSMISSION;
        }
    } else if (!(flags & F_SYN) && is_keepalive(p, sender)) {
        c->keepalives++;
        return KIND_KEEPALIVE;
    }
    return KIND_NONE;
}

/* Note the times of the handshake's SYN (the last copy), SYN,ACK (the last) and ACK (note_handshake). */
static void note_handshake(Conn *c, const Packet *p, uint8_t flags, int role) {
    if (flags & F_RST) return;
    if (flags & F_SYN) {
        if (!(flags & F_ACK)) {
            if (role == ROLE_CLIENT && c->hs_stage <= HS_SYN) {
                c->hs_ts[HS_SYN - 1] = p->ts;
                c->hs_stage = HS_SYN;
            }
        } else if (role == ROLE_SERVER && c->hs_stage >= HS_SYN) {
            c->hs_ts[HS_SYNACK - 1] = p->ts;
            c->hs_stage = HS_SYNACK;
        }
    } else if ((flags & F_ACK) && role == ROLE_CLIENT && c->hs_stage == HS_SYNACK &&
               seq_ge(p->ack, c->ep[ROLE_SERVER].syn_end)) {
        c->hs_ts[HS_ACK - 1] = p->ts;
        c->hs_stage = HS_ACK;
    }
}

/* A retransmitted SYN/FIN: the copy still unanswered was lost, the receiver got this one. */
static void redate_unreceived(Endpoint *sender, const Packet *copy) {
    uint8_t kind = copy->flags & (F_SYN | F_FIN);
    for (uint32_t i = 0; i < sender->unreceived.count; i++) {
        Seg *pending = &sender->unreceived.items[i];
        if (pending->seq == copy->seq && (pending->flags & (F_SYN | F_FIN)) == kind) {
            pending->frame = copy->frame;
            pending->ts = copy->ts;
            return;
        }
    }
}

static void send(Conn *c, Endpoint *sender, int role, const Seg *s) {
    uint8_t before = sender->state;
    const uint8_t *events = send_events(s->flags);
    for (int i = 1; i <= events[0]; i++)
        if (!apply(c, sender, events[i], s->ts, s->frame)) forbidden(c, s->frame, role, events[i], sender->state);
    if (s->flags & F_RST) {
        c->aborted |= in_set(ABORTABLE, before);
        if (!c->has_reset) {
            c->has_reset = 1;
            c->reset_role = (uint8_t)role;
            c->reset_state = before;
        }
    }
}

/* Whether `receiver` would act on the RST `p` from `sender` (acceptance.py, rst_acceptable_to); 1 wherever
 * the capture holds no evidence against it. */
static int rst_acceptable_to(const Endpoint *receiver, const Endpoint *sender, const Packet *p) {
    uint8_t state = receiver->state;
    if (state == ST_SYN_SENT) return !receiver->has_isn || ((p->flags & F_ACK) && p->ack == receiver->syn_end);
    if ((!in_set(machine.synchronized, state) && state != ST_SYN_RCVD) || !sender->has_snd_nxt) return 1;
    uint32_t high = sender->snd_nxt, low;
    if (receiver->has_ack_sent && seq_gt(receiver->ack_sent, high)) high = receiver->ack_sent;
    if (receiver->has_ack_sent) low = receiver->ack_sent;
    else if (sender->has_isn) low = sender->syn_end;
    else return 1;
    if (state == ST_CLOSE_WAIT || state == ST_LAST_ACK || state == ST_CLOSING) low -= 1;  /* RCV.NXT - 1 */
    return seq_ge(p->seq, low) && seq_ge(high, p->seq);
}

/* A RST the receiver would not accept: noted as a possible blind reset, and otherwise ignored (rst_ignored). */
static int rst_ignored(Conn *c, const Endpoint *sender, const Endpoint *receiver, const Packet *p, int role) {
    if (rst_acceptable_to(receiver, sender, p)) return 0;
    anomaly(c, p->frame, AN_RST_IGNORED, (uint8_t)!role, 0, receiver->state);
    return 1;
}

/* A resent SYN-ACK: if a client ACK had established its (passive) sender, and it has sent nothing since,
 * that ACK did not take: back to SYN_RCVD, to wait for proof (connection.py, "A third ACK that did not take";
 * synack_resent). syn_acked stays set, so later ACKs of the SYN change nothing until then. */
static void synack_resent(Conn *c, Endpoint *sender, int role, const Packet *p) {
    if (c->awaiting == role + 1) {
        c->awaited_frame = 0;  /* what came before this SYN-ACK did not take either */
        return;
    }
    History *h = &sender->history;
    if (!sender->passive || sender->state != ST_ESTABLISHED || h->count < 2 ||
        h->items[h->count - 2].state != ST_SYN_RCVD || h->items[h->count - 1].frame < 0 ||
        sender->last_sent_frame >= h->items[h->count - 1].frame || c->hs_stage < HS_SYNACK ||
        !(p->ts - h->items[h->count - 1].ts >= c->hs_ts[HS_SYNACK - 1] - c->hs_ts[HS_SYN - 1]))
        return;  /* sooner than the server's round trip after the ACK: it crossed the ACK in flight */
    h->count--;
    sender->state = ST_SYN_RCVD;
    c->awaiting = (uint8_t)(role + 1);
    c->awaited_frame = 0;
    anomaly(c, p->frame, AN_THIRD_ACK_IGNORED, (uint8_t)role, 0, 0);
}

/* The waiting server proves it is synchronized (or the capture ends): ESTABLISHED at the last client segment
 * that acknowledged its SYN since its last resent SYN-ACK, if any (overflow_established). */
static void overflow_established(Conn *c, Endpoint *server) {
    if (c->awaited_frame) apply(c, server, EV_RCV_ACK_OF_SYN, c->awaited_ts, c->awaited_frame);
    c->awaiting = 0;
    c->awaited_frame = 0;
}

/* ---- delivery ---------------------------------------------------------------- */

static int rst_acceptable(const Endpoint *ep, const Seg *s) {
    if (ep->state == ST_SYN_SENT) return (s->flags & F_ACK) && s->ack == ep->syn_end;
    return 1;
}

/* The state `ep` starts from, and the events it goes through on receiving `s`;
 * also whether `s` acknowledges ep's SYN and FIN. */
static const uint8_t *plan(const Endpoint *ep, const Seg *s, const Seg *answer, uint8_t *start, int *acks_syn,
                           int *acks_fin) {
    *start = ep->state;
    if ((s->flags & F_SYN) && *start == ST_CLOSED && ep->last_sent_frame == 0 &&
        !(answer != NULL && (answer->flags & F_RST)))
        *start = ST_LISTEN;
    *acks_syn = *acks_fin = 0;
    if ((s->flags & F_RST) && !rst_acceptable(ep, s)) return NO_EVENTS;
    if (s->flags & F_ACK) acknowledged_by(ep, s->ack, acks_syn, acks_fin);
    return receive_events(!!(s->flags & F_SYN), !!(s->flags & F_FIN), !!(s->flags & F_RST), *acks_syn, *acks_fin);
}

static int could_then_send(const Endpoint *ep, const Seg *pending, const Seg *answer) {
    uint8_t state;
    int acks_syn, acks_fin;
    const uint8_t *events = plan(ep, pending, answer, &state, &acks_syn, &acks_fin);
    for (int i = 1; i <= events[0]; i++) {
        uint8_t next = step(state, events[i], ep->passive || state == ST_LISTEN);
        if (next != NO_STATE) state = next;
    }
    const uint8_t *sent = send_events(answer->flags);
    for (int i = 1; i <= sent[0]; i++)
        if (step(state, sent[i], 1) == NO_STATE) return 0;
    return 1;
}

static void receive(Conn *c, Endpoint *ep, const Seg *s, const Seg *answer, const Seg *proof) {
    int role = ep == &c->ep[ROLE_CLIENT] ? ROLE_CLIENT : ROLE_SERVER;
    if (c->awaiting == role + 1 && (s->flags & F_ACK) && seq_ge(s->ack, ep->syn_end)) {
        c->awaited_frame = s->frame;  /* a candidate: the copy the server's next segment may answer */
        c->awaited_ts = s->ts;
    }
    uint8_t start;
    int acks_syn, acks_fin;
    const uint8_t *events = plan(ep, s, answer, &start, &acks_syn, &acks_fin);
    if ((s->flags & F_RST) && events[0] == 0) {
        anomaly(c, s->frame, AN_RST_NOT_ACCEPTABLE, (uint8_t)role, 0, ep->state);
        return;
    }
    ep->state = start;
    ep->syn_acked |= acks_syn;
    ep->fin_acked |= acks_fin;
    int64_t last = 0;
    if (ep->history.count && ep->history.items[ep->history.count - 1].frame >= 0)
        last = ep->history.items[ep->history.count - 1].frame;
    int in_order = s->frame > ep->last_sent_frame && s->frame >= last;
    int64_t frame = in_order ? s->frame : proof->frame;
    double ts = in_order ? s->ts : proof->ts;
    c->aborted |= (s->flags & F_RST) && in_set(ABORTABLE, ep->state);
    for (int i = 1; i <= events[0]; i++)
        if (!apply(c, ep, events[i], ts, frame)) forbidden(c, s->frame, role, events[i], ep->state);
    if (ep->state == ST_TIME_WAIT && !ep->has_time_wait) {
        ep->has_time_wait = 1;
        ep->time_wait_until = ts + 2 * c->timeouts->msl;
    }
}

/* Deliver to `sender` what the ACK field of its segment `s` proves it received. */
static void take_proven(Conn *c, Endpoint *sender, Endpoint *peer, const Seg *s) {
    while (peer->unreceived.count) {
        const Seg *pending = &peer->unreceived.items[0];
        uint32_t needed = pending->seq + (uint32_t)((pending->flags & F_FIN) ? seq_len(pending) : 1);
        if (!seq_ge(s->ack, needed) || !could_then_send(sender, pending, s)) return;
        Seg taken = queue_pop_front(&peer->unreceived);
        receive(c, sender, &taken, s, s);
    }
}

/* `s` carries no SYN/FIN: everything sent before it, and then `s`, reach the receiver now. */
static void deliver_all(Conn *c, Endpoint *sender, Endpoint *receiver, const Seg *s) {
    while (sender->unreceived.count) {
        Seg taken = queue_pop_front(&sender->unreceived);
        receive(c, receiver, &taken, NULL, s);
    }
    receive(c, receiver, s, NULL, s);
}

/* Data sent after the peer's FIN, and then acknowledged by the FIN side. */
static void track_half_close(Conn *c, Endpoint *sender, Endpoint *receiver, const Seg *s, int kind) {
    if (s->payload_len && kind == KIND_NONE && receiver->has_fin) {
        uint32_t end = s->seq + (uint32_t)s->payload_len;
        if (!sender->has_snd_nxt || !seq_ge(sender->snd_nxt, end)) {
            sender->data_after_peer_fin = end;
            sender->has_data_after_peer_fin = 1;
        }
    }
    if ((s->flags & F_ACK) && sender->has_fin && receiver->has_data_after_peer_fin &&
        seq_ge(s->ack, receiver->data_after_peer_fin))
        c->half_close = 1;
}

/* Step the sender, deliver what the segment proves and what it carries (flags as classified). */
static void carry(Conn *c, Endpoint *sender, Endpoint *receiver, int role, const Seg *s, int kind) {
    if (s->flags & F_ACK) take_proven(c, sender, receiver, s);
    send(c, sender, role, s);
    track_half_close(c, sender, receiver, s, kind);
    note_sent(sender, s);
    if (s->flags & (F_SYN | F_FIN)) queue_push(c, &sender->unreceived, s);  /* until an ACK proves it arrived */
    else deliver_all(c, sender, receiver, s);
}

/* ---- what a passive observer infers (connection.py) ------------------------------------- */

/* The client's SYN captured after the SYN,ACK that answers it: note it, change nothing (late_syn). */
static int late_syn(Conn *c, const Packet *p, Endpoint *sender, int role) {
    if (!(c->isn_inferred && role == ROLE_CLIENT && (p->flags & (F_SYN | F_ACK | F_RST)) == F_SYN &&
          p->seq == sender->isn && !c->bare_syn[ROLE_CLIENT]))
        return 0;
    c->bare_syn[ROLE_CLIENT] = 1;
    if (p->has_options) sender->options = p->options;
    c->syn_data |= p->payload_len > 0;
    sender->payload_bytes += p->payload_len;
    drop_anomalies(c, AN_STARTS_AFTER_SYN);
    anomaly(c, p->frame, AN_LATE_SYN, ROLE_CLIENT, 0, 0);
    return 1;
}

/* Run a segment `peer` must have sent, dated at the evidence for it, as if captured; not counted
 * (packets, bytes, handshake times): only the machines move (feed_inferred). */
static void feed_inferred(Conn *c, Endpoint *sender, Endpoint *peer, int peer_role, const Seg *evidence,
                          uint8_t flags, uint32_t seq, uint32_t ack) {
    Packet inferred;
    memset(&inferred, 0, sizeof inferred);
    inferred.frame = evidence->frame;
    inferred.ts = evidence->ts;
    inferred.flags = flags;
    inferred.seq = seq;
    inferred.ack = ack;
    int kind = KIND_NONE;
    if (flags & (F_SYN | F_FIN)) kind = classify(c, &inferred, peer, peer_role, &flags);
    Seg s = {evidence->frame, evidence->ts, seq, ack, 0, flags};
    carry(c, peer, sender, peer_role, &s, kind);
    c->unseen = (uint8_t)(peer_role + 1);
}

/* The peer's FIN: a bare segment of `sender` moved its ACK by exactly one, and `sender` has sent
 * its own FIN by now (infer_fin). */
static void infer_fin(Conn *c, Endpoint *sender, Endpoint *peer, int peer_role, const Packet *p) {
    int fresh = 0;
    if (!c->has_ack_hi || seq_gt(p->ack, c->ack_hi)) {
        int moved_one = c->has_ack_hi && p->ack == c->ack_hi + 1 && p->payload_len == 0;
        c->ack_hi = p->ack;
        c->has_ack_hi = 1;
        c->has_fin_hint = (uint8_t)moved_one;
        if (moved_one) {
            c->fin_hint = (Seg){p->frame, p->ts, p->seq, p->ack, 0, p->flags};
            fresh = 1;
        }
    }
    if (!c->has_fin_hint || peer->has_fin || !in_set(machine.synchronized, peer->state) ||
        !(sender->has_fin || (p->flags & F_FIN)))
        return;
    Seg hint = c->fin_hint;
    uint32_t fin_seq = hint.ack - 1, acked = hint.seq;
    if (sender->has_fin && !sender->fin_acked && seq_gt(acked, sender->fin_seq))
        feed_inferred(c, sender, peer, peer_role, &hint, F_ACK, fin_seq, acked);
    feed_inferred(c, sender, peer, peer_role, &hint, F_FIN | F_ACK, fin_seq, acked);
    if (!fresh) {  /* the hint, sent earlier, proves the FIN and acknowledged it */
        take_proven(c, sender, peer, &hint);
        receive(c, peer, &hint, NULL, &hint);
    }
}

/* Nothing of `peer` was seen: what `p` acknowledges is evidence of what `peer` sent (infer_unseen). */
static void infer_unseen(Conn *c, Endpoint *sender, Endpoint *peer, int role, const Packet *p) {
    if (peer->packets || (p->flags & (F_SYN | F_RST)) || !(p->flags & F_ACK)) return;
    int peer_role = !role;
    Seg evidence = {p->frame, p->ts, p->seq, p->ack, 0, p->flags};
    if (sender->state == ST_SYN_SENT && !peer->has_isn)  /* the server's SYN,ACK */
        feed_inferred(c, sender, peer, peer_role, &evidence, F_SYN | F_ACK, p->ack - 1, sender->syn_end);
    else if (sender->state == ST_SYN_RCVD && peer->state == ST_SYN_SENT)  /* the client's ACK */
        feed_inferred(c, sender, peer, peer_role, &evidence, F_ACK, p->ack, sender->syn_end);
    infer_fin(c, sender, peer, peer_role, p);
}

int conn_add(Conn *c, const Packet *p) {
    conn_advance(c, p->ts);
    int role = sender_role(c, p);
    Endpoint *sender = &c->ep[role], *receiver = &c->ep[!role];
    sender->packets++;
    c->last_frame = p->frame;
    c->end = p->ts;
    if (p->ts > c->last_ts) c->last_ts = p->ts;
    if (late_syn(c, p, sender, role)) return c->out_of_memory ? -1 : 0;
    infer_unseen(c, sender, receiver, role, p);
    uint8_t flags;
    int kind = classify(c, p, sender, role, &flags);
    int ignored = (flags & F_RST) && rst_ignored(c, sender, receiver, p, role);
    if (c->hs_stage != HS_ACK) note_handshake(c, p, flags, role);
    if (kind != KIND_KEEPALIVE && !ignored) sender->payload_bytes += p->payload_len;
    if (ignored) return c->out_of_memory ? -1 : 0;
    if (kind == KIND_RETRANSMISSION) {
        redate_unreceived(sender, p);
        if (p->flags & F_SYN) {
            if (p->flags & F_ACK) synack_resent(c, sender, role, p);
            return c->out_of_memory ? -1 : 0;
        }
    }
    if (kind == KIND_EARLY_FIN) return c->out_of_memory ? -1 : 0;
    if (c->awaiting == role + 1) {  /* it proves it is synchronized; a RST (from SYN_RCVD) proves nothing */
        if (flags & F_RST) {
            c->awaiting = 0;
            c->awaited_frame = 0;
        } else {
            overflow_established(c, sender);
        }
    }
    Seg s = {p->frame, p->ts, p->seq, p->ack, (uint32_t)p->payload_len, flags};
    carry(c, sender, receiver, role, &s, kind);
    return c->out_of_memory ? -1 : 0;
}

/* ---- time and the end ---------------------------------------------------- */

void conn_advance(Conn *c, double now) {
    for (int role = 0; role < 2; role++) {
        Endpoint *ep = &c->ep[role];
        if (ep->has_time_wait && ep->state == ST_TIME_WAIT && now >= ep->time_wait_until)
            apply(c, ep, EV_TIMEOUT_2MSL, ep->time_wait_until, -1);
    }
}

static int synchronized(const Conn *c) {
    return c->ep[ROLE_CLIENT].syn_acked && c->ep[ROLE_SERVER].syn_acked;
}

double conn_wake_time(const Conn *c) {
    double limit;
    if (in_set(GONE, c->ep[0].state) && in_set(GONE, c->ep[1].state)) limit = c->timeouts->close_linger;
    else if (synchronized(c)) limit = c->timeouts->idle;
    else limit = c->timeouts->handshake;
    double wake = c->last_ts + limit;
    for (int role = 0; role < 2; role++) {
        const Endpoint *ep = &c->ep[role];
        if (ep->has_time_wait && ep->state == ST_TIME_WAIT && ep->time_wait_until < wake)
            wake = ep->time_wait_until;
    }
    return wake;
}

int conn_starts_anew(const Conn *c, const Packet *p) {
    if (!(p->flags & F_SYN) || (p->flags & (F_ACK | F_RST))) return 0;
    int role = sender_role(c, p);
    const Endpoint *sender = &c->ep[role];
    if (sender->has_isn) return p->seq != sender->isn;
    int crossing = role == ROLE_SERVER && c->ep[ROLE_CLIENT].state == ST_SYN_SENT &&
                   c->ep[ROLE_SERVER].last_sent_frame == 0;
    return !crossing;
}

/* A new SYN on this 4-tuple: an end still in TIME_WAIT is CLOSED from it (connection.py, "Port reuse"). */
static void leave_time_wait(Conn *c) {
    for (int role = 0; role < 2; role++) {
        Endpoint *ep = &c->ep[role];
        if (ep->state != ST_TIME_WAIT) continue;
        ep->state = ST_CLOSED;
        history_push(c, &ep->history, ST_CLOSED, c->reused_ts, c->reused_frame);
    }
}

int conn_finish(Conn *c) {
    if (c->finished) return c->out_of_memory ? -1 : 0;  /* live.c finished it for its events already */
    c->finished = 1;
    conn_advance(c, c->last_ts);
    for (int role = 0; role < 2; role++) {
        Endpoint *sender = &c->ep[role], *receiver = &c->ep[!role];
        while (sender->unreceived.count) {
            Seg s = queue_pop_front(&sender->unreceived);
            if (s.flags & F_SYN) continue;
            Seg proof = s;
            proof.frame = c->last_frame;
            proof.ts = c->end;
            receive(c, receiver, &s, NULL, &proof);
        }
    }
    if (c->awaiting) overflow_established(c, &c->ep[c->awaiting - 1]);
    if (c->reused_frame) leave_time_wait(c);
    return c->out_of_memory ? -1 : 0;
}

/* ---- labels (labels.py) ---------------------------------------------------- */

static int went_through(const History *h, uint8_t state) {
    for (uint32_t i = 0; i < h->count; i++)
        if (h->items[i].state == state) return 1;
    return 0;
}

static const char *open_label(const Conn *c) {
    int bare = c->bare_syn[0] + c->bare_syn[1];
    if (bare == 0)  /* a capture of the server's side only saw the handshake from there */
        return c->unseen == ROLE_CLIENT + 1 && c->synack_seen && synchronized(c) ? OPEN_LABELS[0] : OPEN_LABELS[5];
    if (bare == 2) return OPEN_LABELS[1];
    if (synchronized(c)) return OPEN_LABELS[0];
    if (c->synack_seen) return OPEN_LABELS[4];
    if (c->has_reset && c->reset_role == ROLE_SERVER) return OPEN_LABELS[2];
    return OPEN_LABELS[3];
}

static const char *close_label(const Conn *c, int simultaneous) {
    if (!synchronized(c)) return CLOSE_LABELS[6];
    if (simultaneous) return CLOSE_LABELS[2];
    if (c->aborted) return CLOSE_LABELS[3];
    if (c->n_fins == 2) return c->second_fin_acks_first ? CLOSE_LABELS[1] : CLOSE_LABELS[0];
    if (c->n_fins == 1) return CLOSE_LABELS[4];
    return CLOSE_LABELS[5];
}

void conn_labels(const Conn *c, Labels *out) {
    static const char *const roles[] = {"client", "server"};
    int simultaneous = went_through(&c->ep[0].history, ST_CLOSING) && went_through(&c->ep[1].history, ST_CLOSING);
    out->open = open_label(c);
    out->close = close_label(c, simultaneous);
    out->active_closer = simultaneous ? "both" : (c->n_fins ? roles[c->fin_order[0]] : NULL);
}
