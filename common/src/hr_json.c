#include "herald/hr_json.h"
#include "herald/hr_alloc.h"
#include "herald/hr_core.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void
hr_json_init(void)
{
    cJSON_Hooks hooks = {.malloc_fn = hr_malloc, .free_fn = hr_free};
    cJSON_InitHooks(&hooks);
}

/* cJSON's own nesting limit; deeper input is refused before it is parsed. */
#define HR_JSON_MAX_DEPTH 1000

/* A strict RFC 8259 scanner over buf[0..len): no allocation, no recursion limit surprises. */
typedef struct {
    const char *p, *end;
    int depth;
} hr_json_scan_t;

static int hr_json_scan_value(hr_json_scan_t *s);

static void
hr_json_scan_ws(hr_json_scan_t *s)
{
    while (s->p < s->end && (*s->p == ' ' || *s->p == '\t' || *s->p == '\n' || *s->p == '\r'))
        s->p++;
}

static int
hr_json_is_hex(char c)
{
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

/* A string: escapes from the grammar only, no raw U+0000-U+001F. */
static int
hr_json_scan_string(hr_json_scan_t *s)
{
    if (s->p >= s->end || *s->p != '"')
        return -1;
    for (s->p++; s->p < s->end; s->p++) {
        unsigned char c = (unsigned char)*s->p;
        if (c == '"') {
            s->p++;
            return 0;
        }
        if (c < 0x20)
            return -1;
        if (c != '\\')
            continue;
        if (++s->p >= s->end)
            return -1;
        if (*s->p == 'u') {
            if (s->end - s->p < 5 || !hr_json_is_hex(s->p[1]) || !hr_json_is_hex(s->p[2]) ||
                !hr_json_is_hex(s->p[3]) || !hr_json_is_hex(s->p[4]))
                return -1;
            s->p += 4;
        } else if (!strchr("\"\\/bfnrt", *s->p) || *s->p == '\0') {
            return -1;
        }
    }
    return -1;
}

static int
hr_json_scan_digits(hr_json_scan_t *s)
{
    const char *start = s->p;
    while (s->p < s->end && *s->p >= '0' && *s->p <= '9')
        s->p++;
    return s->p > start ? 0 : -1;
}

/* -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)? */
static int
hr_json_scan_number(hr_json_scan_t *s)
{
    if (s->p < s->end && *s->p == '-')
        s->p++;
    if (s->p < s->end && *s->p == '0')
        s->p++;
    else if (hr_json_scan_digits(s) != 0)
        return -1;
    if (s->p < s->end && *s->p == '.') {
        s->p++;
        if (hr_json_scan_digits(s) != 0)
            return -1;
    }
    if (s->p < s->end && (*s->p == 'e' || *s->p == 'E')) {
        s->p++;
        if (s->p < s->end && (*s->p == '+' || *s->p == '-'))
            s->p++;
        if (hr_json_scan_digits(s) != 0)
            return -1;
    }
    return 0;
}

static int
hr_json_scan_word(hr_json_scan_t *s, const char *w)
{
    size_t n = strlen(w);
    if ((size_t)(s->end - s->p) < n || memcmp(s->p, w, n) != 0)
        return -1;
    s->p += n;
    return 0;
}

/* '{' or '[' already seen: members or elements up to the closing bracket. */
static int
hr_json_scan_container(hr_json_scan_t *s, char close)
{
    if (++s->depth > HR_JSON_MAX_DEPTH)
        return -1;
    s->p++;
    hr_json_scan_ws(s);
    if (s->p < s->end && *s->p == close) {
        s->p++;
        s->depth--;
        return 0;
    }
    for (;;) {
        hr_json_scan_ws(s);
        if (close == '}') {
            if (hr_json_scan_string(s) != 0)
                return -1;
            hr_json_scan_ws(s);
            if (s->p >= s->end || *s->p != ':')
                return -1;
            s->p++;
            hr_json_scan_ws(s);
        }
        if (hr_json_scan_value(s) != 0)
            return -1;
        hr_json_scan_ws(s);
        if (s->p >= s->end)
            return -1;
        if (*s->p == ',') {
            s->p++;
            continue;
        }
        if (*s->p != close)
            return -1;
        s->p++;
        s->depth--;
        return 0;
    }
}

static int
hr_json_scan_value(hr_json_scan_t *s)
{
    if (s->p >= s->end)
        return -1;
    switch (*s->p) {
    case '{':
        return hr_json_scan_container(s, '}');
    case '[':
        return hr_json_scan_container(s, ']');
    case '"':
        return hr_json_scan_string(s);
    case 't':
        return hr_json_scan_word(s, "true");
    case 'f':
        return hr_json_scan_word(s, "false");
    case 'n':
        return hr_json_scan_word(s, "null");
    default:
        return hr_json_scan_number(s);
    }
}

static int
hr_json_cmp_names(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/*
 * Whether an object anywhere in the tree names a member twice. Parsers
 * disagree on which one counts (cJSON keeps the first, JavaScript and jsonb
 * the last), so a body that says user_id twice could mean two users. Small
 * objects are compared pairwise, big ones sorted: n log n at worst.
 */
static int
hr_json_has_duplicate(const cJSON *item)
{
    for (; item != NULL; item = item->next) {
        if (cJSON_IsObject(item)) {
            size_t n = 0;
            for (const cJSON *c = item->child; c != NULL; c = c->next)
                n++;
            if (n > 1 && n <= 16) {
                for (const cJSON *a = item->child; a != NULL; a = a->next)
                    for (const cJSON *b = a->next; b != NULL; b = b->next)
                        if (strcmp(a->string, b->string) == 0)
                            return 1;
            } else if (n > 16) {
                const char **names = hr_malloc(n * sizeof(*names));
                size_t i = 0;
                for (const cJSON *c = item->child; c != NULL; c = c->next)
                    names[i++] = c->string;
                qsort(names, n, sizeof(*names), hr_json_cmp_names);
                int dup = 0;
                for (i = 1; i < n && !dup; i++)
                    dup = strcmp(names[i - 1], names[i]) == 0;
                hr_free(names);
                if (dup)
                    return 1;
            }
        }
        if ((cJSON_IsObject(item) || cJSON_IsArray(item)) && hr_json_has_duplicate(item->child))
            return 1;
    }
    return 0;
}

int
hr_json_parse_object(const char *buf, size_t len, cJSON **out, char *err, size_t errlen)
{
    *out = NULL;
    /*
     * cJSON accepts more than JSON (raw control characters in strings, "01",
     * "1."), so the grammar is checked here first, and cJSON only builds the tree.
     */
    hr_json_scan_t s = {buf, buf + len, 0};
    hr_json_scan_ws(&s);
    if (hr_json_scan_value(&s) != 0) {
        snprintf(err, errlen, "body is not valid JSON (near byte %zu)", (size_t)(s.p - buf));
        return HR_DECLINED;
    }
    hr_json_scan_ws(&s);
    if (s.p != s.end) {
        snprintf(err, errlen, "trailing data after JSON value at byte %zu", (size_t)(s.p - buf));
        return HR_DECLINED;
    }
    cJSON *root = cJSON_ParseWithLengthOpts(buf, len, NULL, 0);
    if (root == NULL) {
        /* Grammatical but refused by cJSON: a lone surrogate escape. */
        snprintf(err, errlen,
                 "body is not valid JSON (unpaired surrogate escape or nesting too deep)");
        return HR_DECLINED;
    }
    if (!cJSON_IsObject(root)) {
        cJSON_Delete(root);
        snprintf(err, errlen, "body must be a JSON object");
        return HR_DECLINED;
    }
    if (hr_json_has_duplicate(root)) {
        cJSON_Delete(root);
        snprintf(err, errlen, "an object names the same member twice");
        return HR_DECLINED;
    }
    *out = root;
    return 0;
}

char *
hr_json_member_text(const char *buf, size_t len, const char *key)
{
    hr_json_scan_t s = {buf, buf + len, 0};
    hr_json_scan_ws(&s);
    if (s.p >= s.end || *s.p != '{')
        return NULL;
    s.p++;
    size_t klen = strlen(key);
    for (;;) {
        hr_json_scan_ws(&s);
        const char *k = s.p;
        if (hr_json_scan_string(&s) != 0)
            return NULL;
        const char *kend = s.p;
        hr_json_scan_ws(&s);
        s.p++; /* ':' */
        hr_json_scan_ws(&s);
        const char *v = s.p;
        if (hr_json_scan_value(&s) != 0)
            return NULL;
        const char *vend = s.p;

        int match;
        if (memchr(k, '\\', (size_t)(kend - k)) == NULL) {
            match = (size_t)(kend - k - 2) == klen && memcmp(k + 1, key, klen) == 0;
        } else {
            /* An escaped key: let cJSON decode it, as it did for the tree. */
            cJSON *ks = cJSON_ParseWithLength(k, (size_t)(kend - k));
            match = cJSON_IsString(ks) && strcmp(ks->valuestring, key) == 0;
            cJSON_Delete(ks);
        }
        if (match) {
            /* Copy without insignificant white space: outside strings it is all ws. */
            char *out = hr_malloc((size_t)(vend - v) + 1), *o = out;
            int in_str = 0;
            for (const char *p = v; p < vend; p++) {
                if (in_str) {
                    *o++ = *p;
                    if (*p == '\\')
                        *o++ = *++p;
                    else if (*p == '"')
                        in_str = 0;
                } else if (*p != ' ' && *p != '\t' && *p != '\n' && *p != '\r') {
                    *o++ = *p;
                    in_str = *p == '"';
                }
            }
            *o = '\0';
            return out;
        }
        hr_json_scan_ws(&s);
        if (s.p >= s.end || *s.p != ',')
            return NULL;
        s.p++;
    }
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

int
hr_json_deeper_than(const char *buf, size_t len, int max)
{
    int depth = 0, in_str = 0;
    for (size_t i = 0; i < len; i++) {
        char c = buf[i];
        if (in_str) {
            if (c == '\\')
                i++;
            else if (c == '"')
                in_str = 0;
        } else if (c == '"') {
            in_str = 1;
        } else if (c == '{' || c == '[') {
            if (++depth > max)
                return 1;
        } else if (c == '}' || c == ']') {
            depth--;
        }
    }
    return 0;
}
