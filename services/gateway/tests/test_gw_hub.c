/* gw_hub with fake connections: no libwebsockets, no Redis. */
#include "hr_test.h"

#include "gw_hub.h"
#include "hr_proto.h"
#include "herald/hr_alloc.h"
#include "herald/hr_core.h"

#include <stdio.h>
#include <string.h>

/* A fake transport: records wakes; the test pops frames itself. */
typedef struct {
    gw_conn_t conn;
    int wakes;
} fake_conn_t;

static void
fake_wake(gw_conn_t *c)
{
    ((fake_conn_t *)c)->wakes++;
}

static const gw_conn_ops_t fake_ops = {.wake = fake_wake};

/* Records subscribe/unsubscribe and presence calls as text. */
typedef struct {
    char log[4096];
} recorder_t;

static void
rec_sub(void *ud, const char *ch, size_t len)
{
    recorder_t *r = ud;
    size_t n = strlen(r->log);
    snprintf(r->log + n, sizeof(r->log) - n, "+%.*s;", (int)len, ch);
}

static void
rec_unsub(void *ud, const char *ch, size_t len)
{
    recorder_t *r = ud;
    size_t n = strlen(r->log);
    snprintf(r->log + n, sizeof(r->log) - n, "-%.*s;", (int)len, ch);
}

static void
rec_presence(void *ud, const char *room, const char *user, int joined)
{
    recorder_t *r = ud;
    size_t n = strlen(r->log);
    snprintf(r->log + n, sizeof(r->log) - n, "%s%s@%s;", joined ? "J" : "L", user, room);
}

static gw_hub_t *
new_hub(recorder_t *rec, uint32_t max_frames, uint32_t max_bytes)
{
    memset(rec, 0, sizeof(*rec));
    gw_hub_opts_t o = {.subscribe = rec_sub,
                       .unsubscribe = rec_unsub,
                       .presence = rec_presence,
                       .ud = rec,
                       .max_rooms = 2,
                       .queue_max_frames = max_frames,
                       .queue_max_bytes = max_bytes};
    return gw_hub_create(&o);
}

static size_t
drain(gw_conn_t *c)
{
    size_t n = 0;
    gw_msg_t *m;
    while ((m = gw_conn_pop(c)) != NULL) {
        gw_msg_release(m);
        n++;
    }
    return n;
}

HR_TEST(user_with_several_sockets_is_subscribed_once_and_gets_every_frame)
{
    recorder_t rec;
    gw_hub_t *h = new_hub(&rec, 16, 1 << 20);
    fake_conn_t a1, a2, b;
    gw_conn_init(h, &a1.conn, &fake_ops);
    gw_conn_init(h, &a2.conn, &fake_ops);
    gw_conn_init(h, &b.conn, &fake_ops);
    a1.wakes = a2.wakes = b.wakes = 0;
    gw_hub_attach(h, &a1.conn, "alice");
    gw_hub_attach(h, &a2.conn, "alice");
    gw_hub_attach(h, &b.conn, "bob");
    HR_CHECK_EQ_STR(rec.log, "+herald:user:alice;+herald:user:bob;");
    HR_CHECK(a1.conn.id != a2.conn.id);

    const char ch[] = "herald:user:alice";
    size_t n = gw_hub_deliver(h, ch, sizeof(ch) - 1, "{\"x\":1}", 7);
    HR_CHECK_EQ_UINT(n, 2);
    gw_msg_t *m1 = gw_conn_pop(&a1.conn), *m2 = gw_conn_pop(&a2.conn);
    HR_REQUIRE(m1 != NULL && m2 != NULL);
    /* One serialization shared by both sockets. */
    HR_CHECK(m1 == m2);
    HR_CHECK_EQ_STR((char *)gw_msg_payload(m1), "{\"x\":1}");
    gw_msg_release(m1);
    gw_msg_release(m2);
    HR_CHECK(gw_conn_pop(&b.conn) == NULL);
    HR_CHECK_EQ_INT(a1.wakes, 1);
    HR_CHECK_EQ_INT(b.wakes, 0);

    gw_hub_detach(h, &a1.conn);
    HR_CHECK(strstr(rec.log, "-herald:user:alice") == NULL);
    gw_hub_detach(h, &a2.conn);
    HR_CHECK(strstr(rec.log, "-herald:user:alice;") != NULL);
    HR_CHECK_EQ_UINT(gw_hub_deliver(h, ch, sizeof(ch) - 1, "{}", 2), 0);
    gw_hub_detach(h, &b.conn);
    HR_CHECK_EQ_UINT(gw_hub_stats(h).conns, 0);
    HR_CHECK_EQ_UINT(gw_hub_stats(h).users, 0);
    gw_hub_destroy(h);
}

HR_TEST(join_and_leave_subscribe_rooms_and_report_presence_per_user)
{
    recorder_t rec;
    gw_hub_t *h = new_hub(&rec, 16, 1 << 20);
    fake_conn_t a1, a2, b;
    gw_conn_init(h, &a1.conn, &fake_ops);
    gw_conn_init(h, &a2.conn, &fake_ops);
    gw_conn_init(h, &b.conn, &fake_ops);
    gw_hub_attach(h, &a1.conn, "alice");
    gw_hub_attach(h, &a2.conn, "alice");
    gw_hub_attach(h, &b.conn, "bob");
    rec.log[0] = '\0';

    HR_CHECK_EQ_INT(gw_hub_join(h, &a1.conn, "lobby"), 0);
    HR_CHECK_EQ_INT(gw_hub_join(h, &a1.conn, "lobby"), 1);
    HR_CHECK_EQ_INT(gw_hub_join(h, &a2.conn, "lobby"), 0);
    HR_CHECK_EQ_INT(gw_hub_join(h, &b.conn, "lobby"), 0);
    /* One subscription for the room, one presence event per user. */
    HR_CHECK_EQ_STR(rec.log, "+herald:room:lobby;Jalice@lobby;Jbob@lobby;");
    HR_CHECK_EQ_UINT(gw_hub_room_size(h, "lobby"), 3);
    HR_CHECK(gw_conn_in_room(&a2.conn, "lobby"));

    const char ch[] = "herald:room:lobby";
    HR_CHECK_EQ_UINT(gw_hub_deliver(h, ch, sizeof(ch) - 1, "m", 1), 3);
    drain(&a1.conn), drain(&a2.conn), drain(&b.conn);

    rec.log[0] = '\0';
    HR_CHECK_EQ_INT(gw_hub_leave(h, &a1.conn, "lobby"), 0);
    HR_CHECK_EQ_INT(gw_hub_leave(h, &a1.conn, "lobby"), HR_DECLINED);
    HR_CHECK_EQ_STR(rec.log, ""); /* alice still has a2 in the room */
    HR_CHECK_EQ_INT(gw_hub_leave(h, &a2.conn, "lobby"), 0);
    HR_CHECK_EQ_STR(rec.log, "Lalice@lobby;");
    HR_CHECK_EQ_UINT(gw_hub_deliver(h, ch, sizeof(ch) - 1, "m", 1), 1);
    drain(&b.conn);

    gw_hub_detach(h, &a1.conn);
    gw_hub_detach(h, &a2.conn);
    gw_hub_detach(h, &b.conn);
    gw_hub_destroy(h);
}

static void
list_name(const char *name, void *ud)
{
    recorder_t *r = ud;
    size_t n = strlen(r->log);
    snprintf(r->log + n, sizeof(r->log) - n, "%s;", name);
}

HR_TEST(rooms_and_their_local_users_are_walked_once_each)
{
    recorder_t rec;
    gw_hub_t *h = new_hub(&rec, 16, 1 << 20);
    fake_conn_t a1, a2, b;
    gw_conn_init(h, &a1.conn, &fake_ops);
    gw_conn_init(h, &a2.conn, &fake_ops);
    gw_conn_init(h, &b.conn, &fake_ops);
    gw_hub_attach(h, &a1.conn, "alice");
    gw_hub_attach(h, &a2.conn, "alice");
    gw_hub_attach(h, &b.conn, "bob");
    gw_hub_join(h, &a1.conn, "lobby");
    gw_hub_join(h, &a2.conn, "lobby");
    gw_hub_join(h, &b.conn, "quiet");

    recorder_t names = {{0}};
    gw_hub_foreach_room(h, list_name, &names);
    HR_CHECK(strcmp(names.log, "lobby;quiet;") == 0 || strcmp(names.log, "quiet;lobby;") == 0);
    names.log[0] = '\0';
    gw_hub_foreach_room_user(h, "lobby", list_name, &names);
    HR_CHECK_EQ_STR(names.log, "alice;"); /* two sockets, one user */
    names.log[0] = '\0';
    gw_hub_foreach_room_user(h, "nowhere", list_name, &names);
    HR_CHECK_EQ_STR(names.log, "");

    gw_hub_detach(h, &a1.conn);
    gw_hub_detach(h, &a2.conn);
    gw_hub_detach(h, &b.conn);
    gw_hub_destroy(h);
}

HR_TEST(disconnect_cleans_every_membership_and_unsubscribes)
{
    recorder_t rec;
    gw_hub_t *h = new_hub(&rec, 16, 1 << 20);
    fake_conn_t a;
    gw_conn_init(h, &a.conn, &fake_ops);
    gw_hub_attach(h, &a.conn, "alice");
    gw_hub_join(h, &a.conn, "r1");
    gw_hub_join(h, &a.conn, "r2");
    HR_CHECK_EQ_INT(gw_hub_join(h, &a.conn, "r3"), HR_DECLINED); /* max_rooms = 2 */
    const char ch[] = "herald:room:r1";
    gw_hub_deliver(h, ch, sizeof(ch) - 1, "queued", 6);
    rec.log[0] = '\0';
    gw_hub_detach(h, &a.conn);
    HR_CHECK(strstr(rec.log, "-herald:room:r1;") != NULL);
    HR_CHECK(strstr(rec.log, "-herald:room:r2;") != NULL);
    HR_CHECK(strstr(rec.log, "Lalice@r1;") != NULL);
    HR_CHECK(strstr(rec.log, "-herald:user:alice;") != NULL);
    gw_hub_stats_t st = gw_hub_stats(h);
    HR_CHECK_EQ_UINT(st.rooms, 0);
    HR_CHECK_EQ_UINT(st.memberships, 0);
    HR_CHECK(a.conn.q == NULL && a.conn.qlen == 0);
    HR_CHECK(gw_hub_conn_get(h, a.conn.id) == NULL);
    gw_hub_destroy(h);
}

HR_TEST(full_queue_closes_the_slow_socket_with_1008_and_others_keep_receiving)
{
    recorder_t rec;
    gw_hub_t *h = new_hub(&rec, 4, 1 << 20);
    fake_conn_t slow, fast;
    gw_conn_init(h, &slow.conn, &fake_ops);
    gw_conn_init(h, &fast.conn, &fake_ops);
    gw_hub_attach(h, &slow.conn, "u");
    gw_hub_attach(h, &fast.conn, "u");
    const char ch[] = "herald:user:u";
    size_t fast_got = 0;
    for (int i = 0; i < 10; i++) {
        gw_hub_deliver(h, ch, sizeof(ch) - 1, "frame", 5);
        fast_got += drain(&fast.conn);
    }
    HR_CHECK_EQ_UINT(fast_got, 10);
    HR_CHECK_EQ_INT(slow.conn.close_code, GW_CLOSE_POLICY);
    /* The backlog is dropped at once, not held until the close is written. */
    HR_CHECK_EQ_UINT(slow.conn.qlen, 0);
    HR_CHECK_EQ_UINT(gw_hub_stats(h).slow_killed, 1);
    /* A closing socket takes nothing more. */
    gw_msg_t *m = gw_msg_create("x", 1);
    HR_CHECK_EQ_INT(gw_conn_send(h, &slow.conn, m), HR_DECLINED);
    gw_msg_release(m);
    gw_hub_detach(h, &slow.conn);
    gw_hub_detach(h, &fast.conn);
    gw_hub_destroy(h);
}

HR_TEST(queue_byte_limit_counts_payload_bytes)
{
    recorder_t rec;
    gw_hub_t *h = new_hub(&rec, 1000, 100);
    fake_conn_t c;
    gw_conn_init(h, &c.conn, &fake_ops);
    gw_hub_attach(h, &c.conn, "u");
    char big[40];
    memset(big, 'a', sizeof(big));
    gw_msg_t *m = gw_msg_create(big, sizeof(big));
    HR_CHECK_EQ_INT(gw_conn_send(h, &c.conn, m), 0);
    HR_CHECK_EQ_INT(gw_conn_send(h, &c.conn, m), 0);
    HR_CHECK_EQ_UINT(c.conn.qbytes, 80);
    HR_CHECK_EQ_INT(gw_conn_send(h, &c.conn, m), HR_DECLINED);
    HR_CHECK_EQ_INT(c.conn.close_code, GW_CLOSE_POLICY);
    gw_msg_release(m);
    gw_hub_detach(h, &c.conn);
    gw_hub_destroy(h);
}

HR_TEST(sender_copy_replaces_the_shared_frame_for_one_connection)
{
    recorder_t rec;
    gw_hub_t *h = new_hub(&rec, 16, 1 << 20);
    fake_conn_t a, b;
    gw_conn_init(h, &a.conn, &fake_ops);
    gw_conn_init(h, &b.conn, &fake_ops);
    gw_hub_attach(h, &a.conn, "a");
    gw_hub_attach(h, &b.conn, "b");
    gw_hub_join(h, &a.conn, "r");
    gw_hub_join(h, &b.conn, "r");
    gw_msg_t *alt = gw_msg_create("with-ref", 8);
    const char ch[] = "herald:room:r";
    HR_CHECK_EQ_UINT(gw_hub_deliver_alt(h, ch, sizeof(ch) - 1, "plain", 5, a.conn.id, alt), 2);
    gw_msg_release(alt);
    gw_msg_t *ma = gw_conn_pop(&a.conn), *mb = gw_conn_pop(&b.conn);
    HR_REQUIRE(ma != NULL && mb != NULL);
    HR_CHECK_EQ_STR((char *)gw_msg_payload(ma), "with-ref");
    HR_CHECK_EQ_STR((char *)gw_msg_payload(mb), "plain");
    gw_msg_release(ma);
    gw_msg_release(mb);
    gw_hub_detach(h, &a.conn);
    gw_hub_detach(h, &b.conn);
    gw_hub_destroy(h);
}

/* Counts the connections fn is called on, and those of another user than want. */
typedef struct {
    const char *want;
    size_t visits, others;
} visit_count_t;

static void
count_visit(gw_conn_t *c, void *ud)
{
    visit_count_t *v = ud;
    v->visits++;
    if (strcmp(gw_conn_user_id(c), v->want) != 0)
        v->others++;
}

HR_TEST(foreach_user_conn_visits_only_that_users_connections)
{
    recorder_t rec;
    gw_hub_t *h = new_hub(&rec, 16, 1 << 20);
    enum { OTHERS = 2000 };
    fake_conn_t *crowd = hr_calloc(OTHERS, sizeof(*crowd));
    fake_conn_t mine[3];
    char name[32];
    for (size_t i = 0; i < OTHERS; i++) {
        gw_conn_init(h, &crowd[i].conn, &fake_ops);
        snprintf(name, sizeof(name), "user-%zu", i / 2); /* two sockets each */
        gw_hub_attach(h, &crowd[i].conn, name);
    }
    for (size_t i = 0; i < 3; i++) {
        gw_conn_init(h, &mine[i].conn, &fake_ops);
        gw_hub_attach(h, &mine[i].conn, "dave");
    }
    visit_count_t v = {"dave", 0, 0};
    HR_CHECK_EQ_UINT(gw_hub_foreach_user_conn(h, "dave", count_visit, &v), 3);
    HR_CHECK_EQ_UINT(v.visits, 3);
    HR_CHECK_EQ_UINT(v.others, 0);
    /* A user with no socket here costs nothing; a prefix of a name is another user. */
    visit_count_t none = {"nobody", 0, 0};
    HR_CHECK_EQ_UINT(gw_hub_foreach_user_conn(h, "nobody", count_visit, &none), 0);
    HR_CHECK_EQ_UINT(gw_hub_foreach_user_conn(h, "user-1", count_visit, &none), 2);
    HR_CHECK_EQ_UINT(none.visits, 2);
    HR_CHECK_EQ_UINT(gw_hub_foreach_user_conn(h, "user-", count_visit, &none), 0);
    /* The whole walk, for comparison, is every socket. */
    visit_count_t all = {"dave", 0, 0};
    gw_hub_foreach_conn(h, count_visit, &all);
    HR_CHECK_EQ_UINT(all.visits, OTHERS + 3);
    for (size_t i = 0; i < 3; i++)
        gw_hub_detach(h, &mine[i].conn);
    for (size_t i = 0; i < OTHERS; i++)
        gw_hub_detach(h, &crowd[i].conn);
    hr_free(crowd);
    gw_hub_destroy(h);
}

/* Allows the rooms of a "name;name;" list; records the rooms left the same way. */
typedef struct {
    const char *allowed;
    char left[256];
} leave_rec_t;

static int
room_in_list(const char *room, void *ud)
{
    leave_rec_t *lr = ud;
    char want[80];
    snprintf(want, sizeof(want), "%s;", room);
    return strstr(lr->allowed, want) != NULL;
}

static void
record_left(const char *room, void *ud)
{
    leave_rec_t *lr = ud;
    size_t n = strlen(lr->left);
    snprintf(lr->left + n, sizeof(lr->left) - n, "%s;", room);
}

HR_TEST(leave_unless_leaves_only_refused_rooms_as_a_leave_would)
{
    recorder_t rec;
    gw_hub_t *h = new_hub(&rec, 16, 1 << 20);
    fake_conn_t a, b;
    gw_conn_init(h, &a.conn, &fake_ops);
    gw_conn_init(h, &b.conn, &fake_ops);
    gw_hub_attach(h, &a.conn, "alice");
    gw_hub_attach(h, &b.conn, "bob");
    HR_CHECK_EQ_INT(gw_hub_join(h, &a.conn, "a"), 0);
    HR_CHECK_EQ_INT(gw_hub_join(h, &a.conn, "b"), 0);
    HR_CHECK_EQ_INT(gw_hub_join(h, &b.conn, "a"), 0);
    rec.log[0] = '\0';

    /* Everything still allowed: nothing happens. */
    leave_rec_t keep = {"a;b;", ""};
    HR_CHECK_EQ_UINT(gw_hub_leave_unless(h, &a.conn, room_in_list, record_left, &keep), 0);
    HR_CHECK_EQ_STR(keep.left, "");
    HR_CHECK_EQ_STR(rec.log, "");

    /* b refused: alice was its last member (presence, unsubscribe, room gone, name still valid). */
    leave_rec_t lr = {"a;", ""};
    HR_CHECK_EQ_UINT(gw_hub_leave_unless(h, &a.conn, room_in_list, record_left, &lr), 1);
    HR_CHECK_EQ_STR(lr.left, "b;");
    HR_CHECK_EQ_STR(rec.log, "Lalice@b;-herald:room:b;");
    HR_CHECK(!gw_conn_in_room(&a.conn, "b"));
    HR_CHECK(gw_conn_in_room(&a.conn, "a"));
    HR_CHECK_EQ_UINT(gw_hub_room_size(h, "b"), 0);
    HR_CHECK_EQ_UINT(gw_hub_room_size(h, "a"), 2);
    const char rb[] = "herald:room:b";
    HR_CHECK_EQ_UINT(gw_hub_deliver(h, rb, sizeof(rb) - 1, "{}", 2), 0);
    /* Now a refused too: bob stays, so the room and its channel stay. */
    rec.log[0] = '\0';
    leave_rec_t none = {"", ""};
    HR_CHECK_EQ_UINT(gw_hub_leave_unless(h, &a.conn, room_in_list, record_left, &none), 1);
    HR_CHECK_EQ_STR(none.left, "a;");
    HR_CHECK_EQ_STR(rec.log, "Lalice@a;");
    HR_CHECK_EQ_UINT(gw_hub_room_size(h, "a"), 1);
    HR_CHECK_EQ_UINT(gw_hub_stats(h).memberships, 1);
    /* A room of max_rooms is free again. */
    HR_CHECK_EQ_INT(gw_hub_join(h, &a.conn, "c"), 0);
    HR_CHECK_EQ_INT(gw_hub_join(h, &a.conn, "d"), 0);
    gw_hub_detach(h, &a.conn);
    gw_hub_detach(h, &b.conn);
    gw_hub_destroy(h);
}

HR_TEST(room_names_are_validated)
{
    HR_CHECK(gw_room_name_valid("lobby"));
    HR_CHECK(gw_room_name_valid("team-1.dev:ops@x_y"));
    HR_CHECK(!gw_room_name_valid(""));
    HR_CHECK(!gw_room_name_valid("has space"));
    HR_CHECK(!gw_room_name_valid("ünicode"));
    char longname[GW_ROOM_MAX + 2];
    memset(longname, 'r', sizeof(longname) - 1);
    longname[sizeof(longname) - 1] = '\0';
    HR_CHECK(!gw_room_name_valid(longname));
    longname[GW_ROOM_MAX] = '\0';
    HR_CHECK(gw_room_name_valid(longname));
}

HR_TEST_MAIN()
