/*
 * UUIDv7 (RFC 9562): 48-bit Unix ms timestamp, version 7, a 12-bit counter in
 * rand_a that keeps ids from one generator strictly increasing within a
 * millisecond, variant 10, and 62 random bits. Ids sort by creation time, which
 * history's keyset pagination relies on.
 */
#ifndef HERALD_HR_UUID_H
#define HERALD_HR_UUID_H

#include <stddef.h>
#include <stdint.h>

#define HR_UUID_STR_LEN 37 /* 36 chars + NUL */

typedef struct {
    uint64_t last_ms;   /* timestamp of the last id */
    uint16_t seq;       /* 12-bit counter within last_ms */
    uint8_t pool[1024]; /* buffered getrandom() output (a getrandom per ~50 ids) */
    size_t pool_used;
} hr_uuid_gen_t;

/** Prepares a generator; one per process (or per thread). */
void hr_uuid_gen_init(hr_uuid_gen_t *g);
/**
 * Writes the next id for wall-clock time now_ms. Never goes backwards: if the
 * clock steps back, ids keep counting from the last timestamp.
 */
void hr_uuid7_next(hr_uuid_gen_t *g, uint64_t now_ms, uint8_t out[16]);
/** Lowercase 8-4-4-4-12 text form. */
void hr_uuid_format(const uint8_t u[16], char out[HR_UUID_STR_LEN]);
/** Parses the text form (either case); returns 0 or HR_DECLINED. */
int hr_uuid_parse(const char *s, uint8_t out[16]);
/** The ms timestamp carried by a v7 id. */
uint64_t hr_uuid7_ms(const uint8_t u[16]);

#endif
