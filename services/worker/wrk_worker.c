#include "wrk_worker.h"
#include "wrk_batch.h"
#include "hr_proto.h"
#include "herald/hr_alloc.h"
#include "herald/hr_core.h"
#include "herald/hr_log.h"
#include "herald/hr_pg.h"
#include "herald/hr_redis.h"
#include "herald/hr_time.h"

#include <dirent.h>
#include <hiredis/hiredis.h>
#include <inttypes.h>
#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

const hr_cfg_field_t wrk_config_fields[] = {
    /* redis.url: redis://[:password@]host[:port][/db] holding the notifications stream. */
    {"redis.url", HR_CFG_STR, offsetof(wrk_config_t, redis_url), "redis://127.0.0.1:6379", 0, 0},
    /* redis.timeout_ms: connect timeout, and how long past worker.block_ms a reply may take. */
    {"redis.timeout_ms", HR_CFG_INT, offsetof(wrk_config_t, redis_timeout_ms), "2000", 10, 600000},
    /* postgres.url: libpq conninfo ("host=... dbname=...") or postgresql:// URI. */
    {"postgres.url", HR_CFG_STR, offsetof(wrk_config_t, postgres_url),
     "host=127.0.0.1 port=5432 dbname=herald user=postgres", 0, 0},
    /* worker.consumer: name in the consumer group; empty means <hostname>-<pid>. */
    {"worker.consumer", HR_CFG_STR, offsetof(wrk_config_t, consumer), "", 0, 0},
    /* worker.batch_size: entries per XREADGROUP, rows per transaction. */
    {"worker.batch_size", HR_CFG_INT, offsetof(wrk_config_t, batch_size), "5000", 1, 10000},
    /* worker.flush_ms: a batch is stored once it holds batch_size entries or is this old. */
    {"worker.flush_ms", HR_CFG_INT, offsetof(wrk_config_t, flush_ms), "50", 0, 60000},
    /*
     * worker.max_deliveries: an entry delivered more often than this without
     * being stored (it crashed workers) goes to the dead-letter stream.
     */
    {"worker.max_deliveries", HR_CFG_INT, offsetof(wrk_config_t, max_deliveries), "10", 1, 1000},
    /* worker.receipt_retry_ms: how soon a receipt that found no row is tried again. */
    {"worker.receipt_retry_ms", HR_CFG_INT, offsetof(wrk_config_t, receipt_retry_ms), "2000", 10,
     86400000},
    /* worker.receipt_max_age_ms: a receipt still without its row this long after it was written is
       dead-lettered. */
    {"worker.receipt_max_age_ms", HR_CFG_INT, offsetof(wrk_config_t, receipt_max_age_ms), "3600000",
     1000, 604800000},
    /* worker.maintenance_ms: how often the streams are trimmed and gone consumers removed; 0
       disables. */
    {"worker.maintenance_ms", HR_CFG_INT, offsetof(wrk_config_t, maintenance_ms), "5000", 0,
     86400000},
    /* worker.consumer_gc_ms: a consumer idle this long with nothing pending is deleted from the
       group. */
    {"worker.consumer_gc_ms", HR_CFG_INT, offsetof(wrk_config_t, consumer_gc_ms), "600000", 1000,
     604800000},
    /* worker.block_ms: XREADGROUP BLOCK; also bounds how late a stop signal is seen. */
    {"worker.block_ms", HR_CFG_INT, offsetof(wrk_config_t, block_ms), "100", 1, 60000},
    /*
     * worker.claim_idle_ms: take over (XAUTOCLAIM) entries another consumer has
     * held this long without acking, e.g. a worker killed mid-batch whose
     * <hostname>-<pid> name will never come back; 0 disables.
     */
    {"worker.claim_idle_ms", HR_CFG_INT, offsetof(wrk_config_t, claim_idle_ms), "30000", 0,
     86400000},
    /* worker.migrations_dir: NNN_name.sql files applied at start and by --migrate. */
    {"worker.migrations_dir", HR_CFG_STR, offsetof(wrk_config_t, migrations_dir), "migrations", 0,
     0},
    /* log.level: debug|info|warn|error. */
    {"log.level", HR_CFG_STR, offsetof(wrk_config_t, log_level), "info", 0, 0},
};
const size_t wrk_config_nfields = HR_ARRAY_LEN(wrk_config_fields);

#define WRK_BACKOFF_MIN_MS 100
#define WRK_BACKOFF_MAX_MS 5000
#define WRK_SLEEP_SLICE_MS 50
#define WRK_COPY_CHUNK (1u << 20)
#define WRK_PG_CONNECT_TIMEOUT_S "5" /* libpq's connect_timeout; conninfo may override */

/*
 * The staging table lives in the session's temp schema: created once per
 * connection, emptied by every COMMIT, invisible to other sessions.
 */
#define WRK_STAGE "notifications_stage"
static const char wrk_sql_stage[] =
    "CREATE TEMP TABLE IF NOT EXISTS " WRK_STAGE
    " (LIKE notifications INCLUDING DEFAULTS) ON COMMIT DELETE ROWS";
static const char wrk_sql_copy[] = "COPY " WRK_STAGE " (" WRK_COPY_COLUMNS ") FROM STDIN";
static const char wrk_sql_insert[] =
    "INSERT INTO notifications (" WRK_COPY_COLUMNS ") SELECT " WRK_COPY_COLUMNS " FROM " WRK_STAGE
    " ON CONFLICT (id) DO NOTHING";
static const char wrk_sql_insert_one[] =
    "INSERT INTO notifications (" WRK_COPY_COLUMNS ") VALUES ($1, $2, $3, $4, $5, $6, $7)"
    " ON CONFLICT (id) DO NOTHING";
#define WRK_ROOM_STAGE "room_messages_stage"
static const char wrk_sql_room_stage[] =
    "CREATE TEMP TABLE IF NOT EXISTS " WRK_ROOM_STAGE
    " (LIKE room_messages INCLUDING DEFAULTS) ON COMMIT DELETE ROWS";
static const char wrk_sql_room_copy[] = "COPY " WRK_ROOM_STAGE " (" WRK_ROOM_COLUMNS ") FROM STDIN";
static const char wrk_sql_room_insert[] =
    "INSERT INTO room_messages (" WRK_ROOM_COLUMNS ") SELECT " WRK_ROOM_COLUMNS
    " FROM " WRK_ROOM_STAGE " ON CONFLICT (id) DO NOTHING";
static const char wrk_sql_room_insert_one[] =
    "INSERT INTO room_messages (" WRK_ROOM_COLUMNS ") VALUES ($1, $2, $3, $4, $5)"
    " ON CONFLICT (id) DO NOTHING";
/*
 * Receipts, $1 uuid[] and $2 ms since the epoch (bigint[]): sets delivered_at
 * (the earliest receipt of each id) where it is still NULL, and returns the
 * ids that have no row yet, so those receipts stay pending for a retry.
 */
static const char wrk_sql_receipts[] =
    "WITH r AS (SELECT t.id, min(to_timestamp(t.ms / 1000.0)) AS at"
    " FROM unnest($1::uuid[], $2::bigint[]) AS t(id, ms) GROUP BY t.id),"
    " u AS (UPDATE notifications n SET delivered_at = r.at FROM r"
    " WHERE n.id = r.id AND n.delivered_at IS NULL RETURNING n.id)"
    " SELECT r.id::text FROM r WHERE NOT EXISTS (SELECT 1 FROM notifications n WHERE n.id = r.id)";

/* One dependency's health, so an outage is logged once, not once per retry. */
typedef struct {
    const char *name; /* "redis" or "postgres", static */
    int down;         /* an outage was logged and has not ended */
    int ever_up;      /* connected at least once (first connect is logged) */
    uint64_t since_ms;
    unsigned attempts;
    hr_backoff_t backoff;
} wrk_link_t;

struct wrk_worker_s {
    const wrk_config_t *cfg;     /* borrowed */
    volatile sig_atomic_t *stop; /* borrowed */
    char *consumer;              /* owned */
    hr_redis_addr_t addr;        /* owned */
    redisContext *redis;         /* owned; NULL when disconnected */
    PGconn *pg;                  /* owned; NULL when disconnected */
    int migrated;                /* migrations ran on some connection */
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
    wrk_stats_t stats;
};

/* Copies s into a log-safe form: no quotes or control characters, bounded. */
static const char *
wrk_log_safe(char *dst, size_t cap, const char *s)
{
    size_t n = 0;
    for (; s != NULL && *s != '\0' && n + 1 < cap; s++)
        dst[n++] = (*s == '"') ? '\'' : ((unsigned char)*s < 0x20 ? ' ' : *s);
    dst[n] = '\0';
    return dst;
}

/* Makes err safe to log inside quotes, in place (see wrk_log_safe). */
static void
wrk_err_safe(char *err)
{
    for (; *err != '\0'; err++)
        *err = (*err == '"') ? '\'' : ((unsigned char)*err < 0x20 ? ' ' : *err);
}

static void
wrk_link_init(wrk_link_t *l, const char *name)
{
    memset(l, 0, sizeof(*l));
    l->name = name;
    hr_backoff_init(&l->backoff, WRK_BACKOFF_MIN_MS, WRK_BACKOFF_MAX_MS);
}

/* Records a failed attempt; only the first of an outage is logged. */
static void
wrk_link_fail(wrk_link_t *l, const char *error)
{
    l->attempts++;
    if (l->down)
        return;
    l->down = 1;
    l->since_ms = hr_mono_ms();
    char safe[512];
    hr_log_warn("unavailable", "dep=%s error=\"%s\" action=retry_with_backoff", l->name,
                wrk_log_safe(safe, sizeof(safe), error));
}

static void
wrk_link_ok(wrk_link_t *l)
{
    if (!l->ever_up)
        hr_log_info("connected", "dep=%s", l->name);
    l->ever_up = 1;
    if (l->down)
        hr_log_info("recovered", "dep=%s down_ms=%" PRIu64 " attempts=%u", l->name,
                    hr_mono_ms() - l->since_ms, l->attempts);
    l->down = 0;
    l->attempts = 0;
    hr_backoff_reset(&l->backoff);
}

/* Sleeps ms, in slices, returning early once a stop is requested. */
static void
wrk_sleep(wrk_worker_t *w, uint32_t ms)
{
    uint64_t end = hr_mono_ms() + ms;
    while (!*w->stop) {
        uint64_t now = hr_mono_ms();
        if (now >= end)
            return;
        uint64_t slice = end - now < WRK_SLEEP_SLICE_MS ? end - now : WRK_SLEEP_SLICE_MS;
        struct timespec ts = {0, (long)slice * 1000000L};
        nanosleep(&ts, NULL);
    }
}

static void
wrk_backoff_sleep(wrk_worker_t *w, wrk_link_t *l)
{
    wrk_sleep(w, hr_backoff_next(&l->backoff));
}

/* ---- PostgreSQL ---- */

/*
 * hr_pg_connect() with bounds: a connect timeout and TCP keepalives so a
 * vanished server cannot hang the worker forever, and client_encoding forced to
 * UTF8 because the COPY text is UTF-8. Settings in conninfo override the
 * defaults placed before it, except client_encoding placed after it.
 */
/* Server notices ("relation already exists, skipping") as log lines, not raw stderr. */
static void
wrk_pg_notice(void *arg, const char *message)
{
    HR_UNUSED(arg);
    char safe[512];
    wrk_log_safe(safe, sizeof(safe), message);
    for (size_t n = strlen(safe); n > 0 && safe[n - 1] == ' '; n--)
        safe[n - 1] = '\0';
    hr_log_debug("postgres_notice", "message=\"%s\"", safe);
}

static PGconn *
wrk_pg_connect(const char *conninfo, char *err, size_t errlen)
{
    const char *keys[] = {"connect_timeout",
                          "keepalives",
                          "keepalives_idle",
                          "keepalives_interval",
                          "keepalives_count",
                          "application_name",
                          "dbname",
                          "client_encoding",
                          NULL};
    const char *vals[] = {WRK_PG_CONNECT_TIMEOUT_S, "1",      "10",   "5", "3",
                          "herald-worker",          conninfo, "UTF8", NULL};
    PGconn *c = PQconnectdbParams(keys, vals, 1);
    if (c == NULL || PQstatus(c) != CONNECTION_OK) {
        snprintf(err, errlen, "%s", c ? PQerrorMessage(c) : "cannot allocate connection");
        err[strcspn(err, "\n")] = '\0';
        if (c)
            PQfinish(c);
        return NULL;
    }
    PQsetNoticeProcessor(c, wrk_pg_notice, NULL);
    return c;
}

static void
wrk_pg_drop(wrk_worker_t *w)
{
    if (w->pg != NULL)
        PQfinish(w->pg);
    w->pg = NULL;
}

/*
 * Makes w->pg usable: connects, migrates on the first connection of the
 * process, creates the staging table. Returns 0, HR_AGAIN on a transient
 * failure (outage recorded), or HR_ERR when a migration fails on a live
 * connection (logged; the schema needs a human).
 */
static int
wrk_pg_ready(wrk_worker_t *w)
{
    char err[512];
    if (w->pg != NULL && PQstatus(w->pg) == CONNECTION_OK)
        return 0;
    wrk_pg_drop(w);

    PGconn *c = wrk_pg_connect(w->cfg->postgres_url, err, sizeof(err));
    if (c == NULL) {
        wrk_link_fail(&w->pg_link, err);
        return HR_AGAIN;
    }
    if (!w->migrated) {
        int applied = 0;
        if (hr_pg_migrate(c, w->cfg->migrations_dir, &applied, err, sizeof(err)) != 0) {
            int live = PQstatus(c) == CONNECTION_OK;
            PQfinish(c);
            if (!live) {
                wrk_link_fail(&w->pg_link, err);
                return HR_AGAIN;
            }
            char safe[512];
            hr_log_error("migration_failed", "dir=%s error=\"%s\"", w->cfg->migrations_dir,
                         wrk_log_safe(safe, sizeof(safe), err));
            return HR_ERR;
        }
        hr_log_info("migrated", "applied=%d dir=%s", applied, w->cfg->migrations_dir);
        w->migrated = 1;
    }
    if (hr_pg_exec(c, wrk_sql_stage, err, sizeof(err)) != 0 ||
        hr_pg_exec(c, wrk_sql_room_stage, err, sizeof(err)) != 0) {
        PQfinish(c);
        wrk_link_fail(&w->pg_link, err);
        return HR_AGAIN;
    }
    w->pg = c;
    if (!w->pg_link.ever_up)
        hr_log_info("connected", "dep=postgres");
    w->pg_link.ever_up = 1;
    return 0;
}

/*
 * Ends a failed step of a transaction: fills err from r (consumed) or the
 * connection, leaves the connection idle (results drained, ROLLBACK) or drops
 * it if it is broken. Returns HR_DECLINED when PostgreSQL refused the data
 * itself (SQLSTATE class 22 data exception or 23 integrity violation) on a
 * live connection, so a row-by-row retry can isolate the culprit; HR_AGAIN
 * for everything else.
 */
static int
wrk_pg_failed(wrk_worker_t *w, PGresult *r, const char *step, char *err, size_t errlen)
{
    PGconn *c = w->pg;
    const char *state = r ? PQresultErrorField(r, PG_DIAG_SQLSTATE) : NULL;
    const char *msg = r ? PQresultErrorField(r, PG_DIAG_MESSAGE_PRIMARY) : NULL;
    snprintf(err, errlen, "%s: %s%s%s", step, msg ? msg : PQerrorMessage(c),
             state ? " sqlstate=" : "", state ? state : "");
    err[strcspn(err, "\n")] = '\0';
    int data = state != NULL && (strncmp(state, "22", 2) == 0 || strncmp(state, "23", 2) == 0);
    PQclear(r);

    if (PQstatus(c) != CONNECTION_OK) {
        wrk_pg_drop(w);
        return HR_AGAIN;
    }
    while ((r = PQgetResult(c)) != NULL) {
        ExecStatusType st = PQresultStatus(r);
        PQclear(r);
        if (st == PGRES_COPY_IN && PQputCopyEnd(c, "aborted by herald-worker") != 1)
            break;
        if (PQstatus(c) != CONNECTION_OK)
            break;
    }
    char ignore[256];
    if (PQstatus(c) != CONNECTION_OK || hr_pg_exec(c, "ROLLBACK", ignore, sizeof(ignore)) != 0) {
        wrk_pg_drop(w);
        return HR_AGAIN;
    }
    return data ? HR_DECLINED : HR_AGAIN;
}

/* Runs a command expected to return no rows; 0 or wrk_pg_failed()'s code. */
static int
wrk_pg_cmd(wrk_worker_t *w, const char *sql, uint64_t *tuples, char *err, size_t errlen)
{
    PGresult *r = PQexec(w->pg, sql);
    if (PQresultStatus(r) != PGRES_COMMAND_OK) {
        char step[16]; /* the statement's first word is enough for a log */
        snprintf(step, sizeof(step), "%.*s", (int)strcspn(sql, " "), sql);
        return wrk_pg_failed(w, r, step, err, errlen);
    }
    if (tuples != NULL)
        *tuples = strtoull(PQcmdTuples(r), NULL, 10);
    PQclear(r);
    return 0;
}

/* COPY text into a staging table; 0 or wrk_pg_failed()'s code. */
static int
wrk_pg_copy(wrk_worker_t *w, const char *sql, char *err, size_t errlen)
{
    PGconn *c = w->pg;
    PGresult *r = PQexec(c, sql);
    if (PQresultStatus(r) != PGRES_COPY_IN)
        return wrk_pg_failed(w, r, "COPY", err, errlen);
    PQclear(r);
    for (size_t off = 0; off < w->copy.len; off += WRK_COPY_CHUNK) {
        size_t n = w->copy.len - off < WRK_COPY_CHUNK ? w->copy.len - off : WRK_COPY_CHUNK;
        if (PQputCopyData(c, w->copy.data + off, (int)n) != 1)
            return wrk_pg_failed(w, NULL, "COPY data", err, errlen);
    }
    if (PQputCopyEnd(c, NULL) != 1)
        return wrk_pg_failed(w, NULL, "COPY end", err, errlen);
    r = PQgetResult(c);
    if (PQresultStatus(r) != PGRES_COMMAND_OK)
        return wrk_pg_failed(w, r, "COPY", err, errlen);
    PQclear(r);
    while ((r = PQgetResult(c)) != NULL)
        PQclear(r);
    return 0;
}

/* Marks the receipts whose id is in the result (ids without a row) no_ack. */
static void
wrk_mark_missing(wrk_worker_t *w, PGresult *r, size_t only)
{
    wrk_batch_t *b = &w->batch;
    int n = PQntuples(r);
    for (int k = 0; k < n; k++) {
        const char *id = PQgetvalue(r, k, 0);
        for (size_t i = 0; i < b->len; i++) {
            wrk_entry_t *e = &b->entries[i];
            if (e->stream == WRK_S_RECEIPT && e->is_row && (only == (size_t)-1 || only == i) &&
                strcmp(e->n.id, id) == 0)
                e->no_ack = 1;
        }
    }
}

/*
 * Applies receipts (all of the batch, or entry only) in the open transaction;
 * those whose row does not exist are marked no_ack. 0 or wrk_pg_failed()'s code.
 */
static int
wrk_pg_receipts(wrk_worker_t *w, size_t only, char *err, size_t errlen)
{
    wrk_batch_t *b = &w->batch;
    wrk_buf_t ids = {0}, ms = {0};
    wrk_buf_append(&ids, "{", 1);
    wrk_buf_append(&ms, "{", 1);
    int first = 1;
    for (size_t i = 0; i < b->len; i++) {
        wrk_entry_t *e = &b->entries[i];
        if (e->stream != WRK_S_RECEIPT || !e->is_row || (only != (size_t)-1 && only != i))
            continue;
        char num[32];
        int nl = snprintf(num, sizeof(num), "%s%" PRIu64, first ? "" : ",", e->delivered_ms);
        if (!first)
            wrk_buf_append(&ids, ",", 1);
        wrk_buf_append(&ids, e->n.id, strlen(e->n.id));
        wrk_buf_append(&ms, num, (size_t)nl);
        first = 0;
    }
    wrk_buf_append(&ids, "}", 2);
    wrk_buf_append(&ms, "}", 2);
    const char *params[2] = {ids.data, ms.data};
    PGresult *r = PQexecParams(w->pg, wrk_sql_receipts, 2, NULL, params, NULL, NULL, 0);
    wrk_buf_free(&ids);
    wrk_buf_free(&ms);
    if (PQresultStatus(r) != PGRES_TUPLES_OK)
        return wrk_pg_failed(w, r, "UPDATE receipts", err, errlen);
    wrk_mark_missing(w, r, only);
    PQclear(r);
    return 0;
}

/*
 * Stores the batch in one transaction: notifications and room messages by
 * COPY into staging tables and INSERT ... SELECT ... ON CONFLICT (id) DO
 * NOTHING, receipts by one UPDATE, then COMMIT. Sets *inserted to the rows
 * that were new. Returns 0 once committed, else wrk_pg_failed()'s code
 * (nothing committed).
 */
static int
wrk_pg_store_copy(wrk_worker_t *w, uint64_t *inserted, char *err, size_t errlen)
{
    wrk_batch_t *b = &w->batch;
    uint64_t n = 0;
    *inserted = 0;
    int rc = wrk_pg_cmd(w, "BEGIN", NULL, err, errlen);
    if (rc != 0)
        return rc;
    if (b->nrows[WRK_S_NOTIFY] > 0) {
        wrk_batch_copy_text(b, &w->copy);
        if ((rc = wrk_pg_copy(w, wrk_sql_copy, err, errlen)) != 0 ||
            (rc = wrk_pg_cmd(w, wrk_sql_insert, &n, err, errlen)) != 0)
            return rc;
        *inserted += n;
    }
    if (b->nrows[WRK_S_ROOM] > 0) {
        wrk_batch_copy_rooms(b, &w->copy);
        if ((rc = wrk_pg_copy(w, wrk_sql_room_copy, err, errlen)) != 0 ||
            (rc = wrk_pg_cmd(w, wrk_sql_room_insert, &n, err, errlen)) != 0)
            return rc;
        *inserted += n;
    }
    if (b->nrows[WRK_S_RECEIPT] > 0 && (rc = wrk_pg_receipts(w, (size_t)-1, err, errlen)) != 0)
        return rc;
    return wrk_pg_cmd(w, "COMMIT", NULL, err, errlen);
}

/*
 * The slow path after PostgreSQL refused the batch's data: one transaction,
 * each row under its own savepoint, so a row PostgreSQL refuses is rejected
 * (logged, acked without a row) and the others still commit. Returns 0 once
 * committed, HR_AGAIN on anything but a data error.
 */
static int
wrk_pg_store_rows(wrk_worker_t *w, uint64_t *inserted, char *err, size_t errlen)
{
    wrk_batch_t *b = &w->batch;
    *inserted = 0;
    int rc = wrk_pg_cmd(w, "BEGIN", NULL, err, errlen);
    for (size_t i = 0; rc == 0 && i < b->len; i++) {
        wrk_entry_t *e = &b->entries[i];
        if (!e->is_row)
            continue;
        if ((rc = wrk_pg_cmd(w, "SAVEPOINT wrk_row", NULL, err, errlen)) != 0)
            break;
        PGresult *r;
        if (e->stream == WRK_S_RECEIPT) {
            rc = wrk_pg_receipts(w, i, err, errlen);
            if (rc == 0) {
                rc = wrk_pg_cmd(w, "RELEASE SAVEPOINT wrk_row", NULL, err, errlen);
                continue;
            }
            if (rc != HR_DECLINED)
                break;
            /* wrk_pg_failed() rolled the whole transaction back: start over without it. */
            wrk_batch_reject_reason(b, i, "postgres refused the receipt");
            w->stats.rejected++;
            return HR_DECLINED;
        } else if (e->stream == WRK_S_ROOM) {
            const char *params[5] = {e->n.id, e->n.room, e->n.user_id, e->n.message,
                                     e->n.created_at};
            r = PQexecParams(w->pg, wrk_sql_room_insert_one, 5, NULL, params, NULL, NULL, 0);
        } else {
            const char *params[7] = {e->n.id,      e->n.user_id,   e->n.room,      e->n.type,
                                     e->n.message, e->n.data_json, e->n.created_at};
            r = PQexecParams(w->pg, wrk_sql_insert_one, 7, NULL, params, NULL, NULL, 0);
        }
        if (PQresultStatus(r) == PGRES_COMMAND_OK) {
            *inserted += strtoull(PQcmdTuples(r), NULL, 10);
            PQclear(r);
            rc = wrk_pg_cmd(w, "RELEASE SAVEPOINT wrk_row", NULL, err, errlen);
            continue;
        }
        const char *state = PQresultErrorField(r, PG_DIAG_SQLSTATE);
        if (state == NULL || (strncmp(state, "22", 2) != 0 && strncmp(state, "23", 2) != 0)) {
            rc = wrk_pg_failed(w, r, "INSERT", err, errlen);
            rc = rc == HR_DECLINED ? HR_AGAIN : rc;
            break;
        }
        char why[512], safe[512];
        const char *msg = PQresultErrorField(r, PG_DIAG_MESSAGE_PRIMARY);
        snprintf(why, sizeof(why), "%s sqlstate=%s", msg ? msg : "?", state);
        PQclear(r);
        hr_log_error("entry_rejected", "sid=%s id=%s reason=\"postgres refused the row: %s\"",
                     e->sid, e->n.id, wrk_log_safe(safe, sizeof(safe), why));
        char reason[600];
        snprintf(reason, sizeof(reason), "postgres refused the row: %s", why);
        wrk_batch_reject_reason(b, i, reason); /* dead-lettered with the ack */
        w->stats.rejected++;
        rc = wrk_pg_cmd(w, "ROLLBACK TO SAVEPOINT wrk_row", NULL, err, errlen);
    }
    if (rc == 0)
        rc = wrk_pg_cmd(w, "COMMIT", NULL, err, errlen);
    return rc == HR_DECLINED ? HR_AGAIN : rc;
}

/*
 * Commits the batch's rows (nothing to do if every entry was rejected).
 * Returns 0 and marks the batch committed, HR_AGAIN after a transient failure
 * (outage recorded, batch kept for a retry), HR_ERR on a fatal one.
 */
static int
wrk_commit(wrk_worker_t *w)
{
    wrk_batch_t *b = &w->batch;
    if (b->rows == 0) {
        b->committed = 1;
        return 0;
    }
    int reused = w->pg != NULL && PQstatus(w->pg) == CONNECTION_OK;
    int rc = wrk_pg_ready(w);
    if (rc != 0)
        return rc;

    char err[512];
    uint64_t inserted = 0, t0 = hr_mono_us();
    for (size_t i = 0; i < b->len; i++)
        b->entries[i].no_ack = 0;
    rc = wrk_pg_store_copy(w, &inserted, err, sizeof(err));
    if (rc == HR_AGAIN && reused && w->pg == NULL) {
        /* The idle connection had died (e.g. a server restart): one fresh try before
         * calling it an outage. */
        if ((rc = wrk_pg_ready(w)) != 0)
            return rc;
        rc = wrk_pg_store_copy(w, &inserted, err, sizeof(err));
    }
    if (rc == HR_DECLINED) {
        char safe[512];
        hr_log_warn("batch_refused", "rows=%zu error=\"%s\" action=row_by_row", b->rows,
                    wrk_log_safe(safe, sizeof(safe), err));
        /* Each round sets aside at least one refused entry. */
        for (size_t k = 0; rc == HR_DECLINED && k <= b->len; k++) {
            for (size_t i = 0; i < b->len; i++)
                b->entries[i].no_ack = 0;
            rc = wrk_pg_store_rows(w, &inserted, err, sizeof(err));
        }
    }
    if (rc != 0) {
        wrk_link_fail(&w->pg_link, err);
        return HR_AGAIN;
    }
    wrk_link_ok(&w->pg_link);
    b->committed = 1;
    w->stats.rows += b->rows;
    w->stats.inserted += inserted;

    /* Receipts whose row is missing stay pending, unless they waited too long. */
    uint64_t now = hr_now_ms();
    size_t waiting = 0;
    for (size_t i = 0; i < b->len; i++) {
        wrk_entry_t *e = &b->entries[i];
        if (e->stream != WRK_S_RECEIPT || !e->is_row)
            continue;
        if (!e->no_ack) {
            w->stats.receipts++;
            continue;
        }
        uint64_t written = strtoull(e->sid, NULL, 10);
        if (now > written && now - written > (uint64_t)w->cfg->receipt_max_age_ms) {
            char reason[128];
            snprintf(reason, sizeof(reason), "no notification row %s after %d ms", e->n.id,
                     w->cfg->receipt_max_age_ms);
            wrk_batch_reject_reason(b, i, reason);
            e->no_ack = 0;
        } else {
            waiting++;
        }
    }
    uint64_t us = hr_mono_us() - t0;
    hr_log_debug("batch_committed",
                 "rows=%zu inserted=%" PRIu64 " receipts_waiting=%zu ms=%" PRIu64 ".%03" PRIu64,
                 b->rows, inserted, waiting, us / 1000, us % 1000);
    return 0;
}

/* ---- Redis ---- */

/*
 * Dead letter, atomic so an entry is dead-lettered exactly once.
 * KEYS[1] the entry's stream, KEYS[2] HR_STREAM_DEAD_LETTER
 * ARGV[1] group, ARGV[2] entry id, ARGV[3] MAXLEN ~ bound, ARGV[4..] the dead
 * letter's field/value pairs
 * Reply: 1 moved, 0 no longer pending here (someone else handled it).
 */
static const char wrk_lua_dead[] =
    "if redis.call('XACK', KEYS[1], ARGV[1], ARGV[2]) == 0 then return 0 end\n"
    "redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[3], '*', unpack(ARGV, 4))\n"
    "return 1\n";

/*
 * Maintenance of one stream, atomic so nothing pending can be trimmed or
 * orphaned between the look and the change.
 * KEYS[1] stream
 * ARGV[1] our group, ARGV[2] idle ms after which a consumer with nothing
 * pending is deleted, ARGV[3] this consumer (never deleted)
 * Trims below the oldest entry any group still needs: per group, its oldest
 * pending entry, or if none its last-delivered id (XTRIM MINID keeps that id).
 * Reply: {entries trimmed, consumers deleted}.
 */
static const char wrk_lua_maintain[] =
    "local function tbl(a) local t = {} for i = 1, #a, 2 do t[a[i]] = a[i + 1] end return t end\n"
    "local ok, groups = pcall(redis.call, 'XINFO', 'GROUPS', KEYS[1])\n"
    "if not ok or type(groups) ~= 'table' then return {0, 0} end\n"
    "local min, minms, minseq\n"
    "for _, g in ipairs(groups) do\n"
    "  local t = tbl(g)\n"
    "  local cand = t['last-delivered-id']\n"
    "  if t['pending'] > 0 then cand = redis.call('XPENDING', KEYS[1], t['name'])[2] end\n"
    "  local a, b = string.match(cand, '^(%d+)-(%d+)$')\n"
    "  local ms, seq = tonumber(a), tonumber(b)\n"
    "  if ms and (not min or ms < minms or (ms == minms and seq < minseq)) then\n"
    "    min, minms, minseq = cand, ms, seq\n"
    "  end\n"
    "end\n"
    "local trimmed = 0\n"
    "if min then trimmed = redis.call('XTRIM', KEYS[1], 'MINID', min) end\n"
    "local deleted = 0\n"
    "local ok2, cs = pcall(redis.call, 'XINFO', 'CONSUMERS', KEYS[1], ARGV[1])\n"
    "if ok2 and type(cs) == 'table' then\n"
    "  for _, c in ipairs(cs) do\n"
    "    local t = tbl(c)\n"
    "    if t['name'] ~= ARGV[3] and t['pending'] == 0 and t['idle'] > tonumber(ARGV[2]) then\n"
    "      redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], t['name'])\n"
    "      deleted = deleted + 1\n"
    "    end\n"
    "  end\n"
    "end\n"
    "return {trimmed, deleted}\n";

/*
 * Replay of one dead letter, atomic: it is either still a dead letter or back
 * in its stream, never both or neither.
 * KEYS[1] HR_STREAM_DEAD_LETTER, KEYS[2] the stream it came from
 * ARGV[1] dead letter id, ARGV[2..] the original field/value pairs
 * Reply: the new entry id, or false if the dead letter was gone.
 */
static const char wrk_lua_replay[] =
    "if redis.call('XDEL', KEYS[1], ARGV[1]) == 0 then return false end\n"
    "return redis.call('XADD', KEYS[2], '*', unpack(ARGV, 2))\n";

static void
wrk_redis_drop(wrk_worker_t *w)
{
    if (w->redis != NULL)
        redisFree(w->redis);
    w->redis = NULL;
}

/*
 * Sends one command. Returns the reply (owned by the caller, possibly an
 * error reply), or NULL after an I/O error, with the connection dropped and
 * the outage recorded.
 */
static redisReply *
wrk_redis_cmd(wrk_worker_t *w, int argc, const char **argv, const size_t *argvlen)
{
    redisReply *r = redisCommandArgv(w->redis, argc, argv, argvlen);
    if (r == NULL) {
        char err[256];
        snprintf(err, sizeof(err), "%s: %s", argv[0], w->redis->errstr);
        wrk_link_fail(&w->redis_link, err);
        wrk_redis_drop(w);
    }
    return r;
}

/* An error reply to a command: recorded as an outage, the connection is dropped. */
static int
wrk_redis_error(wrk_worker_t *w, const char *cmd, redisReply *r)
{
    char err[256];
    snprintf(err, sizeof(err), "%s: %s", cmd, r->str);
    freeReplyObject(r);
    wrk_link_fail(&w->redis_link, err);
    wrk_redis_drop(w);
    return HR_AGAIN;
}

/* Creates the consumer group (and the stream) on every stream read. 0 or HR_AGAIN. */
static int
wrk_redis_group(wrk_worker_t *w)
{
    for (int s = 0; s < WRK_NSTREAMS; s++) {
        const char *argv[] = {"XGROUP",         "CREATE", wrk_stream_name(s),
                              HR_GROUP_WORKERS, "0",      "MKSTREAM"};
        redisReply *r = wrk_redis_cmd(w, (int)HR_ARRAY_LEN(argv), argv, NULL);
        if (r == NULL)
            return HR_AGAIN;
        if (r->type == REDIS_REPLY_ERROR) {
            if (strncmp(r->str, "BUSYGROUP", 9) != 0)
                return wrk_redis_error(w, "XGROUP CREATE", r);
        } else {
            hr_log_info("group_created", "stream=%s group=%s", wrk_stream_name(s),
                        HR_GROUP_WORKERS);
        }
        freeReplyObject(r);
    }
    return 0;
}

/* Schedules a re-read of this consumer's pending entries on every stream. */
static void
wrk_reread_pending(wrk_worker_t *w)
{
    for (int s = 0; s < WRK_NSTREAMS; s++) {
        w->read_pending[s] = 1;
        snprintf(w->pending_cursor[s], sizeof(w->pending_cursor[s]), "0");
    }
}

/*
 * Makes w->redis usable: connects, sets the reply timeout, ensures the groups,
 * and schedules a re-read of this consumer's pending entries (delivered before
 * a disconnect, never acked). Returns 0 or HR_AGAIN (outage recorded).
 */
static int
wrk_redis_ready(wrk_worker_t *w)
{
    if (w->redis != NULL)
        return 0;
    char err[256];
    redisContext *c = hr_redis_connect_sync(&w->addr, w->cfg->redis_timeout_ms, err, sizeof(err));
    if (c == NULL) {
        wrk_link_fail(&w->redis_link, err);
        return HR_AGAIN;
    }
    int ms = w->cfg->block_ms + w->cfg->redis_timeout_ms;
    struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
    if (redisSetTimeout(c, tv) != REDIS_OK) {
        wrk_link_fail(&w->redis_link, "cannot set the socket timeout");
        redisFree(c);
        return HR_AGAIN;
    }
    w->redis = c;
    /* A name for CLIENT LIST; a refusal (ACL) does not matter. */
    const char *name[] = {"CLIENT", "SETNAME", "herald-worker"};
    redisReply *r = wrk_redis_cmd(w, (int)HR_ARRAY_LEN(name), name, NULL);
    if (r == NULL)
        return HR_AGAIN;
    freeReplyObject(r);
    if (wrk_redis_group(w) != 0)
        return HR_AGAIN;
    wrk_link_ok(&w->redis_link);
    wrk_reread_pending(w);
    return 0;
}

/*
 * Moves a list of stream entries ([id, [field, value, ...] or nil], ...) of
 * stream s into the batch, logging each rejected one. Returns how many
 * entries were added.
 */
static size_t
wrk_take_entries(wrk_worker_t *w, int s, const redisReply *list)
{
    size_t added = 0;
    if (list == NULL || list->type != REDIS_REPLY_ARRAY)
        return 0;
    for (size_t i = 0; i < list->elements; i++) {
        const redisReply *e = list->element[i];
        if (e->type != REDIS_REPLY_ARRAY || e->elements != 2 ||
            e->element[0]->type != REDIS_REPLY_STRING) {
            hr_log_error("entry_unreadable", "reason=\"reply entry is not [id, fields]\"");
            continue;
        }
        const redisReply *sid = e->element[0], *f = e->element[1];
        const char *const *kv = NULL;
        size_t nkv = 0;
        if (f->type == REDIS_REPLY_ARRAY) {
            if (f->elements > w->kvcap) {
                w->kvcap = f->elements;
                w->kv = hr_realloc(w->kv, w->kvcap * sizeof(*w->kv));
                w->kvlen = hr_realloc(w->kvlen, w->kvcap * sizeof(*w->kvlen));
            }
            for (size_t j = 0; j < f->elements; j++) {
                const redisReply *x = f->element[j];
                int str = x->type == REDIS_REPLY_STRING;
                w->kv[j] = str ? x->str : "";
                w->kvlen[j] = str ? x->len : 0;
            }
            kv = w->kv;
            nkv = f->elements;
        }
        char err[512], safe[512];
        int rc = wrk_batch_add_entry(&w->batch, s, sid->str, sid->len, kv, w->kvlen, nkv, err,
                                     sizeof(err));
        if (rc == HR_AGAIN) {
            /* Cannot happen with COUNT <= capacity; left pending, re-read later. */
            hr_log_error("entry_skipped", "sid=%.*s reason=\"batch full or id too long\"",
                         (int)(sid->len > 64 ? 64 : sid->len), sid->str);
            continue;
        }
        added++;
        if (rc == HR_DECLINED) {
            /* Dead-lettered and acked with the batch, so it never blocks the stream. */
            hr_log_error("entry_rejected", "sid=%s stream=%s reason=\"%s\"",
                         w->batch.entries[w->batch.len - 1].sid, wrk_stream_name(s),
                         wrk_log_safe(safe, sizeof(safe), err));
            w->stats.rejected++;
        }
    }
    return added;
}

/*
 * Entries batch[from..len) of stream s were delivered before (re-read or
 * claimed): looks up their delivery counts (XPENDING) and sets aside, for the
 * dead-letter stream, those delivered more than worker.max_deliveries times.
 * Receipts are exempt: they are retried on purpose until
 * worker.receipt_max_age_ms. Returns 0 or HR_AGAIN (Redis failed).
 */
static int
wrk_check_deliveries(wrk_worker_t *w, int s, size_t from)
{
    wrk_batch_t *b = &w->batch;
    if (from >= b->len || s == WRK_S_RECEIPT)
        return 0;
    char count[24];
    snprintf(count, sizeof(count), "%zu", b->len - from);
    const char *argv[] = {"XPENDING",           wrk_stream_name(s),         HR_GROUP_WORKERS,
                          b->entries[from].sid, b->entries[b->len - 1].sid, count,
                          w->consumer};
    redisReply *r = wrk_redis_cmd(w, (int)HR_ARRAY_LEN(argv), argv, NULL);
    if (r == NULL)
        return HR_AGAIN;
    if (r->type == REDIS_REPLY_ERROR)
        return wrk_redis_error(w, "XPENDING", r);
    size_t i = from;
    for (size_t k = 0; r->type == REDIS_REPLY_ARRAY && k < r->elements; k++) {
        const redisReply *p = r->element[k];
        if (p->type != REDIS_REPLY_ARRAY || p->elements < 4 ||
            p->element[0]->type != REDIS_REPLY_STRING || p->element[3]->type != REDIS_REPLY_INTEGER)
            continue;
        while (i < b->len && strcmp(b->entries[i].sid, p->element[0]->str) != 0)
            i++;
        if (i == b->len)
            break;
        wrk_entry_t *e = &b->entries[i];
        e->deliveries = (unsigned)p->element[3]->integer;
        if (e->deliveries > (unsigned)w->cfg->max_deliveries && e->is_row) {
            char reason[128];
            snprintf(reason, sizeof(reason), "delivered %u times without being stored",
                     e->deliveries);
            hr_log_error("entry_poison", "sid=%s stream=%s deliveries=%u", e->sid,
                         wrk_stream_name(s), e->deliveries);
            wrk_batch_reject_reason(b, i, reason);
            w->stats.rejected++;
        }
    }
    freeReplyObject(r);
    return 0;
}

/* The index of stream name n, or -1. */
static int
wrk_stream_index(const char *n, size_t len)
{
    for (int s = 0; s < WRK_NSTREAMS; s++) {
        if (strlen(wrk_stream_name(s)) == len && memcmp(wrk_stream_name(s), n, len) == 0)
            return s;
    }
    return -1;
}

/* Entries of an XREADGROUP reply ([[stream, entries]...] or nil) into the batch. */
static size_t
wrk_take_xread(wrk_worker_t *w, const redisReply *r)
{
    size_t n = 0;
    if (r->type != REDIS_REPLY_ARRAY)
        return 0;
    for (size_t i = 0; i < r->elements; i++) {
        const redisReply *s = r->element[i];
        if (s->type != REDIS_REPLY_ARRAY || s->elements != 2 ||
            s->element[0]->type != REDIS_REPLY_STRING)
            continue;
        int idx = wrk_stream_index(s->element[0]->str, s->element[0]->len);
        if (idx >= 0)
            n += wrk_take_entries(w, idx, s->element[1]);
    }
    return n;
}

/* Handles an XREADGROUP/XAUTOCLAIM error reply; NOGROUP recreates the groups. */
static int
wrk_fetch_error(wrk_worker_t *w, const char *cmd, redisReply *r)
{
    if (strncmp(r->str, "NOGROUP", 7) != 0)
        return wrk_redis_error(w, cmd, r);
    freeReplyObject(r);
    hr_log_warn("group_missing", "group=%s action=recreate", HR_GROUP_WORKERS);
    if (wrk_redis_group(w) != 0)
        return HR_AGAIN;
    wrk_reread_pending(w);
    return 0;
}

/* XREADGROUP of this consumer's own pending entries of stream s after its cursor. */
static int
wrk_fetch_pending(wrk_worker_t *w, int s, size_t *got)
{
    char count[16];
    snprintf(count, sizeof(count), "%d", w->cfg->batch_size);
    const char *argv[] = {"XREADGROUP", "GROUP",   HR_GROUP_WORKERS,   w->consumer,         "COUNT",
                          count,        "STREAMS", wrk_stream_name(s), w->pending_cursor[s]};
    *got = 0;
    size_t from = w->batch.len;
    redisReply *r = wrk_redis_cmd(w, (int)HR_ARRAY_LEN(argv), argv, NULL);
    if (r == NULL)
        return HR_AGAIN;
    if (r->type == REDIS_REPLY_ERROR)
        return wrk_fetch_error(w, "XREADGROUP", r);
    *got = wrk_take_xread(w, r);
    freeReplyObject(r);
    if (*got == 0) {
        w->read_pending[s] = 0;
        return 0;
    }
    hr_log_info("pending_reread", "stream=%s count=%zu", wrk_stream_name(s), *got);
    snprintf(w->pending_cursor[s], sizeof(w->pending_cursor[s]), "%s",
             w->batch.entries[w->batch.len - 1].sid);
    return wrk_check_deliveries(w, s, from);
}

/* XREADGROUP of new entries of every stream, up to count each, blocking up to block_ms. */
static int
wrk_fetch_new(wrk_worker_t *w, int count, int block_ms, size_t *got)
{
    char cnt[16], block[16];
    snprintf(cnt, sizeof(cnt), "%d", count);
    snprintf(block, sizeof(block), "%d", block_ms < 1 ? 1 : block_ms);
    const char *argv[] = {"XREADGROUP",
                          "GROUP",
                          HR_GROUP_WORKERS,
                          w->consumer,
                          "COUNT",
                          cnt,
                          "BLOCK",
                          block,
                          "STREAMS",
                          wrk_stream_name(0),
                          wrk_stream_name(1),
                          wrk_stream_name(2),
                          ">",
                          ">",
                          ">"};
    *got = 0;
    redisReply *r = wrk_redis_cmd(w, (int)HR_ARRAY_LEN(argv), argv, NULL);
    if (r == NULL)
        return HR_AGAIN;
    if (r->type == REDIS_REPLY_ERROR)
        return wrk_fetch_error(w, "XREADGROUP", r);
    *got = wrk_take_xread(w, r);
    freeReplyObject(r);
    return 0;
}

/*
 * XAUTOCLAIM on stream s: takes over entries left pending longer than
 * claim_idle_ms (receipts: receipt_retry_ms, which also retries this
 * consumer's own receipts waiting for their row), continuing from the saved
 * cursor. Entries Redis reports as deleted (trimmed while pending) are already
 * gone from the PEL: log them.
 */
static int
wrk_fetch_claim(wrk_worker_t *w, int s, size_t *got)
{
    char count[16], idle[16];
    int idle_ms = s == WRK_S_RECEIPT ? w->cfg->receipt_retry_ms : w->cfg->claim_idle_ms;
    snprintf(count, sizeof(count), "%d", w->cfg->batch_size);
    snprintf(idle, sizeof(idle), "%d", idle_ms);
    const char *argv[] = {"XAUTOCLAIM", wrk_stream_name(s), HR_GROUP_WORKERS, w->consumer,
                          idle,         w->claim_cursor[s], "COUNT",          count};
    *got = 0;
    size_t from = w->batch.len;
    redisReply *r = wrk_redis_cmd(w, (int)HR_ARRAY_LEN(argv), argv, NULL);
    if (r == NULL)
        return HR_AGAIN;
    if (r->type == REDIS_REPLY_ERROR)
        return wrk_fetch_error(w, "XAUTOCLAIM", r);
    if (r->type != REDIS_REPLY_ARRAY || r->elements < 2 ||
        r->element[0]->type != REDIS_REPLY_STRING || r->element[0]->len >= WRK_SID_MAX) {
        freeReplyObject(r);
        wrk_link_fail(&w->redis_link, "XAUTOCLAIM: unexpected reply shape");
        wrk_redis_drop(w);
        return HR_AGAIN;
    }
    memcpy(w->claim_cursor[s], r->element[0]->str, r->element[0]->len);
    w->claim_cursor[s][r->element[0]->len] = '\0';
    *got = wrk_take_entries(w, s, r->element[1]);
    if (r->elements >= 3 && r->element[2]->type == REDIS_REPLY_ARRAY &&
        r->element[2]->elements > 0) {
        const redisReply *d = r->element[2];
        hr_log_error("entries_lost",
                     "stream=%s count=%zu first_sid=%s reason=\"deleted from the stream "
                     "while pending; no row can be written\"",
                     wrk_stream_name(s), d->elements,
                     d->element[0]->type == REDIS_REPLY_STRING ? d->element[0]->str : "?");
    }
    if (strcmp(w->claim_cursor[s], "0-0") == 0) {
        uint64_t every = (uint64_t)idle_ms / 2;
        w->next_claim_ms[s] = hr_mono_ms() + (every < 200 ? 200 : every);
    }
    freeReplyObject(r);
    if (*got > 0) {
        w->stats.claimed += *got;
        if (s == WRK_S_RECEIPT)
            hr_log_debug("entries_claimed", "count=%zu stream=%s min_idle_ms=%d", *got,
                         wrk_stream_name(s), idle_ms);
        else
            hr_log_info("entries_claimed", "count=%zu stream=%s min_idle_ms=%d", *got,
                        wrk_stream_name(s), idle_ms);
    }
    return wrk_check_deliveries(w, s, from);
}

/*
 * Fills the empty batch, in order of priority: this consumer's own pending
 * entries (after a (re)connect), entries abandoned by other consumers (and
 * receipts due for a retry), then new entries: it keeps reading until the
 * batch holds worker.batch_size entries or worker.flush_ms have passed since
 * the first arrived (a first read blocks up to block_ms). Returns 0 (the
 * batch may still be empty) or HR_AGAIN after a Redis failure.
 */
static int
wrk_fetch(wrk_worker_t *w)
{
    size_t got;
    int rc;
    for (int s = 0; s < WRK_NSTREAMS; s++) {
        if (!w->read_pending[s])
            continue;
        if ((rc = wrk_fetch_pending(w, s, &got)) != 0)
            return rc;
        if (got > 0)
            return 0;
    }
    for (int s = 0; s < WRK_NSTREAMS; s++) {
        int idle = s == WRK_S_RECEIPT ? w->cfg->receipt_retry_ms : w->cfg->claim_idle_ms;
        if (idle <= 0 || hr_mono_ms() < w->next_claim_ms[s])
            continue;
        if ((rc = wrk_fetch_claim(w, s, &got)) != 0)
            return rc;
        if (got > 0)
            return 0;
    }
    size_t want = (size_t)w->cfg->batch_size;
    if ((rc = wrk_fetch_new(w, w->cfg->batch_size, w->cfg->block_ms, &got)) != 0)
        return rc;
    uint64_t deadline = hr_mono_ms() + (uint64_t)w->cfg->flush_ms;
    while (got > 0 && w->batch.len < want && !*w->stop) {
        uint64_t now = hr_mono_ms();
        if (now >= deadline)
            break;
        /* Each stream may return COUNT entries: the batch holds three times batch_size. */
        if ((rc = wrk_fetch_new(w, (int)(want - w->batch.len), (int)(deadline - now), &got)) != 0)
            return w->batch.len > 0 ? 0 : rc;
    }
    return 0;
}

/* Appends the dead letter of entry e (meta fields, then its original fields). */
static void
wrk_dead_args(wrk_worker_t *w, const wrk_entry_t *e, const char **argv, size_t *argvlen,
              size_t *argc, char *deliveries, char *at)
{
    size_t n = *argc;
#define WRK_ARG(s, l) (argv[n] = (s), argvlen[n++] = (l))
    WRK_ARG(HR_FIELD_DEAD_STREAM, strlen(HR_FIELD_DEAD_STREAM));
    WRK_ARG(wrk_stream_name(e->stream), strlen(wrk_stream_name(e->stream)));
    WRK_ARG(HR_FIELD_DEAD_SID, strlen(HR_FIELD_DEAD_SID));
    WRK_ARG(e->sid, strlen(e->sid));
    WRK_ARG(HR_FIELD_DEAD_REASON, strlen(HR_FIELD_DEAD_REASON));
    WRK_ARG(e->reason, strlen(e->reason));
    WRK_ARG(HR_FIELD_DEAD_DELIVERIES, strlen(HR_FIELD_DEAD_DELIVERIES));
    WRK_ARG(deliveries, strlen(deliveries));
    WRK_ARG(HR_FIELD_DEAD_CONSUMER, strlen(HR_FIELD_DEAD_CONSUMER));
    WRK_ARG(w->consumer, strlen(w->consumer));
    WRK_ARG(HR_FIELD_DEAD_AT, strlen(HR_FIELD_DEAD_AT));
    WRK_ARG(at, strlen(at));
    const char *p = e->raw;
    /* An odd trailing item cannot be a field/value pair: XADD would refuse it. */
    for (size_t i = 0; i < e->nraw - e->nraw % 2; i++) {
        WRK_ARG(p, e->rawlen[i]);
        p += e->rawlen[i];
    }
#undef WRK_ARG
    *argc = n;
}

/*
 * Acknowledges the committed batch in one pipeline: every dead letter by the
 * atomic script (XACK + XADD to the dead-letter stream), then one XACK per
 * stream for the rest, except entries left pending on purpose (receipts
 * waiting for their row). Empties the batch. Returns 0, or HR_AGAIN (batch
 * kept, still committed: the ack is retried after reconnecting; the script
 * cannot dead-letter an entry twice).
 */
static int
wrk_ack(wrk_worker_t *w)
{
    wrk_batch_t *b = &w->batch;
    size_t sent = 0, dead = 0;
    char at[24];
    snprintf(at, sizeof(at), "%" PRIu64, hr_now_ms());
    for (size_t i = 0; i < b->len; i++) {
        wrk_entry_t *e = &b->entries[i];
        if (e->reason == NULL || e->no_ack)
            continue;
        size_t cap = 9 + 12 + e->nraw;
        const char **argv = hr_malloc(cap * sizeof(*argv));
        size_t *argvlen = hr_malloc(cap * sizeof(*argvlen));
        char deliveries[16];
        snprintf(deliveries, sizeof(deliveries), "%u", e->deliveries);
        size_t argc = 0;
        const char *head[] = {"EVAL",
                              wrk_lua_dead,
                              "2",
                              wrk_stream_name(e->stream),
                              HR_STREAM_DEAD_LETTER,
                              HR_GROUP_WORKERS,
                              e->sid,
                              HR_DEAD_LETTER_MAXLEN};
        for (size_t k = 0; k < HR_ARRAY_LEN(head); k++) {
            argv[argc] = head[k];
            argvlen[argc++] = strlen(head[k]);
        }
        wrk_dead_args(w, e, argv, argvlen, &argc, deliveries, at);
        redisAppendCommandArgv(w->redis, (int)argc, argv, argvlen);
        hr_free(argv);
        hr_free(argvlen);
        sent++;
        dead++;
    }
    for (int s = 0; s < WRK_NSTREAMS; s++) {
        size_t argc = 0;
        w->argv[argc] = "XACK";
        w->argvlen[argc++] = 4;
        w->argv[argc] = wrk_stream_name(s);
        w->argvlen[argc++] = strlen(wrk_stream_name(s));
        w->argv[argc] = HR_GROUP_WORKERS;
        w->argvlen[argc++] = strlen(HR_GROUP_WORKERS);
        for (size_t i = 0; i < b->len; i++) {
            wrk_entry_t *e = &b->entries[i];
            if (e->stream != s || e->no_ack || e->reason != NULL)
                continue;
            w->argv[argc] = e->sid;
            w->argvlen[argc++] = strlen(e->sid);
        }
        if (argc == 3)
            continue;
        redisAppendCommandArgv(w->redis, (int)argc, w->argv, w->argvlen);
        sent++;
    }
    int rc = 0;
    size_t moved = 0;
    for (size_t k = 0; k < sent; k++) {
        redisReply *r = NULL;
        if (redisGetReply(w->redis, (void **)&r) != REDIS_OK || r == NULL) {
            char err[256];
            snprintf(err, sizeof(err), "XACK: %s", w->redis->errstr);
            wrk_link_fail(&w->redis_link, err);
            wrk_redis_drop(w);
            return HR_AGAIN;
        }
        if (r->type == REDIS_REPLY_ERROR && rc == 0) {
            char err[256];
            snprintf(err, sizeof(err), "XACK: %s", r->str);
            wrk_link_fail(&w->redis_link, err);
            rc = HR_AGAIN;
        } else if (k < dead && r->type == REDIS_REPLY_INTEGER) {
            moved += (size_t)r->integer;
        }
        freeReplyObject(r);
    }
    if (rc != 0) {
        wrk_redis_drop(w);
        return rc;
    }
    if (moved > 0)
        hr_log_warn("dead_lettered", "count=%zu stream=%s", moved, HR_STREAM_DEAD_LETTER);
    w->stats.dead += moved;
    w->stats.batches++;
    wrk_batch_clear(b);
    return 0;
}

/*
 * Every worker.maintenance_ms: trims each stream below what every group still
 * needs and deletes consumers gone for worker.consumer_gc_ms with nothing
 * pending (wrk_lua_maintain). Failures are left to the next round.
 */
static void
wrk_maintain(wrk_worker_t *w)
{
    if (w->cfg->maintenance_ms <= 0 || hr_mono_ms() < w->next_maintain_ms || w->redis == NULL)
        return;
    w->next_maintain_ms = hr_mono_ms() + (uint64_t)w->cfg->maintenance_ms;
    char gc[16];
    snprintf(gc, sizeof(gc), "%d", w->cfg->consumer_gc_ms);
    for (int s = 0; s < WRK_NSTREAMS && w->redis != NULL; s++) {
        const char *argv[] = {"EVAL", wrk_lua_maintain, "1", wrk_stream_name(s), HR_GROUP_WORKERS,
                              gc,     w->consumer};
        redisReply *r = wrk_redis_cmd(w, (int)HR_ARRAY_LEN(argv), argv, NULL);
        if (r == NULL)
            return;
        if (r->type == REDIS_REPLY_ARRAY && r->elements == 2 &&
            r->element[0]->type == REDIS_REPLY_INTEGER &&
            r->element[1]->type == REDIS_REPLY_INTEGER) {
            w->stats.trimmed += (uint64_t)r->element[0]->integer;
            if (r->element[0]->integer > 0)
                hr_log_debug("stream_trimmed", "stream=%s entries=%lld", wrk_stream_name(s),
                             r->element[0]->integer);
            if (r->element[1]->integer > 0)
                hr_log_info("consumers_removed", "stream=%s count=%lld idle_ms_over=%d",
                            wrk_stream_name(s), r->element[1]->integer, w->cfg->consumer_gc_ms);
        } else if (r->type == REDIS_REPLY_ERROR) {
            hr_log_warn("maintenance_failed", "stream=%s error=\"%s\"", wrk_stream_name(s), r->str);
        }
        freeReplyObject(r);
    }
}

/* ---- public ---- */

int
wrk_migrate(const wrk_config_t *cfg, int *applied, char *err, size_t errlen)
{
    *applied = 0;
    PGconn *c = wrk_pg_connect(cfg->postgres_url, err, errlen);
    if (c == NULL) {
        wrk_err_safe(err);
        return HR_ERR;
    }
    int rc = hr_pg_migrate(c, cfg->migrations_dir, applied, err, errlen);
    PQfinish(c);
    if (rc != 0)
        wrk_err_safe(err);
    return rc;
}

/*
 * One dead letter back to its stream: splits the dead_* fields from the
 * original ones and runs wrk_lua_replay. Returns 1 replayed, 0 skipped
 * (logged), HR_ERR on a Redis failure (err filled).
 */
static int
wrk_replay_one(redisContext *c, const redisReply *e, char *err, size_t errlen)
{
    const redisReply *sid = e->element[0], *f = e->element[1];
    const char *stream = NULL;
    size_t n = f->type == REDIS_REPLY_ARRAY ? f->elements : 0;
    const char **argv = hr_malloc((n + 5) * sizeof(*argv));
    size_t *argvlen = hr_malloc((n + 5) * sizeof(*argvlen));
    size_t argc = 5;
    for (size_t i = 0; i + 1 < n; i += 2) {
        const redisReply *k = f->element[i], *v = f->element[i + 1];
        if (k->type != REDIS_REPLY_STRING || v->type != REDIS_REPLY_STRING)
            continue;
        if (strcmp(k->str, HR_FIELD_DEAD_STREAM) == 0) {
            stream = v->str;
        } else if (strncmp(k->str, "dead_", 5) != 0) {
            argv[argc] = k->str;
            argvlen[argc++] = k->len;
            argv[argc] = v->str;
            argvlen[argc++] = v->len;
        }
    }
    int rc = 0;
    if (stream == NULL || wrk_stream_index(stream, strlen(stream)) < 0 || argc == 5) {
        hr_log_warn("replay_skipped", "sid=%s reason=\"no origin stream or no original fields\"",
                    sid->str);
    } else {
        argv[0] = "EVAL";
        argv[1] = wrk_lua_replay;
        argv[2] = "2";
        argv[3] = HR_STREAM_DEAD_LETTER;
        argv[4] = stream;
        for (int k = 0; k < 5; k++)
            argvlen[k] = strlen(argv[k]);
        /* ARGV[1] is the dead letter's id: insert it after the keys. */
        argv = hr_realloc(argv, (argc + 1) * sizeof(*argv));
        argvlen = hr_realloc(argvlen, (argc + 1) * sizeof(*argvlen));
        memmove(argv + 6, argv + 5, (argc - 5) * sizeof(*argv));
        memmove(argvlen + 6, argvlen + 5, (argc - 5) * sizeof(*argvlen));
        argv[5] = sid->str;
        argvlen[5] = sid->len;
        redisReply *r = redisCommandArgv(c, (int)argc + 1, argv, argvlen);
        if (r == NULL || r->type == REDIS_REPLY_ERROR) {
            snprintf(err, errlen, "replay of %s: %s", sid->str, r ? r->str : c->errstr);
            rc = HR_ERR;
        } else if (r->type == REDIS_REPLY_STRING) {
            hr_log_info("replayed", "dead_sid=%s stream=%s new_sid=%s", sid->str, stream, r->str);
            rc = 1;
        }
        if (r)
            freeReplyObject(r);
    }
    hr_free(argv);
    hr_free(argvlen);
    return rc;
}

int
wrk_replay_dead_letter(const wrk_config_t *cfg, long max, long *replayed, char *err, size_t errlen)
{
    hr_redis_addr_t addr;
    *replayed = 0;
    if (hr_redis_addr_parse(cfg->redis_url, &addr, err, errlen) != 0)
        return HR_ERR;
    redisContext *c = hr_redis_connect_sync(&addr, cfg->redis_timeout_ms, err, errlen);
    hr_redis_addr_clear(&addr);
    if (c == NULL)
        return HR_ERR;
    char cursor[WRK_SID_MAX + 1] = "-";
    int rc = 0;
    for (;;) {
        const char *argv[] = {"XRANGE", HR_STREAM_DEAD_LETTER, cursor, "+", "COUNT", "100"};
        redisReply *r = redisCommandArgv(c, (int)HR_ARRAY_LEN(argv), argv, NULL);
        if (r == NULL || r->type != REDIS_REPLY_ARRAY) {
            snprintf(err, errlen, "XRANGE: %s", r ? (r->str ? r->str : "bad reply") : c->errstr);
            if (r)
                freeReplyObject(r);
            rc = HR_ERR;
            break;
        }
        size_t n = r->elements;
        for (size_t i = 0; i < n && rc == 0 && (max <= 0 || *replayed < max); i++) {
            const redisReply *e = r->element[i];
            if (e->type != REDIS_REPLY_ARRAY || e->elements != 2 ||
                e->element[0]->type != REDIS_REPLY_STRING || e->element[0]->len >= WRK_SID_MAX)
                continue;
            /* Exclusive start for the next page. */
            snprintf(cursor, sizeof(cursor), "(%s", e->element[0]->str);
            int one = wrk_replay_one(c, e, err, errlen);
            if (one < 0)
                rc = HR_ERR;
            else
                *replayed += one;
        }
        freeReplyObject(r);
        if (rc != 0 || n < 100 || (max > 0 && *replayed >= max))
            break;
    }
    redisFree(c);
    return rc;
}

wrk_worker_t *
wrk_worker_create(const wrk_config_t *cfg, volatile sig_atomic_t *stop, char *err, size_t errlen)
{
    hr_redis_addr_t addr;
    if (hr_redis_addr_parse(cfg->redis_url, &addr, err, errlen) != 0) {
        wrk_err_safe(err);
        return NULL;
    }
    DIR *d = opendir(cfg->migrations_dir);
    if (d == NULL) {
        snprintf(err, errlen, "cannot open migrations dir %s", cfg->migrations_dir);
        hr_redis_addr_clear(&addr);
        return NULL;
    }
    closedir(d);

    wrk_worker_t *w = hr_calloc(1, sizeof(*w));
    w->cfg = cfg;
    w->stop = stop;
    w->addr = addr;
    if (cfg->consumer != NULL && cfg->consumer[0] != '\0') {
        w->consumer = hr_strdup(cfg->consumer);
    } else {
        char host[256] = "";
        if (gethostname(host, sizeof(host)) != 0 || host[0] == '\0')
            snprintf(host, sizeof(host), "worker");
        host[sizeof(host) - 1] = '\0';
        char name[300];
        snprintf(name, sizeof(name), "%s-%ld", host, (long)getpid());
        w->consumer = hr_strdup(name);
    }
    wrk_link_init(&w->redis_link, "redis");
    wrk_link_init(&w->pg_link, "postgres");
    for (int s = 0; s < WRK_NSTREAMS; s++)
        snprintf(w->claim_cursor[s], sizeof(w->claim_cursor[s]), "0-0");
    /* One XREADGROUP may return COUNT entries of each stream. */
    size_t cap = (size_t)cfg->batch_size * WRK_NSTREAMS;
    wrk_batch_init(&w->batch, cap);
    w->argv = hr_calloc(cap + 3, sizeof(*w->argv));
    w->argvlen = hr_calloc(cap + 3, sizeof(*w->argvlen));
    return w;
}

int
wrk_worker_step(wrk_worker_t *w)
{
    wrk_batch_t *b = &w->batch;
    if (b->len == 0) {
        if (wrk_redis_ready(w) == 0)
            wrk_maintain(w);
        if (wrk_redis_ready(w) != 0 || wrk_fetch(w) != 0) {
            wrk_backoff_sleep(w, &w->redis_link);
            return 0;
        }
        if (b->len == 0)
            return 0;
    }
    if (!b->committed) {
        int rc = wrk_commit(w);
        if (rc == HR_ERR)
            return HR_ERR;
        if (rc != 0) {
            wrk_backoff_sleep(w, &w->pg_link);
            return 0;
        }
    }
    if (wrk_redis_ready(w) != 0 || wrk_ack(w) != 0)
        wrk_backoff_sleep(w, &w->redis_link);
    return 0;
}

int
wrk_worker_run(wrk_worker_t *w)
{
    hr_log_info("started",
                "consumer=%s group=%s streams=%s,%s,%s batch_size=%d flush_ms=%d block_ms=%d "
                "max_deliveries=%d",
                w->consumer, HR_GROUP_WORKERS, wrk_stream_name(0), wrk_stream_name(1),
                wrk_stream_name(2), w->cfg->batch_size, w->cfg->flush_ms, w->cfg->block_ms,
                w->cfg->max_deliveries);
    /* Migrate now if PostgreSQL is up; otherwise on the first connection. */
    if (wrk_pg_ready(w) == HR_ERR)
        return HR_ERR;
    while (!*w->stop) {
        if (wrk_worker_step(w) == HR_ERR)
            return HR_ERR;
    }

    wrk_batch_t *b = &w->batch;
    hr_log_info("stopping", "entries_in_flight=%zu", b->len);
    /* The stop may have cut a backoff sleep short: one last try, no waiting. */
    if (b->len > 0 && !b->committed && wrk_commit(w) == HR_ERR)
        return HR_ERR;
    if (b->len > 0 && b->committed && wrk_redis_ready(w) == 0)
        wrk_ack(w);
    if (b->len > 0)
        hr_log_warn("stopped_unfinished",
                    "entries=%zu committed=%d note=\"left pending: re-read by this consumer "
                    "or claimed by another after worker.claim_idle_ms\"",
                    b->len, b->committed);
    hr_log_info("stopped",
                "batches=%" PRIu64 " rows=%" PRIu64 " inserted=%" PRIu64 " rejected=%" PRIu64
                " claimed=%" PRIu64 " dead=%" PRIu64 " receipts=%" PRIu64 " trimmed=%" PRIu64,
                w->stats.batches, w->stats.rows, w->stats.inserted, w->stats.rejected,
                w->stats.claimed, w->stats.dead, w->stats.receipts, w->stats.trimmed);
    return 0;
}

const char *
wrk_worker_consumer(const wrk_worker_t *w)
{
    return w->consumer;
}

void
wrk_worker_stats(const wrk_worker_t *w, wrk_stats_t *out)
{
    *out = w->stats;
}

void
wrk_worker_destroy(wrk_worker_t *w)
{
    if (w == NULL)
        return;
    wrk_redis_drop(w);
    wrk_pg_drop(w);
    wrk_batch_free(&w->batch);
    wrk_buf_free(&w->copy);
    hr_free(w->argv);
    hr_free(w->argvlen);
    hr_free(w->kv);
    hr_free(w->kvlen);
    hr_free(w->consumer);
    hr_redis_addr_clear(&w->addr);
    hr_free(w);
}
