/* JSON helpers over cJSON: allocation through hr_alloc, bounded parsing. */
#ifndef HERALD_HR_JSON_H
#define HERALD_HR_JSON_H

#include <cjson/cJSON.h>
#include <stddef.h>

/** Routes cJSON's allocations through hr_malloc; call once in main. */
void hr_json_init(void);
/**
 * Parses exactly len bytes as one JSON value (RFC 8259, strictly: no raw
 * control characters in strings, no "01" or "1.", no object naming a member
 * twice, at any depth) that must be an object.
 * Returns 0 and *out (owned by the caller), or HR_DECLINED with err filled.
 */
int hr_json_parse_object(const char *buf, size_t len, cJSON **out, char *err, size_t errlen);
/**
 * The text of the value of member key in the JSON object buf[0..len), which
 * hr_json_parse_object() accepted, without insignificant white space and
 * otherwise as sent (numbers keep every digit); member names are unique
 * there. Owned by the caller (hr_free), or NULL if there is none.
 */
char *hr_json_member_text(const char *buf, size_t len, const char *key);
/** The string member key, or NULL if absent or not a string (borrowed). */
const char *hr_json_get_str(const cJSON *obj, const char *key);
/** Compact serialization, owned by the caller (hr_free). */
char *hr_json_print(const cJSON *item);
/** Whether buf[0..len) is well-formed UTF-8 with no NUL byte. */
int hr_utf8_valid(const char *buf, size_t len);
/** Whether a JSON text contains the escape \u0000, which PostgreSQL text and jsonb refuse. */
int hr_json_has_nul_escape(const char *buf, size_t len);
/**
 * Whether the JSON text buf[0..len) nests objects and arrays more than max
 * deep (the outermost container is level 1). A byte scan that skips
 * strings; it does not validate the text (the parser does).
 */
int hr_json_deeper_than(const char *buf, size_t len, int max);
#endif
