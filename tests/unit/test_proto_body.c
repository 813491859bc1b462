/*
 * proto/hr_proto_body.c, the one-pass parser of POST /notifications bodies,
 * against the tree parser it stands in for (hr_proto.c's hr_proto_parse_tree,
 * reached by including the .c): whatever the one-pass parser accepts, the
 * tree parser accepts with the same fields, and the public entry points answer
 * every body, valid or not, exactly as the tree parser alone did (status, code,
 * message). Seeds cover each field and escape; mutations cover the rest.
 */
#include "hr_test.h"

#include "proto/hr_proto.c"

#include "hr_proto_body.h"

#include <stdint.h>
#include <stdio.h>
#include <string.h>

/* What the entry points answered before the one-pass parser: size, text, tree. */
static int
reference_parse(const char *body, size_t len, size_t max, int targets, hr_proto_request_t *r,
                hr_proto_err_t *e)
{
    memset(r, 0, sizeof(*r));
    if (len > max)
        return hr_proto_fail(e, 413, HR_E_BODY_TOO_LARGE, "body is larger than %zu bytes", max);
    int text = hr_proto_text_check(body, len);
    if (text == HR_PROTO_TEXT_NOT_UTF8)
        return hr_proto_fail(e, 400, HR_E_INVALID_JSON, "body is not valid UTF-8");
    if (text == HR_PROTO_TEXT_NUL_ESCAPE)
        return hr_proto_fail(e, 400, HR_E_INVALID_JSON, "\\u0000 is not allowed in strings");
    return hr_proto_parse_tree(body, len, targets, r, e);
}

static int
same_str(const char *a, const char *b)
{
    return (a == NULL && b == NULL) || (a != NULL && b != NULL && strcmp(a, b) == 0);
}

/* Whether two parsed requests carry the same fields; says which differs. */
static int
same_request(const hr_proto_request_t *a, const hr_proto_request_t *b, const char *body)
{
    const char *what = NULL;
    if (!same_str(a->n.user_id, b->n.user_id))
        what = "user_id";
    else if (!same_str(a->n.room, b->n.room))
        what = "room";
    else if (!same_str(a->n.type, b->n.type))
        what = "type";
    else if (!same_str(a->n.message, b->n.message))
        what = "message";
    else if (!same_str(a->n.data_json, b->n.data_json))
        what = "data";
    else if (a->nusers != b->nusers || (a->user_ids == NULL) != (b->user_ids == NULL))
        what = "user_ids";
    for (size_t i = 0; what == NULL && a->user_ids != NULL && i < a->nusers; i++)
        if (strcmp(a->user_ids[i], b->user_ids[i]) != 0)
            what = "user_ids[i]";
    if (what != NULL)
        HR_FAIL("%s differs for %s", what, body);
    return what == NULL;
}

typedef struct {
    long inputs, fast, tree_ok;
} tally_t;

/*
 * One body in an exact-size heap copy (ASan sees any read past its end):
 * the one-pass parser says yes only where the tree parser does, with the
 * same fields, and both public entry points answer as before.
 */
static int
check_body(const char *text, size_t len, tally_t *t)
{
    char *body = hr_malloc(len ? len : 1);
    memcpy(body, text, len);
    int ok = 1;
    t->inputs++;
    for (int targets = 0; targets <= 1 && ok; targets++) {
        hr_proto_request_t want, got;
        hr_proto_err_t we, ge;
        int wrc = reference_parse(body, len, HR_BODY_MAX, targets, &want, &we);
        if (wrc == 0)
            t->tree_ok++;
        memset(&got, 0, sizeof(got));
        if (hr_proto_body_scan(body, len, targets, &got) == 0) {
            t->fast++;
            if (wrc != 0) {
                HR_FAIL("one-pass parser accepted (targets=%d) what the tree refuses (%s): %.*s",
                        targets, we.message, (int)len, body);
                ok = 0;
            } else {
                ok = same_request(&want, &got, body);
            }
            hr_proto_request_clear(&got);
        }
        /* The public entry points: same answer, valid or not. */
        memset(&ge, 0, sizeof(ge));
        int grc = targets ? hr_proto_parse_targets(body, len, HR_BODY_MAX, &got, &ge)
                          : hr_proto_parse_request(body, len, &got.n, &ge);
        if (grc != wrc) {
            HR_FAIL("rc %d, want %d (targets=%d): %.*s", grc, wrc, targets, (int)len, body);
            ok = 0;
        } else if (grc != 0 && (ge.status != we.status || strcmp(ge.code, we.code) != 0 ||
                                strcmp(ge.message, we.message) != 0)) {
            HR_FAIL("error %d %s \"%s\", want %d %s \"%s\": %.*s", ge.status, ge.code, ge.message,
                    we.status, we.code, we.message, (int)len, body);
            ok = 0;
        } else if (grc == 0) {
            if (targets) {
                ok = same_request(&want, &got, body);
                hr_proto_request_clear(&got);
            } else {
                ok = same_str(got.n.user_id, want.n.user_id) && same_str(got.n.type, want.n.type) &&
                     same_str(got.n.message, want.n.message) &&
                     same_str(got.n.data_json, want.n.data_json);
                if (!ok)
                    HR_FAIL("parse_request fields differ: %.*s", (int)len, body);
                hr_notification_clear(&got.n);
            }
        }
        if (wrc == 0)
            hr_proto_request_clear(&want);
    }
    hr_free(body);
    return ok;
}

static const char *const seeds[] = {
    "{\"user_id\":\"user1\",\"type\":\"comment\",\"message\":\"bench message "
    "1\",\"data\":{\"n\":1}}",
    "{\"user_id\":\"u\",\"message\":\"m\"}",
    " { \"message\" : \"hi\" , \"user_id\" : \"alice\" , \"type\" : null , \"data\" : null } ",
    "{\"room\":\"lobby.main:1@x-y_z\",\"message\":\"to the room\",\"type\":\"chat\"}",
    "{\"user_ids\":[\"a\",\"b\",\"c\"],\"message\":\"fan\",\"data\":{\"k\":[1,2,{\"z\":true}]}}",
    "{\"user_id\":\"\\u00e9l\\u00e8ve\",\"message\":\"tab\\tnl\\nq\\\"bs\\\\sl\\/\\b\\f\\r\"}",
    "{\"user_id\":\"caf\xc3\xa9\",\"message\":\"\xf0\x9f\x98\x80 "
    "\xe2\x82\xac\",\"type\":\"t\\u20ac\"}",
    "{\"user_id\":\"u\",\"message\":\"m\",\"data\":{\"big\":12345678901234567890123,\"f\":-0.5e+3,"
    "\"s\":\"x y\\\"z\",\"n\":null,\"o\":{},\"a\":[]}}",
    "{\"user_id\":\"u\",\"message\":\"m\",\"data\":{ \"a\" : [ 1 , \"b c\" , { \"d\" : false } ] "
    "}}",
    "{\"user_id\":\"u\",\"message\":\"\\ud83d\\ude00 pair\"}",
    "{\"user_id\":\"u\",\"message\":\"m\",\"data\":{\"a\":1,\"a\":2}}",
    "{\"user_id\":\"u\",\"message\":\"m\",\"data\":{\"\\u0061\":1,\"a\":2}}",
    "{\"user_id\":\"u\",\"type\":null,\"type\":\"x\",\"message\":\"m\"}",
    "{\"\\u0075ser_id\":\"u\",\"message\":\"m\"}",
    "{\"user_ids\":[\"a\",\"a\"],\"message\":\"m\"}",
    "{\"user_ids\":[],\"message\":\"m\"}",
    "{\"user_id\":\"u\",\"room\":\"r\",\"message\":\"m\"}",
    "{\"user_id\":\"u\",\"message\":\"\"}",
    "{\"user_id\":\"a\\u007fb\",\"message\":\"m\"}",
    "{\"user_id\":\"u\",\"message\":\"m\",\"data\":{\"n\":"
    "1234567890123456789012345678901234567890123456789012345678901234567890}}",
    "{\"user_id\":\"u\",\"message\":\"m\",\"extra\":1}",
    "{\"user_id\":\"u\",\"message\":\"m\",\"data\":[1]}",
    "{\"user_id\":\"u\",\"message\":\"m\"} x",
    "[\"user_id\"]",
    "{}",
    "{\"room\":\"bad room\",\"message\":\"m\"}",
    "{\"user_id\":\"u\",\"message\":\"m\",\"data\":{\"\\ud800\":1}}",
    "{\"user_id\":\"u\",\"message\":\"a\\u0000b\"}",
    "{\"user_id\":\"u\",\"message\":\"\xed\xa0\x80\"}",
    "{\"user_id\":\"u\",\"message\":\"\xc0\xaf\"}",
    "{\"user_id\":\"u\",\"message\":\"\xf4\x90\x80\x80\"}",
    "{\"user_id\":\"u\",\"message\":\"\xe2\x82\"}",
};

HR_TEST(one_pass_parser_takes_the_common_bodies)
{
    /* The first seeds are valid and plain: the one-pass parser must take them (the point of it). */
    for (size_t i = 0; i < 9; i++) {
        hr_proto_request_t r;
        memset(&r, 0, sizeof(r));
        size_t len = strlen(seeds[i]);
        if (!HR_CHECK_EQ_INT(hr_proto_body_scan(seeds[i], len, 1, &r), 0))
            HR_FAIL("declined: %s", seeds[i]);
        else
            HR_CHECK(r.strings != NULL && r.tree == NULL);
        hr_proto_request_clear(&r);
    }
}

/* {"user_id":"u","message":"m","data":{"a":{"a":…[]…}}}: depth levels in all. */
static char *
nested_body(int depth)
{
    char *b = malloc(64 + 6 * (size_t)depth);
    int n = sprintf(b, "{\"user_id\":\"u\",\"message\":\"m\",\"data\":");
    for (int i = 1; i < depth - 1; i++)
        n += sprintf(b + n, "{\"a\":");
    b[n++] = '[';
    b[n++] = ']';
    for (int i = 1; i < depth - 1; i++)
        b[n++] = '}';
    strcpy(b + n, "}");
    return b;
}

HR_TEST(one_pass_parser_takes_nothing_ingest_finds_too_deep)
{
    /* Ingest skips its depth pass for what this parser takes (ing_handle_post). */
    for (int depth = HR_JSON_DEPTH_MAX - 1; depth <= HR_JSON_DEPTH_MAX + 2; depth++) {
        char *b = nested_body(depth);
        size_t len = strlen(b);
        hr_proto_request_t r;
        memset(&r, 0, sizeof(r));
        int taken = hr_proto_body_scan(b, len, 1, &r) == 0;
        int deep = hr_json_deeper_than(b, len, HR_JSON_DEPTH_MAX);
        HR_CHECK_EQ_INT(deep, depth > HR_JSON_DEPTH_MAX);
        if (taken && deep)
            HR_FAIL("depth %d: taken by the one-pass parser, yet too deep", depth);
        if (depth <= HR_JSON_DEPTH_MAX)
            HR_CHECK(taken); /* the common case stays on the fast path */
        hr_proto_request_clear(&r);
        free(b);
    }
}

HR_TEST(one_pass_parser_fields_of_a_fan_out_with_escapes)
{
    const char *b = "{\"user_ids\":[\"a\\u00e9\",\"b\"],\"message\":\"x\\ny\",\"type\":null,"
                    "\"data\":{ \"k\" : [ 1 , \"s t\" ] }}";
    hr_proto_request_t r;
    memset(&r, 0, sizeof(r));
    HR_REQUIRE_EQ_INT(hr_proto_body_scan(b, strlen(b), 1, &r), 0);
    HR_CHECK_EQ_UINT(r.nusers, 2);
    HR_CHECK_EQ_STR(r.user_ids[0], "a\xc3\xa9");
    HR_CHECK_EQ_STR(r.user_ids[1], "b");
    HR_CHECK_EQ_STR(r.n.message, "x\ny");
    HR_CHECK_EQ_STR(r.n.type, HR_TYPE_DEFAULT);
    HR_CHECK_EQ_STR(r.n.data_json, "{\"k\":[1,\"s t\"]}");
    HR_CHECK(r.n.user_id == NULL && r.n.room == NULL);
    hr_proto_request_clear(&r);
}

HR_TEST(one_pass_parser_declines_what_cjson_or_the_tree_decides)
{
    /* Surrogates, repeated or escaped names, long numbers, errors: the tree parser answers. */
    for (size_t i = 9; i < HR_ARRAY_LEN(seeds); i++) {
        hr_proto_request_t r;
        memset(&r, 0, sizeof(r));
        if (!HR_CHECK_EQ_INT(hr_proto_body_scan(seeds[i], strlen(seeds[i]), 1, &r), HR_DECLINED)) {
            HR_FAIL("accepted: %s", seeds[i]);
            hr_proto_request_clear(&r);
        }
    }
}

HR_TEST(seeds_answer_as_the_tree_parser)
{
    tally_t t = {0};
    for (size_t i = 0; i < HR_ARRAY_LEN(seeds); i++)
        check_body(seeds[i], strlen(seeds[i]), &t);
}

/* Pieces a mutation inserts: JSON's punctuation, the member names, escapes, UTF-8. */
static const char *const pieces[] = {
    "\"",
    "\\",
    "{",
    "}",
    "[",
    "]",
    ",",
    ":",
    " ",
    "\n",
    "\t",
    "0",
    "1",
    "-",
    ".",
    "e",
    "null",
    "true",
    "false",
    "\"user_id\"",
    "\"user_ids\"",
    "\"room\"",
    "\"type\"",
    "\"data\"",
    "\"message\"",
    "\"x\"",
    "\\u00e9",
    "\\u0041",
    "\\ud83d",
    "\\ude00",
    "\\n",
    "\\\"",
    "\xc3\xa9",
    "\x7f",
    "\x01",
    "\"a\":1,",
    "\xed\xa0\x80",
    "\xc0\xaf",
    "\xf4\x90\x80\x80",
    "\xe2\x82",
    "\x80",
    "{\"a\":",
    "u",
    "\\u0000",
    "\xff",
    "\"lobby\"",
    "[\"a\",\"b\"]",
};

static uint32_t
rnd(uint32_t *seed)
{
    *seed = *seed * 1103515245u + 12345u;
    return *seed >> 8;
}

HR_TEST(mutated_bodies_answer_as_the_tree_parser)
{
    uint32_t seed = 2024;
    tally_t t = {0};
    char buf[512];
    for (int round = 0; round < 60000; round++) {
        const char *s = seeds[rnd(&seed) % HR_ARRAY_LEN(seeds)];
        size_t len = strlen(s);
        memcpy(buf, s, len);
        int muts = 1 + (int)(rnd(&seed) % 3);
        for (int m = 0; m < muts; m++) {
            size_t at = len ? rnd(&seed) % (len + 1) : 0;
            uint32_t kind = rnd(&seed) % 4;
            if (kind == 0 || kind == 1) { /* insert a piece */
                const char *p = pieces[rnd(&seed) % HR_ARRAY_LEN(pieces)];
                size_t pl = strlen(p);
                if (len + pl >= sizeof(buf))
                    continue;
                memmove(buf + at + pl, buf + at, len - at);
                memcpy(buf + at, p, pl);
                len += pl;
            } else if (kind == 2 && at < len) { /* delete a short range */
                size_t n = 1 + rnd(&seed) % 8;
                if (n > len - at)
                    n = len - at;
                memmove(buf + at, buf + at + n, len - at - n);
                len -= n;
            } else if (at < len) { /* repeat a short range */
                size_t n = 1 + rnd(&seed) % 16;
                if (n > len - at)
                    n = len - at;
                if (len + n >= sizeof(buf))
                    continue;
                memmove(buf + at + n, buf + at, len - at);
                len += n;
            }
        }
        if (!check_body(buf, len, &t))
            return;
    }
    /* The mutations must reach both parsers' yes, or the comparison proves little. */
    HR_CHECK_CMP_INT(t.fast, >, 1000);
    HR_CHECK_CMP_INT(t.tree_ok, >, t.fast);
    printf("# %ld bodies, tree accepted %ld, one-pass accepted %ld\n", t.inputs, t.tree_ok, t.fast);
}

HR_TEST_MAIN()
