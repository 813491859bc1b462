/* herald-history: parse args → load config → loop → server → run → tear down. */
#include "hist_server.h"
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
    hist_server_drain(arg);
}

int
main(int argc, char **argv)
{
    const char *path;
    int rc = hr_config_args(argc, argv, "history", &path);
    if (rc != 0)
        return rc;
    hist_config_t cfg = {0};
    char err[512];
    if (hr_config_start("history", &cfg, hist_config_fields, hist_config_nfields, path,
                        offsetof(hist_config_t, log_level)) != 0)
        return 1;
    cfg.config_path = path;

    struct event_base *base = event_base_new();
    hist_server_t *srv = hist_server_create(base, &cfg, err, sizeof(err));
    if (srv == NULL) {
        hr_log_error("start_failed", "error=\"%s\"", err);
        event_base_free(base);
        hr_config_free(&cfg, hist_config_fields, hist_config_nfields);
        return 1;
    }
    struct event *sigterm = evsignal_new(base, SIGTERM, on_signal, srv);
    struct event *sigint = evsignal_new(base, SIGINT, on_signal, srv);
    evsignal_add(sigterm, NULL);
    evsignal_add(sigint, NULL);
    hr_log_info("listening", "addr=%s:%d", cfg.host, hist_server_port(srv));

    event_base_dispatch(base);

    hr_log_info("stopped", "%s", "");
    event_free(sigterm);
    event_free(sigint);
    hist_server_destroy(srv);
    event_base_free(base);
    hr_config_free(&cfg, hist_config_fields, hist_config_nfields);
    return 0;
}
