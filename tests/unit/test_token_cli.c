/* herald-token (tools/token/tok_cli.c): minting from a config and hashing ingest keys. */
#include "hr_test.h"

#include "tools/token/tok_cli.c"
#include "herald/hr_core.h"

#include <unistd.h>

#define NOW 1700000000LL
#define SECRET "cli-secret-cli-secret-cli-secret-0001"

typedef struct {
    char dir[64], path[96];
    char out[4096], err[4096];
} cli_t;

static void
cli_init(cli_t *c)
{
    snprintf(c->dir, sizeof(c->dir), "/tmp/test_token_cli.XXXXXX");
    if (mkdtemp(c->dir) == NULL)
        abort();
    snprintf(c->path, sizeof(c->path), "%s/herald.conf", c->dir);
    FILE *f = fopen(c->path, "w");
    fprintf(f,
            "auth: { keys = (\n"
            "  { kid = \"k1\"; alg = \"HS256\"; secret = \"%s\"; },\n"
            "  { kid = \"k2\"; alg = \"HS256\"; secret = \"%s-2\"; }\n"
            "); };\n",
            SECRET, SECRET);
    fclose(f);
}

static void
cli_done(cli_t *c)
{
    unlink(c->path);
    rmdir(c->dir);
}

static void
slurp(FILE *f, char *buf, size_t cap)
{
    rewind(f);
    size_t n = fread(buf, 1, cap - 1, f);
    buf[n] = '\0';
    fclose(f);
}

/* Runs the command line (NULL-terminated) with stdin text; captures out and err. */
static int
run(cli_t *c, const char *input, ...)
{
    char *argv[32] = {"herald-token"};
    int argc = 1;
    va_list ap;
    va_start(ap, input);
    for (const char *a; (a = va_arg(ap, const char *)) != NULL && argc < 31;)
        argv[argc++] = (char *)a;
    va_end(ap);
    FILE *in = tmpfile(), *out = tmpfile(), *err = tmpfile();
    fputs(input, in);
    rewind(in);
    int rc = tok_cli_run(argc, argv, in, out, err, NOW);
    fclose(in);
    slurp(out, c->out, sizeof(c->out));
    slurp(err, c->err, sizeof(c->err));
    return rc;
}

static int
verify_with(const char *kid, const char *secret, const char *tok, hr_token_claims_t *claims)
{
    hr_token_key_config_t k = {.kid = (char *)kid, .alg = "HS256", .secret = (char *)secret};
    hr_token_config_t cfg = {.keys = &k, .nkeys = 1};
    hr_token_verifier_t *v = NULL;
    char err[256];
    if (hr_token_verifier_create(&cfg, &v, err, sizeof(err)) != 0)
        return HR_ERR;
    size_t len = strcspn(tok, "\n");
    int rc = hr_token_verify(v, tok, len, NOW, claims, err, sizeof(err));
    hr_token_verifier_destroy(v);
    return rc;
}

HR_TEST(mints_a_token_the_verifier_accepts)
{
    cli_t c;
    cli_init(&c);
    HR_CHECK_EQ_INT(
        run(&c, "", "alice", "--rooms", "lobby,team:*", "--ttl", "2h", "--config", c.path, NULL),
        0);
    HR_CHECK_EQ_STR(c.err, "");
    hr_token_claims_t cl;
    HR_REQUIRE_EQ_INT(verify_with("k1", SECRET, c.out, &cl), 0);
    HR_CHECK_EQ_STR(cl.sub, "alice");
    HR_CHECK_EQ_INT(cl.exp, NOW + 7200);
    HR_CHECK(hr_token_room_allowed(&cl, "lobby") && hr_token_room_allowed(&cl, "team:a"));
    HR_CHECK(!hr_token_room_allowed(&cl, "orders"));
    hr_token_claims_free(&cl);
    cli_done(&c);
}

HR_TEST(kid_picks_the_signing_key)
{
    cli_t c;
    cli_init(&c);
    HR_CHECK_EQ_INT(run(&c, "", "bob", "--kid", "k2", "--config", c.path, NULL), 0);
    hr_token_claims_t cl;
    HR_CHECK_EQ_INT(verify_with("k1", SECRET, c.out, &cl), HR_TOKEN_UNKNOWN_KID);
    HR_REQUIRE_EQ_INT(verify_with("k2", SECRET "-2", c.out, &cl), 0);
    HR_CHECK_EQ_INT(cl.exp, NOW + 3600); /* default ttl 1h */
    HR_CHECK(!cl.has_rooms);
    hr_token_claims_free(&cl);
    HR_CHECK_EQ_INT(run(&c, "", "bob", "--kid", "k9", "--config", c.path, NULL), 1);
    HR_CHECK_CONTAINS(c.err, "k9");
    HR_CHECK_EQ_STR(c.out, "");
    cli_done(&c);
}

HR_TEST(config_comes_from_the_environment_when_not_given)
{
    cli_t c;
    cli_init(&c);
    setenv("HERALD_CONFIG", c.path, 1);
    HR_CHECK_EQ_INT(run(&c, "", "carol", NULL), 0);
    unsetenv("HERALD_CONFIG");
    HR_CHECK_EQ_INT(run(&c, "", "carol", NULL), 2);
    HR_CHECK_CONTAINS(c.err, "no config");
    cli_done(&c);
}

HR_TEST(bad_arguments_are_refused_with_a_reason)
{
    cli_t c;
    cli_init(&c);
    HR_CHECK_EQ_INT(run(&c, "", NULL), 2);
    HR_CHECK_CONTAINS(c.err, "usage");
    HR_CHECK_EQ_INT(run(&c, "", "a", "b", "--config", c.path, NULL), 2);
    HR_CHECK_EQ_INT(run(&c, "", "a", "--bogus", NULL), 2);
    HR_CHECK_EQ_INT(run(&c, "", "a", "--ttl", "1w", "--config", c.path, NULL), 2);
    HR_CHECK_EQ_INT(run(&c, "", "a", "--rooms", "lobby,,x", "--config", c.path, NULL), 2);
    HR_CHECK_EQ_INT(run(&c, "", "a", "--rooms", "team*", "--config", c.path, NULL), 1);
    HR_CHECK_CONTAINS(c.err, "team*");
    HR_CHECK_EQ_INT(run(&c, "", "a", "--config", "/nonexistent.conf", NULL), 1);
    HR_CHECK_EQ_INT(run(&c, "", "--hash-key", "x", "alice", NULL), 2);
    HR_CHECK_EQ_STR(c.out, "");
    cli_done(&c);
}

HR_TEST(hash_key_prints_the_sha256_for_the_config)
{
    cli_t c;
    HR_CHECK_EQ_INT(run(&c, "", "--hash-key", "dev-ingest-key-change-me", NULL), 0);
    HR_CHECK_EQ_STR(c.out, "00e190e99ac393c95f5cd633b0183fb041ddb8bb64f44019eff742ef83c975c4\n");
    HR_CHECK_EQ_INT(run(&c, "dev-ingest-key-change-me\n", "--hash-key", "-", NULL), 0);
    HR_CHECK_EQ_STR(c.out, "00e190e99ac393c95f5cd633b0183fb041ddb8bb64f44019eff742ef83c975c4\n");
    HR_CHECK_EQ_INT(run(&c, "", "--hash-key", "-", NULL), 1);
    HR_CHECK_EQ_INT(run(&c, "", "--hash-key", "", NULL), 1);
}

HR_TEST(ttl_units)
{
    int64_t s = 0;
    HR_CHECK(tok_cli_parse_ttl("90", &s) == 0 && s == 90);
    HR_CHECK(tok_cli_parse_ttl("90s", &s) == 0 && s == 90);
    HR_CHECK(tok_cli_parse_ttl("15m", &s) == 0 && s == 900);
    HR_CHECK(tok_cli_parse_ttl("1h", &s) == 0 && s == 3600);
    HR_CHECK(tok_cli_parse_ttl("7d", &s) == 0 && s == 604800);
    HR_CHECK(tok_cli_parse_ttl("366d", &s) == 0);
    HR_CHECK_EQ_INT(tok_cli_parse_ttl("367d", &s), -1);
    HR_CHECK_EQ_INT(tok_cli_parse_ttl("0", &s), -1);
    HR_CHECK_EQ_INT(tok_cli_parse_ttl("-5", &s), -1);
    HR_CHECK_EQ_INT(tok_cli_parse_ttl("h", &s), -1);
    HR_CHECK_EQ_INT(tok_cli_parse_ttl("1hh", &s), -1);
    HR_CHECK_EQ_INT(tok_cli_parse_ttl("99999999999999999999", &s), -1);
}

HR_TEST_MAIN()
