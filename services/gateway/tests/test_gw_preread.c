/* gw_preread_rewrite: a subprotocol token moves out of Sec-WebSocket-Protocol. */
#include "hr_test.h"

#include "gw_auth.h"
#include "gw_preread.h"

#include <string.h>

static size_t
rewrite(const char *in, char *out, size_t cap)
{
    return gw_preread_rewrite(in, strlen(in), out, cap);
}

HR_TEST(token_subprotocol_moves_to_the_private_header)
{
    char out[1024];
    const char *in = "GET /ws HTTP/1.1\r\nHost: x\r\n"
                     "Sec-WebSocket-Protocol: herald, herald.token.aaa.bbb.ccc\r\n"
                     "Upgrade: websocket\r\n\r\n";
    size_t n = rewrite(in, out, sizeof(out));
    HR_CHECK(n > 0);
    out[n] = '\0';
    HR_CHECK_EQ_STR(out, "GET /ws HTTP/1.1\r\nHost: x\r\nSec-WebSocket-Protocol: herald\r\n"
                         "Upgrade: websocket\r\n" GW_AUTH_TOKEN_HEADER " aaa.bbb.ccc\r\n\r\n");
}

HR_TEST(token_first_and_odd_spacing_keep_the_other_names)
{
    char out[1024];
    const char *in = "GET /ws HTTP/1.1\r\nsec-websocket-protocol:herald.token.t1 ,  chat,herald\r\n"
                     "\r\n";
    size_t n = rewrite(in, out, sizeof(out));
    HR_CHECK(n > 0);
    out[n] = '\0';
    HR_CHECK_EQ_STR(
        out, "GET /ws HTTP/1.1\r\nSec-WebSocket-Protocol: chat, herald\r\n" GW_AUTH_TOKEN_HEADER
             " t1\r\n\r\n");
}

HR_TEST(a_client_copy_of_the_private_header_is_dropped)
{
    char out[1024];
    const char *in = "GET /ws?token=q HTTP/1.1\r\nX-Herald-Subprotocol-Token: forged\r\n\r\n";
    size_t n = rewrite(in, out, sizeof(out));
    HR_CHECK(n > 0);
    out[n] = '\0';
    HR_CHECK_EQ_STR(out, "GET /ws?token=q HTTP/1.1\r\n\r\n");
}

HR_TEST(only_a_token_offered_leaves_no_protocol_header)
{
    char out[1024];
    size_t n = rewrite("GET /ws HTTP/1.1\r\nSec-WebSocket-Protocol: herald.token.t\r\n\r\n", out,
                       sizeof(out));
    HR_CHECK(n > 0);
    out[n] = '\0';
    HR_CHECK_EQ_STR(out, "GET /ws HTTP/1.1\r\n" GW_AUTH_TOKEN_HEADER " t\r\n\r\n");
}

HR_TEST(nothing_to_change_returns_0)
{
    char out[1024];
    HR_CHECK_EQ_UINT(
        rewrite("GET /ws HTTP/1.1\r\nSec-WebSocket-Protocol: herald\r\n\r\n", out, sizeof(out)), 0);
    HR_CHECK_EQ_UINT(rewrite("GET /ws HTTP/1.1\r\nHost: x\r\n\r\n", out, sizeof(out)), 0);
    HR_CHECK_EQ_UINT(rewrite("garbage", out, sizeof(out)), 0);
}

HR_TEST(output_that_would_not_fit_is_not_written)
{
    char out[40];
    HR_CHECK_EQ_UINT(rewrite("GET /ws HTTP/1.1\r\nSec-WebSocket-Protocol: herald, "
                             "herald.token.0123456789012345678901234567890123456789\r\n\r\n",
                             out, sizeof(out)),
                     0);
}

HR_TEST_MAIN()
