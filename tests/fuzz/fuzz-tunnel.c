/* SPDX-License-Identifier: MIT */
/* fuzz-tunnel.c: libFuzzer harness for dps-tunnel's parsers: proxy URLs, no_proxy, HTTP status lines, WebSocket upgrade answers */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "dps-macro.h"
#include "dps-tunnel.h"
#include "fuzz-util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* RFC 6455 section 1.3's example key */
#define WS_KEY "dGhlIHNhbXBsZSBub25jZQ=="

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        _cleanup_free_ char *s = NULL, *shown = NULL, *reason = NULL;
        DpsProxy p = {}, copy = {};
        const char *why = NULL;
        char *nl;
        int r, status = -1;

        if (size > 65536)
                return 0;
        s = fuzz_string(data, size);
        if (!s)
                return 0;

        /* a proxy URL: what may be logged never holds the password */
        r = dps_proxy_parse(s, &p);
        if (r == 0) {
                if (strempty(p.host) || p.port == 0 || (p.password && !p.user))
                        abort();
                if (dps_proxy_to_string(&p, &shown) < 0 || !shown)
                        abort();
                /* user info is shown as "***", whatever it holds */
                if (strncmp(shown, p.user ? "http://***@" : "http://", p.user ? 11 : 7) != 0 ||
                    strchr(shown + (p.user ? 11 : 7), '@'))
                        abort();
                if (dps_proxy_copy(&p, &copy) < 0 || !streq(copy.host, p.host) || copy.port != p.port)
                        abort();
                dps_proxy_done(&copy);
                dps_proxy_done(&p);
        } else if (r != -EINVAL && r != -EPROTONOSUPPORT && r != -ENOMEM)
                abort();

        /* "no_proxy\nhost" */
        nl = strchr(s, '\n');
        if (nl) {
                *nl = '\0';
                r = dps_proxy_excluded(s, nl + 1);
                if (r != 0 && r != 1)
                        abort();
                *nl = '\n';
        }

        /* a response head from a proxy or a WebSocket server */
        r = dps_http_parse_status(s, &status, &reason);
        if (r == 0) {
                if (status < 100 || status > 999 || !reason || strlen(reason) > 80)
                        abort();
                for (const char *c = reason; *c; c++)
                        if ((unsigned char) *c < 0x20 || *c == 0x7f)
                                abort();
        } else if (r != -EBADMSG && r != -ENOMEM)
                abort();

        status = -1;
        r = dps_ws_check_response(s, WS_KEY, DPS_WS_PROTOCOL, &status, &why);
        if (r == 0) {
                if (status != 101 || !strstr(s, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="))
                        abort();
        } else if (r != -EPROTO || !why)
                abort();
        return 0;
}
