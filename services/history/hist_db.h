/*
 * History's access to PostgreSQL: a fixed pool of libpq connections driven
 * without blocking on the libevent loop. Each connection has an explicit state
 * (DOWN → CONNECTING → PREPARING → IDLE ⇄ BUSY), connects with
 * PQconnectStart/PQconnectPoll, prepares every statement once, and runs one
 * statement at a time with PQsendQueryPrepared; PQsocket is watched by an
 * event, results are read with PQconsumeInput/PQisBusy/PQgetResult. A query
 * waits in a bounded FIFO while every connection is busy, so one slow query
 * holds one connection and never the loop. Lost connections reconnect by
 * themselves with capped exponential backoff.
 */
#ifndef HERALD_HIST_DB_H
#define HERALD_HIST_DB_H

#include <event2/event.h>
#include <libpq-fe.h>
#include <stddef.h>
#include <stdint.h>

/*
 * The prepared statements (SQL text in hist_db.c, plans in QUERIES.md).
 * Parameters are listed as $n; every one is bound as text.
 */
typedef enum {
    HIST_Q_PING,           /* SELECT 1 */
    HIST_Q_LIST_ALL,       /* $1 user_id, $2 cursor uuid|NULL, $3 limit+1 */
    HIST_Q_LIST_UNREAD,    /* same */
    HIST_Q_LIST_READ,      /* same */
    HIST_Q_GET,            /* $1 id, $2 user_id */
    HIST_Q_MARK_READ,      /* $1 id, $2 user_id */
    HIST_Q_MARK_UNREAD,    /* $1 id, $2 user_id */
    HIST_Q_READ_ALL_BOUND, /* $1 user_id, $2 up_to uuid|NULL */
    HIST_Q_READ_ALL_CHUNK, /* $1 user_id, $2 uuid where the chunk starts (<=) */
    HIST_Q_UNREAD_COUNT,   /* $1 user_id */
    HIST_Q_ROOM_MESSAGES,  /* $1 room, $2 before uuid|NULL, $3 limit+1 */
    HIST_Q_COUNT
} hist_q_t;

/*
 * Columns of a notification row, in select order, shared by LIST_*, GET,
 * MARK_*: then LIST_* add HIST_COL_UNREAD (the user's unread count, on every
 * row, and alone on a row of NULLs when the page is empty), MARK_* add it too.
 */
enum {
    HIST_COL_ID,
    HIST_COL_USER_ID,
    HIST_COL_TYPE,
    HIST_COL_MESSAGE,
    HIST_COL_DATA,
    HIST_COL_CREATED_AT,
    HIST_COL_DELIVERED_AT,
    HIST_COL_READ_AT,
    HIST_COL_UNREAD,
};

/* Columns of HIST_Q_ROOM_MESSAGES. */
enum { HIST_RCOL_ID, HIST_RCOL_ROOM, HIST_RCOL_FROM, HIST_RCOL_MESSAGE, HIST_RCOL_CREATED_AT };

/*
 * Unread counts stop at HIST_UNREAD_CAP + 1: a count must not read a
 * million index entries for one badge. More than HIST_UNREAD_CAP means
 * "HIST_UNREAD_CAP or more" (proto/openapi.yaml: unread_capped).
 */
#define HIST_UNREAD_CAP 1000

/*
 * Columns of HIST_Q_READ_ALL_BOUND: the newest unread id up to the bound
 * (NULL when nothing is unread), the (capped) unread count above the bound.
 * HIST_Q_READ_ALL_CHUNK marks at most HIST_READ_ALL_CHUNK of the unread rows up to $2, newest
 * first, and returns how many it marked and the oldest id it took (the next
 * chunk's $2): read-all repeats it until a chunk comes back short, each chunk
 * its own short transaction.
 */
enum { HIST_ACOL_NEWEST, HIST_ACOL_UNREAD };
enum { HIST_KCOL_MARKED, HIST_KCOL_OLDEST };
#define HIST_READ_ALL_CHUNK 2000

#define HIST_DB_MAX_PARAMS 4

typedef struct {
    const char *conninfo; /* libpq conninfo or URI; copied */
    int pool_size;        /* connections, >= 1 */
    int queue_max;        /* queries that may wait for a connection */
    int queue_wait_ms;    /* how long one may wait there; 0: no limit */
    int query_timeout_ms; /* statement_timeout; the client gives up a little later */
    uint32_t backoff_min_ms, backoff_max_ms;
} hist_db_opts_t;

typedef struct hist_db_s hist_db_t;
typedef struct hist_op_s hist_op_t;

/*
 * Outcome of a query, called exactly once unless the op was cancelled while
 * queued: status 0 with r (borrowed, cleared after the call); HR_AGAIN when
 * PostgreSQL could not be reached (answer 503, the pool reconnects by
 * itself); HIST_DB_SLOW when the statement ran out of time (statement_timeout,
 * SQLSTATE 57014, or no answer at all: never re-sent) and HIST_DB_WAITED
 * when it waited in the queue past queue_wait_ms (both 503); HR_ERR when a
 * healthy connection refused the statement (answer 500; logged here).
 */
#define HIST_DB_SLOW (-20)
#define HIST_DB_WAITED (-21)
typedef void (*hist_db_cb)(int status, const PGresult *r, void *arg);

/**
 * Checks the conninfo and starts connecting every pool connection. Returns
 * the pool (owned by caller) or NULL with err filled if the conninfo is bad.
 */
hist_db_t *hist_db_create(struct event_base *base, const hist_db_opts_t *opts, char *err,
                          size_t errlen);
/** Fails every waiting and running query with HR_AGAIN, then closes the connections. */
void hist_db_destroy(hist_db_t *db);
/** Connections that are open and prepared (idle or busy). */
int hist_db_alive(const hist_db_t *db);

typedef struct {
    int open;    /* open and prepared (idle or busy) */
    int busy;    /* running a query */
    int waiting; /* queries queued for a connection */
} hist_db_stats_t;

/** The pool's state now, for metrics. */
void hist_db_stats(const hist_db_t *db, hist_db_stats_t *st);

/**
 * Queues statement q with its text parameters (copied; NULL is SQL NULL).
 * Returns 0 and *op (a handle for hist_db_cancel, valid until cb runs);
 * HR_AGAIN when no connection is open (PostgreSQL down); HR_DECLINED when the
 * wait queue is full. cb is never called from inside this function.
 */
int hist_db_submit(hist_db_t *db, hist_q_t q, int nparams, const char *const *params, hist_db_cb cb,
                   void *arg, hist_op_t **op);

/**
 * Withdraws a query whose caller has lost interest. A query still queued is
 * dropped (returns 1: cb will not be called); one already sent runs to its
 * end (returns 0: cb will be called as usual).
 */
int hist_db_cancel(hist_db_t *db, hist_op_t *op);

/** Name of a statement, for logs. */
const char *hist_db_q_name(hist_q_t q);

#endif
