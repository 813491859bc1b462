/* herald-ingest: parse args → load config → loop → server → run → tear down. */
#include "ing_server.h"
#include "herald/hr_config.h"
#include "herald/hr_json.h"
#include "herald/hr_log.h"

#include <event2/event.h>
#include <signal.h>
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
    const char *path = NULL;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--config") == 0 && i + 1 < argc) {
            path = argv[++i];
        } else {
            fprintf(stderr,
                    "usage: %s [--config FILE]\n"
                    "every setting can be overridden by HERALD_<KEY>, "
                    "e.g. HERALD_INGEST_PORT\n",
                    argv[0]);
            return 2;
        }
    }

    ing_config_t cfg = {0};
    char err[512];
    hr_log_level_t level = HR_LOG_INFO;
    hr_log_init("ingest", level);
    if (hr_config_load(&cfg, ing_config_fields, ing_config_nfields, path, err, sizeof(err)) != 0) {
        hr_log_error("config_invalid", "error=\"%s\"", err);
        return 1;
    }
    if (hr_log_level_parse(cfg.log_level, &level) != 0) {
        hr_log_error("config_invalid", "error=\"log.level must be debug|info|warn|error\"");
        return 1;
    }
    hr_log_init("ingest", level);
    hr_json_init();
    signal(SIGPIPE, SIG_IGN);

    struct event_base *base = event_base_new();
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
    hr_log_info("listening", "addr=%s:%d", cfg.host, ing_server_port(srv));

    event_base_dispatch(base);

    hr_log_info("stopped", "%s", "");
    event_free(sigterm);
    event_free(sigint);
    ing_server_destroy(srv);
    event_base_free(base);
    hr_config_free(&cfg, ing_config_fields, ing_config_nfields);
    return 0;
}
