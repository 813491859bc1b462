/*
 * herald-load's shared part: options, the latency histogram, the fan-out
 * table and the report record a worker sends its parent (hl_common.c), and
 * the worker's entry point (hl_worker.c). herald_load.c is the parent.
 */
#ifndef HL_COMMON_H
#define HL_COMMON_H

#include "herald/hr_alloc.h"
#include "herald/hr_time.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <math.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define HL_MAX_PORTS 32
#define HL_MAX_PIDS 64
#define HL_MAX_PROCS 64
#define HL_RXCAP (1u << 20) /* shared read buffer per process; also the largest frame */
#define HL_MAX_TX 4096      /* largest client frame payload this tool sends */

/* ---- options ------------------------------------------------------------ */

typedef struct {
    char host[64];
    int ports[HL_MAX_PORTS];
    int nports;
    uint32_t conns;
    int procs;
    int src_from, src_to; /* 0: let the kernel pick the source address */
    uint32_t users;       /* 0: one user per connection */
    const char *room;     /* borrowed from argv */
    double rate;          /* new connections per second, all workers together */
    double hold_s;
    uint32_t publish;
    double pub_rate;
    int gw_pids[HL_MAX_PIDS];
    int ngw_pids;
    const char *notify_url; /* borrowed from argv */
    char notify_host[64];
    int notify_port;
    char notify_path[128];
    double notify_rate;
    uint32_t notify_count;
    int notify_conns;
    double drain_s;
    double handshake_timeout_s;
    double join_timeout_s;
    uint32_t inflight_max; /* connections being set up at once, per worker */
    double phase_timeout_s;
} hl_opts_t;

/** The options, set by main before the workers fork. */
extern hl_opts_t O;

/* ---- time ------------------------------------------------------------- */

/* ---- latency histogram: 1 us buckets below 1024 us, then 64 per octave (1.6 %) --- */

#define HL_HIST_LIN 1024
#define HL_HIST_SUB 64
#define HL_HIST_N (HL_HIST_LIN + 31 * HL_HIST_SUB)

typedef struct {
    uint64_t n, max, sum;
    uint64_t b[HL_HIST_N];
} hl_hist_t;

/* ---- fan-out table: per published message, receivers and slowest latency --- */

typedef struct {
    uint64_t ts; /* send timestamp = message key; 0 = empty slot */
    uint32_t count;
    uint32_t max_us;
} hl_fan_t;

typedef struct {
    hl_fan_t *slot; /* owned */
    uint32_t cap;   /* power of two */
    uint32_t used;
} hl_fantab_t;

/* ---- reports, worker → parent ------------------------------------------ */

enum { HL_REP_CONNECTED = 1, HL_REP_PHASE_DONE = 2, HL_REP_RESULT = 3, HL_REP_PROGRESS = 4 };

typedef struct {
    uint32_t kind;
    uint32_t worker;
    uint32_t nfan; /* hl_fan_t records that follow (RESULT only) */
    int32_t last_close_code;
    int32_t last_errno;
    int32_t notify_last_status;
    uint64_t conn_ok, conn_failed, conn_timeouts, dropped;
    uint64_t join_ok, join_failed, join_unacked;
    uint64_t connect_us;   /* connect phase duration */
    uint64_t self_rss_kib; /* this worker at the end of the connect phase */
    uint64_t frames_rx, bytes_rx, pings_rx, errors_rx;
    uint64_t chat_rx, chat_first_rx_us, chat_last_rx_us;
    uint64_t pub_sent, pub_errors, pub_first_us, pub_last_us;
    uint64_t notify_sent, notify_ok, notify_failed, notify_first_us, notify_last_us;
    uint64_t notify_rx, notify_last_rx_us, notify_max_lag_us;
    uint64_t notify_last_ok_us;  /* wall clock of the last 202 */
    uint64_t notify_rx_expected; /* frames the accepted POSTs owe: sockets of each target user */
    char join_err_code[32];
    char last_err_code[32];
    /* Latencies start at the scheduled send time, not the actual one: a send
     * delayed because the sockets were all busy counts its wait (no
     * coordinated omission). */
    hl_hist_t h_chat;     /* publish scheduled → each receiver */
    hl_hist_t h_notify;   /* POST scheduled → each socket */
    hl_hist_t h_post;     /* POST scheduled → HTTP 202 (other answers are not in it) */
    hl_hist_t h_post_svc; /* POST written → HTTP 202: the server's part alone */
    hl_hist_t h_send_lag; /* POST scheduled → written: the client's own lateness */
} hl_report_t;

/* Wall clock in microseconds: the timestamp carried in messages. */
uint64_t hl_rt_us(void);
void hl_hist_add(hl_hist_t *h, uint64_t v);
void hl_hist_merge(hl_hist_t *into, const hl_hist_t *h);
/* The value at quantile q (0..1), never above the exact maximum; 0 when empty. */
uint64_t hl_hist_q(const hl_hist_t *h, double q);
void hl_fantab_init(hl_fantab_t *t, uint32_t expect);
/* Adds count receivers with slowest latency max_us to message ts; drops when full. */
void hl_fantab_add(hl_fantab_t *t, uint64_t ts, uint32_t count, uint32_t max_us);
int hl_write_all(int fd, const void *buf, size_t n);
int hl_read_all(int fd, void *buf, size_t n);
uint64_t hl_proc_rss_kib(int pid);

/** A worker process: connections [first, first + count), commands on cmd_fd, reports on rep_fd. */
int hl_worker_run(int id, uint32_t first, uint32_t count, int cmd_fd, int rep_fd);

#endif
