/* herald-ingest: parse args → load config → loop → server → run → tear down. */
#include "ing_server.h"
#include "herald/hr_config.h"
#include "herald/hr_json.h"
#include "herald/hr_log.h"

#include <event2/event.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

static void
on_signal(evutil_socket_t sig, short what, void *arg)
{
    (void)what;
    hr_log_info("signal", "sig=%d", (int)sig);
    ing_server_drain(arg);
}

int
main(int argc, char **argv)
{
    const char *path;
    int rc = hr_config_args(argc, argv, "ingest", &path);
    if (rc != 0)
        return rc;
    ing_config_t cfg = {0};
    char err[512];
    if (hr_config_start("ingest", &cfg, ing_config_fields, ing_config_nfields, path,
                        offsetof(ing_config_t, log_level)) != 0)
        return 1;
    cfg.config_path = path; /* ingest's API keys are read from its auth section */

    /*
     * The changelist folds the read/write toggles hiredis makes in
     * one loop turn into one epoll_ctl per fd (or none when they cancel).
     */
    struct event_config *ec = event_config_new();
    event_config_set_flag(ec, EVENT_BASE_FLAG_EPOLL_USE_CHANGELIST);
    struct event_base *base = event_base_new_with_config(ec);
    event_config_free(ec);
    if (base == NULL) {
        hr_log_error("start_failed", "error=\"%s\"", "event_base_new_with_config failed");
        hr_config_free(&cfg, ing_config_fields, ing_config_nfields);
        return 1;
    }
    ing_server_t *srv = ing_server_create(base, &cfg, err, sizeof(err));
    if (srv == NULL) {
        hr_log_error("start_failed", "error=\"%s\"", err);
        event_base_free(base);
        hr_config_free(&cfg, ing_config_fields, ing_config_nfields);
        return 1;
    }
    struct event *sigterm = evsignal_new(base, SIGTERM, on_signal, srv);
    struct event *sigint = evsignal_new(base, SIGINT, on_signal, srv);
    evsignal_add(sigterm, NULL);
    evsignal_add(sigint, NULL);
    hr_log_info("listening", "addr=%s:%d reuseport=%d", cfg.host, ing_server_port(srv),
                cfg.reuseport);

    event_base_dispatch(base);

    hr_log_info("stopped", "%s", "");
    event_free(sigterm);
    event_free(sigint);
    ing_server_destroy(srv);
    event_base_free(base);
    hr_config_free(&cfg, ing_config_fields, ing_config_nfields);
    return 0;
}
