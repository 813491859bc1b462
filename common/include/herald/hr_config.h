/*
 * Configuration: a libconfig file per service, every key overridable by an
 * environment variable. The key "redis.url" is read from the file as
 *   redis: { url = "redis://127.0.0.1:6379"; };
 * and overridden by HERALD_REDIS_URL. A service describes its settings as a
 * table of fields that point into its own config struct (offsetof), so one
 * loader serves all four services and the table doubles as documentation.
 */
#ifndef HERALD_HR_CONFIG_H
#define HERALD_HR_CONFIG_H

#include <stddef.h>

typedef enum { HR_CFG_STR, HR_CFG_INT, HR_CFG_BOOL } hr_cfg_type_t;

typedef struct {
    const char *key; /* dotted path, e.g. "ingest.port" */
    hr_cfg_type_t type;
    size_t offset;   /* of a char * (owned by the struct), int or int (bool) */
    const char *def; /* default as text; NULL for a string means NULL */
    long min, max;   /* bounds for HR_CFG_INT */
} hr_cfg_field_t;

#define HR_CFG_ENV_PREFIX "HERALD_"

/**
 * Fills the struct at out: defaults, then the file at path (NULL or "" to skip),
 * then environment overrides. Returns 0, or HR_ERR with err filled (unknown key
 * types, bad values, unreadable file).
 */
int hr_config_load(void *out, const hr_cfg_field_t *fields, size_t nfields, const char *path,
                   char *err, size_t errlen);

/** Frees the strings hr_config_load() stored in out. */
void hr_config_free(void *out, const hr_cfg_field_t *fields, size_t nfields);

/** Writes the environment variable name for key into buf ("a.b" → "HERALD_A_B"). */
void hr_config_env_name(const char *key, char *buf, size_t cap);

/**
 * Parses the common command line of a service: `--config FILE` only. Returns
 * 0 with *path set (NULL if absent), or prints the usage and returns 2.
 */
int hr_config_args(int argc, char **argv, const char *service, const char **path);

/**
 * What every main does before building its loop: loads the config (the file
 * at path, else $HERALD_CONFIG, then the environment), sets the log level
 * from the string field at log_level_offset and the line format from
 * log.format ("kv" or "json", read for every service without a field of its
 * own), routes cJSON through hr_alloc and ignores SIGPIPE.
 * Returns 0, or HR_ERR after logging why (cfg is then freed).
 */
int hr_config_start(const char *service, void *cfg, const hr_cfg_field_t *fields, size_t nfields,
                    const char *path, size_t log_level_offset);
#endif
