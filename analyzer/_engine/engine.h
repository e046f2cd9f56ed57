/* synfin's compiled engine: the same pipeline as the Python reference, in C.
 *
 *   reader.c   capture file -> frames (pcap, pcapng), like capture.py
 *   decode.c   frame -> TCP segment or a skip reason, like decode.py
 *   feeder.c   both, in batches, on a thread of their own; the frame counts
 *   conn.c     segments -> two endpoint machines and labels, like connection.py/labels.py
 *   tracker.c  4-tuple table, port reuse, packet-time expiry, like tracker.py
 *   sink.c     finished connections -> labels, census, output (on a second thread)
 *   output.c   one connection -> a JSON Lines / CSV / table row, like report.py
 *   module.c   the Python module: tables from fsm.py in, counts out; the main loop
 *
 * Three threads: the feeder reads and decodes, the caller's thread tracks
 * connections and runs their machines (the part that must see packets in
 * order), the sink formats and writes. They meet at bounded queues, so memory
 * is a few batches plus the open connections.
 *
 * The state machine itself is not written here. module.c receives it from
 * analyzer/fsm.py as tables (fsm.step, fsm.send_events and fsm.receive_events
 * evaluated on every input), so the two paths run one set of TCP rules.
 */
#ifndef SYNFIN_ENGINE_H
#define SYNFIN_ENGINE_H

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#ifdef __linux__
#include <sys/prctl.h>
#endif

/* Name the calling thread (as `top -H`, `ps -L` and perf show it), where the system can. */
static inline void name_this_thread(const char *name) {
#ifdef __linux__
    prctl(PR_SET_NAME, name, 0, 0, 0);
#else
    (void)name;
#endif
}

/* ---- growable arrays ------------------------------------------------------ */
/* `items`, holding *cap, reallocated for twice as many (`first` when empty);
 * NULL, and nothing changed, when out of memory. */
static inline void *grown(void *items, size_t *cap, size_t size, size_t first) {
    /* Doubling that would overflow size_t (in the count or in bytes) fails as malloc does. */
    if (size == 0 || *cap > SIZE_MAX / 2 / size) return NULL;
    size_t more = *cap ? *cap * 2 : first;
    if (more > SIZE_MAX / size) return NULL;
    void *bigger = realloc(items, more * size);
    if (bigger != NULL) *cap = more;
    return bigger;
}

/* ---- the state machine, as received from fsm.py ------------------------ */
enum { N_STATES = 11, N_EVENTS = 13, NO_STATE = 255, MAX_EVENTS = 3 };
/* State and Event indices follow the declaration order of the Python enums. */
enum { ST_CLOSED, ST_LISTEN, ST_SYN_SENT, ST_SYN_RCVD, ST_ESTABLISHED, ST_FIN_WAIT_1,
       ST_FIN_WAIT_2, ST_CLOSE_WAIT, ST_CLOSING, ST_LAST_ACK, ST_TIME_WAIT };
enum { EV_SND_SYN, EV_SND_SYNACK, EV_SND_ACK, EV_SND_FIN, EV_SND_RST, EV_RCV_SYN, EV_RCV_SYNACK,
       EV_RCV_ACK_OF_SYN, EV_RCV_FIN, EV_RCV_FIN_ACK, EV_RCV_ACK_OF_FIN, EV_RCV_RST, EV_TIMEOUT_2MSL };

typedef struct {
    uint8_t step[2][N_STATES][N_EVENTS];   /* [passive][state][event] -> state or NO_STATE */
    uint8_t send[16][MAX_EVENTS + 1];      /* [syn|ack<<1|fin<<2|rst<<3] -> count, events... */
    uint8_t receive[32][MAX_EVENTS + 1];   /* [syn|fin<<1|rst<<2|acks_syn<<3|acks_fin<<4] */
    uint16_t synchronized;                 /* bit per state: fsm.SYNCHRONIZED */
    char state_names[N_STATES][16];
    uint8_t state_name_lengths[N_STATES];
    char event_names[N_EVENTS][24];        /* str(Event), e.g. "rcv FIN, ACK of FIN" */
} Machine;

extern Machine machine;

/* ---- TCP flags ---------------------------------------------------------- */
enum { F_FIN = 0x01, F_SYN = 0x02, F_RST = 0x04, F_ACK = 0x10 };

/* ---- frames and segments ----------------------------------------------- */
typedef struct {
    int64_t number;
    double ts;
    uint32_t linktype;
    const uint8_t *data;
    uint32_t caplen;
    uint32_t wire_len;
} Frame;

enum { OPT_MSS, OPT_WSCALE, OPT_SACK, OPT_TIMESTAMPS, OPT_FASTOPEN, N_OPTS };

typedef struct {          /* the SYN options, in the order they first appeared */
    uint8_t count;
    uint8_t order[N_OPTS];
    uint16_t value[N_OPTS];
} Options;

typedef struct {  /* the bidirectional 4-tuple, lower (address, port) first; the VLANs and the virtual network */
    uint8_t a[16], b[16];
    uint16_t pa, pb;
    uint8_t v, pad[3];
    uint32_t vlan;    /* the first two VLAN ids met, outer << 16 | inner (0: none; tracker.py's key) */
    uint32_t vni;     /* the innermost VXLAN/Geneve network id + 1 (0: none) */
} Key;

typedef struct {
    int64_t frame;
    double ts;
    uint8_t ip_version;
    uint8_t flags;
    uint8_t has_options;
    uint8_t src[16], dst[16];
    uint16_t sport, dport;
    uint32_t seq, ack;
    int64_t payload_len;
    Options options;
    Key key;          /* set by packet_key() */
    uint32_t hash;
    uint32_t vlan, vni;   /* as in Key */
    uint32_t kinds;       /* a bit per kind of encapsulation gone through (layers.KIND_BIT), 0: none */
    const char *tunnel;   /* the encapsulations as text (the batch's: feeder.c), NULL: none */
    uint32_t tunnel_at;   /* feeder.c: where in its batch's texts, + 1 (0: none), until the batch is full */
} Packet;

/* What a connection keeps of a segment it has sent but not yet delivered. */
typedef struct {
    int64_t frame;
    double ts;
    uint32_t seq, ack;
    uint32_t payload_len;  /* at most an IP packet's length (decode.c: never negative) */
    uint8_t flags;
} Seg;

/* 16-byte addresses, compared as two words (memcmp's order: big-endian words) */
static inline int addr_equal(const uint8_t *x, const uint8_t *y) {
    uint64_t a[2], b[2];
    __builtin_memcpy(a, x, 16);
    __builtin_memcpy(b, y, 16);
    return ((a[0] ^ b[0]) | (a[1] ^ b[1])) == 0;
}

static inline int addr_compare(const uint8_t *x, const uint8_t *y) {
    uint64_t a[2], b[2];
    __builtin_memcpy(a, x, 16);
    __builtin_memcpy(b, y, 16);
    for (int i = 0; i < 2; i++) {
        uint64_t p = __builtin_bswap64(a[i]), q = __builtin_bswap64(b[i]);
        if (p != q) return p < q ? -1 : 1;
    }
    return 0;
}

/* decode.c: 0 and a filled packet, or 1 and a reason (malformed or not). `text` (TUNNEL_TEXT_MAX
 * bytes) receives the tunnel's text, which p->tunnel then points at. */
typedef struct { char reason[112]; int malformed; } Skip;
#define MAX_LAYERS 8          /* layers.MAX_LAYERS */
#define LAYER_TEXT_MAX 128    /* one layer's text (the longest is about 115 characters) */
#define TUNNEL_TEXT_MAX (MAX_LAYERS * (LAYER_TEXT_MAX + 3))
#define N_TUNNEL_KINDS 16     /* layers.TUNNEL_KINDS */
extern const char *const TUNNEL_KINDS[N_TUNNEL_KINDS];
int decode_frame(const Frame *frame, Packet *out, Skip *skip, char *text);
size_t ipv6_chars(char *out, const uint8_t *a);  /* output.c: the address as Python writes it (46 bytes) */
const char *linktype_name(uint32_t linktype, char *buf, size_t size);
/* decode.LINKTYPE_NAMES, for configure(): 0, 1 if the name is longer than LINKTYPE_NAME_MAX, -1 out of memory */
#define LINKTYPE_NAME_MAX 64
int set_linktype_name(uint32_t linktype, const char *name);
void clear_linktype_names(void);

/* ---- connections -------------------------------------------------------- */
typedef struct { int64_t frame; double ts; uint8_t state; } Transition;  /* frame -1: a timer */

#define INLINE_HISTORY 6  /* an active closer: SYN_SENT ... TIME_WAIT, CLOSED */
#define INLINE_UNRECEIVED 2
typedef struct {
    uint32_t count, capacity;
    Transition *items;                       /* points at inline_items until it grows */
    Transition inline_items[INLINE_HISTORY];
} History;

typedef struct {
    uint32_t count, capacity;
    Seg *items;
    Seg inline_items[INLINE_UNRECEIVED];
} SegQueue;

typedef struct {
    uint8_t addr[16];
    uint16_t port;
    uint8_t state, passive, sent_synack, syn_acked, fin_acked;
    uint8_t has_isn, has_fin, has_snd_nxt, has_time_wait, has_data_after_peer_fin, has_ack_sent;
    uint32_t isn, syn_end, fin_seq, snd_nxt, data_after_peer_fin;
    uint32_t ack_sent;       /* highest ACK field sent (has_ack_sent): its rcv.nxt was at least this */
    int64_t last_sent_frame;
    double last_sent_ts;     /* when it last sent (a keep-alive follows quiet) */
    double time_wait_until;
    int64_t packets, payload_bytes;
    Options options;
    History history;
    SegQueue unreceived;
} Endpoint;

enum { ROLE_CLIENT, ROLE_SERVER };
enum { HS_NONE, HS_SYN, HS_SYNACK, HS_ACK };  /* Conn.hs_stage */
enum { AN_STARTS_AFTER_SYN, AN_SECOND_ISN, AN_SECOND_FIN, AN_FORBIDDEN, AN_RST_NOT_ACCEPTABLE, AN_RST_IGNORED,
       AN_THIRD_ACK_IGNORED, AN_LATE_SYN, N_ANOMALY_KINDS };
typedef struct { int64_t frame; uint8_t kind, role, event, state; } Anomaly;
/* An anomaly's kind (the sentence it prints: kind, role, event, state) and how many there were of it.
 * Only the first ANOMALY_EXAMPLES of each kind are kept in Conn.anomalies (connection.ANOMALY_EXAMPLES). */
typedef struct { int64_t count; uint8_t kind, role, event, state; } AnomalyKind;
#define ANOMALY_EXAMPLES 5

typedef struct {
    double msl, idle, handshake, close_linger;
} Timeouts;

typedef struct Conn {
    int64_t id;
    Key key;
    uint32_t hash, slot;
    uint8_t ip_version, roles_inferred;
    uint8_t syn_data, bare_syn[2], synack_seen, fin_order[2], n_fins;
    uint8_t has_reset, reset_role, reset_state, aborted, second_fin_acks_first, half_close;
    uint8_t out_of_memory;   /* a history, queue or anomaly list could not grow */
    uint8_t in_handshake;    /* counted in the tracker's in_handshake (tracker.c) */
    uint8_t hs_stage;        /* the handshake noted so far: HS_NONE ... HS_ACK (connection.py) */
    int64_t first_frame, last_frame;
    double start, end, last_ts, scheduled;
    int64_t retransmits[3];  /* syn, synack, fin */
    int64_t keepalives;
    Endpoint ep[2];          /* [ROLE_CLIENT], [ROLE_SERVER] */
    uint32_t n_anomalies, cap_anomalies;
    Anomaly *anomalies;      /* the first ANOMALY_EXAMPLES of each kind */
    uint32_t n_kinds, cap_kinds;
    AnomalyKind *kinds;      /* every kind seen, in order of first sight, with its count */
    int64_t anomalies_total; /* all anomalies, listed or not */
    const Timeouts *timeouts;
    /* last, out of the way of the fields every segment reads (a handshake's three segments write them) */
    double hs_ts[3];         /* [HS_SYN - 1]: the last SYN, [HS_SYNACK - 1]: the last SYN,ACK, [HS_ACK - 1] */
    double finished_at;      /* packet time the tracker finished it at: a timer, a reuse, the capture's end */
    char *tunnel;            /* the first packet's encapsulations (malloc'd), NULL: none */
    int64_t awaited_frame;   /* the waiting server's last client segment acknowledging its SYN (0: none) */
    double awaited_ts;
    uint8_t awaiting;        /* 1 + the role of a server whose third ACK did not take (0: none; connection.py) */
    int64_t reused_frame;    /* the new SYN that reused its 4-tuple (0: none): TIME_WAIT ends there */
    double reused_ts;
    /* what a passive observer infers (connection.py: unseen, isn_inferred, ack_hi, fin_hint) */
    uint8_t unseen;          /* 0: none; 1 + the role whose segments were only inferred */
    uint8_t isn_inferred, has_ack_hi, has_fin_hint;
    uint32_t ack_hi;
    Seg fin_hint;
    uint8_t finished;        /* conn_finish has run (live.c finishes it before the sink does) */
    /* what events.c has announced of it (events.py's _Seen): history entries, open, close and its labels */
    uint8_t told_open, told_close, told_half_close, told_reset, told_reset_state;  /* told_reset: 1 + role */
    uint32_t told_states[2];
    const char *told_labels[3];  /* open, close, active_closer (Labels) */
    /* where the tracker retired it (parallel.py's merge puts records from several runs in the order one run
     * writes them): the frame being tracked then, how (RETIRED_*), the heap entry's wake time (the reusing
     * SYN's time), and the tracker's packet time before that frame and the frame's own time */
    int64_t retired_frame;
    double retired_when, retired_before, retired_ts;
    uint8_t retired_how;
} Conn;

/* How a connection was retired, in the order a run does it at one frame: a tick to the packet time before
 * the frame (replay only: the timers of frames left out), the frame's own timers, a SYN reusing its
 * 4-tuple; after every frame, the timers run to the set's end (replay only), then the flush. */
enum { RETIRED_BEFORE, RETIRED_TIMER, RETIRED_REUSE, RETIRED_END, RETIRED_FLUSH };

typedef struct {  /* the labels of a finished connection (labels.py) */
    const char *open, *close, *active_closer;  /* active_closer NULL: none */
} Labels;

extern const char *const OPEN_LABELS[];
extern const char *const CLOSE_LABELS[];

int conn_init(Conn *c, int64_t id, const Packet *first, const Timeouts *timeouts);
void conn_free(Conn *c);
int conn_add(Conn *c, const Packet *p);
void conn_advance(Conn *c, double now);
double conn_wake_time(const Conn *c);
int conn_starts_anew(const Conn *c, const Packet *p);
int conn_finish(Conn *c);
void conn_labels(const Conn *c, Labels *out);

/* ---- the tracker -------------------------------------------------------- */
typedef int (*FinishedFn)(void *ctx, Conn *c);  /* takes ownership of c; nonzero: stop with an error */
typedef Conn *(*NewConnFn)(void *ctx);          /* memory for a new connection; NULL: none */

/* An open connection as the tracker's table, slots and heap name it: a Conn *,
 * or, with bit 0 set, a HalfOpen * (tracker.c: a connection that has seen only
 * its first packet, a bare SYN, kept compact until a second packet comes or it
 * must finish). 0: none. */
typedef uintptr_t Ref;
typedef struct HalfOpen HalfOpen;

typedef struct {
    double when;
    int64_t id;
    uint32_t slot;
} WakeEntry;

typedef struct {
    uint32_t hash;
    Ref ref;  /* 0: empty */
} Entry;

typedef struct {  /* where HalfOpen records live: slabs, and a free list through the records */
    void **slabs;
    size_t n_slabs, cap_slabs, left;
    char *next;
    HalfOpen *free;
} HalfOpenPool;

typedef struct {
    Timeouts timeouts;
    int half_open;  /* keep bare SYNs compact (tracker_init checks that the machine allows it) */
    Entry *table;  /* the open connections, by 4-tuple */
    size_t table_size, open_count;
    /* slots: connections by number (heap entries name them so), reused through a free list */
    Ref *slots;
    uint32_t *free_slots;
    size_t n_slots, n_free, cap_slots;
    WakeEntry *heap;
    size_t heap_len, heap_cap;
    int64_t prefetched_id;  /* the head of the heap when its connection was last prefetched */
    int64_t next_id;
    int64_t last_id;  /* the connection tracker_add's last packet went to (collect.c) */
    Conn *last_conn;  /* ... that connection, unless it is still a HalfOpen record (then NULL) */
    double last_ts;   /* the latest packet time added: the flush's (a live tick may have moved `now` past it) */
    double now;
    HalfOpenPool pool;
    size_t in_handshake;  /* open connections waiting on the handshake timeout (records too) */
    Conn *spare;    /* a Conn made a record again, for the next replay (sink memory) */
    /* the frame being tracked, for the connections it retires (Conn.retired_*) */
    int64_t at_frame;
    double at_before, at_ts;
    uint8_t at_how;
    double first_ts;  /* the first packet's time (NAN: none yet) */
    int frame_ids;    /* a connection's id is its first frame's number (parts.c's Merger), not a count */
    FinishedFn finished;
    NewConnFn new_conn;
    void *ctx;
} Tracker;

int tracker_init(Tracker *t, const Timeouts *timeouts, FinishedFn finished, NewConnFn new_conn, void *ctx);
void packet_key(Packet *p);
void tracker_prefetch(const Tracker *t, const Packet *p, int conn_too);
int tracker_add(Tracker *t, const Packet *p);
int tracker_flush(Tracker *t);
/* The same flush a few connections at a time (parts.c: the merge's end, written as it goes): begin empties
 * the table into `f` in order of id; each call of some hands over up to n (f->next == f->count: all);
 * end releases what was not handed over (after an error). */
typedef struct {
    Ref *in_order;  /* in order of id; 0: none there */
    size_t count, next;
} Flushing;
int tracker_flush_begin(Tracker *t, Flushing *f);
int tracker_flush_some(Tracker *t, Flushing *f, size_t n);
void tracker_flush_end(Tracker *t, Flushing *f);
/* Hand over every open connection to `take` instead of finishing it (a part's end: handover.c), in order of
 * id, as it is: a Conn or a half-open record (halfopen.h); the tracker releases it after. */
typedef int (*TakeFn)(void *ctx, Ref r);
int tracker_hand_over(Tracker *t, TakeFn take, void *ctx);
/* A connection another run handed over (handover.c), into the table with its timer; its id is its first
 * frame (frame_ids). 1: its key is held already (c untouched), -1: out of memory. */
int tracker_adopt(Tracker *t, Conn *c);
/* A half-open connection's record another run handed over, as tracker_adopt: 0, its later packets the
 * tracker's now; 1 or -1, still the caller's. */
int tracker_adopt_half(Tracker *t, const HalfOpen *record);
int tracker_tick(Tracker *t, double now);  /* no packet until `now` (live.c): finish what timed out by then */
/* Run the timers to packet time `now` as frame `frame` would (parts.c), retiring as `how`. */
int tracker_tick_as(Tracker *t, double now, int64_t frame, double before, double ts, uint8_t how);
void tracker_free(Tracker *t);

/* ---- output ------------------------------------------------------------- */
typedef struct {
    char *data;
    size_t len, cap;
    /* the digits of the last whole seconds written (a record's timestamps mostly share them) */
    uint64_t whole_plus_one;  /* 0: none yet */
    size_t whole_len;
    char whole_text[24];
} Buffer;

int buf_reserve(Buffer *b, size_t more);
int buf_float(Buffer *b, double x);       /* repr(x), as Python prints it */
int buf_round9(Buffer *b, double x);      /* repr(round(x, 9)) */
int buf_round6(Buffer *b, double x);      /* repr(round(x, 6)): the timing figures, in microseconds */
double round9(double x);                  /* round(x, 9), as Python rounds (events.c's durations) */
void buf_endpoint(Buffer *b, const Endpoint *ep, int ip_version);  /* report.endpoint_name, as the outputs write it */

extern int ipv4_mapped_dotted;  /* write ::ffff:a.b.c.d as this Python's ipaddress does (3.13+) */

/* FORMAT_RECORDS, for the Python API (analyzer/records.py): each connection as two lines, its CSV row
 * and its JSON line, from the same two writers. */
/* FORMAT_CENSUS, for synfin report (analyzer/columns.py): each connection as three lines of what the census
 * and the findings read (output.c, write_census). */
enum { FORMAT_JSON, FORMAT_CSV, FORMAT_TABLE, FORMAT_RECORDS, FORMAT_CENSUS };
typedef struct {
    int format, colour;
    const char *capture;       /* already quoted for the format, or NULL */
    size_t capture_len;
    int meta;                  /* each connection's line of facts for parallel.py first (sink.c write_meta) */
} OutputStyle;

int write_record(Buffer *b, const Conn *c, const Labels *labels, const OutputStyle *style);
void server_name(Buffer *b, const Conn *c);  /* "ip:port" of the server end, as the outputs write it */

#endif
