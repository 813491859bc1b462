#include "hist_db.h"
#include "herald/hr_alloc.h"
#include "herald/hr_core.h"
#include "herald/hr_log.h"
#include "herald/hr_redis.h"
#include "herald/hr_time.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define HIST_DB_APPLICATION_NAME "herald-history"
/* One step of the connect handshake (libpq's connect_timeout does not apply to PQconnectPoll). */
#define HIST_DB_CONNECT_STEP_MS 3000
/* How long PREPARE may take on a new connection. */
#define HIST_DB_PREPARE_MS 5000
/* The client gives up this long after the server-side statement_timeout should have fired. */
#define HIST_DB_TIMEOUT_SLACK_MS 2000

/* Timestamps leave as whole ms since the epoch (exact from PostgreSQL 14); C formats them. */
#define HIST_MS(col) "floor(extract(epoch FROM " col ") * 1000)::int8"
/* The greatest uuid: "no cursor" binds NULL and the comparison uses this instead. */
#define HIST_UUID_MAX "'ffffffff-ffff-ffff-ffff-ffffffffffff'::uuid"
#define HIST_STR_(x) #x
#define HIST_STR(x) HIST_STR_(x)
/*
 * count(*) of the rows a WHERE clause on notifications (alias c) finds,
 * stopped at CAP + 1. The ORDER BY keeps the plan on the (user_id, id DESC)
 * indexes: for a user who owns most of the table the planner would otherwise
 * pick a sequential scan through everyone else's rows.
 */
#define HIST_COUNT_CAPPED(where)                                                                   \
    "(SELECT count(*) FROM (SELECT 1 FROM notifications c WHERE " where                            \
    " ORDER BY c.id DESC LIMIT " HIST_STR(HIST_UNREAD_CAP) " + 1) capped)"
/* A notification row as HIST_COL_* lists it, read from alias p. */
#define HIST_COLS(p)                                                                               \
    p ".id::text, " p ".user_id, " p ".type, " p ".message, " p ".data::text, " HIST_MS(           \
        p ".created_at") ", " HIST_MS(p ".delivered_at") ", " HIST_MS(p ".read_at")

/*
 * A page of a user's inbox and the user's unread count in one round trip.
 * The count is the outer row so an empty page still carries it (one row of
 * NULL notification columns). The inner ORDER BY n.id and the keyset
 * "n.id < cursor" are served by (user_id, id DESC) indexes; the partial index
 * WHERE read_at IS NULL serves the unread list and the count. ORDER BY names
 * p.id because a bare id would be the text output column.
 */
#define HIST_LIST_SQL(filter)                                                                      \
    "SELECT " HIST_COLS(                                                                           \
        "p") ", c.unread"                                                                          \
             " FROM (SELECT " HIST_COUNT_CAPPED(                                                   \
                 "c.user_id = $1 AND c.read_at IS NULL") " AS unread) c"                           \
                                                         " LEFT JOIN LATERAL (SELECT n.* FROM "    \
                                                         "notifications n"                         \
                                                         "       WHERE n.user_id = $1 AND n.id < " \
                                                         "coalesce($2::uuid, " HIST_UUID_MAX       \
                                                         ") " filter "       ORDER BY n.id DESC "  \
                                                         "LIMIT $3) p ON true"                     \
                                                         " ORDER BY p.id DESC"

/*
 * Mark one notification read or unread. The count in the same statement sees
 * the snapshot before the update, so it counts the other unread rows and adds
 * this row's new state. Both updates are idempotent: safe to retry after a
 * lost connection.
 */
#define HIST_MARK_SQL(set)                                                                         \
    "WITH u AS (UPDATE notifications SET read_at = " set                                           \
    "           WHERE id = $1::uuid AND user_id = $2 RETURNING *)"                                 \
    " SELECT " HIST_COLS(                                                                          \
        "n") ","                                                                                   \
             " " HIST_COUNT_CAPPED(                                                                \
                 "c.user_id = $2 AND c.read_at IS NULL AND c.id <> $1::uuid") " + CASE WHEN "      \
                                                                              "n.read_at IS NULL " \
                                                                              "THEN 1 ELSE 0 END"  \
                                                                              " FROM u n"

static const struct {
    const char *name;
    const char *sql;
} hist_db_stmts[HIST_Q_COUNT] = {
    [HIST_Q_PING] = {"hist_ping", "SELECT 1"},
    [HIST_Q_LIST_ALL] = {"hist_list_all", HIST_LIST_SQL("")},
    [HIST_Q_LIST_UNREAD] = {"hist_list_unread", HIST_LIST_SQL("AND n.read_at IS NULL")},
    [HIST_Q_LIST_READ] = {"hist_list_read", HIST_LIST_SQL("AND n.read_at IS NOT NULL")},
    [HIST_Q_GET] = {"hist_get",
                    "SELECT " HIST_COLS("n") " FROM notifications n"
                                             " WHERE n.id = $1::uuid AND n.user_id = $2"},
    [HIST_Q_MARK_READ] = {"hist_mark_read", HIST_MARK_SQL("coalesce(read_at, now())")},
    [HIST_Q_MARK_UNREAD] = {"hist_mark_unread", HIST_MARK_SQL("NULL")},
    /* The newest unread id up to $2 (all when NULL): what read-all marks and announces. */
    [HIST_Q_READ_ALL_BOUND] = {"hist_read_all_bound",
                               "SELECT (SELECT n.id::text FROM notifications n"
                               "        WHERE n.user_id = $1 AND n.read_at IS NULL"
                               "          AND n.id <= coalesce($2::uuid, " HIST_UUID_MAX ")"
                               "        ORDER BY n.id DESC LIMIT 1), " HIST_COUNT_CAPPED(
                                   "c.user_id = $1 AND c.read_at IS NULL"
                                   " AND c.id > coalesce($2::uuid, " HIST_UUID_MAX ")")},
    /*
     * One chunk of read-all: idempotent, so a re-send after a lost connection
     * is safe. It also returns the oldest id it looked at, where the next
     * chunk starts: rows just marked stay in the partial index until vacuum,
     * and starting from the top again would step over all of them each time.
     * The ids go to the UPDATE as an array so it looks them up by primary
     * key: as a join the planner may hash the whole table for a user who owns
     * most of it.
     */
    [HIST_Q_READ_ALL_CHUNK] =
        {"hist_read_all_chunk",
         "WITH k AS MATERIALIZED (SELECT n.id FROM notifications n"
         "           WHERE n.user_id = $1 AND n.read_at IS NULL AND n.id <= $2::uuid"
         "           ORDER BY n.id DESC LIMIT " HIST_STR(
             HIST_READ_ALL_CHUNK) "),"
                                  " u AS (UPDATE notifications n SET read_at = now()"
                                  "       WHERE n.id = ANY (ARRAY(SELECT k.id FROM k)) AND "
                                  "n.read_at IS NULL RETURNING 1)"
                                  " SELECT (SELECT count(*) FROM u), (SELECT k.id::text FROM k "
                                  "ORDER BY k.id LIMIT 1)"},
    [HIST_Q_UNREAD_COUNT] = {"hist_unread_count",
                             "SELECT " HIST_COUNT_CAPPED("c.user_id = $1 AND c.read_at IS NULL")},
    [HIST_Q_ROOM_MESSAGES] =
        {"hist_room_messages",
         "SELECT m.id::text, m.room, m.user_id, m.message, " HIST_MS(
             "m.created_at") " FROM room_messages m"
                             " WHERE m.room = $1 AND m.id < coalesce($2::uuid, "
                             "" HIST_UUID_MAX ")"
                             " ORDER BY m.id DESC LIMIT $3"},
};

typedef enum {
    HIST_CONN_DOWN,       /* closed; the timer will start a new attempt */
    HIST_CONN_CONNECTING, /* PQconnectPoll handshake */
    HIST_CONN_PREPARING,  /* PQsendPrepare of statement prep_next */
    HIST_CONN_IDLE,       /* ready; watched for the server closing it */
    HIST_CONN_BUSY,       /* running op */
} hist_conn_state_t;

static const char *const hist_conn_state_names[] = {"down", "connecting", "preparing", "idle",
                                                    "busy"};

struct hist_op_s {
    hist_op_t *prev, *next; /* wait queue links, while queued */
    hist_q_t q;
    int nparams;
    char *params[HIST_DB_MAX_PARAMS]; /* owned; NULL is SQL NULL */
    hist_db_cb cb;
    void *arg; /* borrowed: the caller's */
    int queued;
    int retried;          /* already re-sent once after a lost connection */
    uint64_t deadline_ms; /* monotonic: answered HIST_DB_WAITED if still queued then; 0 none */
};

typedef struct {
    hist_db_t *db; /* borrowed: the pool */
    int idx;
    hist_conn_state_t state;
    PGconn *pg;          /* owned; NULL when DOWN */
    struct event *ev;    /* owned: I/O on PQsocket, re-assigned for every wait */
    struct event *timer; /* owned: reconnect delay */
    int prep_next;       /* statement being prepared */
    hr_backoff_t backoff;
    hist_op_t *op; /* owned while BUSY */
    PGresult *res; /* owned: the first result of the running command */
} hist_conn_t;

struct hist_db_s {
    struct event_base *base; /* borrowed */
    char *conninfo;          /* owned */
    char options[64];        /* libpq "options": statement_timeout */
    int query_timeout_ms;
    int queue_max;
    int queue_wait_ms;
    int nconns;
    hist_conn_t *conns; /* owned array */
    hist_op_t *head, *tail;
    int queued;
    struct event *kick;       /* owned: runs dispatch on the next loop turn */
    struct event *queue_wait; /* owned: expires queued ops at the head's deadline */
    int destroying;
    int down_logged; /* "postgres_down" said since the last connection */
};

static void hist_conn_io(evutil_socket_t fd, short what, void *arg);
static void hist_conn_start(hist_conn_t *c);

const char *
hist_db_q_name(hist_q_t q)
{
    return q < HIST_Q_COUNT ? hist_db_stmts[q].name : "?";
}

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

/* ---- the wait queue ---- */

static void
hist_queue_push(hist_db_t *db, hist_op_t *op, int front)
{
    op->queued = 1;
    op->prev = op->next = NULL;
    if (db->head == NULL) {
        db->head = db->tail = op;
    } else if (front) {
        op->next = db->head;
        db->head->prev = op;
        db->head = op;
    } else {
        op->prev = db->tail;
        db->tail->next = op;
        db->tail = op;
    }
    db->queued++;
}

static void
hist_queue_unlink(hist_db_t *db, hist_op_t *op)
{
    if (op->prev != NULL)
        op->prev->next = op->next;
    else
        db->head = op->next;
    if (op->next != NULL)
        op->next->prev = op->prev;
    else
        db->tail = op->prev;
    op->prev = op->next = NULL;
    op->queued = 0;
    db->queued--;
}

static void
hist_op_free(hist_op_t *op)
{
    for (int i = 0; i < op->nparams; i++)
        hr_free(op->params[i]);
    hr_free(op);
}

/* Calls op's callback (unless cancelled) and frees it. */
static void
hist_op_finish(hist_op_t *op, int status, const PGresult *r)
{
    if (op->cb != NULL)
        op->cb(status, r, op->arg);
    hist_op_free(op);
}

int
hist_db_alive(const hist_db_t *db)
{
    int n = 0;
    for (int i = 0; i < db->nconns; i++)
        n += db->conns[i].state == HIST_CONN_IDLE || db->conns[i].state == HIST_CONN_BUSY;
    return n;
}

void
hist_db_stats(const hist_db_t *db, hist_db_stats_t *st)
{
    st->open = 0;
    st->busy = 0;
    for (int i = 0; i < db->nconns; i++) {
        st->busy += db->conns[i].state == HIST_CONN_BUSY;
        st->open += db->conns[i].state == HIST_CONN_IDLE || db->conns[i].state == HIST_CONN_BUSY;
    }
    st->waiting = db->queued;
}

/* With no open connection left, nothing queued can run soon: answer those now. */
static void
hist_db_fail_queue_if_down(hist_db_t *db)
{
    if (hist_db_alive(db) > 0)
        return;
    if (!db->down_logged) {
        db->down_logged = 1;
        hr_log_warn("postgres_down", "failed_queued=%d", db->queued);
    }
    while (db->head != NULL) {
        hist_op_t *op = db->head;
        hist_queue_unlink(db, op);
        hist_op_finish(op, HR_AGAIN, NULL);
    }
}

/*
 * Answers HIST_DB_WAITED to every queued op past its deadline and arms the
 * timer for the next one. Ops are queued in deadline order (a re-sent op goes
 * to the front with none), so the scan stops at the first live one.
 */
static void
hist_db_expire(hist_db_t *db)
{
    uint64_t now = hr_mono_ms();
    hist_op_t *op = db->head;
    while (op != NULL) {
        hist_op_t *next = op->next;
        if (op->deadline_ms != 0) {
            if (op->deadline_ms > now) {
                uint64_t ms = op->deadline_ms - now;
                struct timeval tv = {(time_t)(ms / 1000), (suseconds_t)(ms % 1000) * 1000};
                evtimer_add(db->queue_wait, &tv);
                return;
            }
            hist_queue_unlink(db, op);
            hist_op_finish(op, HIST_DB_WAITED, NULL);
        }
        op = next;
    }
}

static void
hist_db_queue_wait_cb(evutil_socket_t fd, short what, void *arg)
{
    HR_UNUSED(fd);
    HR_UNUSED(what);
    hist_db_t *db = arg;
    hist_db_expire(db);
}

static void
hist_db_kick(hist_db_t *db)
{
    if (!db->destroying)
        event_active(db->kick, EV_TIMEOUT, 0);
}

/* ---- one connection ---- */

/* Waits for what on the connection's socket; timeout_ms 0 means none. */
static void
hist_conn_watch(hist_conn_t *c, short what, int timeout_ms)
{
    event_del(c->ev);
    event_assign(c->ev, c->db->base, PQsocket(c->pg), what, hist_conn_io, c);
    if (timeout_ms > 0) {
        struct timeval tv = {timeout_ms / 1000, (timeout_ms % 1000) * 1000};
        event_add(c->ev, &tv);
    } else {
        event_add(c->ev, NULL);
    }
}

static void
hist_conn_close(hist_conn_t *c)
{
    event_del(c->ev);
    if (c->res != NULL) {
        PQclear(c->res);
        c->res = NULL;
    }
    if (c->pg != NULL) {
        PQfinish(c->pg);
        c->pg = NULL;
    }
    c->state = HIST_CONN_DOWN;
}

static void
hist_conn_schedule(hist_conn_t *c, uint32_t delay_ms)
{
    struct timeval tv = {delay_ms / 1000, (delay_ms % 1000) * 1000};
    evtimer_add(c->timer, &tv);
}

/*
 * A connection attempt (handshake or PREPARE) failed: close it and try again
 * after a backoff interval, so a down server is not hammered.
 */
static void
hist_conn_fail(hist_conn_t *c, const char *why)
{
    char err[512];
    snprintf(err, sizeof(err), "%s", why);
    hist_db_oneline(err);
    hist_conn_close(c);
    uint32_t wait = hr_backoff_next(&c->backoff);
    hr_log_warn("postgres_connect_failed", "conn=%d retry_in_ms=%u error=\"%s\"", c->idx, wait,
                err);
    hist_conn_schedule(c, wait);
    hist_db_fail_queue_if_down(c->db);
}

/*
 * An open connection broke (server restart, network, timeout). Reconnects at
 * once: it had been working, so the server is likely back or coming back; a
 * failing attempt then paces itself by backoff. A running op is sent again
 * once on another connection (every statement is a read or an idempotent
 * write); a second loss answers it HR_AGAIN. With slow, the connection
 * stopped answering within the query timeout: the statement is not sent
 * again (it would hold a second connection as long), it is answered
 * HIST_DB_SLOW.
 */
static void
hist_conn_lost_as(hist_conn_t *c, const char *why, int slow)
{
    hist_db_t *db = c->db;
    if (c->state == HIST_CONN_PREPARING) {
        hist_conn_fail(c, why);
        return;
    }
    char err[512];
    snprintf(err, sizeof(err), "%s", why);
    hist_db_oneline(err);
    hr_log_warn("postgres_connection_lost", "conn=%d state=%s stmt=%s error=\"%s\"", c->idx,
                hist_conn_state_names[c->state], c->op != NULL ? hist_db_q_name(c->op->q) : "-",
                err);
    hist_op_t *op = c->op;
    c->op = NULL;
    hist_conn_close(c);
    hist_conn_schedule(c, 0);
    if (op != NULL) {
        if (slow) {
            hist_op_finish(op, HIST_DB_SLOW, NULL);
        } else if (!op->retried && !db->destroying) {
            op->retried = 1;
            op->deadline_ms = 0;
            hist_queue_push(db, op, 1);
        } else {
            hist_op_finish(op, HR_AGAIN, NULL);
        }
    }
    hist_db_fail_queue_if_down(db);
    hist_db_kick(db);
}

static void
hist_conn_lost(hist_conn_t *c, const char *why)
{
    hist_conn_lost_as(c, why, 0);
}

/* Flushes what libpq buffered and waits for the answer (and for writability if needed). */
static void
hist_conn_flush_wait(hist_conn_t *c)
{
    int f = PQflush(c->pg);
    if (f < 0) {
        hist_conn_lost(c, PQerrorMessage(c->pg));
        return;
    }
    int timeout = c->state == HIST_CONN_PREPARING
                      ? HIST_DB_PREPARE_MS
                      : c->db->query_timeout_ms + HIST_DB_TIMEOUT_SLACK_MS;
    hist_conn_watch(c, (short)(EV_READ | (f == 1 ? EV_WRITE : 0)), timeout);
}

static void
hist_conn_send_prepare(hist_conn_t *c)
{
    const char *name = hist_db_stmts[c->prep_next].name;
    if (!PQsendPrepare(c->pg, name, hist_db_stmts[c->prep_next].sql, 0, NULL)) {
        hist_conn_fail(c, PQerrorMessage(c->pg));
        return;
    }
    hist_conn_flush_wait(c);
}

/* Starts op on an idle connection. */
static void
hist_conn_run(hist_conn_t *c, hist_op_t *op)
{
    c->op = op;
    c->state = HIST_CONN_BUSY;
    if (!PQsendQueryPrepared(c->pg, hist_db_stmts[op->q].name, op->nparams,
                             (const char *const *)op->params, NULL, NULL, 0)) {
        hist_conn_lost(c, PQerrorMessage(c->pg));
        return;
    }
    hist_conn_flush_wait(c);
}

static void
hist_db_dispatch(hist_db_t *db)
{
    for (int i = 0; i < db->nconns && db->head != NULL; i++) {
        hist_conn_t *c = &db->conns[i];
        if (c->state != HIST_CONN_IDLE)
            continue;
        hist_op_t *op = db->head;
        hist_queue_unlink(db, op);
        hist_conn_run(c, op);
    }
}

static void
hist_db_kick_cb(evutil_socket_t fd, short what, void *arg)
{
    HR_UNUSED(fd);
    HR_UNUSED(what);
    hist_db_dispatch(arg);
}

/*
 * Whether a failed statement means the connection is unusable: libpq marks it
 * bad, the failure is client-side (no SQLSTATE), or the server reports a
 * connection exception (08), an operator intervention such as shutdown (57P),
 * or a prepared statement that vanished (26000, e.g. behind a pooler).
 */
static int
hist_db_conn_broken(PGconn *c, const PGresult *r)
{
    if (PQstatus(c) == CONNECTION_BAD)
        return 1;
    const char *st = r != NULL ? PQresultErrorField(r, PG_DIAG_SQLSTATE) : NULL;
    if (st == NULL)
        return 1;
    return strncmp(st, "08", 2) == 0 || strncmp(st, "57P", 3) == 0 || strcmp(st, "26000") == 0;
}

/* The command on c has delivered all its results (c->res holds the first). */
static void
hist_conn_command_done(hist_conn_t *c)
{
    hist_db_t *db = c->db;
    PGresult *res = c->res;
    c->res = NULL;
    ExecStatusType st = res != NULL ? PQresultStatus(res) : PGRES_FATAL_ERROR;
    int ok = st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK;

    if (c->state == HIST_CONN_PREPARING) {
        if (!ok) {
            char err[600];
            snprintf(err, sizeof(err), "prepare %s: %s", hist_db_stmts[c->prep_next].name,
                     PQerrorMessage(c->pg));
            PQclear(res);
            hist_conn_fail(c, err);
            return;
        }
        PQclear(res);
        if (++c->prep_next < HIST_Q_COUNT) {
            hist_conn_send_prepare(c);
            return;
        }
        c->state = HIST_CONN_IDLE;
        hr_backoff_reset(&c->backoff);
        db->down_logged = 0;
        hr_log_info("postgres_connected", "conn=%d server_version=%d", c->idx,
                    PQserverVersion(c->pg));
        hist_conn_watch(c, EV_READ, 0);
        hist_db_dispatch(db);
        return;
    }

    /* BUSY */
    hist_op_t *op = c->op;
    if (!ok && hist_db_conn_broken(c->pg, res)) {
        char err[512];
        snprintf(err, sizeof(err), "%s", PQerrorMessage(c->pg));
        PQclear(res);
        hist_conn_lost(c, err);
        return;
    }
    c->op = NULL;
    c->state = HIST_CONN_IDLE;
    hist_conn_watch(c, EV_READ, 0);
    if (ok) {
        hist_op_finish(op, 0, res);
    } else {
        char err[512];
        snprintf(err, sizeof(err), "%s", PQerrorMessage(c->pg));
        hist_db_oneline(err);
        const char *code = PQresultErrorField(res, PG_DIAG_SQLSTATE);
        /* 57014: statement_timeout (or a cancel): the server is busy, not broken. */
        int slow = code != NULL && strcmp(code, "57014") == 0;
        if (slow)
            hr_log_warn("query_timeout", "conn=%d stmt=%s error=\"%s\"", c->idx,
                        hist_db_stmts[op->q].name, err);
        else
            hr_log_error("query_failed", "conn=%d stmt=%s sqlstate=%s error=\"%s\"", c->idx,
                         hist_db_stmts[op->q].name, code != NULL ? code : "-", err);
        hist_op_finish(op, slow ? HIST_DB_SLOW : HR_ERR, NULL);
    }
    PQclear(res);
    hist_db_dispatch(db);
}

/* Reads what arrived for the running command; completes it when libpq has it all. */
static void
hist_conn_read(hist_conn_t *c, short what)
{
    if (what & EV_TIMEOUT) {
        if (c->state == HIST_CONN_PREPARING)
            hist_conn_lost(c, "prepare timed out");
        else
            hist_conn_lost_as(c, "no answer within the query timeout", 1);
        return;
    }
    int want_write = 0;
    if (what & EV_WRITE) {
        int f = PQflush(c->pg);
        if (f < 0) {
            hist_conn_lost(c, PQerrorMessage(c->pg));
            return;
        }
        want_write = f == 1;
    }
    if ((what & EV_READ) && !PQconsumeInput(c->pg)) {
        hist_conn_lost(c, PQerrorMessage(c->pg));
        return;
    }
    while (!PQisBusy(c->pg)) {
        PGresult *r = PQgetResult(c->pg);
        if (r == NULL) {
            hist_conn_command_done(c);
            return;
        }
        if (c->res == NULL)
            c->res = r;
        else
            PQclear(r);
    }
    if (PQstatus(c->pg) == CONNECTION_BAD) {
        hist_conn_lost(c, PQerrorMessage(c->pg));
        return;
    }
    int timeout = c->state == HIST_CONN_PREPARING
                      ? HIST_DB_PREPARE_MS
                      : c->db->query_timeout_ms + HIST_DB_TIMEOUT_SLACK_MS;
    hist_conn_watch(c, (short)(EV_READ | (want_write ? EV_WRITE : 0)), timeout);
}

/* One step of the non-blocking handshake. */
static void
hist_conn_connect_step(hist_conn_t *c)
{
    switch (PQconnectPoll(c->pg)) {
    case PGRES_POLLING_READING:
        hist_conn_watch(c, EV_READ, HIST_DB_CONNECT_STEP_MS);
        return;
    case PGRES_POLLING_WRITING:
        hist_conn_watch(c, EV_WRITE, HIST_DB_CONNECT_STEP_MS);
        return;
    case PGRES_POLLING_OK:
        if (PQsetnonblocking(c->pg, 1) != 0) {
            hist_conn_fail(c, PQerrorMessage(c->pg));
            return;
        }
        PQsetNoticeProcessor(c->pg, hist_db_notice, NULL);
        c->state = HIST_CONN_PREPARING;
        c->prep_next = 0;
        hist_conn_send_prepare(c);
        return;
    default:
        hist_conn_fail(c, PQerrorMessage(c->pg));
        return;
    }
}

static void
hist_conn_io(evutil_socket_t fd, short what, void *arg)
{
    HR_UNUSED(fd);
    hist_conn_t *c = arg;
    switch (c->state) {
    case HIST_CONN_CONNECTING:
        if (what & EV_TIMEOUT)
            hist_conn_fail(c, "connect timed out");
        else
            hist_conn_connect_step(c);
        return;
    case HIST_CONN_PREPARING:
    case HIST_CONN_BUSY:
        hist_conn_read(c, what);
        return;
    case HIST_CONN_IDLE:
        /* Nothing is expected on an idle connection but the server closing it. */
        if (!PQconsumeInput(c->pg) || PQstatus(c->pg) == CONNECTION_BAD) {
            hist_conn_lost(c, PQerrorMessage(c->pg));
            return;
        }
        for (PGnotify *n; (n = PQnotifies(c->pg)) != NULL;)
            PQfreemem(n);
        hist_conn_watch(c, EV_READ, 0);
        return;
    case HIST_CONN_DOWN:
        return;
    }
}

/* Starts a non-blocking connection attempt. */
static void
hist_conn_start(hist_conn_t *c)
{
    hist_db_t *db = c->db;
    const char *const keys[] = {"application_name", "options", "dbname", NULL};
    const char *const vals[] = {HIST_DB_APPLICATION_NAME, db->options, db->conninfo, NULL};
    c->pg = PQconnectStartParams(keys, vals, 1);
    if (c->pg == NULL) {
        hist_conn_fail(c, "cannot allocate a connection");
        return;
    }
    if (PQstatus(c->pg) == CONNECTION_BAD || PQsocket(c->pg) < 0) {
        hist_conn_fail(c, PQerrorMessage(c->pg));
        return;
    }
    c->state = HIST_CONN_CONNECTING;
    /* libpq's contract: behave as if the first poll had asked for writability. */
    hist_conn_watch(c, EV_WRITE, HIST_DB_CONNECT_STEP_MS);
}

static void
hist_conn_timer_cb(evutil_socket_t fd, short what, void *arg)
{
    HR_UNUSED(fd);
    HR_UNUSED(what);
    hist_conn_t *c = arg;
    if (c->state == HIST_CONN_DOWN && !c->db->destroying)
        hist_conn_start(c);
}

/* ---- the pool ---- */

hist_db_t *
hist_db_create(struct event_base *base, const hist_db_opts_t *opts, char *err, size_t errlen)
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
    db->base = base;
    db->conninfo = hr_strdup(opts->conninfo);
    db->query_timeout_ms = opts->query_timeout_ms;
    db->queue_max = opts->queue_max;
    db->queue_wait_ms = opts->queue_wait_ms;
    db->queue_wait = evtimer_new(base, hist_db_queue_wait_cb, db);
    snprintf(db->options, sizeof(db->options), "-c statement_timeout=%d", opts->query_timeout_ms);
    db->kick = event_new(base, -1, 0, hist_db_kick_cb, db);
    db->nconns = opts->pool_size > 0 ? opts->pool_size : 1;
    db->conns = hr_calloc((size_t)db->nconns, sizeof(*db->conns));
    for (int i = 0; i < db->nconns; i++) {
        hist_conn_t *c = &db->conns[i];
        c->db = db;
        c->idx = i;
        c->state = HIST_CONN_DOWN;
        c->ev = event_new(base, -1, 0, hist_conn_io, c);
        c->timer = evtimer_new(base, hist_conn_timer_cb, c);
        hr_backoff_init(&c->backoff, opts->backoff_min_ms, opts->backoff_max_ms);
        hist_conn_start(c);
    }
    return db;
}

void
hist_db_destroy(hist_db_t *db)
{
    if (db == NULL)
        return;
    db->destroying = 1;
    while (db->head != NULL) {
        hist_op_t *op = db->head;
        hist_queue_unlink(db, op);
        hist_op_finish(op, HR_AGAIN, NULL);
    }
    for (int i = 0; i < db->nconns; i++) {
        hist_conn_t *c = &db->conns[i];
        hist_op_t *op = c->op;
        c->op = NULL;
        hist_conn_close(c);
        if (op != NULL)
            hist_op_finish(op, HR_AGAIN, NULL);
        event_free(c->ev);
        event_free(c->timer);
    }
    event_free(db->kick);
    event_free(db->queue_wait);
    hr_free(db->conns);
    hr_free(db->conninfo);
    hr_free(db);
}

int
hist_db_submit(hist_db_t *db, hist_q_t q, int nparams, const char *const *params, hist_db_cb cb,
               void *arg, hist_op_t **out)
{
    *out = NULL;
    if (db->destroying || hist_db_alive(db) == 0)
        return HR_AGAIN;
    int idle = 0;
    for (int i = 0; i < db->nconns; i++)
        idle += db->conns[i].state == HIST_CONN_IDLE;
    if (db->queued >= db->queue_max + idle)
        return HR_DECLINED;
    hist_op_t *op = hr_calloc(1, sizeof(*op));
    op->q = q;
    op->nparams = nparams < HIST_DB_MAX_PARAMS ? nparams : HIST_DB_MAX_PARAMS;
    for (int i = 0; i < op->nparams; i++)
        op->params[i] = hr_strdup(params[i]);
    op->cb = cb;
    op->arg = arg;
    if (db->queue_wait_ms > 0) {
        op->deadline_ms = hr_mono_ms() + (uint64_t)db->queue_wait_ms;
        if (!evtimer_pending(db->queue_wait, NULL)) {
            struct timeval tv = {db->queue_wait_ms / 1000, (db->queue_wait_ms % 1000) * 1000};
            evtimer_add(db->queue_wait, &tv);
        }
    }
    hist_queue_push(db, op, 0);
    hist_db_kick(db);
    *out = op;
    return 0;
}

int
hist_db_cancel(hist_db_t *db, hist_op_t *op)
{
    if (!op->queued)
        return 0;
    hist_queue_unlink(db, op);
    hist_op_free(op);
    return 1;
}
