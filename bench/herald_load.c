/*
 * herald-load: load client for herald-gateway (and herald-ingest).
 *
 * Opens many WebSocket connections on raw non-blocking sockets and one epoll
 * per process: a minimal RFC 6455 client (HTTP upgrade, masked client frames,
 * unmasked server frames with 16/64-bit lengths, PONG for every PING, close
 * handshake, continuation frames). Optionally joins a room, publishes chat
 * messages whose text is the send time, or POSTs notifications to ingest whose
 * message is the send time; every receiver computes latency = now - that time
 * (CLOCK_REALTIME microseconds: every process is on this one box).
 *
 * A process may hold at most 20,000 files, so the work is split over --procs
 * forked workers, each owning a contiguous slice of the connection numbers.
 * Workers talk to the parent over two pipes each: one byte commands down
 * ('P' publish, 'N' notify, 'S' stop), fixed hl_report_t records up. The
 * parent samples gateway RSS, sequences the phases and prints one block of
 * key=value lines on stdout; progress goes to stderr.
 *
 * Memory: a connection is a 48-byte struct. Reads go through one shared
 * per-process buffer; only an incomplete frame left at the end of a read is
 * copied to a per-connection heap buffer (freed once consumed), likewise for
 * unsent bytes. An idle connection owns no heap memory.
 */
#include "hl_common.h"

hl_opts_t O;

/* ---- parent ------------------------------------------------------------- */

typedef struct {
    pid_t pid;
    int cmd_fd, rep_fd;
    int connected, phase_done, progress, done, dead;
    hl_report_t rep; /* latest */
    hl_fan_t *fans;  /* owned, from the RESULT */
} hl_child_t;

static hl_child_t *C;
static int NC;

static void
hl_on_signal(int sig)
{
    for (int i = 0; i < NC; i++)
        if (C[i].pid > 0)
            kill(C[i].pid, SIGKILL);
    _exit(128 + sig);
}

static void
hl_msleep(double s)
{
    if (s <= 0)
        return;
    struct timespec ts = {.tv_sec = (time_t)s, .tv_nsec = (long)((s - (double)(time_t)s) * 1e9)};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

/* Reads reports until every child has reached `kind` (or is gone) or timeout_s
 * passed; 0 when all reached it. */
static int
hl_wait_all(uint32_t kind, int only, double timeout_s)
{
    uint64_t deadline = hr_mono_us() + (uint64_t)(timeout_s * 1e6);
    hl_report_t *tmp = hr_malloc(sizeof(*tmp));
    int rc = -1;
    for (;;) {
        int pending = 0;
        struct pollfd pfd[HL_MAX_PROCS];
        int map[HL_MAX_PROCS], np = 0;
        for (int i = 0; i < NC; i++) {
            if (only >= 0 && i != only)
                continue;
            int reached = kind == HL_REP_CONNECTED    ? C[i].connected
                          : kind == HL_REP_PHASE_DONE ? C[i].phase_done
                          : kind == HL_REP_PROGRESS   ? C[i].progress
                                                      : C[i].done;
            if (reached || C[i].dead)
                continue;
            pending++;
            pfd[np].fd = C[i].rep_fd;
            pfd[np].events = POLLIN;
            map[np++] = i;
        }
        if (pending == 0) {
            rc = 0;
            break;
        }
        uint64_t now = hr_mono_us();
        if (now >= deadline)
            break;
        int n = poll(pfd, (nfds_t)np, (int)((deadline - now) / 1000) + 1);
        if (n < 0 && errno != EINTR)
            break;
        for (int k = 0; k < np && n > 0; k++) {
            if (!(pfd[k].revents & (POLLIN | POLLHUP | POLLERR)))
                continue;
            hl_child_t *ch = &C[map[k]];
            if (hl_read_all(ch->rep_fd, tmp, sizeof(*tmp)) != 0) {
                fprintf(stderr, "herald-load: worker %d exited early\n", map[k]);
                ch->dead = 1;
                continue;
            }
            ch->rep = *tmp;
            if (tmp->kind == HL_REP_CONNECTED)
                ch->connected = 1;
            else if (tmp->kind == HL_REP_PHASE_DONE)
                ch->phase_done = 1;
            else if (tmp->kind == HL_REP_PROGRESS)
                ch->progress = 1;
            else if (tmp->kind == HL_REP_RESULT) {
                ch->done = 1;
                ch->fans = hr_malloc(sizeof(hl_fan_t) * (tmp->nfan ? tmp->nfan : 1));
                if (hl_read_all(ch->rep_fd, ch->fans, sizeof(hl_fan_t) * tmp->nfan) != 0)
                    ch->rep.nfan = 0;
            }
        }
    }
    hr_free(tmp);
    return rc;
}

static uint64_t
hl_gateway_rss(void)
{
    uint64_t sum = 0;
    for (int i = 0; i < O.ngw_pids; i++)
        sum += hl_proc_rss_kib(O.gw_pids[i]);
    return sum;
}

static void
hl_send_cmd(int i, char cmd)
{
    if (!C[i].dead && hl_write_all(C[i].cmd_fd, &cmd, 1) != 0)
        C[i].dead = 1;
}

/* Waits, at most --drain seconds, for deliveries to finish: until expect
 * chat+notification frames arrived (0: unknown) or none arrived for a second. */
static void
hl_drain(uint64_t expect)
{
    uint64_t start = hr_mono_us(), last_change = start, last = UINT64_MAX;
    while (hr_mono_us() - start < (uint64_t)(O.drain_s * 1e6)) {
        hl_msleep(0.25);
        for (int i = 0; i < NC; i++) {
            C[i].progress = 0;
            hl_send_cmd(i, 'Q');
        }
        hl_wait_all(HL_REP_PROGRESS, -1, 10);
        uint64_t got = 0, now = hr_mono_us();
        for (int i = 0; i < NC; i++)
            got += C[i].rep.chat_rx + C[i].rep.notify_rx;
        if (expect > 0 && got >= expect)
            break;
        if (got != last) {
            last = got;
            last_change = now;
        } else if (now - last_change >= 1000000) {
            break;
        }
    }
}

/* What a run missed, for run_ok / failures= and the exit status. */
typedef struct {
    int n;
    char text[1024];
} hl_failures_t;

static void __attribute__((format(printf, 2, 3))) hl_fail(hl_failures_t *f, const char *fmt, ...)
{
    size_t at = strlen(f->text);
    if (f->n++ > 0 && at + 2 < sizeof(f->text)) {
        memcpy(f->text + at, "; ", 3);
        at += 2;
    }
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(f->text + at, sizeof(f->text) - at, fmt, ap);
    va_end(ap);
}

/* p50/p99/max and the sample count; "n/a" for an empty histogram (a run
 * that measured nothing must not read as 0 us). */
static void
hl_print_hist(const char *prefix, const hl_hist_t *h)
{
    printf("%s_samples=%" PRIu64 "\n", prefix, h->n);
    if (h->n == 0) {
        printf("%s_p50=n/a\n%s_p99=n/a\n%s_max=n/a\n", prefix, prefix, prefix);
        return;
    }
    printf("%s_p50=%" PRIu64 "\n%s_p99=%" PRIu64 "\n%s_max=%" PRIu64 "\n", prefix,
           hl_hist_q(h, 0.50), prefix, hl_hist_q(h, 0.99), prefix, h->max);
}

static int
hl_parse_list(const char *s, int *out, int cap)
{
    int n = 0;
    char *dup = hr_strdup(s), *save = NULL;
    for (char *t = strtok_r(dup, ",", &save); t != NULL && n < cap; t = strtok_r(NULL, ",", &save))
        out[n++] = atoi(t);
    hr_free(dup);
    return n;
}

static int
hl_parse_url(const char *url)
{
    if (strncmp(url, "http://", 7) != 0)
        return -1;
    const char *h = url + 7, *colon = strchr(h, ':'), *slash = strchr(h, '/');
    if (slash == NULL)
        slash = h + strlen(h);
    const char *hend = colon != NULL && colon < slash ? colon : slash;
    if ((size_t)(hend - h) >= sizeof(O.notify_host))
        return -1;
    memcpy(O.notify_host, h, (size_t)(hend - h));
    O.notify_host[hend - h] = '\0';
    if (strcmp(O.notify_host, "localhost") == 0)
        strcpy(O.notify_host, "127.0.0.1");
    O.notify_port = hend == colon ? atoi(colon + 1) : 80;
    snprintf(O.notify_path, sizeof(O.notify_path), "%s", *slash ? slash : "/");
    return 0;
}

static void
hl_usage(const char *argv0)
{
    fprintf(stderr,
            "usage: %s [options]\n"
            "  --host A             gateway address (127.0.0.1)\n"
            "  --port P | --ports P1,P2,...   gateway port(s), round robin (8081)\n"
            "  --conns N            WebSocket connections (1000)\n"
            "  --procs K            worker processes, N/K connections each (1)\n"
            "  --src-from X --src-to Y   bind sockets to 127.0.0.X..Y round robin\n"
            "  --users U            user ids u<i %% U> (default: one per connection)\n"
            "  --room NAME          join NAME after the welcome\n"
            "  --rate R             new connections per second (5000)\n"
            "  --hold S             seconds to hold once connected (2)\n"
            "  --publish M --pub-rate R   publish M messages to the room at R/s (10)\n"
            "  --notify-url URL --notify-rate R --notify-count C [--notify-conns H]\n"
            "                       POST C notifications at R/s over H keep-alive sockets (8)\n"
            "  --gateway-pids P1,P2 sample VmRSS of these processes\n"
            "  --drain S            at most S seconds to wait for deliveries after the last send;\n"
            "                       stops early once all arrived or none for 1 s (30)\n"
            "  --handshake-timeout S (10)  --join-timeout S (10)  --inflight N (1000)\n"
            "exit: 0 every connection, request and expected frame made it; 1 bad options or\n"
            "      nothing connected; 2 the run missed something (see failures=); 3 the gateway\n"
            "      refused join (unknown_type)\n",
            argv0);
}

int
main(int argc, char **argv)
{
    snprintf(O.host, sizeof(O.host), "127.0.0.1");
    O.ports[0] = 8081;
    O.nports = 1;
    O.conns = 1000;
    O.procs = 1;
    O.rate = 5000;
    O.hold_s = 2;
    O.pub_rate = 10;
    O.notify_rate = 1000;
    O.notify_conns = 8;
    O.drain_s = 30;
    O.handshake_timeout_s = 10;
    O.join_timeout_s = 10;
    O.inflight_max = 1000;

    enum {
        OPT_HOST = 256,
        OPT_PORT,
        OPT_PORTS,
        OPT_CONNS,
        OPT_PROCS,
        OPT_SRC_FROM,
        OPT_SRC_TO,
        OPT_USERS,
        OPT_ROOM,
        OPT_RATE,
        OPT_HOLD,
        OPT_PUBLISH,
        OPT_PUB_RATE,
        OPT_GW_PIDS,
        OPT_NOTIFY_URL,
        OPT_NOTIFY_RATE,
        OPT_NOTIFY_COUNT,
        OPT_NOTIFY_CONNS,
        OPT_DRAIN,
        OPT_HS_TIMEOUT,
        OPT_JOIN_TIMEOUT,
        OPT_INFLIGHT
    };
    static const struct option longopts[] = {
        {"host", required_argument, NULL, OPT_HOST},
        {"port", required_argument, NULL, OPT_PORT},
        {"ports", required_argument, NULL, OPT_PORTS},
        {"conns", required_argument, NULL, OPT_CONNS},
        {"procs", required_argument, NULL, OPT_PROCS},
        {"src-from", required_argument, NULL, OPT_SRC_FROM},
        {"src-to", required_argument, NULL, OPT_SRC_TO},
        {"users", required_argument, NULL, OPT_USERS},
        {"room", required_argument, NULL, OPT_ROOM},
        {"rate", required_argument, NULL, OPT_RATE},
        {"hold", required_argument, NULL, OPT_HOLD},
        {"publish", required_argument, NULL, OPT_PUBLISH},
        {"pub-rate", required_argument, NULL, OPT_PUB_RATE},
        {"gateway-pids", required_argument, NULL, OPT_GW_PIDS},
        {"notify-url", required_argument, NULL, OPT_NOTIFY_URL},
        {"notify-rate", required_argument, NULL, OPT_NOTIFY_RATE},
        {"notify-count", required_argument, NULL, OPT_NOTIFY_COUNT},
        {"notify-conns", required_argument, NULL, OPT_NOTIFY_CONNS},
        {"drain", required_argument, NULL, OPT_DRAIN},
        {"handshake-timeout", required_argument, NULL, OPT_HS_TIMEOUT},
        {"join-timeout", required_argument, NULL, OPT_JOIN_TIMEOUT},
        {"inflight", required_argument, NULL, OPT_INFLIGHT},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    int opt;
    while ((opt = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
        switch (opt) {
        case OPT_HOST:
            snprintf(O.host, sizeof(O.host), "%s", optarg);
            break;
        case OPT_PORT:
            O.ports[0] = atoi(optarg);
            O.nports = 1;
            break;
        case OPT_PORTS:
            O.nports = hl_parse_list(optarg, O.ports, HL_MAX_PORTS);
            break;
        case OPT_CONNS:
            O.conns = (uint32_t)strtoul(optarg, NULL, 10);
            break;
        case OPT_PROCS:
            O.procs = atoi(optarg);
            break;
        case OPT_SRC_FROM:
            O.src_from = atoi(optarg);
            break;
        case OPT_SRC_TO:
            O.src_to = atoi(optarg);
            break;
        case OPT_USERS:
            O.users = (uint32_t)strtoul(optarg, NULL, 10);
            break;
        case OPT_ROOM:
            O.room = optarg;
            break;
        case OPT_RATE:
            O.rate = atof(optarg);
            break;
        case OPT_HOLD:
            O.hold_s = atof(optarg);
            break;
        case OPT_PUBLISH:
            O.publish = (uint32_t)strtoul(optarg, NULL, 10);
            break;
        case OPT_PUB_RATE:
            O.pub_rate = atof(optarg);
            break;
        case OPT_GW_PIDS:
            O.ngw_pids = hl_parse_list(optarg, O.gw_pids, HL_MAX_PIDS);
            break;
        case OPT_NOTIFY_URL:
            O.notify_url = optarg;
            break;
        case OPT_NOTIFY_RATE:
            O.notify_rate = atof(optarg);
            break;
        case OPT_NOTIFY_COUNT:
            O.notify_count = (uint32_t)strtoul(optarg, NULL, 10);
            break;
        case OPT_NOTIFY_CONNS:
            O.notify_conns = atoi(optarg);
            break;
        case OPT_DRAIN:
            O.drain_s = atof(optarg);
            break;
        case OPT_HS_TIMEOUT:
            O.handshake_timeout_s = atof(optarg);
            break;
        case OPT_JOIN_TIMEOUT:
            O.join_timeout_s = atof(optarg);
            break;
        case OPT_INFLIGHT:
            O.inflight_max = (uint32_t)strtoul(optarg, NULL, 10);
            break;
        case 'h':
            hl_usage(argv[0]);
            return 0;
        default:
            hl_usage(argv[0]);
            return 1;
        }
    }
    if (O.procs < 1 || O.procs > HL_MAX_PROCS || O.nports < 1 || O.rate <= 0 || O.pub_rate <= 0 ||
        O.notify_rate <= 0 || O.notify_conns < 1 || O.notify_conns > 1000 || O.inflight_max < 1) {
        fprintf(stderr, "herald-load: invalid option value\n");
        return 1;
    }
    if (O.src_from > 0 && (O.src_to < O.src_from || O.src_to > 254)) {
        fprintf(stderr, "herald-load: --src-to must be in [--src-from, 254]\n");
        return 1;
    }
    if (O.room != NULL && strpbrk(O.room, "\"\\") != NULL) {
        fprintf(stderr, "herald-load: --room must not contain quotes or backslashes\n");
        return 1;
    }
    if (O.notify_url != NULL && hl_parse_url(O.notify_url) != 0) {
        fprintf(stderr, "herald-load: --notify-url must be http://host:port/path\n");
        return 1;
    }
    if (O.notify_url == NULL)
        O.notify_count = 0;
    struct rlimit rl;
    getrlimit(RLIMIT_NOFILE, &rl);
    uint32_t per = (O.conns + (uint32_t)O.procs - 1) / (uint32_t)O.procs;
    if ((rlim_t)per + (rlim_t)O.notify_conns + 32 > rl.rlim_cur) {
        fprintf(stderr,
                "herald-load: %u connections per process exceed the open file limit %lu: "
                "raise --procs\n",
                per, (unsigned long)rl.rlim_cur);
        return 1;
    }
    O.phase_timeout_s =
        (double)O.conns / O.rate + O.handshake_timeout_s + (O.room ? O.join_timeout_s : 0) + 60;
    signal(SIGPIPE, SIG_IGN);

    uint64_t rss_before = hl_gateway_rss();
    NC = O.procs;
    C = hr_calloc((size_t)NC, sizeof(*C));
    signal(SIGINT, hl_on_signal);
    signal(SIGTERM, hl_on_signal);
    for (int i = 0; i < NC; i++) {
        int down[2], up[2];
        if (pipe2(down, O_CLOEXEC) != 0 || pipe2(up, O_CLOEXEC) != 0) {
            perror("pipe");
            hl_on_signal(SIGTERM);
        }
        uint32_t first = (uint32_t)((uint64_t)O.conns * (uint64_t)i / (uint64_t)NC);
        uint32_t last = (uint32_t)((uint64_t)O.conns * (uint64_t)(i + 1) / (uint64_t)NC);
        pid_t pid = fork();
        if (pid < 0) {
            perror("fork");
            hl_on_signal(SIGTERM);
        }
        if (pid == 0) {
            signal(SIGINT, SIG_DFL);
            signal(SIGTERM, SIG_DFL);
            prctl(PR_SET_PDEATHSIG, SIGKILL);
            for (int j = 0; j < i; j++) {
                close(C[j].cmd_fd);
                close(C[j].rep_fd);
            }
            close(down[1]);
            close(up[0]);
            _exit(hl_worker_run(i, first, last - first, down[0], up[1]));
        }
        close(down[0]);
        close(up[1]);
        C[i].pid = pid;
        C[i].cmd_fd = down[1];
        C[i].rep_fd = up[0];
    }

    fprintf(stderr, "herald-load: connecting %u sockets with %d processes at %.0f/s\n", O.conns, NC,
            O.rate);
    uint64_t t_conn = hr_mono_us();
    if (hl_wait_all(HL_REP_CONNECTED, -1, O.phase_timeout_s) != 0)
        fprintf(stderr, "herald-load: connect phase timed out\n");
    double connect_s = (double)(hr_mono_us() - t_conn) / 1e6;
    uint64_t ok = 0, failed = 0, join_ok = 0, join_failed = 0, join_unacked = 0;
    char join_err[32] = "";
    for (int i = 0; i < NC; i++) {
        ok += C[i].rep.conn_ok;
        failed += C[i].rep.conn_failed;
        join_ok += C[i].rep.join_ok;
        join_failed += C[i].rep.join_failed;
        join_unacked += C[i].rep.join_unacked;
        if (C[i].rep.join_err_code[0])
            memcpy(join_err, C[i].rep.join_err_code, sizeof(join_err));
    }
    fprintf(stderr,
            "herald-load: connected ok=%" PRIu64 " failed=%" PRIu64 " in %.1fs; joined ok=%" PRIu64
            " failed=%" PRIu64 " unacked=%" PRIu64 "\n",
            ok, failed, connect_s, join_ok, join_failed, join_unacked);
    hl_msleep(1.0); /* let the gateways finish their per-socket work before sampling */
    uint64_t rss_after = hl_gateway_rss();
    char rss_each[HL_MAX_PIDS * 12] = "";
    for (int i = 0, off = 0; i < O.ngw_pids && off < (int)sizeof(rss_each) - 12; i++)
        off += snprintf(rss_each + off, sizeof(rss_each) - (size_t)off, "%s%" PRIu64, i ? "," : "",
                        hl_proc_rss_kib(O.gw_pids[i]));
    hl_msleep(O.hold_s > 1.0 ? O.hold_s - 1.0 : 0);

    int join_unsupported = O.room != NULL && join_ok == 0 && join_unacked == 0 && join_failed > 0 &&
                           strcmp(join_err, "unknown_type") == 0;
    double phase_s = 0;
    int phase_timeouts = 0;
    uint64_t chat_expect = 0;
    if (O.publish > 0 && O.room != NULL && !join_unsupported) {
        fprintf(stderr, "herald-load: publishing %u messages at %.1f/s\n", O.publish, O.pub_rate);
        hl_send_cmd(0, 'P');
        uint64_t t = hr_mono_us();
        if (hl_wait_all(HL_REP_PHASE_DONE, 0, O.publish / O.pub_rate + 60) != 0)
            phase_timeouts++;
        phase_s = (double)(hr_mono_us() - t) / 1e6;
        chat_expect = C[0].rep.pub_sent * (join_ok + join_unacked);
        hl_drain(chat_expect);
    }
    if (O.notify_count > 0) {
        C[0].phase_done = 0;
        fprintf(stderr, "herald-load: posting %u notifications at %.0f/s\n", O.notify_count,
                O.notify_rate);
        hl_send_cmd(0, 'N');
        uint64_t t = hr_mono_us();
        if (hl_wait_all(HL_REP_PHASE_DONE, 0, O.notify_count / O.notify_rate + 60) != 0)
            phase_timeouts++;
        phase_s = (double)(hr_mono_us() - t) / 1e6;
        hl_drain(chat_expect + C[0].rep.notify_rx_expected);
    }
    for (int i = 0; i < NC; i++)
        hl_send_cmd(i, 'S');
    int unreported = hl_wait_all(HL_REP_RESULT, -1, 30) != 0;
    if (unreported)
        fprintf(stderr, "herald-load: some workers did not report\n");
    for (int i = 0; i < NC; i++) {
        int st;
        if (!C[i].done)
            kill(C[i].pid, SIGKILL);
        waitpid(C[i].pid, &st, 0);
        C[i].pid = 0;
    }

    /* Aggregate. */
    hl_report_t *T = hr_calloc(1, sizeof(*T));
    uint64_t chat_last = 0, notify_last_rx = 0, pub_first = UINT64_MAX, notify_first = UINT64_MAX,
             notify_last = 0, load_rss = 0;
    for (int i = 0; i < NC; i++) {
        hl_report_t *r = &C[i].rep;
        T->conn_ok += r->conn_ok;
        T->conn_failed += r->conn_failed;
        T->conn_timeouts += r->conn_timeouts;
        T->dropped += r->dropped;
        T->frames_rx += r->frames_rx;
        T->bytes_rx += r->bytes_rx;
        T->pings_rx += r->pings_rx;
        T->errors_rx += r->errors_rx;
        T->chat_rx += r->chat_rx;
        T->pub_sent += r->pub_sent;
        T->pub_errors += r->pub_errors;
        T->notify_sent += r->notify_sent;
        T->notify_ok += r->notify_ok;
        T->notify_failed += r->notify_failed;
        T->notify_rx += r->notify_rx;
        T->notify_rx_expected += r->notify_rx_expected;
        if (r->notify_last_ok_us > T->notify_last_ok_us)
            T->notify_last_ok_us = r->notify_last_ok_us;
        if (r->notify_max_lag_us > T->notify_max_lag_us)
            T->notify_max_lag_us = r->notify_max_lag_us;
        if (r->chat_last_rx_us > chat_last)
            chat_last = r->chat_last_rx_us;
        if (r->notify_last_rx_us > notify_last_rx)
            notify_last_rx = r->notify_last_rx_us;
        if (r->pub_first_us && r->pub_first_us < pub_first)
            pub_first = r->pub_first_us;
        if (r->notify_first_us && r->notify_first_us < notify_first)
            notify_first = r->notify_first_us;
        if (r->notify_last_us > notify_last)
            notify_last = r->notify_last_us;
        load_rss += r->self_rss_kib;
        if (r->last_close_code)
            T->last_close_code = r->last_close_code;
        if (r->last_errno)
            T->last_errno = r->last_errno;
        if (r->notify_last_status)
            T->notify_last_status = r->notify_last_status;
        if (r->last_err_code[0])
            memcpy(T->last_err_code, r->last_err_code, sizeof(T->last_err_code));
        hl_hist_merge(&T->h_chat, &r->h_chat);
        hl_hist_merge(&T->h_notify, &r->h_notify);
        hl_hist_merge(&T->h_post, &r->h_post);
        hl_hist_merge(&T->h_post_svc, &r->h_post_svc);
        hl_hist_merge(&T->h_send_lag, &r->h_send_lag);
    }

    hl_failures_t F = {0};
    if (T->conn_ok < O.conns)
        hl_fail(&F,
                "%" PRIu64 " of %u connections not established (%" PRIu64 " failed, %" PRIu64
                " timed out)",
                O.conns - T->conn_ok, O.conns, T->conn_failed, T->conn_timeouts);
    if (T->dropped > 0)
        hl_fail(&F, "%" PRIu64 " connections dropped by the server", T->dropped);
    if (O.room != NULL && !join_unsupported && (join_failed > 0 || join_unacked > 0))
        hl_fail(&F, "%" PRIu64 " joins failed, %" PRIu64 " unanswered", join_failed, join_unacked);
    if (phase_timeouts > 0)
        hl_fail(&F, "%d send phase(s) timed out", phase_timeouts);
    if (unreported)
        hl_fail(&F, "some workers did not report");
    printf("connections_target=%u\n", O.conns);
    printf("connections_ok=%" PRIu64 "\n", T->conn_ok);
    printf("connections_failed=%" PRIu64 "\n", T->conn_failed);
    printf("connections_timed_out=%" PRIu64 "\n", T->conn_timeouts);
    printf("connections_dropped=%" PRIu64 "\n", T->dropped);
    printf("connect_seconds=%.2f\n", connect_s);
    if (T->last_errno)
        printf("last_socket_error=\"%s\"\n", strerror(T->last_errno));
    if (T->last_close_code)
        printf("last_close_code=%d\n", T->last_close_code);
    printf("load_rss_kib=%" PRIu64 "\n", load_rss);
    if (O.ngw_pids > 0) {
        printf("gateway_processes=%d\n", O.ngw_pids);
        printf("gateway_rss_kib_before=%" PRIu64 "\n", rss_before);
        printf("gateway_rss_kib_after=%" PRIu64 "\n", rss_after);
        printf("gateway_rss_kib_after_each=%s\n", rss_each);
        printf("rss_per_conn_bytes=%" PRIu64 "\n",
               T->conn_ok
                   ? (rss_after > rss_before ? (rss_after - rss_before) * 1024 / T->conn_ok : 0)
                   : 0);
    }
    printf("frames_received=%" PRIu64 "\n", T->frames_rx);
    printf("server_pings_received=%" PRIu64 "\n", T->pings_rx);
    printf("error_frames_received=%" PRIu64 "\n", T->errors_rx);
    if (T->last_err_code[0])
        printf("last_error_code=%s\n", T->last_err_code);
    if (O.room != NULL) {
        printf("join_ok=%" PRIu64 "\njoin_failed=%" PRIu64 "\njoin_unacked=%" PRIu64 "\n", join_ok,
               join_failed, join_unacked);
        if (join_err[0])
            printf("join_error=%s\n", join_err);
    }
    if (join_unsupported) {
        printf("publish_skipped=\"gateway answered join with error unknown_type\"\n");
    } else if (O.publish > 0 && O.room != NULL) {
        uint64_t members = join_ok + join_unacked;
        hl_fantab_t all;
        hl_fantab_init(&all, O.publish);
        for (int i = 0; i < NC; i++)
            for (uint32_t k = 0; k < C[i].rep.nfan; k++)
                hl_fantab_add(&all, C[i].fans[k].ts, C[i].fans[k].count, C[i].fans[k].max_us);
        hl_hist_t *h_all = hr_calloc(1, sizeof(*h_all));
        uint64_t complete = 0, seen = 0;
        for (uint32_t k = 0; k < all.cap; k++) {
            if (all.slot[k].ts == 0)
                continue;
            seen++;
            if (all.slot[k].count >= members) {
                complete++;
                hl_hist_add(h_all, all.slot[k].max_us);
            }
        }
        double span = chat_last > pub_first && pub_first != UINT64_MAX
                          ? (double)(chat_last - pub_first) / 1e6
                          : 0;
        printf("room_members=%" PRIu64 "\n", members);
        printf("publish_sent=%" PRIu64 "\n", T->pub_sent);
        printf("publish_errors=%" PRIu64 "\n", T->pub_errors);
        printf("publish_seconds=%.2f\n", phase_s);
        printf("messages_seen=%" PRIu64 "\n", seen);
        printf("messages_delivered_to_all=%" PRIu64 "\n", complete);
        /* A publish answered with an error (rate_limited, ...) owes no frames. */
        uint64_t owed =
            (T->pub_sent - (T->pub_errors < T->pub_sent ? T->pub_errors : T->pub_sent)) * members;
        printf("chat_frames_received=%" PRIu64 "\n", T->chat_rx);
        printf("chat_frames_expected=%" PRIu64 "\n", owed);
        printf("chat_frames_lost=%" PRIu64 "\n", owed > T->chat_rx ? owed - T->chat_rx : 0);
        if (T->pub_sent < O.publish)
            hl_fail(&F, "published %" PRIu64 " of %u", T->pub_sent, O.publish);
        if (T->pub_errors > 0)
            hl_fail(&F, "%" PRIu64 " publishes answered with an error", T->pub_errors);
        if (T->chat_rx < owed)
            hl_fail(&F, "%" PRIu64 " chat frames lost", owed - T->chat_rx);
        if (complete < T->pub_sent)
            hl_fail(&F, "%" PRIu64 " messages did not reach every member", T->pub_sent - complete);
        printf("frames_per_sec=%.0f\n", span > 0 ? (double)T->chat_rx / span : 0);
        hl_print_hist("latency_us", &T->h_chat);
        hl_print_hist("all_delivered_us", h_all);
        hr_free(h_all);
        hr_free(all.slot);
    }
    if (O.notify_count > 0) {
        double span = notify_last > notify_first && notify_first != UINT64_MAX
                          ? (double)(notify_last - notify_first) / 1e6
                          : 0;
        double rx_span = notify_last_rx > notify_first && notify_first != UINT64_MAX
                             ? (double)(notify_last_rx - notify_first) / 1e6
                             : 0;
        /* Accepted per second, from the first send to the last 202. */
        double ok_span = T->notify_last_ok_us > notify_first && notify_first != UINT64_MAX
                             ? (double)(T->notify_last_ok_us - notify_first) / 1e6
                             : 0;
        printf("notify_target=%u\n", O.notify_count);
        printf("notify_sent=%" PRIu64 "\n", T->notify_sent);
        printf("notify_accepted=%" PRIu64 "\n", T->notify_ok);
        printf("notify_failed=%" PRIu64 "\n", T->notify_failed);
        if (T->notify_last_status)
            printf("notify_last_status=%d\n", T->notify_last_status);
        printf("notify_rate_sent=%.0f\n", span > 0 ? (double)(T->notify_sent - 1) / span : 0);
        printf("notify_rate_achieved=%.0f\n", ok_span > 0 ? (double)T->notify_ok / ok_span : 0);
        printf("notify_max_lag_us=%" PRIu64 "\n", T->notify_max_lag_us);
        hl_print_hist("notify_post_rtt_us", &T->h_post);
        hl_print_hist("notify_post_service_us", &T->h_post_svc);
        hl_print_hist("notify_send_lag_us", &T->h_send_lag);
        printf("notify_frames_received=%" PRIu64 "\n", T->notify_rx);
        printf("notify_frames_expected=%" PRIu64 "\n", T->notify_rx_expected);
        printf("notify_frames_lost=%" PRIu64 "\n",
               T->notify_rx_expected > T->notify_rx ? T->notify_rx_expected - T->notify_rx : 0);
        printf("notify_frames_per_sec=%.0f\n", rx_span > 0 ? (double)T->notify_rx / rx_span : 0);
        hl_print_hist("notify_latency_us", &T->h_notify);
        if (T->notify_ok < O.notify_count)
            hl_fail(&F,
                    "%" PRIu64 " of %u POSTs not accepted (%" PRIu64 " answered otherwise, %" PRIu64
                    " not sent)",
                    O.notify_count - T->notify_ok, O.notify_count, T->notify_failed,
                    O.notify_count - T->notify_sent);
        if (T->notify_rx < T->notify_rx_expected)
            hl_fail(&F, "%" PRIu64 " notification frames lost",
                    T->notify_rx_expected - T->notify_rx);
    }
    if (join_unsupported)
        hl_fail(&F, "join refused with unknown_type");
    printf("run_ok=%d\n", F.n == 0);
    if (F.n > 0)
        printf("failures=\"%s\"\n", F.text);
    fflush(stdout);
    for (int i = 0; i < NC; i++)
        hr_free(C[i].fans);
    /* 3: rooms unsupported; 2: the run missed something it expected (a
     * connection, a request, a frame): its numbers describe a failed run. */
    int rc = join_unsupported ? 3 : T->conn_ok == 0 ? 1 : F.n > 0 ? 2 : 0;
    if (F.n > 0)
        fprintf(stderr, "herald-load: FAILED: %s\n", F.text);
    hr_free(T);
    hr_free(C);
    return rc;
}
