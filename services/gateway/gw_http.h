/* The gateway's few plain-HTTP answers (health, refused upgrades), JSON bodies. */
#ifndef HERALD_GW_HTTP_H
#define HERALD_GW_HTTP_H

#include <libwebsockets.h>

/** Answers an HTTP request with status and body (keep-alive). Returns 0, or -1 to close. */
int gw_http_reply(struct lws *wsi, unsigned status, const char *body);
/** Answers an upgrade request that is refused; the caller then returns -1 to close. */
void gw_http_refuse(struct lws *wsi, unsigned status, const char *body);
/** gw_http_refuse() with a Retry-After header (seconds; 0: none). */
void gw_http_refuse_retry(struct lws *wsi, unsigned status, const char *body, int retry_after_s);

#endif
