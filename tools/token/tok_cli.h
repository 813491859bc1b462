/* herald-token's command line, callable from tests. */
#ifndef HERALD_TOK_CLI_H
#define HERALD_TOK_CLI_H

#include <stdint.h>
#include <stdio.h>

/**
 * Runs `herald-token USER [--rooms LIST] [--ttl DURATION] [--config FILE]
 * [--kid KID]` or `herald-token --hash-key KEY|-` at time now (seconds),
 * printing the token or hash to out and diagnostics to errf. Returns the
 * exit code: 0, 1 (refused: config, key, claims) or 2 (usage).
 */
int tok_cli_run(int argc, char **argv, FILE *in, FILE *out, FILE *errf, int64_t now);

/** Parses "90", "90s", "15m", "1h", "7d" into seconds (1 s .. 366 d). Returns 0 or -1. */
int tok_cli_parse_ttl(const char *s, int64_t *out);
#endif
