#include "gw_http.h"

#include <string.h>

int
gw_http_reply(struct lws *wsi, unsigned status, const char *body)
{
    unsigned char buf[LWS_PRE + 512], *start = buf + LWS_PRE, *p = start,
                                      *end = buf + sizeof(buf) - 1;
    size_t len = strlen(body);
    if (lws_add_http_common_headers(wsi, status, "application/json", (lws_filepos_t)len, &p, end) ||
        lws_finalize_write_http_header(wsi, start, &p, end))
        return -1;
    unsigned char out[LWS_PRE + 512];
    if (len > sizeof(out) - LWS_PRE)
        len = sizeof(out) - LWS_PRE;
    memcpy(out + LWS_PRE, body, len);
    if (lws_write(wsi, out + LWS_PRE, len, LWS_WRITE_HTTP_FINAL) != (int)len)
        return -1;
    return lws_http_transaction_completed(wsi) ? -1 : 0;
}

void
gw_http_refuse(struct lws *wsi, unsigned status, const char *body)
{
    gw_http_refuse_retry(wsi, status, body, 0);
}

void
gw_http_refuse_retry(struct lws *wsi, unsigned status, const char *body, int retry_after_s)
{
    unsigned char buf[LWS_PRE + 768], *start = buf + LWS_PRE, *p = start,
                                      *end = buf + sizeof(buf) - 1;
    size_t len = strlen(body);
    if (lws_add_http_header_status(wsi, status, &p, end) ||
        lws_add_http_header_by_token(wsi, WSI_TOKEN_HTTP_CONTENT_TYPE,
                                     (const unsigned char *)"application/json", 16, &p, end) ||
        lws_add_http_header_content_length(wsi, (lws_filepos_t)len, &p, end) ||
        lws_add_http_header_by_token(wsi, WSI_TOKEN_CONNECTION, (const unsigned char *)"close", 5,
                                     &p, end))
        return;
    if (retry_after_s > 0) {
        char ra[16];
        int n = snprintf(ra, sizeof(ra), "%d", retry_after_s);
        if (lws_add_http_header_by_token(wsi, WSI_TOKEN_HTTP_RETRY_AFTER, (unsigned char *)ra, n,
                                         &p, end))
            return;
    }
    if (lws_finalize_http_header(wsi, &p, end) || (size_t)(end - p) < len)
        return;
    memcpy(p, body, len);
    p += len;
    lws_write(wsi, start, (size_t)(p - start), LWS_WRITE_HTTP_HEADERS);
}
