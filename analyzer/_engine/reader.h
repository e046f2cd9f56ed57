/* reader.c: capture file -> frames. */
#ifndef SYNFIN_READER_H
#define SYNFIN_READER_H

#include "engine.h"

/* What reader_next returns. */
enum { READ_FRAME, READ_DAMAGE, READ_END, READ_ERROR, READ_FAILED };
/* READ_DAMAGE: r->message and r->damage_frame describe it (reading stops if r->done);
 * READ_ERROR: r->message says why the file cannot be read at all;
 * READ_FAILED: out of memory, or `fill` failed (a Python exception is set). */

typedef long (*FillFn)(void *ctx, uint8_t *dst, size_t n);  /* bytes read; 0 at the end; -1 failed */

typedef struct {
    uint32_t linktype;
    double unit;
    int64_t offset;
} Interface;

typedef struct {
    FillFn fill;
    void *fill_ctx;
    int fd, fd_errno;      /* feeder.c's read(2) source, and its error */
    size_t read_size;      /* 0: fill the buffer; else read max(read_size, shortfall), as capture.py */
    uint8_t *buf;
    size_t cap, pos, end;
    int eof, done, pcapng, started, big_endian;
    double unit;
    uint32_t pcap_linktype;
    Interface *interfaces;
    size_t n_interfaces, cap_interfaces;
    int64_t number;
    int64_t damage_frame;
    char message[160];
    /* A rotated set (reader_chain): the files' descriptors after `fd`, read one after another as one
     * capture (frame numbers go on), and each file's last frame time (NAN: none), `file` the one read now. */
    const int *next_fds;
    size_t n_next, file;
    double *last_ts;
} Reader;

int reader_open(Reader *r, FillFn fill, void *ctx);
int reader_next(Reader *r, Frame *f);
int reader_chain(Reader *r, const int *next_fds, size_t n_next);
void reader_close(Reader *r);

#endif
