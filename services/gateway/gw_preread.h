/*
 * Reads a new socket's HTTP request head before lws sees it, to move a
 * subprotocol token out of Sec-WebSocket-Protocol (proto/auth.md: browsers
 * offer "herald, herald.token.<jwt>"). lws 4.1 copies that header into a
 * 128-byte buffer to pick a protocol and hangs up without an answer when it
 * is longer, which any JWT makes it. So the head is rewritten: the token
 * moves into the request header GW_AUTH_TOKEN_HEADER (a copy the client sent
 * itself is dropped), Sec-WebSocket-Protocol keeps the other names
 * ("herald", which lws then selects and answers), and the bytes are handed
 * to lws with lws_adopt_socket_vhost_readbuf().
 */
#ifndef HERALD_GW_PREREAD_H
#define HERALD_GW_PREREAD_H

#include <stddef.h>
#include <uv.h>

typedef struct gw_preread_s gw_preread_t;

/**
 * The head of fd is in (rewritten, len bytes, the first bytes after it
 * included): the callee owns fd from now on (buf is borrowed for the call).
 */
typedef void (*gw_preread_fn)(void *ud, int fd, const char *buf, size_t len);

/**
 * Reads heads of at most max_head bytes (a longer one is handed over as read,
 * for lws to refuse); a socket silent for timeout_ms before its head is
 * complete is closed.
 */
gw_preread_t *gw_preread_create(uv_loop_t *loop, size_t max_head, int timeout_ms,
                                gw_preread_fn done, void *ud);
/** Closes the sockets still being read, then frees p (through uv). */
void gw_preread_destroy(gw_preread_t *p);
/** Takes fd (non-blocking) and reads its head. Returns 0, or HR_ERR (fd not taken). */
int gw_preread_start(gw_preread_t *p, int fd);
/** Sockets whose head is being read. */
size_t gw_preread_pending(const gw_preread_t *p);

/**
 * The pure half: rewrites the complete head in[0..head_len) (ending with the
 * blank line) into out (cap >= head_len + 64) as described above. Returns the
 * length written, or 0 when nothing needs to change (out is then unused).
 */
size_t gw_preread_rewrite(const char *in, size_t head_len, char *out, size_t cap);

#endif
