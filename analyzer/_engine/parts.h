/* parts.c: the engine's side of a rotated set analyzed file by file, in parallel (analyzer/parallel.py). */
#ifndef SYNFIN_PARTS_H
#define SYNFIN_PARTS_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include "sink.h"

PyObject *scan_part(PyObject *self, PyObject *args);
PyObject *handover_keys(PyObject *self, PyObject *args);
PyObject *merger_new(PyObject *self, PyObject *args);
PyObject *merger_enter(PyObject *self, PyObject *capsule);
PyObject *merger_feed(PyObject *self, PyObject *args);
PyObject *merger_adopt(PyObject *self, PyObject *args);
PyObject *merger_held(PyObject *self, PyObject *args);
PyObject *merger_finish(PyObject *self, PyObject *args);
PyObject *split_meta(PyObject *self, PyObject *args);
PyObject *renumber(PyObject *self, PyObject *args);
/* module.c: the census's counts as a dict of the nonzero ones by name; the summary's rows per server endpoint */
PyObject *named_counts(const int64_t *values, const char *const *names, int n);
PyObject *endpoint_counts(const EndpointTable *t);

#endif
