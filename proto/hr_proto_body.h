/*
 * The fast path of the POST /notifications body parser (hr_proto.c): one
 * pass over the text, no cJSON tree. Internal to proto/; the tests reach it
 * directly to compare it with the tree parser.
 */
#ifndef HERALD_HR_PROTO_BODY_H
#define HERALD_HR_PROTO_BODY_H

#include "hr_proto.h"

#include <stddef.h>

/**
 * Parses body[0..len) into r (zeroed by the caller) when it is valid UTF-8
 * without NUL and a valid notification body that the tree parser would
 * accept with the same fields;
 * with targets, "user_ids" and "room" are allowed besides "user_id". Returns 0
 * (r filled, its strings in r->strings), or HR_DECLINED with r untouched:
 * the body is invalid, or needs cJSON's own rules to decide (surrogate
 * escapes, long numbers, deep nesting, escaped member names). The tree
 * parser then answers, with its exact error.
 */
int hr_proto_body_scan(const char *body, size_t len, int targets, hr_proto_request_t *r);

#endif
