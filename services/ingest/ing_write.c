#include "ing_write.h"
#include "herald/hr_alloc.h"

#include <stdint.h>
#include <stdio.h>
#include <string.h>

void
ing_buf_init(ing_buf_t *b, char *inl, size_t cap)
{
    b->p = b->inl = inl;
    b->len = 0;
    b->cap = cap;
}

static void
ing_buf_reserve(ing_buf_t *b, size_t more)
{
    if (b->len + more <= b->cap)
        return;
    size_t cap = b->cap * 2;
    while (cap < b->len + more)
        cap *= 2;
    if (b->p == b->inl) {
        char *p = hr_malloc(cap);
        memcpy(p, b->p, b->len);
        b->p = p;
    } else {
        b->p = hr_realloc(b->p, cap);
    }
    b->cap = cap;
}

void
ing_buf_add(ing_buf_t *b, const void *s, size_t n)
{
    ing_buf_reserve(b, n);
    memcpy(b->p + b->len, s, n);
    b->len += n;
}

void
ing_buf_adds(ing_buf_t *b, const char *s)
{
    ing_buf_add(b, s, strlen(s));
}

void
ing_buf_free(ing_buf_t *b)
{
    if (b->p != b->inl)
        hr_free(b->p);
    b->p = b->inl;
    b->len = 0;
}

/*
 * cJSON 1.7's print_string_ptr: '"' '\\' and \b \f \n \r \t as two-character
 * escapes, other bytes below 0x20 as \u00xx (lowercase hex), every other byte
 * (UTF-8 included) as is.
 */
void
ing_json_str(ing_buf_t *b, const char *s)
{
    static const char hex[] = "0123456789abcdef";
    size_t n = strlen(s);
    ing_buf_reserve(b, n + 2);
    b->p[b->len++] = '"';
    const char *run = s;
    for (const char *c = s;; c++) {
        unsigned char u = (unsigned char)*c;
        if (u != '\0' && u >= 0x20 && u != '"' && u != '\\')
            continue;
        ing_buf_add(b, run, (size_t)(c - run));
        if (u == '\0')
            break;
        char esc[6] = {'\\', 0, 0, 0, 0, 0};
        size_t el = 2;
        switch (u) {
        case '"':
            esc[1] = '"';
            break;
        case '\\':
            esc[1] = '\\';
            break;
        case '\b':
            esc[1] = 'b';
            break;
        case '\f':
            esc[1] = 'f';
            break;
        case '\n':
            esc[1] = 'n';
            break;
        case '\r':
            esc[1] = 'r';
            break;
        case '\t':
            esc[1] = 't';
            break;
        default:
            memcpy(esc + 1, "u00", 3);
            esc[4] = hex[u >> 4];
            esc[5] = hex[u & 15];
            el = 6;
        }
        ing_buf_add(b, esc, el);
        run = c + 1;
    }
    ing_buf_add(b, "\"", 1);
}

void
ing_envelope(ing_buf_t *b, const hr_notification_t *n)
{
    ing_buf_adds(b, "{\"id\":\"");
    ing_buf_adds(b, n->id);
    if (n->room != NULL) {
        ing_buf_adds(b, "\",\"room\":");
        ing_json_str(b, n->room);
    } else {
        ing_buf_adds(b, "\",\"user_id\":");
        ing_json_str(b, n->user_id);
    }
    ing_buf_adds(b, ",\"type\":");
    ing_json_str(b, n->type);
    ing_buf_adds(b, ",\"message\":");
    ing_json_str(b, n->message);
    ing_buf_adds(b, ",\"data\":");
    ing_buf_adds(b, n->data_json != NULL ? n->data_json : "null");
    ing_buf_adds(b, ",\"created_at\":\"");
    ing_buf_adds(b, n->created_at);
    ing_buf_adds(b, "\"}");
}

size_t
ing_u64(char *p, uint64_t v)
{
    char tmp[24];
    size_t n = 0;
    do {
        tmp[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v != 0);
    for (size_t i = 0; i < n; i++)
        p[i] = tmp[n - 1 - i];
    return n;
}

void
ing_resp_format(ing_buf_t *b, size_t argc, const char *const *argv, const size_t *argvlen)
{
    size_t total = 1 + 20 + 2;
    for (size_t i = 0; i < argc; i++)
        total += 1 + 20 + 2 + argvlen[i] + 2;
    ing_buf_reserve(b, total);
    char *p = b->p + b->len;
    *p++ = '*';
    p += ing_u64(p, argc);
    *p++ = '\r';
    *p++ = '\n';
    for (size_t i = 0; i < argc; i++) {
        *p++ = '$';
        p += ing_u64(p, argvlen[i]);
        *p++ = '\r';
        *p++ = '\n';
        memcpy(p, argv[i], argvlen[i]);
        p += argvlen[i];
        *p++ = '\r';
        *p++ = '\n';
    }
    b->len = (size_t)(p - b->p);
}

void
ing_args_init(ing_args_t *a)
{
    ing_buf_init(&a->bytes, a->bytes_inl, sizeof(a->bytes_inl));
    a->n = 0;
    a->cap = ING_ARGS_INLINE;
    a->arg = a->arg_inl;
    a->len = a->len_inl;
    a->argv = NULL;
    a->argvlen = NULL;
}

size_t
ing_args_open(ing_args_t *a)
{
    if (a->n == a->cap) {
        size_t cap = a->cap * 2;
        if (a->arg == a->arg_inl) {
            a->arg = hr_malloc(cap * sizeof(*a->arg));
            a->len = hr_malloc(cap * sizeof(*a->len));
            memcpy(a->arg, a->arg_inl, sizeof(a->arg_inl));
            memcpy(a->len, a->len_inl, sizeof(a->len_inl));
        } else {
            a->arg = hr_realloc(a->arg, cap * sizeof(*a->arg));
            a->len = hr_realloc(a->len, cap * sizeof(*a->len));
        }
        a->cap = cap;
    }
    a->arg[a->n].off = a->bytes.len;
    a->len[a->n] = 0;
    return a->n++;
}

void
ing_args_close(ing_args_t *a, size_t i)
{
    a->len[i] = a->bytes.len - a->arg[i].off;
}

size_t
ing_args_push(ing_args_t *a, const void *s, size_t n)
{
    size_t i = ing_args_open(a);
    ing_buf_add(&a->bytes, s, n);
    ing_args_close(a, i);
    return i;
}

void
ing_args_set(ing_args_t *a, size_t i, const void *s, size_t n)
{
    a->arg[i].off = a->bytes.len;
    a->len[i] = n;
    ing_buf_add(&a->bytes, s, n);
}

void
ing_args_finish(ing_args_t *a)
{
    _Static_assert(sizeof(ing_arg_t) == sizeof(const char *), "argv in place of offsets");
    for (size_t i = 0; i < a->n; i++)
        a->arg[i].p = a->bytes.p + a->arg[i].off;
    a->argv = (const char **)a->arg;
    a->argvlen = a->len;
}

void
ing_args_free(ing_args_t *a)
{
    ing_buf_free(&a->bytes);
    if (a->arg != a->arg_inl) {
        hr_free(a->arg);
        hr_free(a->len);
    }
    ing_args_init(a);
}
