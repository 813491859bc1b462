/*
 * The gateway's client-frame handler through the hub, no sockets, no Redis.
 *
 * An input is a session script: frames separated by '\n'. The first byte of
 * each frame is the harness's, the rest is what the client sent:
 *   bits 0-1  which of four connections sends it (users alice, alice, bob, carol)
 *   bit  2    drain that connection's queue afterwards (its socket writes)
 *   bit  3    close and reconnect that connection afterwards
 * The bytes go through gw_frame_parse / gw_frame_check, exactly as
 * gw_server.c's gw_handle_client_frame calls them, and an accepted frame is
 * acted on through the hub as gw_server.c does: join/leave change
 * memberships, publish needs membership and is delivered on the room's
 * channel, every refusal and answer is a queued frame. presence would read
 * Redis and stops at the check.
 *
 * Checked after every frame: the hub's (un)subscribe and presence callbacks
 * pair up (never twice, never for what was not announced), its counters
 * agree with what the callbacks announced and with the connections'
 * memberships, and a refused frame always carries a code from proto/ws.md.
 * At the end every connection is detached: nothing may stay subscribed,
 * present or allocated.
 */
#include "gw_frame.h"
#include "gw_hub.h"
#include "gw_msg.h"
#include "hr_proto.h"
#include "herald/hr_alloc.h"
#include "herald/hr_core.h"
#include "herald/hr_json.h"
#include "herald/hr_log.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NCONNS 4
#define MAX_ROOMS 8
#define MAX_NAMES 512

/* Announced names: channels subscribed, (room, user) pairs present. */
typedef struct {
    char *names[MAX_NAMES]; /* owned */
    size_t n;
} names_t;

typedef struct {
    gw_hub_t *hub; /* owned */
    gw_conn_t conns[NCONNS];
    int attached[NCONNS];
    names_t channels, present;
    size_t seen; /* check_world's count */
} world_t;

static const char *const users[NCONNS] = {"alice", "alice", "bob", "carol"};

static long
names_find(const names_t *s, const char *name)
{
    for (size_t i = 0; i < s->n; i++)
        if (strcmp(s->names[i], name) == 0)
            return (long)i;
    return -1;
}

static void
names_add(names_t *s, const char *name)
{
    if (names_find(s, name) >= 0 || s->n == MAX_NAMES)
        abort(); /* announced twice */
    s->names[s->n++] = hr_strdup(name);
}

static void
names_del(names_t *s, const char *name)
{
    long i = names_find(s, name);
    if (i < 0)
        abort(); /* withdrawn without being announced */
    hr_free(s->names[i]);
    s->names[i] = s->names[--s->n];
}

static void
on_subscribe(void *ud, const char *ch, size_t len)
{
    if (strlen(ch) != len)
        abort();
    names_add(&((world_t *)ud)->channels, ch);
}

static void
on_unsubscribe(void *ud, const char *ch, size_t len)
{
    if (strlen(ch) != len)
        abort();
    names_del(&((world_t *)ud)->channels, ch);
}

static void
on_presence(void *ud, const char *room, const char *user, int joined)
{
    char key[GW_ROOM_MAX + 64];
    snprintf(key, sizeof(key), "%s\n%s", room, user);
    if (joined)
        names_add(&((world_t *)ud)->present, key);
    else
        names_del(&((world_t *)ud)->present, key);
}

static void
on_wake(gw_conn_t *c)
{
    (void)c;
}

static const gw_conn_ops_t ops = {.wake = on_wake};

static void
drain(gw_conn_t *c)
{
    gw_msg_t *m;
    while ((m = gw_conn_pop(c)) != NULL)
        gw_msg_release(m);
}

static void
conn_open(world_t *w, int i)
{
    gw_conn_init(w->hub, &w->conns[i], &ops);
    gw_hub_attach(w->hub, &w->conns[i], users[i]);
    w->attached[i] = 1;
}

static void
conn_close(world_t *w, int i)
{
    gw_hub_detach(w->hub, &w->conns[i]); /* drops the queue too */
    w->attached[i] = 0;
}

/* gw_server.c's gw_send_error, onto the hub's queue. */
static void
send_error(world_t *w, gw_conn_t *c, const char *code, const char *why, const cJSON *ref)
{
    static const char *const codes[] = {"invalid_json", "invalid_field", "missing_field",
                                        "unknown_type", "invalid_room",  "too_many_rooms",
                                        "not_member",   "json_too_deep"};
    int known = 0;
    for (size_t i = 0; i < sizeof(codes) / sizeof(codes[0]); i++)
        known |= code != NULL && strcmp(code, codes[i]) == 0;
    if (!known || why == NULL || why[0] == '\0')
        abort();
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "type", "error");
    cJSON_AddStringToObject(o, "code", code);
    cJSON_AddStringToObject(o, "message", why);
    if (ref != NULL)
        cJSON_AddItemToObject(o, "ref", cJSON_Duplicate(ref, 1));
    gw_msg_t *m = gw_msg_from_json(o);
    cJSON_Delete(o);
    gw_conn_send(w->hub, c, m);
    gw_msg_release(m);
}

static void
send_text(world_t *w, gw_conn_t *c, const char *text)
{
    gw_msg_t *m = gw_msg_create(text, strlen(text));
    gw_conn_send(w->hub, c, m);
    gw_msg_release(m);
}

/* What gw_server.c does with one client frame, minus rate limits and Redis. */
static void
handle(world_t *w, gw_conn_t *c, const char *buf, size_t len)
{
    gw_frame_t f;
    int rc = gw_frame_parse(buf, len, 32, &f);
    if (rc != 0) {
        if (f.ref != NULL)
            abort(); /* a refused ref is not echoed */
        send_error(w, c, f.code, f.why, NULL);
    } else if (gw_frame_check(&f) != 0) {
        send_error(w, c, f.code, f.why, f.ref);
    } else if (f.kind == GW_FRAME_PING) {
        send_text(w, c, "{\"type\":\"pong\"}");
    } else if (f.kind == GW_FRAME_REFRESH) {
        /* The token check is hr_token_verify's (fuzz_token): here only the frame's shape. */
        if (f.token == NULL)
            abort();
        send_text(w, c, "{\"type\":\"error\",\"code\":\"unauthorized\"}");
    } else {
        /* An accepted room frame names a valid room; publish carries 1-4096 bytes. */
        if (f.room == NULL || !gw_room_name_valid(f.room))
            abort();
        if (f.kind == GW_FRAME_PUBLISH &&
            (f.message == NULL || f.message[0] == '\0' || strlen(f.message) > HR_MESSAGE_MAX))
            abort();
        if (f.kind == GW_FRAME_PRESENCE && f.cursor != NULL && !gw_frame_cursor_valid(f.cursor))
            abort();
        int was = gw_conn_in_room(c, f.room);
        if (f.kind == GW_FRAME_JOIN) {
            int jr = gw_hub_join(w->hub, c, f.room);
            if (jr == HR_DECLINED) {
                if (was || c->nrooms != MAX_ROOMS)
                    abort();
                send_error(w, c, "too_many_rooms", "this socket is in too many rooms", f.ref);
            } else if (jr != (was ? 1 : 0) || !gw_conn_in_room(c, f.room)) {
                abort();
            } else {
                send_text(w, c, "{\"type\":\"joined\"}");
            }
        } else if (f.kind == GW_FRAME_LEAVE) {
            int lr = gw_hub_leave(w->hub, c, f.room);
            if ((lr == 0) != was || gw_conn_in_room(c, f.room))
                abort();
            if (lr != 0)
                send_error(w, c, "not_member", "not a member of this room", f.ref);
            else
                send_text(w, c, "{\"type\":\"left\"}");
        } else if (f.kind == GW_FRAME_PUBLISH) {
            if (!was) {
                send_error(w, c, "not_member", "join the room before publishing to it", f.ref);
            } else {
                /* What the room script PUBLISHes comes back on the room's channel. */
                char ch[GW_ROOM_MAX + 32];
                size_t chlen = hr_proto_room_channel(ch, sizeof(ch), f.room);
                if (names_find(&w->channels, ch) < 0)
                    abort(); /* a member's room must be subscribed */
                size_t n = gw_hub_deliver(w->hub, ch, chlen, f.message, strlen(f.message));
                if (n > gw_hub_room_size(w->hub, f.room))
                    abort();
            }
        }
    }
    gw_frame_clear(&f);
}

static void
count_channel(const char *ch, size_t len, void *ud)
{
    world_t *w = ud;
    if (strlen(ch) != len || names_find(&w->channels, ch) < 0)
        abort(); /* re-subscribing after a reconnect would ask for what was never announced */
    w->seen++;
}

static void
count_presence(const char *room, const char *user, void *ud)
{
    world_t *w = ud;
    char key[GW_ROOM_MAX + 64];
    snprintf(key, sizeof(key), "%s\n%s", room, user);
    if (names_find(&w->present, key) < 0)
        abort(); /* the presence refresh would renew what was never joined */
    w->seen++;
}

/*
 * The hub's counters and iterators (what gw_server.c re-subscribes and
 * refreshes presence from) against what its callbacks announced and what
 * the connections hold.
 */
static void
check_world(world_t *w)
{
    gw_hub_stats_t st = gw_hub_stats(w->hub);
    uint64_t conns = 0, memberships = 0;
    for (int i = 0; i < NCONNS; i++) {
        if (!w->attached[i])
            continue;
        conns++;
        memberships += w->conns[i].nrooms;
        if (w->conns[i].nrooms > MAX_ROOMS)
            abort();
    }
    if (st.conns != conns || st.memberships != memberships || st.users + st.rooms != w->channels.n)
        abort();
    w->seen = 0;
    gw_hub_foreach_channel(w->hub, count_channel, w);
    if (w->seen != w->channels.n)
        abort();
    w->seen = 0;
    gw_hub_foreach_presence(w->hub, count_presence, w);
    if (w->seen != w->present.n)
        abort();
    for (int i = 0; i < NCONNS; i++)
        if (w->attached[i] && gw_hub_conn_get(w->hub, w->conns[i].id) != &w->conns[i])
            abort();
}

int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc, (void)argv;
    hr_log_init("fuzz", HR_LOG_ERROR); /* a slow consumer's warning per input is noise */
    return 0;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    world_t w;
    memset(&w, 0, sizeof(w));
    gw_hub_opts_t o = {.subscribe = on_subscribe,
                       .unsubscribe = on_unsubscribe,
                       .presence = on_presence,
                       .ud = &w,
                       .max_rooms = MAX_ROOMS,
                       .queue_max_frames = 16,
                       .queue_max_bytes = 4096};
    w.hub = gw_hub_create(&o);
    for (int i = 0; i < NCONNS; i++)
        conn_open(&w, i);
    check_world(&w);

    const uint8_t *p = data, *end = data + size;
    while (p < end) {
        const uint8_t *nl = memchr(p, '\n', (size_t)(end - p));
        const uint8_t *stop = nl != NULL ? nl : end;
        if (stop > p) {
            int i = p[0] & 3;
            gw_conn_t *c = &w.conns[i];
            /* The server would have copied the frame out of lws's buffer: so do we. */
            size_t len = (size_t)(stop - p - 1);
            char *frame = hr_malloc(len + 1);
            memcpy(frame, p + 1, len);
            if (c->close_code == 0)
                handle(&w, c, frame, len);
            hr_free(frame);
            if (p[0] & 4)
                drain(c);
            /* A socket the hub decided to close (slow consumer) is gone, as after a close. */
            if ((p[0] & 8) || c->close_code != 0) {
                conn_close(&w, i);
                conn_open(&w, i);
            }
            check_world(&w);
        }
        p = stop + (nl != NULL);
    }

    for (int i = 0; i < NCONNS; i++)
        conn_close(&w, i);
    if (w.channels.n != 0 || w.present.n != 0)
        abort(); /* the last socket gone, nothing may stay subscribed or present */
    gw_hub_destroy(w.hub);
    return 0;
}
