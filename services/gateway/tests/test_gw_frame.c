/* gw_frame: the checks of a client's frame, in the order gw_server.c reports them. */
#include "hr_test.h"

#include "gw_frame.h"
#include "herald/hr_core.h"

#include <string.h>

/* The code the frame is refused with, or "ok"; kind is set when checked. */
static const char *
verdict(const char *frame, gw_frame_t *f)
{
    static char code[32];
    snprintf(code, sizeof(code), "ok");
    if (gw_frame_parse(frame, strlen(frame), 32, f) != 0 || gw_frame_check(f) != 0)
        snprintf(code, sizeof(code), "%s", f->code);
    gw_frame_clear(f);
    return code;
}

HR_TEST(a_frame_that_is_not_a_json_object_is_invalid_json_without_a_tree)
{
    gw_frame_t f;
    HR_CHECK_EQ_INT(gw_frame_parse("[1]", 3, 32, &f), HR_DECLINED);
    HR_CHECK_EQ_STR(f.code, "invalid_json");
    HR_CHECK(f.root == NULL);
    HR_CHECK_CONTAINS(f.why, "object");
    gw_frame_clear(&f);
    HR_CHECK_EQ_STR(verdict("{\"type\":\"join\",\"room\":\"ok\\u0000bad room!\"}", &f),
                    "invalid_json");
    HR_CHECK_EQ_INT(gw_frame_parse("{\"type\":\"ping\"}\0x", 17, 32, &f), HR_DECLINED);
    gw_frame_clear(&f);
}

HR_TEST(a_frame_nested_deeper_than_the_limit_is_too_deep_before_parsing)
{
    gw_frame_t f;
    HR_CHECK_EQ_INT(gw_frame_parse("{\"a\":[[{}]]}", 12, 3, &f), HR_DECLINED);
    HR_CHECK_EQ_STR(f.code, "json_too_deep");
    HR_CHECK(f.root == NULL);
    gw_frame_clear(&f);
    HR_CHECK_EQ_INT(gw_frame_parse("{\"a\":[[\"{{{{\"]]}", 16, 3, &f), 0);
    gw_frame_clear(&f);
    HR_CHECK_EQ_STR(verdict("{\"type\":\"refresh\"}", &f), "missing_field");
    HR_CHECK_EQ_STR(verdict("{\"type\":\"refresh\",\"token\":1}", &f), "invalid_field");
    HR_CHECK_EQ_STR(verdict("{\"type\":\"refresh\",\"token\":\"a.b.c\"}", &f), "ok");
}

HR_TEST(a_bad_ref_keeps_the_tree_so_the_frame_still_costs_a_command)
{
    gw_frame_t f;
    HR_CHECK_EQ_INT(gw_frame_parse("{\"type\":\"ping\",\"ref\":[1]}", 25, 32, &f), HR_DECLINED);
    HR_CHECK_EQ_STR(f.code, "invalid_field");
    HR_CHECK(f.root != NULL);
    HR_CHECK(f.ref == NULL);
    gw_frame_clear(&f);
}

HR_TEST(types_and_fields_are_checked_in_order)
{
    gw_frame_t f;
    HR_CHECK_EQ_STR(verdict("{\"ref\":1}", &f), "missing_field");
    HR_CHECK_EQ_STR(verdict("{\"type\":\"refresh!\"}", &f), "unknown_type");
    HR_CHECK_EQ_STR(verdict("{\"type\":\"ping\",\"ref\":\"a\"}", &f), "ok");
    HR_CHECK_EQ_INT(f.kind, GW_FRAME_PING);
    HR_CHECK_EQ_STR(verdict("{\"type\":\"join\"}", &f), "missing_field");
    HR_CHECK_EQ_STR(verdict("{\"type\":\"join\",\"room\":\"a b\"}", &f), "invalid_room");
    HR_CHECK_EQ_STR(verdict("{\"type\":\"leave\",\"room\":7}", &f), "invalid_room");
    HR_CHECK_EQ_STR(verdict("{\"type\":\"publish\",\"room\":\"r\"}", &f), "missing_field");
    HR_CHECK_EQ_STR(verdict("{\"type\":\"publish\",\"room\":\"r\",\"message\":\"\"}", &f),
                    "invalid_field");
    HR_CHECK_EQ_STR(
        verdict("{\"type\":\"publish\",\"room\":\"r\",\"message\":\"m\",\"idempotency_key\":1}",
                &f),
        "invalid_field");
    HR_CHECK_EQ_STR(verdict("{\"type\":\"presence\",\"room\":\"r\",\"cursor\":\"1a\"}", &f),
                    "invalid_field");
    HR_CHECK_EQ_STR(verdict("{\"type\":\"presence\",\"room\":\"r\",\"cursor\":null}", &f), "ok");
}

HR_TEST(an_accepted_frame_hands_its_fields_to_the_server)
{
    static const char pub[] = "{\"type\":\"publish\",\"room\":\"team:ops\",\"message\":\"hi\","
                              "\"idempotency_key\":\"k-1\","
                              "\"ref\":9}";
    gw_frame_t f;
    HR_REQUIRE_EQ_INT(gw_frame_parse(pub, strlen(pub), 32, &f), 0);
    HR_REQUIRE_EQ_INT(gw_frame_check(&f), 0);
    HR_CHECK_EQ_INT(f.kind, GW_FRAME_PUBLISH);
    HR_CHECK_EQ_STR(f.room, "team:ops");
    HR_CHECK_EQ_STR(f.message, "hi");
    HR_CHECK_EQ_STR(f.idem_key, "k-1");
    HR_CHECK(cJSON_IsNumber(f.ref));
    HR_CHECK(f.code == NULL);
    gw_frame_clear(&f);
    static const char pres[] = "{\"type\":\"presence\",\"room\":\"r\",\"cursor\":\"120\"}";
    HR_REQUIRE_EQ_INT(gw_frame_parse(pres, strlen(pres), 32, &f), 0);
    HR_REQUIRE_EQ_INT(gw_frame_check(&f), 0);
    HR_CHECK_EQ_STR(f.cursor, "120");
    gw_frame_clear(&f);
    HR_CHECK(!gw_frame_cursor_valid("123456789012345678901"));
    HR_CHECK(gw_frame_cursor_valid("12345678901234567890"));
}

HR_TEST_MAIN()
