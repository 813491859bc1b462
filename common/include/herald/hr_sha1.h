/*
 * SHA-1 (FIPS 180-4), for ingest's idempotency records: the stored value is
 * sha1hex("<path>\n<body>") + answer (proto/redis.md), the same digest the
 * script once took with redis.sha1hex, so records written before and after
 * hashing moved into ingest still match. A fingerprint of one caller's own
 * request within its own key scope, not a security boundary.
 */
#ifndef HERALD_HR_SHA1_H
#define HERALD_HR_SHA1_H

#include <stddef.h>
#include <stdint.h>

#define HR_SHA1_LEN 20
#define HR_SHA1_HEX_LEN 41 /* 40 lowercase hex digits + NUL */

typedef struct {
    uint32_t h[5];
    uint64_t total; /* bytes hashed so far */
    uint8_t block[64];
    size_t used; /* bytes waiting in block */
} hr_sha1_t;

/** Starts a digest. */
void hr_sha1_init(hr_sha1_t *c);
/** Adds len bytes. */
void hr_sha1_update(hr_sha1_t *c, const void *data, size_t len);
/** Finishes the digest into out; c must be initialised again before reuse. */
void hr_sha1_final(hr_sha1_t *c, uint8_t out[HR_SHA1_LEN]);
/** Lowercase hex of a digest, NUL-terminated. */
void hr_sha1_hex(const uint8_t d[HR_SHA1_LEN], char out[HR_SHA1_HEX_LEN]);

#endif
