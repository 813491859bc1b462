/*
 * Logging: one line per event on stderr,
 *   ts=2026-11-24T01:02:03.456Z level=info svc=ingest event=listen port=8080
 * The event name is a stable token; the rest is key=value chosen by the caller.
 * With log.format = "json" the same line is one JSON object instead,
 *   {"ts":"2026-11-24T01:02:03.456Z","level":"info","service":"ingest",
 *    "event":"listen","port":"8080"}
 * built from the key=value text (hr_log_kv_to_json). The logger is configured
 * once in main (service name, level, format) and is then read-only: the one
 * piece of process-wide state outside main, like Redis's server.verbosity.
 */
#ifndef HERALD_HR_LOG_H
#define HERALD_HR_LOG_H

#include <stddef.h>

typedef enum { HR_LOG_DEBUG = 0, HR_LOG_INFO, HR_LOG_WARN, HR_LOG_ERROR } hr_log_level_t;
typedef enum { HR_LOG_KV = 0, HR_LOG_JSON } hr_log_format_t;

/** Sets the service name and minimum level; call once at start. */
void hr_log_init(const char *service, hr_log_level_t min_level);
/** Sets the line format (HR_LOG_KV by default); call at start. */
void hr_log_set_format(hr_log_format_t format);
/** Parses "debug|info|warn|error"; returns -1 if unknown. */
int hr_log_level_parse(const char *s, hr_log_level_t *out);
/** Parses "kv|json"; returns -1 if unknown. */
int hr_log_format_parse(const char *s, hr_log_format_t *out);
/** Whether a line at this level would be written. */
int hr_log_enabled(hr_log_level_t level);
/** Writes one line: event token, then printf-formatted key=value text. */
void hr_log_write(hr_log_level_t level, const char *event, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* The most one formatted line takes (a JSON line may be longer than its kv text), newline included.
 */
#define HR_LOG_LINE_CAP 6144
/**
 * Formats the line hr_log_write() would write (whatever the level), newline
 * included, into out (cap bytes, at most HR_LOG_LINE_CAP needed); returns its
 * length. For callers that buffer lines and write many at once (ingest's
 * access log).
 */
size_t hr_log_format(char *out, size_t cap, hr_log_level_t level, const char *event,
                     const char *fmt, ...) __attribute__((format(printf, 5, 6)));

/**
 * Writes untrusted text s (len bytes) into dst (cap bytes, NUL-terminated,
 * cut to fit) for use inside a quoted log value: '"' and '\' get a backslash,
 * control bytes and DEL become \xHH. Returns dst.
 */
const char *hr_log_quote(char *dst, size_t cap, const char *s, size_t len);

/**
 * Turns one key=value log line (without its newline) into a JSON object:
 * each key=value pair a string member in order (a "quoted value", which ends
 * at the quote before " key=" or the line's end, unquoted with \" \\ and
 * \xHH undone), text that is not a pair joined into "text", svc renamed
 * "service". Strings are escaped for JSON; bytes that are not UTF-8
 * become U+FFFD. Writes at most cap bytes including the NUL (members that do
 * not fit are dropped and "truncated":"true" added); returns the length.
 */
size_t hr_log_kv_to_json(const char *line, size_t len, char *out, size_t cap);

#define hr_log_debug(event, ...)                                                                   \
    do {                                                                                           \
        if (hr_log_enabled(HR_LOG_DEBUG))                                                          \
            hr_log_write(HR_LOG_DEBUG, event, __VA_ARGS__);                                        \
    } while (0)
#define hr_log_info(event, ...) hr_log_write(HR_LOG_INFO, event, __VA_ARGS__)
#define hr_log_warn(event, ...) hr_log_write(HR_LOG_WARN, event, __VA_ARGS__)
#define hr_log_error(event, ...) hr_log_write(HR_LOG_ERROR, event, __VA_ARGS__)

#endif
