#include "tok_cli.h"
#include "herald/hr_alloc.h"
#include "herald/hr_apikey.h"
#include "herald/hr_json.h"
#include "herald/hr_token.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#define TOK_TTL_DEFAULT 3600
#define TOK_TTL_MAX (366 * 86400LL)

static void
tok_cli_usage(FILE *errf)
{
    fprintf(errf, "usage: herald-token USER [--rooms 'lobby,team:*'] [--ttl 1h] [--config FILE] "
                  "[--kid KID]\n"
                  "       herald-token --hash-key KEY   (KEY '-' reads one line from stdin)\n"
                  "Mints an HS256 token for USER from a key of the config's auth.keys (the first\n"
                  "HS256 one unless --kid), or prints the SHA-256 of an ingest key for\n"
                  "auth.ingest_keys. The config is --config FILE, else $HERALD_CONFIG.\n"
                  "TTL: N, Ns, Nm, Nh or Nd (default 1h). Without --rooms the token has no\n"
                  "rooms claim and may join no room.\n");
}

int
tok_cli_parse_ttl(const char *s, int64_t *out)
{
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno != 0 || end == s || v <= 0 || s[0] == '-' || s[0] == '+')
        return -1;
    long long mul = 1;
    if (*end == 's')
        end++;
    else if (*end == 'm')
        mul = 60, end++;
    else if (*end == 'h')
        mul = 3600, end++;
    else if (*end == 'd')
        mul = 86400, end++;
    if (*end != '\0' || v > TOK_TTL_MAX / mul)
        return -1;
    *out = v * mul;
    return 0;
}

/* Splits a comma list into an owned array of owned strings; empty items are errors. */
static int
tok_cli_split(const char *list, char ***out, size_t *n)
{
    size_t cap = 1;
    for (const char *p = list; *p; p++)
        cap += *p == ',';
    char **v = hr_calloc(cap, sizeof(char *));
    size_t k = 0;
    const char *p = list;
    for (;;) {
        const char *c = strchr(p, ',');
        size_t len = c != NULL ? (size_t)(c - p) : strlen(p);
        if (len == 0) {
            for (size_t i = 0; i < k; i++)
                hr_free(v[i]);
            hr_free(v);
            return -1;
        }
        v[k++] = hr_strndup(p, len);
        if (c == NULL)
            break;
        p = c + 1;
    }
    *out = v;
    *n = k;
    return 0;
}

static int
tok_cli_hash(const char *key, FILE *in, FILE *out, FILE *errf)
{
    char line[HR_APIKEY_MAX + 2], hex[65];
    if (strcmp(key, "-") == 0) {
        if (fgets(line, sizeof(line), in) == NULL) {
            fprintf(errf, "herald-token: no key on stdin\n");
            return 1;
        }
        line[strcspn(line, "\r\n")] = '\0';
        key = line;
    }
    size_t len = strlen(key);
    if (len == 0 || len > HR_APIKEY_MAX) {
        fprintf(errf, "herald-token: a key is 1-%d bytes\n", HR_APIKEY_MAX);
        return 1;
    }
    hr_apikey_hash_hex(key, len, hex);
    fprintf(out, "%s\n", hex);
    return 0;
}

int
tok_cli_run(int argc, char **argv, FILE *in, FILE *out, FILE *errf, int64_t now)
{
    const char *user = NULL, *rooms = NULL, *ttl = NULL, *path = NULL, *kid = NULL;
    const char *hash = NULL;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char **slot = strcmp(a, "--rooms") == 0      ? &rooms
                            : strcmp(a, "--ttl") == 0      ? &ttl
                            : strcmp(a, "--config") == 0   ? &path
                            : strcmp(a, "--kid") == 0      ? &kid
                            : strcmp(a, "--hash-key") == 0 ? &hash
                                                           : NULL;
        if (slot != NULL && i + 1 < argc && *slot == NULL) {
            *slot = argv[++i];
        } else if (slot == NULL && a[0] != '-' && user == NULL) {
            user = a;
        } else {
            tok_cli_usage(errf);
            return 2;
        }
    }
    if (hash != NULL) {
        if (user != NULL || rooms != NULL || ttl != NULL || kid != NULL) {
            tok_cli_usage(errf);
            return 2;
        }
        return tok_cli_hash(hash, in, out, errf);
    }
    if (user == NULL) {
        tok_cli_usage(errf);
        return 2;
    }
    int64_t ttl_s = TOK_TTL_DEFAULT;
    if (ttl != NULL && tok_cli_parse_ttl(ttl, &ttl_s) != 0) {
        fprintf(errf, "herald-token: --ttl wants N, Ns, Nm, Nh or Nd, at most 366d\n");
        return 2;
    }
    if (path == NULL)
        path = getenv("HERALD_CONFIG");
    if (path == NULL || path[0] == '\0') {
        fprintf(errf, "herald-token: no config (--config FILE or HERALD_CONFIG)\n");
        return 2;
    }
    char **rv = NULL;
    size_t nr = 0;
    if (rooms != NULL && tok_cli_split(rooms, &rv, &nr) != 0) {
        fprintf(errf, "herald-token: --rooms is a comma list of room names or prefix:*\n");
        return 2;
    }

    hr_json_init();
    hr_token_config_t cfg;
    char err[512], *tok = NULL;
    int rc = 1;
    if (hr_token_config_load(path, &cfg, err, sizeof(err)) != 0) {
        fprintf(errf, "herald-token: %s\n", err);
    } else {
        if (hr_token_mint_hs256(&cfg, kid, user, (const char *const *)rv, nr, now, ttl_s, &tok, err,
                                sizeof(err)) != 0) {
            fprintf(errf, "herald-token: %s\n", err);
        } else {
            fprintf(out, "%s\n", tok);
            hr_free(tok);
            rc = 0;
        }
        hr_token_config_free(&cfg);
    }
    for (size_t i = 0; i < nr; i++)
        hr_free(rv[i]);
    hr_free(rv);
    return rc;
}
