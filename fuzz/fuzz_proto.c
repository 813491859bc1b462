/*
 * The notification validator (POST /notifications bodies, with targets), the
 * envelope decoder (stream entries) and the room message decoder on arbitrary
 * bytes; a body the validator accepts must survive an envelope round trip.
 */
#include "herald/hr_alloc.h"
#include "herald/hr_json.h"
#include "hr_proto.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *buf = hr_malloc(size > 0 ? size : 1);
    memcpy(buf, data, size);
    hr_proto_err_t e;
    hr_proto_request_t r;
    memset(&r, 0, sizeof(r));
    if (hr_proto_parse_targets(buf, size, HR_BODY_MAX, &r, &e) == 0) {
        if (r.n.user_id != NULL || r.n.room != NULL) {
            hr_notification_t *n = &r.n;
            memcpy(n->id, "0190f7c4-5d6e-7a8b-9c0d-1e2f3a4b5c6d", sizeof(n->id));
            memcpy(n->created_at, "2024-11-24T01:02:03.456Z", sizeof(n->created_at));
            size_t len;
            char *env = hr_proto_envelope_encode(n, &len);
            hr_notification_t back;
            char err[256];
            memset(&back, 0, sizeof(back));
            if (hr_proto_envelope_decode(env, len, &back, err, sizeof(err)) != 0)
                abort(); /* what we accept we must be able to read back */
            hr_notification_clear(&back);
            hr_free(env);
        }
        hr_proto_request_clear(&r);
    }
    hr_notification_t n;
    memset(&n, 0, sizeof(n));
    if (hr_proto_parse_request(buf, size, &n, &e) == 0)
        hr_notification_clear(&n);
    char err[256];
    memset(&n, 0, sizeof(n));
    if (hr_proto_envelope_decode(buf, size, &n, err, sizeof(err)) == 0)
        hr_notification_clear(&n);
    memset(&n, 0, sizeof(n));
    if (hr_proto_room_message_decode(buf, size, &n, err, sizeof(err)) == 0)
        hr_notification_clear(&n);
    hr_free(buf);
    return 0;
}
