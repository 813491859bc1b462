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
    {"worker.batch_size", HR_CFG_INT, offsetof(wrk_config_t, batch_size), "1000", 1, 10000},
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
    "INSERT INTO notifications (" WRK_COPY_COLUMNS ") VALUES ($1, $2, $3, $4, $5, $6)"
    " ON CONFLICT (id) DO NOTHING";

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
    int read_pending; /* own pending entries not yet re-read since connect */
    char pending_cursor[WRK_SID_MAX];
    uint64_t next_claim_ms; /* monotonic */
    char claim_cursor[WRK_SID_MAX];
    wrk_batch_t batch; /* the batch in flight */
    wrk_buf_t copy;    /* COPY text, reused */
    const char **argv; /* owned array, XACK arguments (batch_size + 3) */
    size_t *argvlen;   /* owned */
    const char **kv;   /* owned array, one entry's fields (borrowed strings) */
    size_t *kvlen;     /* owned */
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
    if (hr_pg_exec(c, wrk_sql_stage, err, sizeof(err)) != 0) {
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

/*
 * Stores the batch's rows in one transaction: COPY into the staging table,
 * one INSERT ... SELECT ... ON CONFLICT (id) DO NOTHING, COMMIT. Sets
 * *inserted to the rows that were new. Returns 0 once committed, else
 * wrk_pg_failed()'s code (nothing committed).
 */
static int
wrk_pg_store_copy(wrk_worker_t *w, uint64_t *inserted, char *err, size_t errlen)
{
    PGconn *c = w->pg;
    int rc = wrk_pg_cmd(w, "BEGIN", NULL, err, errlen);
    if (rc != 0)
        return rc;
    PGresult *r = PQexec(c, wrk_sql_copy);
    if (PQresultStatus(r) != PGRES_COPY_IN)
        return wrk_pg_failed(w, r, "COPY", err, errlen);
    PQclear(r);

    wrk_batch_copy_text(&w->batch, &w->copy);
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

    if ((rc = wrk_pg_cmd(w, wrk_sql_insert, inserted, err, errlen)) != 0)
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
        const char *params[6] = {e->n.id,      e->n.user_id,   e->n.type,
                                 e->n.message, e->n.data_json, e->n.created_at};
        PGresult *r = PQexecParams(w->pg, wrk_sql_insert_one, 6, NULL, params, NULL, NULL, 0);
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
        /*
         * TODO(issue 4, dead letters): XADD the entry to HR_STREAM_DEAD_LETTER
         * before it is acked; today the log line is its only trace.
         */
        hr_log_error("entry_rejected", "sid=%s id=%s reason=\"postgres refused the row: %s\"",
                     e->sid, e->n.id, wrk_log_safe(safe, sizeof(safe), why));
        wrk_batch_reject(b, i);
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
        rc = wrk_pg_store_rows(w, &inserted, err, sizeof(err));
    }
    if (rc != 0) {
        wrk_link_fail(&w->pg_link, err);
        return HR_AGAIN;
    }
    wrk_link_ok(&w->pg_link);
    b->committed = 1;
    w->stats.rows += b->rows;
    w->stats.inserted += inserted;
    uint64_t us = hr_mono_us() - t0;
    hr_log_debug("batch_committed", "rows=%zu inserted=%" PRIu64 " ms=%" PRIu64 ".%03" PRIu64,
                 b->rows, inserted, us / 1000, us % 1000);
    return 0;
}

/* ---- Redis ---- */

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

/* Creates the consumer group (and the stream) unless it exists. 0 or HR_AGAIN. */
static int
wrk_redis_group(wrk_worker_t *w)
{
    const char *argv[] = {"XGROUP",         "CREATE", HR_STREAM_NOTIFICATIONS,
                          HR_GROUP_WORKERS, "0",      "MKSTREAM"};
    redisReply *r = wrk_redis_cmd(w, (int)HR_ARRAY_LEN(argv), argv, NULL);
    if (r == NULL)
        return HR_AGAIN;
    if (r->type == REDIS_REPLY_ERROR) {
        if (strncmp(r->str, "BUSYGROUP", 9) != 0)
            return wrk_redis_error(w, "XGROUP CREATE", r);
    } else {
        hr_log_info("group_created", "stream=%s group=%s", HR_STREAM_NOTIFICATIONS,
                    HR_GROUP_WORKERS);
    }
    freeReplyObject(r);
    return 0;
}

/*
 * Makes w->redis usable: connects, sets the reply timeout, ensures the group,
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
    w->read_pending = 1;
    snprintf(w->pending_cursor, sizeof(w->pending_cursor), "0");
    return 0;
}

/*
 * Moves a list of stream entries ([id, [field, value, ...] or nil], ...) into
 * the batch, logging each rejected one. Returns how many entries were added.
 */
static size_t
wrk_take_entries(wrk_worker_t *w, const redisReply *list)
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
        int rc = wrk_batch_add(&w->batch, sid->str, sid->len, kv, w->kvlen, nkv, err, sizeof(err));
        if (rc == HR_AGAIN) {
            /* Cannot happen with COUNT <= capacity; left pending, re-read later. */
            hr_log_error("entry_skipped", "sid=%.*s reason=\"batch full or id too long\"",
                         (int)(sid->len > 64 ? 64 : sid->len), sid->str);
            continue;
        }
        added++;
        if (rc == HR_DECLINED) {
            /*
             * Acked with the batch so it never blocks the stream.
             * TODO(issue 4, dead letters): XADD it to HR_STREAM_DEAD_LETTER
             * (with the reason) before the ack; today the log line is its
             * only trace.
             */
            hr_log_error("entry_rejected", "sid=%s reason=\"%s\"",
                         w->batch.entries[w->batch.len - 1].sid,
                         wrk_log_safe(safe, sizeof(safe), err));
            w->stats.rejected++;
        }
    }
    return added;
}

/* Entries of an XREADGROUP reply ([[stream, entries]] or nil) into the batch. */
static size_t
wrk_take_xread(wrk_worker_t *w, const redisReply *r)
{
    size_t n = 0;
    if (r->type != REDIS_REPLY_ARRAY)
        return 0;
    for (size_t i = 0; i < r->elements; i++) {
        const redisReply *s = r->element[i];
        if (s->type == REDIS_REPLY_ARRAY && s->elements == 2)
            n += wrk_take_entries(w, s->element[1]);
    }
    return n;
}

/* Handles an XREADGROUP/XAUTOCLAIM error reply; NOGROUP recreates the group. */
static int
wrk_fetch_error(wrk_worker_t *w, const char *cmd, redisReply *r)
{
    if (strncmp(r->str, "NOGROUP", 7) != 0)
        return wrk_redis_error(w, cmd, r);
    freeReplyObject(r);
    hr_log_warn("group_missing", "stream=%s group=%s action=recreate", HR_STREAM_NOTIFICATIONS,
                HR_GROUP_WORKERS);
    if (wrk_redis_group(w) != 0)
        return HR_AGAIN;
    w->read_pending = 1;
    snprintf(w->pending_cursor, sizeof(w->pending_cursor), "0");
    return 0;
}

/* XREADGROUP from id (own pending entries after id) or ">" (new, blocking). */
static int
wrk_fetch_read(wrk_worker_t *w, const char *id, size_t *got)
{
    char count[16], block[16];
    snprintf(count, sizeof(count), "%d", w->cfg->batch_size);
    snprintf(block, sizeof(block), "%d", w->cfg->block_ms);
    int blocking = strcmp(id, ">") == 0;
    const char *argv[] = {
        "XREADGROUP", "GROUP",   HR_GROUP_WORKERS,        w->consumer, "COUNT", count, "BLOCK",
        block,        "STREAMS", HR_STREAM_NOTIFICATIONS, id};
    const char *pending_argv[] = {
        "XREADGROUP", "GROUP",   HR_GROUP_WORKERS,        w->consumer, "COUNT",
        count,        "STREAMS", HR_STREAM_NOTIFICATIONS, id};
    redisReply *r = blocking
                        ? wrk_redis_cmd(w, (int)HR_ARRAY_LEN(argv), argv, NULL)
                        : wrk_redis_cmd(w, (int)HR_ARRAY_LEN(pending_argv), pending_argv, NULL);
    *got = 0;
    if (r == NULL)
        return HR_AGAIN;
    if (r->type == REDIS_REPLY_ERROR)
        return wrk_fetch_error(w, "XREADGROUP", r);
    *got = wrk_take_xread(w, r);
    freeReplyObject(r);
    return 0;
}

/*
 * XAUTOCLAIM: takes over entries other consumers left pending longer than
 * claim_idle_ms, continuing from the saved cursor. Entries Redis reports as
 * deleted (trimmed while pending) are already gone from the PEL: log them.
 */
static int
wrk_fetch_claim(wrk_worker_t *w, size_t *got)
{
    char count[16], idle[16];
    snprintf(count, sizeof(count), "%d", w->cfg->batch_size);
    snprintf(idle, sizeof(idle), "%d", w->cfg->claim_idle_ms);
    const char *argv[] = {"XAUTOCLAIM", HR_STREAM_NOTIFICATIONS, HR_GROUP_WORKERS, w->consumer,
                          idle,         w->claim_cursor,         "COUNT",          count};
    *got = 0;
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
    memcpy(w->claim_cursor, r->element[0]->str, r->element[0]->len);
    w->claim_cursor[r->element[0]->len] = '\0';
    *got = wrk_take_entries(w, r->element[1]);
    if (r->elements >= 3 && r->element[2]->type == REDIS_REPLY_ARRAY &&
        r->element[2]->elements > 0) {
        const redisReply *d = r->element[2];
        hr_log_error("entries_lost",
                     "count=%zu first_sid=%s reason=\"deleted from the stream "
                     "while pending; no row can be written\"",
                     d->elements,
                     d->element[0]->type == REDIS_REPLY_STRING ? d->element[0]->str : "?");
    }
    if (strcmp(w->claim_cursor, "0-0") == 0) {
        uint64_t every = (uint64_t)w->cfg->claim_idle_ms / 2;
        w->next_claim_ms = hr_mono_ms() + (every < 500 ? 500 : every);
    }
    if (*got > 0) {
        w->stats.claimed += *got;
        hr_log_info("entries_claimed", "count=%zu min_idle_ms=%d", *got, w->cfg->claim_idle_ms);
    }
    freeReplyObject(r);
    return 0;
}

/*
 * Fills the empty batch, in order of priority: this consumer's own pending
 * entries (after a (re)connect), entries abandoned by other consumers, new
 * entries (blocking up to block_ms). Returns 0 (the batch may still be empty)
 * or HR_AGAIN after a Redis failure.
 */
static int
wrk_fetch(wrk_worker_t *w)
{
    size_t got;
    int rc;
    if (w->read_pending) {
        if ((rc = wrk_fetch_read(w, w->pending_cursor, &got)) != 0)
            return rc;
        if (got == 0 && w->read_pending) {
            w->read_pending = 0;
        } else if (got > 0) {
            hr_log_info("pending_reread", "count=%zu", got);
            snprintf(w->pending_cursor, sizeof(w->pending_cursor), "%s",
                     w->batch.entries[w->batch.len - 1].sid);
            return 0;
        }
    }
    if (w->cfg->claim_idle_ms > 0 && hr_mono_ms() >= w->next_claim_ms) {
        if ((rc = wrk_fetch_claim(w, &got)) != 0)
            return rc;
        if (got > 0)
            return 0;
    }
    return wrk_fetch_read(w, ">", &got);
}

/*
 * XACKs every entry of the committed batch in one command, then empties the
 * batch. Returns 0, or HR_AGAIN (batch kept, still committed: the ack is
 * retried after reconnecting).
 */
static int
wrk_ack(wrk_worker_t *w)
{
    wrk_batch_t *b = &w->batch;
    size_t argc = 0;
    w->argv[argc] = "XACK";
    w->argvlen[argc++] = 4;
    w->argv[argc] = HR_STREAM_NOTIFICATIONS;
    w->argvlen[argc++] = strlen(HR_STREAM_NOTIFICATIONS);
    w->argv[argc] = HR_GROUP_WORKERS;
    w->argvlen[argc++] = strlen(HR_GROUP_WORKERS);
    for (size_t i = 0; i < b->len; i++) {
        w->argv[argc] = b->entries[i].sid;
        w->argvlen[argc++] = strlen(b->entries[i].sid);
    }
    redisReply *r = wrk_redis_cmd(w, (int)argc, w->argv, w->argvlen);
    if (r == NULL)
        return HR_AGAIN;
    if (r->type == REDIS_REPLY_ERROR)
        return wrk_redis_error(w, "XACK", r);
    if (r->type == REDIS_REPLY_INTEGER && (size_t)r->integer != b->len)
        hr_log_debug("ack_partial", "entries=%zu acked=%lld", b->len, r->integer);
    freeReplyObject(r);
    w->stats.batches++;
    wrk_batch_clear(b);
    return 0;
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
    snprintf(w->claim_cursor, sizeof(w->claim_cursor), "0-0");
    wrk_batch_init(&w->batch, (size_t)cfg->batch_size);
    w->argv = hr_calloc((size_t)cfg->batch_size + 3, sizeof(*w->argv));
    w->argvlen = hr_calloc((size_t)cfg->batch_size + 3, sizeof(*w->argvlen));
    return w;
}

int
wrk_worker_step(wrk_worker_t *w)
{
    wrk_batch_t *b = &w->batch;
    if (b->len == 0) {
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
    hr_log_info("started", "consumer=%s stream=%s group=%s batch_size=%d block_ms=%d", w->consumer,
                HR_STREAM_NOTIFICATIONS, HR_GROUP_WORKERS, w->cfg->batch_size, w->cfg->block_ms);
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
                " claimed=%" PRIu64,
                w->stats.batches, w->stats.rows, w->stats.inserted, w->stats.rejected,
                w->stats.claimed);
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
