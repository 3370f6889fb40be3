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

#include "dps-proxy.h"
#include "dps-ws.h"

#ifdef __cplusplus
extern "C" {
#endif

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
/* Starts resolving and connecting; everything after happens in the loop,
 * and the handler never runs inside this call. OpenSSL writes to the socket
 * without MSG_NOSIGNAL: like libmosquitto, the process must ignore SIGPIPE. */
int dps_tunnel_start(DpsTunnel *t);
/* The listening socket's path once READY was sent, NULL before. */
const char *dps_tunnel_socket_path(DpsTunnel *t);
/* Bytes moved (MQTT payload, not framing): for tests and statistics. */
void dps_tunnel_get_counters(DpsTunnel *t, uint64_t *ret_up, uint64_t *ret_down);
DpsTunnel *dps_tunnel_free(DpsTunnel *t);

static inline void dps_tunnel_freep(DpsTunnel **t) { if (*t) dps_tunnel_free(*t); }

#ifdef __cplusplus
}
#endif
