/* handover.c: an open connection packed at the end of a part's run and unpacked by the merge (parallel.py). */
#ifndef SYNFIN_HANDOVER_H
#define SYNFIN_HANDOVER_H

#include "engine.h"
#include "halfopen.h"

enum { HANDOVER_MALFORMED = 1, HANDOVER_OTHER_BUILD = 2, HANDOVER_NO_MEMORY = 3 };

/* c appended to `out` as bytes; -1: out of memory. */
int conn_pack(const Conn *c, Buffer *out);
/* A half-open connection's record (halfopen.h: the SYN, and the packets kept after it), appended compactly;
 * -1: out of memory. */
int half_pack(const HalfOpen *h, Buffer *out);
/* Whether the connection packed at `data` is a half-open record (*half = 1) or a Conn; 0 or HANDOVER_*. */
int packed_kind(const uint8_t *data, size_t len, int *half);
/* The record packed at `data` into h (its slot, hash and pool link the adopting tracker's to set); `used`
 * the bytes it took. 0, or HANDOVER_*: h then holds nothing to free. */
int half_unpack(const uint8_t *data, size_t len, HalfOpen *h, size_t *used);
/* The connection packed at `data` (`len` bytes left) into c, which then owns what its pointers hold;
 * `used` the bytes it took. 0, or HANDOVER_*: c then holds nothing to free (conn_free does nothing). */
int conn_unpack(const uint8_t *data, size_t len, Conn *c, const Timeouts *timeouts, size_t *used);
/* The key of the connection packed at `data`, and the bytes it takes; 0 or HANDOVER_*. */
int conn_packed_key(const uint8_t *data, size_t len, Key *key, size_t *used);

#endif
