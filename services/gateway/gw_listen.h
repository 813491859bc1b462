/*
 * The gateway's listening socket. Herald owns it (lws 4.1 cannot share a port
 * between processes): SO_REUSEPORT lets several gateway processes accept on
 * one port, and each accepted socket is handed to a callback (lws adopts it
 * and speaks HTTP and WebSocket on it). At the file limit accepting pauses
 * instead of spinning on a listen socket that stays readable.
 */
#ifndef HERALD_GW_LISTEN_H
#define HERALD_GW_LISTEN_H

#include <uv.h>

typedef struct gw_listen_s gw_listen_t;

/** Takes an accepted socket: returns 0 if it now owns fd, else the listener closes it. */
typedef int (*gw_listen_fn)(void *ud, int fd);

/**
 * Binds host:port (IPv4; port 0 picks one, returned in *bound) and listens.
 * Returns NULL with err filled on failure. Accepting starts with gw_listen_start.
 */
gw_listen_t *gw_listen_create(uv_loop_t *loop, const char *host, int port, int reuseport,
                              int *bound, char *err, size_t errlen);
/** Hands every accepted socket to fn. */
void gw_listen_start(gw_listen_t *l, gw_listen_fn fn, void *ud);
/** Stops accepting and closes the socket (the kernel then sends new clients to siblings). */
void gw_listen_destroy(gw_listen_t *l);

#endif
