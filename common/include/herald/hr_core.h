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

#endif
