/*
 * History's access to PostgreSQL: one connection with an explicit state
 * (DISCONNECTED → READY), statements prepared once per connection, parameters
 * always bound, and reconnects paced by hr_backoff.
 *
 * Every query reports through a callback called exactly once. Today libpq runs
 * blocking on the event loop and the callback fires before the call returns;
 * a non-blocking pool can replace this module without changing its callers.
 */
#ifndef HERALD_HIST_DB_H
#define HERALD_HIST_DB_H

#include "hr_proto.h"

#include <stddef.h>
#include <stdint.h>

/** What GET /notifications asks for (validated by the caller). */
typedef struct {
    char user_id[HR_USER_ID_MAX + 1];
    int limit; /* 1..HIST_LIMIT_MAX */
} hist_list_query_t;

/** One stored notification: the envelope plus its delivery and read state. */
typedef struct {
    const char *id;                     /* borrowed from the page */
    const char *user_id;                /* borrowed */
    const char *type;                   /* borrowed */
    const char *message;                /* borrowed */
    const char *data_json;              /* borrowed: a JSON object's text, NULL if none */
    char created_at[HR_TIME_ISO_LEN];   /* RFC 3339 UTC, ms */
    char delivered_at[HR_TIME_ISO_LEN]; /* "" when not delivered */
    char read_at[HR_TIME_ISO_LEN];      /* "" when unread */
} hist_item_t;

/** A user's notifications, newest first. */
typedef struct {
    size_t n;
    hist_item_t *items; /* owned by the module, valid during the callback */
} hist_page_t;

typedef struct {
    const char *conninfo; /* libpq conninfo or URI; copied */
    uint32_t backoff_min_ms, backoff_max_ms;
} hist_db_opts_t;

typedef struct hist_db_s hist_db_t;

/*
 * Query outcomes: 0; HR_AGAIN when PostgreSQL cannot be reached now (answer
 * 503, the module reconnects by itself); HR_ERR when a healthy connection
 * refused the query (answer 500; the module has logged why).
 */

/** page is borrowed for the duration of the call, NULL unless status is 0. */
typedef void (*hist_db_list_cb)(int status, const hist_page_t *page, void *arg);
typedef void (*hist_db_ping_cb)(int status, void *arg);

/**
 * Checks the conninfo and makes a first connection attempt (its failure is not
 * an error: requests get HR_AGAIN until a later attempt succeeds). Returns the
 * module (owned by caller) or NULL with err filled if the conninfo is malformed.
 */
hist_db_t *hist_db_create(const hist_db_opts_t *opts, char *err, size_t errlen);
/** Closes the connection. */
void hist_db_destroy(hist_db_t *db);
/** Whether a connection is open (it may still turn out dead on next use). */
int hist_db_ready(const hist_db_t *db);
/** A user's newest q->limit notifications, newest first; cb is called exactly once. */
void hist_db_list(hist_db_t *db, const hist_list_query_t *q, hist_db_list_cb cb, void *arg);
/** Round trip to the server (for /healthz); cb is called exactly once. */
void hist_db_ping(hist_db_t *db, hist_db_ping_cb cb, void *arg);

#endif
