/* Writing finished connections, in C: report.py's JSON record, CSV row and table line.
 *
 * The text must be byte for byte what report.py writes, so numbers are
 * printed the way Python prints them. Integers are easy. A float is printed
 * as repr() prints it: the shortest decimal that reads back as the same
 * double. Timestamps in captures are whole microseconds, so `fast_repr`
 * takes N = x * 10**6 rounded and proves, in exact 128-bit integer
 * arithmetic, that N / 10**6 lies within half a unit in the last place of x
 * (it then reads back as x) and that the unit is below 10**-6 (so no
 * shorter decimal can); anything it cannot prove goes to Python's own repr.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <math.h>
#include <stdio.h>
#include <string.h>

#include "engine.h"

typedef unsigned __int128 u128;

/* ---- the buffer -------------------------------------------------------------- */

int buf_reserve(Buffer *b, size_t more) {
    if (b->len + more <= b->cap) return 0;
    size_t cap = b->cap ? b->cap : 1 << 16;
    while (cap < b->len + more) cap *= 2;
    char *data = realloc(b->data, cap);
    if (data == NULL) return -1;
    b->data = data;
    b->cap = cap;
    return 0;
}

void buf_put(Buffer *b, const char *s, size_t n) {
    if (buf_reserve(b, n)) return;
    memcpy(b->data + b->len, s, n);
    b->len += n;
}

void buf_puts(Buffer *b, const char *s) { buf_put(b, s, strlen(s)); }

void buf_putc(Buffer *b, char ch) {
    if (buf_reserve(b, 1)) return;
    b->data[b->len++] = ch;
}

static size_t format_uint(char *out, uint64_t v) {
    char tmp[24];
    size_t n = 0;
    do {
        tmp[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    for (size_t i = 0; i < n; i++) out[i] = tmp[n - 1 - i];
    return n;
}

void buf_int(Buffer *b, int64_t v) {
    if (buf_reserve(b, 24)) return;
    if (v < 0) {
        b->data[b->len++] = '-';
        b->len += format_uint(b->data + b->len, (uint64_t)0 - (uint64_t)v);
    } else {
        b->len += format_uint(b->data + b->len, (uint64_t)v);
    }
}

/* ---- floats, as repr() prints them ------------------------------------------------ */

static size_t fast_repr(char *out, double x) {
    if (!(x >= 1e-4 && x < 8589934592.0)) return 0;  /* repr is fixed-point here; ulp < 1e-6 */
    int e;
    double fraction = frexp(x, &e);
    uint64_t m = (uint64_t)ldexp(fraction, 53);  /* x = m / 2**shift exactly */
    int shift = 53 - e;
    if (m == (uint64_t)1 << 52) return 0;  /* a power of two: the interval below is narrower */
    u128 scaled = (u128)m * 1000000u;
    u128 n = (scaled + ((u128)1 << (shift - 1))) >> shift;
    u128 back = n << shift;
    u128 diff = back > scaled ? back - scaled : scaled - back;
    if (diff >= 500000) return 0;  /* |n/10**6 - x| must be under half an ulp: 2**-(shift+1) */
    uint64_t whole = (uint64_t)(n / 1000000u), micros = (uint64_t)(n % 1000000u);
    size_t len = format_uint(out, whole);
    out[len++] = '.';
    if (micros == 0) {
        out[len++] = '0';
        return len;
    }
    char digits[6];
    for (int i = 5; i >= 0; i--) {
        digits[i] = (char)('0' + micros % 10);
        micros /= 10;
    }
    int keep = 6;
    while (digits[keep - 1] == '0') keep--;
    memcpy(out + len, digits, (size_t)keep);
    return len + (size_t)keep;
}

static int slow_repr(Buffer *b, double x) {
    char *text = PyOS_double_to_string(x, 'r', 0, Py_DTSF_ADD_DOT_0, NULL);
    if (text == NULL) return -1;
    buf_puts(b, text);
    PyMem_Free(text);
    return 0;
}

int buf_float(Buffer *b, double x) {
    if (buf_reserve(b, 40)) return -1;
    size_t len = fast_repr(b->data + b->len, x);
    if (len) {
        b->len += len;
        return 0;
    }
    if (x == 0.0 && !signbit(x)) {
        buf_put(b, "0.0", 3);
        return 0;
    }
    return slow_repr(b, x);
}

/* repr(round(x, 9)): when x is within half a nanosecond of a whole number of
 * microseconds N, round(x, 9) is the double nearest N / 10**6. */
int buf_round9(Buffer *b, double x) {
    if (x >= 1e-4 && x < 8589934592.0) {
        int e;
        double fraction = frexp(x, &e);
        uint64_t m = (uint64_t)ldexp(fraction, 53);
        int shift = 53 - e;
        u128 n = ((u128)m * 1000000u + ((u128)1 << (shift - 1))) >> shift;
        u128 exact = (u128)m * 1000000000u, near = (n * 1000u) << shift;
        u128 diff = exact > near ? exact - near : near - exact;
        if (diff < ((u128)1 << (shift - 1))) return buf_float(b, (double)(uint64_t)n / 1e6);
    }
    if (x == 0.0 && !signbit(x)) {
        buf_put(b, "0.0", 3);
        return 0;
    }
    PyObject *builtins = PyEval_GetBuiltins();
    PyObject *round_fn = builtins ? PyDict_GetItemString(builtins, "round") : NULL;
    PyObject *rounded = round_fn ? PyObject_CallFunction(round_fn, "di", x, 9) : NULL;
    if (rounded == NULL) return -1;
    double value = PyFloat_AsDouble(rounded);
    Py_DECREF(rounded);
    return slow_repr(b, value);
}

/* ---- names ---------------------------------------------------------------------------- */

static void ipv6_text(Buffer *b, const uint8_t *a) {
    /* ipaddress.IPv6Address.__str__: the first longest run of two or more zero groups is "::" */
    unsigned groups[8];
    for (int i = 0; i < 8; i++) groups[i] = (unsigned)a[2 * i] << 8 | a[2 * i + 1];
    int best = -1, best_len = 0;
    for (int i = 0; i < 8;) {
        if (groups[i]) {
            i++;
            continue;
        }
        int j = i;
        while (j < 8 && groups[j] == 0) j++;
        if (j - i > best_len) best = i, best_len = j - i;
        i = j;
    }
    if (best_len < 2) best = -1;
    char text[48];
    int len = 0;
    for (int i = 0; i < 8; i++) {
        if (i == best) {
            len += sprintf(text + len, i == 0 ? "::" : ":");
            i += best_len - 1;
            continue;
        }
        len += sprintf(text + len, "%x", groups[i]);
        if (i < 7) text[len++] = ':';
    }
    buf_put(b, text, (size_t)len);
}

void endpoint_name(Buffer *b, const Endpoint *ep, int ip_version) {
    char text[64];
    int len;
    if (ip_version == 4) {
        len = sprintf(text, "%u.%u.%u.%u:%u", ep->addr[0], ep->addr[1], ep->addr[2], ep->addr[3], ep->port);
        buf_put(b, text, (size_t)len);
        return;
    }
    buf_putc(b, '[');
    ipv6_text(b, ep->addr);
    len = sprintf(text, "]:%u", ep->port);
    buf_put(b, text, (size_t)len);
}

static const char *const ROLES[] = {"client", "server"};
static const char *const OPTION_KEYS[] = {"mss", "wscale", "sack", "timestamps", "fastopen"};

static void anomaly_text(Buffer *b, const Anomaly *a) {
    switch (a->kind) {
    case AN_STARTS_AFTER_SYN:
        buf_puts(b, "capture starts after the SYN");
        break;
    case AN_SECOND_ISN:
        buf_puts(b, ROLES[a->role]);
        buf_puts(b, " sent a SYN with a second ISN");
        break;
    case AN_SECOND_FIN:
        buf_puts(b, ROLES[a->role]);
        buf_puts(b, " sent a second FIN elsewhere");
        break;
    case AN_FORBIDDEN: {
        const char *name = machine.event_names[a->event];  /* "snd FIN": verb, then what */
        buf_puts(b, ROLES[a->role]);
        buf_puts(b, a->event <= EV_SND_RST ? " sent " : " received ");
        buf_puts(b, strchr(name, ' ') + 1);
        buf_puts(b, " in ");
        buf_puts(b, machine.state_names[a->state]);
        break;
    }
    default:
        buf_puts(b, "RST not acceptable to the ");
        buf_puts(b, ROLES[a->role]);
        buf_puts(b, " in ");
        buf_puts(b, machine.state_names[a->state]);
    }
}

/* ---- JSON ------------------------------------------------------------------------------ */

static void json_str(Buffer *b, const char *s) {
    buf_putc(b, '"');
    buf_puts(b, s);
    buf_putc(b, '"');
}

static void json_opt_str(Buffer *b, const char *s) {
    if (s) json_str(b, s);
    else buf_puts(b, "null");
}

static void json_bool(Buffer *b, int v) { buf_puts(b, v ? "true" : "false"); }

static int json_history(Buffer *b, const History *h) {
    buf_putc(b, '[');
    for (uint32_t i = 0; i < h->count; i++) {
        const Transition *t = &h->items[i];
        if (i) buf_put(b, ", ", 2);
        buf_put(b, "[\"", 2);
        buf_puts(b, machine.state_names[t->state]);
        buf_put(b, "\", ", 3);
        if (buf_float(b, t->ts)) return -1;
        buf_put(b, ", ", 2);
        if (t->frame < 0) buf_puts(b, "null");
        else buf_int(b, t->frame);
        buf_putc(b, ']');
    }
    buf_putc(b, ']');
    return 0;
}

static void json_options(Buffer *b, const Options *o) {
    buf_putc(b, '{');
    for (int i = 0; i < o->count; i++) {
        int key = o->order[i];
        if (i) buf_put(b, ", ", 2);
        json_str(b, OPTION_KEYS[key]);
        buf_put(b, ": ", 2);
        if (key == OPT_MSS || key == OPT_WSCALE) buf_int(b, o->value[key]);
        else buf_puts(b, "true");
    }
    buf_putc(b, '}');
}

static void json_pair(Buffer *b, const char *key, int64_t client, int64_t server) {
    buf_puts(b, key);
    buf_puts(b, "{\"client\": ");
    buf_int(b, client);
    buf_puts(b, ", \"server\": ");
    buf_int(b, server);
    buf_putc(b, '}');
}

static int write_json(Buffer *b, const Conn *c, const Labels *l, const OutputStyle *style) {
    const Endpoint *client = &c->ep[ROLE_CLIENT], *server = &c->ep[ROLE_SERVER];
    buf_puts(b, "{\"id\": ");
    buf_int(b, c->id);
    buf_puts(b, ", \"client\": \"");
    endpoint_name(b, client, c->ip_version);
    buf_puts(b, "\", \"server\": \"");
    endpoint_name(b, server, c->ip_version);
    buf_puts(b, "\", \"ip_version\": ");
    buf_int(b, c->ip_version);
    buf_puts(b, ", \"first_frame\": ");
    buf_int(b, c->first_frame);
    buf_puts(b, ", \"last_frame\": ");
    buf_int(b, c->last_frame);
    buf_puts(b, ", \"start\": ");
    if (buf_float(b, c->start)) return -1;
    buf_puts(b, ", \"end\": ");
    if (buf_float(b, c->end)) return -1;
    buf_puts(b, ", \"open\": ");
    json_str(b, l->open);
    buf_puts(b, ", \"close\": ");
    json_str(b, l->close);
    buf_puts(b, ", \"half_close\": ");
    json_bool(b, c->half_close);
    buf_puts(b, ", \"active_closer\": ");
    json_opt_str(b, l->active_closer);
    buf_puts(b, ", \"reset_by\": ");
    json_opt_str(b, c->has_reset ? ROLES[c->reset_role] : NULL);
    buf_puts(b, ", \"reset_state\": ");
    json_opt_str(b, c->has_reset ? machine.state_names[c->reset_state] : NULL);
    buf_puts(b, ", \"roles_inferred\": ");
    json_bool(b, c->roles_inferred);
    buf_puts(b, ", \"states\": {\"client\": ");
    if (json_history(b, &client->history)) return -1;
    buf_puts(b, ", \"server\": ");
    if (json_history(b, &server->history)) return -1;
    buf_puts(b, "}, \"final\": {\"client\": ");
    json_str(b, machine.state_names[client->state]);
    buf_puts(b, ", \"server\": ");
    json_str(b, machine.state_names[server->state]);
    buf_puts(b, "}, \"retransmits\": {\"syn\": ");
    buf_int(b, c->retransmits[0]);
    buf_puts(b, ", \"synack\": ");
    buf_int(b, c->retransmits[1]);
    buf_puts(b, ", \"fin\": ");
    buf_int(b, c->retransmits[2]);
    buf_puts(b, "}, \"keepalives\": ");
    buf_int(b, c->keepalives);
    buf_puts(b, ", \"syn_data\": ");
    json_bool(b, c->syn_data);
    json_pair(b, ", \"packets\": ", client->packets, server->packets);
    json_pair(b, ", \"payload_bytes\": ", client->payload_bytes, server->payload_bytes);
    buf_puts(b, ", \"options\": {\"client\": ");
    json_options(b, &client->options);
    buf_puts(b, ", \"server\": ");
    json_options(b, &server->options);
    buf_puts(b, "}, \"anomalies\": [");
    for (uint32_t i = 0; i < c->n_anomalies; i++) {
        if (i) buf_put(b, ", ", 2);
        buf_puts(b, "{\"frame\": ");
        buf_int(b, c->anomalies[i].frame);
        buf_puts(b, ", \"what\": \"");
        anomaly_text(b, &c->anomalies[i]);
        buf_puts(b, "\"}");
    }
    buf_putc(b, ']');
    if (style->capture) {
        buf_puts(b, ", \"capture\": ");
        buf_put(b, style->capture, style->capture_len);
    }
    buf_put(b, "}\n", 2);
    return 0;
}

/* ---- CSV (report.CSV_FIELDS, as csv.DictWriter writes them) ------------------------------- */

static void csv_states(Buffer *b, const History *h) {
    for (uint32_t i = 0; i < h->count; i++) {
        if (i) buf_put(b, " > ", 3);
        buf_puts(b, machine.state_names[h->items[i].state]);
    }
}

static void csv_int(Buffer *b, int64_t v) {
    buf_putc(b, ',');
    buf_int(b, v);
}

static void csv_text(Buffer *b, const char *s) {
    buf_putc(b, ',');
    if (s) buf_puts(b, s);
}

static int write_csv(Buffer *b, const Conn *c, const Labels *l, const OutputStyle *style) {
    const Endpoint *client = &c->ep[ROLE_CLIENT], *server = &c->ep[ROLE_SERVER];
    if (style->capture) buf_put(b, style->capture, style->capture_len);
    csv_int(b, c->id);
    buf_putc(b, ',');
    endpoint_name(b, client, c->ip_version);
    buf_putc(b, ',');
    endpoint_name(b, server, c->ip_version);
    csv_int(b, c->ip_version);
    csv_int(b, c->first_frame);
    csv_int(b, c->last_frame);
    buf_putc(b, ',');
    if (buf_float(b, c->start)) return -1;
    buf_putc(b, ',');
    if (buf_float(b, c->end)) return -1;
    buf_putc(b, ',');
    if (buf_round9(b, c->end - c->start)) return -1;
    csv_text(b, l->open);
    csv_text(b, l->close);
    csv_text(b, c->half_close ? "True" : "False");
    csv_text(b, l->active_closer);
    csv_text(b, c->has_reset ? ROLES[c->reset_role] : NULL);
    csv_text(b, c->has_reset ? machine.state_names[c->reset_state] : NULL);
    csv_text(b, c->roles_inferred ? "True" : "False");
    csv_text(b, machine.state_names[client->state]);
    csv_text(b, machine.state_names[server->state]);
    buf_putc(b, ',');
    csv_states(b, &client->history);
    buf_putc(b, ',');
    csv_states(b, &server->history);
    for (int i = 0; i < 3; i++) csv_int(b, c->retransmits[i]);
    csv_int(b, c->keepalives);
    csv_text(b, c->syn_data ? "True" : "False");
    csv_int(b, client->packets);
    csv_int(b, server->packets);
    csv_int(b, client->payload_bytes);
    csv_int(b, server->payload_bytes);
    csv_int(b, c->n_anomalies);
    buf_putc(b, '\n');
    return 0;
}

/* ---- the table (report._COLUMNS and report._line) ----------------------------------------- */

static const struct { int width, right; } COLUMNS[] = {
    {5, 1}, {23, 0}, {23, 0}, {17, 0}, {12, 0}, {4, 0}, {7, 0}, {20, 0}, {23, 0}, {9, 1}, {6, 1}};
enum { N_COLUMNS = 11 };

static const char *open_colour(const char *label) {
    static const char *const codes[] = {"32", "36", "31", "33", "33", "2"};  /* report._OPEN_STYLE */
    for (int i = 0; i < 6; i++)
        if (label == OPEN_LABELS[i]) return codes[i];
    return NULL;
}

static const char *close_colour(const char *label) {
    static const char *const codes[] = {"32", "32", "36", "31", "33", "34", "2"};  /* report._CLOSE_STYLE */
    for (int i = 0; i < 7; i++)
        if (label == CLOSE_LABELS[i]) return codes[i];
    return NULL;
}

static void cell(Buffer *b, int index, const char *text, size_t len, const char *colour) {
    size_t width = (size_t)COLUMNS[index].width, pad = len < width ? width - len : 0;
    if (index) buf_put(b, "  ", 2);
    if (colour) {
        buf_puts(b, "\x1b[");
        buf_puts(b, colour);
        buf_putc(b, 'm');
    }
    if (COLUMNS[index].right)
        for (size_t i = 0; i < pad; i++) buf_putc(b, ' ');
    buf_put(b, text, len);
    if (!COLUMNS[index].right)
        for (size_t i = 0; i < pad; i++) buf_putc(b, ' ');
    if (colour) buf_puts(b, "\x1b[0m");
}

static int write_table_row(Buffer *b, const Conn *c, const Labels *l, const OutputStyle *style) {
    const Endpoint *client = &c->ep[ROLE_CLIENT], *server = &c->ep[ROLE_SERVER];
    char text[96];
    Buffer name = {0};
    int len = sprintf(text, "%lld", (long long)c->id);
    cell(b, 0, text, (size_t)len, NULL);
    endpoint_name(&name, client, c->ip_version);
    cell(b, 1, name.data, name.len, NULL);
    name.len = 0;
    endpoint_name(&name, server, c->ip_version);
    cell(b, 2, name.data, name.len, NULL);
    free(name.data);
    cell(b, 3, l->open, strlen(l->open), style->colour ? open_colour(l->open) : NULL);
    cell(b, 4, l->close, strlen(l->close), style->colour ? close_colour(l->close) : NULL);
    cell(b, 5, c->half_close ? "yes" : "", c->half_close ? 3 : 0, NULL);
    const char *closer = l->active_closer ? l->active_closer : "";
    cell(b, 6, closer, strlen(closer), NULL);
    len = c->has_reset ? sprintf(text, "%s@%s", ROLES[c->reset_role], machine.state_names[c->reset_state]) : 0;
    cell(b, 7, text, (size_t)len, NULL);
    len = sprintf(text, "%s/%s", machine.state_names[client->state], machine.state_names[server->state]);
    cell(b, 8, text, (size_t)len, NULL);
    len = snprintf(text, sizeof text, "%.3f", c->end - c->start);
    cell(b, 9, text, (size_t)len, NULL);
    len = sprintf(text, "%lld", (long long)(client->packets + server->packets));
    cell(b, 10, text, (size_t)len, NULL);
    while (b->len && b->data[b->len - 1] == ' ') b->len--;  /* _line(...).rstrip() */
    buf_putc(b, '\n');
    return 0;
}

int write_record(Buffer *b, const Conn *c, const Labels *labels, const OutputStyle *style) {
    if (style->format == FORMAT_JSON) return write_json(b, c, labels, style);
    if (style->format == FORMAT_CSV) return write_csv(b, c, labels, style);
    return write_table_row(b, c, labels, style);
}
