/* Writing finished connections, in C: report.py's JSON record, CSV row and table line.
 *
 * The text must be byte for byte what report.py writes, so numbers are
 * printed the way Python prints them. Integers are easy. A float is printed
 * as repr() prints it: the shortest decimal that reads back as the same
 * double. `fast_repr` finds it in exact 128-bit integer arithmetic for the
 * numbers a capture has (timestamps, durations); anything else takes the
 * long way, slow_repr.
 * Nothing here calls Python: the output thread runs it without the GIL.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
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

static inline void buf_put(Buffer *b, const char *s, size_t n) {
    if (b->len + n > b->cap && buf_reserve(b, n)) return;
    memcpy(b->data + b->len, s, n);
    b->len += n;
}

static inline void buf_puts(Buffer *b, const char *s) { buf_put(b, s, strlen(s)); }

/* A string literal: its length is known at compile time. */
#define LIT(b, text) buf_put((b), "" text, sizeof(text) - 1)

static inline void buf_putc(Buffer *b, char ch) {
    if (b->len + 1 > b->cap && buf_reserve(b, 1)) return;
    b->data[b->len++] = ch;
}

static inline size_t format_uint(char *out, uint64_t v) {
    char tmp[24];
    size_t n = 0;
    do {
        tmp[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    for (size_t i = 0; i < n; i++) out[i] = tmp[n - 1 - i];
    return n;
}

static inline void buf_int(Buffer *b, int64_t v) {
    if (b->len + 24 > b->cap && buf_reserve(b, 24)) return;
    if (v < 0) {
        b->data[b->len++] = '-';
        b->len += format_uint(b->data + b->len, (uint64_t)0 - (uint64_t)v);
    } else {
        b->len += format_uint(b->data + b->len, (uint64_t)v);
    }
}

/* How much of a buffer of `size` bytes snprintf filled, given what it returned (what it
 * wanted to write): never more than the buffer holds, never negative. */
static inline size_t fitted(int len, size_t size) {
    if (len < 0) return 0;
    return (size_t)len < size ? (size_t)len : size - 1;
}

/* ---- floats, as repr() prints them ------------------------------------------------ */

/* x = m / 2**shift with m a 53-bit integer, for normal positive x. */
static inline void split(double x, uint64_t *m, int *shift) {
    uint64_t bits;
    memcpy(&bits, &x, sizeof bits);
    *m = (bits & (((uint64_t)1 << 52) - 1)) | ((uint64_t)1 << 52);
    *shift = 1075 - (int)(bits >> 52);
}

static const uint64_t POW10[20] = {1ull, 10ull, 100ull, 1000ull, 10000ull, 100000ull, 1000000ull, 10000000ull,
    100000000ull, 1000000000ull, 10000000000ull, 100000000000ull, 1000000000000ull, 10000000000000ull,
    100000000000000ull, 1000000000000000ull, 10000000000000000ull, 100000000000000000ull,
    1000000000000000000ull, 10000000000000000000ull};

static inline u128 pow10_wide(int k) { return k < 20 ? POW10[k] : (u128)POW10[19] * POW10[k - 19]; }

/* n = x * 10**k rounded to the nearest integer (half-even), and whether n / 10**k
 * lies strictly inside x's rounding interval (1), on its edge (-1), or outside (0). */
static int nearest_decimal(uint64_t m, int shift, int k, uint64_t *out) {
    u128 scaled = (u128)m * pow10_wide(k), half = (u128)1 << (shift - 1);
    u128 n = scaled >> shift, rest = scaled - (n << shift);
    if (rest > half || (rest == half && (n & 1))) n++;
    u128 back = n << shift;
    u128 diff2 = 2 * (back > scaled ? back - scaled : scaled - back);
    *out = (uint64_t)n;
    return diff2 < pow10_wide(k) ? 1 : diff2 == pow10_wide(k) ? -1 : 0;
}

/* repr(x) for 1e-4 <= x < 1e15, where repr is fixed-point. x = m / 2**shift
 * and its rounding interval is half an ulp = 2**-(shift+1) either side. At
 * k = K digits after the point, where 10**-K is first below an ulp, the
 * nearest K-digit decimal always falls inside; at k = K - 1 at most one
 * decimal can. So repr's answer (the shortest, then the nearest) is the
 * (K-1)-digit decimal if it is inside, less its trailing zeros, and else the
 * K-digit one. All in exact integer arithmetic. */
static size_t fast_repr(char *out, double x, Buffer *cache) {
    if (!(x >= 1e-4 && x < 1e15)) return 0;
    uint64_t m, n;
    int shift;
    split(x, &m, &shift);
    if (m == (uint64_t)1 << 52) return 0;  /* a power of two: the interval below is narrower */
    int k = (int)((shift * 1233L) >> 12) + 1;  /* digits of 2**shift: 1233/4096 ~ log10(2), exact here */
    if (pow10_wide(k - 1) > ((u128)1 << shift)) k--;
    int inside = k > 0 ? nearest_decimal(m, shift, k - 1, &n) : 0;
    if (inside == 1) {
        k--;
        while (k > 0 && n % 10 == 0) {
            n /= 10;
            k--;
        }
    } else if (inside == -1 || nearest_decimal(m, shift, k, &n) != 1) {
        return 0;  /* on an edge: leave it to slow_repr */
    }
    /* x >= 1e-4 makes shift <= 66, so k <= 20; POW10 stops at 10**19. At k = 20, n < 2**64 < 10**20:
     * no whole part (x < 1.2207e-4 needs 17 digits there). */
    if (k > 20) return 0;
    uint64_t whole = k < 20 ? n / POW10[k] : 0, fraction = k < 20 ? n % POW10[k] : n;
    if (whole + 1 != cache->whole_plus_one) {
        cache->whole_len = format_uint(cache->whole_text, whole);
        cache->whole_plus_one = whole + 1;
    }
    memcpy(out, cache->whole_text, cache->whole_len);
    size_t len = cache->whole_len;
    out[len++] = '.';
    if (k == 0) {
        out[len++] = '0';
        return len;
    }
    for (int i = k - 1; i >= 0; i--) {
        out[len + (size_t)i] = (char)('0' + fraction % 10);
        fraction /= 10;
    }
    return len + (size_t)k;
}

/* The shortest digits that read back as ax (> 0), and where the decimal point
 * goes. At each precision the correctly rounded digits are the nearest; if they
 * do not read back, the neighbour on x's other side may still (x is a power of
 * two: its interval reaches further up than down), and then it is the answer. */
static int shortest_digits(double ax, char *digits, int *point) {
    char text[48];
    for (int precision = 1; precision <= 17; precision++) {
        snprintf(text, sizeof text, "%.*e", precision - 1, ax);
        double back = strtod(text, NULL);
        uint64_t d = 0;
        const char *p = text;
        for (; *p != 'e'; p++)
            if (*p != '.') d = d * 10 + (uint64_t)(*p - '0');
        int exponent = atoi(p + 1);  /* of the first digit */
        if (back != ax) {
            if (back < ax) {
                if (++d == POW10[precision]) d = POW10[precision - 1], exponent++;
            } else if (d == POW10[precision - 1]) {
                d = POW10[precision] - 1, exponent--;
            } else {
                d--;
            }
            snprintf(text, sizeof text, "%llue%d", (unsigned long long)d, exponent - (precision - 1));
            if (strtod(text, NULL) != ax) continue;
        }
        int n = precision;
        for (int i = n - 1; i >= 0; i--, d /= 10) digits[i] = (char)('0' + d % 10);
        while (n > 1 && digits[n - 1] == '0') n--;
        *point = exponent + 1;
        return n;
    }
    return 0;  /* not reached: 17 digits always read back */
}

/* repr(x) the long way, for what fast_repr cannot prove, laid out as Python's
 * float_repr_style 'short' does: exponent form when the decimal point falls
 * before the 4th leading zero or after the 16th digit. */
static int slow_repr(Buffer *b, double x) {
    char digits[20];
    if (isnan(x) || isinf(x)) {
        buf_puts(b, isnan(x) ? "NaN" : (x > 0 ? "Infinity" : "-Infinity"));  /* as json.dumps */
        return 0;
    }
    if (x < 0) buf_putc(b, '-');
    int point = 1;
    int n = shortest_digits(fabs(x), digits, &point);
    if (point <= -4 || point > 16) {
        buf_putc(b, digits[0]);
        if (n > 1) {
            buf_putc(b, '.');
            buf_put(b, digits + 1, (size_t)n - 1);
        }
        char exponent[8];
        int len = snprintf(exponent, sizeof exponent, "e%c%02d", point - 1 < 0 ? '-' : '+', abs(point - 1));
        buf_put(b, exponent, fitted(len, sizeof exponent));
    } else if (point <= 0) {
        LIT(b, "0.");
        for (int i = 0; i < -point; i++) buf_putc(b, '0');
        buf_put(b, digits, (size_t)n);
    } else if (point >= n) {
        buf_put(b, digits, (size_t)n);
        for (int i = n; i < point; i++) buf_putc(b, '0');
        LIT(b, ".0");
    } else {
        buf_put(b, digits, (size_t)point);
        buf_putc(b, '.');
        buf_put(b, digits + point, (size_t)(n - point));
    }
    return 0;
}

int buf_float(Buffer *b, double x) {
    if (b->len + 40 > b->cap && buf_reserve(b, 40)) return -1;
    if (x < 0 && x > -1e15) {  /* repr(-x) is "-" + repr(x) */
        size_t len = fast_repr(b->data + b->len + 1, -x, b);
        if (len) {
            b->data[b->len] = '-';
            b->len += len + 1;
            return 0;
        }
    }
    size_t len = fast_repr(b->data + b->len, x, b);
    if (len) {
        b->len += len;
        return 0;
    }
    if (x == 0.0) {
        buf_puts(b, signbit(x) ? "-0.0" : "0.0");
        return 0;
    }
    return slow_repr(b, x);
}

/* The exact binary value of `magnitude` (a normal double from 1e-9 up to 9e6) times
 * 10**digits (digits <= 9), rounded half-even to an integer, as round() rounds: the
 * product fits 128 bits and 1 <= shift <= 82 over that range. */
static uint64_t round_half_even(double magnitude, int digits) {
    uint64_t m;
    int shift;
    split(magnitude, &m, &shift);
    u128 scaled = (u128)m * POW10[digits];
    u128 n = scaled >> shift, rest = scaled - (n << shift), half = (u128)1 << (shift - 1);
    if (rest > half || (rest == half && (n & 1))) n++;
    return (uint64_t)n;
}

/* repr(round(x, digits)) for digits <= 9. round() rounds the exact binary value of x half-even
 * to n / 10**digits; below 2**53 / 10**9 that n converts to a double exactly, and one
 * IEEE division then gives the double nearest n / 10**digits, which is round's result. */
static int buf_round(Buffer *b, double x, int digits) {
    double magnitude = fabs(x);
    if (magnitude >= 1e-4 && magnitude < 9e6) {
        double rounded = (double)round_half_even(magnitude, digits) / (double)POW10[digits];
        return buf_float(b, x < 0 ? -rounded : rounded);
    }
    /* round(x, digits) rounds the exact binary value half-even, as printf does */
    char text[400];
    snprintf(text, sizeof text, "%.*f", digits, x);
    return buf_float(b, strtod(text, NULL));
}

int buf_round9(Buffer *b, double x) { return buf_round(b, x, 9); }

double round9(double x) {
    double magnitude = fabs(x);
    if (magnitude >= 1e-4 && magnitude < 9e6) {
        double rounded = (double)round_half_even(magnitude, 9) / (double)POW10[9];
        return x < 0 ? -rounded : rounded;
    }
    char text[400];
    snprintf(text, sizeof text, "%.*f", 9, x);
    return strtod(text, NULL);
}

/* repr(round(x, 6)), the timing figures, without going through repr: x rounds (exactly,
 * half-even) to n microseconds, and for n < 10**15 the decimal n / 10**6 has at most 15
 * significant digits (DBL_DIG), so it is the shortest that reads back as the double nearest
 * it: repr prints exactly those digits, in fixed notation from 1e-4 up and as d.ddde-0X below
 * (Python's repr switches at a decimal exponent under -4). */
int buf_round6(Buffer *b, double x) {
    double magnitude = fabs(x);
    if (!(magnitude < 9e6)) return buf_round(b, x, 6);  /* large, inf or nan: the general way */
    uint64_t n = magnitude >= 1e-9 ? round_half_even(magnitude, 6) : 0;  /* below 1e-9 it rounds to 0 */
    if (b->len + 40 > b->cap && buf_reserve(b, 40)) return -1;
    if (signbit(x)) buf_putc(b, '-');  /* round keeps the sign, even of a zero */
    if (n == 0) {
        LIT(b, "0.0");
        return 0;
    }
    if (n >= 100) {  /* fixed: whole part, point, the six decimals less trailing zeros (at least one) */
        uint64_t whole = n / POW10[6], fraction = n % POW10[6];
        char text[24];
        b->len += format_uint(b->data + b->len, whole);
        buf_putc(b, '.');
        int keep = 6;
        while (keep > 1 && fraction % 10 == 0) {
            fraction /= 10;
            keep--;
        }
        for (int i = keep - 1; i >= 0; i--) {
            text[i] = (char)('0' + fraction % 10);
            fraction /= 10;
        }
        buf_put(b, text, (size_t)keep);
        return 0;
    }
    /* n < 100: 1e-06 ... 9.9e-05 */
    char digits[24];
    size_t count = format_uint(digits, n), used = count;
    while (used > 1 && digits[used - 1] == '0') used--;
    buf_putc(b, digits[0]);
    if (used > 1) {
        buf_putc(b, '.');
        buf_put(b, digits + 1, used - 1);
    }
    LIT(b, "e-0");
    buf_putc(b, (char)('0' + (6 - (int)(count - 1))));
    return 0;
}

static inline void put_state(Buffer *b, uint8_t state) {
    buf_put(b, machine.state_names[state], machine.state_name_lengths[state]);
}

/* ---- names ---------------------------------------------------------------------------- */

int ipv4_mapped_dotted;

size_t ipv6_chars(char *out, const uint8_t *a) {
    /* ipaddress.IPv6Address.__str__: the first longest run of two or more zero groups is "::" */
    static const char hex[] = "0123456789abcdef";
    static const uint8_t mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xFF, 0xFF};
    size_t n = 0;
    if (ipv4_mapped_dotted && memcmp(a, mapped, 12) == 0) {
        int written = snprintf(out, 46, "::ffff:%u.%u.%u.%u", a[12], a[13], a[14], a[15]);
        return written > 0 && written < 46 ? (size_t)written : 0;
    }
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
    for (int i = 0; i < 8; i++) {  /* at most 8 groups of 4 digits and 7 colons: 39 characters */
        if (i == best) {
            if (i == 0) out[n++] = ':';
            out[n++] = ':';
            i += best_len - 1;
            continue;
        }
        int started = 0;
        for (int shift = 12; shift >= 0; shift -= 4) {
            unsigned digit = (groups[i] >> shift) & 0xF;
            if (digit || started || shift == 0) {
                out[n++] = hex[digit];
                started = 1;
            }
        }
        if (i < 7) out[n++] = ':';
    }
    out[n] = 0;
    return n;
}

static void ipv6_text(Buffer *b, const uint8_t *a) {
    char text[46];
    buf_put(b, text, ipv6_chars(text, a));
}

static void endpoint_name(Buffer *b, const Endpoint *ep, int ip_version) {
    if (ip_version == 4) {
        for (int i = 0; i < 4; i++) {
            buf_int(b, ep->addr[i]);
            buf_putc(b, i < 3 ? '.' : ':');
        }
        buf_int(b, ep->port);
        return;
    }
    buf_putc(b, '[');
    ipv6_text(b, ep->addr);
    LIT(b, "]:");
    buf_int(b, ep->port);
}

static const char *const ROLES[] = {"client", "server"};

void buf_endpoint(Buffer *b, const Endpoint *ep, int ip_version) { endpoint_name(b, ep, ip_version); }
static const char *const OPTION_KEYS[] = {"mss", "wscale", "sack", "timestamps", "fastopen"};

static void anomaly_text(Buffer *b, const Anomaly *a) {
    switch (a->kind) {
    case AN_STARTS_AFTER_SYN:
        LIT(b, "capture starts after the SYN");
        break;
    case AN_SECOND_ISN:
        buf_puts(b, ROLES[a->role]);
        LIT(b, " sent a SYN with a second ISN");
        break;
    case AN_SECOND_FIN:
        buf_puts(b, ROLES[a->role]);
        LIT(b, " sent a second FIN elsewhere");
        break;
    case AN_FORBIDDEN: {
        const char *name = machine.event_names[a->event];  /* "snd FIN": verb, then what */
        buf_puts(b, ROLES[a->role]);
        buf_puts(b, a->event <= EV_SND_RST ? " sent " : " received ");
        buf_puts(b, strchr(name, ' ') + 1);
        LIT(b, " in ");
        put_state(b, a->state);
        break;
    }
    case AN_THIRD_ACK_IGNORED:
        buf_puts(b, ROLES[a->role]);
        LIT(b, " resent its SYN-ACK after the ACK of it: third ACK ignored (accept queue full?)");
        break;
    case AN_RST_IGNORED:
        LIT(b, "RST to the ");
        buf_puts(b, ROLES[a->role]);
        LIT(b, " in ");
        put_state(b, a->state);
        LIT(b, " is not acceptable: ignored (a possible blind reset, RFC 5961)");
        break;
    case AN_LATE_SYN:
        LIT(b, "SYN captured after its SYN,ACK");
        break;
    default:
        LIT(b, "RST not acceptable to the ");
        buf_puts(b, ROLES[a->role]);
        LIT(b, " in ");
        put_state(b, a->state);
    }
}

/* "anomaly_counts": {"<what>": count, ...}, every kind in order of first sight (report.record). */
static void json_anomaly_counts(Buffer *b, const Conn *c) {
    LIT(b, ", \"anomaly_counts\": {");
    for (uint32_t i = 0; i < c->n_kinds; i++) {
        const AnomalyKind *k = &c->kinds[i];
        Anomaly a = {0, k->kind, k->role, k->event, k->state};
        if (i) buf_put(b, ", ", 2);
        buf_putc(b, '"');
        anomaly_text(b, &a);
        LIT(b, "\": ");
        buf_int(b, k->count);
    }
    buf_putc(b, '}');
}

/* ---- JSON ------------------------------------------------------------------------------ */

static void json_str(Buffer *b, const char *s) {
    buf_putc(b, '"');
    buf_puts(b, s);
    buf_putc(b, '"');
}

static void json_opt_str(Buffer *b, const char *s) {
    if (s) json_str(b, s);
    else LIT(b, "null");
}

static void json_bool(Buffer *b, int v) { buf_puts(b, v ? "true" : "false"); }

static int json_history(Buffer *b, const History *h) {
    buf_putc(b, '[');
    for (uint32_t i = 0; i < h->count; i++) {
        const Transition *t = &h->items[i];
        if (i) buf_put(b, ", ", 2);
        buf_put(b, "[\"", 2);
        put_state(b, t->state);
        buf_put(b, "\", ", 3);
        if (buf_float(b, t->ts)) return -1;
        buf_put(b, ", ", 2);
        if (t->frame < 0) LIT(b, "null");
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
        else LIT(b, "true");
    }
    buf_putc(b, '}');
}

static void json_pair(Buffer *b, const char *key, int64_t client, int64_t server) {
    buf_puts(b, key);
    LIT(b, "{\"client\": ");
    buf_int(b, client);
    LIT(b, ", \"server\": ");
    buf_int(b, server);
    buf_putc(b, '}');
}

/* ---- timing figures (report.handshake_rtt, final_age, state_time) ------------------------ */

/* Seconds in each state, in order of first visit: summed visit by visit in history
 * order, the last visit until `until`, as report.state_time does (same doubles). */
typedef struct {
    uint8_t n, order[N_STATES];
    uint32_t seen;  /* bit per state visited */
    double total[N_STATES];
} StateTime;

static void state_time(const History *h, double until, StateTime *out) {
    uint32_t seen = 0;
    out->n = 0;
    for (uint32_t i = 0; i < h->count; i++) {
        uint8_t state = h->items[i].state;
        double stop = i + 1 < h->count ? h->items[i + 1].ts : until;
        if (state >= N_STATES) continue;  /* never: states come from the machine's tables */
        if (!((seen >> state) & 1u)) {
            seen |= 1u << state;
            out->order[out->n++] = state;
            out->total[state] = 0.0;
        }
        out->total[state] += stop - h->items[i].ts;
    }
    out->seen = seen;
}

/* Whether the record has a handshake RTT: a three-way handshake, all three segments noted. */
static int has_handshake_rtt(const Conn *c, const Labels *l) {
    return l->open == OPEN_LABELS[0] && c->hs_stage == HS_ACK;
}

static int json_timing(Buffer *b, const Conn *c, const Labels *l) {
    LIT(b, ", \"handshake_rtt\": ");
    if (has_handshake_rtt(c, l)) {
        LIT(b, "{\"server\": ");
        if (buf_round6(b, c->hs_ts[1] - c->hs_ts[0])) return -1;
        LIT(b, ", \"client\": ");
        if (buf_round6(b, c->hs_ts[2] - c->hs_ts[1])) return -1;
        LIT(b, ", \"total\": ");
        if (buf_round6(b, c->hs_ts[2] - c->hs_ts[0])) return -1;
        buf_putc(b, '}');
    } else {
        LIT(b, "null");
    }
    LIT(b, ", \"final_age\": {");
    for (int role = 0; role < 2; role++) {
        const History *h = &c->ep[role].history;
        buf_puts(b, role ? ", \"server\": " : "\"client\": ");
        if (h->count == 0) LIT(b, "null");
        else if (buf_round6(b, c->finished_at - h->items[h->count - 1].ts)) return -1;
    }
    LIT(b, "}, \"state_time\": {");
    for (int role = 0; role < 2; role++) {
        StateTime times;
        state_time(&c->ep[role].history, c->finished_at, &times);
        buf_puts(b, role ? "}, \"server\": {" : "\"client\": {");
        for (int i = 0; i < times.n; i++) {
            if (i) buf_put(b, ", ", 2);
            buf_putc(b, '"');
            put_state(b, times.order[i]);
            buf_put(b, "\": ", 3);
            if (buf_round6(b, times.total[times.order[i]])) return -1;
        }
    }
    buf_put(b, "}}", 2);
    return 0;
}

static int csv_seconds(Buffer *b, int present, double secs) {
    buf_putc(b, ',');
    return present ? buf_round6(b, secs) : 0;
}

static int csv_timing(Buffer *b, const Conn *c, const Labels *l) {
    int rtt = has_handshake_rtt(c, l);
    if (csv_seconds(b, rtt, c->hs_ts[2] - c->hs_ts[0]) || csv_seconds(b, rtt, c->hs_ts[1] - c->hs_ts[0]) ||
        csv_seconds(b, rtt, c->hs_ts[2] - c->hs_ts[1]))
        return -1;
    for (int role = 0; role < 2; role++) {
        const History *h = &c->ep[role].history;
        double last = h->count ? h->items[h->count - 1].ts : 0.0;
        if (csv_seconds(b, h->count != 0, c->finished_at - last)) return -1;
    }
    for (int role = 0; role < 2; role++) {
        StateTime times;
        state_time(&c->ep[role].history, c->finished_at, &times);
        for (uint8_t state = 0; state < N_STATES; state++)
            if (csv_seconds(b, (times.seen >> state) & 1u, times.total[state])) return -1;
    }
    return 0;
}

static int write_json(Buffer *b, const Conn *c, const Labels *l, const OutputStyle *style) {
    const Endpoint *client = &c->ep[ROLE_CLIENT], *server = &c->ep[ROLE_SERVER];
    LIT(b, "{\"id\": ");
    buf_int(b, c->id);
    LIT(b, ", \"client\": \"");
    endpoint_name(b, client, c->ip_version);
    LIT(b, "\", \"server\": \"");
    endpoint_name(b, server, c->ip_version);
    LIT(b, "\", \"ip_version\": ");
    buf_int(b, c->ip_version);
    LIT(b, ", \"first_frame\": ");
    buf_int(b, c->first_frame);
    LIT(b, ", \"last_frame\": ");
    buf_int(b, c->last_frame);
    LIT(b, ", \"start\": ");
    if (buf_float(b, c->start)) return -1;
    LIT(b, ", \"end\": ");
    if (buf_float(b, c->end)) return -1;
    LIT(b, ", \"open\": ");
    json_str(b, l->open);
    LIT(b, ", \"close\": ");
    json_str(b, l->close);
    LIT(b, ", \"half_close\": ");
    json_bool(b, c->half_close);
    LIT(b, ", \"active_closer\": ");
    json_opt_str(b, l->active_closer);
    LIT(b, ", \"reset_by\": ");
    json_opt_str(b, c->has_reset ? ROLES[c->reset_role] : NULL);
    LIT(b, ", \"reset_state\": ");
    json_opt_str(b, c->has_reset ? machine.state_names[c->reset_state] : NULL);
    LIT(b, ", \"roles_inferred\": ");
    json_bool(b, c->roles_inferred);
    LIT(b, ", \"states\": {\"client\": ");
    if (json_history(b, &client->history)) return -1;
    LIT(b, ", \"server\": ");
    if (json_history(b, &server->history)) return -1;
    LIT(b, "}, \"final\": {\"client\": ");
    json_str(b, machine.state_names[client->state]);
    LIT(b, ", \"server\": ");
    json_str(b, machine.state_names[server->state]);
    LIT(b, "}, \"retransmits\": {\"syn\": ");
    buf_int(b, c->retransmits[0]);
    LIT(b, ", \"synack\": ");
    buf_int(b, c->retransmits[1]);
    LIT(b, ", \"fin\": ");
    buf_int(b, c->retransmits[2]);
    LIT(b, "}, \"keepalives\": ");
    buf_int(b, c->keepalives);
    LIT(b, ", \"syn_data\": ");
    json_bool(b, c->syn_data);
    json_pair(b, ", \"packets\": ", client->packets, server->packets);
    json_pair(b, ", \"payload_bytes\": ", client->payload_bytes, server->payload_bytes);
    LIT(b, ", \"options\": {\"client\": ");
    json_options(b, &client->options);
    LIT(b, ", \"server\": ");
    json_options(b, &server->options);
    LIT(b, "}, \"anomalies\": [");
    for (uint32_t i = 0; i < c->n_anomalies; i++) {
        if (i) buf_put(b, ", ", 2);
        LIT(b, "{\"frame\": ");
        buf_int(b, c->anomalies[i].frame);
        LIT(b, ", \"what\": \"");
        anomaly_text(b, &c->anomalies[i]);
        LIT(b, "\"}");
    }
    buf_putc(b, ']');
    if (json_timing(b, c, l)) return -1;
    LIT(b, ", \"tunnel\": ");
    json_opt_str(b, c->tunnel);
    LIT(b, ", \"vlan\": ");
    if (c->key.vlan == 0) {
        LIT(b, "null");
    } else {
        buf_putc(b, '[');
        buf_int(b, c->key.vlan >> 16);
        if (c->key.vlan & 0xFFFF) {
            LIT(b, ", ");
            buf_int(b, c->key.vlan & 0xFFFF);
        }
        buf_putc(b, ']');
    }
    json_anomaly_counts(b, c);
    LIT(b, ", \"unseen\": ");
    json_opt_str(b, c->unseen ? ROLES[c->unseen - 1] : NULL);
    if (style->capture) {
        LIT(b, ", \"capture\": ");
        buf_put(b, style->capture, style->capture_len);
    }
    buf_put(b, "}\n", 2);
    return 0;
}

/* ---- CSV (report.CSV_FIELDS, as csv.DictWriter writes them) ------------------------------- */

static void csv_states(Buffer *b, const History *h) {
    for (uint32_t i = 0; i < h->count; i++) {
        if (i) buf_put(b, " > ", 3);
        put_state(b, h->items[i].state);
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

/* The CSV row's head: its cells up to final_server (records.py reads these without parsing the JSON). */
static int csv_head(Buffer *b, const Conn *c, const Labels *l, const OutputStyle *style) {
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
    return 0;
}

static int write_csv(Buffer *b, const Conn *c, const Labels *l, const OutputStyle *style) {
    const Endpoint *client = &c->ep[ROLE_CLIENT], *server = &c->ep[ROLE_SERVER];
    if (csv_head(b, c, l, style)) return -1;
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
    csv_int(b, c->anomalies_total);  /* all of them, not only those listed */
    if (csv_timing(b, c, l)) return -1;
    csv_text(b, c->tunnel);
    buf_putc(b, ',');
    if (c->key.vlan) buf_int(b, c->key.vlan >> 16);
    if (c->key.vlan & 0xFFFF) {
        buf_putc(b, '/');
        buf_int(b, c->key.vlan & 0xFFFF);
    }
    csv_text(b, c->unseen ? ROLES[c->unseen - 1] : NULL);
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
        LIT(b, "\x1b[");
        buf_puts(b, colour);
        buf_putc(b, 'm');
    }
    if (COLUMNS[index].right)
        for (size_t i = 0; i < pad; i++) buf_putc(b, ' ');
    buf_put(b, text, len);
    if (!COLUMNS[index].right)
        for (size_t i = 0; i < pad; i++) buf_putc(b, ' ');
    if (colour) LIT(b, "\x1b[0m");
}

static inline int in_gone(uint8_t state) { return state == ST_CLOSED || state == ST_LISTEN; }

static int write_table_row(Buffer *b, const Conn *c, const Labels *l, const OutputStyle *style) {
    const Endpoint *client = &c->ep[ROLE_CLIENT], *server = &c->ep[ROLE_SERVER];
    char text[96];
    Buffer name = {0};
    int len = snprintf(text, sizeof text, "%lld", (long long)c->id);
    cell(b, 0, text, fitted(len, sizeof text), NULL);
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
    len = c->has_reset ? snprintf(text, sizeof text, "%s@%s", ROLES[c->reset_role],
                                  machine.state_names[c->reset_state]) : 0;
    cell(b, 7, text, fitted(len, sizeof text), NULL);
    len = snprintf(text, sizeof text, "%s/%s", machine.state_names[client->state],
                   machine.state_names[server->state]);
    cell(b, 8, text, fitted(len, sizeof text), NULL);
    char secs[320];  /* "%.3f+" of any double: at most 309 digits, a sign, a point, 3 decimals, "+" or " " */
    /* report._secs: first to last segment once both ends are gone; else to when it was finished, "+" */
    int gone = in_gone(client->state) && in_gone(server->state);
    len = gone ? snprintf(secs, sizeof secs, "%.3f ", c->end - c->start)
               : snprintf(secs, sizeof secs, "%.3f+", c->finished_at - c->start);
    cell(b, 9, secs, fitted(len, sizeof secs), NULL);
    len = snprintf(text, sizeof text, "%lld", (long long)(client->packets + server->packets));
    cell(b, 10, text, fitted(len, sizeof text), NULL);
    while (b->len && b->data[b->len - 1] == ' ') b->len--;  /* _line(...).rstrip() */
    buf_putc(b, '\n');
    return 0;
}

/* FORMAT_RECORDS: the CSV row's head (up to final_server), then the JSON line (the capture in neither). */
static int write_both(Buffer *b, const Conn *c, const Labels *labels) {
    const OutputStyle plain = {0};
    if (csv_head(b, c, labels, &plain)) return -1;
    buf_putc(b, '\n');
    return write_json(b, c, labels, &plain);
}

/* FORMAT_CENSUS, for synfin report (analyzer/columns.py, which makes the same columns from JSON records):
 * what the census of states over time and the findings read, as three lines that numpy parses a piece at a
 * time, integers only (numpy parses a decimal fraction several times slower than an integer).
 * 1: the server endpoint.
 * 2: id, first_frame, last_frame, start, end; the open and close labels (their index in OPEN_LABELS,
 *    CLOSE_LABELS), the resetting role and its state (-1: no reset), the final states of client and
 *    server; the SYN, SYN-ACK and FIN retransmissions, keepalives, the handshake RTT's total (0.0: none),
 *    the final ages of client and server (0.0: no transition), the frame of the first listed "third ACK
 *    ignored" anomaly (0: none), the number of client and server transitions.
 * 3: each transition (client's, then server's) as two integers: (frame + 1) * 16 + its state's index
 *    (frame -1: a timer), and its time.
 * A time or duration is written as the bits of the double that Python reads from the JSON record's text
 * (int64, decimal), so both engines' columns hold the very same floats; a state is its index in
 * machine.state_names (fsm.State). */
static void census_int(Buffer *b, int64_t v) {
    buf_putc(b, ' ');
    buf_int(b, v);
}

static void census_bits(Buffer *b, double x) {
    int64_t bits;
    memcpy(&bits, &x, sizeof bits);
    census_int(b, bits);
}

/* The double that Python parses from buf_round6's text (glibc's strtod rounds correctly, as Python's). */
static int census_round6(Buffer *b, double x) {
    Buffer text = {0};
    int failed = buf_round6(&text, x) || buf_reserve(&text, 1);
    if (!failed) {
        text.data[text.len] = '\0';
        census_bits(b, strtod(text.data, NULL));
    }
    free(text.data);
    return failed ? -1 : 0;
}

static int label_index(const char *const *labels, int count, const char *label) {
    for (int i = 0; i < count; i++)
        if (labels[i] == label) return i;
    return -1;
}

static void census_transitions(Buffer *b, const History *h, int *first) {
    for (uint32_t i = 0; i < h->count; i++) {
        const Transition *t = &h->items[i];
        if (!*first) buf_putc(b, ' ');
        *first = 0;
        buf_int(b, ((t->frame < 0 ? -1 : t->frame) + 1) * 16 + t->state);
        census_bits(b, t->ts);
    }
}

static int write_census(Buffer *b, const Conn *c, const Labels *l) {
    const Endpoint *client = &c->ep[ROLE_CLIENT], *server = &c->ep[ROLE_SERVER];
    endpoint_name(b, server, c->ip_version);
    buf_putc(b, '\n');
    buf_int(b, c->id);
    census_int(b, c->first_frame);
    census_int(b, c->last_frame);
    census_bits(b, c->start);
    census_bits(b, c->end);
    census_int(b, label_index(OPEN_LABELS, 6, l->open));
    census_int(b, label_index(CLOSE_LABELS, 7, l->close));
    census_int(b, c->has_reset ? c->reset_role : -1);
    census_int(b, c->has_reset ? c->reset_state : -1);
    census_int(b, client->state);
    census_int(b, server->state);
    for (int i = 0; i < 3; i++) census_int(b, c->retransmits[i]);
    census_int(b, c->keepalives);
    if (!has_handshake_rtt(c, l)) census_bits(b, 0.0);
    else if (census_round6(b, c->hs_ts[2] - c->hs_ts[0])) return -1;
    for (int role = 0; role < 2; role++) {
        const History *h = &c->ep[role].history;
        if (h->count == 0) census_bits(b, 0.0);
        else if (census_round6(b, c->finished_at - h->items[h->count - 1].ts)) return -1;
    }
    int64_t overflow = 0;
    for (uint32_t i = 0; i < c->n_anomalies && !overflow; i++)
        if (c->anomalies[i].kind == AN_THIRD_ACK_IGNORED) overflow = c->anomalies[i].frame;
    census_int(b, overflow);
    census_int(b, client->history.count);
    census_int(b, server->history.count);
    buf_putc(b, '\n');
    int first = 1;
    census_transitions(b, &client->history, &first);
    census_transitions(b, &server->history, &first);
    buf_putc(b, '\n');
    return 0;
}

void server_name(Buffer *b, const Conn *c) { endpoint_name(b, &c->ep[ROLE_SERVER], c->ip_version); }

int write_record(Buffer *b, const Conn *c, const Labels *labels, const OutputStyle *style) {
    if (style->format == FORMAT_RECORDS) return write_both(b, c, labels);
    if (style->format == FORMAT_CENSUS) return write_census(b, c, labels);
    if (style->format == FORMAT_JSON) return write_json(b, c, labels, style);
    if (style->format == FORMAT_CSV) return write_csv(b, c, labels, style);
    return write_table_row(b, c, labels, style);
}
