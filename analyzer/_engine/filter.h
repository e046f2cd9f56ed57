/* filter.c: a BPF expression, compiled by libpcap for each link type met, run on each frame. */
#ifndef SYNFIN_FILTER_H
#define SYNFIN_FILTER_H

#include "engine.h"

/* Whether the engine was built with libpcap (setup.py defines SYNFIN_HAVE_PCAP when it finds pcap.h and
 * libpcap); without it there are no filters, and analyzer/engine.py does not ask for one. */
#ifdef SYNFIN_HAVE_PCAP
#define FILTERS_BUILT 1
#else
#define FILTERS_BUILT 0
#endif

typedef struct FilterSlot FilterSlot;

typedef struct {
    char *expression;
    FilterSlot *slots;      /* open addressing by link type; a power of two, at most half full */
    size_t cap, used;
    FilterSlot *last;       /* the link type of the previous frame (nearly always the same) */
    /* the first link type the expression cannot be compiled for, and libpcap's reason */
    int failed;
    uint32_t failed_linktype;
    char failed_reason[256];
} Filter;

int filter_init(Filter *f, const char *expression);  /* 0, or -1: out of memory */
/* 1: the frame matches; 0: it does not (or the expression cannot apply to its link type); -1: out of memory */
int filter_match(Filter *f, const Frame *frame);
void filter_free(Filter *f);

#endif
