/*
 * Private to the gateway's transport (gw_server.c, gw_frames.c,
 * gw_access.c): the server and per-socket structs and the functions the
 * three share. Nothing outside services/gateway includes it.
 */
#ifndef HERALD_GW_SESSION_H
#define HERALD_GW_SESSION_H

#include "gw_admit.h"
#include "gw_auth.h"
#include "gw_hub.h"
#include "gw_listen.h"
#include "gw_metrics.h"
#include "gw_preread.h"
#include "gw_pubsub.h"
#include "gw_receipts.h"
#include "gw_revoke.h"
#include "gw_rooms.h"
#include "gw_server.h"
#include "gw_wait.h"

#include <cjson/cJSON.h>
#include <libwebsockets.h>
#include <stdint.h>
#include <uv.h>

struct gw_server_s {
    uv_loop_t *loop;        /* borrowed */
    const gw_config_t *cfg; /* borrowed */
    char node_id[64];
    struct lws_context *context; /* owned; NULL once destroyed */
    lws_retry_bo_t retry;        /* all zero: lws keeps no per-socket timers (below) */
    uv_timer_t *keepalive;       /* owned (closed through uv) */
    gw_hub_t *hub;               /* owned */
    gw_pubsub_t *pubsub;         /* owned */
    hr_redis_async_t *redis;     /* owned: commands (chat, presence) */
    gw_rooms_t *rooms;           /* owned */
    gw_receipts_t *receipts;     /* owned */
    gw_listen_t *listen;         /* owned; NULL once closed */
    gw_preread_t *preread;       /* owned; NULL once closed: request heads before lws */
    struct lws_vhost *vhost;     /* borrowed from the context */
    uv_timer_t *drain_timer;     /* owned (closed through uv) */
    gw_waiters_t *waiting;       /* owned: sessions holding an answer until a channel is live */
    gw_admit_t *admit;           /* owned: sockets per user and per client address */
    gw_metrics_t *metrics;       /* owned */
    gw_auth_t *auth;             /* owned */
    gw_revoke_t *revoke;         /* owned: the revocation cut-offs */
    uint64_t command_readies;    /* times the command connection became READY */
    uint64_t swept_ms;           /* last sweep of the auth buckets and cut-offs */
    int draining;
    int stopped;
};

/* Per-socket state, allocated and zeroed by lws (per_session_data_size). */
typedef struct gw_session_s gw_session_t;
struct gw_session_s {
    gw_conn_t conn;
    struct lws *wsi;    /* borrowed */
    char *rx;           /* owned: a message arriving in fragments */
    gw_waiter_t wait;   /* on s->waiting while wait_msg is held */
    gw_msg_t *wait_msg; /* owned: welcome/joined held until wait.ch is live, or NULL */
    double tokens;      /* publish rate limit: token bucket */
    double cmd_tokens;  /* command rate limit: token bucket */
    uint64_t cmd_ms;
    char *ip;            /* owned: the client address, once counted in s->admit (with the user) */
    gw_identity_t id;    /* who: the token's claims (owned), from the upgrade on */
    uv_timer_t *expiry;  /* owned (closed through uv): fires at the token's exp + leeway */
    uint8_t established; /* lws may write to it */
    uint8_t in_callback; /* inside an lws callback for this socket */
    uint8_t write_failed;
    uint8_t ping_due;    /* send a PING at the next WRITEABLE */
    uint8_t killed;      /* cut after close_timeout_s */
    uint16_t peer_close; /* the close code the client sent, or 0 */
    uint32_t last_rx_s;  /* monotonic seconds of the last frame or PONG received */
    uint32_t close_s;    /* monotonic seconds when its close was decided, or 0 */
    uint64_t tokens_ms;
    size_t rxlen;
    int attached;
};

#define gw_session_of(c) ((gw_session_t *)((char *)(c)-offsetof(gw_session_t, conn)))

/* gw_server.c */
/** Sends m (a reference taken) now if channel ch is live, else once it is. */
void gw_send_when_live(gw_server_t *s, gw_session_t *ss, const char *ch, size_t len, gw_msg_t *m);
/** The client's address (X-Forwarded-For's last entry behind a proxy). */
void gw_session_peer(gw_server_t *s, struct lws *wsi, char *buf, size_t cap);

/* gw_frames.c: what a socket sends, and the frames it is answered */
/** An error frame; reason (NULL: none) says which token check failed. */
void gw_send_error_reason(gw_server_t *s, gw_session_t *ss, const char *code, const char *reason,
                          const char *message, const cJSON *ref);
void gw_send_error(gw_server_t *s, gw_session_t *ss, const char *code, const char *message,
                   const cJSON *ref);
/** Queues o (deleted) on ss. */
void gw_send_json(gw_server_t *s, gw_session_t *ss, cJSON *o);
/** Handles one complete client frame (buf, len bytes). */
void gw_handle_client_frame(gw_server_t *s, gw_session_t *ss, const char *buf, size_t len);

/* gw_access.c: the server's side of gw_auth and gw_revoke */
/** gw_cutoff_fn over s->revoke (ud is s). */
int64_t gw_cutoff_of(void *ud, const char *user);
/** The upgrade check (FILTER_PROTOCOL_CONNECTION): 0, or -1 after an HTTP refusal. */
int gw_upgrade_check(gw_server_t *s, gw_session_t *ss, struct lws *wsi);
/** uv timer callback: the socket's token expired (error token_expired, close 4001). */
void gw_session_expired(uv_timer_t *t);
/** gw_revoke_close_fn (ud is s). */
void gw_revoke_close(void *ud, const char *user, int has_cutoff, int64_t issued_before);

#endif
