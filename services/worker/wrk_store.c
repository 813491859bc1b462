/* The worker's PostgreSQL stage: connection, migrations, COPY, the row-by-row fallback, receipts.
 */
#include "wrk_internal.h"
#include "herald/hr_alloc.h"
#include "herald/hr_core.h"
#include "herald/hr_log.h"
#include "herald/hr_pg.h"
#include "herald/hr_time.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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

PGconn *
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

void
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
int
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
int
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
