/* The compact record of a half-open connection (halfopen.h; tracker.c says how it is used). */
#include <stdlib.h>
#include <string.h>

#include "halfopen.h"

#define HALF_OPEN_SLAB (1u << 20)

HalfOpen *half_new(HalfOpenPool *pool) {
    HalfOpen *h = pool->free;
    if (h != NULL) {
        pool->free = *(HalfOpen **)h;
        return h;
    }
    if (pool->left < sizeof *h) {
        if (pool->n_slabs == pool->cap_slabs) {
            void **slabs = grown(pool->slabs, &pool->cap_slabs, sizeof *slabs, 64);
            if (slabs == NULL) return NULL;
            pool->slabs = slabs;
        }
        char *slab = malloc(HALF_OPEN_SLAB);
        if (slab == NULL) return NULL;
        pool->slabs[pool->n_slabs++] = slab;
        pool->next = slab;
        pool->left = HALF_OPEN_SLAB;
    }
    h = (HalfOpen *)pool->next;
    pool->next += sizeof *h;
    pool->left -= sizeof *h;
    return h;
}

void half_release(HalfOpenPool *pool, HalfOpen *h) {
    free(h->later);
    h->later = NULL;
    *(HalfOpen **)h = pool->free;
    pool->free = h;
}

static void facts_of(Facts *f, const Packet *p) {
    f->frame = p->frame;
    f->ts = p->ts;
    f->seq = p->seq;
    f->ack = p->ack;
    f->payload_len = (uint32_t)p->payload_len;  /* at most an IP packet's length (decode.c) */
    f->flags = p->flags;
    f->has_options = p->has_options;
    f->from_a = addr_equal(p->src, p->key.a) && p->sport == p->key.pa;
    f->options = p->options;
}

void half_fill(HalfOpen *h, int64_t id, const Packet *p) {
    h->id = id;
    h->key = p->key;
    h->hash = p->hash;
    facts_of(&h->first, p);
    h->later = NULL;
}

static void packet_from(const HalfOpen *h, const Facts *f, Packet *p) {
    p->frame = f->frame;
    p->ts = f->ts;
    p->ip_version = h->key.v;
    p->flags = f->flags;
    p->has_options = f->has_options;
    memcpy(p->src, f->from_a ? h->key.a : h->key.b, 16);
    memcpy(p->dst, f->from_a ? h->key.b : h->key.a, 16);
    p->sport = f->from_a ? h->key.pa : h->key.pb;
    p->dport = f->from_a ? h->key.pb : h->key.pa;
    p->seq = f->seq;
    p->ack = f->ack;
    p->payload_len = f->payload_len;
    p->options = f->options;
    p->key = h->key;
    p->hash = h->hash;
    p->vlan = h->key.vlan;
    p->vni = h->key.vni;
    p->kinds = 0;
    p->tunnel = NULL;  /* a tunnelled SYN is never kept as a record (tracker.c) */
}

/* Keep one more packet in the record, and the wake-up its Conn has scheduled; nonzero: out of memory. */
int later_push(HalfOpen *h, const Packet *p, double scheduled) {
    Later *later = h->later;
    if (later == NULL || later->count == later->capacity) {
        uint32_t count = later ? later->count : 0, capacity = later ? 2 * later->capacity : 1;  /* <= LATER_MAX */
        Later *bigger = realloc(later, sizeof *later + capacity * sizeof later->items[0]);
        if (bigger == NULL) return -1;
        bigger->count = count;
        bigger->capacity = capacity;
        h->later = later = bigger;
    }
    facts_of(&later->items[later->count++], p);
    later->scheduled = scheduled;
    return 0;
}

void half_pool_free(HalfOpenPool *pool) {
    for (size_t i = 0; i < pool->n_slabs; i++) free(pool->slabs[i]);
    free(pool->slabs);
}

uint32_t half_count(const HalfOpen *h) { return 1 + (h->later != NULL ? h->later->count : 0); }

void half_packet(const HalfOpen *h, uint32_t k, Packet *p) {
    packet_from(h, k == 0 ? &h->first : &h->later->items[k - 1], p);
}

int half_open_allowed(const Timeouts *timeouts) {
    Packet syn = {.frame = 1, .ts = 1.0, .ip_version = 4, .flags = F_SYN, .sport = 40000, .dport = 80, .seq = 7};
    syn.src[15] = 1;
    syn.dst[15] = 2;
    Conn *c = malloc(sizeof *c);
    if (c == NULL) return 0;
    int allowed = conn_init(c, 0, &syn, timeouts) == 0 && conn_add(c, &syn) == 0 &&
                  conn_wake_time(c) == syn.ts + timeouts->handshake;
    conn_free(c);
    free(c);
    return allowed;
}

