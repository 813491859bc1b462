/* hist_auth: the Authorization header, the cut-off reply and POST /dev/token, without a server. */
#include "hr_test.h"

#include "hist_auth.h"
#include "herald/hr_alloc.h"
#include "herald/hr_core.h"
#include "herald/hr_json.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define SECRET "unit-test-secret-of-at-least-32-bytes!!"

/* A config file with one HS256 key at path (a mkstemp template); 0 or -1. */
static int
write_config(char *path)
{
    int fd = mkstemp(path);
    if (fd < 0)
        return -1;
    FILE *f = fdopen(fd, "w");
    fprintf(f,
            "auth: { leeway_s = 0; keys = ( { kid = \"k1\"; alg = \"HS256\"; secret = \"%s\"; } ); "
            "};\n",
            SECRET);
    fclose(f);
    return 0;
}

static hist_auth_t *
make_auth(int dev_mint)
{
    char path[] = "/tmp/test_hist_auth_XXXXXX";
    if (write_config(path) != 0)
        return NULL;
    hist_auth_opts_t o = {.config_path = path, .dev_mint = dev_mint};
    hist_auth_t *a = NULL;
    char err[256];
    int rc = hist_auth_create(&o, &a, err, sizeof(err));
    unlink(path);
    return rc == 0 ? a : NULL;
}

/* hist_auth_verify() of a request carrying the given Authorization headers (NULL-terminated). */
static int
verify_headers(hist_auth_t *a, const char *const *values, hr_token_claims_t *claims)
{
    size_t n = 0;
    while (values[n] != NULL)
        n++;
    char err[256];
    return hist_auth_verify_values(a, values, n, 1000, claims, err, sizeof(err));
}

/* Mints for body at now = 1000; returns the token (hr_free) or NULL with e filled. */
static char *
mint(hist_auth_t *a, const char *body, hr_proto_err_t *e, int64_t *exp)
{
    char *out = NULL;
    if (hist_auth_mint(a, body, strlen(body), 1000, &out, e) != 0)
        return NULL;
    cJSON *o = cJSON_Parse(out);
    char *tok = hr_strdup(cJSON_GetObjectItem(o, "token")->valuestring);
    *exp = (int64_t)cJSON_GetObjectItem(o, "expires_at")->valuedouble;
    cJSON_Delete(o);
    hr_free(out);
    return tok;
}

HR_TEST(minted_token_is_accepted_as_bearer_with_its_sub_rooms_and_exp)
{
    hist_auth_t *a = make_auth(1);
    HR_REQUIRE(a != NULL);
    hr_proto_err_t e;
    int64_t exp = 0;
    char *tok =
        mint(a, "{\"user_id\":\"alice\",\"rooms\":[\"lobby\",\"team:*\"],\"ttl_s\":60}", &e, &exp);
    HR_REQUIRE(tok != NULL);
    HR_CHECK_EQ_INT(exp, 1060);
    char hdr[4096];
    snprintf(hdr, sizeof(hdr), "bearer  %s ", tok);
    hr_token_claims_t c = {0};
    HR_CHECK_EQ_INT(verify_headers(a, (const char *[]){hdr, NULL}, &c), 0);
    HR_CHECK_EQ_STR(c.sub, "alice");
    HR_CHECK(hr_token_room_allowed(&c, "team:red"));
    HR_CHECK(!hr_token_room_allowed(&c, "other"));
    HR_CHECK_EQ_INT(c.iat, 1000);
    hr_token_claims_free(&c);
    /* Twice the same good header is still one too many. */
    HR_CHECK_EQ_INT(verify_headers(a, (const char *[]){hdr, hdr, NULL}, &c), HR_TOKEN_MALFORMED);
    hr_free(tok);
    hist_auth_destroy(a);
}

HR_TEST(missing_empty_or_other_scheme_is_refused)
{
    hist_auth_t *a = make_auth(0);
    HR_REQUIRE(a != NULL);
    hr_token_claims_t c = {0};
    HR_CHECK_EQ_INT(verify_headers(a, (const char *[]){NULL}, &c), HIST_AUTH_MISSING);
    HR_CHECK_EQ_STR(hist_auth_reason(HIST_AUTH_MISSING), "missing");
    HR_CHECK_EQ_INT(verify_headers(a, (const char *[]){"Bearer", NULL}, &c), HR_TOKEN_MALFORMED);
    HR_CHECK_EQ_INT(verify_headers(a, (const char *[]){"Bearer   ", NULL}, &c), HR_TOKEN_MALFORMED);
    HR_CHECK_EQ_INT(verify_headers(a, (const char *[]){"Basic abc", NULL}, &c), HR_TOKEN_MALFORMED);
    HR_CHECK_EQ_INT(verify_headers(a, (const char *[]){"Bearerx.y.z", NULL}, &c),
                    HR_TOKEN_MALFORMED);
    HR_CHECK_EQ_INT(verify_headers(a, (const char *[]){"Bearer x.y.z", NULL}, &c),
                    HR_TOKEN_MALFORMED);
    hist_auth_destroy(a);
}

HR_TEST(mint_input_is_validated)
{
    hist_auth_t *a = make_auth(1);
    HR_REQUIRE(a != NULL);
    static const struct {
        const char *body, *code, *says;
    } bad[] = {
        {"{}", HR_E_MISSING_FIELD, "user_id"},
        {"[]", HR_E_INVALID_JSON, "object"},
        {"{\"user_id\":\"\"}", HR_E_INVALID_FIELD, "user_id"},
        {"{\"user_id\":\"a\\u0007\"}", HR_E_INVALID_FIELD, "user_id"},
        {"{\"user_id\":\"a\",\"rooms\":{}}", HR_E_INVALID_FIELD, "rooms"},
        {"{\"user_id\":\"a\",\"rooms\":[\"a b\"]}", HR_E_INVALID_FIELD, "rooms[0]"},
        {"{\"user_id\":\"a\",\"rooms\":[\"ok\",\"*x\"]}", HR_E_INVALID_FIELD, "rooms[1]"},
        {"{\"user_id\":\"a\",\"ttl_s\":0}", HR_E_INVALID_FIELD, "ttl_s"},
        {"{\"user_id\":\"a\",\"ttl_s\":86401}", HR_E_INVALID_FIELD, "ttl_s"},
        {"{\"user_id\":\"a\",\"ttl_s\":2.5}", HR_E_INVALID_FIELD, "ttl_s"},
        {"{\"user_id\":\"a\",\"ttl_s\":\"60\"}", HR_E_INVALID_FIELD, "ttl_s"},
        {"{\"user_id\":\"a\",\"sub\":\"b\"}", HR_E_UNKNOWN_FIELD, "unknown"},
        {"{\"user_id\":\"a\",\"user_id\":\"b\"}", HR_E_INVALID_JSON, ""},
    };
    for (size_t i = 0; i < HR_ARRAY_LEN(bad); i++) {
        hr_proto_err_t e = {0};
        int64_t exp;
        char *tok = mint(a, bad[i].body, &e, &exp);
        HR_CHECK(tok == NULL);
        hr_free(tok);
        HR_CHECK_EQ_INT(e.status, 400);
        HR_CHECK_EQ_STR(e.code, bad[i].code);
        HR_CHECK_CONTAINS(e.message, bad[i].says);
    }
    hist_auth_destroy(a);
}

HR_TEST(dev_mint_without_an_hs256_key_refuses_to_start)
{
    hist_auth_opts_t o = {.config_path = NULL, .dev_mint = 1};
    hist_auth_t *a = NULL;
    char err[256] = "";
    HR_CHECK_EQ_INT(hist_auth_create(&o, &a, err, sizeof(err)), HR_ERR);
    HR_CHECK_CONTAINS(err, "dev_mint");
    o.dev_mint = 0;
    HR_CHECK_EQ_INT(hist_auth_create(&o, &a, err, sizeof(err)), 0);
    hist_auth_destroy(a);
}

HR_TEST(cutoff_reply_is_nil_a_whole_number_or_refused)
{
    int64_t t;
    redisReply nil = {.type = REDIS_REPLY_NIL};
    HR_CHECK_EQ_INT(hist_auth_cutoff_parse(&nil, &t), 0);
    HR_CHECK_EQ_INT(t, 0);
    redisReply s = {.type = REDIS_REPLY_STRING, .str = "1796000000", .len = 10};
    HR_CHECK_EQ_INT(hist_auth_cutoff_parse(&s, &t), 0);
    HR_CHECK_EQ_INT(t, 1796000000);
    redisReply i = {.type = REDIS_REPLY_INTEGER, .integer = 42};
    HR_CHECK_EQ_INT(hist_auth_cutoff_parse(&i, &t), 0);
    HR_CHECK_EQ_INT(t, 42);
    const char *bad[] = {"", "-5", "12x", "1.5", " 1", "999999999999999999999"};
    for (size_t k = 0; k < HR_ARRAY_LEN(bad); k++) {
        redisReply b = {.type = REDIS_REPLY_STRING, .str = (char *)bad[k], .len = strlen(bad[k])};
        HR_CHECK_EQ_INT(hist_auth_cutoff_parse(&b, &t), HR_ERR);
    }
    redisReply err = {.type = REDIS_REPLY_ERROR, .str = "WRONGTYPE", .len = 9};
    HR_CHECK_EQ_INT(hist_auth_cutoff_parse(&err, &t), HR_ERR);
    char key[64];
    HR_CHECK_EQ_INT(hist_auth_revoked_key(key, sizeof(key), "alice"), 22);
    HR_CHECK_EQ_STR(key, "herald:revoked:{alice}");
    HR_CHECK_EQ_INT(hist_auth_revoked_key(key, 8, "alice"), 0);
}

HR_TEST_MAIN()
