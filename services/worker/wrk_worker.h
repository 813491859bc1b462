/*
 * Worker: the durable path. Reads the notifications stream as a member of the
 * workers' consumer group and stores each batch in PostgreSQL in one
 * transaction (COPY into a temp staging table, INSERT ... ON CONFLICT (id) DO
 * NOTHING), then XACKs the batch. An entry is acked only after the commit that
 * holds its row, so a crash at any point leaves it pending, and the retry is
 * harmless because the insert ignores ids already stored: nothing accepted is
 * lost, nothing is stored twice.
 *
 * The worker is single-threaded and uses blocking clients (hiredis's
 * redisContext, libpq) with timeouts; a stop flag set by a signal handler is
 * checked between steps, and a blocking XREADGROUP returns at least every
 * worker.block_ms.
 */
#ifndef HERALD_WRK_WORKER_H
#define HERALD_WRK_WORKER_H

#include "herald/hr_config.h"

#include <signal.h>
#include <stddef.h>
#include <stdint.h>

typedef struct {
    char *redis_url;        /* owned */
    int redis_timeout_ms;   /* connect, and reply margin beyond block_ms */
    char *postgres_url;     /* owned: libpq conninfo or URI */
    char *consumer;         /* owned: "" means <hostname>-<pid> */
    int batch_size;         /* entries per XREADGROUP and per transaction */
    int block_ms;           /* XREADGROUP BLOCK */
    int claim_idle_ms;      /* XAUTOCLAIM entries idle this long; 0 disables */
    int flush_ms;           /* store a batch at batch_size entries or this age */
    int max_deliveries;     /* more deliveries than this: dead letter */
    int receipt_retry_ms;   /* retry a receipt whose row is missing after this */
    int receipt_max_age_ms; /* dead-letter a receipt still without its row */
    int maintenance_ms;     /* trim streams and remove gone consumers this often */
    int consumer_gc_ms;     /* a consumer idle this long with 0 pending is removed */
    char *migrations_dir;   /* owned */
    char *host;             /* owned: address of the /metrics, /healthz, /readyz listener */
    int port;               /* its port; 0 picks one */
    char *log_level;        /* owned */
} wrk_config_t;

/** The settings of herald-worker, for hr_config_load(). */
extern const hr_cfg_field_t wrk_config_fields[];
extern const size_t wrk_config_nfields;

/** Counters since start, for logs and tests. */
typedef struct {
    uint64_t batches;  /* committed and acked */
    uint64_t rows;     /* rows sent to PostgreSQL in committed batches */
    uint64_t inserted; /* of those, rows that were new (not already stored) */
    uint64_t rejected; /* entries acked without a row (malformed) */
    uint64_t claimed;  /* entries taken over from other consumers */
    uint64_t dead;     /* entries moved to the dead-letter stream */
    uint64_t receipts; /* receipts applied */
    uint64_t trimmed;  /* stream entries trimmed */
} wrk_stats_t;

/**
 * Connects to PostgreSQL and applies pending migrations from
 * cfg->migrations_dir. Sets *applied. Returns 0, or HR_ERR with err filled.
 */
int wrk_migrate(const wrk_config_t *cfg, int *applied, char *err, size_t errlen);

/**
 * Moves entries of HR_STREAM_DEAD_LETTER back to the stream they came from
 * (their original fields, a new entry id), each atomically (XADD + XDEL), up
 * to max entries (0: all). Sets *replayed. Returns 0 or HR_ERR with err filled.
 */
int wrk_replay_dead_letter(const wrk_config_t *cfg, long max, long *replayed, char *err,
                           size_t errlen);

typedef struct wrk_worker_s wrk_worker_t;

/**
 * Checks the config and prepares a worker; connects nothing yet. stop
 * (borrowed) is polled between steps: set it to make wrk_worker_run() finish
 * the batch in flight and return. Returns NULL with err filled on a bad config.
 */
wrk_worker_t *wrk_worker_create(const wrk_config_t *cfg, volatile sig_atomic_t *stop, char *err,
                                size_t errlen);

/**
 * Runs until *stop: migrates at start, then reads, stores and acks batches,
 * reconnecting with backoff through Redis and PostgreSQL outages and
 * retrying a migration that fails (logged at error level each time). Returns
 * 0 after a clean stop, HR_ERR on a fatal error, logged.
 */
int wrk_worker_run(wrk_worker_t *w);

/**
 * One step of the loop: fetch a batch if none is in flight, then commit and
 * ack it, connecting as needed. After a failure it sleeps the backoff delay
 * (returning early if *stop is set) and returns 0 with the batch kept for the
 * next step. Returns HR_ERR on a fatal error.
 */
int wrk_worker_step(wrk_worker_t *w);

/** The consumer name in use (borrowed). */
const char *wrk_worker_consumer(const wrk_worker_t *w);
/** Counters since create. */
void wrk_worker_stats(const wrk_worker_t *w, wrk_stats_t *out);
/** Closes the connections and frees the worker; a batch in flight stays pending in Redis. */
void wrk_worker_destroy(wrk_worker_t *w);

#endif
