/* The connection table, in C: tracker.py's Tracker.
 *
 * Connections are keyed by the bidirectional 4-tuple (and IP version, VLAN ids and
 * VXLAN/Geneve network id: tracker.py) in an
 * open-addressing hash table with backward-shift deletion. Looking a packet's
 * connection up is a cache miss or two in a table of 100,000s, so the caller
 * computes keys a few packets ahead and prefetches their table entries, and
 * then every cache line of their connections (tracker_prefetch): a segment
 * touches most of them. A binary heap of
 * (wake time, id) entries retires connections on packet time, exactly as the
 * Python heap does; a heap entry names its connection by slot and id, so an
 * entry left behind by an earlier wake-up, or by a connection already
 * retired, is recognised as stale and skipped. The heap is rebuilt when
 * stale entries outnumber the live ones, which bounds memory by the open
 * connections.
 *
 * Half-open connections are kept compact. A SYN flood opens a connection per
 * packet and each waits for the handshake timeout (40 s); as Conns (848 bytes
 * each) a million of them held 900 MB. So a connection whose first packet is
 * a bare SYN (SYN without ACK, RST or FIN) starts as a HalfOpen record
 * instead: its key, id and slot, and that packet's facts (120 bytes, from
 * slabs of the tracker's own: halfopen.c). The record becomes a Conn
 * (`promote`) when a second packet comes for its 4-tuple, when its handshake
 * timer fires, or at the flush at the end (one at a time, as they are handed
 * over), by replaying the SYN through conn_init and conn_add, the normal
 * path; then the second packet, the timer or the flush goes on as it would
 * have. The Conn ends up
 * exactly as if it had been made at the SYN: it holds nothing that time alone
 * changes before its timer (conn_advance only ends TIME_WAIT), and the record
 * keeps what the tracker needs meanwhile: the id and slot its heap entry
 * names, and its wake time, the SYN's time plus the handshake timeout. That
 * last one comes from fsm.py's tables, so tracker_init checks it on a SYN
 * replayed through a real Conn and keeps no records if the tables say
 * otherwise. The table, the slots and the heap name either kind by a tagged
 * pointer (engine.h: Ref); both kinds begin with the same fields (id, key,
 * hash, slot), so looking a key up needs no tag.
 *
 * A server answers a flood, so a capture at the server has a SYN-ACK (or
 * several) for each SYN. Under a flood (8,192 connections waiting on the
 * handshake timeout, counted by `census`), a record made a Conn for a packet
 * becomes a record again once the packet is through, if the connection still
 * waits on its handshake, keeping that packet too (up to 8 after the SYN, in
 * a small block of its own) and the wake-up the Conn scheduled
 * (keep_or_forget). Replaying the record's packets makes that Conn again.
 * Ordinary traffic never has that many handshakes open at once, and pays one
 * byte test per packet.
 *
 * What a half-open connection costs in all (record, table, heap, slot): about
 * 190 bytes with the SYN alone (a million SYNs within a second peak at 259
 * MiB: 247 before the key held VLAN ids and a VNI), about 320 with its SYN-ACK too. A connection that goes on costs a
 * record made and reused, and its SYN processed at its second packet.
 */
#include <math.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "engine.h"
#include "halfopen.h"

/* ---- keys ------------------------------------------------------------------ */

static void make_key(const Packet *p, Key *key) {  /* fills every byte: keys compare as words */
    int cmp = addr_compare(p->src, p->dst);
    int src_first = cmp < 0 || (cmp == 0 && p->sport <= p->dport);
    memcpy(key->a, src_first ? p->src : p->dst, 16);
    memcpy(key->b, src_first ? p->dst : p->src, 16);
    key->pa = src_first ? p->sport : p->dport;
    key->pb = src_first ? p->dport : p->sport;
    key->v = p->ip_version;
    memset(key->pad, 0, sizeof key->pad);
    key->vlan = p->vlan;
    key->vni = p->vni;
}

_Static_assert(sizeof(Key) == 48, "a key is six words, every byte set");

static uint32_t hash_key(const Key *key) {
    /* six words, each multiplied by its own odd constant (independent: they pipeline), then mixed;
     * the last two built from the fields, not read back over the narrower stores that just wrote them */
    uint64_t w[4];
    memcpy(w, key->a, 16);
    memcpy(w + 2, key->b, 16);
    uint64_t ports = (uint64_t)key->pa << 24 | (uint64_t)key->pb << 8 | key->v;
    uint64_t net = (uint64_t)key->vlan << 32 | key->vni;
    uint64_t h = (w[0] * 0x9E3779B97F4A7C15ull) ^ (w[1] * 0xC2B2AE3D27D4EB4Full) ^
                 (w[2] * 0x165667B19E3779F9ull) ^ (w[3] * 0xD6E8FEB86659FD93ull) ^ (ports * 0xFF51AFD7ED558CCDull) ^
                 (net * 0xC4CEB9FE1A85EC53ull);
    h ^= h >> 29;
    h *= 0xBF58476D1CE4E5B9ull;
    h ^= h >> 32;
    return (uint32_t)h;
}

static inline int same_key(const Key *x, const Key *y) {
    uint64_t a[6], b[6];  /* 48 bytes, compared as six words */
    memcpy(a, x, sizeof a);
    memcpy(b, y, sizeof b);
    return ((a[0] ^ b[0]) | (a[1] ^ b[1]) | (a[2] ^ b[2]) | (a[3] ^ b[3]) | (a[4] ^ b[4]) | (a[5] ^ b[5])) == 0;
}

/* ---- half-open connections: the records of halfopen.h ----------------------- */

/* The only packet a bare SYN's connection has seen moves it to SYN_SENT/CLOSED: its
 * wake time is the handshake timeout after it (checked by tracker_init). */
static inline double half_wake(const Tracker *t, const HalfOpen *h) { return h->first.ts + t->timeouts.handshake; }

static inline double half_scheduled(const Tracker *t, const HalfOpen *h) {
    return h->later != NULL ? h->later->scheduled : half_wake(t, h);
}

static inline double scheduled_of(const Tracker *t, Ref r) {
    return is_half(r) ? half_scheduled(t, half_of(r)) : conn_of(r)->scheduled;
}

/* The Conn a record stands for: its packets replayed through the normal path.
 * Not yet in the table or the slots; NULL: out of memory. */
static Conn *replay(Tracker *t, const HalfOpen *h) {
    Packet p;
    half_packet(h, 0, &p);
    Conn *c = t->spare != NULL ? t->spare : t->new_conn(t->ctx);
    if (c == NULL) return NULL;
    t->spare = NULL;
    int failed = conn_init(c, h->id, &p, &t->timeouts) || conn_add(c, &p);
    for (uint32_t k = 1; !failed && k < half_count(h); k++) {
        half_packet(h, k, &p);
        failed = conn_add(c, &p);
    }
    if (failed) {
        conn_free(c);  /* its memory is the sink's (slabs) */
        return NULL;
    }
    c->key = h->key;
    c->hash = h->hash;
    c->slot = h->slot;
    c->scheduled = half_scheduled(t, h);  /* what the record's heap entry says */
    return c;
}

/* ---- the hash table --------------------------------------------------------- */

static int table_resize(Tracker *t, size_t size) {
    Entry *old = t->table;
    size_t old_size = t->table_size;
    Entry *table = calloc(size, sizeof *table);
    if (table == NULL) return -1;
    for (size_t i = 0; i < old_size; i++) {
        if (old[i].ref == 0) continue;
        size_t j = old[i].hash & (size - 1);
        while (table[j].ref != 0) j = (j + 1) & (size - 1);
        table[j] = old[i];
    }
    free(old);
    t->table = table;
    t->table_size = size;
    return 0;
}

static size_t table_find(const Tracker *t, const Key *key, uint32_t hash) {
    size_t mask = t->table_size - 1;
    for (size_t i = hash & mask;; i = (i + 1) & mask) {
        const Entry *entry = &t->table[i];
        if (entry->ref == 0 || (entry->hash == hash && same_key(key_of(entry->ref), key))) return i;
    }
}

static void table_delete(Tracker *t, size_t i) {
    size_t mask = t->table_size - 1;
    size_t j = i;
    for (;;) {
        t->table[i].ref = 0;
        for (;;) {
            j = (j + 1) & mask;
            if (t->table[j].ref == 0) return;
            size_t home = t->table[j].hash & mask;
            /* move j back to i unless its home lies cyclically in (i, j] */
            if (i <= j ? (i < home && home <= j) : (i < home || home <= j)) continue;
            break;
        }
        t->table[i] = t->table[j];
        i = j;
    }
}

/* ---- slots -------------------------------------------------------------------- */

/* A free slot for `ref` (its number in *slot); nonzero: out of memory. */
static int slot_take(Tracker *t, Ref ref, uint32_t *slot) {
    if (t->n_free) {
        *slot = t->free_slots[--t->n_free];
    } else {
        if (t->n_slots == t->cap_slots) {  /* the free list can hold every slot: grow both alike */
            size_t cap_free = t->cap_slots;
            uint32_t *free_slots = grown(t->free_slots, &cap_free, sizeof *free_slots, 1024);
            if (free_slots == NULL) return -1;
            t->free_slots = free_slots;
            Ref *slots = grown(t->slots, &t->cap_slots, sizeof *slots, 1024);
            if (slots == NULL) return -1;
            t->slots = slots;
        }
        *slot = (uint32_t)t->n_slots++;
    }
    t->slots[*slot] = ref;
    return 0;
}

static inline void slot_free(Tracker *t, uint32_t slot) {
    t->slots[slot] = 0;
    t->free_slots[t->n_free++] = slot;
}

/* ---- the wake-up heap, ordered by (when, id) as Python's tuples are ------------ */

static inline int before(const WakeEntry *x, const WakeEntry *y) {
    return x->when < y->when || (x->when == y->when && x->id < y->id);
}

static void sift_down(WakeEntry *heap, size_t len, size_t i) {
    WakeEntry item = heap[i];
    for (;;) {
        size_t child = 2 * i + 1;
        if (child >= len) break;
        if (child + 1 < len && before(&heap[child + 1], &heap[child])) child++;
        if (!before(&heap[child], &item)) break;
        heap[i] = heap[child];
        i = child;
    }
    heap[i] = item;
}

static int heap_push(Tracker *t, double when, int64_t id, uint32_t slot) {
    if (t->heap_len == t->heap_cap) {
        WakeEntry *heap = grown(t->heap, &t->heap_cap, sizeof *heap, 1024);
        if (heap == NULL) return -1;
        t->heap = heap;
    }
    size_t i = t->heap_len++;
    WakeEntry item = {when, id, slot};
    while (i > 0) {
        size_t parent = (i - 1) / 2;
        if (!before(&item, &t->heap[parent])) break;
        t->heap[i] = t->heap[parent];
        i = parent;
    }
    t->heap[i] = item;
    return 0;
}

static WakeEntry heap_pop(Tracker *t) {
    WakeEntry top = t->heap[0];
    t->heap[0] = t->heap[--t->heap_len];
    if (t->heap_len) sift_down(t->heap, t->heap_len, 0);
    return top;
}

static void drop_superseded(Tracker *t) {
    if (t->heap_len <= 2 * t->open_count + 64) return;
    size_t n = 0;
    for (size_t i = 0; i < t->table_size; i++) {
        Ref r = t->table[i].ref;
        if (r == 0) continue;
        t->heap[n++] = (WakeEntry){scheduled_of(t, r), id_of(r), slot_of(r)};
    }
    t->heap_len = n;
    for (size_t i = n / 2; i-- > 0;) sift_down(t->heap, n, i);
}

/* ---- promoting, retiring ------------------------------------------------------------ */

/* Table entry i holds a record: put the Conn it stands for in its place (the
 * table and its slot), and return the Conn; the record is the caller's. */
static Conn *promote_keeping(Tracker *t, size_t i) {
    HalfOpen *h = half_of(t->table[i].ref);
    Conn *c = replay(t, h);
    if (c == NULL) return NULL;
    t->table[i].ref = (Ref)c;
    t->slots[c->slot] = (Ref)c;
    c->in_handshake = 1;  /* as every record is counted */
    return c;
}

static Conn *promote(Tracker *t, size_t i) {
    HalfOpen *h = half_of(t->table[i].ref);
    Conn *c = promote_keeping(t, i);
    if (c != NULL) half_release(&t->pool, h);
    return c;
}

/* Under a flood (FLOOD_HANDSHAKES connections waiting on the handshake
 * timeout), a record made a Conn for packet p becomes a record again, p kept
 * too, while the connection still waits on its handshake, up to LATER_MAX
 * packets after the SYN: a flood answered by SYN-ACKs stays compact. By then
 * the Conn has done all the tracker asks of it for p (its wake-up is
 * scheduled), and it is the Conn its packets, replayed, will make again.
 * Otherwise the record goes. */
static void keep_or_forget(Tracker *t, size_t i, Conn *c, HalfOpen *h, const Packet *p) {
    uint32_t kept = half_count(h) - 1;  /* packets kept after the SYN */
    if (t->in_handshake >= FLOOD_HANDSHAKES && c->in_handshake && kept < LATER_MAX && !c->out_of_memory &&
        later_push(h, p, c->scheduled) == 0) {
        t->table[i].ref = half_ref(h);
        t->slots[h->slot] = half_ref(h);
        conn_free(c);
        t->spare = c;  /* the next replay's */
        return;
    }
    half_release(&t->pool, h);
}

/* Waiting on the handshake timeout, as conn_wake_time decides: not both ends
 * gone (CLOSED or LISTEN), and not synchronized. Only a gauge of a flood for
 * keep_or_forget: what it says changes no output. */
static inline int in_handshake(const Conn *c) {
    const unsigned gone = 1u << ST_CLOSED | 1u << ST_LISTEN;
    int both_gone = (gone >> c->ep[0].state) & (gone >> c->ep[1].state) & 1;
    return !both_gone && !(c->ep[0].syn_acked && c->ep[1].syn_acked);
}

/* Count c in or out of in_handshake, as it now is. */
static inline void census(Tracker *t, Conn *c) {
    uint8_t now = (uint8_t)in_handshake(c);
    if (now != c->in_handshake) {
        if (now) t->in_handshake++;
        else t->in_handshake--;
        c->in_handshake = now;
    }
}

/* Hand c over, finished at packet time `at`: its timer's, the reusing SYN's. */
static int retire(Tracker *t, Conn *c, double at) {
    if (c->in_handshake) t->in_handshake--;
    size_t i = table_find(t, &c->key, c->hash);
    if (t->table[i].ref == (Ref)c) {
        table_delete(t, i);
        t->open_count--;
    }
    slot_free(t, c->slot);
    c->scheduled = NAN;
    c->finished_at = at;
    c->retired_frame = t->at_frame;
    c->retired_how = t->at_how;
    c->retired_before = t->at_before;
    c->retired_ts = t->at_ts;
    return t->finished(t->ctx, c);  /* it is theirs now: finished, written and freed there */
}

static int expire(Tracker *t, double now) {
    if (!(now > t->now)) return 0;
    t->now = now;
    while (t->heap_len && t->heap[0].when <= now) {
        WakeEntry entry = heap_pop(t);
        Ref r = t->slots[entry.slot];
        if (r == 0 || id_of(r) != entry.id || scheduled_of(t, r) != entry.when) continue;
        Conn *c = is_half(r) ? promote(t, table_find(t, &half_of(r)->key, half_of(r)->hash)) : conn_of(r);
        if (c == NULL) return -1;
        conn_advance(c, now);
        double wake = conn_wake_time(c);
        if (wake <= now) {
            c->retired_when = entry.when;
            if (retire(t, c, wake)) return -1;
        } else {
            if (c->in_handshake) census(t, c);
            c->scheduled = wake;
            if (heap_push(t, wake, c->id, c->slot)) return -1;
        }
    }
    return 0;
}

/* ---- the public face ---------------------------------------------------------------- */

int tracker_init(Tracker *t, const Timeouts *timeouts, FinishedFn finished, NewConnFn new_conn, void *ctx) {
    memset(t, 0, sizeof *t);
    t->timeouts = *timeouts;
    t->half_open = half_open_allowed(&t->timeouts);
    t->finished = finished;
    t->new_conn = new_conn;
    t->ctx = ctx;
    t->now = -INFINITY;
    t->last_ts = -INFINITY;
    t->first_ts = NAN;
    t->prefetched_id = -1;
    return table_resize(t, 1024);
}

/* Every cache line of a connection (a segment touches most of a Conn). Inlined
 * always: as a function of its own GCC finds it has no side effects and drops
 * the call, prefetches and all. */
static inline __attribute__((always_inline)) void prefetch_ref(Ref r) {
    if (is_half(r)) {
        const char *at = (const char *)half_of(r);  /* 104 bytes: two lines, or three */
        __builtin_prefetch(at);
        __builtin_prefetch(at + 64);
        __builtin_prefetch(at + sizeof(HalfOpen) - 1);
    } else {
        for (size_t line = 0; line < sizeof(Conn); line += 64) __builtin_prefetch((const char *)r + line);
    }
}

void tracker_prefetch(const Tracker *t, const Packet *p, int conn_too) {
    const Entry *home = &t->table[p->hash & (t->table_size - 1)];
    __builtin_prefetch(home);
    if (conn_too && home->ref != 0) prefetch_ref(home->ref);
}

/* The connection whose wake-up comes next has usually not been touched for a
 * minute (TIME_WAIT): fetch it while packets go on, once per new head of the heap. */
static inline void prefetch_next_wake(Tracker *t) {
    if (t->heap_len == 0 || t->heap[0].id == t->prefetched_id) return;
    t->prefetched_id = t->heap[0].id;
    Ref r = t->slots[t->heap[0].slot];
    if (r != 0) prefetch_ref(r);
}

void packet_key(Packet *p) {
    make_key(p, &p->key);
    p->hash = hash_key(&p->key);
}

/* A new connection's first packet, a bare SYN, into table entry i as a HalfOpen. */
static int add_half_open(Tracker *t, size_t i, const Packet *p) {
    HalfOpen *h = half_new(&t->pool);
    if (h == NULL) return -1;
    half_fill(h, t->frame_ids ? p->frame : t->next_id++, p);
    if (slot_take(t, half_ref(h), &h->slot)) {
        half_release(&t->pool, h);
        return -1;
    }
    t->table[i] = (Entry){p->hash, half_ref(h)};
    t->open_count++;
    t->in_handshake++;  /* SYN_SENT/CLOSED: the self-check saw it wait on the handshake timeout */
    double wake = half_wake(t, h);
    if (wake < INFINITY) {  /* as a Conn's first wake-up, against its scheduled = inf */
        if (heap_push(t, wake, h->id, h->slot)) return -1;
        drop_superseded(t);
    }
    return 0;
}

/* A new connection's first packet, of any kind, into table entry i as a Conn; NULL: out of memory. */
static Conn *add_conn(Tracker *t, size_t i, const Packet *p) {
    Conn *c = t->new_conn(t->ctx);
    if (c == NULL) return NULL;
    if (conn_init(c, t->frame_ids ? p->frame : t->next_id++, p, &t->timeouts) || slot_take(t, (Ref)c, &c->slot)) {
        conn_free(c);  /* its memory is the sink's (slabs) */
        return NULL;
    }
    c->key = p->key;
    c->hash = p->hash;
    t->table[i] = (Entry){p->hash, (Ref)c};
    t->open_count++;
    return c;
}

int tracker_add(Tracker *t, const Packet *p) {
    t->at_frame = p->frame;
    t->at_before = t->now;
    t->at_ts = p->ts;
    t->at_how = RETIRED_TIMER;
    if (isnan(t->first_ts)) t->first_ts = p->ts;
    if (expire(t, p->ts)) return -1;
    if (p->ts > t->last_ts) t->last_ts = p->ts;
    t->last_conn = NULL;
    prefetch_next_wake(t);
    size_t i = table_find(t, &p->key, p->hash);
    Conn *c = NULL;
    HalfOpen *was = NULL;  /* the record c was made from, for this packet */
    Ref r = t->table[i].ref;
    if (r != 0) {
        if (is_half(r)) was = half_of(r);
        c = was != NULL ? promote_keeping(t, i) : conn_of(r);
        if (c == NULL) return -1;
    }
    if (c != NULL && conn_starts_anew(c, p)) {
        if (was != NULL) half_release(&t->pool, was);
        was = NULL;
        c->reused_frame = p->frame;  /* conn_finish: an end in TIME_WAIT leaves it at this SYN */
        c->reused_ts = p->ts;
        c->retired_when = p->ts;
        t->at_how = RETIRED_REUSE;
        if (retire(t, c, p->ts)) return -1;
        c = NULL;
        i = table_find(t, &p->key, p->hash);
    }
    int fresh = c == NULL;
    if (c == NULL) {
        if (2 * (t->open_count + 1) > t->table_size) {
            if (table_resize(t, t->table_size * 2)) return -1;
            i = table_find(t, &p->key, p->hash);
        }
        if (t->half_open && bare_syn(p) && p->tunnel == NULL) {  /* records keep no text */
            t->last_id = t->next_id;
            return add_half_open(t, i, p);
        }
        c = add_conn(t, i, p);
        if (c == NULL) return -1;
    }
    t->last_id = c->id;
    t->last_conn = c;
    if (conn_add(c, p)) goto failed;
    if (c->in_handshake || fresh) census(t, c);  /* out of the handshake, a connection stays out */
    double wake = conn_wake_time(c);
    if (wake < c->scheduled) {
        c->scheduled = wake;
        if (heap_push(t, wake, c->id, c->slot)) goto failed;
        drop_superseded(t);
    }
    if (was != NULL) keep_or_forget(t, i, c, was, p);  /* the table is as it was after the lookup: i is c's */
    return 0;
failed:
    if (was != NULL) half_release(&t->pool, was);
    return -1;
}

static int by_id(const void *x, const void *y) {
    int64_t a = id_of(*(const Ref *)x), b = id_of(*(const Ref *)y);
    return (a > b) - (a < b);
}

/* Hand over `r` at the flush: a HalfOpen is replayed into a Conn first, one at
 * a time, so a flood's records never all become Conns at once. Or given to
 * `take` as it is (a part's end: packed), then released. */
static int flush_one(Tracker *t, Ref r, TakeFn take, void *ctx) {
    if (take != NULL) {
        int status = take(ctx, r);
        if (is_half(r)) {
            half_release(&t->pool, half_of(r));
        } else {
            conn_free(conn_of(r));
            t->spare = conn_of(r);  /* its memory is the sink's: the next replay's */
        }
        return status;
    }
    Conn *c = conn_of(r);
    if (is_half(r)) {
        c = replay(t, half_of(r));
        half_release(&t->pool, half_of(r));
        if (c == NULL) return -1;
    }
    c->scheduled = NAN;
    c->finished_at = t->last_ts;  /* the capture's end: its last segment's time (tracker.py's last_segment_ts) */
    c->retired_frame = INT64_MAX;
    c->retired_how = RETIRED_FLUSH;
    c->retired_when = c->retired_before = c->retired_ts = t->last_ts;
    return t->finished(t->ctx, c);
}

int tracker_flush_begin(Tracker *t, Flushing *f) {
    size_t n = t->open_count;
    int64_t low = INT64_MAX, high = -1;
    *f = (Flushing){0};
    for (size_t i = 0; i < t->table_size; i++) {
        Ref r = t->table[i].ref;
        if (r == 0) continue;
        int64_t id = id_of(r);
        if (id < low) low = id;
        if (id > high) high = id;
    }
    if (high < 0) return 0;
    size_t span = (size_t)(high - low + 1);
    int dense = span <= 4 * n + 1024;
    f->in_order = calloc(dense ? span : n, sizeof *f->in_order);
    if (f->in_order == NULL) return -1;
    size_t k = 0;
    for (size_t i = 0; i < t->table_size; i++) {
        Ref r = t->table[i].ref;
        if (r == 0) continue;
        f->in_order[dense ? (size_t)(id_of(r) - low) : k++] = r;
        t->table[i].ref = 0;
        slot_free(t, slot_of(r));
    }
    t->open_count = 0;
    t->in_handshake = 0;
    if (!dense) qsort(f->in_order, n, sizeof *f->in_order, by_id);
    f->count = dense ? span : n;
    return 0;
}

static int flush_some(Tracker *t, Flushing *f, size_t n, TakeFn take, void *ctx) {
    int status = 0;
    for (size_t done = 0; f->next < f->count && done < n && status == 0; f->next++) {
        Ref r = f->in_order[f->next];
        if (r == 0) continue;
        f->in_order[f->next] = 0;  /* handed over: no longer ours to release */
        status = flush_one(t, r, take, ctx);
        done++;
    }
    return status;
}

int tracker_flush_some(Tracker *t, Flushing *f, size_t n) { return flush_some(t, f, n, NULL, NULL); }

void tracker_flush_end(Tracker *t, Flushing *f) {
    for (size_t i = f->next; i < f->count; i++) {  /* after an error: never handed over, so still ours to release */
        Ref r = f->in_order[i];
        if (r != 0 && is_half(r)) half_release(&t->pool, half_of(r));
        else if (r != 0) conn_free(conn_of(r));
    }
    free(f->in_order);
    *f = (Flushing){0};
}

static int flush_all(Tracker *t, TakeFn take, void *ctx) {
    Flushing f;
    int status = tracker_flush_begin(t, &f);
    if (status == 0) status = flush_some(t, &f, SIZE_MAX, take, ctx);
    tracker_flush_end(t, &f);
    return status;
}

int tracker_flush(Tracker *t) { return flush_all(t, NULL, NULL); }

int tracker_hand_over(Tracker *t, TakeFn take, void *ctx) { return flush_all(t, take, ctx); }

int tracker_adopt(Tracker *t, Conn *c) {
    c->hash = hash_key(&c->key);
    if (2 * (t->open_count + 1) > t->table_size && table_resize(t, t->table_size * 2)) return -1;
    size_t i = table_find(t, &c->key, c->hash);
    if (t->table[i].ref != 0) return 1;
    c->id = c->first_frame;
    if (slot_take(t, (Ref)c, &c->slot)) return -1;
    t->table[i] = (Entry){c->hash, (Ref)c};
    t->open_count++;
    census(t, c);
    c->scheduled = conn_wake_time(c);
    if (c->scheduled < INFINITY && heap_push(t, c->scheduled, c->id, c->slot)) return -1;
    drop_superseded(t);
    return 0;
}

int tracker_adopt_half(Tracker *t, const HalfOpen *record) {
    uint32_t hash = hash_key(&record->key);
    if (2 * (t->open_count + 1) > t->table_size && table_resize(t, t->table_size * 2)) return -1;
    size_t i = table_find(t, &record->key, hash);
    if (t->table[i].ref != 0) return 1;
    HalfOpen *h = half_new(&t->pool);
    if (h == NULL) return -1;
    *h = *record;  /* its later packets too, once it is in */
    h->hash = hash;
    h->id = h->first.frame;
    double wake = half_scheduled(t, h);
    if (slot_take(t, half_ref(h), &h->slot)) {
        h->later = NULL;  /* still the caller's */
        half_release(&t->pool, h);
        return -1;
    }
    if (wake < INFINITY && heap_push(t, wake, h->id, h->slot)) {
        slot_free(t, h->slot);
        h->later = NULL;
        half_release(&t->pool, h);
        return -1;
    }
    t->table[i] = (Entry){hash, half_ref(h)};
    t->open_count++;
    t->in_handshake++;  /* as add_half_open counts it */
    if (wake < INFINITY) drop_superseded(t);
    return 0;
}

/* Packet time `now` has come without a packet (a live capture's clock): what timed out by then finishes, as
 * tracker.py's expire(now) from Pipeline.tick. */
int tracker_tick(Tracker *t, double now) { return expire(t, now); }

int tracker_tick_as(Tracker *t, double now, int64_t frame, double before, double ts, uint8_t how) {
    t->at_frame = frame;
    t->at_before = before;
    t->at_ts = ts;
    t->at_how = how;
    return expire(t, now);
}

void tracker_free(Tracker *t) {
    for (size_t i = 0; i < t->n_slots; i++) {  /* the Conn itself is the sink's (slabs) */
        Ref r = t->slots[i];
        if (r != 0 && is_half(r)) free(half_of(r)->later);
        else if (r != 0) conn_free(conn_of(r));
    }
    half_pool_free(&t->pool);
    free(t->slots);
    free(t->free_slots);
    free(t->table);
    free(t->heap);
    memset(t, 0, sizeof *t);
}
