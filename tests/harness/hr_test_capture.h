/*
 * Capturing what code writes to stderr (log lines), for unit tests;
 * header-only, like hr_test.h:
 *
 *   static char out[8192];
 *   size_t n = hr_test_capture_stderr(log_something, out, sizeof(out));
 *
 * stderr goes to a temporary file while fn runs and is put back after.
 */
#ifndef HERALD_HR_TEST_CAPTURE_H
#define HERALD_HR_TEST_CAPTURE_H

#include "hr_test.h"

#include <stdio.h>
#include <unistd.h>

/*
 * Runs fn with stderr sent to a temp file and leaves what it wrote in buf,
 * NUL-terminated (at most cap - 1 bytes). Returns that length; 0, and a
 * failed check, when no temp file could be made.
 */
static inline size_t
hr_test_capture_stderr(void (*fn)(void), char *buf, size_t cap)
{
    FILE *tmp = tmpfile();
    if (!HR_CHECK(tmp != NULL))
        return 0;
    fflush(stderr);
    int saved = dup(STDERR_FILENO);
    dup2(fileno(tmp), STDERR_FILENO);
    fn();
    fflush(stderr);
    dup2(saved, STDERR_FILENO);
    close(saved);
    rewind(tmp);
    size_t n = fread(buf, 1, cap - 1, tmp);
    buf[n] = '\0';
    fclose(tmp);
    return n;
}

#endif
