#include "hist_db.h"
#include "herald/hr_alloc.h"
#include "herald/hr_core.h"
#include "herald/hr_log.h"
#include "herald/hr_redis.h"
#include "herald/hr_time.h"

#include <errno.h>
#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Used when the configured conninfo does not say: a dead host must not stall the loop for long. */
#define HIST_DB_CONNECT_TIMEOUT_S "2"
#define HIST_DB_APPLICATION_NAME "herald-history"

typedef enum { HIST_DB_DISCONNECTED, HIST_DB_READY } hist_db_state_t;

/*
 * Statements prepared on every new connection; add one here and an index below.
 * hist_db_exec may run a statement twice (retry after a stale connection), so
 * each must be safe to repeat: reads, or idempotent writes such as
 * "SET read_at = coalesce(read_at, now())".
 */
enum { HIST_STMT_PING, HIST_STMT_LIST, HIST_STMT_COUNT };

/* Columns of HIST_STMT_LIST, in select order. */
enum {
    HIST_COL_ID,
    HIST_COL_USER_ID,
    HIST_COL_TYPE,
    HIST_COL_MESSAGE,
    HIST_COL_DATA,
    HIST_COL_CREATED_AT,
    HIST_COL_DELIVERED_AT,
    HIST_COL_READ_AT,
    HIST_COL_COUNT
};

static const struct {
    const char *name;
    const char *sql;
} hist_db_stmts[HIST_STMT_COUNT] = {
    [HIST_STMT_PING] = {"hist_ping", "SELECT 1"},
    /*
     * $1 user_id, $2 limit. Served by notifications_user_id_idx (user_id, id DESC);
     * UUIDv7 ids sort by creation time. ORDER BY names n.id because a bare "id"
     * is the id::text output column: sorted as text, not read from the index.
     * Timestamps leave as whole ms since the epoch (numeric extract is exact
     * from PostgreSQL 14) and are formatted by hr_time_format_iso, so every
     * Herald service writes them the same way.
     */
    [HIST_STMT_LIST] = {"hist_list",
                        "SELECT n.id::text, n.user_id, n.type, n.message, n.data::text,"
                        " floor(extract(epoch FROM n.created_at) * 1000)::int8,"
                        " floor(extract(epoch FROM n.delivered_at) * 1000)::int8,"
                        " floor(extract(epoch FROM n.read_at) * 1000)::int8"
                        " FROM notifications n WHERE n.user_id = $1"
                        " ORDER BY n.id DESC LIMIT $2"},
};

struct hist_db_s {
    char *conninfo; /* owned */
    PGconn *conn;   /* owned; NULL unless READY */
    hist_db_state_t state;
    int proven;               /* the open connection has answered a statement */
    hr_backoff_t backoff;     /* grows with failed attempts, reset by a good answer */
    uint64_t next_attempt_ms; /* monotonic: no connect attempt before this */
};

/*
 * libpq messages span lines, indent with tabs and quote names; a log value
 * wants one line inside "...": white space becomes one space, " becomes '.
 */
static void
hist_db_oneline(char *s)
{
    char *o = s;
    for (const char *p = s; *p; p++) {
        char c = *p == '"' ? '\'' : *p;
        if (c == '\n' || c == '\r' || c == '\t')
            c = ' ';
        if (c == ' ' && (o == s || o[-1] == ' '))
            continue;
        *o++ = c;
    }
    if (o > s && o[-1] == ' ')
        o--;
    *o = '\0';
}

/* Server notices go to the log instead of libpq's bare stderr print. */
static void
hist_db_notice(void *arg, const char *message)
{
    HR_UNUSED(arg);
    char buf[512];
    snprintf(buf, sizeof(buf), "%s", message);
    hist_db_oneline(buf);
    hr_log_info("postgres_notice", "message=\"%s\"", buf);
}

/*
 * Opens a connection and prepares every statement. Herald's defaults come
 * before the configured string, which libpq expands in place, so settings
 * given there win. Returns the connection (owned by caller) or NULL with err
 * filled.
 */
static PGconn *
hist_db_open(const char *conninfo, char *err, size_t errlen)
{
    const char *const keys[] = {"connect_timeout", "application_name", "dbname", NULL};
    const char *const vals[] = {HIST_DB_CONNECT_TIMEOUT_S, HIST_DB_APPLICATION_NAME, conninfo,
                                NULL};
    PGconn *c = PQconnectdbParams(keys, vals, 1);
    if (c == NULL) {
        snprintf(err, errlen, "cannot allocate connection");
        return NULL;
    }
    if (PQstatus(c) != CONNECTION_OK) {
        snprintf(err, errlen, "%s", PQerrorMessage(c));
        hist_db_oneline(err);
        PQfinish(c);
        return NULL;
    }
    PQsetNoticeProcessor(c, hist_db_notice, NULL);
    for (int i = 0; i < HIST_STMT_COUNT; i++) {
        PGresult *r = PQprepare(c, hist_db_stmts[i].name, hist_db_stmts[i].sql, 0, NULL);
        int ok = PQresultStatus(r) == PGRES_COMMAND_OK;
        if (!ok) {
            snprintf(err, errlen, "prepare %s: %s", hist_db_stmts[i].name, PQerrorMessage(c));
            hist_db_oneline(err);
        }
        PQclear(r);
        if (!ok) {
            PQfinish(c);
            return NULL;
        }
    }
    return c;
}

/*
 * Makes sure a connection is open, trying at most once per backoff interval.
 * Returns 0 when READY, HR_AGAIN when not (logged here).
 */
static int
hist_db_connect(hist_db_t *db)
{
    if (db->state == HIST_DB_READY)
        return 0;
    if (hr_mono_ms() < db->next_attempt_ms)
        return HR_AGAIN;

    char err[512];
    PGconn *c = hist_db_open(db->conninfo, err, sizeof(err));
    if (c == NULL) {
        uint32_t wait = hr_backoff_next(&db->backoff);
        /* Measured after the attempt: a slow failure must not shorten the pause. */
        db->next_attempt_ms = hr_mono_ms() + wait;
        hr_log_warn("postgres_connect_failed", "retry_in_ms=%u error=\"%s\"", wait, err);
        return HR_AGAIN;
    }
    db->conn = c;
    db->state = HIST_DB_READY;
    db->proven = 0;
    hr_log_info("postgres_connected", "server_version=%d", PQserverVersion(c));
    return 0;
}

/*
 * Closes a connection found broken. One that had been answering may simply
 * have gone stale (server restart, idle timeout), so the next attempt may come
 * at once; one that broke before its first answer waits a backoff interval, so
 * a failing server is not reconnected to on every request.
 */
static void
hist_db_drop(hist_db_t *db)
{
    PQfinish(db->conn);
    db->conn = NULL;
    db->state = HIST_DB_DISCONNECTED;
    if (!db->proven)
        db->next_attempt_ms = hr_mono_ms() + hr_backoff_next(&db->backoff);
    db->proven = 0;
}

/*
 * Whether a failed statement means the connection is unusable: libpq marks it
 * bad, the failure is client-side (no SQLSTATE), or the server reports a
 * connection exception (08), an operator intervention such as shutdown (57P),
 * or a prepared statement that vanished (26000, e.g. behind a pooler).
 */
static int
hist_db_conn_lost(PGconn *c, const PGresult *r)
{
    if (PQstatus(c) == CONNECTION_BAD)
        return 1;
    const char *st = r != NULL ? PQresultErrorField(r, PG_DIAG_SQLSTATE) : NULL;
    if (st == NULL)
        return 1;
    return strncmp(st, "08", 2) == 0 || strncmp(st, "57P", 3) == 0 || strcmp(st, "26000") == 0;
}

/*
 * Runs prepared statement stmt. A connection that breaks after having worked
 * is replaced and the statement retried once, so a server restart between two
 * requests is not seen by clients (every statement here is a read, safe to
 * repeat). Returns 0 with *out (owned by caller), HR_AGAIN when PostgreSQL is
 * unreachable, or HR_ERR when the server refused the statement; logged here.
 */
static int
hist_db_exec(hist_db_t *db, int stmt, int nparams, const char *const *params, PGresult **out)
{
    *out = NULL;
    for (int attempt = 0; attempt < 2; attempt++) {
        if (hist_db_connect(db) != 0)
            return HR_AGAIN;
        int was_proven = db->proven;
        PGresult *r =
            PQexecPrepared(db->conn, hist_db_stmts[stmt].name, nparams, params, NULL, NULL, 0);
        ExecStatusType st = PQresultStatus(r);
        if (st == PGRES_TUPLES_OK || st == PGRES_COMMAND_OK) {
            db->proven = 1;
            hr_backoff_reset(&db->backoff);
            *out = r;
            return 0;
        }
        char err[512];
        snprintf(err, sizeof(err), "%s", PQerrorMessage(db->conn));
        hist_db_oneline(err);
        if (!hist_db_conn_lost(db->conn, r)) {
            const char *code = PQresultErrorField(r, PG_DIAG_SQLSTATE);
            hr_log_error("query_failed", "stmt=%s sqlstate=%s error=\"%s\"",
                         hist_db_stmts[stmt].name, code, err);
            PQclear(r);
            return HR_ERR;
        }
        PQclear(r);
        hr_log_warn("postgres_connection_lost", "stmt=%s error=\"%s\"", hist_db_stmts[stmt].name,
                    err);
        hist_db_drop(db);
        if (!was_proven)
            break;
    }
    return HR_AGAIN;
}

/* Formats an int8 of ms since the epoch as RFC 3339; "" for NULL. 0, or HR_ERR if out of range. */
static int
hist_db_time(const PGresult *r, int row, int col, char out[HR_TIME_ISO_LEN])
{
    out[0] = '\0';
    if (PQgetisnull(r, row, col))
        return 0;
    const char *v = PQgetvalue(r, row, col);
    char *end;
    errno = 0;
    long long ms = strtoll(v, &end, 10);
    if (errno != 0 || end == v || *end != '\0' || ms < 0)
        return HR_ERR;
    hr_time_format_iso((uint64_t)ms, out);
    return 0;
}

/* Fills page from a HIST_STMT_LIST result; its strings borrow from r. 0 or HR_ERR (logged). */
static int
hist_db_page_fill(const PGresult *r, hist_page_t *page)
{
    int rows = PQntuples(r);
    page->n = (size_t)rows;
    page->items = hr_calloc(page->n, sizeof(*page->items));
    if (PQnfields(r) != HIST_COL_COUNT) {
        hr_log_error("query_failed", "stmt=%s error=\"expected %d columns, got %d\"",
                     hist_db_stmts[HIST_STMT_LIST].name, HIST_COL_COUNT, PQnfields(r));
        return HR_ERR;
    }
    for (int i = 0; i < rows; i++) {
        hist_item_t *it = &page->items[i];
        it->id = PQgetvalue(r, i, HIST_COL_ID);
        it->user_id = PQgetvalue(r, i, HIST_COL_USER_ID);
        it->type = PQgetvalue(r, i, HIST_COL_TYPE);
        it->message = PQgetvalue(r, i, HIST_COL_MESSAGE);
        it->data_json = PQgetisnull(r, i, HIST_COL_DATA) ? NULL : PQgetvalue(r, i, HIST_COL_DATA);
        if (hist_db_time(r, i, HIST_COL_CREATED_AT, it->created_at) != 0 ||
            hist_db_time(r, i, HIST_COL_DELIVERED_AT, it->delivered_at) != 0 ||
            hist_db_time(r, i, HIST_COL_READ_AT, it->read_at) != 0) {
            hr_log_error("row_invalid", "id=%s error=\"timestamp before 1970 or unreadable\"",
                         it->id);
            return HR_ERR;
        }
    }
    return 0;
}

hist_db_t *
hist_db_create(const hist_db_opts_t *opts, char *err, size_t errlen)
{
    char *perr = NULL;
    PQconninfoOption *parsed = PQconninfoParse(opts->conninfo, &perr);
    if (parsed == NULL) {
        snprintf(err, errlen, "postgres.url: %s", perr != NULL ? perr : "out of memory");
        hist_db_oneline(err);
        PQfreemem(perr);
        return NULL;
    }
    PQconninfoFree(parsed);

    hist_db_t *db = hr_calloc(1, sizeof(*db));
    db->conninfo = hr_strdup(opts->conninfo);
    db->state = HIST_DB_DISCONNECTED;
    hr_backoff_init(&db->backoff, opts->backoff_min_ms, opts->backoff_max_ms);
    hist_db_connect(db);
    return db;
}

void
hist_db_destroy(hist_db_t *db)
{
    if (db == NULL)
        return;
    if (db->conn != NULL)
        PQfinish(db->conn);
    hr_free(db->conninfo);
    hr_free(db);
}

int
hist_db_ready(const hist_db_t *db)
{
    return db->state == HIST_DB_READY;
}

void
hist_db_list(hist_db_t *db, const hist_list_query_t *q, hist_db_list_cb cb, void *arg)
{
    char limit[16];
    snprintf(limit, sizeof(limit), "%d", q->limit);
    const char *const params[] = {q->user_id, limit};
    PGresult *r;
    int rc = hist_db_exec(db, HIST_STMT_LIST, (int)HR_ARRAY_LEN(params), params, &r);
    if (rc != 0) {
        cb(rc, NULL, arg);
        return;
    }
    hist_page_t page = {0};
    rc = hist_db_page_fill(r, &page);
    cb(rc, rc == 0 ? &page : NULL, arg);
    hr_free(page.items);
    PQclear(r);
}

void
hist_db_ping(hist_db_t *db, hist_db_ping_cb cb, void *arg)
{
    PGresult *r;
    int rc = hist_db_exec(db, HIST_STMT_PING, 0, NULL, &r);
    PQclear(r);
    cb(rc, arg);
}
