/* The --where filter, as analyzer/where.py defines it, on each finished connection.
 *
 * where.py parses and checks the user's terms and hands them over as bytes
 * (Where.for_engine): a header "WHR1" and the number of clauses; then per
 * clause its field, a negate flag, its number of address/port patterns and a
 * bitmask of allowed values (little-endian); then those patterns. Parsing
 * checks every size and value range before anything is used, so a malformed
 * program is refused, never read past its end.
 *
 * A clause holds when the connection's value for the field is among the
 * allowed ones (a bit of the mask; for "state", either end's final state; for
 * an endpoint field, either end, or the named one, matches one pattern),
 * negated by `!=`. The sink (sink.c) asks after labelling: a connection that
 * fails is counted among the connections, not in the census, and not written.
 */
#include <string.h>

#include "where.h"

enum { HEADER = 8, CLAUSE = 8, PATTERN = 22, MAX_CLAUSES = 4096, MAX_PATTERNS = 65536 };

static uint32_t le32(const uint8_t *p) { return p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24; }
static uint16_t le16(const uint8_t *p) { return (uint16_t)(p[0] | p[1] << 8); }

static int pattern_ok(const WherePattern *p) {
    if (p->version == 0) return p->prefix == 0;
    if (p->version == 4) return p->prefix <= 32;
    return p->version == 6 && p->prefix <= 128;
}

static int read_patterns(WhereClause *clause, const uint8_t *data, size_t len, size_t *at, const char **why) {
    if (clause->n_patterns == 0) return 0;
    if (clause->n_patterns > MAX_PATTERNS || (len - *at) / PATTERN < clause->n_patterns) {
        *why = "patterns run past the end";
        return -1;
    }
    clause->patterns = calloc(clause->n_patterns, sizeof *clause->patterns);
    if (clause->patterns == NULL) return -2;
    for (uint32_t i = 0; i < clause->n_patterns; i++, *at += PATTERN) {
        WherePattern *p = &clause->patterns[i];
        const uint8_t *raw = data + *at;
        p->version = raw[0];
        p->prefix = raw[1];
        p->has_port = raw[2] != 0;
        p->port = le16(raw + 4);
        memcpy(p->network, raw + 6, 16);
        if (!pattern_ok(p)) {
            *why = "a pattern with a bad version or prefix";
            return -1;
        }
    }
    return 0;
}

int where_parse(Where *w, const uint8_t *data, size_t len, const char **why) {
    memset(w, 0, sizeof *w);
    *why = "truncated";
    if (len < HEADER || memcmp(data, "WHR1", 4) != 0) {
        *why = "not a where program";
        return -1;
    }
    uint32_t n = le32(data + 4);
    if (n == 0 || n > MAX_CLAUSES) {
        *why = "a bad number of clauses";
        return -1;
    }
    w->clauses = calloc(n, sizeof *w->clauses);
    if (w->clauses == NULL) return -2;
    size_t at = HEADER;
    for (uint32_t i = 0; i < n; i++) {
        if (len - at < CLAUSE) return -1;
        WhereClause *clause = &w->clauses[w->n_clauses++];
        clause->field = data[at];
        clause->negate = data[at + 1] != 0;
        clause->n_patterns = le16(data + at + 2);
        clause->mask = le32(data + at + 4);
        at += CLAUSE;
        int endpoint = clause->field >= WF_CLIENT;
        if (clause->field >= WF_FIELDS || endpoint != (clause->n_patterns != 0)) {
            *why = "a bad field";
            return -1;
        }
        int status = read_patterns(clause, data, len, &at, why);
        if (status) return status;
    }
    if (at != len) {
        *why = "bytes after the last clause";
        return -1;
    }
    return 0;
}

void where_free(Where *w) {
    for (uint32_t i = 0; i < w->n_clauses; i++) free(w->clauses[i].patterns);
    free(w->clauses);
    memset(w, 0, sizeof *w);
}

/* The index of a label (conn.c's own pointer) among `n` names; n if it is none of them. */
static int index_of(const char *const *names, int n, const char *name) {
    int i = 0;
    while (i < n && names[i] != name) i++;
    return i;
}

static uint32_t closer_bit(const char *closer) {  /* client, server, both, none */
    if (closer == NULL) return 1u << 3;
    return 1u << (closer[0] == 'c' ? 0 : closer[0] == 's' ? 1 : 2);
}

/* The connection's value for an enum field, as a bit in where.py's order of allowed values. */
static uint32_t value_bit(int field, const Conn *c, const Labels *l) {
    switch (field) {
    case WF_OPEN: return 1u << index_of(OPEN_LABELS, 6, l->open);
    case WF_CLOSE: return 1u << index_of(CLOSE_LABELS, 7, l->close);
    case WF_CLOSER: return closer_bit(l->active_closer);
    case WF_RESET_BY: return 1u << (c->has_reset ? c->reset_role : 2);
    case WF_RESET_STATE: return 1u << (c->has_reset ? c->reset_state : N_STATES);
    case WF_HALF_CLOSE: return 1u << (c->half_close != 0);
    case WF_CLIENT_STATE: return 1u << c->ep[ROLE_CLIENT].state;
    case WF_SERVER_STATE: return 1u << c->ep[ROLE_SERVER].state;
    case WF_STATE: return 1u << c->ep[ROLE_CLIENT].state | 1u << c->ep[ROLE_SERVER].state;
    case WF_RETRANSMITS: return 1u << ((c->retransmits[0] | c->retransmits[1] | c->retransmits[2]) != 0);
    case WF_ANOMALIES: return 1u << (c->n_anomalies != 0);
    default: return 1u << (c->ip_version == 6);  /* WF_IP_VERSION */
    }
}

static int pattern_matches(const WherePattern *p, const Endpoint *ep, int version) {
    if (p->has_port && ep->port != p->port) return 0;
    if (p->version == 0) return 1;
    if (p->version != version) return 0;
    int whole = p->prefix / 8, rest = p->prefix % 8;
    if (memcmp(ep->addr, p->network, (size_t)whole) != 0) return 0;
    return rest == 0 || (ep->addr[whole] & (uint8_t)(0xFF << (8 - rest))) == p->network[whole];
}

static int endpoint_matches(const WhereClause *clause, const Endpoint *ep, int version) {
    for (uint32_t i = 0; i < clause->n_patterns; i++)
        if (pattern_matches(&clause->patterns[i], ep, version)) return 1;
    return 0;
}

static int clause_holds(const WhereClause *clause, const Conn *c, const Labels *l) {
    int found;
    if (clause->field == WF_CLIENT || clause->field == WF_SERVER) {
        found = endpoint_matches(clause, &c->ep[clause->field == WF_CLIENT ? ROLE_CLIENT : ROLE_SERVER], c->ip_version);
    } else if (clause->field == WF_EITHER) {
        found = endpoint_matches(clause, &c->ep[ROLE_CLIENT], c->ip_version) ||
                endpoint_matches(clause, &c->ep[ROLE_SERVER], c->ip_version);
    } else {
        found = (clause->mask & value_bit(clause->field, c, l)) != 0;
    }
    return found != clause->negate;
}

int where_matches(const Where *w, const Conn *c, const Labels *labels) {
    for (uint32_t i = 0; i < w->n_clauses; i++)
        if (!clause_holds(&w->clauses[i], c, labels)) return 0;
    return 1;
}
