/*
 * gw_access's disconnect orders against a hub of fake sessions: the real
 * gw_revoke mirror (fed orders as herald:control would), gw_revoke_close and
 * the error frame, without lws sockets or Redis.
 *
 * How many sockets an order looks at is counted through the linker: this
 * test is linked with -Wl,--wrap=gw_conn_user_id, so every call gw_access.c
 * makes to it (one per socket it visits) goes through the counter below.
 * The hub's own calls stay direct (a definition in the same object is not
 * wrapped).
 */
#include "hr_test.h"

#include "gw_session.h"
#include "hr_proto.h"
#include "herald/hr_alloc.h"
#include "herald/hr_core.h"

#include <stdio.h>
#include <string.h>

const char *__real_gw_conn_user_id(const gw_conn_t *c);
const char *__wrap_gw_conn_user_id(const gw_conn_t *c);

static size_t user_id_calls;

const char *
__wrap_gw_conn_user_id(const gw_conn_t *c)
{
    user_id_calls++;
    return __real_gw_conn_user_id(c);
}

static void
fake_wake(gw_conn_t *c)
{
    HR_UNUSED(c);
}

static const gw_conn_ops_t fake_ops = {.wake = fake_wake};

static void
no_status(void *ud, gw_status_t *st)
{
    HR_UNUSED(ud);
    HR_UNUSED(st);
}

typedef struct {
    gw_server_t s;
    gw_session_t *ss; /* owned array */
    size_t n;
} fixture_t;

/* A server with just what gw_revoke_close uses: hub, mirror, metrics. */
static void
fixture_init(fixture_t *f, size_t n)
{
    memset(f, 0, sizeof(*f));
    gw_hub_opts_t o = {0};
    f->s.hub = gw_hub_create(&o);
    f->s.metrics = gw_metrics_create(no_status, NULL);
    f->s.revoke = gw_revoke_create(NULL, 3600, gw_revoke_close, &f->s);
    f->ss = hr_calloc(n, sizeof(*f->ss));
    f->n = n;
}

/* Session i: a socket of user with a token issued at iat. */
static gw_session_t *
fixture_open(fixture_t *f, size_t i, const char *user, int64_t iat)
{
    gw_session_t *ss = &f->ss[i];
    gw_conn_init(f->s.hub, &ss->conn, &fake_ops);
    ss->id.has_token = 1;
    snprintf(ss->id.claims.sub, sizeof(ss->id.claims.sub), "%s", user);
    ss->id.claims.iat = iat;
    ss->id.claims.has_iat = 1;
    gw_hub_attach(f->s.hub, &ss->conn, user);
    return ss;
}

static void
fixture_free(fixture_t *f)
{
    for (size_t i = 0; i < f->n; i++)
        if (gw_conn_user_id(&f->ss[i].conn) != NULL)
            gw_hub_detach(f->s.hub, &f->ss[i].conn);
    hr_free(f->ss);
    gw_revoke_destroy(f->s.revoke);
    gw_metrics_destroy(f->s.metrics);
    gw_hub_destroy(f->s.hub);
}

/* A disconnect order as it arrives on herald:control (issued_before < 0: null). */
static void
order(fixture_t *f, const char *user, long long issued_before)
{
    char buf[256];
    if (issued_before < 0)
        snprintf(buf, sizeof(buf),
                 "{\"type\":\"disconnect\",\"user_id\":\"%s\",\"issued_before\":null}", user);
    else
        snprintf(buf, sizeof(buf),
                 "{\"type\":\"disconnect\",\"user_id\":\"%s\",\"issued_before\":%lld}", user,
                 issued_before);
    gw_revoke_message(f->s.revoke, buf, strlen(buf));
}

/* Whether ss was closed as revoked: its one frame the revoked error, close 4003. */
static int
closed_revoked(gw_session_t *ss)
{
    if (ss->conn.close_code != HR_CLOSE_REVOKED || ss->conn.qlen != 1)
        return 0;
    gw_msg_t *m = gw_conn_pop(&ss->conn);
    int ok = strcmp((const char *)gw_msg_payload(m),
                    "{\"type\":\"error\",\"code\":\"revoked\",\"message\":\"this session was "
                    "revoked\"}") == 0;
    gw_msg_release(m);
    return ok;
}

enum { CROWD = 3000, T = 1000 };

HR_TEST(disconnect_order_visits_only_the_users_sockets)
{
    fixture_t f;
    fixture_init(&f, CROWD + 3);
    char name[32];
    for (size_t i = 0; i < CROWD; i++) {
        snprintf(name, sizeof(name), "u%zu", i / 3); /* three sockets each */
        fixture_open(&f, i, name, T - 10);
    }
    gw_session_t *d[3];
    for (size_t i = 0; i < 3; i++)
        d[i] = fixture_open(&f, CROWD + i, "dave", T - 10);

    user_id_calls = 0;
    order(&f, "dave", -1);
    HR_CHECK_EQ_UINT(user_id_calls, 3); /* was CROWD + 3: a walk over every socket */
    for (size_t i = 0; i < 3; i++)
        HR_CHECK(closed_revoked(d[i]));
    for (size_t i = 0; i < CROWD; i++)
        if (!HR_CHECK_EQ_UINT(f.ss[i].conn.close_code, 0) ||
            !HR_CHECK_EQ_UINT(f.ss[i].conn.qlen, 0))
            break;
    HR_CHECK_EQ_UINT(f.s.metrics->revoked_closes->value, 3);

    /* A user with no socket here: nothing visited. */
    user_id_calls = 0;
    order(&f, "nobody", -1);
    HR_CHECK_EQ_UINT(user_id_calls, 0);
    fixture_free(&f);
}

HR_TEST(cutoff_order_closes_only_older_tokens_of_the_user)
{
    fixture_t f;
    fixture_init(&f, CROWD + 3);
    char name[32];
    for (size_t i = 0; i < CROWD; i++) {
        snprintf(name, sizeof(name), "u%zu", i);
        fixture_open(&f, i, name, T - 10); /* older than the cut-off, but other users */
    }
    gw_session_t *old = fixture_open(&f, CROWD, "rita", T - 1);
    gw_session_t *same = fixture_open(&f, CROWD + 1, "rita", T); /* not before T: stays */
    gw_session_t *newer = fixture_open(&f, CROWD + 2, "rita", T + 5);

    user_id_calls = 0;
    order(&f, "rita", T);
    HR_CHECK_EQ_UINT(user_id_calls, 3);
    HR_CHECK(closed_revoked(old));
    HR_CHECK_EQ_UINT(same->conn.close_code, 0);
    HR_CHECK_EQ_UINT(newer->conn.close_code, 0);
    HR_CHECK_EQ_INT(gw_revoke_cutoff(f.s.revoke, "rita"), T);
    HR_CHECK_EQ_UINT(f.ss[0].conn.close_code, 0);

    /* A second order skips the socket already closing (no second frame). */
    order(&f, "rita", T + 10);
    HR_CHECK_EQ_UINT(old->conn.qlen, 0);
    HR_CHECK(closed_revoked(same));
    HR_CHECK(closed_revoked(newer));
    HR_CHECK_EQ_UINT(f.s.metrics->revoked_closes->value, 3);
    fixture_free(&f);
}

HR_TEST(sync_checks_every_socket_against_the_mirror)
{
    fixture_t f;
    fixture_init(&f, 6);
    order(&f, "kim", T); /* the cut-offs a sync would have read */
    order(&f, "lee", T);
    gw_session_t *k_old = fixture_open(&f, 0, "kim", T - 1);
    gw_session_t *k_new = fixture_open(&f, 1, "kim", T + 1);
    gw_session_t *l_old = fixture_open(&f, 2, "lee", T - 30);
    gw_session_t *m_old = fixture_open(&f, 3, "max", T - 30); /* no cut-off */
    gw_session_t *l_old2 = fixture_open(&f, 4, "lee", T - 2);

    user_id_calls = 0;
    gw_revoke_close(&f.s, NULL, 0, 0);
    HR_CHECK_EQ_UINT(user_id_calls, 5);
    HR_CHECK(closed_revoked(k_old));
    HR_CHECK(closed_revoked(l_old));
    HR_CHECK(closed_revoked(l_old2));
    HR_CHECK_EQ_UINT(k_new->conn.close_code, 0);
    HR_CHECK_EQ_UINT(m_old->conn.close_code, 0);
    fixture_free(&f);
}

HR_TEST_MAIN()
