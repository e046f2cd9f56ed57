/* Tunnels carried by IP, in C: tunnels.py, branch by branch (IP in IP, GRE with ERSPAN and PPTP,
 * and the UDP tunnels by port), with the same sentences and the same texts. Lengths as in encap.c.
 */
#include <stdio.h>
#include <string.h>

#include "decode.h"

typedef struct { char text[104]; } Over;  /* "over A>B": two IPv6 addresses of at most 45 characters */

static void over_text(Over *o, int version, const uint8_t *src, const uint8_t *dst) {
    if (version == 4) {
        snprintf(o->text, sizeof o->text, "over %u.%u.%u.%u>%u.%u.%u.%u", src[0], src[1], src[2], src[3], dst[0],
                 dst[1], dst[2], dst[3]);
        return;
    }
    char a[48], b[48];
    ipv6_chars(a, src);
    ipv6_chars(b, dst);
    snprintf(o->text, sizeof o->text, "over %s>%s", a, b);
}

long udp_tunnel_port(const Frame *f, long at) {
    if ((long)f->caplen < at + 8) return -1;
    long sport = be16(f->data + at), dport = be16(f->data + at + 2);
    for (int i = 0; i < 2; i++) {
        long port = i ? sport : dport;
        if (port == 4789 || port == 8472 || port == 6081 || port == 2152 || port == 3544 || port == 5072 ||
            port == 4754)
            return port;
    }
    return -1;
}

static int erspan(const Frame *f, long at, Path *path, unsigned protocol, int sequenced, const Over *over, long *pos,
                  Skip *s) {
    const uint8_t *data = f->data;
    if (protocol == 0x88BE && !sequenced) {
        if (path_add(path, K_ERSPAN, s, "erspan i %s", over->text)) return STEP_SKIP;
        *pos = at + 12;
        return STEP_ETHER;
    }
    int iii = protocol != 0x88BE;
    long size = iii ? 12 : 8;
    const char *name = iii ? "iii" : "ii";
    if ((long)f->caplen < at + size) return cut(f, "ERSPAN header", s);
    int version = data[at] >> 4;
    if (version != (iii ? 2 : 1)) return skip(s, 1, "ERSPAN type %s header with version %d", name, version);
    if (iii && (data[at + 11] & 1)) size += 8;
    if (path_add(path, K_ERSPAN, s, "erspan %s session %u %s", name, be16(data + at + 2) & 0x3FF, over->text))
        return STEP_SKIP;
    *pos = at + size + 12;
    return STEP_ETHER;
}

static int gre(const Frame *f, long at, Path *path, int kind, long port, const Over *over, long *pos, Skip *s) {
    const uint8_t *data = f->data;
    long len = f->caplen;
    if (len < at + 4) return cut(f, "GRE header", s);
    unsigned flags = be16(data + at), protocol = be16(data + at + 2), version = flags & 7;
    if (version > 1) return skip(s, 1, "GRE version %u", version);
    if (flags & 0x4000) return skip(s, 0, "tunnel not decoded (GRE with source routing)");
    long p = at + 4 + (flags & 0x8000 ? 4 : 0);
    int has_key = (flags & 0x2000) && len >= p + 4;
    uint32_t key = has_key ? be32(data + p) : 0;
    p += (flags & 0x2000 ? 4 : 0) + (flags & 0x1000 ? 4 : 0) + (version && (flags & 0x80) ? 4 : 0);
    if (len < p) return cut(f, "GRE header", s);
    if (protocol == 0x88BE || protocol == 0x22EB) return erspan(f, p, path, protocol, (flags & 0x1000) != 0, over, pos, s);
    char name[24];
    if (kind == K_GRE) snprintf(name, sizeof name, "gre");
    else snprintf(name, sizeof name, "gre-udp %ld", port);
    *pos = p;
    if (version == 1) {
        if (path_add(path, kind, s, "%s pptp call %u %s", name, has_key ? key & 0xFFFF : 0, over->text))
            return STEP_SKIP;
        return STEP_PPP;
    }
    int failed = has_key ? path_add(path, kind, s, "%s key %u %s", name, key, over->text)
                         : path_add(path, kind, s, "%s %s", name, over->text);
    if (failed) return STEP_SKIP;
    if (protocol == 0x0800) return STEP_IP4;
    if (protocol == 0x86DD) return STEP_IP6;
    if (protocol == 0x6558) {  /* transparent Ethernet bridging (gretap) */
        *pos = p + 12;
        return STEP_ETHER;
    }
    if (protocol == 0x8847 || protocol == 0x8848) return STEP_MPLS;
    return skip(s, 0, "not IP (GRE protocol 0x%04x)", protocol);
}

static int vxlan(const Frame *f, long at, Path *path, long port, const Over *over, long *pos, Skip *s) {
    if ((long)f->caplen < at + 8) return cut(f, "VXLAN header", s);
    uint32_t vni = be32(f->data + at + 4) >> 8;
    path->vni = vni + 1;
    if (path_add(path, K_VXLAN, s, "vxlan %ld vni %u %s", port, vni, over->text)) return STEP_SKIP;
    *pos = at + 20;
    return STEP_ETHER;
}

static int geneve(const Frame *f, long at, Path *path, long port, const Over *over, long *pos, Skip *s) {
    const uint8_t *data = f->data;
    if ((long)f->caplen < at + 8) return cut(f, "Geneve header", s);
    if (data[at] >> 6) return skip(s, 1, "Geneve version %d", data[at] >> 6);
    long inner = at + 8 + (data[at] & 0x3F) * 4;
    unsigned protocol = be16(data + at + 2);
    uint32_t vni = be32(data + at + 4) >> 8;
    path->vni = vni + 1;
    if (path_add(path, K_GENEVE, s, "geneve %ld vni %u %s", port, vni, over->text)) return STEP_SKIP;
    *pos = inner;
    if (protocol == 0x6558) {
        *pos = inner + 12;
        return STEP_ETHER;
    }
    if (protocol == 0x0800) return STEP_IP4;
    if (protocol == 0x86DD) return STEP_IP6;
    return skip(s, 0, "not IP (Geneve protocol 0x%04x)", protocol);
}

static int ip_payload(const Frame *f, long at, const char *what, long *pos, Skip *s) {
    char where[40];
    if ((long)f->caplen <= at) {
        snprintf(where, sizeof where, "%s payload", what);
        return cut(f, where, s);
    }
    int nibble = f->data[at] >> 4;
    *pos = at;
    if (nibble == 4) return STEP_IP4;
    if (nibble == 6) return STEP_IP6;
    return skip(s, 0, "not IP (%s payload)", what);
}

static int gtpu(const Frame *f, long at, Path *path, long port, const Over *over, long *pos, Skip *s) {
    const uint8_t *data = f->data;
    long len = f->caplen;
    if (len < at + 8) return cut(f, "GTP-U header", s);
    unsigned flags = data[at];
    if (flags >> 5 != 1) return skip(s, 1, "GTP-U version %u", flags >> 5);
    if (data[at + 1] != 0xFF) return skip(s, 0, "not TCP (GTP-U signalling)");
    uint32_t teid = be32(data + at + 4);
    long p = at + 8;
    if (flags & 0x07) {
        if (len < at + 12) return cut(f, "GTP-U header", s);
        unsigned following = flags & 0x04 ? data[at + 11] : 0;
        p = at + 12;
        while (following) {  /* each extension is at least 4 bytes: bounded by the frame */
            if (len < p + 1) return cut(f, "GTP-U extension header", s);
            long size = data[p] * 4;
            if (size == 0) return skip(s, 1, "GTP-U extension header length 0");
            if (len < p + size) return cut(f, "GTP-U extension header", s);
            following = data[p + size - 1];
            p += size;
        }
    }
    if (path_add(path, K_GTPU, s, "gtp-u %ld teid %u %s", port, teid, over->text)) return STEP_SKIP;
    return ip_payload(f, p, "GTP-U", pos, s);
}

static int teredo(const Frame *f, long at, Path *path, long port, const Over *over, long *pos, Skip *s) {
    const uint8_t *data = f->data;
    long len = f->caplen;
    if (len >= at + 4 && data[at] == 0 && data[at + 1] == 1) at += 13 + data[at + 2] + data[at + 3];
    if (len >= at + 2 && data[at] == 0 && data[at + 1] == 0) at += 8;
    if (len <= at) return cut(f, "Teredo header", s);
    if (data[at] >> 4 != 6) return skip(s, 0, "not IP (Teredo payload)");
    if (path_add(path, K_TEREDO, s, "teredo %ld %s", port, over->text)) return STEP_SKIP;
    *pos = at;
    return STEP_IP6;
}

static int ayiya(const Frame *f, long at, Path *path, long port, const Over *over, long *pos, Skip *s) {
    const uint8_t *data = f->data;
    long len = f->caplen;
    if (len < at + 8) return cut(f, "AYIYA header", s);
    long size = 8 + (1L << (data[at] >> 4)) + (data[at + 1] >> 4) * 4;
    if (len < at + size) return cut(f, "AYIYA header", s);
    if ((data[at + 2] & 0x0F) != 1) return skip(s, 0, "not TCP (AYIYA signalling)");
    int following = data[at + 3];
    if (following != 4 && following != 41) return skip(s, 0, "not IP (AYIYA next header %d)", following);
    if (path_add(path, K_AYIYA, s, "ayiya %ld %s", port, over->text)) return STEP_SKIP;
    *pos = at + size;
    return following == 4 ? STEP_IP4 : STEP_IP6;
}

int ip_tunnel(const Frame *f, int version, int protocol, const uint8_t *src, const uint8_t *dst, long at,
              Path *path, long *pos, Skip *s) {
    Over over;
    over_text(&over, version, src, dst);
    if (protocol == 4 || protocol == 41) {
        int inner = protocol == 4 ? 4 : 6;
        int kind = inner == 4 ? (version == 4 ? K_4IN4 : K_4IN6) : (version == 4 ? K_6IN4 : K_6IN6);
        if (path_add(path, kind, s, "%din%d %s", inner, version, over.text)) return STEP_SKIP;
        *pos = at;
        return inner == 4 ? STEP_IP4 : STEP_IP6;
    }
    if (protocol == 47) return gre(f, at, path, K_GRE, 0, &over, pos, s);
    long port = udp_tunnel_port(f, at);
    if (port < 0) return STEP_SEGMENT;
    at += 8;
    switch (port) {
    case 4754: return gre(f, at, path, K_GRE_UDP, port, &over, pos, s);
    case 4789: case 8472: return vxlan(f, at, path, port, &over, pos, s);
    case 6081: return geneve(f, at, path, port, &over, pos, s);
    case 2152: return gtpu(f, at, path, port, &over, pos, s);
    case 3544: return teredo(f, at, path, port, &over, pos, s);
    default: return ayiya(f, at, path, port, &over, pos, s);
    }
}
