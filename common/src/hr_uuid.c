#include "herald/hr_uuid.h"
#include "herald/hr_core.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

static void
hr_uuid_random(hr_uuid_gen_t *g, uint8_t *out, size_t n)
{
    if (g->pool_used + n > sizeof(g->pool)) {
        size_t got = 0;
        while (got < sizeof(g->pool)) {
            ssize_t r = getrandom(g->pool + got, sizeof(g->pool) - got, 0);
            if (r < 0) {
                perror("herald: getrandom");
                abort();
            }
            got += (size_t)r;
        }
        g->pool_used = 0;
    }
    memcpy(out, g->pool + g->pool_used, n);
    g->pool_used += n;
}

void
hr_uuid_gen_init(hr_uuid_gen_t *g)
{
    memset(g, 0, sizeof(*g));
    g->pool_used = sizeof(g->pool); /* empty: first call fills it */
}

void
hr_uuid7_next(hr_uuid_gen_t *g, uint64_t now_ms, uint8_t out[16])
{
    uint8_t rnd[10];
    hr_uuid_random(g, rnd, sizeof(rnd));

    if (now_ms > g->last_ms) {
        g->last_ms = now_ms;
        /* Start low in the counter space so a burst has room to count up. */
        g->seq = (uint16_t)(rnd[8] & 0x1ff);
    } else if (++g->seq > 0xfff) {
        /* 4096 ids in one ms: borrow the next millisecond rather than repeat. */
        g->last_ms++;
        g->seq = 0;
    }

    uint64_t ms = g->last_ms;
    out[0] = (uint8_t)(ms >> 40);
    out[1] = (uint8_t)(ms >> 32);
    out[2] = (uint8_t)(ms >> 24);
    out[3] = (uint8_t)(ms >> 16);
    out[4] = (uint8_t)(ms >> 8);
    out[5] = (uint8_t)ms;
    out[6] = (uint8_t)(0x70 | ((g->seq >> 8) & 0x0f));
    out[7] = (uint8_t)(g->seq & 0xff);
    out[8] = (uint8_t)(0x80 | (rnd[0] & 0x3f));
    memcpy(out + 9, rnd + 1, 7);
}

void
hr_uuid_format(const uint8_t u[16], char out[HR_UUID_STR_LEN])
{
    static const char hex[] = "0123456789abcdef";
    size_t j = 0;
    for (size_t i = 0; i < 16; i++) {
        if (i == 4 || i == 6 || i == 8 || i == 10)
            out[j++] = '-';
        out[j++] = hex[u[i] >> 4];
        out[j++] = hex[u[i] & 0x0f];
    }
    out[j] = '\0';
}

int
hr_uuid_parse(const char *s, uint8_t out[16])
{
    if (s == NULL || strlen(s) != 36)
        return HR_DECLINED;
    size_t j = 0;
    for (size_t i = 0; i < 36;) {
        if (i == 8 || i == 13 || i == 18 || i == 23) {
            if (s[i] != '-')
                return HR_DECLINED;
            i++;
            continue;
        }
        int hi = hr_hex_val(s[i]), lo = hr_hex_val(s[i + 1]);
        if (hi < 0 || lo < 0)
            return HR_DECLINED;
        out[j++] = (uint8_t)(hi << 4 | lo);
        i += 2;
    }
    return 0;
}

uint64_t
hr_uuid7_ms(const uint8_t u[16])
{
    uint64_t ms = 0;
    for (int i = 0; i < 6; i++)
        ms = ms << 8 | u[i];
    return ms;
}
