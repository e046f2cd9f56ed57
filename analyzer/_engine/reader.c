/* Reading capture files, in C: capture.py's pcap and pcapng readers.
 *
 * Bytes come from a `fill` function (module.c reads the Python file object,
 * which also unwraps gzip) into one buffer that grows only to the largest
 * record, so memory stays flat whatever the length of the file. Every damage
 * message is capture.py's sentence for the same spot.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "reader.h"

#define BLOCK (4u << 20)
#define MAX_RECORD (1u << 24)

static uint32_t u32(const Reader *r, const uint8_t *p) {
    if (r->big_endian) return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
    return (uint32_t)p[3] << 24 | (uint32_t)p[2] << 16 | (uint32_t)p[1] << 8 | p[0];
}

static uint16_t u16(const Reader *r, const uint8_t *p) {
    return r->big_endian ? (uint16_t)(p[0] << 8 | p[1]) : (uint16_t)(p[1] << 8 | p[0]);
}

/* Make `n` bytes available at r->pos if the file has them; return how many are. */
static long ensure(Reader *r, size_t n) {
    while (r->end - r->pos < n && !r->eof) {
        if (r->pos > 0) {
            memmove(r->buf, r->buf + r->pos, r->end - r->pos);
            r->end -= r->pos;
            r->pos = 0;
        }
        if (r->cap < n || r->cap - r->end < BLOCK / 2) {
            size_t cap = r->cap ? r->cap : BLOCK;
            while (cap < n || cap - r->end < BLOCK / 2) cap *= 2;
            uint8_t *buf = realloc(r->buf, cap);
            if (buf == NULL) return -1;
            r->buf = buf;
            r->cap = cap;
        }
        size_t want = r->cap - r->end;
        if (r->read_size) {  /* the reference's block reads, so a damaged gzip fails at the same frame */
            size_t shortfall = n - (r->end - r->pos);
            want = shortfall > r->read_size ? shortfall : r->read_size;
            if (want > r->cap - r->end) want = r->cap - r->end;
        }
        long got = r->fill(r->fill_ctx, r->buf + r->end, want);
        if (got < 0 || (unsigned long)got > want) return -1;  /* `fill` failed, or claims more than it was given */
        if (got == 0) r->eof = 1;
        r->end += (size_t)got;
    }
    return (long)(r->end - r->pos < n ? r->end - r->pos : n);
}

static int fail(Reader *r, const char *fmt, long a, long b) {
    snprintf(r->message, sizeof r->message, fmt, a, b);
    return READ_ERROR;
}

static int damage(Reader *r, int64_t frame, int stop, const char *fmt, long a, long b) {
    snprintf(r->message, sizeof r->message, fmt, a, b);
    r->damage_frame = frame;
    if (stop) r->done = 1;
    return READ_DAMAGE;
}

/* ---- pcap ---------------------------------------------------------------------- */

static int pcap_header(Reader *r) {
    long got = ensure(r, 24);
    if (got < 0) return READ_FAILED;
    if (got < 24) return fail(r, "pcap file header is cut short (%ld of 24 bytes)", got, 0);
    const uint8_t *h = r->buf + r->pos;
    r->big_endian = h[0] == 0xa1;
    r->unit = (h[2] == 0x3c || h[1] == 0x3c) ? 1e-9 : 1e-6;
    r->pcap_linktype = u32(r, h + 20) & 0x0FFFFFFF;
    r->pos += 24;
    return READ_FRAME;
}

static int pcap_next(Reader *r, Frame *f) {
    long got = ensure(r, 16);
    if (got < 0) return READ_FAILED;
    if (got == 0) return READ_END;
    int64_t number = ++r->number;
    if (got < 16) return damage(r, number, 1, "record header cut short (%ld of 16 bytes)", got, 0);
    const uint8_t *h = r->buf + r->pos;
    uint32_t sec = u32(r, h), frac = u32(r, h + 4), caplen = u32(r, h + 8), wire_len = u32(r, h + 12);
    if (caplen > MAX_RECORD)
        return damage(r, number, 1, "garbled record header (length %ld); rest of file skipped", (long)caplen, 0);
    got = ensure(r, 16 + (size_t)caplen);
    if (got < 0) return READ_FAILED;
    if (got < 16 + (long)caplen)
        return damage(r, number, 1, "record cut short (%ld of %ld bytes)", got - 16, (long)caplen);
    f->number = number;
    f->ts = (double)sec + (double)frac * r->unit;
    f->linktype = r->pcap_linktype;
    f->data = r->buf + r->pos + 16;
    f->caplen = caplen;
    f->wire_len = wire_len;
    r->pos += 16 + (size_t)caplen;
    return READ_FRAME;
}

/* ---- pcapng -------------------------------------------------------------------- */

static int parse_idb(Reader *r, const uint8_t *body, long len) {
    if (len < 2) return damage(r, r->number + 1, 0, "interface description block too short", 0, 0);
    if (r->n_interfaces == r->cap_interfaces) {
        Interface *more = grown(r->interfaces, &r->cap_interfaces, sizeof *more, 4);
        if (more == NULL) return READ_FAILED;
        r->interfaces = more;
    }
    Interface *iface = &r->interfaces[r->n_interfaces++];
    iface->linktype = u16(r, body);
    iface->unit = 1e-6;
    iface->offset = 0;
    long pos = 8;
    while (pos + 4 <= len) {
        unsigned code = u16(r, body + pos), length = u16(r, body + pos + 2);
        long avail = len - (pos + 4);
        long value_len = (long)length < avail ? (long)length : (avail > 0 ? avail : 0);
        const uint8_t *value = body + pos + 4;
        if (code == 0) break;
        if (code == 9 && value_len > 0) {
            unsigned res = value[0];
            iface->unit = (res & 0x80) ? pow(2.0, -(double)(res & 0x7F)) : pow(10.0, -(double)res);
        } else if (code == 14 && value_len == 8) {
            uint64_t hi = u32(r, value), lo = u32(r, value + 4);
            iface->offset = (int64_t)(r->big_endian ? (hi << 32 | lo) : (lo << 32 | hi));
        }
        pos += 4 + ((long)length + 3) / 4 * 4;
    }
    return READ_FRAME;
}

static int pcapng_packet(Reader *r, uint32_t type, const uint8_t *body, long len, Frame *f) {
    int64_t number = ++r->number;
    uint32_t iface_id, wire_len, caplen;
    uint64_t ts_raw;
    const uint8_t *data;
    if (type == 3) {
        if (len < 4) return damage(r, number, 0, "simple packet block too short", 0, 0);
        wire_len = u32(r, body);
        iface_id = 0;
        ts_raw = 0;
        data = body + 4;
        caplen = (long)wire_len < len - 4 ? wire_len : (uint32_t)(len - 4);
    } else {
        if (len < 20)
            return damage(r, number, 0, type == 6 ? "enhanced packet block too short" : "packet block too short",
                          0, 0);
        iface_id = type == 6 ? u32(r, body) : u16(r, body);
        ts_raw = (uint64_t)u32(r, body + 4) << 32 | u32(r, body + 8);
        caplen = u32(r, body + 12);
        wire_len = u32(r, body + 16);
        data = body + 20;
        if ((long)caplen > len - 20)
            return damage(r, number, 0, "packet data cut short (%ld of %ld bytes)", len - 20, (long)caplen);
    }
    if (iface_id >= r->n_interfaces)
        return damage(r, number, 0, "packet names interface %ld, which was never described", (long)iface_id, 0);
    const Interface *iface = &r->interfaces[iface_id];
    f->number = number;
    f->ts = (double)ts_raw * iface->unit + (double)iface->offset;
    f->linktype = iface->linktype;
    f->data = data;
    f->caplen = caplen;
    f->wire_len = wire_len;
    return READ_FRAME;
}

static int pcapng_next(Reader *r, Frame *f) {
    for (;;) {
        long got = ensure(r, 8);
        if (got < 0) return READ_FAILED;
        if (got == 0) return READ_END;
        if (got < 8) return damage(r, r->number + 1, 1, "block header cut short (%ld of 8 bytes)", got, 0);
        const uint8_t *head = r->buf + r->pos;
        int shb = memcmp(head, "\x0a\x0d\x0d\x0a", 4) == 0;
        int64_t body_len;
        size_t head_len = 8;
        if (shb) {
            got = ensure(r, 12);
            if (got < 0) return READ_FAILED;
            head = r->buf + r->pos;
            if (got == 12 && memcmp(head + 8, "\x4d\x3c\x2b\x1a", 4) == 0) r->big_endian = 0;
            else if (got == 12 && memcmp(head + 8, "\x1a\x2b\x3c\x4d", 4) == 0) r->big_endian = 1;
            else return fail(r, "pcapng section header has a bad byte-order magic", 0, 0);
            r->n_interfaces = 0;
            body_len = (int64_t)u32(r, head + 4) - 12;
            head_len = 12;
            r->started = 1;
        } else {
            if (!r->started) return fail(r, "pcapng file does not start with a section header", 0, 0);
            body_len = (int64_t)u32(r, head + 4) - 8;
        }
        if (body_len < 4 || body_len > MAX_RECORD)
            return damage(r, r->number + 1, 1, "garbled pcapng block (length %ld); rest skipped",
                          (long)(body_len + 8), 0);
        got = ensure(r, head_len + (size_t)body_len);
        if (got < 0) return READ_FAILED;
        if (got < (long)head_len + body_len)
            return damage(r, r->number + 1, 1, shb ? "section header cut short (%ld of %ld bytes)"
                                                   : "packet block cut short (%ld of %ld bytes)",
                          got - (long)head_len, (long)body_len);
        head = r->buf + r->pos;
        uint32_t type = u32(r, head);
        const uint8_t *body = head + head_len;
        r->pos += head_len + (size_t)body_len;
        if (shb) continue;
        if (type == 2 || type == 3 || type == 6) return pcapng_packet(r, type, body, (long)body_len - 4, f);
        if (type == 1) {
            int status = parse_idb(r, body, (long)body_len - 4);
            if (status != READ_FRAME) return status;
        }
    }
}

/* ---- the public face ---------------------------------------------------------------- */

/* Tell the format from the first 4 bytes and read a pcap file header. */
static int open_format(Reader *r) {
    long got = ensure(r, 4);
    if (got < 0) return READ_FAILED;
    const uint8_t *m = r->buf + r->pos;
    static const uint8_t magics[4][4] = {{0xd4, 0xc3, 0xb2, 0xa1}, {0xa1, 0xb2, 0xc3, 0xd4},
                                         {0x4d, 0x3c, 0xb2, 0xa1}, {0xa1, 0xb2, 0x3c, 0x4d}};
    if (got == 4 && memcmp(m, "\x0a\x0d\x0d\x0a", 4) == 0) {
        r->pcapng = 1;
        return READ_FRAME;
    }
    for (int i = 0; i < 4; i++)
        if (got == 4 && memcmp(m, magics[i], 4) == 0) return pcap_header(r);
    return fail(r, "not a pcap or pcapng capture", 0, 0);
}

int reader_open(Reader *r, FillFn fill, void *ctx) {
    int fd = r->fd;
    size_t read_size = r->read_size;
    memset(r, 0, sizeof *r);
    r->fd = fd;
    r->read_size = read_size;
    r->fill = fill;
    r->fill_ctx = ctx;
    return open_format(r);
}

/* Read the files on `next_fds` after this one, as mergecap -a would join them (capture.read_set). */
int reader_chain(Reader *r, const int *next_fds, size_t n_next) {
    if (n_next > SIZE_MAX / sizeof *r->last_ts - 1) return -1;
    r->last_ts = malloc((n_next + 1) * sizeof *r->last_ts);
    if (r->last_ts == NULL) return -1;
    for (size_t i = 0; i <= n_next; i++) r->last_ts[i] = NAN;
    r->next_fds = next_fds;
    r->n_next = n_next;
    return 0;
}

/* The next file of the set: its format read afresh, frame numbers going on. */
static int next_file(Reader *r) {
    r->fd = r->next_fds[r->file++];
    r->pos = r->end = 0;
    r->eof = r->done = r->pcapng = r->started = r->big_endian = 0;
    r->n_interfaces = 0;
    return open_format(r);
}

int reader_next(Reader *r, Frame *f) {
    for (;;) {
        int status = r->done ? READ_END : r->pcapng ? pcapng_next(r, f) : pcap_next(r, f);
        if (status == READ_FRAME && r->last_ts != NULL) r->last_ts[r->file] = f->ts;
        if (status != READ_END || r->file >= r->n_next) return status;
        status = next_file(r);
        if (status != READ_FRAME) return status;
    }
}

void reader_close(Reader *r) {
    free(r->buf);
    free(r->interfaces);
    free(r->last_ts);
    memset(r, 0, sizeof *r);
}
