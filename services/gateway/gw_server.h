/*
 * The gateway: libwebsockets on a libuv loop serving /ws, the hub of
 * connections, and the Redis subscriber that feeds it.
 */
#ifndef HERALD_GW_SERVER_H
#define HERALD_GW_SERVER_H

#include "herald/hr_config.h"

#include <stddef.h>
#include <uv.h>

typedef struct {
    char *host; /* owned */
    int port;
    int reuseport;        /* share the port with sibling processes (SO_REUSEPORT) */
    int dev_user_query;   /* accept ?user_id= without a token: development only */
    char *node_id;        /* owned; empty: hostname-pid */
    int max_frame;        /* largest client frame, bytes */
    int queue_max_frames; /* per-socket outbound queue */
    int queue_max_bytes;
    int ping_interval_s;      /* server PING after this much silence */
    int idle_timeout_s;       /* close after this much silence */
    int drain_ms;             /* SIGTERM: time given to clients to leave */
    int close_timeout_s;      /* a decided close that cannot be written is cut after this */
    int max_rooms;            /* rooms one socket may be in */
    int publish_rate;         /* chat messages per second per socket (burst: twice) */
    int command_rate;         /* client frames of any type per second per socket (burst: twice) */
    int max_sockets_per_user; /* on this gateway; 0: no limit */
    int max_sockets_per_ip;   /* likewise, per client address */
    int forwarded_for;        /* the client address is X-Forwarded-For's last entry (proxy) */
    int presence_ttl_s;       /* a killed gateway's members leave presence after this */
    int presence_events_max;  /* rooms above this many users get no joined/left events */
    int upgrade_rate;         /* upgrades per second per client address (0: unlimited) */
    int upgrade_burst;        /* that bucket's size */
    int max_json_depth;       /* nesting of arrays/objects in a client frame */
    int revocation_ttl_s;     /* auth.revocation_ttl_s: how long a cut-off is kept */
    char *redis_url;          /* owned */
    char *log_level;          /* owned */
    const char *config_path;  /* borrowed (argv or environment), NULL: none; set by main */
} gw_config_t;

/** The settings of herald-gateway, for hr_config_load(). */
extern const hr_cfg_field_t gw_config_fields[];
extern const size_t gw_config_nfields;

typedef struct gw_server_s gw_server_t;

/** Listens and starts connecting to Redis on loop; NULL with err filled on failure. */
gw_server_t *gw_server_create(uv_loop_t *loop, const gw_config_t *cfg, char *err, size_t errlen);
/**
 * Starts a drain: refuses new sockets, closes every socket with 1001, and
 * stops the server once they are gone or cfg->drain_ms has passed. The loop
 * then runs out of handles and uv_run() returns.
 */
void gw_server_drain(gw_server_t *s);
/** Frees what is left after uv_run() returned. */
void gw_server_destroy(gw_server_t *s);

#endif
