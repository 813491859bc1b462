/*
 * History: the REST read side over PostgreSQL (proto/openapi.yaml): a user's
 * inbox with unread counts, read/unread marks that every open tab learns of
 * through the user's Pub/Sub channel, and chat room history.
 */
#ifndef HERALD_HIST_SERVER_H
#define HERALD_HIST_SERVER_H

#include "hist_db.h"
#include "hist_params.h"
#include "hr_proto.h"
#include "herald/hr_config.h"

#include <event2/event.h>
#include <stddef.h>

typedef struct {
    char *host; /* owned */
    int port;
    char *postgres_url; /* owned: libpq conninfo or URI */
    char *cors_origin;  /* owned: Access-Control-Allow-Origin; "" sends no CORS headers */
    int pg_pool_size;
    int pg_queue_max;        /* requests that may wait for a free connection, then 503 */
    int pg_queue_wait_ms;    /* how long one may wait for it, then 503; 0: no limit */
    int pg_timeout_ms;       /* statement_timeout of every query */
    int drain_ms;            /* how long SIGTERM waits for requests in flight */
    int max_connections;     /* open HTTP connections; 0: derived from the file limit */
    int header_timeout_ms;   /* a request head must arrive within this, else 408 */
    int idle_timeout_ms;     /* idle keep-alive, stalled body or answer: closed after this */
    char *redis_url;         /* owned: where read/unread events are published */
    int redis_timeout_ms;    /* watchdog of the publish connection */
    char *log_level;         /* owned */
    int dev_user_query;      /* accept ?user_id= without a token (development only) */
    int dev_mint;            /* serve POST /dev/token (development only) */
    const char *config_path; /* borrowed (argv or $HERALD_CONFIG): its auth section; NULL: none */
} hist_config_t;

/** The settings of herald-history, for hr_config_load(). */
extern const hr_cfg_field_t hist_config_fields[];
extern const size_t hist_config_nfields;

typedef struct hist_server_s hist_server_t;

/** Binds the HTTP port, starts the PostgreSQL pool and the Redis publisher; NULL with err filled.
 */
hist_server_t *hist_server_create(struct event_base *base, const hist_config_t *cfg, char *err,
                                  size_t errlen);
/** The port actually bound (useful when configured as 0). */
int hist_server_port(const hist_server_t *s);
/** Stops accepting connections; ends the loop once requests in flight are answered (or drain_ms).
 */
void hist_server_drain(hist_server_t *s);
void hist_server_destroy(hist_server_t *s);

#endif
