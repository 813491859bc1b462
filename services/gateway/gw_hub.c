#include "gw_hub.h"
#include "hr_proto.h"
#include "herald/hr_alloc.h"
#include "herald/hr_core.h"
#include "herald/hr_dict.h"
#include "herald/hr_log.h"

#include <stdio.h>
#include <string.h>

/* One user with at least one local connection. */
struct gw_user_s {
    char *channel; /* owned: "herald:user:<id>" */
    size_t chlen;
    const char *user_id; /* borrowed: points into channel */
    gw_conn_t *head;     /* borrowed list of connections */
    uint32_t nconns;
};

struct gw_hub_s {
    gw_hub_opts_t opts;
    hr_dict_t *users; /* channel → gw_user_t (owned) */
    uint64_t next_id;
    gw_hub_stats_t stats;
};

gw_hub_t *
gw_hub_create(const gw_hub_opts_t *opts)
{
    gw_hub_t *h = hr_calloc(1, sizeof(*h));
    h->opts = *opts;
    if (h->opts.queue_max_frames == 0)
        h->opts.queue_max_frames = 1024;
    if (h->opts.queue_max_bytes == 0)
        h->opts.queue_max_bytes = 1 << 20;
    h->users = hr_dict_create();
    h->next_id = 1;
    return h;
}

static void
gw_user_free(void *p)
{
    gw_user_t *u = p;
    hr_free(u->channel);
    hr_free(u);
}

void
gw_hub_destroy(gw_hub_t *h)
{
    if (h == NULL)
        return;
    hr_dict_destroy(h->users, gw_user_free);
    hr_free(h);
}

void
gw_conn_init(gw_hub_t *h, gw_conn_t *c, const gw_conn_ops_t *ops)
{
    memset(c, 0, sizeof(*c));
    c->ops = ops;
    c->id = h->next_id++;
}

void
gw_hub_attach(gw_hub_t *h, gw_conn_t *c, const char *user_id)
{
    char ch[HR_USER_ID_MAX + 32];
    size_t chlen = hr_proto_user_channel(ch, sizeof(ch), user_id);
    gw_user_t *u = hr_dict_get(h->users, ch, chlen);
    if (u == NULL) {
        u = hr_calloc(1, sizeof(*u));
        u->channel = hr_strndup(ch, chlen);
        u->chlen = chlen;
        u->user_id = u->channel + strlen(HR_CHANNEL_USER_PREFIX);
        hr_dict_set(h->users, u->channel, chlen, u);
        h->stats.users++;
        if (h->opts.subscribe)
            h->opts.subscribe(h->opts.ud, u->channel, chlen);
    }
    c->user = u;
    c->user_prev = NULL;
    c->user_next = u->head;
    if (u->head)
        u->head->user_prev = c;
    u->head = c;
    u->nconns++;
    h->stats.conns++;
}

static void
gw_conn_drop_queue(gw_conn_t *c)
{
    while (c->qlen > 0)
        gw_msg_release(gw_conn_pop(c));
    hr_free(c->q);
    c->q = NULL;
    c->qcap = 0;
}

void
gw_hub_detach(gw_hub_t *h, gw_conn_t *c)
{
    gw_conn_drop_queue(c);
    gw_user_t *u = c->user;
    if (u == NULL)
        return;
    if (c->user_prev)
        c->user_prev->user_next = c->user_next;
    else
        u->head = c->user_next;
    if (c->user_next)
        c->user_next->user_prev = c->user_prev;
    c->user = NULL;
    c->user_prev = c->user_next = NULL;
    h->stats.conns--;
    if (--u->nconns == 0) {
        hr_dict_del(h->users, u->channel, u->chlen);
        h->stats.users--;
        if (h->opts.unsubscribe)
            h->opts.unsubscribe(h->opts.ud, u->channel, u->chlen);
        gw_user_free(u);
    }
}

const char *
gw_conn_user_id(const gw_conn_t *c)
{
    return c->user ? c->user->user_id : NULL;
}

void
gw_conn_close(gw_conn_t *c, uint16_t code, const char *reason)
{
    if (c->close_code != 0)
        return;
    c->close_code = code;
    snprintf(c->close_reason, sizeof(c->close_reason), "%s", reason);
    c->ops->wake(c);
}

int
gw_conn_send(gw_hub_t *h, gw_conn_t *c, gw_msg_t *m)
{
    if (c->close_code != 0)
        return HR_DECLINED;
    if (c->qlen + 1 > h->opts.queue_max_frames ||
        (uint64_t)c->qbytes + m->len > h->opts.queue_max_bytes) {
        /* A client that does not read must not make the gateway hold its backlog. */
        h->stats.slow_killed++;
        hr_log_warn("slow_consumer", "conn=%llu user=%s queued_frames=%u queued_bytes=%u",
                    (unsigned long long)c->id, gw_conn_user_id(c) ? gw_conn_user_id(c) : "-",
                    c->qlen, c->qbytes);
        gw_conn_drop_queue(c);
        gw_conn_close(c, GW_CLOSE_POLICY, "outbound queue full");
        return HR_DECLINED;
    }
    if (c->qlen == c->qcap) {
        uint32_t ncap = c->qcap ? c->qcap * 2 : 4;
        if (ncap > h->opts.queue_max_frames)
            ncap = h->opts.queue_max_frames;
        gw_msg_t **nq = hr_malloc(ncap * sizeof(*nq));
        for (uint32_t i = 0; i < c->qlen; i++)
            nq[i] = c->q[(c->qhead + i) % c->qcap];
        hr_free(c->q);
        c->q = nq;
        c->qcap = ncap;
        c->qhead = 0;
    }
    c->q[(c->qhead + c->qlen) % c->qcap] = gw_msg_retain(m);
    c->qlen++;
    c->qbytes += m->len;
    h->stats.frames_queued++;
    if (c->qlen == 1)
        c->ops->wake(c);
    return 0;
}

gw_msg_t *
gw_conn_pop(gw_conn_t *c)
{
    if (c->qlen == 0)
        return NULL;
    gw_msg_t *m = c->q[c->qhead];
    c->qhead = (c->qhead + 1) % c->qcap;
    c->qlen--;
    c->qbytes -= m->len;
    return m;
}

size_t
gw_hub_deliver(gw_hub_t *h, const char *channel, size_t chlen, const char *payload, size_t len)
{
    gw_user_t *u = hr_dict_get(h->users, channel, chlen);
    if (u == NULL)
        return 0;
    gw_msg_t *m = gw_msg_create(payload, len);
    size_t n = 0;
    gw_conn_t *c = u->head;
    while (c != NULL) {
        gw_conn_t *next = c->user_next;
        if (gw_conn_send(h, c, m) == 0)
            n++;
        c = next;
    }
    gw_msg_release(m);
    return n;
}

typedef struct {
    void (*fn)(gw_conn_t *, void *);
    void *ud;
} gw_conn_iter_t;

static int
gw_hub_iter_user(const char *key, size_t klen, void *val, void *ud)
{
    HR_UNUSED(key);
    HR_UNUSED(klen);
    gw_conn_iter_t *it = ud;
    gw_user_t *u = val;
    for (gw_conn_t *c = u->head; c != NULL;) {
        gw_conn_t *next = c->user_next;
        it->fn(c, it->ud);
        c = next;
    }
    return 0;
}

void
gw_hub_foreach_conn(gw_hub_t *h, void (*fn)(gw_conn_t *c, void *ud), void *ud)
{
    gw_conn_iter_t it = {fn, ud};
    hr_dict_foreach(h->users, gw_hub_iter_user, &it);
}

typedef struct {
    void (*fn)(const char *, size_t, void *);
    void *ud;
} gw_chan_iter_t;

static int
gw_hub_iter_channel(const char *key, size_t klen, void *val, void *ud)
{
    HR_UNUSED(val);
    gw_chan_iter_t *it = ud;
    it->fn(key, klen, it->ud);
    return 0;
}

void
gw_hub_foreach_channel(gw_hub_t *h, void (*fn)(const char *ch, size_t len, void *ud), void *ud)
{
    gw_chan_iter_t it = {fn, ud};
    hr_dict_foreach(h->users, gw_hub_iter_channel, &it);
}

gw_hub_stats_t
gw_hub_stats(const gw_hub_t *h)
{
    return h->stats;
}
