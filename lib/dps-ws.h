/* SPDX-License-Identifier: MIT */
/* dps-ws.h: the WebSocket opening handshake (RFC 6455 section 4) and HTTP status lines */
#pragma once

/*
 * Pure functions over strings, used by dps-tunnel.c (client) and testable
 * alone. The framing itself is libwslay's.
 */


#ifdef __cplusplus
extern "C" {
#endif

/* ---- WebSocket handshake (RFC 6455 section 4) --------------------------- */

/* "258EAFA5-E914-47DA-95CA-C5AB0DC85B11", RFC 6455 section 1.3 */
#define DPS_WS_GUID "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
/* "subprotocol mqtt" (dps-protocol.md, Transport) */
#define DPS_WS_PROTOCOL "mqtt"

/* base64(SHA-1(key_b64 + DPS_WS_GUID)). */
int dps_ws_accept(const char *key_b64, char **ret_accept);

/* Fresh Sec-WebSocket-Key: base64 of 16 random bytes. */
int dps_ws_new_key(char **ret_key_b64);

/* Validates a complete response head (status line and headers, up to and
 * including the empty line): status 101, "Upgrade: websocket",
 * "Connection: Upgrade", Sec-WebSocket-Accept matching key_b64 and
 * Sec-WebSocket-Protocol equal to protocol. -EPROTO on any mismatch with
 * *ret_reason (if non-NULL) set to a static sentence; ret_status (if
 * non-NULL) receives the HTTP status (0 when unparseable), also on failure. */
int dps_ws_check_response(const char *head, const char *key_b64, const char *protocol,
                          int *ret_status, const char **ret_reason);

/* Parses "HTTP/1.x NNN reason" from a response head: the status and a copy
 * of the reason phrase (non-printable bytes dropped, at most 80 characters).
 * -EBADMSG when it is not an HTTP status line. */
int dps_http_parse_status(const char *head, int *ret_status, char **ret_reason);

#ifdef __cplusplus
}
#endif
