/*
 * A tiny TAP-style unit test harness, header-only.
 *
 *   #include "hr_test.h"
 *
 *   HR_TEST(parser_rejects_empty_body)
 *   {
 *       HR_CHECK_EQ_INT(parse("", 0), HR_DECLINED);
 *   }
 *
 *   HR_TEST_MAIN()
 *
 * Tests register themselves (a constructor per HR_TEST) and run in the order
 * they appear in the file. The output is TAP:
 *
 *   1..2
 *   ok 1 - parser_accepts_minimal_body
 *   #   tests/unit/test_x.c:12: HR_CHECK_EQ_INT(parse("", 0), HR_DECLINED): 0 == -3 is false
 *   not ok 2 - parser_rejects_empty_body (tests/unit/test_x.c:12)
 *   1 passed, 1 failed
 *
 * A failed check prints its diagnostic at once (so it is on screen even if the
 * test then crashes); the verdict line follows and names the first failure.
 *
 * The last line is always "N passed, N failed" alone on its line; the exit
 * code is 1 if any test failed or none ran. HR_CHECK_* record a failure and go
 * on; HR_REQUIRE* also return from the test (use them only in the test body,
 * where a later check would dereference what just failed). Every check is an
 * expression worth 1 when it passed, so a helper can do `if (!HR_CHECK(p))`,
 * and evaluates each operand exactly once.
 *
 * HR_TEST_FILTER=substring in the environment runs only the tests whose name
 * contains it (the plan counts only those).
 */
#ifndef HERALD_HR_TEST_H
#define HERALD_HR_TEST_H

#include <inttypes.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct hr_test_case_s {
    const char *name;
    void (*fn)(void);
    struct hr_test_case_s *next; /* borrowed: registration order */
} hr_test_case_t;

/* The harness's whole state; one copy per test executable. */
static struct {
    hr_test_case_t *head, *tail;
    int cur_failed;         /* checks failed in the running test */
    const char *first_file; /* where the running test first failed */
    int first_line;
} hr_test_state;

static inline void
hr_test_register_(hr_test_case_t *c)
{
    if (hr_test_state.tail == NULL)
        hr_test_state.head = c;
    else
        hr_test_state.tail->next = c;
    hr_test_state.tail = c;
}

#define HR_TEST(name)                                                                              \
    static void name(void);                                                                        \
    __attribute__((constructor)) static void hr_test_register_##name(void)                         \
    {                                                                                              \
        static hr_test_case_t c = {#name, name, NULL};                                             \
        hr_test_register_(&c);                                                                     \
    }                                                                                              \
    static void name(void)

/* Records one failed check as a TAP diagnostic line. */
__attribute__((format(printf, 4, 5))) static inline void
hr_test_fail_(const char *file, int line, const char *what, const char *fmt, ...)
{
    if (hr_test_state.cur_failed++ == 0) {
        hr_test_state.first_file = file;
        hr_test_state.first_line = line;
    }
    char detail[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(detail, sizeof(detail), fmt, ap);
    va_end(ap);
    printf("#   %s:%d: %s%s%s\n", file, line, what, detail[0] ? ": " : "", detail);
    fflush(stdout);
}

static inline int
hr_test_check_(int ok, const char *file, int line, const char *what)
{
    if (!ok)
        hr_test_fail_(file, line, what, "%s", "");
    return ok;
}

/* Applies a comparison operator given as text; each operand was evaluated once by the caller. */
static inline int
hr_test_cmp_(int sign, int eq, const char *op)
{
    if (strcmp(op, "==") == 0)
        return eq;
    if (strcmp(op, "!=") == 0)
        return !eq;
    if (strcmp(op, "<") == 0)
        return sign < 0;
    if (strcmp(op, "<=") == 0)
        return sign <= 0;
    if (strcmp(op, ">") == 0)
        return sign > 0;
    if (strcmp(op, ">=") == 0)
        return sign >= 0;
    return -1;
}

static inline int
hr_test_check_int_(intmax_t a, const char *op, intmax_t b, const char *file, int line,
                   const char *what)
{
    int ok = hr_test_cmp_(a < b ? -1 : a > b, a == b, op);
    if (ok < 0)
        hr_test_fail_(file, line, what, "unknown operator %s", op);
    else if (!ok)
        hr_test_fail_(file, line, what, "%jd %s %jd is false", a, op, b);
    return ok == 1;
}

static inline int
hr_test_check_uint_(uintmax_t a, const char *op, uintmax_t b, const char *file, int line,
                    const char *what)
{
    int ok = hr_test_cmp_(a < b ? -1 : a > b, a == b, op);
    if (ok < 0)
        hr_test_fail_(file, line, what, "unknown operator %s", op);
    else if (!ok)
        hr_test_fail_(file, line, what, "%ju %s %ju is false", a, op, b);
    return ok == 1;
}

/* Prints at most 200 bytes of s, escaping what would break the diagnostic line. */
static inline void
hr_test_print_quoted_(const char *s, size_t n)
{
    if (s == NULL) {
        printf("NULL");
        return;
    }
    putchar('"');
    for (size_t i = 0; i < n && i < 200; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '"' || c == '\\')
            printf("\\%c", c);
        else if (c < 0x20 || c >= 0x7f)
            printf("\\x%02x", c);
        else
            putchar(c);
    }
    printf(n > 200 ? "\"..." : "\"");
}

static inline int
hr_test_check_mem_(const void *a, size_t alen, const void *b, size_t blen, const char *file,
                   int line, const char *what)
{
    if (a != NULL && b != NULL && alen == blen && memcmp(a, b, alen) == 0)
        return 1;
    if (a == NULL && b == NULL)
        return 1;
    size_t at = 0;
    if (a != NULL && b != NULL)
        while (at < alen && at < blen && ((const char *)a)[at] == ((const char *)b)[at])
            at++;
    hr_test_fail_(file, line, what, "differ at byte %zu (lengths %zu and %zu)", at, alen, blen);
    size_t from = at > 40 ? at - 40 : 0;
    printf("#     got:      ");
    hr_test_print_quoted_(a ? (const char *)a + (from < alen ? from : alen) : NULL,
                          a && from < alen ? alen - from : 0);
    printf("\n#     expected: ");
    hr_test_print_quoted_(b ? (const char *)b + (from < blen ? from : blen) : NULL,
                          b && from < blen ? blen - from : 0);
    printf("\n");
    fflush(stdout);
    return 0;
}

static inline int
hr_test_check_str_(const char *a, const char *b, const char *file, int line, const char *what)
{
    if (a == NULL || b == NULL) {
        if (a == b)
            return 1;
        hr_test_fail_(file, line, what, "%s is NULL", a == NULL ? "got" : "expected");
        return 0;
    }
    return hr_test_check_mem_(a, strlen(a), b, strlen(b), file, line, what);
}

static inline int
hr_test_check_contains_(const char *hay, const char *needle, const char *file, int line,
                        const char *what)
{
    if (hay != NULL && needle != NULL && strstr(hay, needle) != NULL)
        return 1;
    hr_test_fail_(file, line, what, "%s", "not found");
    printf("#     in:   ");
    hr_test_print_quoted_(hay, hay ? strlen(hay) : 0);
    printf("\n#     find: ");
    hr_test_print_quoted_(needle, needle ? strlen(needle) : 0);
    printf("\n");
    fflush(stdout);
    return 0;
}

/** Passes when cond is true. */
#define HR_CHECK(cond) hr_test_check_(!!(cond), __FILE__, __LINE__, "HR_CHECK(" #cond ")")

/**
 * Compares two integers (converted to intmax_t, each evaluated once) with op,
 * one of == != < <= > >=, e.g. HR_CHECK_CMP_INT(n, <=, 5).
 */
#define HR_CHECK_CMP_INT(a, op, b)                                                                 \
    hr_test_check_int_((intmax_t)(a), #op, (intmax_t)(b), __FILE__, __LINE__,                      \
                       "HR_CHECK_CMP_INT(" #a ", " #op ", " #b ")")
#define HR_CHECK_EQ_INT(a, b) HR_CHECK_CMP_INT(a, ==, b)

/** The same for unsigned values that may not fit intmax_t (uint64_t). */
#define HR_CHECK_CMP_UINT(a, op, b)                                                                \
    hr_test_check_uint_((uintmax_t)(a), #op, (uintmax_t)(b), __FILE__, __LINE__,                   \
                        "HR_CHECK_CMP_UINT(" #a ", " #op ", " #b ")")
#define HR_CHECK_EQ_UINT(a, b) HR_CHECK_CMP_UINT(a, ==, b)

/** Equal NUL-terminated strings (two NULLs are equal). */
#define HR_CHECK_EQ_STR(a, b)                                                                      \
    hr_test_check_str_((a), (b), __FILE__, __LINE__, "HR_CHECK_EQ_STR(" #a ", " #b ")")

/** Equal byte ranges; on failure shows where they first differ. */
#define HR_CHECK_EQ_MEM(a, alen, b, blen)                                                          \
    hr_test_check_mem_((a), (alen), (b), (blen), __FILE__, __LINE__,                               \
                       "HR_CHECK_EQ_MEM(" #a ", " #b ")")

/** hay contains needle. */
#define HR_CHECK_CONTAINS(hay, needle)                                                             \
    hr_test_check_contains_((hay), (needle), __FILE__, __LINE__,                                   \
                            "HR_CHECK_CONTAINS(" #hay ", " #needle ")")

/** Fails unconditionally with a printf-style reason. */
#define HR_FAIL(...) hr_test_fail_(__FILE__, __LINE__, "HR_FAIL", __VA_ARGS__)

/** Like HR_CHECK, and returns from the (void) test function when it fails. */
#define HR_REQUIRE(cond)                                                                           \
    do {                                                                                           \
        if (!HR_CHECK(cond))                                                                       \
            return;                                                                                \
    } while (0)
#define HR_REQUIRE_EQ_INT(a, b)                                                                    \
    do {                                                                                           \
        if (!HR_CHECK_EQ_INT(a, b))                                                                \
            return;                                                                                \
    } while (0)

/** A heap copy of exactly n bytes (no NUL after them), so ASan sees any over-read. */
static inline char *
hr_test_memdup(const void *p, size_t n)
{
    char *q = malloc(n ? n : 1);
    if (q == NULL) {
        fprintf(stderr, "hr_test: out of memory\n");
        abort();
    }
    if (n)
        memcpy(q, p, n);
    else
        q[0] = '\0';
    return q;
}

/*
 * Runs every registered test (or those matching HR_TEST_FILTER), prints TAP
 * and the summary line. Returns the process exit code.
 */
static inline int
hr_test_run_all(void)
{
    const char *filter = getenv("HR_TEST_FILTER");
    int planned = 0, passed = 0, failed = 0;
    hr_test_case_t *c;

    setvbuf(stdout, NULL, _IOLBF, 0);
    for (c = hr_test_state.head; c != NULL; c = c->next)
        if (filter == NULL || strstr(c->name, filter) != NULL)
            planned++;
    printf("1..%d\n", planned);

    int n = 0;
    for (c = hr_test_state.head; c != NULL; c = c->next) {
        if (filter != NULL && strstr(c->name, filter) == NULL)
            continue;
        n++;
        hr_test_state.cur_failed = 0;
        c->fn();
        if (hr_test_state.cur_failed == 0) {
            passed++;
            printf("ok %d - %s\n", n, c->name);
        } else {
            failed++;
            printf("not ok %d - %s (%s:%d)\n", n, c->name, hr_test_state.first_file,
                   hr_test_state.first_line);
        }
        fflush(stdout);
    }
    if (planned == 0)
        printf("# no tests ran\n");
    printf("%d passed, %d failed\n", passed, failed);
    fflush(stdout);
    return failed == 0 && planned > 0 ? 0 : 1;
}

/** Defines main() for a test file that needs no setup of its own. */
#define HR_TEST_MAIN()                                                                             \
    int main(void)                                                                                 \
    {                                                                                              \
        return hr_test_run_all();                                                                  \
    }

#endif
