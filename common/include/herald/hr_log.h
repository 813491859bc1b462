/*
 * Logging: one line per event on stderr,
 *   ts=2026-11-24T01:02:03.456Z level=info svc=ingest event=listen port=8080
 * The event name is a stable token; the rest is key=value chosen by the caller.
 * The logger is configured once in main (service name, level) and is then
 * read-only: the one piece of process-wide state outside main, like Redis's
 * server.verbosity.
 */
#ifndef HERALD_HR_LOG_H
#define HERALD_HR_LOG_H

typedef enum { HR_LOG_DEBUG = 0, HR_LOG_INFO, HR_LOG_WARN, HR_LOG_ERROR } hr_log_level_t;

/** Sets the service name and minimum level; call once at start. */
void hr_log_init(const char *service, hr_log_level_t min_level);
/** Parses "debug|info|warn|error"; returns -1 if unknown. */
int hr_log_level_parse(const char *s, hr_log_level_t *out);
/** Whether a line at this level would be written. */
int hr_log_enabled(hr_log_level_t level);
/** Writes one line: event token, then printf-formatted key=value text. */
void hr_log_write(hr_log_level_t level, const char *event, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#define hr_log_debug(event, ...)                                                                   \
    do {                                                                                           \
        if (hr_log_enabled(HR_LOG_DEBUG))                                                          \
            hr_log_write(HR_LOG_DEBUG, event, __VA_ARGS__);                                        \
    } while (0)
#define hr_log_info(event, ...) hr_log_write(HR_LOG_INFO, event, __VA_ARGS__)
#define hr_log_warn(event, ...) hr_log_write(HR_LOG_WARN, event, __VA_ARGS__)
#define hr_log_error(event, ...) hr_log_write(HR_LOG_ERROR, event, __VA_ARGS__)

#endif
