/* where.c: the --where filter on finished connections (analyzer/where.py), as the engine runs it. */
#ifndef SYNFIN_WHERE_H
#define SYNFIN_WHERE_H

#include "engine.h"

/* The fields, numbered as where.py's ENUM_KEYS and ENDPOINT_KEYS number them. */
enum { WF_OPEN, WF_CLOSE, WF_CLOSER, WF_RESET_BY, WF_RESET_STATE, WF_HALF_CLOSE, WF_CLIENT_STATE,
       WF_SERVER_STATE, WF_STATE, WF_RETRANSMITS, WF_ANOMALIES, WF_IP_VERSION, WF_CLIENT, WF_SERVER,
       WF_EITHER, WF_FIELDS };

typedef struct {
    uint8_t version;  /* 0: any address; 4 or 6: `network`/`prefix` */
    uint8_t prefix;   /* bits of `network` that must match (at most 32 for IPv4, 128 for IPv6) */
    uint8_t has_port;
    uint16_t port;
    uint8_t network[16];  /* already masked to `prefix` bits; IPv4 in the first four bytes */
} WherePattern;

typedef struct {
    uint8_t field, negate;
    uint32_t mask;            /* the enum fields: a bit per allowed value */
    uint32_t n_patterns;      /* the endpoint fields: any of these */
    WherePattern *patterns;
} WhereClause;

typedef struct {
    uint32_t n_clauses;
    WhereClause *clauses;
} Where;

/* Read where.py's Where.for_engine() bytes: 0; -1 malformed (`why` says how); -2 out of memory. */
int where_parse(Where *w, const uint8_t *data, size_t len, const char **why);
/* 1 if the finished, labelled connection passes every clause, else 0. */
int where_matches(const Where *w, const Conn *c, const Labels *labels);
void where_free(Where *w);

#endif
