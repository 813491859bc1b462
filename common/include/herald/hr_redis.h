/*
 * Redis connections. hiredis 0.14 has no async timeouts and no reconnect, so
 * this module adds both: an async connection with an explicit state
 * (DISCONNECTED → CONNECTING → READY), reconnect with capped exponential
 * backoff, and a watchdog that drops a connection whose replies stall. The
 * event loop is abstracted by hr_loop_ops_t so ingest (libevent) and gateway
 * (libuv) share the same state machine.
 */
#ifndef HERALD_HR_REDIS_H
#define HERALD_HR_REDIS_H

#include "herald/hr_backoff.h" /* reconnect delays; included for existing users */

#include <hiredis/async.h>
#include <hiredis/hiredis.h>
#include <stddef.h>
#include <stdint.h>

/**
 * A parsed redis://[[user]:password@]host[:port][/db] URL: the password ends
 * at the last '@' and is percent-decoded; host may be an IPv6 literal in
 * brackets.
 */
typedef struct {
    char *host; /* owned */
    int port;
    char *password; /* owned, NULL if none */
    int db;
} hr_redis_addr_t;

/** Parses url into out; returns 0 or HR_DECLINED with err filled. */
int hr_redis_addr_parse(const char *url, hr_redis_addr_t *out, char *err, size_t errlen);
/** Frees what hr_redis_addr_parse() stored. */
void hr_redis_addr_clear(hr_redis_addr_t *a);

/**
 * Blocking connection for the worker: connects within timeout_ms, then AUTH and
 * SELECT as the URL asks. Returns the context (owned by the caller) or NULL with
 * err filled.
 */
redisContext *hr_redis_connect_sync(const hr_redis_addr_t *a, int timeout_ms, char *err,
                                    size_t errlen);

/** What the async connection needs from an event loop. */
typedef struct {
    /** Attaches hiredis's adapter for this loop; 0 or HR_ERR. */
    int (*attach)(redisAsyncContext *ac, void *loop);
    /** A one-shot timer calling cb(arg); owned by the caller of timer_new. */
    void *(*timer_new)(void *loop, void (*cb)(void *arg), void *arg);
    /** (Re)arms the timer to fire once after ms. */
    void (*timer_arm)(void *timer, uint64_t ms);
    /** Stops and frees the timer. */
    void (*timer_free)(void *timer);
} hr_loop_ops_t;

/** The libevent implementation; loop is a struct event_base *. */
extern const hr_loop_ops_t hr_loop_ops_libevent;

typedef struct hr_redis_async_s hr_redis_async_t;

/** Called on every READY (ready=1) and every loss of a READY connection (ready=0). */
typedef void (*hr_redis_state_fn)(hr_redis_async_t *r, int ready, void *ud);

typedef struct {
    const char *url;
    const char *name;       /* for logs, e.g. "publish", "subscribe" */
    int command_timeout_ms; /* 0: no watchdog (subscriber connections) */
    hr_redis_state_fn on_state;
    void *ud;
} hr_redis_async_opts_t;

/** Starts connecting at once; returns NULL with err filled if the URL is bad. */
hr_redis_async_t *hr_redis_async_create(const hr_loop_ops_t *ops, void *loop,
                                        const hr_redis_async_opts_t *opts, char *err,
                                        size_t errlen);
/** Closes the connection; pending callbacks get a NULL reply. */
void hr_redis_async_destroy(hr_redis_async_t *r);
/** Whether commands can be sent now. */
int hr_redis_async_ready(const hr_redis_async_t *r);
/**
 * Sends a command. cb gets (ac, reply or NULL on connection loss/timeout, priv)
 * exactly once. Returns 0, or HR_AGAIN when not READY (cb is not called).
 */
int hr_redis_async_argv(hr_redis_async_t *r, redisCallbackFn *cb, void *priv, int argc,
                        const char **argv, const size_t *argvlen);
/**
 * Like hr_redis_async_argv() for a command already in RESP (cmd, len bytes:
 * "*<argc>\r\n" then "$<len>\r\n<bytes>\r\n" per argument), which
 * hiredis copies as is instead of formatting it again.
 */
int hr_redis_async_formatted(hr_redis_async_t *r, redisCallbackFn *cb, void *priv, const char *cmd,
                             size_t len);
/**
 * Inside a command callback given a NULL reply (connection lost or watchdog):
 * 1 when that command never reached the socket whole, so Redis cannot have
 * run it (safe to report "not done"); 0 when it was sent and its outcome is
 * unknown (it may have run).
 */
int hr_redis_async_lost_unsent(const hr_redis_async_t *r);
/**
 * Sends (P)SUBSCRIBE/UNSUBSCRIBE: cb is called for every message of the
 * subscription, and with a NULL reply when the connection goes away.
 */
int hr_redis_async_subscribe_argv(hr_redis_async_t *r, redisCallbackFn *cb, void *priv, int argc,
                                  const char **argv, const size_t *argvlen);
/**
 * Writes what hiredis still holds in its output buffer now, without waiting
 * for the loop (before a destroy, so the last commands reach Redis even
 * though their replies will not be read). Best effort; returns 0 if all
 * went out.
 */
int hr_redis_async_flush(hr_redis_async_t *r);
/** Commands sent whose reply has not come yet. */
unsigned hr_redis_async_inflight(const hr_redis_async_t *r);

#endif
