/*
 * The pure half of ingest's write: the script's arguments and the 202 answer
 * built as text into per-request buffers (no cJSON trees, no per-field
 * copies), so one POST costs a handful of allocations. Nothing here does I/O.
 */
#ifndef HERALD_ING_WRITE_H
#define HERALD_ING_WRITE_H

#include "hr_proto.h"

#include <stddef.h>

/* A growable byte buffer starting in caller-provided storage. */
typedef struct {
    char *p; /* owned when != inl */
    size_t len, cap;
    char *inl; /* borrowed: the initial storage */
} ing_buf_t;

void ing_buf_init(ing_buf_t *b, char *inl, size_t cap);
void ing_buf_add(ing_buf_t *b, const void *s, size_t n);
void ing_buf_adds(ing_buf_t *b, const char *s);
void ing_buf_free(ing_buf_t *b);

/** Appends s as a JSON string, quoted and escaped byte for byte as cJSON prints it. */
void ing_json_str(ing_buf_t *b, const char *s);

/**
 * Appends the envelope of n, byte-identical to hr_proto_envelope_encode(n)
 * (the worker decodes it; the gateway forwards it inside the frame).
 */
void ing_envelope(ing_buf_t *b, const hr_notification_t *n);

/** Appends the command argv (argc arguments) in RESP, as redisFormatCommandArgv() writes it. */
/** Writes v in decimal at p (room for 20 digits, no NUL); returns its length. */
size_t ing_u64(char *p, uint64_t v);
void ing_resp_format(ing_buf_t *b, size_t argc, const char *const *argv, const size_t *argvlen);

#define ING_ARGS_INLINE 16

/* An argument's start: an offset into the bytes while building, a pointer after finish. */
typedef union {
    size_t off;
    const char *p; /* borrowed from bytes */
} ing_arg_t;

/*
 * The arguments of one command: bytes in one buffer, each argument an
 * (offset, length) until ing_args_finish() turns the offsets into argv
 * pointers in place (the buffer may move while it grows). Small enough with
 * its inline storage that a pending request stays under glibc's 1 KiB
 * large-chunk threshold (a larger malloc consolidates the fast bins).
 */
typedef struct {
    ing_buf_t bytes;
    char bytes_inl[512];
    size_t n, cap;
    ing_arg_t *arg; /* owned when != arg_inl; after finish: argv */
    size_t *len;    /* owned when != len_inl; after finish: argvlen */
    ing_arg_t arg_inl[ING_ARGS_INLINE];
    size_t len_inl[ING_ARGS_INLINE];
    const char **argv; /* after finish: the pointers of arg */
    size_t *argvlen;   /* after finish: len */
} ing_args_t;

/** Prepares a (in place: it points into itself, so it must not be moved). */
void ing_args_init(ing_args_t *a);
/** Adds an argument of n bytes copied from s; returns its index. */
size_t ing_args_push(ing_args_t *a, const void *s, size_t n);
/** Starts an argument written by appending to a->bytes; returns its index. */
size_t ing_args_open(ing_args_t *a);
/** Ends the argument i opened last. */
void ing_args_close(ing_args_t *a, size_t i);
/** Replaces argument i by a copy of s (n bytes). */
void ing_args_set(ing_args_t *a, size_t i, const void *s, size_t n);
/** Fills a->argv / a->argvlen; nothing may be added afterwards. */
void ing_args_finish(ing_args_t *a);
void ing_args_free(ing_args_t *a);

#endif
