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

/* One room with at least one local member. */
struct gw_room_s {
    char *channel; /* owned: "herald:room:<name>" */
    size_t chlen;
    const char *name;  /* borrowed: points into channel */
    gw_member_t *head; /* owned list of memberships */
    uint32_t nmembers;
    hr_dict_t *users; /* user_id → local socket count (as a pointer-sized integer) */
};

/* A connection in a room: on the room's list and on the connection's list. */
struct gw_member_s {
    gw_conn_t *conn;        /* borrowed */
    gw_room_t *room;        /* borrowed */
    gw_member_t *room_prev; /* borrowed */
    gw_member_t *room_next; /* borrowed */
    gw_member_t *conn_next; /* borrowed */
};

struct gw_hub_s {
    gw_hub_opts_t opts;
    hr_dict_t *users; /* channel → gw_user_t (owned) */
    hr_dict_t *rooms; /* channel → gw_room_t (owned) */
    hr_dict_t *conns; /* 8-byte id → gw_conn_t (borrowed) */
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
    if (h->opts.max_rooms == 0)
        h->opts.max_rooms = 100;
    h->users = hr_dict_create();
    h->rooms = hr_dict_create();
    h->conns = hr_dict_create();
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
    hr_dict_destroy(h->rooms, NULL);
    hr_dict_destroy(h->conns, NULL);
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
    hr_dict_set(h->conns, (const char *)&c->id, sizeof(c->id), c);
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

static void gw_hub_leave_member(gw_hub_t *h, gw_conn_t *c, gw_member_t *m);

void
gw_hub_detach(gw_hub_t *h, gw_conn_t *c)
{
    gw_conn_drop_queue(c);
    while (c->rooms != NULL)
        gw_hub_leave_member(h, c, c->rooms);
    gw_user_t *u = c->user;
    if (u == NULL)
        return;
    hr_dict_del(h->conns, (const char *)&c->id, sizeof(c->id));
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
gw_hub_deliver_alt(gw_hub_t *h, const char *channel, size_t chlen, const char *payload, size_t len,
                   uint64_t special, gw_msg_t *alt)
{
    gw_msg_t *m = NULL;
    size_t n = 0;
    gw_user_t *u = hr_dict_get(h->users, channel, chlen);
    if (u != NULL) {
        m = gw_msg_create(payload, len);
        for (gw_conn_t *c = u->head, *next; c != NULL; c = next) {
            next = c->user_next;
            if (gw_conn_send(h, c, c->id == special && alt ? alt : m) == 0)
                n++;
        }
    } else {
        gw_room_t *r = hr_dict_get(h->rooms, channel, chlen);
        if (r == NULL)
            return 0;
        m = gw_msg_create(payload, len);
        for (gw_member_t *mb = r->head, *next; mb != NULL; mb = next) {
            next = mb->room_next;
            gw_conn_t *c = mb->conn;
            if (gw_conn_send(h, c, c->id == special && alt ? alt : m) == 0)
                n++;
        }
    }
    gw_msg_release(m);
    return n;
}

size_t
gw_hub_deliver(gw_hub_t *h, const char *channel, size_t chlen, const char *payload, size_t len)
{
    return gw_hub_deliver_alt(h, channel, chlen, payload, len, 0, NULL);
}

/* ---- rooms ---- */

int
gw_room_name_valid(const char *name)
{
    size_t n = strlen(name);
    if (n == 0 || n > GW_ROOM_MAX)
        return 0;
    for (size_t i = 0; i < n; i++) {
        char ch = name[i];
        if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
              ch == '_' || ch == '.' || ch == ':' || ch == '@' || ch == '-'))
            return 0;
    }
    return 1;
}

static gw_room_t *
gw_hub_room_find(gw_hub_t *h, const char *room)
{
    char ch[GW_ROOM_MAX + 32];
    int n = snprintf(ch, sizeof(ch), "%s%s", HR_CHANNEL_ROOM_PREFIX, room);
    if (n < 0 || (size_t)n >= sizeof(ch))
        return NULL;
    return hr_dict_get(h->rooms, ch, (size_t)n);
}

int
gw_conn_in_room(const gw_conn_t *c, const char *room)
{
    for (gw_member_t *m = c->rooms; m != NULL; m = m->conn_next)
        if (strcmp(m->room->name, room) == 0)
            return 1;
    return 0;
}

int
gw_hub_join(gw_hub_t *h, gw_conn_t *c, const char *room)
{
    if (gw_conn_in_room(c, room))
        return 1;
    if (c->nrooms >= h->opts.max_rooms)
        return HR_DECLINED;

    gw_room_t *r = gw_hub_room_find(h, room);
    if (r == NULL) {
        r = hr_calloc(1, sizeof(*r));
        char ch[GW_ROOM_MAX + 32];
        int n = snprintf(ch, sizeof(ch), "%s%s", HR_CHANNEL_ROOM_PREFIX, room);
        r->channel = hr_strndup(ch, (size_t)n);
        r->chlen = (size_t)n;
        r->name = r->channel + strlen(HR_CHANNEL_ROOM_PREFIX);
        r->users = hr_dict_create();
        hr_dict_set(h->rooms, r->channel, r->chlen, r);
        h->stats.rooms++;
        if (h->opts.subscribe)
            h->opts.subscribe(h->opts.ud, r->channel, r->chlen);
    }
    gw_member_t *m = hr_calloc(1, sizeof(*m));
    m->conn = c;
    m->room = r;
    m->room_next = r->head;
    if (r->head)
        r->head->room_prev = m;
    r->head = m;
    r->nmembers++;
    m->conn_next = c->rooms;
    c->rooms = m;
    c->nrooms++;
    h->stats.memberships++;

    const char *user = gw_conn_user_id(c);
    if (user != NULL) {
        size_t ul = strlen(user);
        uintptr_t cnt = (uintptr_t)hr_dict_get(r->users, user, ul);
        hr_dict_set(r->users, user, ul, (void *)(cnt + 1));
        if (cnt == 0 && h->opts.presence)
            h->opts.presence(h->opts.ud, r->name, user, 1);
    }
    return 0;
}

static void
gw_hub_leave_member(gw_hub_t *h, gw_conn_t *c, gw_member_t *m)
{
    gw_room_t *r = m->room;
    /* Unlink from the connection's list. */
    for (gw_member_t **pp = &c->rooms; *pp != NULL; pp = &(*pp)->conn_next) {
        if (*pp == m) {
            *pp = m->conn_next;
            break;
        }
    }
    c->nrooms--;
    if (m->room_prev)
        m->room_prev->room_next = m->room_next;
    else
        r->head = m->room_next;
    if (m->room_next)
        m->room_next->room_prev = m->room_prev;
    r->nmembers--;
    h->stats.memberships--;
    hr_free(m);

    const char *user = gw_conn_user_id(c);
    if (user != NULL) {
        size_t ul = strlen(user);
        uintptr_t cnt = (uintptr_t)hr_dict_get(r->users, user, ul);
        if (cnt <= 1) {
            hr_dict_del(r->users, user, ul);
            if (h->opts.presence)
                h->opts.presence(h->opts.ud, r->name, user, 0);
        } else {
            hr_dict_set(r->users, user, ul, (void *)(cnt - 1));
        }
    }
    if (r->nmembers == 0) {
        hr_dict_del(h->rooms, r->channel, r->chlen);
        h->stats.rooms--;
        if (h->opts.unsubscribe)
            h->opts.unsubscribe(h->opts.ud, r->channel, r->chlen);
        hr_dict_destroy(r->users, NULL);
        hr_free(r->channel);
        hr_free(r);
    }
}

int
gw_hub_leave(gw_hub_t *h, gw_conn_t *c, const char *room)
{
    for (gw_member_t *m = c->rooms; m != NULL; m = m->conn_next) {
        if (strcmp(m->room->name, room) == 0) {
            gw_hub_leave_member(h, c, m);
            return 0;
        }
    }
    return HR_DECLINED;
}

size_t
gw_hub_leave_unless(gw_hub_t *h, gw_conn_t *c, int (*allowed)(const char *room, void *ud),
                    void (*left)(const char *room, void *ud), void *ud)
{
    size_t n = 0;
    for (gw_member_t *m = c->rooms, *next; m != NULL; m = next) {
        next = m->conn_next; /* leaving unlinks m only */
        if (allowed(m->room->name, ud))
            continue;
        /* The room (and its name) is freed when c was its last local member. */
        char room[GW_ROOM_MAX + 1];
        snprintf(room, sizeof(room), "%s", m->room->name);
        gw_hub_leave_member(h, c, m);
        n++;
        if (left != NULL)
            left(room, ud);
    }
    return n;
}

gw_conn_t *
gw_hub_conn_get(gw_hub_t *h, uint64_t id)
{
    return hr_dict_get(h->conns, (const char *)&id, sizeof(id));
}

uint32_t
gw_hub_room_size(gw_hub_t *h, const char *room)
{
    gw_room_t *r = gw_hub_room_find(h, room);
    return r ? r->nmembers : 0;
}

typedef struct {
    void (*fn)(const char *, const char *, void *);
    void *ud;
    const char *room;
} gw_presence_iter_t;

static int
gw_hub_iter_room_user(const char *key, size_t klen, void *val, void *ud)
{
    HR_UNUSED(klen);
    HR_UNUSED(val);
    gw_presence_iter_t *it = ud;
    it->fn(it->room, key, it->ud);
    return 0;
}

static int
gw_hub_iter_room(const char *key, size_t klen, void *val, void *ud)
{
    HR_UNUSED(key);
    HR_UNUSED(klen);
    gw_presence_iter_t *it = ud;
    gw_room_t *r = val;
    it->room = r->name;
    hr_dict_foreach(r->users, gw_hub_iter_room_user, it);
    return 0;
}

void
gw_hub_foreach_presence(gw_hub_t *h, void (*fn)(const char *room, const char *user_id, void *ud),
                        void *ud)
{
    gw_presence_iter_t it = {fn, ud, NULL};
    hr_dict_foreach(h->rooms, gw_hub_iter_room, &it);
}

typedef struct {
    void (*fn)(const char *, void *);
    void *ud;
} gw_name_iter_t;

static int
gw_hub_iter_room_name(const char *key, size_t klen, void *val, void *ud)
{
    HR_UNUSED(key);
    HR_UNUSED(klen);
    gw_name_iter_t *it = ud;
    it->fn(((gw_room_t *)val)->name, it->ud);
    return 0;
}

void
gw_hub_foreach_room(gw_hub_t *h, void (*fn)(const char *room, void *ud), void *ud)
{
    gw_name_iter_t it = {fn, ud};
    hr_dict_foreach(h->rooms, gw_hub_iter_room_name, &it);
}

static int
gw_hub_iter_user_name(const char *key, size_t klen, void *val, void *ud)
{
    HR_UNUSED(klen);
    HR_UNUSED(val);
    gw_name_iter_t *it = ud;
    it->fn(key, it->ud);
    return 0;
}

void
gw_hub_foreach_room_user(gw_hub_t *h, const char *room, void (*fn)(const char *user, void *ud),
                         void *ud)
{
    gw_room_t *r = gw_hub_room_find(h, room);
    gw_name_iter_t it = {fn, ud};
    if (r != NULL)
        hr_dict_foreach(r->users, gw_hub_iter_user_name, &it);
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

size_t
gw_hub_foreach_user_conn(gw_hub_t *h, const char *user_id, void (*fn)(gw_conn_t *c, void *ud),
                         void *ud)
{
    char ch[HR_USER_ID_MAX + 32];
    size_t chlen = hr_proto_user_channel(ch, sizeof(ch), user_id);
    gw_user_t *u = chlen > 0 ? hr_dict_get(h->users, ch, chlen) : NULL;
    size_t n = 0;
    if (u == NULL)
        return 0;
    for (gw_conn_t *c = u->head, *next; c != NULL; c = next) {
        next = c->user_next;
        fn(c, ud);
        n++;
    }
    return n;
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
    hr_dict_foreach(h->rooms, gw_hub_iter_channel, &it);
}

gw_hub_stats_t
gw_hub_stats(const gw_hub_t *h)
{
    return h->stats;
}
