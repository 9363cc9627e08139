/*  =========================================================================
    qmsbench - load generator for the QMessageServer chat protocol

    Speaks only the public client protocol (docs: PROTOCOL.md), so it can be
    pointed at any compatible server. A minimal RFC 6455 client runs over
    non-blocking sockets, one epoll loop per thread, each thread owning every
    T-th client. Clients register (or log in when the name exists), learn ids
    from the user lists, then client i sends to client (i+1) % N with at most
    W messages in flight; the receiving client (same process) measures
    one-way latency, counts deliveries per sender, and detects loss and
    duplicates. One report at the end: a table and one "RESULT {json}" line.

    Layout, a file a part (qmsbench.h declares what they share: constants,
    options, clients, workers, statistics, the protocol table, and the
    clock, PRNG and histogram helpers that the hot path inlines):
        qmsbench.c      options; server process sampling (--pid); the main
                        thread (set-up, phases, progress); main
        qb_stats.c      histograms and count tables; totals and the report
        qb_json.c       JSON scanning
        qb_conn.c       the transport (TCP + WebSocket framing)
        qb_qms.c        the chat protocol layer (qms_*: open, login, build
                        message, parse event; a NATS layer replaces exactly
                        these), with user lookups and acks
        qb_nats.c       that NATS layer (--proto nats)
        qb_traffic.c    senders and receivers
        qb_worker.c     the worker loop

    The hot path allocates nothing: frames are built in a per-thread scratch
    buffer and only a partial write or a partial frame is kept in the
    connection's own buffer, which is sized once and grown rarely.
    ========================================================================= */

#define _GNU_SOURCE
#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <math.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <openssl/rand.h>

#include "qmsbench.h"

/* ------------------------------------------------------------------------ */
/*  State shared by the parts (declared in qmsbench.h) */

opts_t O;
const proto_t *P;
bool g_nats;                        /* --proto nats */
client_t *G_cl;
worker_t *G_w;
uint64_t G_rxbits;                  /* dedup window in sequence numbers (power of two) */
uint64_t G_tsring;                  /* --ids: send times kept per sender (power of two) */
int g_phase = PH_CONNECT;
int g_groups_go;                    /* --group-size: the owners may create their groups */
const char *qb_state_name [] = { "not-started", "connecting", "upgrading", "login", "online", "closed" };

static volatile sig_atomic_t g_signal;

/* ------------------------------------------------------------------------ */
/*  Server process sampling (--pid) */

static long
proc_rss_kib (int pid)
{
    char path [64], line [256];
    snprintf (path, sizeof path, "/proc/%d/status", pid);
    FILE *f = fopen (path, "r");
    if (!f)
        return -1;
    long kib = -1;
    while (fgets (line, sizeof line, f))
        if (strncmp (line, "VmRSS:", 6) == 0) {
            kib = strtol (line + 6, NULL, 10);
            break;
        }
    fclose (f);
    return kib;
}

/*  utime + stime in seconds, or -1. */
static double
proc_cpu_s (int pid)
{
    char path [64], buf [1024];
    snprintf (path, sizeof path, "/proc/%d/stat", pid);
    FILE *f = fopen (path, "r");
    if (!f)
        return -1;
    size_t n = fread (buf, 1, sizeof buf - 1, f);
    fclose (f);
    buf [n] = 0;
    char *p = strrchr (buf, ')');
    if (!p)
        return -1;
    unsigned long ut = 0, st = 0;
    /*  Fields after the command: state(3) ... utime(14) stime(15). */
    if (sscanf (p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &ut, &st) != 2)
        return -1;
    return (double) (ut + st) / (double) sysconf (_SC_CLK_TCK);
}

static procs_t
procs_sample (void)
{
    procs_t s = { 0, 0, O.npids > 0 };
    for (int i = 0; i < O.npids; i++) {
        long r = proc_rss_kib (O.pids [i]);
        double c = proc_cpu_s (O.pids [i]);
        if (r < 0 || c < 0)
            s.ok = false;
        else {
            s.rss += r;
            s.cpu += c;
        }
    }
    return s;
}

static double
self_cpu_s (void)
{
    struct rusage ru;
    getrusage (RUSAGE_SELF, &ru);
    return (double) ru.ru_utime.tv_sec + (double) ru.ru_utime.tv_usec / 1e6
         + (double) ru.ru_stime.tv_sec + (double) ru.ru_stime.tv_usec / 1e6;
}

/* ------------------------------------------------------------------------ */
/*  Option parsing */

static void
usage (FILE *f)
{
    fprintf (f,
"usage: qmsbench [options]\n"
"Load generator for the QMessageServer chat protocol (loopback targets only).\n"
"  --host H            server address: 127.x.x.x, localhost or ::1 (default 127.0.0.1)\n"
"  --port P[,P..]      chat WebSocket port(s); client i uses the (i %% n)-th (default 12345)\n"
"  --path P            WebSocket path (default /)\n"
"  --clients N         connections/users (default 10)\n"
"  --messages M        messages per client (default: run for --duration)\n"
"  --duration S        seconds of sending, or of holding with --idle (default 10)\n"
"  --window W          messages in flight per client (default 16)\n"
"  --ping-pong         one message in flight per client (--window 1)\n"
"  --rate R            total messages/s over all clients, 0 = as fast as the window allows\n"
"  --size B            message payload bytes (default 64)\n"
"  --prefix NAME       user names are NAME0..NAME<N-1> (default bench)\n"
"  --source-addrs LIST bind outgoing sockets to these local addresses, round robin\n"
"  --idle              connect, log in, then hold the connections for --duration\n"
"  --pid PID[,PID]     server process(es) to sample (RSS, CPU); repeatable\n"
"  --connect-rate C    new connections per second, 0 = unlimited (default 0)\n"
"  --max-pending K     handshakes + logins in flight at most (default 500)\n"
"  --max-auth A        register/login requests in flight at most (default 40 per source address)\n"
"  --threads T         event-loop threads (default 1)\n"
"  --timeout S         hard bound on the whole run (default 120)\n"
"  --ready-timeout S   stop waiting for logins after S seconds without progress (default 30)\n"
"  --handshake-timeout S  per-client connect+upgrade+login bound (default 60)\n"
"  --drain S           wait for stragglers after sending stops (default 2)\n"
"  --stall S           a window without progress for S seconds: presume lost (default 2)\n"
"  --backoff MS        a sender pauses this long after an error reply, e.g. a rate limit (default 100)\n"
"  --proto P           qms (default: the chat protocol) or nats (NATS over its WebSocket listener)\n"
"  --presence P        none (default: ids by UserLookupRequest), delta or full (the original lists)\n"
"  --ids               MessageRequests carry an id; acks are counted\n"
"  --to-prefix NAME    client i sends to NAME<i> (offline or elsewhere): --ids, window credit from acks\n"
"  --expect-stored M   receive only: log in, wait until each client got M messages, report the drain\n"
"  --resume            after the logins, reconnect everyone with AuthorizeRequest (session resume)\n"
"  --group-size N      fan-out: clients in groups of N consecutive ones (the first creates the\n"
"                      group; NATS: a subject the N subscribe to); each sends to its group,\n"
"                      the N-1 others receive; the window counts messages whose fan-out is\n"
"                      not complete (in deliveries); --clients must be a multiple of N\n"
"  --group-senders S   with --group-size: only the first S members of each group send (default all)\n"
"  --ready-file PATH   create PATH when every client is settled (logged in, or given up)\n"
"  --go-file PATH      once settled, wait until PATH exists before the run starts (nothing is\n"
"                      measured while waiting): several processes measure one window\n"
"  --done-file PATH    create PATH when the run is measured, then hold the connections until\n"
"                      the --go-file is removed (so no process's closes fall in another's run)\n"
"  --json-only         print only the RESULT line\n"
"  --debug             print the first 20 error frames verbatim on stderr\n"
"  --quiet             no progress lines on stderr\n"
"  --help              this text\n"
"Exit: 0 ran (see the report for losses), 1 could not connect at all, 2 bad options.\n");
}

static int
parse_num (const char *s, double lo, double hi, double *out)
{
    char *end;
    errno = 0;
    double v = strtod (s, &end);
    if (errno || end == s || *end || !isfinite (v) || v < lo || v > hi)
        return -1;
    *out = v;
    return 0;
}

static bool
addr_is_loopback (const struct sockaddr_storage *ss)
{
    if (ss->ss_family == AF_INET) {
        const struct sockaddr_in *a = (const struct sockaddr_in *) ss;
        return (ntohl (a->sin_addr.s_addr) >> 24) == 127;
    }
    if (ss->ss_family == AF_INET6) {
        const struct sockaddr_in6 *a = (const struct sockaddr_in6 *) ss;
        return IN6_IS_ADDR_LOOPBACK (&a->sin6_addr);
    }
    return false;
}

/*  A literal loopback address (or "localhost") into ss, port 0. */
static int
parse_loopback (const char *s, struct sockaddr_storage *ss)
{
    memset (ss, 0, sizeof *ss);
    char buf [64];
    size_t n = strlen (s);
    if (n >= sizeof buf)
        return -1;
    if (strcasecmp (s, "localhost") == 0)
        s = "127.0.0.1";
    else
    if (s [0] == '[' && n > 2 && s [n - 1] == ']') {
        memcpy (buf, s + 1, n - 2);
        buf [n - 2] = 0;
        s = buf;
    }
    struct sockaddr_in *a4 = (struct sockaddr_in *) ss;
    struct sockaddr_in6 *a6 = (struct sockaddr_in6 *) ss;
    if (inet_pton (AF_INET, s, &a4->sin_addr) == 1)
        a4->sin_family = AF_INET;
    else
    if (inet_pton (AF_INET6, s, &a6->sin6_addr) == 1)
        a6->sin6_family = AF_INET6;
    else
        return -1;
    return addr_is_loopback (ss)? 0: -1;
}

/*  A path for --ready-file, --go-file or --done-file: not empty, short
    enough, in a folder that exists; one that this process creates must not
    exist yet (a stale file would tell the waiting side too early). */
static int
sync_path_check (const char *name, const char *path, bool created_here)
{
    size_t n = strlen (path);
    if (n == 0 || n >= QB_PATHMAX || path [n - 1] == '/') {
        fprintf (stderr, "qmsbench: bad --%s '%s' (a file path, 1..%d characters)\n", name, path, QB_PATHMAX - 1);
        return -1;
    }
    char dir [QB_PATHMAX];
    strcpy (dir, path);
    char *slash = strrchr (dir, '/');
    if (!slash)
        strcpy (dir, ".");
    else
    if (slash == dir)
        dir [1] = 0;
    else
        *slash = 0;
    struct stat st;
    if (stat (dir, &st) || !S_ISDIR (st.st_mode)) {
        fprintf (stderr, "qmsbench: bad --%s '%s': no folder '%s'\n", name, path, dir);
        return -1;
    }
    if (created_here && access (path, F_OK) == 0) {
        fprintf (stderr, "qmsbench: bad --%s '%s': the file exists already (remove it first)\n", name, path);
        return -1;
    }
    return 0;
}

/*  Creates path (empty): false when it could not. */
static bool
sync_touch (const char *path)
{
    FILE *f = fopen (path, "we");
    if (!f || fclose (f)) {
        fprintf (stderr, "qmsbench: cannot create '%s': %s\n", path, strerror (errno));
        return false;
    }
    return true;
}

#define BAD(...) do { fprintf (stderr, "qmsbench: " __VA_ARGS__); fputc ('\n', stderr); return -1; } while (0)

static int
parse_opts (int argc, char **argv)
{
    enum { O_HOST = 256, O_PORT, O_PATH, O_CLIENTS, O_MESSAGES, O_DURATION, O_WINDOW, O_RATE,
           O_SIZE, O_PREFIX, O_SRC, O_IDLE, O_PID, O_CRATE, O_PENDING, O_JSON, O_PINGPONG,
           O_THREADS, O_TIMEOUT, O_READY, O_DRAIN, O_STALL, O_HTO, O_PROTO, O_QUIET, O_HELP,
           O_BACKOFF, O_DEBUG, O_MAXAUTH, O_PRESENCE, O_IDS, O_TOPREFIX, O_EXPECT, O_RESUME,
           O_READYFILE, O_GOFILE, O_DONEFILE, O_GROUP, O_GSENDERS };
    static const struct option longopts [] = {
        { "host", 1, 0, O_HOST }, { "port", 1, 0, O_PORT }, { "path", 1, 0, O_PATH },
        { "clients", 1, 0, O_CLIENTS }, { "messages", 1, 0, O_MESSAGES },
        { "duration", 1, 0, O_DURATION }, { "window", 1, 0, O_WINDOW }, { "rate", 1, 0, O_RATE },
        { "size", 1, 0, O_SIZE }, { "prefix", 1, 0, O_PREFIX }, { "source-addrs", 1, 0, O_SRC },
        { "idle", 0, 0, O_IDLE }, { "pid", 1, 0, O_PID }, { "connect-rate", 1, 0, O_CRATE },
        { "max-pending", 1, 0, O_PENDING }, { "json-only", 0, 0, O_JSON },
        { "ping-pong", 0, 0, O_PINGPONG }, { "threads", 1, 0, O_THREADS },
        { "timeout", 1, 0, O_TIMEOUT }, { "ready-timeout", 1, 0, O_READY },
        { "drain", 1, 0, O_DRAIN }, { "stall", 1, 0, O_STALL },
        { "handshake-timeout", 1, 0, O_HTO }, { "proto", 1, 0, O_PROTO },
        { "quiet", 0, 0, O_QUIET }, { "backoff", 1, 0, O_BACKOFF },
        { "debug", 0, 0, O_DEBUG }, { "max-auth", 1, 0, O_MAXAUTH }, { "help", 0, 0, O_HELP },
        { "presence", 1, 0, O_PRESENCE }, { "ids", 0, 0, O_IDS }, { "to-prefix", 1, 0, O_TOPREFIX },
        { "expect-stored", 1, 0, O_EXPECT }, { "resume", 0, 0, O_RESUME },
        { "ready-file", 1, 0, O_READYFILE }, { "go-file", 1, 0, O_GOFILE },
        { "done-file", 1, 0, O_DONEFILE }, { "group-size", 1, 0, O_GROUP },
        { "group-senders", 1, 0, O_GSENDERS }, { 0, 0, 0, 0 }
    };
    const char *host = "127.0.0.1";
    bool duration_set = false, pingpong = false, window_set = false;
    double v;
    O.port = 12345;
    O.ports [0] = 12345;
    O.nports = 1;
    O.presence = PRES_NONE;
    strcpy (O.path, "/");
    O.clients = 10;
    O.duration = 10;
    O.window = 16;
    O.size = 64;
    strcpy (O.prefix, "bench");
    O.max_pending = 500;
    O.threads = 1;
    O.timeout = 120;
    O.ready_timeout = 30;
    O.handshake_timeout = 60;
    O.drain = 2;
    O.stall = 2;
    O.backoff = 0.1;
    O.proto = "qms";
    int ch;
    opterr = 0;
    while ((ch = getopt_long (argc, argv, "h", longopts, NULL)) != -1) {
        switch (ch) {
            case O_HOST: host = optarg; break;
            case O_PORT: {
                /*  One port, or several: client i uses the (i % n)-th. */
                char *copy = strdup (optarg), *save = NULL;
                O.nports = 0;
                for (char *t = strtok_r (copy, ",", &save); t; t = strtok_r (NULL, ",", &save)) {
                    if (O.nports >= QB_MAX_PORTS || parse_num (t, 1, 65535, &v) || v != floor (v)) {
                        fprintf (stderr, "qmsbench: bad --port '%s'\n", t);
                        free (copy);
                        return -1;
                    }
                    O.ports [O.nports++] = (int) v;
                }
                free (copy);
                if (!O.nports) BAD ("bad --port '%s'", optarg);
                O.port = O.ports [0];
                break;
            }
            case O_PATH:
                if (optarg [0] != '/' || strlen (optarg) >= sizeof O.path || strpbrk (optarg, " \r\n\t"))
                    BAD ("bad --path '%s' (must start with /, no spaces)", optarg);
                strcpy (O.path, optarg); break;
            case O_CLIENTS:
                if (parse_num (optarg, 1, 1000000, &v) || v != floor (v)) BAD ("bad --clients '%s' (1..1000000)", optarg);
                O.clients = (uint32_t) v; break;
            case O_MESSAGES:
                if (parse_num (optarg, 1, 1e12, &v) || v != floor (v)) BAD ("bad --messages '%s'", optarg);
                O.messages = (uint64_t) v; break;
            case O_DURATION:
                if (parse_num (optarg, 0.001, 86400, &v)) BAD ("bad --duration '%s'", optarg);
                O.duration = v; duration_set = true; break;
            case O_WINDOW:
                if (parse_num (optarg, 1, 1000000, &v) || v != floor (v)) BAD ("bad --window '%s' (1..1000000)", optarg);
                O.window = (uint32_t) v; window_set = true; break;
            case O_RATE:
                if (parse_num (optarg, 0, 1e9, &v)) BAD ("bad --rate '%s'", optarg);
                O.rate = v; break;
            case O_SIZE:
                if (parse_num (optarg, 0, QB_MAX_SIZE, &v) || v != floor (v)) BAD ("bad --size '%s' (0..%u)", optarg, QB_MAX_SIZE);
                O.size = (uint32_t) v; break;
            case O_PREFIX:
            case O_TOPREFIX: {
                size_t n = strlen (optarg);
                if (n == 0 || n > 32) BAD ("bad --%s '%s' (1..32 characters)", ch == O_PREFIX? "prefix": "to-prefix", optarg);
                for (size_t i = 0; i < n; i++)
                    if (!isalnum ((unsigned char) optarg [i]) && optarg [i] != '_' && optarg [i] != '-' && optarg [i] != '.')
                        BAD ("bad --%s '%s' (letters, digits, _ - . only)", ch == O_PREFIX? "prefix": "to-prefix", optarg);
                strcpy (ch == O_PREFIX? O.prefix: O.to_prefix, optarg); break;
            }
            case O_PRESENCE:
                if (strcmp (optarg, "full") == 0) O.presence = PRES_FULL;
                else if (strcmp (optarg, "delta") == 0) O.presence = PRES_DELTA;
                else if (strcmp (optarg, "none") == 0) O.presence = PRES_NONE;
                else BAD ("bad --presence '%s' (full, delta or none)", optarg);
                break;
            case O_IDS: O.ids = true; break;
            case O_READYFILE:
            case O_GOFILE:
            case O_DONEFILE: {
                const char *name = ch == O_READYFILE? "ready-file": ch == O_GOFILE? "go-file": "done-file";
                char *dst = ch == O_READYFILE? O.ready_file: ch == O_GOFILE? O.go_file: O.done_file;
                if (sync_path_check (name, optarg, ch != O_GOFILE))
                    return -1;
                strcpy (dst, optarg);
                break;
            }
            case O_RESUME: O.resume = true; break;
            case O_GROUP:
                if (parse_num (optarg, 2, 1000000, &v) || v != floor (v))
                    BAD ("bad --group-size '%s' (an integer, at least 2)", optarg);
                O.group = (uint32_t) v; break;
            case O_GSENDERS:
                if (parse_num (optarg, 1, 1000000, &v) || v != floor (v))
                    BAD ("bad --group-senders '%s' (an integer, at least 1)", optarg);
                O.group_senders = (uint32_t) v; break;
            case O_EXPECT:
                if (parse_num (optarg, 1, 1e9, &v) || v != floor (v)) BAD ("bad --expect-stored '%s'", optarg);
                O.expect = (uint64_t) v; break;
            case O_SRC: {
                char *copy = strdup (optarg), *save = NULL;
                for (char *t = strtok_r (copy, ",", &save); t; t = strtok_r (NULL, ",", &save)) {
                    if (O.nsrc >= QB_MAX_SRC || parse_loopback (t, &O.src [O.nsrc])) {
                        fprintf (stderr, "qmsbench: bad --source-addrs entry '%s' (loopback literals, at most %d)\n", t, QB_MAX_SRC);
                        free (copy);
                        return -1;
                    }
                    O.nsrc++;
                }
                free (copy);
                break;
            }
            case O_IDLE: O.idle = true; break;
            case O_PID: {
                char *copy = strdup (optarg), *save = NULL;
                for (char *t = strtok_r (copy, ",", &save); t; t = strtok_r (NULL, ",", &save)) {
                    if (O.npids >= QB_MAX_PIDS || parse_num (t, 1, 4194304, &v) || v != floor (v)) {
                        fprintf (stderr, "qmsbench: bad --pid '%s'\n", t);
                        free (copy);
                        return -1;
                    }
                    O.pids [O.npids++] = (int) v;
                }
                free (copy);
                break;
            }
            case O_CRATE:
                if (parse_num (optarg, 0, 1e7, &v)) BAD ("bad --connect-rate '%s'", optarg);
                O.connect_rate = v; break;
            case O_PENDING:
                if (parse_num (optarg, 1, 1000000, &v) || v != floor (v)) BAD ("bad --max-pending '%s'", optarg);
                O.max_pending = (uint32_t) v; break;
            case O_JSON: O.json_only = true; O.quiet = true; break;
            case O_QUIET: O.quiet = true; break;
            case O_PINGPONG: pingpong = true; break;
            case O_THREADS:
                if (parse_num (optarg, 1, QB_MAX_THREADS, &v) || v != floor (v)) BAD ("bad --threads '%s' (1..%d)", optarg, QB_MAX_THREADS);
                O.threads = (uint32_t) v; break;
            case O_TIMEOUT:
                if (parse_num (optarg, 0.1, 86400 * 7, &v)) BAD ("bad --timeout '%s'", optarg);
                O.timeout = v; break;
            case O_READY:
                if (parse_num (optarg, 0.1, 86400, &v)) BAD ("bad --ready-timeout '%s'", optarg);
                O.ready_timeout = v; break;
            case O_HTO:
                if (parse_num (optarg, 0.1, 86400, &v)) BAD ("bad --handshake-timeout '%s'", optarg);
                O.handshake_timeout = v; break;
            case O_DRAIN:
                if (parse_num (optarg, 0, 3600, &v)) BAD ("bad --drain '%s'", optarg);
                O.drain = v; break;
            case O_MAXAUTH:
                if (parse_num (optarg, 1, 1000000, &v) || v != floor (v)) BAD ("bad --max-auth '%s'", optarg);
                O.max_auth = (uint32_t) v; break;
            case O_DEBUG: O.debug = 20; break;
            case O_BACKOFF:
                if (parse_num (optarg, 0, 60000, &v)) BAD ("bad --backoff '%s' (milliseconds)", optarg);
                O.backoff = v / 1000.0; break;
            case O_STALL:
                if (parse_num (optarg, 0.01, 3600, &v)) BAD ("bad --stall '%s'", optarg);
                O.stall = v; break;
            case O_PROTO:
                if (strcmp (optarg, "qms") == 0 || strcmp (optarg, "ws") == 0)
                    O.proto = "qms";
                else
                if (strcmp (optarg, "nats") == 0)
                    O.proto = "nats";
                else
                    BAD ("bad --proto '%s' (qms or nats)", optarg);
                break;
            case O_HELP: case 'h':
                usage (stdout);
                exit (0);
            default:
                fprintf (stderr, "qmsbench: unknown or incomplete option '%s'\n", argv [optind - 1]);
                usage (stderr);
                return -1;
        }
    }
    if (optind < argc)
        BAD ("unexpected argument '%s'", argv [optind]);
    if (parse_loopback (host, &O.dst))
        BAD ("--host '%s' refused: only loopback targets (127.x.x.x, localhost, ::1)", host);
    if (strlen (host) >= sizeof O.host)
        BAD ("--host too long");
    O.family = O.dst.ss_family;
    if (O.family == AF_INET) {
        ((struct sockaddr_in *) &O.dst)->sin_port = htons ((uint16_t) O.port);
        O.dst_len = sizeof (struct sockaddr_in);
        inet_ntop (AF_INET, &((struct sockaddr_in *) &O.dst)->sin_addr, O.host, sizeof O.host);
    }
    else {
        ((struct sockaddr_in6 *) &O.dst)->sin6_port = htons ((uint16_t) O.port);
        O.dst_len = sizeof (struct sockaddr_in6);
        inet_ntop (AF_INET6, &((struct sockaddr_in6 *) &O.dst)->sin6_addr, O.host, sizeof O.host);
    }
    for (int i = 0; i < O.nsrc; i++)
        if (O.src [i].ss_family != O.family)
            BAD ("--source-addrs must have the same address family as --host");
    if (pingpong) {
        if (window_set && O.window != 1)
            BAD ("--ping-pong means --window 1");
        O.window = 1;
    }
    if (O.messages && !duration_set)
        O.duration = 0;                 /* run until the messages are sent */
    if (O.idle && O.messages)
        BAD ("--idle does not send messages: use --duration");
    if (O.threads > O.clients)
        O.threads = O.clients;
    if (!O.max_auth)
        O.max_auth = 40 * (uint32_t) (O.nsrc? O.nsrc: 1);
    g_nats = strcmp (O.proto, "nats") == 0;
    P = g_nats? &qb_proto_nats: &qb_proto_qms;
    if (g_nats && (O.ids || O.to_prefix [0] || O.expect || O.resume))
        BAD ("--ids, --to-prefix, --expect-stored and --resume are chat-protocol features (not with --proto nats)");
    if (O.to_prefix [0]) {
        if (O.idle)
            BAD ("--to-prefix sends messages: not with --idle");
        if (strcmp (O.to_prefix, O.prefix) == 0)
            BAD ("--to-prefix must differ from --prefix");
        O.ids = true;                   /* the acks are what we count */
    }
    if (O.done_file [0] && !O.go_file [0])
        BAD ("--done-file needs --go-file (whose removal ends the hold)");
    if ((O.ready_file [0] && (strcmp (O.ready_file, O.go_file) == 0 || strcmp (O.ready_file, O.done_file) == 0))
        || (O.go_file [0] && strcmp (O.go_file, O.done_file) == 0))
        BAD ("--ready-file, --go-file and --done-file must be different files");
    if (O.go_file [0] && O.resume)
        BAD ("--go-file is not for --resume runs");
    if (O.group) {
        if (O.clients % O.group != 0)
            BAD ("--clients %u is not a multiple of --group-size %u: the groups would not be whole",
                 O.clients, O.group);
        if (O.idle || O.to_prefix [0] || O.expect || O.resume)
            BAD ("--group-size sends to groups: not with --idle, --to-prefix, --expect-stored or --resume");
        if (!O.group_senders)
            O.group_senders = O.group;
        if (O.group_senders > O.group)
            BAD ("--group-senders %u is more than --group-size %u", O.group_senders, O.group);
        if ((uint64_t) O.clients * O.group > (1ull << 28))
            BAD ("--clients x --group-size is too large (each member keeps a counter per member)");
    }
    if (O.group_senders && !O.group)
        BAD ("--group-senders needs --group-size");
    if (O.expect) {
        if (O.messages || O.to_prefix [0])
            BAD ("--expect-stored only receives: not with --messages or --to-prefix");
        O.idle = true;                  /* nobody sends */
    }
    return 0;
}

/* ------------------------------------------------------------------------ */
/*  Main thread: set-up, phases, progress (the report: qb_stats.c) */

static void
on_signal (int sig)
{
    (void) sig;
    g_signal = 1;
}

static void
set_phase (int ph)
{
    __atomic_store_n (&g_phase, ph, __ATOMIC_RELEASE);
    for (uint32_t t = 0; t < O.threads; t++) {
        uint64_t one = 1;
        if (write (G_w [t].efd, &one, sizeof one) < 0) {
            /*  The worker notices within its 100 ms poll anyway. */
        }
    }
}

static void
set_groups_go (void)
{
    __atomic_store_n (&g_groups_go, 1, __ATOMIC_RELEASE);
    for (uint32_t t = 0; t < O.threads; t++) {
        uint64_t one = 1;
        if (write (G_w [t].efd, &one, sizeof one) < 0) {
            /*  The worker notices within its 100 ms poll anyway. */
        }
    }
}

typedef struct {
    uint64_t conn_ok, conn_fail, login_ok, login_fail, sent, delivered, active;
    bool all_ack;
} live_t;

static live_t
live_totals (void)
{
    live_t l;
    memset (&l, 0, sizeof l);
    l.all_ack = true;
    for (uint32_t t = 0; t < O.threads; t++) {
        worker_t *w = &G_w [t];
        l.conn_ok += LD (w->st.conn_ok);
        l.conn_fail += LD (w->st.conn_fail);
        l.login_ok += LD (w->st.login_ok);
        l.login_fail += LD (w->st.login_fail);
        l.sent += LD (w->st.sent);
        l.delivered += LD (w->st.delivered) ;
        l.active += LD (w->senders_active);
        if (!__atomic_load_n (&w->run_ack, __ATOMIC_ACQUIRE))
            l.all_ack = false;
    }
    return l;
}

/*  Readiness from the flags every client publishes: a client is settled
    when it is dead, or online with whatever its pair needs. */
static readiness_t
readiness_scan (void)
{
    readiness_t r;
    memset (&r, 0, sizeof r);
    for (uint32_t i = 0; i < O.clients; i++) {
        client_t *c = &G_cl [i];
        int dead = __atomic_load_n (&c->dead, __ATOMIC_ACQUIRE);
        int online = __atomic_load_n (&c->online, __ATOMIC_ACQUIRE);
        if (dead) {
            r.dead++;
            r.settled++;
            continue;
        }
        if (!online) {
            if (__atomic_load_n (&c->state, __ATOMIC_RELAXED) == CS_NEW)
                r.not_started++;
            else
                r.in_login++;
            continue;
        }
        r.online++;
        if (O.idle) {
            r.settled++;
            r.ready++;
            continue;
        }
        int ht = __atomic_load_n (&c->has_tgt, __ATOMIC_ACQUIRE);
        int hs = __atomic_load_n (&c->has_src, __ATOMIC_ACQUIRE);
        bool tdead = __atomic_load_n (&G_cl [c->tgt].dead, __ATOMIC_ACQUIRE);
        bool sdead = __atomic_load_n (&G_cl [c->src].dead, __ATOMIC_ACQUIRE);
        if (!ht)
            r.no_target++;
        if (!hs)
            r.no_source++;
        if (ht && !tdead)
            r.senders++;
        if (ht && hs)
            r.ready++;
        if ((ht || tdead) && (hs || sdead))
            r.settled++;
    }
    return r;
}

static void
report_missing (const readiness_t *r)
{
    fprintf (stderr, "qmsbench: not everyone is ready: %u ready of %u; not started %u, "
             "in handshake/login %u, closed %u, online without target id %u, without source id %u\n",
             r->ready, O.clients, r->not_started, r->in_login, r->dead, r->no_target, r->no_source);
    int shown = 0;
    for (uint32_t i = 0; i < O.clients && shown < 10; i++) {
        client_t *c = &G_cl [i];
        int online = __atomic_load_n (&c->online, __ATOMIC_ACQUIRE), dead = __atomic_load_n (&c->dead, __ATOMIC_ACQUIRE);
        int ht = __atomic_load_n (&c->has_tgt, __ATOMIC_ACQUIRE), hs = __atomic_load_n (&c->has_src, __ATOMIC_ACQUIRE);
        if (online && !dead && (O.idle || (ht && hs)))
            continue;
        char name [96];
        fprintf (stderr, "qmsbench:   %s: %s%s%s\n", prefix_name (i, name, sizeof name),
                 dead? "closed": qb_state_name [__atomic_load_n (&c->state, __ATOMIC_RELAXED)],
                 !dead && online && !ht? ", target id unknown": "",
                 !dead && online && !hs? ", source id unknown": "");
        shown++;
    }
}

static const char *
phase_name (int ph)
{
    return ph == PH_CONNECT? "connect": ph == PH_RESUME? "resume": ph == PH_RUN? (O.idle? "hold": "run"): ph == PH_DRAIN? "drain": "stop";
}

/*  Everyone is settled (or given up on): the run, and its measurement, start. */
static void
start_run (timeline_t *tl)
{
    tl->p_run = procs_sample ();
    tl->cpu_run = self_cpu_s ();
    tl->t_run = now_ns ();
    tl->ran = true;
    set_phase (PH_RUN);
}

static int
run_main_loop (timeline_t *tl)
{
    bool waiting_go = false;        /* --go-file: settled, the file not there yet */
    uint64_t last_change = now_ns (), last_progress = 0, last_scan = 0, drain_start = 0;
    readiness_t prev;
    memset (&prev, 0, sizeof prev);
    uint64_t prev_deliv = 0, prev_t = now_ns ();
    for (;;) {
        struct timespec ts = { 0, 20 * 1000 * 1000 };
        nanosleep (&ts, NULL);
        uint64_t now = now_ns ();
        int ph = phase ();
        if (g_signal) {
            tl->interrupted = true;
            break;
        }
        if (now - tl->t0 > (uint64_t) (O.timeout * 1e9)) {
            tl->timed_out = true;
            break;
        }
        live_t l = live_totals ();
        if ((ph == PH_CONNECT || ph == PH_RESUME) && !waiting_go && now - last_scan >= 100 * MS) {
            last_scan = now;
            readiness_t r = readiness_scan ();
            if (memcmp (&r, &prev, sizeof r) != 0) {
                prev = r;
                last_change = now;
            }
            bool all = r.settled == O.clients;
            bool stuck = now - last_change > (uint64_t) (O.ready_timeout * 1e9);
            /*  --group-size: once every client is online (or closed), or the
                logins stopped making progress, the owners create the groups;
                the run waits for the members' GroupEvents (settled). */
            if (O.group && !g_groups_go && ((r.not_started == 0 && r.in_login == 0) || stuck)) {
                if (stuck)
                    fprintf (stderr, "qmsbench: logins stalled: the groups are created with who is online\n");
                set_groups_go ();
                last_change = now;
                continue;
            }
            if (all || stuck) {
                tl->ready_at_run = r;
                if (!all || r.ready < O.clients)
                    report_missing (&r);
                if (r.online == 0 || (!O.idle && r.senders == 0))
                    break;
                if (O.resume && ph == PH_CONNECT) {
                    /*  Everyone who logged in reconnects with its token. */
                    tl->t_resume = now_ns ();
                    tl->resume_from = r.online;
                    memset (&prev, 0, sizeof prev);
                    last_change = now;
                    set_phase (PH_RESUME);
                    continue;
                }
                if (O.ready_file [0] && !sync_touch (O.ready_file))
                    break;
                if (O.go_file [0]) {
                    /*  Nothing is measured until the go file is there. */
                    tl->t_ready = now;
                    waiting_go = true;
                    continue;
                }
                start_run (tl);
                ph = PH_RUN;
            }
        }
        else
        if (waiting_go) {
            if (access (O.go_file, F_OK) == 0) {
                waiting_go = false;
                tl->go_wait_s = (double) (now - tl->t_ready) / 1e9;
                start_run (tl);
                ph = PH_RUN;
            }
        }
        else
        if (ph == PH_RUN) {
            bool time_up = O.duration > 0 && now - tl->t_run >= (uint64_t) (O.duration * 1e9);
            if (O.idle) {
                if (time_up || (O.expect && l.delivered >= O.expect * O.clients))
                    break;
            }
            else
            if (time_up || (O.messages && l.all_ack && l.active == 0)) {
                tl->t_send_end = now;
                drain_start = now;
                set_phase (PH_DRAIN);
                ph = PH_DRAIN;
            }
        }
        else
        if (ph == PH_DRAIN) {
            uint64_t expected = O.group? l.sent * (O.group - 1): l.sent;
            if (l.delivered >= expected || now - drain_start >= (uint64_t) (O.drain * 1e9))
                break;
        }
        if (!O.quiet && now - last_progress >= SEC) {
            double dt = (double) (now - prev_t) / 1e9;
            fprintf (stderr, "qmsbench: %6.1fs %-7s conn %" PRIu64 "/%u fail %" PRIu64 " online %" PRIu64
                     " loginfail %" PRIu64 " sent %" PRIu64 " delivered %" PRIu64 " (%.0f/s)\n",
                     (double) (now - tl->t0) / 1e9, phase_name (ph), l.conn_ok, O.clients, l.conn_fail,
                     l.login_ok, l.login_fail, l.sent, l.delivered,
                     dt > 0? (double) (l.delivered - prev_deliv) / dt: 0.0);
            last_progress = now;
            prev_deliv = l.delivered;
            prev_t = now;
        }
    }
    if (!tl->ran)
        tl->ready_at_run = readiness_scan ();
    if (!tl->t_send_end)
        tl->t_send_end = now_ns ();
    /*  Measure the server with every connection still open. */
    tl->p_end = procs_sample ();
    tl->cpu_end = self_cpu_s ();
    tl->t_end = now_ns ();
    for (uint32_t i = 0; i < O.clients; i++)
        if (__atomic_load_n (&G_cl [i].online, __ATOMIC_ACQUIRE) && !__atomic_load_n (&G_cl [i].dead, __ATOMIC_ACQUIRE))
            tl->held++;
    if (O.done_file [0] && tl->ran) {
        /*  Measured: say so, and keep the connections (nobody sends) until
            the go file is gone, so that our closes fall in no other
            process's run. Still bound by --timeout; a signal ends it. */
        if (!O.idle && phase () == PH_RUN)
            set_phase (PH_DRAIN);
        uint64_t t = now_ns ();
        if (sync_touch (O.done_file))
            while (!g_signal && access (O.go_file, F_OK) == 0
                   && now_ns () - tl->t0 < (uint64_t) (O.timeout * 1e9)) {
                struct timespec ts = { 0, 20 * 1000 * 1000 };
                nanosleep (&ts, NULL);
            }
        tl->close_wait_s = (double) (now_ns () - t) / 1e9;
    }
    set_phase (PH_STOP);
    return 0;
}

static int
setup (void)
{
    struct rlimit rl;
    if (getrlimit (RLIMIT_NOFILE, &rl) == 0) {
        rlim_t need = (rlim_t) O.clients + 64 + 2 * O.threads;
        if (rl.rlim_cur < need) {
            rl.rlim_cur = need < rl.rlim_max? need: rl.rlim_max;
            setrlimit (RLIMIT_NOFILE, &rl);
        }
        if (rl.rlim_cur < need)
            fprintf (stderr, "qmsbench: warning: open-file limit %lu is below the %lu needed\n",
                     (unsigned long) rl.rlim_cur, (unsigned long) need);
    }
    G_rxbits = 4096;
    while (G_rxbits < 4ull * O.window)
        G_rxbits *= 2;
    G_tsring = 64;
    while (G_tsring < 2ull * O.window)
        G_tsring *= 2;
    void *mem = NULL;
    if (posix_memalign (&mem, 64, sizeof (client_t) * O.clients))
        return -1;
    G_cl = mem;
    memset (G_cl, 0, sizeof (client_t) * O.clients);
    for (uint32_t i = 0; i < O.clients; i++) {
        client_t *c = &G_cl [i];
        c->fd = -1;
        c->idx = i;
        c->thread = (uint16_t) (i % O.threads);
        c->tgt = O.to_prefix [0] || O.group? i: (i + 1) % O.clients;
        c->src = O.to_prefix [0] || O.group? i: (i + O.clients - 1) % O.clients;
        if (O.group && !(c->grp_next = calloc (O.group, sizeof (uint32_t))))
            return -1;
    }
    G_w = calloc (O.threads, sizeof (worker_t));
    if (!G_w)
        return -1;
    for (uint32_t t = 0; t < O.threads; t++) {
        worker_t *w = &G_w [t];
        w->id = (int) t;
        w->nmine = O.clients / O.threads + (t < O.clients % O.threads? 1: 0);
        w->nmarkw = (w->nmine + 63) / 64;
        w->marks = calloc (w->nmarkw, sizeof (uint64_t));
        w->rcap = 2;
        while (w->rcap < w->nmine + 1)
            w->rcap *= 2;
        w->ring = calloc (w->rcap, sizeof (uint32_t));
        w->defer = calloc (w->nmine + 1, sizeof (uint32_t));
        w->iscr = malloc (QB_SCRATCH);
        w->oscr = malloc (QB_SCRATCH);
        w->max_pending = (O.max_pending + O.threads - 1) / O.threads;
        w->max_auth = (O.max_auth + O.threads - 1) / O.threads;
        w->aq_cap = w->nmine + 1;
        w->authq = calloc (w->aq_cap, sizeof (uint32_t));
        w->trate = O.rate / O.threads;
        w->crate = O.connect_rate / O.threads;
        w->ctokens = 1.0;
        w->clast = now_ns ();
        if (RAND_bytes ((unsigned char *) &w->rng, sizeof w->rng) != 1 || !w->rng)
            w->rng = 0x9E3779B97F4A7C15ull ^ (uint64_t) t;
        w->lk_agent = -1;
        if (!O.idle && !O.group && (O.presence == PRES_NONE || O.to_prefix [0])) {
            w->lk_state = calloc (O.clients, 1);
            w->lkq_cap = O.clients + 1;
            w->lkq = calloc (w->lkq_cap, sizeof (uint32_t));
            w->lk_fly = calloc (QB_LOOKUP_BATCH * QB_LOOKUP_DEPTH, sizeof (uint32_t));
            w->lk_retry = calloc (O.clients, sizeof (uint32_t));
            if (!w->lk_state || !w->lkq || !w->lk_fly || !w->lk_retry)
                return -1;
        }
        w->ep = epoll_create1 (EPOLL_CLOEXEC);
        w->efd = eventfd (0, EFD_NONBLOCK | EFD_CLOEXEC);
        if (!w->marks || !w->ring || !w->defer || !w->authq || !w->iscr || !w->oscr || w->ep < 0 || w->efd < 0)
            return -1;
        struct epoll_event e = { .events = EPOLLIN, .data.u64 = UINT64_MAX };
        if (epoll_ctl (w->ep, EPOLL_CTL_ADD, w->efd, &e) < 0)
            return -1;
    }
    return 0;
}

static void
cleanup (void)
{
    for (uint32_t i = 0; G_cl && i < O.clients; i++) {
        client_t *c = &G_cl [i];
        free (c->in);
        free (c->out);
        free (c->frag);
        free (c->tmpl);
        free (c->rx_bits);
        free (c->sent_ts);
        free (c->grp_next);
    }
    free (G_cl);
    for (uint32_t t = 0; G_w && t < O.threads; t++) {
        worker_t *w = &G_w [t];
        free (w->marks);
        free (w->ring);
        free (w->defer);
        free (w->authq);
        free (w->iscr);
        free (w->oscr);
        free (w->lk_state);
        free (w->lkq);
        free (w->lk_fly);
        free (w->lk_retry);
        if (w->ep >= 0) close (w->ep);
        if (w->efd >= 0) close (w->efd);
    }
    free (G_w);
}

int
main (int argc, char **argv)
{
    if (parse_opts (argc, argv))
        return 2;
    for (int i = 0; i < O.npids; i++)
        if (proc_rss_kib (O.pids [i]) < 0) {
            fprintf (stderr, "qmsbench: --pid %d: cannot read /proc/%d/status\n", O.pids [i], O.pids [i]);
            return 2;
        }
    struct sigaction sa;
    memset (&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigaction (SIGINT, &sa, NULL);
    sigaction (SIGTERM, &sa, NULL);
    signal (SIGPIPE, SIG_IGN);
    if (setup ()) {
        fprintf (stderr, "qmsbench: set-up failed (out of memory or descriptors)\n");
        cleanup ();
        return 1;
    }
    timeline_t tl;
    memset (&tl, 0, sizeof tl);
    tl.p_start = procs_sample ();
    tl.cpu_start = self_cpu_s ();
    tl.t0 = now_ns ();
    uint32_t started = 0;
    for (uint32_t t = 0; t < O.threads; t++) {
        if (pthread_create (&G_w [t].th, NULL, worker_main, &G_w [t]) != 0)
            break;
        started++;
    }
    if (started < O.threads) {
        fprintf (stderr, "qmsbench: could not start threads\n");
        set_phase (PH_STOP);
        for (uint32_t t = 0; t < started; t++)
            pthread_join (G_w [t].th, NULL);
        cleanup ();
        return 1;
    }
    run_main_loop (&tl);
    for (uint32_t t = 0; t < O.threads; t++)
        pthread_join (G_w [t].th, NULL);
    totals_t T;
    merge_totals (&T);
    report (&tl, &T);
    int rc = T.s.conn_ok == 0? 1: 0;
    cleanup ();
    return rc;
}
