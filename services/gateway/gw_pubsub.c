#include "gw_pubsub.h"
#include "herald/hr_alloc.h"
#include "herald/hr_core.h"
#include "herald/hr_dict.h"
#include "herald/hr_log.h"

#include <string.h>

/* ---- libuv loop ops for hr_redis ---- */

typedef struct {
    uv_timer_t t;
    void (*cb)(void *);
    void *arg;
} gw_uv_timer_t;

/*
 * Our own hiredis adapter for libuv: hiredis 0.14's ignores a poll error, so
 * a refused connect would leave the context CONNECTING forever. Here an error
 * is reported to hiredis as readiness, and hiredis then sees the socket error.
 */
typedef struct {
    redisAsyncContext *ac; /* borrowed; NULL once hiredis cleaned up */
    uv_poll_t poll;
    int events;
} gw_uv_redis_t;

static void
gw_uv_redis_poll(uv_poll_t *h, int status, int events)
{
    gw_uv_redis_t *p = h->data;
    if (status != 0)
        events = UV_READABLE | UV_WRITABLE;
    if (p->ac != NULL && (events & UV_READABLE))
        redisAsyncHandleRead(p->ac);
    if (p->ac != NULL && (events & UV_WRITABLE))
        redisAsyncHandleWrite(p->ac);
}

static void
gw_uv_redis_update(gw_uv_redis_t *p, int add, int del)
{
    int ev = (p->events | add) & ~del;
    if (ev == p->events || p->ac == NULL)
        return;
    p->events = ev;
    if (ev != 0)
        uv_poll_start(&p->poll, ev, gw_uv_redis_poll);
    else
        uv_poll_stop(&p->poll);
}

static void
gw_uv_redis_add_read(void *d)
{
    gw_uv_redis_update(d, UV_READABLE, 0);
}

static void
gw_uv_redis_del_read(void *d)
{
    gw_uv_redis_update(d, 0, UV_READABLE);
}

static void
gw_uv_redis_add_write(void *d)
{
    gw_uv_redis_update(d, UV_WRITABLE, 0);
}

static void
gw_uv_redis_del_write(void *d)
{
    gw_uv_redis_update(d, 0, UV_WRITABLE);
}

static void
gw_uv_redis_closed(uv_handle_t *h)
{
    hr_free(h->data);
}

static void
gw_uv_redis_cleanup(void *d)
{
    gw_uv_redis_t *p = d;
    p->ac = NULL;
    uv_poll_stop(&p->poll);
    uv_close((uv_handle_t *)&p->poll, gw_uv_redis_closed);
}

static int
gw_uv_attach(redisAsyncContext *ac, void *loop)
{
    if (ac->ev.data != NULL)
        return HR_ERR;
    gw_uv_redis_t *p = hr_calloc(1, sizeof(*p));
    if (uv_poll_init(loop, &p->poll, ac->c.fd) != 0) {
        hr_free(p);
        return HR_ERR;
    }
    p->ac = ac;
    p->poll.data = p;
    ac->ev.addRead = gw_uv_redis_add_read;
    ac->ev.delRead = gw_uv_redis_del_read;
    ac->ev.addWrite = gw_uv_redis_add_write;
    ac->ev.delWrite = gw_uv_redis_del_write;
    ac->ev.cleanup = gw_uv_redis_cleanup;
    ac->ev.data = p;
    return 0;
}

static void
gw_uv_timer_fire(uv_timer_t *t)
{
    gw_uv_timer_t *gt = (gw_uv_timer_t *)t;
    gt->cb(gt->arg);
}

static void *
gw_uv_timer_new(void *loop, void (*cb)(void *), void *arg)
{
    gw_uv_timer_t *gt = hr_calloc(1, sizeof(*gt));
    uv_timer_init(loop, &gt->t);
    gt->cb = cb;
    gt->arg = arg;
    return gt;
}

static void
gw_uv_timer_arm(void *timer, uint64_t ms)
{
    gw_uv_timer_t *gt = timer;
    uv_timer_start(&gt->t, gw_uv_timer_fire, ms, 0);
}

static void
gw_uv_timer_closed(uv_handle_t *h)
{
    hr_free(h);
}

static void
gw_uv_timer_free(void *timer)
{
    gw_uv_timer_t *gt = timer;
    if (gt == NULL)
        return;
    uv_timer_stop(&gt->t);
    uv_close((uv_handle_t *)&gt->t, gw_uv_timer_closed);
}

const hr_loop_ops_t gw_loop_ops_libuv = {
    .attach = gw_uv_attach,
    .timer_new = gw_uv_timer_new,
    .timer_arm = gw_uv_timer_arm,
    .timer_free = gw_uv_timer_free,
};

/* ---- subscriber ---- */

/* SUBSCRIBING: the SUBSCRIBE is sent, its reply (from then on messages flow) not yet in. */
typedef enum { GW_CH_NONE, GW_CH_SUBSCRIBING, GW_CH_SUBSCRIBED, GW_CH_UNSUBSCRIBING } gw_ch_state_t;

typedef struct {
    gw_ch_state_t state;
    int wanted;
} gw_ch_t;

struct gw_pubsub_s {
    hr_redis_async_t *redis; /* owned */
    hr_dict_t *chans;        /* channel → gw_ch_t (owned) */
    char **control;          /* owned list of owned names: held for the connection's life */
    size_t ncontrol;
    gw_pubsub_msg_fn on_msg;
    gw_pubsub_live_fn on_live;
    void *ud; /* borrowed */
    size_t wanted;
    uint64_t readies; /* times the connection became READY */
};

static void gw_pubsub_reply(redisAsyncContext *ac, void *reply, void *privdata);

static void
gw_pubsub_send(gw_pubsub_t *p, const char *cmd, const char *ch, size_t len)
{
    const char *argv[2] = {cmd, ch};
    size_t argvlen[2] = {strlen(cmd), len};
    /* Not READY: the channel is (re)subscribed when the connection comes back. */
    hr_redis_async_subscribe_argv(p->redis, gw_pubsub_reply, p, 2, argv, argvlen);
}

static void
gw_pubsub_reply(redisAsyncContext *ac, void *reply, void *privdata)
{
    HR_UNUSED(ac);
    gw_pubsub_t *p = privdata;
    redisReply *r = reply;
    if (r == NULL || r->type != REDIS_REPLY_ARRAY || r->elements < 3 ||
        r->element[0]->type != REDIS_REPLY_STRING || r->element[1]->type != REDIS_REPLY_STRING)
        return;
    const char *kind = r->element[0]->str;
    redisReply *ch = r->element[1];

    if (strcmp(kind, "message") == 0) {
        redisReply *payload = r->element[2];
        if (payload->type == REDIS_REPLY_STRING)
            p->on_msg(p->ud, ch->str, ch->len, payload->str, payload->len);
    } else if (strcmp(kind, "subscribe") == 0) {
        /* Redis has registered the channel: a PUBLISH from now on reaches us. */
        for (size_t i = 0; i < p->ncontrol; i++) {
            if (strlen(p->control[i]) == ch->len && memcmp(p->control[i], ch->str, ch->len) == 0) {
                if (p->on_live != NULL)
                    p->on_live(p->ud, ch->str, ch->len);
                return;
            }
        }
        gw_ch_t *c = hr_dict_get(p->chans, ch->str, ch->len);
        if (c == NULL || c->state != GW_CH_SUBSCRIBING)
            return;
        c->state = GW_CH_SUBSCRIBED;
        if (c->wanted && p->on_live != NULL)
            p->on_live(p->ud, ch->str, ch->len);
    } else if (strcmp(kind, "unsubscribe") == 0) {
        gw_ch_t *c = hr_dict_get(p->chans, ch->str, ch->len);
        if (c == NULL || c->state != GW_CH_UNSUBSCRIBING)
            return;
        if (c->wanted) {
            /* Wanted again while the UNSUBSCRIBE was in flight: now it is safe. */
            c->state = GW_CH_SUBSCRIBING;
            gw_pubsub_send(p, "SUBSCRIBE", ch->str, ch->len);
        } else {
            hr_free(hr_dict_del(p->chans, ch->str, ch->len));
        }
    }
}

typedef struct {
    gw_pubsub_t *p;
    char **drop; /* owned list of keys to delete after the walk */
    size_t ndrop;
} gw_resub_t;

/* After a (re)connect: every wanted channel is subscribed again, the rest forgotten. */
static int
gw_pubsub_resub_one(const char *key, size_t klen, void *val, void *ud)
{
    gw_resub_t *rs = ud;
    gw_ch_t *c = val;
    if (c->wanted) {
        c->state = GW_CH_SUBSCRIBING;
        gw_pubsub_send(rs->p, "SUBSCRIBE", key, klen);
    } else {
        c->state = GW_CH_NONE;
        rs->drop = hr_realloc(rs->drop, (rs->ndrop + 1) * sizeof(char *));
        rs->drop[rs->ndrop++] = hr_strndup(key, klen);
    }
    return 0;
}

static int
gw_pubsub_reset_one(const char *key, size_t klen, void *val, void *ud)
{
    HR_UNUSED(key);
    HR_UNUSED(klen);
    HR_UNUSED(ud);
    ((gw_ch_t *)val)->state = GW_CH_NONE;
    return 0;
}

static void
gw_pubsub_state(hr_redis_async_t *r, int ready, void *ud)
{
    HR_UNUSED(r);
    gw_pubsub_t *p = ud;
    if (!ready) {
        hr_dict_foreach(p->chans, gw_pubsub_reset_one, NULL);
        if (p->on_live != NULL)
            p->on_live(p->ud, NULL, 0);
        return;
    }
    p->readies++;
    const char **argv = hr_malloc((p->ncontrol + 1) * sizeof(char *));
    size_t *argvlen = hr_malloc((p->ncontrol + 1) * sizeof(size_t));
    argv[0] = "SUBSCRIBE";
    argvlen[0] = 9;
    for (size_t i = 0; i < p->ncontrol; i++) {
        argv[i + 1] = p->control[i];
        argvlen[i + 1] = strlen(p->control[i]);
    }
    hr_redis_async_subscribe_argv(p->redis, gw_pubsub_reply, p, (int)p->ncontrol + 1, argv,
                                  argvlen);
    hr_free(argv);
    hr_free(argvlen);
    gw_resub_t rs = {p, NULL, 0};
    hr_dict_foreach(p->chans, gw_pubsub_resub_one, &rs);
    for (size_t i = 0; i < rs.ndrop; i++) {
        hr_free(hr_dict_del(p->chans, rs.drop[i], strlen(rs.drop[i])));
        hr_free(rs.drop[i]);
    }
    hr_free(rs.drop);
    hr_log_info("subscriptions_restored", "channels=%zu", p->wanted);
}

static void
gw_pubsub_free_control(gw_pubsub_t *p)
{
    for (size_t i = 0; i < p->ncontrol; i++)
        hr_free(p->control[i]);
    hr_free(p->control);
}

gw_pubsub_t *
gw_pubsub_create(uv_loop_t *loop, const char *redis_url, const char *const *control,
                 size_t ncontrol, gw_pubsub_msg_fn on_msg, gw_pubsub_live_fn on_live, void *ud,
                 char *err, size_t errlen)
{
    gw_pubsub_t *p = hr_calloc(1, sizeof(*p));
    p->chans = hr_dict_create();
    p->control = hr_calloc(ncontrol, sizeof(char *));
    for (size_t i = 0; i < ncontrol; i++)
        p->control[p->ncontrol++] = hr_strdup(control[i]);
    p->on_msg = on_msg;
    p->on_live = on_live;
    p->ud = ud;
    hr_redis_async_opts_t o = {.url = redis_url,
                               .name = "subscribe",
                               .command_timeout_ms = 0,
                               .on_state = gw_pubsub_state,
                               .ud = p};
    p->redis = hr_redis_async_create(&gw_loop_ops_libuv, loop, &o, err, errlen);
    if (p->redis == NULL) {
        hr_dict_destroy(p->chans, hr_free);
        gw_pubsub_free_control(p);
        hr_free(p);
        return NULL;
    }
    return p;
}

void
gw_pubsub_destroy(gw_pubsub_t *p)
{
    if (p == NULL)
        return;
    hr_redis_async_destroy(p->redis);
    hr_dict_destroy(p->chans, hr_free);
    gw_pubsub_free_control(p);
    hr_free(p);
}

void
gw_pubsub_want(gw_pubsub_t *p, const char *channel, size_t len)
{
    gw_ch_t *c = hr_dict_get(p->chans, channel, len);
    if (c == NULL) {
        c = hr_calloc(1, sizeof(*c));
        hr_dict_set(p->chans, channel, len, c);
    }
    if (c->wanted)
        return;
    c->wanted = 1;
    p->wanted++;
    if (c->state == GW_CH_NONE && hr_redis_async_ready(p->redis)) {
        c->state = GW_CH_SUBSCRIBING;
        gw_pubsub_send(p, "SUBSCRIBE", channel, len);
    }
}

void
gw_pubsub_unwant(gw_pubsub_t *p, const char *channel, size_t len)
{
    gw_ch_t *c = hr_dict_get(p->chans, channel, len);
    if (c == NULL || !c->wanted)
        return;
    c->wanted = 0;
    p->wanted--;
    /* Behind a SUBSCRIBE in flight is safe; the other order is not (see gw_pubsub.h). */
    if ((c->state == GW_CH_SUBSCRIBED || c->state == GW_CH_SUBSCRIBING) &&
        hr_redis_async_ready(p->redis)) {
        c->state = GW_CH_UNSUBSCRIBING;
        gw_pubsub_send(p, "UNSUBSCRIBE", channel, len);
    } else if (c->state == GW_CH_NONE) {
        hr_free(hr_dict_del(p->chans, channel, len));
    }
}

int
gw_pubsub_live(const gw_pubsub_t *p, const char *channel, size_t len)
{
    const gw_ch_t *c = hr_dict_get(p->chans, channel, len);
    return c != NULL && c->wanted && c->state == GW_CH_SUBSCRIBED;
}

int
gw_pubsub_ready(const gw_pubsub_t *p)
{
    return hr_redis_async_ready(p->redis);
}

size_t
gw_pubsub_count(const gw_pubsub_t *p)
{
    return p->wanted;
}

uint64_t
gw_pubsub_reconnects(const gw_pubsub_t *p)
{
    return p->readies > 1 ? p->readies - 1 : 0;
}
