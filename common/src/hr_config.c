#include "herald/hr_config.h"
#include "herald/hr_alloc.h"
#include "herald/hr_core.h"
#include "herald/hr_json.h"
#include "herald/hr_log.h"

#include <ctype.h>
#include <errno.h>
#include <libconfig.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

void
hr_config_env_name(const char *key, char *buf, size_t cap)
{
    size_t n = strlen(HR_CFG_ENV_PREFIX);
    if (cap == 0)
        return;
    snprintf(buf, cap, "%s", HR_CFG_ENV_PREFIX);
    for (const char *p = key; *p && n + 1 < cap; p++)
        buf[n++] = (*p == '.' || *p == '-') ? '_' : (char)toupper((unsigned char)*p);
    buf[n < cap ? n : cap - 1] = '\0';
}

/* Parses text into the field; the single place values are checked. */
static int
hr_config_set(void *out, const hr_cfg_field_t *f, const char *text, const char *origin, char *err,
              size_t errlen)
{
    char *base = (char *)out + f->offset;

    switch (f->type) {
    case HR_CFG_STR: {
        char **slot = (char **)base;
        hr_free(*slot);
        *slot = hr_strdup(text);
        return 0;
    }
    case HR_CFG_INT: {
        if (text == NULL)
            text = "0";
        char *end;
        errno = 0;
        long v = strtol(text, &end, 10);
        if (errno != 0 || end == text || *end != '\0' || v < f->min || v > f->max) {
            snprintf(err, errlen, "%s: %s must be an integer in [%ld, %ld], got \"%s\"", origin,
                     f->key, f->min, f->max, text);
            return HR_ERR;
        }
        *(int *)base = (int)v;
        return 0;
    }
    case HR_CFG_BOOL: {
        if (text == NULL)
            text = "false";
        if (!strcasecmp(text, "true") || !strcmp(text, "1") || !strcasecmp(text, "yes") ||
            !strcasecmp(text, "on")) {
            *(int *)base = 1;
        } else if (!strcasecmp(text, "false") || !strcmp(text, "0") || !strcasecmp(text, "no") ||
                   !strcasecmp(text, "off")) {
            *(int *)base = 0;
        } else {
            snprintf(err, errlen, "%s: %s must be true or false, got \"%s\"", origin, f->key, text);
            return HR_ERR;
        }
        return 0;
    }
    }
    snprintf(err, errlen, "%s: unknown type", f->key);
    return HR_ERR;
}

/* Reads one field from the parsed file, if present, as text for hr_config_set. */
static int
hr_config_from_file(void *out, const hr_cfg_field_t *f, config_t *cfg, const char *path, char *err,
                    size_t errlen)
{
    config_setting_t *s = config_lookup(cfg, f->key);
    if (s == NULL)
        return 0;

    char num[32];
    const char *text = NULL;
    switch (config_setting_type(s)) {
    case CONFIG_TYPE_STRING:
        text = config_setting_get_string(s);
        break;
    case CONFIG_TYPE_INT:
        snprintf(num, sizeof(num), "%d", config_setting_get_int(s));
        text = num;
        break;
    case CONFIG_TYPE_INT64:
        snprintf(num, sizeof(num), "%lld", config_setting_get_int64(s));
        text = num;
        break;
    case CONFIG_TYPE_BOOL:
        text = config_setting_get_bool(s) ? "true" : "false";
        break;
    default:
        snprintf(err, errlen, "%s: %s has an unsupported type", path, f->key);
        return HR_ERR;
    }
    if (f->type == HR_CFG_STR && config_setting_type(s) != CONFIG_TYPE_STRING) {
        snprintf(err, errlen, "%s: %s must be a string", path, f->key);
        return HR_ERR;
    }
    return hr_config_set(out, f, text, path, err, errlen);
}

int
hr_config_load(void *out, const hr_cfg_field_t *fields, size_t nfields, const char *path, char *err,
               size_t errlen)
{
    for (size_t i = 0; i < nfields; i++) {
        if (fields[i].type == HR_CFG_STR && fields[i].def == NULL)
            continue;
        if (hr_config_set(out, &fields[i], fields[i].def, "default", err, errlen) != 0)
            return HR_ERR;
    }

    if (path != NULL && path[0] != '\0') {
        config_t cfg;
        config_init(&cfg);
        if (config_read_file(&cfg, path) != CONFIG_TRUE) {
            if (config_error_type(&cfg) == CONFIG_ERR_FILE_IO)
                snprintf(err, errlen, "%s: cannot read file", path);
            else
                snprintf(err, errlen, "%s:%d: %s", path, config_error_line(&cfg),
                         config_error_text(&cfg));
            config_destroy(&cfg);
            return HR_ERR;
        }
        for (size_t i = 0; i < nfields; i++) {
            if (hr_config_from_file(out, &fields[i], &cfg, path, err, errlen) != 0) {
                config_destroy(&cfg);
                return HR_ERR;
            }
        }
        config_destroy(&cfg);
    }

    for (size_t i = 0; i < nfields; i++) {
        char name[128];
        hr_config_env_name(fields[i].key, name, sizeof(name));
        const char *v = getenv(name);
        if (v != NULL && hr_config_set(out, &fields[i], v, name, err, errlen) != 0)
            return HR_ERR;
    }
    return 0;
}

void
hr_config_free(void *out, const hr_cfg_field_t *fields, size_t nfields)
{
    for (size_t i = 0; i < nfields; i++) {
        if (fields[i].type == HR_CFG_STR) {
            char **slot = (char **)((char *)out + fields[i].offset);
            hr_free(*slot);
            *slot = NULL;
        }
    }
}

int
hr_config_args(int argc, char **argv, const char *service, const char **path)
{
    *path = NULL;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--config") == 0 && i + 1 < argc) {
            *path = argv[++i];
            continue;
        }
        char env[64];
        hr_config_env_name(service, env, sizeof(env));
        fprintf(stderr,
                "usage: %s [--config FILE]\n"
                "every setting can be overridden by the environment, e.g. %s_PORT\n"
                "(see deploy/herald.conf.example)\n",
                argv[0], env);
        return 2;
    }
    /* Containers and test harnesses pass the file by environment, like every setting. */
    if (*path == NULL) {
        const char *env = getenv("HERALD_CONFIG");
        if (env != NULL && env[0] != '\0')
            *path = env;
    }
    return 0;
}

int
hr_config_start(const char *service, void *cfg, const hr_cfg_field_t *fields, size_t nfields,
                const char *path, size_t log_level_offset)
{
    char err[512];
    hr_log_level_t level = HR_LOG_INFO;
    hr_log_init(service, level);
    /* As hr_config_args, for a main with its own arguments (the worker's). */
    if (path == NULL || path[0] == '\0')
        path = getenv("HERALD_CONFIG");
    /* log.format is every service's: read first, so the errors below come out in it. */
    static const hr_cfg_field_t log_fields[] = {{"log.format", HR_CFG_STR, 0, "kv", 0, 0}};
    char *format = NULL;
    hr_log_format_t lf = HR_LOG_KV;
    int frc = hr_config_load(&format, log_fields, 1, path, err, sizeof(err));
    if (frc == 0 && hr_log_format_parse(format, &lf) != 0) {
        snprintf(err, sizeof(err), "log.format must be kv or json, got \"%s\"", format);
        frc = HR_ERR;
    }
    hr_free(format);
    if (frc != 0) {
        hr_log_error("config_invalid", "error=\"%s\"", err);
        return HR_ERR;
    }
    hr_log_set_format(lf);
    if (hr_config_load(cfg, fields, nfields, path, err, sizeof(err)) != 0) {
        hr_log_error("config_invalid", "error=\"%s\"", err);
        hr_config_free(cfg, fields, nfields);
        return HR_ERR;
    }
    const char *lv = *(char **)((char *)cfg + log_level_offset);
    if (lv == NULL || hr_log_level_parse(lv, &level) != 0) {
        hr_log_error("config_invalid", "error=\"log.level must be debug|info|warn|error\"");
        hr_config_free(cfg, fields, nfields);
        return HR_ERR;
    }
    hr_log_init(service, level);
    hr_json_init();
    signal(SIGPIPE, SIG_IGN);
    return 0;
}
