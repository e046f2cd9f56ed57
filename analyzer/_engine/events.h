/* events.c: a live capture's events, as events.py's EventWatcher emits them and format_event/event_json print them. */
#ifndef SYNFIN_EVENTS_H
#define SYNFIN_EVENTS_H

#include "engine.h"

enum { EVENTS_COUNTED, EVENTS_TEXT, EVENTS_JSON };  /* COUNTED: only the rates (--summary) */

typedef struct {
    int format;
    Buffer out;                     /* the lines not yet handed to Python */
    int64_t opens, closes, resets;  /* live_cli.Rates' totals */
    int failed;                     /* out of memory */
} Events;

void events_segment(Events *e, Conn *c, double ts);  /* EventWatcher.on_segment, after each segment */
void events_finished(Events *e, Conn *c);            /* EventWatcher.finished: c is finished (conn_finish) */
void events_free(Events *e);

#endif
