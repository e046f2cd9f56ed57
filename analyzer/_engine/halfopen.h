/* A half-open connection kept compact: the record tracker.c keeps for a
 * connection that has seen only a bare SYN (and, under a flood, a few packets
 * after it), instead of an 848-byte Conn. tracker.c's header explains when a
 * record is made, made a Conn (by replaying its packets) and made again; this
 * file is the record itself: its layout, the slabs it lives in, and the
 * packets it hands back exactly as decode.c made them.
 */
#ifndef SYNFIN_HALFOPEN_H
#define SYNFIN_HALFOPEN_H

#include "engine.h"

/* A packet of a half-open connection, as conn_add reads it (its addresses from the key). */
typedef struct {
    int64_t frame;
    double ts;
    uint32_t seq, ack, payload_len;
    uint8_t flags, has_options, from_a;  /* from_a: the sender is the key's (a, pa) */
    Options options;
} Facts;

/* The packets after the SYN, kept under a flood (see keep_or_forget). */
typedef struct {
    double scheduled;  /* the Conn's, when it was made a record again */
    uint32_t count, capacity;
    Facts items[];
} Later;

struct HalfOpen {
    int64_t id;
    Key key;
    uint32_t hash, slot;
    Facts first;   /* the SYN */
    Later *later;  /* NULL: the SYN alone */
};

#define FLOOD_HANDSHAKES 8192  /* connections in handshake from which packets after the SYN are kept too */
#define LATER_MAX 8         /* at most this many: a SYN-ACK and its retransmissions fit */
/* Both kinds lie at even addresses (slabs from malloc, whole records of 8-byte
 * alignment), so bit 0 of a Ref is free for the tag. */
_Static_assert(_Alignof(HalfOpen) >= 2 && _Alignof(Conn) >= 2, "bit 0 of a Ref is free for the tag");
_Static_assert(sizeof(HalfOpen) <= 120, "a half-open connection stays compact (its key: 48 bytes)");

static inline int is_half(Ref r) { return (int)(r & 1); }
static inline Conn *conn_of(Ref r) { return (Conn *)r; }
static inline HalfOpen *half_of(Ref r) { return (HalfOpen *)(r & ~(Ref)1); }
static inline Ref half_ref(HalfOpen *h) { return (Ref)h | 1; }

/* Both kinds begin alike (id, key, hash, slot), so these need not look at the tag. */
#define SAME_PLACE(field) (offsetof(HalfOpen, field) == offsetof(Conn, field))
_Static_assert(SAME_PLACE(id) && SAME_PLACE(key) && SAME_PLACE(hash) && SAME_PLACE(slot), "a common head");
#define HEAD_FIELD(r, type, field) ((const type *)((const char *)((r) & ~(Ref)1) + offsetof(Conn, field)))

static inline int64_t id_of(Ref r) { return *HEAD_FIELD(r, int64_t, id); }
static inline uint32_t slot_of(Ref r) { return *HEAD_FIELD(r, uint32_t, slot); }
static inline const Key *key_of(Ref r) { return HEAD_FIELD(r, Key, key); }

static inline int bare_syn(const Packet *p) { return (p->flags & (F_SYN | F_ACK | F_RST | F_FIN)) == F_SYN; }

/* A record from the pool (NULL: out of memory), and back to it (its later packets freed). */
HalfOpen *half_new(HalfOpenPool *pool);
void half_release(HalfOpenPool *pool, HalfOpen *h);
/* Every slab of the pool, freed (the records' later packets are the caller's to free). */
void half_pool_free(HalfOpenPool *pool);
/* A new record for a connection whose first packet is the bare SYN p. */
void half_fill(HalfOpen *h, int64_t id, const Packet *p);
/* Keep one more packet in the record, and the wake-up its Conn has scheduled; nonzero: out of memory. */
int later_push(HalfOpen *h, const Packet *p, double scheduled);
/* How many packets the record holds (the SYN and those kept after it), and the k-th of them as
 * decode.c made it, every field (k = 0: the SYN). */
uint32_t half_count(const HalfOpen *h);
void half_packet(const HalfOpen *h, uint32_t k, Packet *p);
/* Does a bare SYN's Conn wake at the SYN's time plus the handshake timeout, under these timeouts and
 * the machine configured now? If not, the tracker keeps no records (tracker_init). */
int half_open_allowed(const Timeouts *timeouts);

#endif
