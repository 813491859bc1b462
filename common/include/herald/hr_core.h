/* Herald: return codes and small macros shared by every module. */
#ifndef HERALD_HR_CORE_H
#define HERALD_HR_CORE_H

#include <stddef.h>
#include <stdint.h>

/* Functions return 0 on success or one of these (nginx style), or -errno. */
#define HR_OK 0
#define HR_ERR (-1)      /* failed; the callee logged or filled err */
#define HR_AGAIN (-2)    /* not now (not connected, queue full): retry later */
#define HR_DECLINED (-3) /* input refused: caller answers the client */

#define HR_ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))
#define HR_UNUSED(x) ((void)(x))

/** The value of hex digit c (either case), or -1. */
static inline int
hr_hex_val(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

#endif
