/*
 * Ingest's callers (proto/auth.md, "Ingest"): the API key of each request
 * (Authorization: Bearer <key>), the targets it may notify and its rate, on
 * top of hr_apikey. Every refusal is answered here in JSON: 401 unknown_key
 * (with WWW-Authenticate), 403 out_of_scope, 429 over_rate (with
 * Retry-After). No log line and no answer holds the key itself.
 */
#ifndef HERALD_ING_AUTH_H
#define HERALD_ING_AUTH_H

#include "hr_proto.h"
#include "ing_metrics.h"
#include "herald/hr_apikey.h"

#include "herald/hr_httpd.h"
#include <stddef.h>

#define ING_AUTH_ANONYMOUS "anonymous" /* the name of a caller without a key */

typedef struct ing_auth_s ing_auth_t;

/** Who sent a request. */
typedef struct {
    const hr_apikey_t *key; /* borrowed from the auth; NULL: anonymous (no scope, no rate) */
    const char *name;       /* borrowed: the key's name, or ING_AUTH_ANONYMOUS */
} ing_caller_t;

/**
 * Loads auth.ingest_keys of the config file at path (NULL: none, so every
 * request is refused unless allow_anonymous) and builds the key table.
 * Logs a warning when allow_anonymous is on. Returns 0 and *out, or HR_ERR
 * with err filled (a bad key entry refuses the start).
 */
int ing_auth_create(const char *path, int allow_anonymous, ing_metrics_t *metrics, ing_auth_t **out,
                    char *err, size_t errlen);
void ing_auth_destroy(ing_auth_t *a);

/** Whether req's path needs no key (/healthz, /readyz, /metrics). */
int ing_auth_open_path(hr_httpd_req_t *req);

/**
 * Identifies the caller of req from its Authorization header. Returns 0 with
 * *c filled, or HR_DECLINED after answering 401 unknown_key. The key's name
 * is on the request's access line (ing_metrics).
 */
int ing_auth_identify(ing_auth_t *a, hr_httpd_req_t *req, ing_caller_t *c);

/** Whether c may notify user. */
int ing_auth_allows_user(const ing_caller_t *c, const char *user);
/** Whether c may notify every target of r (user_id, each of user_ids, or room). */
int ing_auth_allows_request(const ing_caller_t *c, const hr_proto_request_t *r);
/** Answers 403 out_of_scope for c (what: the target refused, for the message). */
void ing_auth_send_out_of_scope(ing_auth_t *a, hr_httpd_req_t *req, const ing_caller_t *c,
                                const char *what);

/**
 * Takes one request from c's bucket. Returns 0, or HR_DECLINED after
 * answering 429 over_rate with Retry-After.
 */
int ing_auth_admit(ing_auth_t *a, hr_httpd_req_t *req, const ing_caller_t *c);

/**
 * What POST /notifications checks once its body is valid: every target in
 * scope (else 403), then the rate (else 429). Returns 0, or HR_DECLINED
 * after answering.
 */
int ing_auth_check_request(ing_auth_t *a, hr_httpd_req_t *req, const ing_caller_t *c,
                           const hr_proto_request_t *r);

#endif
