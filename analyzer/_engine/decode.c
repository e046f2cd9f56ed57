/* From a captured frame to a TCP segment, in C: decode.py, branch by branch.
 *
 * The skip reasons are the same sentences decode.py gives, so both paths
 * count and name bad frames alike. The layers around the IP header (link
 * types, VLAN tags, tunnels) are encap.c's and tunnels.c's; decode_frame
 * walks them a bounded number of steps, as decode.decode does.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "decode.h"

enum { MAX_STEPS = 4 * MAX_LAYERS + 8 };  /* decode._MAX_STEPS */

/* ---- link-type names (filled from decode.LINKTYPE_NAMES) ------------------- */
/* As many as configure() hands over; each short enough that "unsupported link
 * type NAME" fits a Skip's reason whole (else the reason would be cut, and
 * differ from decode.py's). configure() replaces the whole table. */
typedef struct { uint32_t linktype; char name[LINKTYPE_NAME_MAX + 1]; } LinktypeName;
static LinktypeName *names;
static size_t n_names, cap_names;

void clear_linktype_names(void) {
    free(names);
    names = NULL;
    n_names = cap_names = 0;
}

int set_linktype_name(uint32_t linktype, const char *name) {
    if (strlen(name) > LINKTYPE_NAME_MAX) return 1;
    for (size_t i = 0; i < n_names; i++) {
        if (names[i].linktype == linktype) {
            strcpy(names[i].name, name);
            return 0;
        }
    }
    if (n_names == cap_names) {
        LinktypeName *more = grown(names, &cap_names, sizeof *more, 16);  /* NULL past size_t, too */
        if (more == NULL) return -1;
        names = more;
    }
    names[n_names].linktype = linktype;
    strcpy(names[n_names].name, name);
    n_names++;
    return 0;
}

const char *linktype_name(uint32_t linktype, char *buf, size_t size) {
    for (size_t i = 0; i < n_names; i++)
        if (names[i].linktype == linktype) return names[i].name;
    snprintf(buf, size, "linktype %u", linktype);
    return buf;
}

int skip(Skip *s, int malformed, const char *fmt, ...) {
    va_list args;
    va_start(args, fmt);
    vsnprintf(s->reason, sizeof s->reason, fmt, args);
    va_end(args);
    s->malformed = malformed;
    return STEP_SKIP;
}

int cut(const Frame *f, const char *what, Skip *s) {
    if (f->wire_len > f->caplen) return skip(s, 1, "cut by the snaplen before the end of the %s", what);
    return skip(s, 1, "%s cut short", what);
}

/* ---- the link layer --------------------------------------------------------------- */

/* The EtherType at `at` (payload from `end`), past any VLAN tags (layers.ethertype); here, not in
 * encap.c, so that the plain Ethernet path inlines it. */
static inline int ethertype(const Frame *f, long at, long end, Path *path, long *pos, Skip *s) {
    const uint8_t *data = f->data;
    long len = f->caplen;
    if (len < end) return skip(s, 1, "link-layer header cut short");
    unsigned kind = be16(data + at);
    while (kind == 0x8100 || kind == 0x88A8 || kind == 0x9100) {
        at = end + 2;
        end = end + 4;
        if (len < end) return skip(s, 1, "VLAN tag cut short");
        uint32_t vid = be16(data + at - 2) & 0x0FFF;
        if (vid && path->n_vlans < 2) path->vlan |= path->n_vlans++ ? vid : vid << 16;
        kind = be16(data + at);
    }
    *pos = end;
    if (kind == 0x0800) return STEP_IP4;
    if (kind == 0x86DD) return STEP_IP6;
    return ether_layer(f, kind, end, path, pos, s);
}


static int network_layer(const Frame *f, Path *path, long *pos, Skip *s) {
    uint32_t lt = f->linktype;
    const uint8_t *data = f->data;
    if (lt == 1) return ethertype(f, 12, 14, path, pos, s);
    if (lt == 113) return ethertype(f, 14, 16, path, pos, s);
    if (lt == 276) return ethertype(f, 0, 20, path, pos, s);
    *pos = 0;
    if (lt == 12 || lt == 14 || lt == 101) {
        if (f->caplen == 0) return skip(s, 1, "empty raw IP frame");
        int v = data[0] >> 4;
        if (v != 4 && v != 6) return skip(s, 1, "raw frame with IP version %d", v);
        return v == 4 ? STEP_IP4 : STEP_IP6;
    }
    if (lt == 228 || lt == 229) return lt == 228 ? STEP_IP4 : STEP_IP6;
    if (lt == 0 || lt == 108) {
        if (f->caplen < 4) return skip(s, 1, "loopback header cut short");
        uint32_t big = be32(data);
        uint32_t little = (uint32_t)data[3] << 24 | (uint32_t)data[2] << 16 | (uint32_t)data[1] << 8 | data[0];
        uint32_t family = lt == 108 ? big : little;
        if (family > 0xFFFF) family = big;
        *pos = 4;
        if (family == 2) return STEP_IP4;
        if (family == 10 || family == 24 || family == 28 || family == 30) return STEP_IP6;
        return skip(s, 0, "not IP (loopback family)");
    }
    int step = link_step(f, pos, s);
    if (step != STEP_SEGMENT) return step;
    char buf[32];
    return skip(s, 0, "unsupported link type %s", linktype_name(lt, buf, sizeof buf));
}

/* ---- TCP -------------------------------------------------------------------------- */

static void parse_options(const uint8_t *buf, long len, Options *out) {
    /* dpkt.tcp.parse_opts, then decode.parse_options: the first appearance fixes the order */
    out->count = 0;
    long pos = 0;
    while (pos < len) {
        uint8_t kind = buf[pos];
        const uint8_t *value;
        long value_len;
        if (kind > 1) {
            if (pos + 1 >= len) break;  /* dpkt: no length byte, a None option ends the list */
            long size = buf[pos + 1] < 2 ? 2 : buf[pos + 1];
            value = buf + pos + 2;
            value_len = (pos + size <= len ? size : len - pos) - 2;
            if (value_len < 0) value_len = 0;
            pos += size;
        } else {
            value = buf;
            value_len = 0;
            pos += 1;
        }
        int key = -1;
        uint16_t v = 1;
        if (kind == 2 && value_len == 2) key = OPT_MSS, v = (uint16_t)be16(value);
        else if (kind == 3 && value_len == 1) key = OPT_WSCALE, v = value[0];
        else if (kind == 4) key = OPT_SACK;
        else if (kind == 8) key = OPT_TIMESTAMPS;
        else if (kind == 34) key = OPT_FASTOPEN;
        if (key < 0) continue;
        int seen = 0;
        for (int i = 0; i < out->count; i++) seen |= out->order[i] == key;
        if (!seen) out->order[out->count++] = (uint8_t)key;
        out->value[key] = v;
    }
}

static int tcp(const Frame *f, int version, const uint8_t *src, const uint8_t *dst, long at, long length,
               Packet *p, Skip *s) {
    const uint8_t *data = f->data;
    if ((long)f->caplen < at + 20) return cut(f, "TCP header", s);
    long header = (data[at + 12] >> 4) * 4;
    if (header < 20) return skip(s, 1, "TCP data offset %ld is under 5", header / 4);
    if (header > length)
        return skip(s, 1, "TCP data offset %ld runs past the segment's %ld bytes", header / 4, length);
    p->frame = f->number;
    p->ts = f->ts;
    p->ip_version = (uint8_t)version;
    if (version == 4) {  /* four bytes, then zeros */
        uint64_t zero[2] = {0, 0};
        memcpy(p->src, zero, 16);
        memcpy(p->dst, zero, 16);
        memcpy(p->src, src, 4);
        memcpy(p->dst, dst, 4);
    } else {
        memcpy(p->src, src, 16);
        memcpy(p->dst, dst, 16);
    }
    p->sport = (uint16_t)be16(data + at);
    p->dport = (uint16_t)be16(data + at + 2);
    p->seq = be32(data + at + 4);
    p->ack = be32(data + at + 8);
    p->flags = data[at + 13];
    p->payload_len = length - header;
    p->has_options = 0;
    if ((p->flags & F_SYN) && header > 20) {
        long end = at + header < (long)f->caplen ? at + header : (long)f->caplen;
        parse_options(data + at + 20, end - (at + 20), &p->options);
        p->has_options = 1;
    }
    return STEP_SEGMENT;
}

static int ipv4(const Frame *f, long at, Path *path, Packet *p, long *pos, Skip *s) {
    const uint8_t *data = f->data;
    long len = f->caplen;
    if (len < at + 20) return cut(f, "IPv4 header", s);
    int first = data[at];
    if (first >> 4 != 4) return skip(s, 1, "IPv4 header with version %d", first >> 4);
    long ihl = (first & 0x0F) * 4;
    if (ihl < 20) return skip(s, 1, "IPv4 header length %ld is under 20", ihl);
    int protocol = data[at + 9];
    if (protocol != 6 && protocol != 4 && protocol != 41 && protocol != 47 &&
        (protocol != 17 || (be16(data + at + 6) & 0x1FFF) || udp_tunnel_port(f, at + ihl) < 0))
        return skip(s, 0, "not TCP (UDP, ICMP, ...)");
    long total = be16(data + at + 2);
    if (total == 0) total = len - at;
    if (total < ihl) return skip(s, 1, "IPv4 total length %ld is under its header length %ld", total, ihl);
    if (be16(data + at + 6) & 0x1FFF) return skip(s, 0, "IP fragment");
    if (protocol != 6) {
        int step = ip_tunnel(f, 4, protocol, data + at + 12, data + at + 16, at + ihl, path, pos, s);
        return step != STEP_SEGMENT ? step : skip(s, 0, "not TCP (UDP, ICMP, ...)");
    }
    return tcp(f, 4, data + at + 12, data + at + 16, at + ihl, total - ihl, p, s);
}

static int ipv6(const Frame *f, long at, Path *path, Packet *p, long *pos, Skip *s) {
    const uint8_t *data = f->data;
    long len = f->caplen;
    if (len < at + 40) return cut(f, "IPv6 header", s);
    if (data[at] >> 4 != 6) return skip(s, 1, "IPv6 header with version %d", data[at] >> 4);
    long length = be16(data + at + 4);
    if (length == 0) length = len - at - 40;
    int next = data[at + 6];
    long here = at + 40, end = at + 40 + length;
    while (next != 6) {
        if (next == 44) {
            if (len < here + 8) return cut(f, "IPv6 fragment header", s);
            if (be16(data + here + 2) & 0xFFF8) return skip(s, 0, "IP fragment");
            next = data[here];
            here += 8;
        } else if (next == 0 || next == 43 || next == 60 || next == 135 || next == 139 || next == 140 ||
                   next == 51) {
            if (len < here + 2) return cut(f, "IPv6 extension header", s);
            long size = next == 51 ? (data[here + 1] + 2) * 4 : (data[here + 1] + 1) * 8;
            next = data[here];
            here += size;
        } else if (next == 4 || next == 41 || next == 47 || next == 17) {
            int step = ip_tunnel(f, 6, next, data + at + 8, data + at + 24, here, path, pos, s);
            return step != STEP_SEGMENT ? step : skip(s, 0, "not TCP (UDP, ICMPv6, ...)");
        } else {
            return skip(s, 0, "not TCP (UDP, ICMPv6, ...)");
        }
    }
    return tcp(f, 6, data + at + 8, data + at + 24, here, end - here, p, s);
}

int decode_frame(const Frame *f, Packet *p, Skip *s, char *text) {
    Path path = {.text = text};
    long pos = 0;
    int step = network_layer(f, &path, &pos, s);
    for (int i = 0; i < MAX_STEPS && step >= 0; i++) {
        switch (step) {
        case STEP_IP4: step = ipv4(f, pos, &path, p, &pos, s); break;
        case STEP_IP6: step = ipv6(f, pos, &path, p, &pos, s); break;
        case STEP_ETHER: step = ethertype(f, pos, pos + 2, &path, &pos, s); break;
        case STEP_MPLS: step = mpls(f, pos, &path, &pos, s); break;
        case STEP_PPP: step = ppp(f, pos, &pos, s); break;
        case STEP_LLC: step = llc(f, pos, &pos, s); break;
        default: step = wifi(f, pos, &pos, s); break;
        }
    }
    if (step == STEP_SKIP) return 1;
    if (step != STEP_SEGMENT) {
        skip(s, 1, "encapsulations nested too deep");
        return 1;
    }
    p->vlan = path.vlan;
    p->vni = path.vni;
    p->kinds = path.kinds;
    p->tunnel = NULL;
    if (path.layers) {
        text[path.len] = 0;
        p->tunnel = text;
    }
    return 0;
}
