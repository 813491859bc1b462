/* herald-worker: parse args → load config → [migrate and exit] → worker → run → tear down. */
#include "wrk_worker.h"
#include "herald/hr_config.h"
#include "herald/hr_json.h"
#include "herald/hr_log.h"

#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Set by SIGTERM/SIGINT; the worker polls it between steps. */
static volatile sig_atomic_t stop_requested;

static void
on_signal(int sig)
{
    (void)sig;
    stop_requested = 1;
}

static int
usage(const char *argv0)
{
    fprintf(stderr,
            "usage: %s [--migrate | --replay-dead-letter [--count N]] [--config FILE]\n"
            "  --migrate             apply pending migrations (worker.migrations_dir) and exit\n"
            "  --replay-dead-letter  move dead letters (all, or the N oldest) back to the\n"
            "                        streams they came from, then exit\n"
            "every setting can be overridden by HERALD_<KEY>, e.g. HERALD_POSTGRES_URL\n",
            argv0);
    return 2;
}

int
main(int argc, char **argv)
{
    const char *path = NULL;
    int migrate_only = 0, replay = 0;
    long replay_max = 0;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--config") == 0 && i + 1 < argc)
            path = argv[++i];
        else if (strcmp(argv[i], "--migrate") == 0)
            migrate_only = 1;
        else if (strcmp(argv[i], "--replay-dead-letter") == 0)
            replay = 1;
        else if (strcmp(argv[i], "--count") == 0 && i + 1 < argc)
            replay_max = strtol(argv[++i], NULL, 10);
        else
            return usage(argv[0]);
    }

    wrk_config_t cfg = {0};
    char err[512];
    if (hr_config_start("worker", &cfg, wrk_config_fields, wrk_config_nfields, path,
                        offsetof(wrk_config_t, log_level)) != 0)
        return 1;

    if (replay) {
        long n = 0;
        int rc = wrk_replay_dead_letter(&cfg, replay_max, &n, err, sizeof(err));
        if (rc != 0)
            hr_log_error("replay_failed", "replayed=%ld error=\"%s\"", n, err);
        else
            hr_log_info("replay_done", "replayed=%ld", n);
        hr_config_free(&cfg, wrk_config_fields, wrk_config_nfields);
        return rc == 0 ? 0 : 1;
    }
    if (migrate_only) {
        int applied = 0;
        int rc = wrk_migrate(&cfg, &applied, err, sizeof(err));
        if (rc != 0)
            hr_log_error("migrate_failed", "dir=%s error=\"%s\"", cfg.migrations_dir, err);
        else
            hr_log_info("migrated", "applied=%d dir=%s", applied, cfg.migrations_dir);
        hr_config_free(&cfg, wrk_config_fields, wrk_config_nfields);
        return rc == 0 ? 0 : 1;
    }

    /* No SA_RESTART: a blocked read returns to the loop, which checks the flag. */
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);

    wrk_worker_t *w = wrk_worker_create(&cfg, &stop_requested, err, sizeof(err));
    if (w == NULL) {
        hr_log_error("start_failed", "error=\"%s\"", err);
        hr_config_free(&cfg, wrk_config_fields, wrk_config_nfields);
        return 1;
    }
    int rc = wrk_worker_run(w);
    wrk_worker_destroy(w);
    hr_config_free(&cfg, wrk_config_fields, wrk_config_nfields);
    return rc == 0 ? 0 : 1;
}
