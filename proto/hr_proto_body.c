/*
 * One pass over a POST /notifications body: checks the JSON grammar as
 * hr_json_parse_object() does, decodes the top-level strings into one
 * buffer and copies "data" compact, so a valid body costs one allocation
 * instead of a cJSON tree (about fifteen). It only says yes when it is sure
 * the tree parser would too, with the same fields; everything else goes to
 * the tree parser, which words the error. Strings decode as cJSON decodes
 * them; the inputs where cJSON's own limits decide (surrogate escapes,
 * numbers past its 63-character buffer, nesting near its limit) and those
 * where duplicate member names need decoding to compare are declined.
 */
#include "hr_proto_body.h"
#include "hr_proto.h"
#include "herald/hr_alloc.h"
#include "herald/hr_core.h"
#include "herald/hr_json.h"

#include <string.h>

/*
 * Deeper "data" goes to the tree parser. One below HR_JSON_DEPTH_MAX (the
 * body's own {} is not counted here): a body this scanner accepts is never
 * too deep, so ingest checks the depth of the others only.
 */
#define BODY_DEPTH_MAX (HR_JSON_DEPTH_MAX - 1)
#define BODY_KEYS_MAX 64   /* member names of the nested objects open at once */
#define BODY_NUMBER_MAX 60 /* cJSON copies at most 63 characters of a number */

typedef struct {
    const char *p, *end;
    char *out; /* borrowed: where the next decoded string goes */
    int depth;
    size_t nkeys;
    struct {
        const char *s;
        size_t n;
    } keys[BODY_KEYS_MAX]; /* borrowed from the body: names of the open nested objects */
} body_scan_t;

static void
body_ws(body_scan_t *s)
{
    while (s->p < s->end && (*s->p == ' ' || *s->p == '\t' || *s->p == '\n' || *s->p == '\r'))
        s->p++;
}

static int
body_hex(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    c = (char)(c | 0x20);
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    return -1;
}

/*
 * A string at s->p: the grammar of hr_json_scan_string, refusing surrogate
 * escapes (cJSON's rules). With dst, the decoded bytes and a NUL are written
 * there (*dst advanced past the NUL) and *n is their length. *escaped says
 * whether it held a backslash. Returns 0 or -1.
 */
static int
body_string(body_scan_t *s, char **dst, size_t *n, int *escaped)
{
    if (s->p >= s->end || *s->p != '"')
        return -1;
    char *o = dst != NULL ? *dst : NULL;
    const char *run = ++s->p;
    *escaped = 0;
    for (; s->p < s->end; s->p++) {
        unsigned char c = (unsigned char)*s->p;
        if (c != '"' && c != '\\') {
            if (c < 0x20)
                return -1;
            if (c >= 0x80) {
                /* A whole UTF-8 sequence (the only place one may be); the loop steps past its last
                 * byte. */
                size_t n = (c & 0xe0) == 0xc0   ? 2
                           : (c & 0xf0) == 0xe0 ? 3
                           : (c & 0xf8) == 0xf0 ? 4
                                                : 0;
                if (n == 0 || n > (size_t)(s->end - s->p) || !hr_utf8_valid(s->p, n))
                    return -1;
                s->p += n - 1;
            }
            continue;
        }
        if (o != NULL) {
            memcpy(o, run, (size_t)(s->p - run));
            o += s->p - run;
        }
        if (c == '"') {
            if (o != NULL) {
                *n = (size_t)(o - *dst);
                *o++ = '\0';
                *dst = o;
            }
            s->p++;
            return 0;
        }
        *escaped = 1;
        if (++s->p >= s->end)
            return -1;
        char d;
        switch (*s->p) {
        case '"':
        case '\\':
        case '/':
            d = *s->p;
            break;
        case 'b':
            d = '\b';
            break;
        case 'f':
            d = '\f';
            break;
        case 'n':
            d = '\n';
            break;
        case 'r':
            d = '\r';
            break;
        case 't':
            d = '\t';
            break;
        case 'u': {
            if (s->end - s->p < 5)
                return -1;
            unsigned cp = 0;
            for (int i = 1; i <= 4; i++) {
                int h = body_hex(s->p[i]);
                if (h < 0)
                    return -1;
                cp = cp << 4 | (unsigned)h;
            }
            if (cp == 0 || (cp >= 0xd800 && cp <= 0xdfff))
                return -1; /* NUL is refused; pairs and lone halves: cJSON decides */
            s->p += 4;
            if (o != NULL) {
                if (cp < 0x80) {
                    *o++ = (char)cp;
                } else if (cp < 0x800) {
                    *o++ = (char)(0xc0 | cp >> 6);
                    *o++ = (char)(0x80 | (cp & 0x3f));
                } else {
                    *o++ = (char)(0xe0 | cp >> 12);
                    *o++ = (char)(0x80 | ((cp >> 6) & 0x3f));
                    *o++ = (char)(0x80 | (cp & 0x3f));
                }
            }
            run = s->p + 1;
            continue;
        }
        default:
            return -1;
        }
        if (o != NULL)
            *o++ = d;
        run = s->p + 1;
    }
    return -1;
}

static int
body_digits(body_scan_t *s)
{
    const char *start = s->p;
    while (s->p < s->end && *s->p >= '0' && *s->p <= '9')
        s->p++;
    return s->p > start ? 0 : -1;
}

/* The grammar of hr_json_scan_number, and short enough for cJSON's buffer. */
static int
body_number(body_scan_t *s)
{
    const char *start = s->p;
    if (s->p < s->end && *s->p == '-')
        s->p++;
    if (s->p < s->end && *s->p == '0')
        s->p++;
    else if (body_digits(s) != 0)
        return -1;
    if (s->p < s->end && *s->p == '.') {
        s->p++;
        if (body_digits(s) != 0)
            return -1;
    }
    if (s->p < s->end && (*s->p == 'e' || *s->p == 'E')) {
        s->p++;
        if (s->p < s->end && (*s->p == '+' || *s->p == '-'))
            s->p++;
        if (body_digits(s) != 0)
            return -1;
    }
    return s->p - start <= BODY_NUMBER_MAX ? 0 : -1;
}

static int
body_word(body_scan_t *s, const char *w, size_t n)
{
    if ((size_t)(s->end - s->p) < n || memcmp(s->p, w, n) != 0)
        return -1;
    s->p += n;
    return 0;
}

static int body_value(body_scan_t *s);

/*
 * A nested object or array at s->p. Member names are compared as sent, so
 * an escaped one (which might spell another after decoding) is declined, as
 * is a repeated one (the tree parser refuses it).
 */
static int
body_container(body_scan_t *s, char close)
{
    if (++s->depth > BODY_DEPTH_MAX)
        return -1;
    size_t first = s->nkeys;
    s->p++;
    body_ws(s);
    if (s->p < s->end && *s->p == close) {
        s->p++;
        s->depth--;
        return 0;
    }
    for (;;) {
        body_ws(s);
        if (close == '}') {
            const char *k = s->p + 1;
            int esc;
            if (body_string(s, NULL, NULL, &esc) != 0 || esc || s->nkeys == BODY_KEYS_MAX)
                return -1;
            size_t kn = (size_t)(s->p - 1 - k);
            for (size_t i = first; i < s->nkeys; i++)
                if (s->keys[i].n == kn && memcmp(s->keys[i].s, k, kn) == 0)
                    return -1;
            s->keys[s->nkeys].s = k;
            s->keys[s->nkeys].n = kn;
            s->nkeys++;
            body_ws(s);
            if (s->p >= s->end || *s->p != ':')
                return -1;
            s->p++;
            body_ws(s);
        }
        if (body_value(s) != 0)
            return -1;
        body_ws(s);
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
        s->nkeys = first;
        return 0;
    }
}

static int
body_value(body_scan_t *s)
{
    if (s->p >= s->end)
        return -1;
    int esc;
    switch (*s->p) {
    case '{':
        return body_container(s, '}');
    case '[':
        return body_container(s, ']');
    case '"':
        return body_string(s, NULL, NULL, &esc);
    case 't':
        return body_word(s, "true", 4);
    case 'f':
        return body_word(s, "false", 5);
    case 'n':
        return body_word(s, "null", 4);
    default:
        return body_number(s);
    }
}

/* hr_proto.c's name rule on a decoded string of n bytes. */
static int
body_name_ok(const char *s, size_t n, size_t max)
{
    if (n == 0 || n > max)
        return 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c < 0x20 || c == 0x7f)
            return 0;
    }
    return 1;
}

enum { BODY_USER_ID, BODY_USER_IDS, BODY_ROOM, BODY_MESSAGE, BODY_TYPE, BODY_DATA, BODY_NKEYS };

/* Which member a top-level name (as sent, no escapes) is, or -1. */
static int
body_key(const char *k, size_t n, int targets)
{
#define BODY_IS(lit) (n == sizeof(lit) - 1 && memcmp(k, lit, n) == 0)
    if (BODY_IS("user_id"))
        return BODY_USER_ID;
    if (BODY_IS("message"))
        return BODY_MESSAGE;
    if (BODY_IS("type"))
        return BODY_TYPE;
    if (BODY_IS("data"))
        return BODY_DATA;
    if (targets && BODY_IS("user_ids"))
        return BODY_USER_IDS;
    if (targets && BODY_IS("room"))
        return BODY_ROOM;
    return -1;
#undef BODY_IS
}

typedef struct {
    char *str[BODY_NKEYS]; /* borrowed from the buffer: decoded strings (user_ids: the first) */
    size_t len[BODY_NKEYS];
    int seen[BODY_NKEYS];
    int type_null;
    size_t nusers;
    const char *data, *data_end; /* borrowed from the body: the object as sent */
} body_fields_t;

/* The top-level members into f, strings decoded at s->out. Returns 0 or -1. */
static int
body_members(body_scan_t *s, int targets, body_fields_t *f)
{
    body_ws(s);
    if (s->p >= s->end || *s->p != '{')
        return -1;
    s->p++;
    body_ws(s);
    if (s->p < s->end && *s->p == '}')
        return -1; /* no member: the tree parser says which is missing */
    for (;;) {
        body_ws(s);
        const char *k = s->p + 1;
        int esc;
        if (body_string(s, NULL, NULL, &esc) != 0 || esc)
            return -1;
        int key = body_key(k, (size_t)(s->p - 1 - k), targets);
        if (key < 0 || f->seen[key])
            return -1;
        f->seen[key] = 1;
        body_ws(s);
        if (s->p >= s->end || *s->p != ':')
            return -1;
        s->p++;
        body_ws(s);
        if (s->p >= s->end)
            return -1;
        char c = *s->p;
        if (key == BODY_TYPE && c == 'n') {
            if (body_word(s, "null", 4) != 0)
                return -1;
            f->type_null = 1; /* the default type; a second "type" is still a repeat */
        } else if (key == BODY_DATA) {
            if (c == 'n') {
                if (body_word(s, "null", 4) != 0)
                    return -1;
            } else {
                if (c != '{')
                    return -1;
                f->data = s->p;
                if (body_container(s, '}') != 0)
                    return -1;
                f->data_end = s->p;
            }
        } else if (key == BODY_USER_IDS) {
            if (c != '[')
                return -1;
            s->p++;
            f->str[key] = s->out;
            for (;;) {
                body_ws(s);
                size_t n;
                if (body_string(s, &s->out, &n, &esc) != 0)
                    return -1;
                f->nusers++;
                body_ws(s);
                if (s->p < s->end && *s->p == ',') {
                    s->p++;
                    continue;
                }
                if (s->p >= s->end || *s->p != ']')
                    return -1;
                s->p++;
                break;
            }
        } else {
            f->str[key] = s->out;
            if (body_string(s, &s->out, &f->len[key], &esc) != 0)
                return -1;
        }
        body_ws(s);
        if (s->p >= s->end)
            return -1;
        if (*s->p == ',') {
            s->p++;
            continue;
        }
        if (*s->p != '}')
            return -1;
        s->p++;
        body_ws(s);
        return s->p == s->end ? 0 : -1;
    }
}

/* The checks of the tree parser, on decoded strings; 0 when all pass. */
static int
body_valid(body_fields_t *f, const char **user_ids)
{
    int ntargets = f->seen[BODY_USER_ID] + f->seen[BODY_USER_IDS] + f->seen[BODY_ROOM];
    if (ntargets != 1)
        return -1;
    if (f->seen[BODY_USER_ID] &&
        !body_name_ok(f->str[BODY_USER_ID], f->len[BODY_USER_ID], HR_USER_ID_MAX))
        return -1;
    if (f->seen[BODY_ROOM] && !hr_proto_room_valid(f->str[BODY_ROOM]))
        return -1;
    if (f->seen[BODY_USER_IDS]) {
        if (f->nusers > HR_FANOUT_MAX)
            return -1;
        const char *u = f->str[BODY_USER_IDS];
        for (size_t i = 0; i < f->nusers; i++) {
            size_t n = strlen(u);
            if (!body_name_ok(u, n, HR_USER_ID_MAX))
                return -1;
            for (size_t j = 0; j < i; j++)
                if (strcmp(user_ids[j], u) == 0)
                    return -1;
            user_ids[i] = u;
            u += n + 1;
        }
    }
    if (!f->seen[BODY_MESSAGE] || f->len[BODY_MESSAGE] == 0 ||
        f->len[BODY_MESSAGE] > HR_MESSAGE_MAX)
        return -1;
    if (f->seen[BODY_TYPE] && !f->type_null &&
        !body_name_ok(f->str[BODY_TYPE], f->len[BODY_TYPE], HR_TYPE_MAX))
        return -1;
    return 0;
}

/* The value text without white space outside strings, as hr_json_member_text() copies it. */
static char *
body_compact(const char *v, const char *vend, char *o)
{
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
    *o++ = '\0';
    return o;
}

int
hr_proto_body_scan(const char *body, size_t len, int targets, hr_proto_request_t *r)
{
    /* Each decoded string (plus its NUL) is shorter than its quoted text; so is "data". */
    char *buf = hr_malloc(len + 1);
    body_scan_t s; /* keys[] is written before it is read: not zeroed (1 KiB) */
    s.p = body;
    s.end = body + len;
    s.out = buf;
    s.depth = 0;
    s.nkeys = 0;
    body_fields_t f;
    memset(&f, 0, sizeof(f));
    const char **user_ids = NULL;
    if (body_members(&s, targets, &f) != 0)
        goto declined;
    if (f.seen[BODY_USER_IDS])
        user_ids = hr_calloc(f.nusers > 0 ? f.nusers : 1, sizeof(*user_ids));
    if (body_valid(&f, user_ids) != 0)
        goto declined;
    hr_notification_t *n = &r->n;
    n->user_id = f.seen[BODY_USER_ID] ? f.str[BODY_USER_ID] : NULL;
    n->room = f.seen[BODY_ROOM] ? f.str[BODY_ROOM] : NULL;
    n->message = f.str[BODY_MESSAGE];
    n->type = f.seen[BODY_TYPE] && !f.type_null ? f.str[BODY_TYPE] : (char *)HR_TYPE_DEFAULT;
    if (f.data != NULL) {
        n->data_json = s.out;
        s.out = body_compact(f.data, f.data_end, s.out);
    }
    r->user_ids = (char **)user_ids;
    r->nusers = f.nusers;
    r->strings = buf;
    return 0;
declined:
    hr_free(user_ids);
    hr_free(buf);
    return HR_DECLINED;
}
