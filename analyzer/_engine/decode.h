/* decode.c and encap.c: the walk from a frame to its TCP header, step by step (decode.py, layers.py,
 * tunnels.py). Each step function reads one header and returns what comes next (a STEP_ kind, its
 * offset in *pos), STEP_SKIP (the Skip filled) or, for TCP, STEP_SEGMENT (the packet filled). */
#ifndef SYNFIN_DECODE_H
#define SYNFIN_DECODE_H

#include "engine.h"

enum { STEP_SEGMENT = -2, STEP_SKIP = -1, STEP_ETHER, STEP_IP4, STEP_IP6, STEP_MPLS, STEP_PPP, STEP_LLC, STEP_WIFI };
enum { K_VNTAG, K_PBB, K_PPPOE, K_MPLS, K_GRE, K_ERSPAN, K_GRE_UDP, K_VXLAN, K_GENEVE, K_GTPU, K_TEREDO, K_AYIYA,
       K_4IN4, K_6IN4, K_4IN6, K_6IN6 };  /* layers.TUNNEL_KINDS, in order */
#define MAX_LABELS 8   /* layers.MAX_LABELS */

typedef struct {       /* layers.Path */
    char *text;        /* TUNNEL_TEXT_MAX bytes: the layers' texts joined by " / " */
    size_t len;
    int layers, n_vlans;
    uint32_t kinds, vlan, vni;
} Path;

static inline unsigned be16(const uint8_t *p) { return (unsigned)p[0] << 8 | p[1]; }
static inline uint32_t be32(const uint8_t *p) {
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

int skip(Skip *s, int malformed, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
int cut(const Frame *f, const char *what, Skip *s);
int path_add(Path *path, int kind, Skip *s, const char *fmt, ...) __attribute__((format(printf, 4, 5)));

int ether_layer(const Frame *f, unsigned kind, long end, Path *path, long *pos, Skip *s);
int mpls(const Frame *f, long at, Path *path, long *pos, Skip *s);
int ppp(const Frame *f, long at, long *pos, Skip *s);
int llc(const Frame *f, long at, long *pos, Skip *s);
int wifi(const Frame *f, long at, long *pos, Skip *s);
/* The link types of layers.py (radiotap, FDDI, PPP, NFLOG ...); -2 (STEP_SEGMENT): not one of them. */
int link_step(const Frame *f, long *pos, Skip *s);
/* tunnels.py: ip_tunnel (-2: not a tunnel) and udp_tunnel_port (-1: none) */
int ip_tunnel(const Frame *f, int version, int protocol, const uint8_t *src, const uint8_t *dst, long at,
              Path *path, long *pos, Skip *s);
long udp_tunnel_port(const Frame *f, long at);

#endif
