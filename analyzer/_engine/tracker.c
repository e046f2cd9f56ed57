/* The connection table, in C: tracker.py's Tracker.
 *
 * Connections are keyed by the bidirectional 4-tuple (and IP version) in an
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
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "engine.h"

/* ---- keys ------------------------------------------------------------------ */

static void make_key(const Packet *p, Key *key) {  /* fills every byte: keys compare as words */
    int cmp = addr_compare(p->src, p->dst);
    int src_first = cmp < 0 || (cmp == 0 && p->sport <= p->dport);
    memcpy(key->a, src_first ? p->src : p->dst, 16);
    memcpy(key->b, src_first ? p->dst : p->src, 16);
    key->pa = src_first ? p->sport : p->dport;
    key->pb = src_first ? p->dport : p->sport;
    key->v = p->ip_version;
    key->pad = 0;
}

static uint32_t hash_key(const Key *key) {
    /* five words, each multiplied by its own odd constant (independent: they pipeline), then mixed */
    uint64_t w[5];
    memcpy(w, key->a, 16);
    memcpy(w + 2, key->b, 16);
    w[4] = (uint64_t)key->pa << 24 | (uint64_t)key->pb << 8 | key->v;
    uint64_t h = (w[0] * 0x9E3779B97F4A7C15ull) ^ (w[1] * 0xC2B2AE3D27D4EB4Full) ^
                 (w[2] * 0x165667B19E3779F9ull) ^ (w[3] * 0xD6E8FEB86659FD93ull) ^ (w[4] * 0xFF51AFD7ED558CCDull);
    h ^= h >> 29;
    h *= 0xBF58476D1CE4E5B9ull;
    h ^= h >> 32;
    return (uint32_t)h;
}

static inline int same_key(const Key *x, const Key *y) {
    uint64_t a[5], b[5];  /* 38 bytes, compared as five words (the last two overlap) */
    memcpy(a, x, 32);
    memcpy(a + 4, (const char *)x + sizeof *x - 8, 8);
    memcpy(b, y, 32);
    memcpy(b + 4, (const char *)y + sizeof *y - 8, 8);
    return ((a[0] ^ b[0]) | (a[1] ^ b[1]) | (a[2] ^ b[2]) | (a[3] ^ b[3]) | (a[4] ^ b[4])) == 0;
}

/* ---- the hash table --------------------------------------------------------- */

static int table_resize(Tracker *t, size_t size) {
    Entry *old = t->table;
    size_t old_size = t->table_size;
    Entry *table = calloc(size, sizeof *table);
    if (table == NULL) return -1;
    for (size_t i = 0; i < old_size; i++) {
        if (old[i].conn == NULL) continue;
        size_t j = old[i].hash & (size - 1);
        while (table[j].conn != NULL) j = (j + 1) & (size - 1);
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
        if (entry->conn == NULL || (entry->hash == hash && same_key(&entry->conn->key, key))) return i;
    }
}

static void table_delete(Tracker *t, size_t i) {
    size_t mask = t->table_size - 1;
    size_t j = i;
    for (;;) {
        t->table[i].conn = NULL;
        for (;;) {
            j = (j + 1) & mask;
            if (t->table[j].conn == NULL) return;
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

static int slot_take(Tracker *t, Conn *c) {
    if (t->n_free) {
        c->slot = t->free_slots[--t->n_free];
    } else {
        if (t->n_slots == t->cap_slots) {  /* the free list can hold every slot: grow both alike */
            size_t cap_free = t->cap_slots;
            uint32_t *free_slots = grown(t->free_slots, &cap_free, sizeof *free_slots, 1024);
            if (free_slots == NULL) return -1;
            t->free_slots = free_slots;
            Conn **slots = grown(t->slots, &t->cap_slots, sizeof *slots, 1024);
            if (slots == NULL) return -1;
            t->slots = slots;
        }
        c->slot = (uint32_t)t->n_slots++;
    }
    t->slots[c->slot] = c;
    return 0;
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

static int heap_push(Tracker *t, double when, const Conn *c) {
    if (t->heap_len == t->heap_cap) {
        WakeEntry *heap = grown(t->heap, &t->heap_cap, sizeof *heap, 1024);
        if (heap == NULL) return -1;
        t->heap = heap;
    }
    size_t i = t->heap_len++;
    WakeEntry item = {when, c->id, c->slot};
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
        const Conn *c = t->table[i].conn;
        if (c == NULL) continue;
        t->heap[n++] = (WakeEntry){c->scheduled, c->id, c->slot};
    }
    t->heap_len = n;
    for (size_t i = n / 2; i-- > 0;) sift_down(t->heap, n, i);
}

/* ---- retiring --------------------------------------------------------------------- */

static int retire(Tracker *t, Conn *c) {
    size_t i = table_find(t, &c->key, c->hash);
    if (t->table[i].conn == c) {
        table_delete(t, i);
        t->open_count--;
    }
    t->slots[c->slot] = NULL;
    t->free_slots[t->n_free++] = c->slot;
    c->scheduled = NAN;
    return t->finished(t->ctx, c);  /* it is theirs now: finished, written and freed there */
}

static int expire(Tracker *t, double now) {
    if (!(now > t->now)) return 0;
    t->now = now;
    while (t->heap_len && t->heap[0].when <= now) {
        WakeEntry entry = heap_pop(t);
        Conn *c = t->slots[entry.slot];
        if (c == NULL || c->id != entry.id || c->scheduled != entry.when) continue;
        conn_advance(c, now);
        double wake = conn_wake_time(c);
        if (wake <= now) {
            if (retire(t, c)) return -1;
        } else {
            c->scheduled = wake;
            if (heap_push(t, wake, c)) return -1;
        }
    }
    return 0;
}

/* ---- the public face ---------------------------------------------------------------- */

int tracker_init(Tracker *t, const Timeouts *timeouts, FinishedFn finished, NewConnFn new_conn, void *ctx) {
    memset(t, 0, sizeof *t);
    t->timeouts = *timeouts;
    t->finished = finished;
    t->new_conn = new_conn;
    t->ctx = ctx;
    t->now = -INFINITY;
    t->prefetched_id = -1;
    return table_resize(t, 1024);
}

static inline void prefetch_conn(const Conn *c) {
    for (size_t line = 0; line < sizeof(Conn); line += 64) __builtin_prefetch((const char *)c + line);
}

void tracker_prefetch(const Tracker *t, const Packet *p, int conn_too) {
    const Entry *home = &t->table[p->hash & (t->table_size - 1)];
    __builtin_prefetch(home);
    if (conn_too && home->conn != NULL) prefetch_conn(home->conn);
}

/* The connection whose wake-up comes next has usually not been touched for a
 * minute (TIME_WAIT): fetch it while packets go on, once per new head of the heap. */
static inline void prefetch_next_wake(Tracker *t) {
    if (t->heap_len == 0 || t->heap[0].id == t->prefetched_id) return;
    t->prefetched_id = t->heap[0].id;
    const Conn *c = t->slots[t->heap[0].slot];
    if (c != NULL) prefetch_conn(c);
}

void packet_key(Packet *p) {
    make_key(p, &p->key);
    p->hash = hash_key(&p->key);
}

int tracker_add(Tracker *t, const Packet *p) {
    if (expire(t, p->ts)) return -1;
    prefetch_next_wake(t);
    size_t i = table_find(t, &p->key, p->hash);
    Conn *c = t->table[i].conn;
    if (c != NULL && conn_starts_anew(c, p)) {
        if (retire(t, c)) return -1;
        c = NULL;
        i = table_find(t, &p->key, p->hash);
    }
    if (c == NULL) {
        if (2 * (t->open_count + 1) > t->table_size) {
            if (table_resize(t, t->table_size * 2)) return -1;
            i = table_find(t, &p->key, p->hash);
        }
        c = t->new_conn(t->ctx);
        if (c == NULL) return -1;
        if (conn_init(c, t->next_id++, p, &t->timeouts) || slot_take(t, c)) {
            conn_free(c);  /* its memory is the sink's (slabs) */
            return -1;
        }
        c->key = p->key;
        c->hash = p->hash;
        t->table[i] = (Entry){p->hash, c};
        t->open_count++;
    }
    if (conn_add(c, p)) return -1;
    double wake = conn_wake_time(c);
    if (wake < c->scheduled) {
        c->scheduled = wake;
        if (heap_push(t, wake, c)) return -1;
        drop_superseded(t);
    }
    return 0;
}

static int by_id(const void *x, const void *y) {
    int64_t a = (*(Conn *const *)x)->id, b = (*(Conn *const *)y)->id;
    return (a > b) - (a < b);
}

/* Hand over every open connection, in order of first packet (id), as the
 * reference's flush does, and empty the table wholesale. Ids are dense, so a
 * connection's place is mostly its id less the smallest (no sort); when the
 * open ids are spread thin, they are sorted instead. */
int tracker_flush(Tracker *t) {
    size_t n = t->open_count;
    int64_t low = INT64_MAX, high = -1;
    for (size_t i = 0; i < t->table_size; i++) {
        const Conn *c = t->table[i].conn;
        if (c == NULL) continue;
        if (c->id < low) low = c->id;
        if (c->id > high) high = c->id;
    }
    if (high < 0) return 0;
    size_t span = (size_t)(high - low + 1);
    int dense = span <= 4 * n + 1024;
    Conn **in_order = calloc(dense ? span : n, sizeof *in_order);
    if (in_order == NULL) return -1;
    size_t k = 0;
    for (size_t i = 0; i < t->table_size; i++) {
        Conn *c = t->table[i].conn;
        if (c == NULL) continue;
        in_order[dense ? (size_t)(c->id - low) : k++] = c;
        t->table[i].conn = NULL;
        t->slots[c->slot] = NULL;
        t->free_slots[t->n_free++] = c->slot;
        c->scheduled = NAN;
    }
    t->open_count = 0;
    if (!dense) qsort(in_order, n, sizeof *in_order, by_id);
    size_t count = dense ? span : n, i = 0;
    int status = 0;
    for (; i < count && status == 0; i++)
        if (in_order[i] != NULL) status = t->finished(t->ctx, in_order[i]);
    for (; i < count; i++)  /* after an error: never handed over, so still ours to release */
        if (in_order[i] != NULL) conn_free(in_order[i]);
    free(in_order);
    return status;
}

void tracker_free(Tracker *t) {
    for (size_t i = 0; i < t->n_slots; i++) {
        if (t->slots[i] != NULL) conn_free(t->slots[i]);  /* the Conn itself is the sink's (slabs) */
    }
    free(t->slots);
    free(t->free_slots);
    free(t->table);
    free(t->heap);
    memset(t, 0, sizeof *t);
}
