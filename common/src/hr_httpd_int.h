/*
 * hr_httpd's insides, shared by its two halves: hr_httpd.c (the listener,
 * connections, parsing, I/O, deadlines) and hr_httpd_req.c (what the
 * service sees of a request, and the answer). Not for services.
 */
#ifndef HERALD_HR_HTTPD_INT_H
#define HERALD_HR_HTTPD_INT_H

#include "herald/hr_alloc.h"
#include "herald/hr_httpd.h"
#include "herald/hr_time.h"

#include <stdint.h>
#include <string.h>

#define HR_HTTPD_IN_INIT 4096    /* first input buffer of a connection */
#define HR_HTTPD_READ_MIN 1024   /* less room than this before a read: compact or grow */
#define HR_HTTPD_LINGER_MS 2000  /* after a closing answer: reading what the client still sends */
#define HR_HTTPD_SWEEP_MS 250    /* deadlines are checked this often */
#define HR_HTTPD_ACCEPTS 64      /* accepts per wake-up of the listener */
#define HR_HTTPD_OUT_KEEP 65536  /* a larger output buffer is freed once empty */
#define HR_HTTPD_CHUNK_LINE 1024 /* a chunk-size or trailer line */

typedef enum {
    HR_HTTPD_C_HEAD,    /* waiting for (the rest of) a request head */
    HR_HTTPD_C_BODY,    /* waiting for the rest of a Content-Length body */
    HR_HTTPD_C_CHUNKED, /* decoding a chunked body into conn->chunk */
    HR_HTTPD_C_BUSY,    /* the request is with the service */
    HR_HTTPD_C_LINGER,  /* answered and shut for writing: reading until the client closes */
} hr_httpd_cstate_t;

typedef enum {
    HR_HTTPD_CH_SIZE,
    HR_HTTPD_CH_DATA,
    HR_HTTPD_CH_CRLF,
    HR_HTTPD_CH_TRAILER
} hr_httpd_chstate_t;

/* What a deadline does when it passes. */
typedef enum {
    HR_HTTPD_D_NONE,
    HR_HTTPD_D_HEAD,   /* 408 */
    HR_HTTPD_D_BODY,   /* 408 */
    HR_HTTPD_D_IDLE,   /* a keep-alive connection with nothing to do: closed quietly */
    HR_HTTPD_D_LINGER, /* closed */
} hr_httpd_dkind_t;

/* A header field of the request: offsets from the head's start (a head is at most 32 KiB). */
typedef struct {
    uint16_t name, value;
} hr_httpd_field_t;

typedef struct hr_httpd_conn_s hr_httpd_conn_t;

struct hr_httpd_req_s {
    hr_httpd_conn_t *conn; /* borrowed: the connection it came on */
    hr_httpd_method_t method;
    size_t path_len;
    hr_httpd_field_t fields[HR_HTTP_FIELDS_MAX];
    size_t nfields;
    const char *head; /* borrowed: the head in conn->in (valid while the request is busy) */
    const char *body; /* borrowed: conn->in or conn->chunk */
    size_t body_len;
    void (*gone_cb)(hr_httpd_req_t *, void *); /* hr_httpd_on_gone; NULL: none */
    void *gone_arg;                            /* borrowed */
    char *ohdr; /* answer headers as "name\0value\0"…: ohdr_inl or owned */
    size_t ohdr_len, ohdr_cap;
    char ohdr_inl[256];
};

struct hr_httpd_conn_s {
    hr_httpd_t *srv;              /* borrowed */
    hr_httpd_conn_t *prev, *next; /* the server's list */
    int fd;                       /* -1 once closed (kept for a busy request's answer) */
    struct event *rev;            /* owned: read interest, kept for the connection's life */
    struct event *wev;            /* owned: added only while output waits for the socket */
    int reading, writing;         /* rev / wev added */
    hr_httpd_cstate_t state;
    char *in; /* owned: in[in_pos..in_len) is unconsumed input */
    size_t in_pos, in_len, in_cap;
    size_t scan; /* HEAD: bytes after in_pos already searched */
    int line_ok; /* HEAD: the request line was found and checked */
    size_t head_len;
    unsigned long long body_len; /* BODY: Content-Length */
    size_t limit;                /* body limit of the current request */
    hr_http_head_t h;            /* the current request's head, as checked */
    char *chunk;                 /* owned: CHUNKED, the decoded body */
    size_t chunk_len, chunk_cap;
    hr_httpd_chstate_t ch;
    size_t ch_left, trailer_len;
    char *out; /* owned: out[out_off..out_len) waits for the socket */
    size_t out_off, out_len, out_cap;
    int keep;        /* the connection stays open after the current answer */
    int eof;         /* the client has finished sending */
    int close_after; /* close once the output is out */
    int in_process;  /* inside hr_httpd_process: answers are sent at its end, together */
    uint64_t deadline_ms;
    hr_httpd_dkind_t deadline_kind;
    uint64_t wdeadline_ms; /* output waiting: progress needed by then */
    hr_httpd_req_t req;
};

struct hr_httpd_s {
    struct event_base *base;    /* borrowed */
    int lfd;                    /* owned: the listening socket, -1 once closed */
    struct event *lev;          /* owned */
    int listening;              /* lev added */
    struct event *resume;       /* owned: re-enables accept after a pause (1 s, persistent) */
    struct event *sweep;        /* owned: deadlines (HR_HTTPD_SWEEP_MS, persistent) */
    hr_http_body_rule_t *rules; /* owned array (paths borrowed) */
    size_t nrules;
    size_t max_body, max_in;
    char *cors_origin; /* owned; "" for none */
    int max_connections, header_timeout_ms, idle_timeout_ms;
    int conns;                  /* open sockets */
    hr_httpd_conn_t *conn_list; /* owned */
    int port;
    uint64_t date_s; /* the second date[] shows */
    char date[HR_TIME_HTTP_LEN];
    void (*cb)(hr_httpd_req_t *, void *);
    void *cbarg; /* borrowed */
};

/* ---- shared by both halves ---- */

static inline void
hr_httpd_reserve(char **buf, size_t *cap, size_t len, size_t more)
{
    if (*cap - len >= more)
        return;
    size_t n = *cap > 0 ? *cap : 256;
    while (n - len < more)
        n *= 2;
    *buf = hr_realloc(*buf, n);
    *cap = n;
}

static inline void
hr_httpd_put(hr_httpd_conn_t *c, const char *s, size_t n)
{
    memcpy(c->out + c->out_len, s, n);
    c->out_len += n;
}

#define HR_HTTPD_PUTS(c, lit) hr_httpd_put((c), (lit), sizeof(lit) - 1)

/* hr_httpd.c: parses and dispatches what c's input holds; 0, or -1 when c ended (gone). */
int hr_httpd_process(hr_httpd_conn_t *c);
/* hr_httpd.c: frees a connection whose socket is closed. */
void hr_httpd_conn_free(hr_httpd_conn_t *c);
/*
 * hr_httpd_req.c: appends an answer head (and body, unless head_only; plus a
 * newline with nl) to c's output. extra: fields as "name\0value\0"…
 */
void hr_httpd_format(hr_httpd_conn_t *c, int status, const char *ctype, const char *extra,
                     size_t extra_len, const char *body, size_t len, int nl, int head_only);

#endif
