/* hr_config: defaults, then the libconfig file, then HERALD_* environment overrides. */
#include "hr_test.h"

#include "herald/hr_config.h"
#include "herald/hr_core.h"

#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

typedef struct {
    char *redis_url;
    int port;
    int verbose;
    char *name; /* no default: stays NULL */
    int offset; /* may be negative */
} cfg_t;

static const hr_cfg_field_t fields[] = {
    {"redis.url", HR_CFG_STR, offsetof(cfg_t, redis_url), "redis://127.0.0.1:6379", 0, 0},
    {"ingest.port", HR_CFG_INT, offsetof(cfg_t, port), "8080", 1, 65535},
    {"ingest.verbose", HR_CFG_BOOL, offsetof(cfg_t, verbose), "false", 0, 0},
    {"ingest.name", HR_CFG_STR, offsetof(cfg_t, name), NULL, 0, 0},
    {"ingest.offset", HR_CFG_INT, offsetof(cfg_t, offset), "0", -100, 100},
};

static const char *const env_names[] = {"HERALD_REDIS_URL", "HERALD_INGEST_PORT",
                                        "HERALD_INGEST_VERBOSE", "HERALD_INGEST_NAME",
                                        "HERALD_INGEST_OFFSET"};

static char tmpdir[256];

/* Every test starts from a clean environment and a zeroed struct. */
static void
clear_env(void)
{
    for (size_t i = 0; i < HR_ARRAY_LEN(env_names); i++)
        unsetenv(env_names[i]);
}

/* Writes text to a file in the test's temp dir; returns its path (static buffer). */
static const char *
write_file(const char *name, const char *text)
{
    static char path[512];
    snprintf(path, sizeof(path), "%s/%s", tmpdir, name);
    FILE *f = fopen(path, "w");
    if (f == NULL) {
        HR_FAIL("cannot create %s", path);
        return path;
    }
    fputs(text, f);
    fclose(f);
    return path;
}

static int
load(cfg_t *c, const char *path, char *err, size_t errlen)
{
    memset(c, 0, sizeof(*c));
    err[0] = '\0';
    return hr_config_load(c, fields, HR_ARRAY_LEN(fields), path, err, errlen);
}

static void
release(cfg_t *c)
{
    hr_config_free(c, fields, HR_ARRAY_LEN(fields));
}

HR_TEST(defaults_apply_without_file_or_environment)
{
    cfg_t c;
    char err[256];
    clear_env();
    HR_REQUIRE_EQ_INT(load(&c, NULL, err, sizeof(err)), 0);
    HR_CHECK_EQ_STR(c.redis_url, "redis://127.0.0.1:6379");
    HR_CHECK_EQ_INT(c.port, 8080);
    HR_CHECK_EQ_INT(c.verbose, 0);
    HR_CHECK(c.name == NULL);
    HR_CHECK_EQ_INT(c.offset, 0);
    release(&c);
}

HR_TEST(empty_path_means_no_file)
{
    cfg_t c;
    char err[256];
    clear_env();
    HR_REQUIRE_EQ_INT(load(&c, "", err, sizeof(err)), 0);
    HR_CHECK_EQ_INT(c.port, 8080);
    release(&c);
}

HR_TEST(file_values_replace_defaults)
{
    cfg_t c;
    char err[256];
    clear_env();
    const char *path = write_file("full.cfg", "redis: { url = \"redis://h:1/2\"; };\n"
                                              "ingest: {\n"
                                              "  port = 9000;\n"
                                              "  verbose = true;\n"
                                              "  name = \"edge-1\";\n"
                                              "  offset = -7;\n"
                                              "};\n");
    HR_REQUIRE_EQ_INT(load(&c, path, err, sizeof(err)), 0);
    HR_CHECK_EQ_STR(c.redis_url, "redis://h:1/2");
    HR_CHECK_EQ_INT(c.port, 9000);
    HR_CHECK_EQ_INT(c.verbose, 1);
    HR_CHECK_EQ_STR(c.name, "edge-1");
    HR_CHECK_EQ_INT(c.offset, -7);
    release(&c);
}

HR_TEST(keys_missing_from_file_keep_defaults)
{
    cfg_t c;
    char err[256];
    clear_env();
    const char *path = write_file("partial.cfg", "ingest: { port = 9001; };\n");
    HR_REQUIRE_EQ_INT(load(&c, path, err, sizeof(err)), 0);
    HR_CHECK_EQ_INT(c.port, 9001);
    HR_CHECK_EQ_STR(c.redis_url, "redis://127.0.0.1:6379");
    HR_CHECK(c.name == NULL);
    release(&c);
}

HR_TEST(file_accepts_int64_and_string_forms_of_numbers_and_bools)
{
    cfg_t c;
    char err[256];
    clear_env();
    const char *path =
        write_file("forms.cfg", "ingest: { port = 9002L; verbose = \"yes\"; offset = \"-3\"; };\n");
    HR_REQUIRE_EQ_INT(load(&c, path, err, sizeof(err)), 0);
    HR_CHECK_EQ_INT(c.port, 9002);
    HR_CHECK_EQ_INT(c.verbose, 1);
    HR_CHECK_EQ_INT(c.offset, -3);
    release(&c);
}

HR_TEST(environment_overrides_file)
{
    cfg_t c;
    char err[256];
    clear_env();
    const char *path = write_file("env.cfg", "redis: { url = \"redis://h:1/2\"; };\n"
                                             "ingest: { port = 9000; verbose = false; };\n");
    setenv("HERALD_REDIS_URL", "redis://from-env:6380/3", 1);
    setenv("HERALD_INGEST_PORT", "9100", 1);
    setenv("HERALD_INGEST_VERBOSE", "on", 1);
    HR_REQUIRE_EQ_INT(load(&c, path, err, sizeof(err)), 0);
    HR_CHECK_EQ_STR(c.redis_url, "redis://from-env:6380/3");
    HR_CHECK_EQ_INT(c.port, 9100);
    HR_CHECK_EQ_INT(c.verbose, 1);
    release(&c);
    clear_env();
}

HR_TEST(environment_overrides_defaults_without_file)
{
    cfg_t c;
    char err[256];
    clear_env();
    setenv("HERALD_INGEST_NAME", "from-env", 1);
    HR_REQUIRE_EQ_INT(load(&c, NULL, err, sizeof(err)), 0);
    HR_CHECK_EQ_STR(c.name, "from-env");
    release(&c);
    clear_env();
}

HR_TEST(bool_accepts_true_false_yes_no_on_off_1_0_in_any_case)
{
    static const struct {
        const char *text;
        int want;
    } cases[] = {{"true", 1},  {"TRUE", 1},  {"yes", 1}, {"On", 1},  {"1", 1},
                 {"false", 0}, {"False", 0}, {"no", 0},  {"OFF", 0}, {"0", 0}};
    char err[256];
    cfg_t c;
    clear_env();
    for (size_t i = 0; i < HR_ARRAY_LEN(cases); i++) {
        setenv("HERALD_INGEST_VERBOSE", cases[i].text, 1);
        if (HR_CHECK_EQ_INT(load(&c, NULL, err, sizeof(err)), 0))
            HR_CHECK_EQ_INT(c.verbose, cases[i].want);
        release(&c);
    }
    clear_env();
}

HR_TEST(bad_int_in_environment_is_an_error_naming_key_and_variable)
{
    static const char *const bad[] = {"abc", "", "80x", "8.5", "99999999999999999999"};
    char err[256];
    cfg_t c;
    clear_env();
    for (size_t i = 0; i < HR_ARRAY_LEN(bad); i++) {
        setenv("HERALD_INGEST_PORT", bad[i], 1);
        HR_CHECK_EQ_INT(load(&c, NULL, err, sizeof(err)), HR_ERR);
        HR_CHECK_CONTAINS(err, "ingest.port");
        HR_CHECK_CONTAINS(err, "HERALD_INGEST_PORT");
        release(&c);
    }
    clear_env();
}

HR_TEST(int_out_of_range_in_file_is_an_error_naming_key)
{
    char err[256];
    cfg_t c;
    clear_env();
    const char *path = write_file("range.cfg", "ingest: { port = 70000; };\n");
    HR_CHECK_EQ_INT(load(&c, path, err, sizeof(err)), HR_ERR);
    HR_CHECK_CONTAINS(err, "ingest.port");
    HR_CHECK_CONTAINS(err, "70000");
    release(&c);

    path = write_file("range0.cfg", "ingest: { port = 0; };\n");
    HR_CHECK_EQ_INT(load(&c, path, err, sizeof(err)), HR_ERR);
    HR_CHECK_CONTAINS(err, "ingest.port");
    release(&c);
}

HR_TEST(int_bounds_are_inclusive)
{
    char err[256];
    cfg_t c;
    clear_env();
    setenv("HERALD_INGEST_OFFSET", "-100", 1);
    HR_CHECK_EQ_INT(load(&c, NULL, err, sizeof(err)), 0);
    HR_CHECK_EQ_INT(c.offset, -100);
    release(&c);
    setenv("HERALD_INGEST_OFFSET", "100", 1);
    HR_CHECK_EQ_INT(load(&c, NULL, err, sizeof(err)), 0);
    HR_CHECK_EQ_INT(c.offset, 100);
    release(&c);
    setenv("HERALD_INGEST_OFFSET", "-101", 1);
    HR_CHECK_EQ_INT(load(&c, NULL, err, sizeof(err)), HR_ERR);
    HR_CHECK_CONTAINS(err, "ingest.offset");
    release(&c);
    clear_env();
}

HR_TEST(int_out_of_range_in_environment_is_an_error_naming_key)
{
    char err[256];
    cfg_t c;
    clear_env();
    setenv("HERALD_INGEST_PORT", "65536", 1);
    HR_CHECK_EQ_INT(load(&c, NULL, err, sizeof(err)), HR_ERR);
    HR_CHECK_CONTAINS(err, "ingest.port");
    release(&c);
    clear_env();
}

HR_TEST(bad_int_in_file_is_an_error_naming_key)
{
    char err[256];
    cfg_t c;
    clear_env();
    const char *path = write_file("badint.cfg", "ingest: { port = \"eighty\"; };\n");
    HR_CHECK_EQ_INT(load(&c, path, err, sizeof(err)), HR_ERR);
    HR_CHECK_CONTAINS(err, "ingest.port");
    release(&c);

    path = write_file("float.cfg", "ingest: { port = 80.5; };\n");
    HR_CHECK_EQ_INT(load(&c, path, err, sizeof(err)), HR_ERR);
    HR_CHECK_CONTAINS(err, "ingest.port");
    release(&c);
}

HR_TEST(bad_bool_is_an_error_naming_key)
{
    char err[256];
    cfg_t c;
    clear_env();
    const char *path = write_file("badbool.cfg", "ingest: { verbose = \"maybe\"; };\n");
    HR_CHECK_EQ_INT(load(&c, path, err, sizeof(err)), HR_ERR);
    HR_CHECK_CONTAINS(err, "ingest.verbose");
    release(&c);

    setenv("HERALD_INGEST_VERBOSE", "2", 1);
    HR_CHECK_EQ_INT(load(&c, NULL, err, sizeof(err)), HR_ERR);
    HR_CHECK_CONTAINS(err, "ingest.verbose");
    HR_CHECK_CONTAINS(err, "HERALD_INGEST_VERBOSE");
    release(&c);
    clear_env();
}

HR_TEST(string_key_given_a_number_in_file_is_an_error_naming_key)
{
    char err[256];
    cfg_t c;
    clear_env();
    const char *path = write_file("strnum.cfg", "redis: { url = 6379; };\n");
    HR_CHECK_EQ_INT(load(&c, path, err, sizeof(err)), HR_ERR);
    HR_CHECK_CONTAINS(err, "redis.url");
    release(&c);
}

HR_TEST(missing_file_is_an_error_naming_the_path)
{
    char err[256];
    cfg_t c;
    char path[512];
    clear_env();
    snprintf(path, sizeof(path), "%s/does-not-exist.cfg", tmpdir);
    HR_CHECK_EQ_INT(load(&c, path, err, sizeof(err)), HR_ERR);
    HR_CHECK_CONTAINS(err, path);
    release(&c);
}

HR_TEST(unreadable_file_is_an_error_naming_the_path)
{
    char err[256];
    cfg_t c;
    clear_env();
    const char *path = write_file("secret.cfg", "ingest: { port = 9000; };\n");
    chmod(path, 0);
    if (access(path, R_OK) == 0) {
        /* root reads anything: a directory stands in for a file that cannot be read. */
        path = tmpdir;
    }
    HR_CHECK_EQ_INT(load(&c, path, err, sizeof(err)), HR_ERR);
    HR_CHECK_CONTAINS(err, path);
    release(&c);
}

HR_TEST(syntax_error_in_file_is_an_error_with_path_and_line)
{
    char err[256];
    cfg_t c;
    clear_env();
    const char *path = write_file("syntax.cfg", "ingest: {\n  port = ;\n};\n");
    HR_CHECK_EQ_INT(load(&c, path, err, sizeof(err)), HR_ERR);
    HR_CHECK_CONTAINS(err, path);
    HR_CHECK_CONTAINS(err, ":2");
    release(&c);
}

HR_TEST(free_releases_strings_and_clears_them)
{
    char err[256];
    cfg_t c;
    clear_env();
    setenv("HERALD_INGEST_NAME", "n", 1);
    HR_REQUIRE_EQ_INT(load(&c, NULL, err, sizeof(err)), 0);
    release(&c);
    HR_CHECK(c.redis_url == NULL);
    HR_CHECK(c.name == NULL);
    release(&c); /* twice is harmless */
    clear_env();
}

HR_TEST(env_name_uppercases_and_maps_dots_and_dashes_to_underscores)
{
    char buf[64];
    hr_config_env_name("redis.url", buf, sizeof(buf));
    HR_CHECK_EQ_STR(buf, "HERALD_REDIS_URL");
    hr_config_env_name("ingest.port", buf, sizeof(buf));
    HR_CHECK_EQ_STR(buf, "HERALD_INGEST_PORT");
    hr_config_env_name("redis.timeout_ms", buf, sizeof(buf));
    HR_CHECK_EQ_STR(buf, "HERALD_REDIS_TIMEOUT_MS");
    hr_config_env_name("gateway.max-frame", buf, sizeof(buf));
    HR_CHECK_EQ_STR(buf, "HERALD_GATEWAY_MAX_FRAME");
    hr_config_env_name("", buf, sizeof(buf));
    HR_CHECK_EQ_STR(buf, "HERALD_");
}

HR_TEST(env_name_truncates_to_the_buffer)
{
    char buf[12];
    memset(buf, 'x', sizeof(buf));
    hr_config_env_name("redis.url", buf, sizeof(buf));
    HR_CHECK_EQ_STR(buf, "HERALD_REDI");

    char tiny[4];
    hr_config_env_name("redis.url", tiny, sizeof(tiny));
    HR_CHECK_EQ_STR(tiny, "HER");

    char one[1] = {'x'};
    hr_config_env_name("redis.url", one, sizeof(one));
    HR_CHECK_EQ_INT(one[0], '\0');
}

/* Removes the temp dir and what the tests wrote in it. */
static void
cleanup(void)
{
    static const char *const names[] = {"full.cfg",    "partial.cfg", "forms.cfg",  "env.cfg",
                                        "range.cfg",   "range0.cfg",  "badint.cfg", "float.cfg",
                                        "badbool.cfg", "strnum.cfg",  "secret.cfg", "syntax.cfg"};
    char path[512];
    for (size_t i = 0; i < HR_ARRAY_LEN(names); i++) {
        snprintf(path, sizeof(path), "%s/%s", tmpdir, names[i]);
        unlink(path);
    }
    rmdir(tmpdir);
}

int
main(void)
{
    const char *base = getenv("TMPDIR");
    snprintf(tmpdir, sizeof(tmpdir), "%s/herald-test-config-XXXXXX",
             base != NULL && base[0] != '\0' ? base : "/tmp");
    if (mkdtemp(tmpdir) == NULL) {
        perror("mkdtemp");
        return 1;
    }
    int rc = hr_test_run_all();
    cleanup();
    return rc;
}
