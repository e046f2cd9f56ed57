/* BPF filters in the engine: what capture.py's caller does with analyzer/bpf.py, in C.
 *
 * A frame is kept when the expression, compiled by libpcap for the frame's
 * link type exactly as tcpdump -r compiles it (pcap_open_dead with the link
 * type, optimized, netmask unknown), accepts it: pcap_offline_filter, with the
 * frame's captured and original lengths. A pcapng file may mix link types, so
 * the expression is compiled once for each link type met, and the programs are
 * kept in a small table by link type. An expression libpcap cannot compile for a
 * link type ("vlan" on raw IP) matches none of its frames; the first such link
 * type and libpcap's reason are kept for the summary. analyzer/bpf.py does the
 * same through ctypes, so both engines keep the same frames.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "filter.h"

#ifdef SYNFIN_HAVE_PCAP
#include <pcap.h>

#define LINKTYPE_RAW 101
#define DLT_RAW_LINUX 12

struct FilterSlot {
    uint32_t linktype;
    uint8_t used, ok;
    struct bpf_program program;
};

/* libpcap's pcap_open_dead takes a DLT_ value; a file holds a LINKTYPE_ value. They differ for raw IP
 * (LINKTYPE_RAW 101 is DLT_RAW, 12 on Linux), as libpcap's own linktype_to_dlt maps it when tcpdump reads. */
static int dlt_of(uint32_t linktype) {
    if (linktype == LINKTYPE_RAW) return DLT_RAW_LINUX;
    return linktype > 0x7fffffffu ? -1 : (int)linktype;
}

static void compile_for(Filter *f, FilterSlot *slot) {
    slot->ok = 0;
    int dlt = dlt_of(slot->linktype);
    pcap_t *dead = dlt < 0 ? NULL : pcap_open_dead(dlt, 262144);
    const char *reason = dlt < 0 ? "link type out of range" : "out of memory";
    if (dead != NULL) {
        if (pcap_compile(dead, &slot->program, f->expression, 1, PCAP_NETMASK_UNKNOWN) == 0) slot->ok = 1;
        else reason = pcap_geterr(dead);
    }
    if (!slot->ok && !f->failed) {
        f->failed = 1;
        f->failed_linktype = slot->linktype;
        snprintf(f->failed_reason, sizeof f->failed_reason, "%s", reason);
    }
    if (dead != NULL) pcap_close(dead);
}

static size_t slot_of(uint32_t linktype, size_t cap) {
    return (size_t)(((uint64_t)linktype + 1) * 0x9e3779b97f4a7c15ull >> 20) & (cap - 1);
}

static int grow(Filter *f) {
    if (f->cap > SIZE_MAX / 2 / sizeof *f->slots) return -1;
    size_t cap = f->cap ? f->cap * 2 : 8;
    FilterSlot *slots = calloc(cap, sizeof *slots);
    if (slots == NULL) return -1;
    for (size_t i = 0; i < f->cap; i++) {
        if (!f->slots[i].used) continue;
        size_t at = slot_of(f->slots[i].linktype, cap);
        while (slots[at].used) at = (at + 1) & (cap - 1);
        slots[at] = f->slots[i];
    }
    free(f->slots);
    f->slots = slots;
    f->cap = cap;
    f->last = NULL;
    return 0;
}

/* The program for `linktype`, compiled the first time it is asked for; NULL: out of memory. */
static FilterSlot *program_for(Filter *f, uint32_t linktype) {
    if (f->last != NULL && f->last->linktype == linktype) return f->last;
    if (f->used + 1 > f->cap / 2 && grow(f)) return NULL;
    size_t at = slot_of(linktype, f->cap);
    while (f->slots[at].used && f->slots[at].linktype != linktype) at = (at + 1) & (f->cap - 1);
    FilterSlot *slot = &f->slots[at];
    if (!slot->used) {
        slot->used = 1;
        slot->linktype = linktype;
        f->used++;
        compile_for(f, slot);
    }
    f->last = slot;
    return slot;
}

int filter_init(Filter *f, const char *expression) {
    memset(f, 0, sizeof *f);
    f->expression = strdup(expression);
    return f->expression == NULL ? -1 : 0;
}

int filter_match(Filter *f, const Frame *frame) {
    FilterSlot *slot = program_for(f, frame->linktype);
    if (slot == NULL) return -1;
    if (!slot->ok) return 0;
    struct pcap_pkthdr header = {.caplen = frame->caplen, .len = frame->wire_len};
    return pcap_offline_filter(&slot->program, &header, frame->data) != 0;
}

void filter_free(Filter *f) {
    for (size_t i = 0; i < f->cap; i++)
        if (f->slots[i].used && f->slots[i].ok) pcap_freecode(&f->slots[i].program);
    free(f->slots);
    free(f->expression);
    memset(f, 0, sizeof *f);
}

#else  /* built without libpcap: no filters (module.c refuses one before reading) */

int filter_init(Filter *f, const char *expression) {
    memset(f, 0, sizeof *f);
    (void)expression;
    return -1;
}

int filter_match(Filter *f, const Frame *frame) {
    (void)f;
    (void)frame;
    return -1;
}

void filter_free(Filter *f) { memset(f, 0, sizeof *f); }

#endif
