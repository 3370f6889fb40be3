/* SPDX-License-Identifier: MIT */
/* dps-ws.c: the WebSocket opening handshake (RFC 6455 section 4) and HTTP status lines */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <openssl/rand.h>
#include <openssl/sha.h>

#include "dps-macro.h"
#include "dps-util.h"
#include "dps-ws.h"

/* ---- HTTP heads and the WebSocket handshake ----------------------------- */

int dps_ws_accept(const char *key_b64, char **ret_accept) {
        _cleanup_free_ char *s = NULL;
        uint8_t md[SHA_DIGEST_LENGTH];

        if (strempty(key_b64) || !ret_accept)
                return -EINVAL;
        if (asprintf(&s, "%s" DPS_WS_GUID, key_b64) < 0)
                return -ENOMEM;
        if (!SHA1((const unsigned char *) s, strlen(s), md))
                return -EIO;
        return dps_base64_encode(md, sizeof(md), ret_accept);
}

int dps_ws_new_key(char **ret_key_b64) {
        uint8_t nonce[16];

        if (!ret_key_b64)
                return -EINVAL;
        if (RAND_bytes(nonce, sizeof(nonce)) != 1)
                return -EIO;
        return dps_base64_encode(nonce, sizeof(nonce), ret_key_b64);
}

int dps_http_parse_status(const char *head, int *ret_status, char **ret_reason) {
        const char *p, *eol;
        char *reason;
        size_t n, k = 0;
        int status;

        if (!head)
                return -EINVAL;
        if (strncmp(head, "HTTP/1.", 7) != 0 || !(head[7] == '0' || head[7] == '1') || head[8] != ' ')
                return -EBADMSG;
        p = head + 9;
        if (!(p[0] >= '1' && p[0] <= '5') || !(p[1] >= '0' && p[1] <= '9') || !(p[2] >= '0' && p[2] <= '9'))
                return -EBADMSG;
        if (p[3] != ' ' && p[3] != '\r' && p[3] != '\n')
                return -EBADMSG;
        status = (p[0] - '0') * 100 + (p[1] - '0') * 10 + (p[2] - '0');
        p += 3;
        if (*p == ' ')
                p++;
        eol = p + strcspn(p, "\r\n");
        n = (size_t) (eol - p);
        if (n > 80)
                n = 80;
        reason = malloc(n + 1);
        if (!reason)
                return -ENOMEM;
        for (size_t i = 0; i < n; i++)
                if (p[i] >= 0x20 && p[i] < 0x7f)
                        reason[k++] = p[i];
        reason[k] = 0;

        if (ret_status)
                *ret_status = status;
        if (ret_reason)
                *ret_reason = reason;
        else
                free(reason);
        return 0;
}

/* Finds header name (case-insensitive) in a response head; returns a pointer
 * to its value with leading blanks skipped and *ret_len its length without
 * trailing blanks. NULL when absent. A repeated header: the first one. */
static const char *http_header(const char *head, const char *name, size_t *ret_len) {
        size_t nl = strlen(name);
        const char *line = strstr(head, "\n");

        while (line && line[1] && line[1] != '\r' && line[1] != '\n') {
                const char *l = line + 1, *eol = l + strcspn(l, "\r\n");

                if ((size_t) (eol - l) > nl && strncasecmp(l, name, nl) == 0 && l[nl] == ':') {
                        const char *v = l + nl + 1;
                        while (v < eol && (*v == ' ' || *v == '\t'))
                                v++;
                        const char *e = eol;
                        while (e > v && (e[-1] == ' ' || e[-1] == '\t'))
                                e--;
                        *ret_len = (size_t) (e - v);
                        return v;
                }
                line = strchr(l, '\n');
        }
        return NULL;
}

/* Does the comma-separated header value list contain token (case-insensitive)? */
static bool header_has_token(const char *v, size_t len, const char *token) {
        size_t tl = strlen(token);
        const char *end = v + len;

        while (v < end) {
                while (v < end && (*v == ' ' || *v == '\t' || *v == ','))
                        v++;
                const char *s = v;
                while (v < end && *v != ',')
                        v++;
                const char *e = v;
                while (e > s && (e[-1] == ' ' || e[-1] == '\t'))
                        e--;
                if ((size_t) (e - s) == tl && strncasecmp(s, token, tl) == 0)
                        return true;
        }
        return false;
}

int dps_ws_check_response(const char *head, const char *key_b64, const char *protocol,
                          int *ret_status, const char **ret_reason) {
        _cleanup_free_ char *expected = NULL;
        const char *v;
        size_t len;
        int r, status = 0;

#define FAIL(why) do { if (ret_reason) *ret_reason = (why); if (ret_status) *ret_status = status; return -EPROTO; } while (0)

        if (!head || !key_b64 || !protocol)
                return -EINVAL;
        r = dps_http_parse_status(head, &status, NULL);
        if (r < 0)
                FAIL("the server's answer is not an HTTP response");
        if (status != 101)
                FAIL("the server did not switch protocols (expected HTTP status 101)");

        v = http_header(head, "Upgrade", &len);
        if (!v || !header_has_token(v, len, "websocket"))
                FAIL("the server's answer lacks \"Upgrade: websocket\"");
        v = http_header(head, "Connection", &len);
        if (!v || !header_has_token(v, len, "Upgrade"))
                FAIL("the server's answer lacks \"Connection: Upgrade\"");

        r = dps_ws_accept(key_b64, &expected);
        if (r < 0)
                return r;
        v = http_header(head, "Sec-WebSocket-Accept", &len);
        if (!v)
                FAIL("the server's answer lacks Sec-WebSocket-Accept");
        if (len != strlen(expected) || memcmp(v, expected, len) != 0)
                FAIL("the server's Sec-WebSocket-Accept does not match our key");

        /* RFC 6455 4.1: the chosen subprotocol must be one we offered; we
         * offer exactly one and need it (MQTT framing). */
        v = http_header(head, "Sec-WebSocket-Protocol", &len);
        if (!v)
                FAIL("the server chose no WebSocket subprotocol (expected \"mqtt\")");
        if (len != strlen(protocol) || memcmp(v, protocol, len) != 0)
                FAIL("the server chose a WebSocket subprotocol we did not offer");

        if (http_header(head, "Sec-WebSocket-Extensions", &len) && len > 0)
                FAIL("the server chose a WebSocket extension we did not offer");
#undef FAIL
        if (ret_status)
                *ret_status = status;
        return 0;
}
