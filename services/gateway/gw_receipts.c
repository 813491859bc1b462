#include "gw_receipts.h"
#include "hr_proto.h"
#include "herald/hr_alloc.h"
#include "herald/hr_core.h"
#include "herald/hr_log.h"
#include "herald/hr_time.h"

#include <stdio.h>
#include <string.h>

#define GW_RECEIPTS_FLUSH_MS 20
#define GW_RECEIPTS_PER_CALL 500
#define GW_RECEIPTS_MAX 200000 /* held while Redis is down; older ones are dropped */

/*
 * KEYS[1] receipts stream
 * ARGV: id1, user1, delivered_at1, id2, user2, delivered_at2, …
 * Reply: the number of entries added.
 */
static const char gw_lua_receipts[] =
    "for i = 1, #ARGV, 3 do\n"
    "  redis.call('XADD', KEYS[1], '*', '" HR_FIELD_ID "', ARGV[i], '" HR_FIELD_USER_ID
    "', ARGV[i+1], '" HR_FIELD_DELIVERED_AT "', ARGV[i+2])\n"
    "end\n"
    "return #ARGV / 3\n";

typedef struct {
    char id[HR_UUID_STR_LEN];
    char *user_id; /* owned */
    uint64_t at_ms;
} gw_receipt_t;

struct gw_receipts_s {
    hr_redis_async_t *redis; /* borrowed */
    gw_receipt_t *buf;       /* owned ring */
    size_t cap, head, len;
    uv_timer_t *timer; /* owned (closed through uv) */
    int armed;
    uint64_t dropped;
};

static void
gw_receipt_clear(gw_receipt_t *rc)
{
    hr_free(rc->user_id);
    rc->user_id = NULL;
}

static void gw_receipts_flush(uv_timer_t *t);

static void
gw_receipts_arm(gw_receipts_t *r, uint64_t ms)
{
    if (!r->armed) {
        r->armed = 1;
        uv_timer_start(r->timer, gw_receipts_flush, ms, 0);
    }
}

int
gw_receipts_note(gw_receipts_t *r, const char *frame, size_t len, const char *user_id)
{
    static const char head[] = "{\"type\":\"notification\",\"notification\":{\"id\":\"";
    size_t hl = sizeof(head) - 1;
    if (user_id == NULL || len < hl + 36 || memcmp(frame, head, hl) != 0)
        return 0;
    if (r->len == GW_RECEIPTS_MAX) {
        /* Redis has been away long: keep the newest, count what is lost. */
        gw_receipt_clear(&r->buf[r->head]);
        r->head = (r->head + 1) % r->cap;
        r->len--;
        if (r->dropped++ % 10000 == 0)
            hr_log_warn("receipts_dropped", "total=%llu", (unsigned long long)r->dropped);
    }
    if (r->len == r->cap) {
        size_t ncap = r->cap ? r->cap * 2 : 64;
        gw_receipt_t *nb = hr_malloc(ncap * sizeof(*nb));
        for (size_t i = 0; i < r->len; i++)
            nb[i] = r->buf[(r->head + i) % r->cap];
        hr_free(r->buf);
        r->buf = nb;
        r->cap = ncap;
        r->head = 0;
    }
    gw_receipt_t *rc = &r->buf[(r->head + r->len) % r->cap];
    memcpy(rc->id, frame + hl, 36);
    rc->id[36] = '\0';
    rc->user_id = hr_strdup(user_id);
    rc->at_ms = hr_now_ms();
    r->len++;
    gw_receipts_arm(r, GW_RECEIPTS_FLUSH_MS);
    return 1;
}

static void
gw_receipts_done(redisAsyncContext *ac, void *reply, void *privdata)
{
    HR_UNUSED(ac);
    HR_UNUSED(privdata);
    redisReply *rep = reply;
    if (rep != NULL && rep->type == REDIS_REPLY_ERROR)
        hr_log_warn("receipts_failed", "error=\"%s\"", rep->str);
}

static void
gw_receipts_flush(uv_timer_t *t)
{
    gw_receipts_t *r = t->data;
    r->armed = 0;
    if (r->len == 0)
        return;
    if (!hr_redis_async_ready(r->redis)) {
        gw_receipts_arm(r, 500);
        return;
    }
    while (r->len > 0) {
        size_t n = r->len < GW_RECEIPTS_PER_CALL ? r->len : GW_RECEIPTS_PER_CALL;
        size_t argc = 4 + 3 * n;
        const char **argv = hr_malloc(argc * sizeof(*argv));
        size_t *argvlen = hr_malloc(argc * sizeof(*argvlen));
        char(*ts)[24] = hr_malloc(n * sizeof(*ts));
        argv[0] = "EVAL";
        argv[1] = gw_lua_receipts;
        argv[2] = "1";
        argv[3] = HR_STREAM_RECEIPTS;
        for (size_t i = 0; i < n; i++) {
            gw_receipt_t *rc = &r->buf[(r->head + i) % r->cap];
            snprintf(ts[i], sizeof(ts[i]), "%llu", (unsigned long long)rc->at_ms);
            argv[4 + 3 * i] = rc->id;
            argv[5 + 3 * i] = rc->user_id;
            argv[6 + 3 * i] = ts[i];
        }
        for (size_t i = 0; i < argc; i++)
            argvlen[i] = strlen(argv[i]);
        int rc = hr_redis_async_argv(r->redis, gw_receipts_done, NULL, (int)argc, argv, argvlen);
        hr_free(argv);
        hr_free(argvlen);
        hr_free(ts);
        if (rc != 0) {
            gw_receipts_arm(r, 500);
            return;
        }
        /* hiredis copied the command: the buffered receipts can go. */
        for (size_t i = 0; i < n; i++)
            gw_receipt_clear(&r->buf[(r->head + i) % r->cap]);
        r->head = (r->head + n) % r->cap;
        r->len -= n;
    }
}

gw_receipts_t *
gw_receipts_create(uv_loop_t *loop, hr_redis_async_t *redis)
{
    gw_receipts_t *r = hr_calloc(1, sizeof(*r));
    r->redis = redis;
    r->timer = hr_malloc(sizeof(uv_timer_t));
    uv_timer_init(loop, r->timer);
    r->timer->data = r;
    return r;
}

size_t
gw_receipts_pending(const gw_receipts_t *r)
{
    return r->len;
}

static void
gw_receipts_timer_closed(uv_handle_t *h)
{
    hr_free(h);
}

void
gw_receipts_destroy(gw_receipts_t *r)
{
    if (r == NULL)
        return;
    uv_timer_stop(r->timer);
    r->armed = 1; /* no re-arm from the final flush */
    if (r->len > 0 && hr_redis_async_ready(r->redis))
        gw_receipts_flush(r->timer);
    /* The connection is freed right after us: push the queued commands out now. */
    hr_redis_async_flush(r->redis);
    if (r->len > 0)
        hr_log_warn("receipts_unsent", "count=%zu", r->len);
    uv_close((uv_handle_t *)r->timer, gw_receipts_timer_closed);
    for (size_t i = 0; i < r->len; i++)
        gw_receipt_clear(&r->buf[(r->head + i) % r->cap]);
    hr_free(r->buf);
    hr_free(r);
}
