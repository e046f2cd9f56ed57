/* collect.c: the frames of a few connections, for the ladder (analyzer/ladder_source.py). */
#ifndef SYNFIN_COLLECT_H
#define SYNFIN_COLLECT_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include "engine.h"
#include "filter.h"
#include "reader.h"

/* module.c's reading through Python: `ctx` is a readinto callable. */
long python_fill(void *ctx, uint8_t *dst, size_t n);

/* Read the capture (fd_in >= 0 on a thread of its own, else through `readinto`) until the
 * connections numbered `ids` (sorted, distinct) have all finished if `stop_early`, else to
 * its end; return {"frames": {id: [(number, ts, linktype, data, wire_len, now), ...]},
 * "finished": {id: (finished_at, finisher frame or None)}, "connections": ids made so far,
 * "frames_read": frames read (as Stats.frames), "stopped": bool, "error": str or None, "file": the file of a
 * rotated set reading was in (0 for one capture)}. `more`: a set's files after fd_in (reader_chain).
 * NULL with a Python exception on failure. */
PyObject *collect_frames(PyObject *readinto, int fd_in, const int *more, size_t n_more, const Timeouts *timeouts,
                         const int64_t *ids, size_t n, int stop_early, Filter *filter);

#endif
