/*
 * The config loaders on arbitrary files: hr_config_load with a field table of
 * every type, and the auth section readers (hr_token_config_load,
 * hr_apikey_config_load) followed by building what they read.
 */
#include "herald/hr_alloc.h"
#include "herald/hr_apikey.h"
#include "herald/hr_config.h"
#include "herald/hr_json.h"
#include "herald/hr_token.h"

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef struct {
    char *url, *host, *level;
    int port, timeout_ms, reuseport;
} cfg_t;

static const hr_cfg_field_t fields[] = {
    {"redis.url", HR_CFG_STR, offsetof(cfg_t, url), "redis://127.0.0.1:6379", 0, 0},
    {"gateway.host", HR_CFG_STR, offsetof(cfg_t, host), NULL, 0, 0},
    {"log.level", HR_CFG_STR, offsetof(cfg_t, level), "info", 0, 0},
    {"gateway.port", HR_CFG_INT, offsetof(cfg_t, port), "8081", 0, 65535},
    {"redis.timeout_ms", HR_CFG_INT, offsetof(cfg_t, timeout_ms), "2000", 1, 600000},
    {"gateway.reuseport", HR_CFG_BOOL, offsetof(cfg_t, reuseport), "false", 0, 0},
};

static char path[64]; /* the harness's scratch file */

int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc, (void)argv;
    /* tmpfs when there is one: the loaders read a path, and a disk write per input is slow. */
    snprintf(path, sizeof(path), "%s/fuzz_config.%d.conf",
             access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp", (int)getpid());
    return 0;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* Key files named by the input are read: keep it off devices that block. */
    if (memmem(data, size, "/dev", 4) != NULL || memmem(data, size, "/proc", 5) != NULL ||
        memmem(data, size, "/sys", 4) != NULL)
        return 0;
    FILE *f = fopen(path, "wb");
    if (f == NULL)
        abort();
    fwrite(data, 1, size, f);
    fclose(f);
    char err[512];
    cfg_t c;
    memset(&c, 0, sizeof(c));
    /* Like hr_config_start: the strings set before a failure are the caller's to free. */
    hr_config_load(&c, fields, sizeof(fields) / sizeof(fields[0]), path, err, sizeof(err));
    hr_config_free(&c, fields, sizeof(fields) / sizeof(fields[0]));
    hr_token_config_t tc;
    if (hr_token_config_load(path, &tc, err, sizeof(err)) == 0) {
        hr_token_verifier_t *v = NULL;
        if (hr_token_verifier_create(&tc, &v, err, sizeof(err)) == 0)
            hr_token_verifier_destroy(v);
        hr_token_config_free(&tc);
    }
    hr_apikey_config_t *ac;
    size_t n;
    if (hr_apikey_config_load(path, &ac, &n, err, sizeof(err)) == 0) {
        hr_apikeys_t *ks = NULL;
        if (hr_apikeys_create(ac, n, &ks, err, sizeof(err)) == 0) {
            hr_apikey_result_t r;
            hr_apikeys_check(ks, "dev-ingest-key-change-me", 24, NULL, 0, "orders:1", 0, &r);
            hr_apikeys_destroy(ks);
        }
        hr_apikey_config_free(ac, n);
    }
    unlink(path);
    return 0;
}
