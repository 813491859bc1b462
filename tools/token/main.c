/* herald-token: see tok_cli.h. */
#include "tok_cli.h"

#include <time.h>

int
main(int argc, char **argv)
{
    return tok_cli_run(argc, argv, stdin, stdout, stderr, (int64_t)time(NULL));
}
