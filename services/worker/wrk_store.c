/* The worker's PostgreSQL stage: connection, migrations, COPY, bisection of a refused batch,
 * receipts.
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
#define WRK_ROOM_STAGE "room_messages_stage"
static const char wrk_sql_room_stage[] =
    "CREATE TEMP TABLE IF NOT EXISTS " WRK_ROOM_STAGE
    " (LIKE room_messages INCLUDING DEFAULTS) ON COMMIT DELETE ROWS";
static const char wrk_sql_room_copy[] = "COPY " WRK_ROOM_STAGE " (" WRK_ROOM_COLUMNS ") FROM STDIN";
static const char wrk_sql_room_insert[] =
    "INSERT INTO room_messages (" WRK_ROOM_COLUMNS ") SELECT " WRK_ROOM_COLUMNS
    " FROM " WRK_ROOM_STAGE " ON CONFLICT (id) DO NOTHING";
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
 * process, creates the staging table. Returns 0 or HR_AGAIN: an outage
 * (recorded), or a migration that failed on a live connection (logged at
 * error level, retried with backoff like an outage).
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
            /* A lock_timeout, a lock held by a long transaction, a fix on its way: retry, at
             * error level each time, for as long as it lasts. */
            char safe[512];
            hr_log_error("migration_failed", "dir=%s error=\"%s\" action=retry_with_backoff",
                         w->cfg->migrations_dir, wrk_log_safe(safe, sizeof(safe), err));
            w->migrate_failed = 1;
            return HR_AGAIN;
        }
        hr_log_info("migrated", "applied=%d dir=%s", applied, w->cfg->migrations_dir);
        w->migrated = 1;
        w->migrate_failed = 0;
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
 * live connection, so a bisection can isolate the culprit; HR_AGAIN for
 * everything else (w->pg NULL afterwards if the connection is gone). err
 * ends in " sqlstate=XXXXX" when the server gave one.
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

/* FNV-1a of a NUL-terminated string. */
static uint64_t
wrk_hash(const char *s)
{
    uint64_t h = 1469598103934665603ull;
    for (; *s != '\0'; s++)
        h = (h ^ (unsigned char)*s) * 1099511628211ull;
    return h;
}

/*
 * Marks the receipts of entries [lo, hi) whose id is in the result (ids
 * without a row) no_ack. A hash set of the result: a big batch of waiting
 * receipts costs O(n), not one string compare per pair.
 */
static void
wrk_mark_missing(wrk_worker_t *w, PGresult *r, size_t lo, size_t hi)
{
    wrk_batch_t *b = &w->batch;
    int n = PQntuples(r);
    if (n <= 0)
        return;
    size_t cap = 16;
    while (cap < 2 * (size_t)n)
        cap *= 2;
    const char **set = hr_calloc(cap, sizeof(*set)); /* borrowed from r */
    for (int k = 0; k < n; k++) {
        const char *id = PQgetvalue(r, k, 0);
        size_t at = (size_t)wrk_hash(id) & (cap - 1);
        while (set[at] != NULL && strcmp(set[at], id) != 0)
            at = (at + 1) & (cap - 1);
        set[at] = id;
    }
    for (size_t i = lo; i < hi; i++) {
        wrk_entry_t *e = &b->entries[i];
        if (e->stream != WRK_S_RECEIPT || !e->is_row)
            continue;
        size_t at = (size_t)wrk_hash(e->n.id) & (cap - 1);
        while (set[at] != NULL && strcmp(set[at], e->n.id) != 0)
            at = (at + 1) & (cap - 1);
        if (set[at] != NULL)
            e->no_ack = 1;
    }
    hr_free(set);
}

/*
 * Applies the receipts of entries [lo, hi) in the open transaction; those
 * whose row does not exist are marked no_ack. 0 or wrk_pg_failed()'s code.
 */
static int
wrk_pg_receipts(wrk_worker_t *w, size_t lo, size_t hi, char *err, size_t errlen)
{
    wrk_batch_t *b = &w->batch;
    wrk_buf_t ids = {0}, ms = {0};
    wrk_buf_append(&ids, "{", 1);
    wrk_buf_append(&ms, "{", 1);
    int first = 1;
    for (size_t i = lo; i < hi; i++) {
        wrk_entry_t *e = &b->entries[i];
        if (e->stream != WRK_S_RECEIPT || !e->is_row)
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
    wrk_mark_missing(w, r, lo, hi);
    PQclear(r);
    return 0;
}

/*
 * Stores the rows of entries [lo, hi) in one transaction: notifications and
 * room messages by COPY into staging tables and INSERT ... SELECT ... ON
 * CONFLICT (id) DO NOTHING, receipts by one UPDATE, then COMMIT. Adds the
 * rows that were new to *inserted. Returns 0 once committed (or nothing to
 * store), else wrk_pg_failed()'s code (nothing of the range committed).
 */
static int
wrk_pg_store_range(wrk_worker_t *w, size_t lo, size_t hi, uint64_t *inserted, char *err,
                   size_t errlen)
{
    wrk_batch_t *b = &w->batch;
    size_t nrows[WRK_NSTREAMS] = {0};
    for (size_t i = lo; i < hi; i++) {
        b->entries[i].no_ack = 0;
        if (b->entries[i].is_row)
            nrows[b->entries[i].stream]++;
    }
    if (nrows[WRK_S_NOTIFY] + nrows[WRK_S_ROOM] + nrows[WRK_S_RECEIPT] == 0)
        return 0;
    uint64_t n = 0, got = 0;
    int rc = wrk_pg_cmd(w, "BEGIN", NULL, err, errlen);
    if (rc != 0)
        return rc;
    if (nrows[WRK_S_NOTIFY] > 0) {
        wrk_batch_copy_text(b, lo, hi, &w->copy);
        if ((rc = wrk_pg_copy(w, wrk_sql_copy, err, errlen)) != 0 ||
            (rc = wrk_pg_cmd(w, wrk_sql_insert, &n, err, errlen)) != 0)
            return rc;
        got += n;
    }
    uint64_t got_notify = got;
    if (nrows[WRK_S_ROOM] > 0) {
        wrk_batch_copy_rooms(b, lo, hi, &w->copy);
        if ((rc = wrk_pg_copy(w, wrk_sql_room_copy, err, errlen)) != 0 ||
            (rc = wrk_pg_cmd(w, wrk_sql_room_insert, &n, err, errlen)) != 0)
            return rc;
        got += n;
    }
    if (nrows[WRK_S_RECEIPT] > 0 && (rc = wrk_pg_receipts(w, lo, hi, err, errlen)) != 0)
        return rc;
    if ((rc = wrk_pg_cmd(w, "COMMIT", NULL, err, errlen)) != 0)
        return rc;
    *inserted += got;
    hr_counter_add(&w->m.rows[WRK_T_NOTIFY], got_notify);
    hr_counter_add(&w->m.rows[WRK_T_ROOM], got - got_notify);
    return 0;
}

/* One isolation round over the batch after PostgreSQL refused it whole. */
typedef struct {
    size_t progress;  /* ranges committed this round */
    size_t *suspects; /* owned: single entries that failed with a non-data error */
    char (*why)[512]; /* owned: their errors */
    size_t nsuspects;
    uint64_t inserted;
    char err[512]; /* the last error */
} wrk_isolate_t;

/* Entries [lo, hi) holding a row. */
static size_t
wrk_rows_in(const wrk_batch_t *b, size_t lo, size_t hi)
{
    size_t n = 0;
    for (size_t i = lo; i < hi; i++)
        n += b->entries[i].is_row != 0;
    return n;
}

#define WRK_SUSPECTS_MAX 3 /* this many lone failures and no success: not the rows' fault */

/*
 * Stores [lo, hi) or, when PostgreSQL refuses it, its halves, down to single
 * entries: one PostgreSQL refuses as data (class 22/23) is rejected at once;
 * one that fails alone with any other error is a suspect, rejected at the end
 * of the round only if something else was stored (so a server-wide error,
 * a revoked grant or a schema mismatch, rejects nothing). Returns 0, or
 * HR_AGAIN to end the round (PostgreSQL unreachable, or WRK_SUSPECTS_MAX
 * suspects and no progress).
 */
static int
wrk_pg_isolate(wrk_worker_t *w, wrk_isolate_t *iso, size_t lo, size_t hi)
{
    wrk_batch_t *b = &w->batch;
    size_t rows = wrk_rows_in(b, lo, hi);
    if (rows == 0)
        return 0;
    int rc = wrk_pg_store_range(w, lo, hi, &iso->inserted, iso->err, sizeof(iso->err));
    if (rc == 0) {
        iso->progress++;
        return 0;
    }
    if (w->pg == NULL)
        return HR_AGAIN;
    if (rows > 1) {
        /* Split at the middle row, so both halves hold rows. */
        size_t mid = lo, seen = 0;
        while (seen < rows / 2)
            seen += b->entries[mid++].is_row != 0;
        if ((rc = wrk_pg_isolate(w, iso, lo, mid)) != 0)
            return rc;
        return wrk_pg_isolate(w, iso, mid, hi);
    }
    size_t i = lo;
    while (!b->entries[i].is_row)
        i++;
    wrk_entry_t *e = &b->entries[i];
    char safe[512], reason[600], rid[WRK_RID_LOG_MAX];
    if (rc == HR_DECLINED) {
        hr_log_error("entry_rejected",
                     "sid=%s id=%s request_id=\"%s\" reason=\"postgres refused the row: %s\"",
                     e->sid, e->n.id, wrk_entry_rid(rid, e),
                     wrk_log_safe(safe, sizeof(safe), iso->err));
        snprintf(reason, sizeof(reason), "postgres refused the row: %s", iso->err);
        wrk_batch_reject_reason(b, i, reason); /* dead-lettered with the ack */
        w->stats.rejected++;
        return 0;
    }
    iso->suspects[iso->nsuspects] = i;
    snprintf(iso->why[iso->nsuspects], sizeof(iso->why[0]), "%s", iso->err);
    iso->nsuspects++;
    return iso->progress == 0 && iso->nsuspects >= WRK_SUSPECTS_MAX ? HR_AGAIN : 0;
}

/*
 * After PostgreSQL refused the whole batch: a bisection round (see
 * wrk_pg_isolate). ~2 log2(n) transactions per culprit instead of one per
 * row. Returns 0 when every row is stored or rejected, else HR_AGAIN.
 */
static int
wrk_pg_store_isolating(wrk_worker_t *w, uint64_t *inserted, char *err, size_t errlen)
{
    wrk_batch_t *b = &w->batch;
    wrk_isolate_t iso = {0};
    iso.suspects = hr_calloc(b->len ? b->len : 1, sizeof(*iso.suspects));
    iso.why = hr_calloc(b->len ? b->len : 1, sizeof(*iso.why));
    int rc = wrk_pg_isolate(w, &iso, 0, b->len);
    if (rc == 0 && iso.nsuspects > 0 && iso.progress == 0)
        rc = HR_AGAIN; /* every try failed: nothing tells the rows apart */
    if (rc == 0) {
        for (size_t k = 0; k < iso.nsuspects; k++) {
            wrk_entry_t *e = &b->entries[iso.suspects[k]];
            char safe[512], reason[600], rid[WRK_RID_LOG_MAX];
            hr_log_error("entry_rejected",
                         "sid=%s id=%s request_id=\"%s\" reason=\"postgres failed on this entry "
                         "alone: %s\"",
                         e->sid, e->n.id, wrk_entry_rid(rid, e),
                         wrk_log_safe(safe, sizeof(safe), iso.why[k]));
            snprintf(reason, sizeof(reason), "postgres failed on this entry alone: %s", iso.why[k]);
            wrk_batch_reject_reason(b, iso.suspects[k], reason);
            w->stats.rejected++;
        }
    }
    snprintf(err, errlen, "%s", iso.err);
    *inserted = iso.inserted;
    hr_free(iso.suspects);
    hr_free(iso.why);
    return rc;
}

/* Logs a refusal of a live PostgreSQL, at error level for as long as it lasts. */
static void
wrk_log_refused(wrk_worker_t *w, const char *err, const char *action)
{
    char safe[512];
    hr_log_error("store_failed", "rows=%zu repeats=%u error=\"%s\" action=%s", w->batch.rows,
                 w->refused_repeats, wrk_log_safe(safe, sizeof(safe), err), action);
}

/*
 * Commits the batch's rows (nothing to do if every entry was rejected). The
 * whole batch in one transaction first; a data refusal (class 22/23), or the
 * same other error twice in a row on a live connection (a statement timeout,
 * a permission, a schema mismatch, a limit), starts a bisection round that
 * stores the rest and rejects the culprits. Returns 0 and marks the batch
 * committed, HR_AGAIN after a failure (outage recorded or refusal logged,
 * batch kept for a retry), HR_ERR on a fatal one.
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
    rc = wrk_pg_store_range(w, 0, b->len, &inserted, err, sizeof(err));
    if (rc == HR_AGAIN && reused && w->pg == NULL) {
        /* The idle connection had died (e.g. a server restart): one fresh try before
         * calling it an outage. */
        if ((rc = wrk_pg_ready(w)) != 0)
            return rc;
        rc = wrk_pg_store_range(w, 0, b->len, &inserted, err, sizeof(err));
    }
    if (rc != 0 && w->pg != NULL) {
        const char *st = strstr(err, "sqlstate=");
        char state[8] = "";
        if (st != NULL)
            snprintf(state, sizeof(state), "%.5s", st + 9);
        int same = w->refused_repeats > 0 && strcmp(state, w->refused_state) == 0;
        w->refused_repeats = same ? w->refused_repeats + 1 : 1;
        snprintf(w->refused_state, sizeof(w->refused_state), "%s", state);
        if (rc == HR_DECLINED || w->refused_repeats >= 2) {
            wrk_log_refused(w, err, "isolate");
            rc = wrk_pg_store_isolating(w, &inserted, err, sizeof(err));
        } else {
            wrk_log_refused(w, err, "retry");
            rc = HR_AGAIN;
        }
        if (rc != 0 && w->pg != NULL) {
            wrk_log_refused(w, err, "retry_with_backoff");
            return HR_AGAIN;
        }
    }
    if (rc != 0) {
        wrk_link_fail(&w->pg_link, err);
        return HR_AGAIN;
    }
    w->refused_repeats = 0;
    w->refused_state[0] = '\0';
    wrk_link_ok(&w->pg_link);
    b->committed = 1;
    hr_counter_inc(w->m.batches);
    hr_histogram_observe(w->m.batch_size, (double)b->len);
    hr_histogram_observe(w->m.commit_seconds, (double)(hr_mono_us() - t0) / 1e6);
    w->stats.rows += b->rows;
    w->stats.inserted += inserted;

    /* Receipts whose row is missing stay pending, unless they waited too long (on the clock
     * of their stream ids: Redis's). */
    uint64_t now = wrk_redis_now_ms(w);
    size_t waiting = 0;
    for (size_t i = 0; i < b->len; i++) {
        wrk_entry_t *e = &b->entries[i];
        if (e->stream != WRK_S_RECEIPT || !e->is_row)
            continue;
        if (!e->no_ack) {
            w->stats.receipts++;
            hr_counter_inc(&w->m.rows[WRK_T_RECEIPT]);
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
