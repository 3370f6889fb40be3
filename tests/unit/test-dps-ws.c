/* SPDX-License-Identifier: MIT */
/* test-dps-ws.c: Sec-WebSocket-Accept (RFC 6455 example), handshake answer validation, HTTP status lines */
#include <errno.h>

#include <openssl/evp.h>
#include <openssl/sha.h>

#include "dps-macro.h"
#include "dps-ws.h"
#include "test-util.h"

/* Independent of dps_ws_accept(): EVP_EncodeBlock over SHA1. */
static void ref_accept(const char *key, char out[64]) {
        char in[256];
        uint8_t md[SHA_DIGEST_LENGTH];

        snprintf(in, sizeof(in), "%s258EAFA5-E914-47DA-95CA-C5AB0DC85B11", key);
        SHA1((const unsigned char *) in, strlen(in), md);
        EVP_EncodeBlock((unsigned char *) out, md, sizeof(md));
}

static void test_ws_accept(void) {
        _cleanup_free_ char *a = NULL, *k1 = NULL, *k2 = NULL, *a2 = NULL;
        char ref[64];

        /* RFC 6455 section 1.3 */
        CHECK_INT(dps_ws_accept("dGhlIHNhbXBsZSBub25jZQ==", &a), 0);
        CHECK_STR(a, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
        CHECK_INT(dps_ws_accept("", &a2), -EINVAL);

        CHECK_INT(dps_ws_new_key(&k1), 0);
        CHECK_INT(dps_ws_new_key(&k2), 0);
        CHECK(k1 && strlen(k1) == 24 && k1[22] == '=' && k1[23] == '=');
        CHECK(k1 && k2 && strcmp(k1, k2) != 0);
        CHECK_INT(dps_ws_accept(k1, &a2), 0);
        ref_accept(k1, ref);
        CHECK_STR(a2, ref);
}

static void test_ws_check_response(void) {
        const char *key = "dGhlIHNhbXBsZSBub25jZQ==", *reason = NULL;
        int status = -1;

        const char *good =
                "HTTP/1.1 101 Switching Protocols\r\n"
                "upgrade: WebSocket\r\n"
                "Connection: keep-alive, Upgrade\r\n"
                "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"
                "sec-websocket-protocol: mqtt\r\n"
                "\r\n";
        CHECK_INT(dps_ws_check_response(good, key, "mqtt", &status, &reason), 0);
        CHECK_INT(status, 101);

        static const struct { const char *head, *why; int status; } bad[] = {
                { "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                  "Sec-WebSocket-Accept: AAAAAAAAAAAAAAAAAAAAAAAAAAA=\r\nSec-WebSocket-Protocol: mqtt\r\n\r\n",
                  "Sec-WebSocket-Accept does not match", 101 },
                { "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                  "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n",
                  "no WebSocket subprotocol", 101 },
                { "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                  "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\nSec-WebSocket-Protocol: chat\r\n\r\n",
                  "did not offer", 101 },
                { "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                  "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\nSec-WebSocket-Protocol: mqttv5\r\n\r\n",
                  "did not offer", 101 },
                { "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\n"
                  "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\nSec-WebSocket-Protocol: mqtt\r\n\r\n",
                  "Upgrade: websocket", 101 },
                { "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                  "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\nSec-WebSocket-Protocol: mqtt\r\n\r\n",
                  "Connection: Upgrade", 101 },
                { "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", "101", 200 },
                { "HTTP/1.1 404 Not Found\r\n\r\n", "101", 404 },
                { "SSH-2.0-OpenSSH_9.2\r\n\r\n", "not an HTTP response", 0 },
        };
        for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
                reason = NULL;
                status = -1;
                CHECK_INT(dps_ws_check_response(bad[i].head, key, "mqtt", &status, &reason), -EPROTO);
                CHECK_INT(status, bad[i].status);
                CHECK(reason && strstr(reason, bad[i].why));
        }
}

static void test_http_status(void) {
        _cleanup_free_ char *r1 = NULL, *r2 = NULL;
        int s = 0;

        CHECK_INT(dps_http_parse_status("HTTP/1.1 407 Proxy Authentication Required\r\nX: y\r\n\r\n", &s, &r1), 0);
        CHECK_INT(s, 407);
        CHECK_STR(r1, "Proxy Authentication Required");
        CHECK_INT(dps_http_parse_status("HTTP/1.0 200\r\n\r\n", &s, &r2), 0);
        CHECK_INT(s, 200);
        CHECK_STR(r2, "");
        CHECK_INT(dps_http_parse_status("HTTP/2 200 OK\r\n", &s, NULL), -EBADMSG);
        CHECK_INT(dps_http_parse_status("HTTP/1.1 20 OK\r\n", &s, NULL), -EBADMSG);
        CHECK_INT(dps_http_parse_status("HTTP/1.1 2000 OK\r\n", &s, NULL), -EBADMSG);
        CHECK_INT(dps_http_parse_status("hello", &s, NULL), -EBADMSG);
}

int main(void) {
        test_ws_accept();
        test_ws_check_response();
        test_http_status();
        return test_summary("test-dps-ws");
}
