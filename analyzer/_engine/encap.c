/* The layers between a frame's start and its inner IP header, in C: layers.py and tunnels.py,
 * branch by branch, with the same sentences and the same tunnel texts.
 *
 * Every read is checked against the captured length first (lengths are longs computed from
 * at most 16-bit fields and offsets within a frame, so no sum overflows). The walk is bounded:
 * path_add refuses a layer past MAX_LAYERS, and decode.c takes a bounded number of steps.
 */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "decode.h"

const char *const TUNNEL_KINDS[N_TUNNEL_KINDS] = {
    "vn-tag", "pbb", "pppoe", "mpls", "gre", "erspan", "gre-udp", "vxlan", "geneve", "gtp-u", "teredo", "ayiya",
    "4in4", "6in4", "4in6", "6in6"};

int path_add(Path *path, int kind, Skip *s, const char *fmt, ...) {
    if (path->layers == MAX_LAYERS) return skip(s, 1, "encapsulations nested deeper than %d", MAX_LAYERS);
    if (path->layers && path->len + 3 < TUNNEL_TEXT_MAX) {
        memcpy(path->text + path->len, " / ", 3);
        path->len += 3;
    }
    size_t room = TUNNEL_TEXT_MAX - path->len;  /* at least LAYER_TEXT_MAX: MAX_LAYERS layers fit */
    va_list args;
    va_start(args, fmt);
    int n = vsnprintf(path->text + path->len, room, fmt, args);
    va_end(args);
    if (n > 0) path->len += (size_t)n < room ? (size_t)n : room - 1;
    path->layers++;
    path->kinds |= 1u << kind;
    return 0;
}

/* ---- Ethernet and what an EtherType names ------------------------------------------------ */

/* What an EtherType other than IPv4, IPv6 and the VLAN tags names (decode.c's ethertype follows those). */
int ether_layer(const Frame *f, unsigned kind, long end, Path *path, long *pos, Skip *s) {
    const uint8_t *data = f->data;
    long len = f->caplen;
    if (kind == 0x8847 || kind == 0x8848) {
        *pos = end;
        return STEP_MPLS;
    }
    if (kind == 0x88E7) {  /* PBB: the I-TAG (I-SID in its low 24 bits), the customer's addresses */
        if (len < end + 18) return cut(f, "PBB I-TAG", s);
        if (path_add(path, K_PBB, s, "pbb isid %u", be32(data + end) & 0xFFFFFF)) return STEP_SKIP;
        *pos = end + 16;
        return STEP_ETHER;
    }
    if (kind == 0x8926) {
        if (len < end + 6) return cut(f, "VN-Tag", s);
        if (path_add(path, K_VNTAG, s, "vn-tag")) return STEP_SKIP;
        *pos = end + 4;
        return STEP_ETHER;
    }
    if (kind == 0x8864) {
        if (len < end + 6) return cut(f, "PPPoE header", s);
        if (data[end] != 0x11) return skip(s, 1, "PPPoE version and type 0x%02x, not 0x11", data[end]);
        if (path_add(path, K_PPPOE, s, "pppoe session %u", be16(data + end + 2))) return STEP_SKIP;
        *pos = end + 6;
        return STEP_PPP;
    }
    return skip(s, 0, "not IP (ARP, LLC, ...)");
}

int mpls(const Frame *f, long at, Path *path, long *pos, Skip *s) {
    const uint8_t *data = f->data;
    long len = f->caplen;
    char labels[MAX_LABELS * 8 + 1];  /* up to MAX_LABELS labels of 7 digits and a "/" */
    size_t used = 0;
    for (int n = 0;; n++) {
        if (len < at + 4) return cut(f, "MPLS label stack", s);
        uint32_t word = be32(data + at);
        int w = snprintf(labels + used, sizeof labels - used, "%s%u", n ? "/" : "", word >> 12);
        if (w > 0) used += (size_t)w < sizeof labels - used ? (size_t)w : sizeof labels - used - 1;
        at += 4;
        if (word & 0x100) break;
        if (n + 1 == MAX_LABELS) return skip(s, 1, "MPLS label stack deeper than %d", MAX_LABELS);
    }
    if (path_add(path, K_MPLS, s, "mpls %s", labels)) return STEP_SKIP;
    if (len <= at) return cut(f, "MPLS payload", s);
    int nibble = data[at] >> 4;
    *pos = at;
    if (nibble == 4) return STEP_IP4;
    if (nibble == 6) return STEP_IP6;
    if (nibble == 0) {  /* a pseudowire control word, then an Ethernet frame */
        *pos = at + 16;
        return STEP_ETHER;
    }
    return skip(s, 0, "not IP (MPLS payload)");
}

int ppp(const Frame *f, long at, long *pos, Skip *s) {
    const uint8_t *data = f->data;
    long len = f->caplen;
    unsigned protocol;
    if (len >= at + 2 && data[at] == 0xFF && data[at + 1] == 0x03) at += 2;
    if (len < at + 1) return cut(f, "PPP header", s);
    if (data[at] & 1) {
        protocol = data[at];
        at += 1;
    } else {
        if (len < at + 2) return cut(f, "PPP header", s);
        protocol = be16(data + at);
        at += 2;
    }
    *pos = at;
    if (protocol == 0x21) return STEP_IP4;
    if (protocol == 0x57) return STEP_IP6;
    if (protocol == 0x281) return STEP_MPLS;
    return skip(s, 0, "not IP (PPP control, ...)");
}

int llc(const Frame *f, long at, long *pos, Skip *s) {
    const uint8_t *data = f->data;
    if ((long)f->caplen < at + 8) return cut(f, "LLC/SNAP header", s);
    if (data[at] != 0xAA || data[at + 1] != 0xAA || data[at + 2] != 0x03) return skip(s, 0, "not IP (LLC without SNAP)");
    *pos = at + 6;
    return STEP_ETHER;
}

int wifi(const Frame *f, long at, long *pos, Skip *s) {
    const uint8_t *data = f->data;
    if ((long)f->caplen < at + 24) return cut(f, "802.11 header", s);
    unsigned control = data[at], flags = data[at + 1], subtype = control >> 4;
    if (((control >> 2) & 3) != 2) return skip(s, 0, "not IP (802.11 management or control)");
    if (subtype & 4) return skip(s, 0, "not IP (802.11 null data)");
    if (flags & 0x40) return skip(s, 0, "not IP (802.11 encrypted)");
    long size = 24 + ((flags & 3) == 3 ? 6 : 0);
    if (subtype & 8) size += 2 + (flags & 0x80 ? 4 : 0);
    *pos = at + size;
    return STEP_LLC;
}

/* ---- link types --------------------------------------------------------------------------- */

static int radiotap(const Frame *f, long *pos, Skip *s) {
    const uint8_t *data = f->data;
    if (f->caplen < 4) return cut(f, "radiotap header", s);
    long length = data[2] | data[3] << 8;
    if (data[0] != 0) return skip(s, 1, "radiotap version %d", data[0]);
    if (length < 8) return skip(s, 1, "radiotap header length %ld is under 8", length);
    if ((long)f->caplen < length) return cut(f, "radiotap header", s);
    *pos = length;
    return STEP_WIFI;
}

static int nflog(const Frame *f, long *pos, Skip *s) {
    const uint8_t *data = f->data;
    long len = f->caplen, at = 4;
    if (len < 4) return cut(f, "NFLOG header", s);
    int family = data[0];
    while (len >= at + 4) {
        long length = data[at] | data[at + 1] << 8;
        unsigned kind = data[at + 2] | data[at + 3] << 8;
        if (kind > 0xFF) {  /* big-endian: the types are all under 256 */
            length = data[at] << 8 | data[at + 1];
            kind = data[at + 2] << 8 | data[at + 3];
        }
        if (length < 4) return skip(s, 1, "NFLOG TLV length %ld is under 4", length);
        if (kind == 9) {  /* NFULA_PAYLOAD */
            *pos = at + 4;
            if (family == 2) return STEP_IP4;
            if (family == 10) return STEP_IP6;
            return skip(s, 0, "not IP (NFLOG family %d)", family);
        }
        at += (length + 3) & ~3L;
    }
    return skip(s, 0, "NFLOG record without a payload");
}

int link_step(const Frame *f, long *pos, Skip *s) {
    const uint8_t *data = f->data;
    switch (f->linktype) {
    case 9:
        *pos = 0;
        return STEP_PPP;
    case 10:
        if (f->caplen < 13) return cut(f, "FDDI header", s);
        if ((data[0] & 0x70) != 0x50) return skip(s, 0, "not IP (FDDI MAC or SMT frame)");
        *pos = 13;
        return STEP_LLC;
    case 50:  /* PPP in HDLC-like framing, or Cisco HDLC (0x0F / 0x8F, then an EtherType) */
        if (f->caplen >= 1 && (data[0] == 0x0F || data[0] == 0x8F)) {
            *pos = 2;
            return STEP_ETHER;
        }
        *pos = 0;
        return STEP_PPP;
    case 104:
        *pos = 2;
        return STEP_ETHER;
    case 105:
        *pos = 0;
        return STEP_WIFI;
    case 127:
        return radiotap(f, pos, s);
    case 239:
        return nflog(f, pos, s);
    default:
        return STEP_SEGMENT;
    }
}
