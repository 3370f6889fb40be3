/* SPDX-License-Identifier: MIT */
/* dps-tunnel.h: the outer transport for MQTT over secure WebSocket and through HTTP proxies */
#pragma once

/*
 * libmosquitto 2.0 (Debian 12) has no WebSocket client and no proxy support,
 * but it can connect to a Unix stream socket (host = path, port = 0). A
 * DpsTunnel owns everything outside MQTT: TCP, an optional HTTP CONNECT
 * through a proxy, TLS and, for "mqtt-ws", the WebSocket handshake and
 * framing. Once the far end is up it listens on a private Unix socket, tells
 * its owner the path, accepts libmosquitto's one connection and pumps bytes
 * both ways from the caller's sd-event loop. See dps-tunnel.c for the why.
 */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <openssl/ssl.h>
#include <systemd/sd-event.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ---- proxies ------------------------------------------------------------ */

/* An HTTP proxy reached with CONNECT. user and password are secrets
 * (percent-decoded); they are wiped by dps_proxy_done() and never logged. */
typedef struct DpsProxy {
        char *host;             /* name or address, IPv6 without brackets; NULL = no proxy */
        uint16_t port;
        char *user;             /* NULL when the URL has no userinfo */
        char *password;         /* NULL when the URL has no ':' in its userinfo */
} DpsProxy;

/* curl's default when a proxy URL has no port. */
#define DPS_PROXY_DEFAULT_PORT 1080

/* Parses "http://[user[:pass]@]host[:port][/]" (scheme optional, as in the
 * https_proxy convention; host may be "[v6addr]"). -EINVAL for a malformed
 * URL, -EPROTONOSUPPORT for a scheme other than http. */
int dps_proxy_parse(const char *url, DpsProxy *ret);

/* Picks the proxy for target_host from the environment: https_proxy, then
 * HTTPS_PROXY; skipped when no_proxy (then NO_PROXY) lists "*" or a suffix of
 * target_host on a label boundary ("example.com" and ".example.com" both
 * match "a.example.com"; case-insensitive; a ":port" on an entry is ignored;
 * no CIDR). Returns 1 and fills *ret when a proxy applies, 0 (and *ret
 * zeroed) when none does, <0 for an unparseable proxy variable. */
int dps_proxy_from_env(const char *target_host, DpsProxy *ret);

/* Returns 1 when no_proxy-style list excludes host, 0 otherwise. */
int dps_proxy_excluded(const char *no_proxy, const char *host);

/* The proxy URL with its user info replaced by "***" (or without user info): what logs may show. */
int dps_proxy_to_string(const DpsProxy *p, char **ret);

int dps_proxy_copy(const DpsProxy *p, DpsProxy *ret);
void dps_proxy_done(DpsProxy *p);

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

/* ---- the tunnel ----------------------------------------------------------- */

typedef struct DpsTunnel DpsTunnel;

typedef enum DpsTunnelEvent {
        DPS_TUNNEL_READY,       /* the Unix socket listens: connect to dps_tunnel_socket_path() */
        DPS_TUNNEL_ERROR,       /* error <0 with a human message; the tunnel is dead */
        DPS_TUNNEL_CLOSED,      /* the far end or the MQTT side closed cleanly; dead */
        _DPS_TUNNEL_EVENT_MAX,
} DpsTunnelEvent;

/* message: a sentence without credentials, valid during the call, NULL for
 * READY. The owner may free the tunnel from within the callback. */
typedef void (*dps_tunnel_handler_t)(DpsTunnel *t, DpsTunnelEvent event, int error,
                                     const char *message, void *userdata);

typedef struct DpsTunnelConfig {
        const char *host;       /* the DPS endpoint: TLS SNI, verified name, Host header */
        uint16_t port;          /* 8883 or 443 */
        const DpsProxy *proxy;  /* NULL or host NULL: direct */
        SSL_CTX *ssl_ctx;       /* caller's; referenced. NULL = no TLS (tests only) */
        bool websocket;         /* WebSocket framing over the TLS stream */
        const char *ws_path;    /* NULL = DPS_WS_PATH */
        const char *runtime_dir; /* NULL = $RUNTIME_DIRECTORY, else a private temp dir */
        uint64_t timeout_usec;  /* until READY; 0 = 30 s */
        int fd;                 /* >= 0: an already connected stream (taken), skips TCP and proxy; tests */
} DpsTunnelConfig;

#define DPS_TUNNEL_CONFIG_INIT { .fd = -1 }

int dps_tunnel_new(sd_event *event, const DpsTunnelConfig *config, dps_tunnel_handler_t handler,
                   void *userdata, DpsTunnel **ret);
/* Starts resolving and connecting; everything after happens in the loop. */
int dps_tunnel_start(DpsTunnel *t);
/* The listening socket's path once READY was sent, NULL before. */
const char *dps_tunnel_socket_path(DpsTunnel *t);
/* Bytes moved (MQTT payload, not framing): for tests and statistics. */
void dps_tunnel_get_counters(DpsTunnel *t, uint64_t *ret_up, uint64_t *ret_down);
DpsTunnel *dps_tunnel_free(DpsTunnel *t);

static inline void dps_tunnel_freep(DpsTunnel **t) { if (*t) dps_tunnel_free(*t); }
static inline void dps_proxy_donep(DpsProxy *p) { dps_proxy_done(p); }

#ifdef __cplusplus
}
#endif
