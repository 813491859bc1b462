#include "gw_listen.h"
#include "herald/hr_alloc.h"
#include "herald/hr_core.h"
#include "herald/hr_log.h"
#include "herald/hr_time.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define GW_ACCEPT_BATCH 256
#define GW_ACCEPT_PAUSE_MS 250
#define GW_ACCEPT_LOG_MS 10000

struct gw_listen_s {
    int fd;            /* owned */
    uv_poll_t *poll;   /* owned (closed through uv) */
    uv_timer_t *pause; /* owned (closed through uv): accepting resumes when it fires */
    gw_listen_fn fn;
    void *ud;           /* borrowed */
    uint64_t logged_ms; /* when accept_paused was last logged */
    uint64_t pauses;    /* pauses since then */
};

static void gw_listen_ready(uv_poll_t *h, int status, int events);

static void
gw_listen_resume(uv_timer_t *t)
{
    gw_listen_t *l = t->data;
    uv_poll_start(l->poll, UV_READABLE, gw_listen_ready);
}

/*
 * Out of descriptors (or kernel memory): the pending connection stays in the
 * backlog and the listen socket stays readable, so retrying at once would
 * spin. Accepting pauses for GW_ACCEPT_PAUSE_MS instead; the waiting clients
 * are served once sockets close. Logged at most once per GW_ACCEPT_LOG_MS.
 */
static void
gw_listen_pause(gw_listen_t *l, int err)
{
    uv_poll_stop(l->poll);
    uv_timer_start(l->pause, gw_listen_resume, GW_ACCEPT_PAUSE_MS, 0);
    l->pauses++;
    uint64_t now = hr_mono_ms();
    if (l->logged_ms == 0 || now - l->logged_ms >= GW_ACCEPT_LOG_MS) {
        hr_log_warn("accept_paused", "error=\"%s\" pause_ms=%d pauses=%llu", strerror(err),
                    GW_ACCEPT_PAUSE_MS, (unsigned long long)l->pauses);
        l->logged_ms = now;
        l->pauses = 0;
    }
}

static void
gw_listen_ready(uv_poll_t *h, int status, int events)
{
    HR_UNUSED(events);
    gw_listen_t *l = h->data;
    if (status != 0)
        return;
    /* A bounded batch per wakeup keeps one accept storm from starving the loop. */
    for (int i = 0; i < GW_ACCEPT_BATCH; i++) {
        int fd = accept4(l->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM)
                gw_listen_pause(l, errno);
            else if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR &&
                     errno != ECONNABORTED)
                hr_log_warn("accept_failed", "error=\"%s\"", strerror(errno));
            return;
        }
        if (l->fn(l->ud, fd) != 0)
            close(fd);
    }
}

gw_listen_t *
gw_listen_create(uv_loop_t *loop, const char *host, int port, int reuseport, int *bound, char *err,
                 size_t errlen)
{
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    if (inet_pton(AF_INET, host, &sa.sin_addr) != 1) {
        snprintf(err, errlen, "gateway.host must be an IPv4 address, got \"%s\"", host);
        return NULL;
    }
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        snprintf(err, errlen, "socket: %s", strerror(errno));
        return NULL;
    }
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (reuseport && setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) != 0) {
        snprintf(err, errlen, "SO_REUSEPORT: %s", strerror(errno));
        close(fd);
        return NULL;
    }
    if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0 || listen(fd, 4096) != 0) {
        snprintf(err, errlen, "cannot listen on %s:%d: %s", host, port, strerror(errno));
        close(fd);
        return NULL;
    }
    socklen_t sl = sizeof(sa);
    getsockname(fd, (struct sockaddr *)&sa, &sl);
    *bound = ntohs(sa.sin_port);

    gw_listen_t *l = hr_calloc(1, sizeof(*l));
    l->fd = fd;
    l->poll = hr_malloc(sizeof(uv_poll_t));
    uv_poll_init(loop, l->poll, fd);
    l->poll->data = l;
    l->pause = hr_malloc(sizeof(uv_timer_t));
    uv_timer_init(loop, l->pause);
    l->pause->data = l;
    return l;
}

void
gw_listen_start(gw_listen_t *l, gw_listen_fn fn, void *ud)
{
    l->fn = fn;
    l->ud = ud;
    uv_poll_start(l->poll, UV_READABLE, gw_listen_ready);
}

static void
gw_listen_handle_closed(uv_handle_t *h)
{
    hr_free(h);
}

void
gw_listen_destroy(gw_listen_t *l)
{
    if (l == NULL)
        return;
    uv_timer_stop(l->pause);
    uv_close((uv_handle_t *)l->pause, gw_listen_handle_closed);
    uv_poll_stop(l->poll);
    uv_close((uv_handle_t *)l->poll, gw_listen_handle_closed);
    close(l->fd);
    hr_free(l);
}
