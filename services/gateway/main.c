/* herald-gateway: parse args → load config → loop → server → run → tear down. */
#include "gw_server.h"
#include "herald/hr_config.h"
#include "herald/hr_json.h"
#include "herald/hr_log.h"

#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>
#include <uv.h>

/* As many sockets as the hard limit allows: each client is one descriptor. */
static void
raise_nofile(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        if (setrlimit(RLIMIT_NOFILE, &rl) != 0)
            hr_log_warn("nofile_not_raised", "max=%llu", (unsigned long long)rl.rlim_max);
    }
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0)
        hr_log_info("nofile", "limit=%llu", (unsigned long long)rl.rlim_cur);
}

typedef struct {
    uv_signal_t term, intr;
    gw_server_t *srv; /* borrowed */
} signals_t;

static void
on_signal(uv_signal_t *h, int sig)
{
    signals_t *sg = h->data;
    hr_log_info("signal", "sig=%d", sig);
    /* Closed so they do not keep the loop alive; a second signal then kills. */
    uv_close((uv_handle_t *)&sg->term, NULL);
    uv_close((uv_handle_t *)&sg->intr, NULL);
    gw_server_drain(sg->srv);
}

int
main(int argc, char **argv)
{
    const char *path;
    int rc = hr_config_args(argc, argv, "gateway", &path);
    if (rc != 0)
        return rc;
    gw_config_t cfg = {0};
    char err[512];
    if (hr_config_start("gateway", &cfg, gw_config_fields, gw_config_nfields, path,
                        offsetof(gw_config_t, log_level)) != 0)
        return 1;
    cfg.config_path = path;
    raise_nofile();

    uv_loop_t loop;
    uv_loop_init(&loop);
    gw_server_t *srv = gw_server_create(&loop, &cfg, err, sizeof(err));
    if (srv == NULL) {
        hr_log_error("start_failed", "error=\"%s\"", err);
        uv_loop_close(&loop);
        hr_config_free(&cfg, gw_config_fields, gw_config_nfields);
        return 1;
    }
    signals_t sg = {.srv = srv};
    uv_signal_init(&loop, &sg.term);
    uv_signal_init(&loop, &sg.intr);
    sg.term.data = sg.intr.data = &sg;
    uv_signal_start(&sg.term, on_signal, SIGTERM);
    uv_signal_start(&sg.intr, on_signal, SIGINT);

    /* Returns once a drain has closed every handle (see gw_server_drain). */
    uv_run(&loop, UV_RUN_DEFAULT);

    gw_server_destroy(srv);
    uv_run(&loop, UV_RUN_DEFAULT);
    if (uv_loop_close(&loop) != 0)
        hr_log_warn("loop_busy", "%s", "handles left open at exit");
    hr_log_info("stopped", "%s", "");
    hr_config_free(&cfg, gw_config_fields, gw_config_nfields);
    return 0;
}
