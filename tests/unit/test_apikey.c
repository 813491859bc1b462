/* hr_apikey: hashed ingest keys, scopes, and the token bucket (time injected). */
#include "hr_test.h"

#include <openssl/crypto.h>

/*
 * Every CRYPTO_memcmp of the module is counted: the lookup must compare all
 * hashes whichever matches (the header's include guard keeps the real one).
 */
static int memcmp_calls;
static int
counting_memcmp(const void *a, const void *b, size_t n)
{
    memcmp_calls++;
    return CRYPTO_memcmp(a, b, n);
}
#define CRYPTO_memcmp counting_memcmp

#include "common/src/hr_apikey.c"

#include <unistd.h>

static void
hex_of(const char *key, char out[65])
{
    hr_apikey_hash_hex(key, strlen(key), out);
}

static hr_apikeys_t *
keys(void)
{
    static char h1[65], h2[65], h3[65];
    hex_of("orders-key", h1);
    hex_of("ops-key", h2);
    hex_of("any-key", h3);
    char *orders_rooms[] = {"orders:*", "audit"};
    char *ops_users[] = {"alice", "bob"};
    char *star[] = {"*"};
    hr_apikey_config_t cfg[] = {
        {.name = "orders", .sha256 = h1, .rooms = orders_rooms, .nrooms = 2, .rate = 2, .burst = 3},
        {.name = "ops", .sha256 = h2, .users = ops_users, .nusers = 2, .rooms = star, .nrooms = 1},
        {.name = "any", .sha256 = h3, .rate = 10},
    };
    hr_apikeys_t *ks = NULL;
    char err[256] = "";
    if (hr_apikeys_create(cfg, HR_ARRAY_LEN(cfg), &ks, err, sizeof(err)) != 0) {
        HR_FAIL("create: %s", err);
        abort();
    }
    return ks;
}

HR_TEST(hash_hex_is_sha256)
{
    char hex[65];
    hr_apikey_hash_hex("abc", 3, hex);
    HR_CHECK_EQ_STR(hex, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    hr_apikey_hash_hex("", 0, hex);
    HR_CHECK_EQ_STR(hex, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
}

HR_TEST(lookup_finds_the_key_by_its_hash_only)
{
    hr_apikeys_t *ks = keys();
    const hr_apikey_t *k = hr_apikeys_lookup(ks, "ops-key", 7);
    HR_REQUIRE(k != NULL);
    HR_CHECK_EQ_STR(hr_apikey_name(k), "ops");
    HR_CHECK_EQ_STR(hr_apikey_name(hr_apikeys_lookup(ks, "any-key", 7)), "any");
    HR_CHECK(hr_apikeys_lookup(ks, "ops-keY", 7) == NULL);
    HR_CHECK(hr_apikeys_lookup(ks, "ops-ke", 6) == NULL);
    HR_CHECK(hr_apikeys_lookup(ks, "", 0) == NULL);
    HR_CHECK(hr_apikeys_lookup(ks, NULL, 0) == NULL);
    /* The stored hex is not itself a key. */
    char hex[65];
    hex_of("ops-key", hex);
    HR_CHECK(hr_apikeys_lookup(ks, hex, 64) == NULL);
    /* The length is the caller's: no NUL needed, none read past. */
    char *raw = hr_test_memdup("ops-key", 7);
    HR_CHECK(hr_apikeys_lookup(ks, raw, 7) == k);
    free(raw);
    hr_apikeys_destroy(ks);
}

HR_TEST(lookup_compares_every_hash_whichever_matches)
{
    hr_apikeys_t *ks = keys();
    const char *probe[] = {"orders-key", "ops-key", "any-key", "nobody"};
    const char *want[] = {"orders", "ops", "any", NULL};
    /*
     * First round: no key was seen, each lookup compares the three
     * remembered keys, then the three hashes. Second round: a known key
     * matches among the remembered ones (three comparisons, no hash); an
     * unknown one still takes both passes.
     */
    for (int round = 0; round < 2; round++) {
        for (size_t i = 0; i < HR_ARRAY_LEN(probe); i++) {
            memcmp_calls = 0;
            const hr_apikey_t *k = hr_apikeys_lookup(ks, probe[i], strlen(probe[i]));
            HR_CHECK_EQ_INT(memcmp_calls, round == 1 && want[i] != NULL ? 3 : 6);
            HR_CHECK_EQ_STR(k != NULL ? hr_apikey_name(k) : NULL, want[i]);
        }
    }
    hr_apikeys_destroy(ks);
}

HR_TEST(a_remembered_key_matches_only_itself)
{
    hr_apikeys_t *ks = keys();
    const hr_apikey_t *k = hr_apikeys_lookup(ks, "ops-key", 7);
    HR_REQUIRE(k != NULL);
    HR_CHECK(hr_apikeys_lookup(ks, "ops-key", 7) == k);
    /* Same length, a prefix, a longer one: none is taken for the remembered key. */
    HR_CHECK(hr_apikeys_lookup(ks, "ops-kez", 7) == NULL);
    HR_CHECK(hr_apikeys_lookup(ks, "ops-ke", 6) == NULL);
    HR_CHECK(hr_apikeys_lookup(ks, "ops-key2", 8) == NULL);
    char zeros[7] = {0};
    HR_CHECK(hr_apikeys_lookup(ks, zeros, 7) == NULL); /* the unset part of an entry */
    HR_CHECK(hr_apikeys_lookup(ks, "ops-key", 7) == k);
    hr_apikeys_destroy(ks);
}

HR_TEST(scopes_allow_only_listed_targets)
{
    hr_apikeys_t *ks = keys();
    const hr_apikey_t *orders = hr_apikeys_lookup(ks, "orders-key", 10);
    const hr_apikey_t *ops = hr_apikeys_lookup(ks, "ops-key", 7);
    const hr_apikey_t *any = hr_apikeys_lookup(ks, "any-key", 7);
    HR_CHECK(hr_apikey_allows_room(orders, "orders:42"));
    HR_CHECK(hr_apikey_allows_room(orders, "audit"));
    HR_CHECK(!hr_apikey_allows_room(orders, "orders"));
    HR_CHECK(!hr_apikey_allows_room(orders, "audit2"));
    HR_CHECK(!hr_apikey_allows_user(orders, "alice"));
    HR_CHECK(hr_apikey_allows_user(ops, "alice"));
    HR_CHECK(!hr_apikey_allows_user(ops, "carol"));
    HR_CHECK(hr_apikey_allows_room(ops, "anything"));
    HR_CHECK(hr_apikey_allows_user(any, "carol"));
    HR_CHECK(hr_apikey_allows_room(any, "x:y"));
    hr_apikeys_destroy(ks);
}

HR_TEST(check_gives_unknown_out_of_scope_and_over_rate)
{
    hr_apikeys_t *ks = keys();
    hr_apikey_result_t r;
    const char *alice[] = {"alice"}, *mixed[] = {"alice", "carol"};
    HR_CHECK_EQ_INT(hr_apikeys_check(ks, "nope", 4, alice, 1, NULL, 0, &r), HR_APIKEY_UNKNOWN);
    HR_CHECK(r.name == NULL);
    HR_CHECK_EQ_INT(hr_apikeys_check(ks, "", 0, alice, 1, NULL, 0, &r), HR_APIKEY_UNKNOWN);
    HR_CHECK_EQ_INT(hr_apikeys_check(ks, "ops-key", 7, mixed, 2, NULL, 0, &r),
                    HR_APIKEY_OUT_OF_SCOPE);
    HR_CHECK_EQ_STR(r.name, "ops");
    HR_CHECK_EQ_INT(hr_apikeys_check(ks, "ops-key", 7, alice, 1, NULL, 0, &r), 0);
    HR_CHECK_EQ_INT(hr_apikeys_check(ks, "orders-key", 10, alice, 1, NULL, 0, &r),
                    HR_APIKEY_OUT_OF_SCOPE);
    HR_CHECK_EQ_INT(hr_apikeys_check(ks, "orders-key", 10, NULL, 0, "billing:1", 0, &r),
                    HR_APIKEY_OUT_OF_SCOPE);
    /* Out of scope takes nothing: the burst of 3 is still whole. */
    for (int i = 0; i < 3; i++)
        HR_CHECK_EQ_INT(hr_apikeys_check(ks, "orders-key", 10, NULL, 0, "orders:1", 1000, &r), 0);
    HR_CHECK_EQ_INT(hr_apikeys_check(ks, "orders-key", 10, NULL, 0, "orders:1", 1000, &r),
                    HR_APIKEY_OVER_RATE);
    HR_CHECK_EQ_STR(r.name, "orders");
    HR_CHECK_EQ_INT(r.retry_after_s, 1);
    HR_CHECK_EQ_STR(hr_apikey_reason(HR_APIKEY_UNKNOWN), "unknown_key");
    HR_CHECK_EQ_STR(hr_apikey_reason(HR_APIKEY_OUT_OF_SCOPE), "out_of_scope");
    HR_CHECK_EQ_STR(hr_apikey_reason(HR_APIKEY_OVER_RATE), "over_rate");
    hr_apikeys_destroy(ks);
}

static hr_apikeys_t *
one_key(int rate, int burst)
{
    char hex[65];
    hex_of("k", hex);
    hr_apikey_config_t cfg = {.name = "k", .sha256 = hex, .rate = rate, .burst = burst};
    hr_apikeys_t *ks = NULL;
    if (hr_apikeys_create(&cfg, 1, &ks, NULL, 0) != 0)
        abort();
    return ks;
}

HR_TEST(token_bucket_refills_at_the_rate_up_to_the_burst)
{
    hr_apikeys_t *ks = one_key(2, 4); /* 2/s, bursts of 4 */
    const hr_apikey_t *k = hr_apikeys_lookup(ks, "k", 1);
    int retry = -1;
    uint64_t t = 5000000;
    for (int i = 0; i < 4; i++)
        HR_CHECK_EQ_INT(hr_apikey_take(ks, k, t, &retry), 0);
    HR_CHECK_EQ_INT(hr_apikey_take(ks, k, t, &retry), HR_APIKEY_OVER_RATE);
    HR_CHECK_EQ_INT(retry, 1);
    /* 499 ms give 0.998 of a request: not yet. */
    HR_CHECK_EQ_INT(hr_apikey_take(ks, k, t + 499, &retry), HR_APIKEY_OVER_RATE);
    HR_CHECK_EQ_INT(hr_apikey_take(ks, k, t + 500, &retry), 0);
    HR_CHECK_EQ_INT(hr_apikey_take(ks, k, t + 500, &retry), HR_APIKEY_OVER_RATE);
    /* An hour idle refills only up to the burst. */
    t += 3600 * 1000;
    for (int i = 0; i < 4; i++)
        HR_CHECK_EQ_INT(hr_apikey_take(ks, k, t, &retry), 0);
    HR_CHECK_EQ_INT(hr_apikey_take(ks, k, t, &retry), HR_APIKEY_OVER_RATE);
    /* A clock stepping back gives nothing. */
    HR_CHECK_EQ_INT(hr_apikey_take(ks, k, t - 100000, &retry), HR_APIKEY_OVER_RATE);
    HR_CHECK_EQ_INT(hr_apikey_take(ks, k, t + 500, &retry), 0);
    hr_apikeys_destroy(ks);
}

HR_TEST(retry_after_is_the_whole_seconds_until_a_request_fits)
{
    hr_apikeys_t *ks = one_key(1, 1);
    const hr_apikey_t *k = hr_apikeys_lookup(ks, "k", 1);
    int retry = 0;
    HR_CHECK_EQ_INT(hr_apikey_take(ks, k, 0, &retry), 0);
    HR_CHECK_EQ_INT(hr_apikey_take(ks, k, 1, &retry), HR_APIKEY_OVER_RATE);
    HR_CHECK_EQ_INT(retry, 1); /* 999 ms → 1 s */
    hr_apikeys_destroy(ks);

    /* A rate below one a second is not expressible; a slow bucket is burst 1, rate 1. */
    ks = one_key(3, 30);
    k = hr_apikeys_lookup(ks, "k", 1);
    for (int i = 0; i < 30; i++)
        HR_CHECK_EQ_INT(hr_apikey_take(ks, k, 0, &retry), 0);
    HR_CHECK_EQ_INT(hr_apikey_take(ks, k, 0, &retry), HR_APIKEY_OVER_RATE);
    HR_CHECK_EQ_INT(retry, 1); /* 334 ms */
    hr_apikeys_destroy(ks);

    /* Unlimited: rate 0 never refuses. */
    ks = one_key(0, 0);
    k = hr_apikeys_lookup(ks, "k", 1);
    for (int i = 0; i < 10000; i++)
        HR_CHECK_EQ_INT(hr_apikey_take(ks, k, 0, &retry), 0);
    hr_apikeys_destroy(ks);

    /* Burst defaults to the rate, and the first request finds a full bucket. */
    ks = one_key(5, 0);
    k = hr_apikeys_lookup(ks, "k", 1);
    for (int i = 0; i < 5; i++)
        HR_CHECK_EQ_INT(hr_apikey_take(ks, k, 123456, &retry), 0);
    HR_CHECK_EQ_INT(hr_apikey_take(ks, k, 123456, &retry), HR_APIKEY_OVER_RATE);
    hr_apikeys_destroy(ks);
}

HR_TEST(create_refuses_bad_entries)
{
    char hex[65], hex2[65];
    hex_of("a", hex);
    hex_of("b", hex2);
    char *badroom[] = {"orders*"};
    char *baduser[] = {""};
    hr_apikey_config_t bad[] = {
        {.name = "x", .sha256 = "abc"},
        {.name = "x", .sha256 = NULL},
        {.name = "", .sha256 = hex},
        {.name = "has space", .sha256 = hex},
        {.name = "x", .sha256 = hex, .rooms = badroom, .nrooms = 1},
        {.name = "x", .sha256 = hex, .users = baduser, .nusers = 1},
        {.name = "x", .sha256 = hex, .rate = -1},
    };
    char err[256];
    for (size_t i = 0; i < HR_ARRAY_LEN(bad); i++) {
        hr_apikeys_t *ks = NULL;
        err[0] = '\0';
        if (!HR_CHECK_EQ_INT(hr_apikeys_create(&bad[i], 1, &ks, err, sizeof(err)), HR_ERR))
            fprintf(stderr, "#   case %zu\n", i);
        HR_CHECK(err[0] != '\0');
    }
    char upper[65];
    for (int i = 0; i < 65; i++)
        upper[i] = (char)(hex[i] >= 'a' && hex[i] <= 'f' ? hex[i] - 32 : hex[i]);
    hr_apikey_config_t dup[] = {{.name = "a", .sha256 = hex}, {.name = "b", .sha256 = upper}};
    hr_apikeys_t *ks = NULL;
    HR_CHECK_EQ_INT(hr_apikeys_create(dup, 2, &ks, err, sizeof(err)), HR_ERR);
    hr_apikey_config_t dupname[] = {{.name = "a", .sha256 = hex}, {.name = "a", .sha256 = hex2}};
    HR_CHECK_EQ_INT(hr_apikeys_create(dupname, 2, &ks, err, sizeof(err)), HR_ERR);
}

HR_TEST(config_file_ingest_keys_load)
{
    char dir[] = "/tmp/test_apikey.XXXXXX", path[64];
    HR_REQUIRE(mkdtemp(dir) != NULL);
    snprintf(path, sizeof(path), "%s/herald.conf", dir);
    char hex[65];
    hex_of("orders-key", hex);
    FILE *f = fopen(path, "w");
    fprintf(f,
            "auth: { ingest_keys = (\n"
            "  { name = \"orders\"; sha256 = \"%s\"; rooms = [\"orders:*\"]; rate = 1; },\n"
            "  { name = \"none\"; sha256 = \"%064d\"; users = []; }\n"
            "); };\n",
            hex, 0);
    fclose(f);
    hr_apikey_config_t *cfg;
    size_t n;
    char err[256] = "";
    HR_REQUIRE_EQ_INT(hr_apikey_config_load(path, &cfg, &n, err, sizeof(err)), 0);
    HR_REQUIRE_EQ_INT(n, 2);
    hr_apikeys_t *ks = NULL;
    HR_REQUIRE_EQ_INT(hr_apikeys_create(cfg, n, &ks, err, sizeof(err)), 0);
    hr_apikey_config_free(cfg, n);
    hr_apikey_result_t r;
    const char *alice[] = {"alice"};
    HR_CHECK_EQ_INT(hr_apikeys_check(ks, "orders-key", 10, NULL, 0, "orders:7", 0, &r), 0);
    HR_CHECK_EQ_INT(hr_apikeys_check(ks, "orders-key", 10, alice, 1, NULL, 0, &r),
                    HR_APIKEY_OUT_OF_SCOPE);
    HR_CHECK_EQ_INT(hr_apikeys_check(ks, "orders-key", 10, NULL, 0, "orders:7", 10, &r),
                    HR_APIKEY_OVER_RATE);
    /* "users = []" scopes the key to nothing. */
    HR_CHECK(!hr_apikey_allows_user(&ks->keys[1], "alice"));
    hr_apikeys_destroy(ks);

    f = fopen(path, "w");
    fprintf(f, "auth: { ingest_keys = ( { name = \"x\"; users = \"alice\"; } ); };\n");
    fclose(f);
    HR_CHECK_EQ_INT(hr_apikey_config_load(path, &cfg, &n, err, sizeof(err)), HR_ERR);
    f = fopen(path, "w");
    fprintf(f, "log: { level = \"info\"; };\n");
    fclose(f);
    HR_CHECK_EQ_INT(hr_apikey_config_load(path, &cfg, &n, err, sizeof(err)), 0);
    HR_CHECK_EQ_INT(n, 0);
    hr_apikey_config_free(cfg, n);
    unlink(path);
    rmdir(dir);
}

HR_TEST(example_config_dev_key_is_the_documented_one)
{
    hr_apikey_config_t *cfg;
    size_t n;
    char err[256] = "";
    HR_REQUIRE_EQ_INT(hr_apikey_config_load(HERALD_SOURCE_DIR "/deploy/herald.conf.example", &cfg,
                                            &n, err, sizeof(err)),
                      0);
    hr_apikeys_t *ks = NULL;
    HR_REQUIRE_EQ_INT(hr_apikeys_create(cfg, n, &ks, err, sizeof(err)), 0);
    hr_apikey_config_free(cfg, n);
    const hr_apikey_t *k = hr_apikeys_lookup(ks, "dev-ingest-key-change-me", 24);
    HR_CHECK(k != NULL && strcmp(hr_apikey_name(k), "dev") == 0);
    hr_apikeys_destroy(ks);
}

HR_TEST_MAIN()
