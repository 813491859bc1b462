/* Ingest: POST /notifications → one atomic Redis script (XADD + PUBLISH). */
#ifndef HERALD_ING_SERVER_H
#define HERALD_ING_SERVER_H

#include "herald/hr_config.h"

#include <event2/event.h>
#include <stddef.h>

typedef struct {
    char *host; /* owned */
    int port;
    char *redis_url; /* owned */
    int redis_timeout_ms;
    char *log_level; /* owned */
    int drain_ms;
    int reuseport;         /* SO_REUSEPORT: several ingest processes share the port */
    int max_connections;   /* 0: derived from the file limit */
    int header_timeout_ms; /* a request head must arrive within this */
    int idle_timeout_ms;   /* idle keep-alive, stalled body or answer: closed after this */

    int allow_anonymous;     /* development: requests without an API key are accepted */
    int revocation_ttl_s;    /* auth.revocation_ttl_s: lifetime of a user's cut-off */
    const char *config_path; /* borrowed: the file read (auth section), NULL: none */
    int access_log;          /* one info line per answered request */
} ing_config_t;

/** The settings of herald-ingest, for hr_config_load(). */
extern const hr_cfg_field_t ing_config_fields[];
extern const size_t ing_config_nfields;

typedef struct ing_server_s ing_server_t;

/** Binds the HTTP port and starts connecting to Redis; NULL with err filled on failure. */
ing_server_t *ing_server_create(struct event_base *base, const ing_config_t *cfg, char *err,
                                size_t errlen);
/** The port actually bound (useful when configured as 0). */
int ing_server_port(const ing_server_t *s);
/**
 * Stops accepting new connections; the loop exits once requests in flight are
 * answered or after cfg->drain_ms.
 */
void ing_server_drain(ing_server_t *s);
void ing_server_destroy(ing_server_t *s);

#endif
