#include "herald/hr_backoff.h"
#include "herald/hr_time.h"

#include <sys/random.h>

void
hr_backoff_init(hr_backoff_t *b, uint32_t min_ms, uint32_t max_ms)
{
    b->min_ms = min_ms;
    b->max_ms = max_ms;
    b->cur_ms = 0;
}

uint32_t
hr_backoff_next(hr_backoff_t *b)
{
    b->cur_ms = b->cur_ms == 0 ? b->min_ms : b->cur_ms * 2;
    if (b->cur_ms > b->max_ms)
        b->cur_ms = b->max_ms;
    /* ±25% jitter so a fleet does not reconnect in lockstep after an outage. */
    uint32_t r = 0;
    if (getrandom(&r, sizeof(r), GRND_NONBLOCK) != sizeof(r))
        r = (uint32_t)hr_mono_us();
    uint32_t span = b->cur_ms / 2 + 1;
    return b->cur_ms - b->cur_ms / 4 + r % span;
}

void
hr_backoff_reset(hr_backoff_t *b)
{
    b->cur_ms = 0;
}
