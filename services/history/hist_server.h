/* History: the REST read side, GET /notifications from PostgreSQL. */
#ifndef HERALD_HIST_SERVER_H
#define HERALD_HIST_SERVER_H

#include "hist_db.h"
#include "hr_proto.h"
#include "herald/hr_config.h"

#include <event2/event.h>
#include <stddef.h>

/* Page size of GET /notifications (belongs in proto/ with the rest of the REST contract). */
#define HIST_LIMIT_DEFAULT 20
#define HIST_LIMIT_MAX 100

typedef struct {
    char *host; /* owned */
    int port;
    char *postgres_url; /* owned: libpq conninfo or URI */
    char *cors_origin;  /* owned: Access-Control-Allow-Origin; "" sends no CORS headers */
    char *log_level;    /* owned */
} hist_config_t;

/** The settings of herald-history, for hr_config_load(). */
extern const hr_cfg_field_t hist_config_fields[];
extern const size_t hist_config_nfields;

typedef struct hist_server_s hist_server_t;

/**
 * Parses the query string of GET /notifications (NULL when there is none):
 * user_id required, limit optional; unknown parameters are ignored. Returns 0
 * with q filled, or HR_DECLINED with e filled (400).
 */
int hist_list_query_parse(const char *query, hist_list_query_t *q, hr_proto_err_t *e);

/** Binds the HTTP port and opens PostgreSQL; NULL with err filled on failure. */
hist_server_t *hist_server_create(struct event_base *base, const hist_config_t *cfg, char *err,
                                  size_t errlen);
/** The port actually bound (useful when configured as 0). */
int hist_server_port(const hist_server_t *s);
/** Stops accepting connections and ends the loop. */
void hist_server_drain(hist_server_t *s);
void hist_server_destroy(hist_server_t *s);

#endif
