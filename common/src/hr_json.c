#include "herald/hr_json.h"
#include "herald/hr_alloc.h"
#include "herald/hr_core.h"

#include <stdio.h>
#include <stdlib.h>

void
hr_json_init(void)
{
    cJSON_Hooks hooks = {.malloc_fn = hr_malloc, .free_fn = hr_free};
    cJSON_InitHooks(&hooks);
}

int
hr_json_parse_object(const char *buf, size_t len, cJSON **out, char *err, size_t errlen)
{
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(buf, len, &end, 0);
    *out = NULL;
    if (root == NULL) {
        size_t at = end != NULL && end >= buf ? (size_t)(end - buf) : 0;
        snprintf(err, errlen, "body is not valid JSON (near byte %zu)", at);
        return HR_DECLINED;
    }
    /* Anything but white space after the value is an error too. */
    for (const char *p = end; p != NULL && p < buf + len; p++) {
        if (*p != ' ' && *p != '\n' && *p != '\r' && *p != '\t') {
            cJSON_Delete(root);
            snprintf(err, errlen, "trailing data after JSON value at byte %zu", (size_t)(p - buf));
            return HR_DECLINED;
        }
    }
    if (!cJSON_IsObject(root)) {
        cJSON_Delete(root);
        snprintf(err, errlen, "body must be a JSON object");
        return HR_DECLINED;
    }
    *out = root;
    return 0;
}

const char *
hr_json_get_str(const cJSON *obj, const char *key)
{
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(obj, key);
    return cJSON_IsString(it) ? it->valuestring : NULL;
}

char *
hr_json_print(const cJSON *item)
{
    char *s = cJSON_PrintUnformatted(item);
    if (s == NULL) {
        fprintf(stderr, "herald: cJSON_PrintUnformatted failed\n");
        abort();
    }
    return s;
}

int
hr_utf8_valid(const char *buf, size_t len)
{
    const unsigned char *s = (const unsigned char *)buf, *e = s + len;
    while (s < e) {
        unsigned c = *s;
        if (c < 0x80) {
            if (c == 0)
                return 0;
            s++;
            continue;
        }
        size_t n;
        unsigned cp, min;
        if ((c & 0xe0) == 0xc0) {
            n = 1, cp = c & 0x1f, min = 0x80;
        } else if ((c & 0xf0) == 0xe0) {
            n = 2, cp = c & 0x0f, min = 0x800;
        } else if ((c & 0xf8) == 0xf0) {
            n = 3, cp = c & 0x07, min = 0x10000;
        } else {
            return 0;
        }
        if ((size_t)(e - s) <= n)
            return 0;
        for (size_t i = 1; i <= n; i++) {
            if ((s[i] & 0xc0) != 0x80)
                return 0;
            cp = cp << 6 | (s[i] & 0x3f);
        }
        if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
            return 0;
        s += n + 1;
    }
    return 1;
}

int
hr_json_has_nul_escape(const char *buf, size_t len)
{
    for (size_t i = 0; i + 6 <= len; i++) {
        if (buf[i] != '\\')
            continue;
        /* An escaped backslash is not the start of an escape: skip both. */
        if (buf[i + 1] == '\\') {
            i++;
            continue;
        }
        if (buf[i + 1] == 'u' && buf[i + 2] == '0' && buf[i + 3] == '0' && buf[i + 4] == '0' &&
            buf[i + 5] == '0')
            return 1;
    }
    return 0;
}
