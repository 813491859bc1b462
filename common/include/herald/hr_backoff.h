/* Capped exponential backoff with jitter, for any reconnecting client (Redis, PostgreSQL). */
#ifndef HERALD_HR_BACKOFF_H
#define HERALD_HR_BACKOFF_H

#include <stdint.h>

/** Capped exponential backoff with jitter. */
typedef struct {
    uint32_t min_ms, max_ms, cur_ms;
} hr_backoff_t;

void hr_backoff_init(hr_backoff_t *b, uint32_t min_ms, uint32_t max_ms);
/** The next delay to wait: doubles from min up to max, within ±25 % jitter. */
uint32_t hr_backoff_next(hr_backoff_t *b);
/** Starts again from min (after a success). */
void hr_backoff_reset(hr_backoff_t *b);

#endif
