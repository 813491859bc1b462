#include "gw_msg.h"
#include "herald/hr_alloc.h"
#include "herald/hr_json.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

gw_msg_t *
gw_msg_create(const void *payload, size_t len)
{
    gw_msg_t *m = hr_malloc(sizeof(*m) + GW_MSG_HEADROOM + len + 1);
    m->refs = 1;
    m->len = (uint32_t)len;
    m->noted = 0;
    memcpy(m->data + GW_MSG_HEADROOM, payload, len);
    m->data[GW_MSG_HEADROOM + len] = '\0';
    return m;
}

gw_msg_t *
gw_msg_printf(const char *fmt, ...)
{
    char small[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(small, sizeof(small), fmt, ap);
    va_end(ap);
    if (n < 0)
        n = 0;
    if ((size_t)n < sizeof(small))
        return gw_msg_create(small, (size_t)n);
    gw_msg_t *m = hr_malloc(sizeof(*m) + GW_MSG_HEADROOM + (size_t)n + 1);
    m->refs = 1;
    m->len = (uint32_t)n;
    m->noted = 0;
    va_start(ap, fmt);
    vsnprintf((char *)m->data + GW_MSG_HEADROOM, (size_t)n + 1, fmt, ap);
    va_end(ap);
    return m;
}

gw_msg_t *
gw_msg_from_json(const cJSON *item)
{
    char *txt = hr_json_print(item);
    gw_msg_t *m = gw_msg_create(txt, strlen(txt));
    hr_free(txt);
    return m;
}

void
gw_msg_release(gw_msg_t *m)
{
    if (m != NULL && --m->refs == 0)
        hr_free(m);
}
