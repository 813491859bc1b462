/*
 * What the worker's stages share: the worker struct and the functions one
 * stage calls in another. Private to services/worker; wrk_worker.h is the
 * public face.
 */
#ifndef HERALD_WRK_INTERNAL_H
#define HERALD_WRK_INTERNAL_H

#include "wrk_batch.h"
#include "wrk_worker.h"
#include "herald/hr_metrics.h"
#include "herald/hr_redis.h"

#include <hiredis/hiredis.h>
#include <libpq-fe.h>

/* One dependency's health, so an outage is logged once, not once per retry. */
typedef struct {
    const char *name; /* "redis" or "postgres", static */
    int down;         /* an outage was logged and has not ended */
    int ever_up;      /* connected at least once (first connect is logged) */
    uint64_t since_ms;
    unsigned attempts;
    hr_backoff_t backoff;
} wrk_link_t;

/* herald_worker_rows_inserted_total{table}: the label order. */
enum { WRK_T_NOTIFY = 0, WRK_T_ROOM = 1, WRK_T_RECEIPT = 2, WRK_NTABLES = 3 };

struct event_base;
typedef struct hr_httpd_s hr_httpd_t;

/* The metric slots of proto/metrics.md's worker section (borrowed from reg). */
typedef struct {
    hr_metrics_t *reg;  /* owned */
    hr_counter_t *rows; /* [WRK_NTABLES] */
    hr_counter_t *batches, *acks, *claims, *dead;
    hr_histogram_t *batch_size, *commit_seconds;
    hr_metrics_readiness_t readiness; /* slots borrowed from reg; dep_up: [redis, postgres] */
    hr_gauge_t *stream_len;           /* [notifications, room_messages, dead_letters] */
    hr_gauge_t *pending, *lag;
} wrk_metrics_t;

struct wrk_worker_s {
    const wrk_config_t *cfg;     /* borrowed */
    volatile sig_atomic_t *stop; /* borrowed */
    char *consumer;              /* owned */
    hr_redis_addr_t addr;        /* owned */
    redisContext *redis;         /* owned; NULL when disconnected */
    PGconn *pg;                  /* owned; NULL when disconnected */
    int migrated;                /* migrations ran on some connection */
    int migrate_failed;          /* the last try failed on a live connection: retried first */
    wrk_link_t redis_link, pg_link;
    int read_pending[WRK_NSTREAMS]; /* own pending entries not yet re-read since connect */
    char pending_cursor[WRK_NSTREAMS][WRK_SID_MAX];
    uint64_t next_claim_ms[WRK_NSTREAMS]; /* monotonic */
    char claim_cursor[WRK_NSTREAMS][WRK_SID_MAX];
    uint64_t next_maintain_ms; /* monotonic */
    wrk_batch_t batch;         /* the batch in flight */
    wrk_buf_t copy;            /* COPY text, reused */
    const char **argv;         /* owned array, XACK arguments (batch_size + 3) */
    size_t *argvlen;           /* owned */
    const char **kv;           /* owned array, one entry's fields (borrowed strings) */
    size_t *kvlen;             /* owned */
    size_t kvcap;
    int notify_backlog;        /* the last read of notifications returned a full count */
    char refused_state[8];     /* SQLSTATE of the last refusal of the batch in flight */
    unsigned refused_repeats;  /* consecutive refusals with that SQLSTATE */
    uint64_t redis_clock_ms;   /* Redis TIME in ms at redis_clock_mono; 0 if never read */
    uint64_t redis_clock_mono; /* hr_mono_ms() when it was read */
    char redis_run_id[48];     /* INFO run_id of the server connected to, "" if unknown */
    char batch_run_id[48];     /* redis_run_id when the batch in flight was read */
    wrk_stats_t stats;
    wrk_metrics_t m;
    struct event_base *base; /* owned: runs the HTTP listener between steps and in sleeps */
    hr_httpd_t *http;        /* owned */
    uint64_t next_probe_ms;  /* monotonic: next idle check of the PostgreSQL link */
};

/* ---- wrk_worker.c: links, logs, Redis connection ---- */
/* Room for a quoted request id (every byte may take a backslash). */
#define WRK_RID_LOG_MAX (2 * HR_REQUEST_ID_MAX + 1)
/**
 * The request id of entry e (HR_FIELD_REQUEST_ID, written by ingest) for a
 * log value inside quotes, in dst (WRK_RID_LOG_MAX bytes); "-" without one.
 */
const char *wrk_entry_rid(char *dst, const wrk_entry_t *e);
/** Copies s into a log-safe form: no quotes or control characters, bounded. */
const char *wrk_log_safe(char *dst, size_t cap, const char *s);
/** Makes err safe to log inside quotes, in place. */
void wrk_err_safe(char *err);
/** Records a failed attempt; only the first of an outage is logged. */
void wrk_link_fail(wrk_link_t *l, const char *error);
/** Records a success; logs "recovered" after an outage. */
void wrk_link_ok(wrk_link_t *l);
/** Closes the Redis connection. */
void wrk_redis_drop(wrk_worker_t *w);
/** One command; the reply (owned by the caller) or NULL after an I/O error (dropped, recorded). */
redisReply *wrk_redis_cmd(wrk_worker_t *w, int argc, const char **argv, const size_t *argvlen);
/** An error reply: recorded as an outage, the connection dropped. Returns HR_AGAIN. */
int wrk_redis_error(wrk_worker_t *w, const char *cmd, redisReply *r);
/** Creates the consumer group on every stream. 0 or HR_AGAIN. */
int wrk_redis_group(wrk_worker_t *w);
/** Schedules a re-read of this consumer's pending entries on every stream. */
void wrk_reread_pending(wrk_worker_t *w);
/**
 * Reads Redis TIME: the clock stream entry ids are made of, so a receipt's age
 * is measured on it, whatever the skew of this host's clock. 0 or HR_AGAIN.
 */
int wrk_redis_clock(wrk_worker_t *w);
/** Redis's clock now, in ms since the epoch (last TIME + monotonic time since). */
uint64_t wrk_redis_now_ms(const wrk_worker_t *w);
/** Makes w->redis usable. 0 or HR_AGAIN (outage recorded). */
int wrk_redis_ready(wrk_worker_t *w);

/* ---- wrk_store.c: PostgreSQL ---- */
/** Connects with the worker's bounds (timeouts, keepalives, UTF8). NULL with err filled. */
PGconn *wrk_pg_connect(const char *conninfo, char *err, size_t errlen);
/** Closes the PostgreSQL connection. */
void wrk_pg_drop(wrk_worker_t *w);
/** Makes w->pg usable (migrating on the first connection). 0 or HR_AGAIN. */
int wrk_pg_ready(wrk_worker_t *w);
/** Commits the batch's rows. 0 (batch committed), HR_AGAIN or HR_ERR. */
int wrk_commit(wrk_worker_t *w);

/* ---- wrk_reader.c: XREADGROUP, claims, cursors ---- */
/** The index of stream name n, or -1. */
int wrk_stream_index(const char *n, size_t len);
/** Fills the empty batch. 0 (the batch may be empty) or HR_AGAIN. */
int wrk_fetch(wrk_worker_t *w);
/**
 * Before a store attempt with PostgreSQL reachable: counts one attempt
 * (HR_KEY_WORKER_ATTEMPTS) for every re-delivered row of the batch not yet
 * counted, and rejects those past worker.max_deliveries. 0 or HR_AGAIN.
 */
int wrk_count_attempts(wrk_worker_t *w);
/** Takes back the attempts counted for this batch (PostgreSQL became unreachable). */
void wrk_uncount_attempts(wrk_worker_t *w);

/* ---- wrk_ack.c ---- */
/** Acks the committed batch and writes its dead letters; empties it. 0 or HR_AGAIN. */
int wrk_ack(wrk_worker_t *w);

/* ---- wrk_maintain.c ---- */
/** Trims the streams and removes gone consumers, every worker.maintenance_ms. */
void wrk_maintain(wrk_worker_t *w);

/* ---- wrk_http.c: /metrics, /healthz, /readyz ---- */
/** Registers the metrics and binds worker.host:worker.port. 0, or HR_ERR with err filled. */
int wrk_http_start(wrk_worker_t *w, char *err, size_t errlen);
/** Answers the HTTP requests that are ready, without blocking. */
void wrk_http_poll(wrk_worker_t *w);
/** Waits up to ms for HTTP requests and answers them. */
void wrk_http_wait(wrk_worker_t *w, uint32_t ms);
/** While idle: notices a PostgreSQL connection the server closed, reconnects a lost one. */
void wrk_pg_probe(wrk_worker_t *w);
/** Closes the listener and frees the registry. */
void wrk_http_stop(wrk_worker_t *w);

#endif
