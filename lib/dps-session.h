/* SPDX-License-Identifier: MIT */
/* dps-session.h: one MQTT session to DPS driven from sd-event (libdps internal API) */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <openssl/ssl.h>
#include <systemd/sd-event.h>

#include "dps.h"
#include "dps-proxy.h"

/*
 * A DpsSession is one libmosquitto client speaking plain MQTT over the Unix
 * socket of a tunnel (dps-tunnel.c) that owns TCP, the optional HTTP proxy,
 * TLS and the optional WebSocket framing, all driven by
 * sd-event io and timer sources (mosquitto_loop_read/write/misc; never a
 * thread). It carries no policy: it connects, subscribes to the DPS response
 * topic, publishes what it is told and reports events to its owner. It logs
 * nothing above debug. Everything it returns is 0 or a negative errno.
 */

typedef struct DpsSession DpsSession;

typedef enum DpsSessionEventType {
        DPS_SESSION_CONNECTED,     /* CONNACK accepted */
        DPS_SESSION_REFUSED,       /* CONNACK refused: connack holds the code (1..5) */
        DPS_SESSION_SUBSCRIBED,    /* SUBACK for the response topic */
        DPS_SESSION_RESPONSE,      /* a message on the response topic */
        DPS_SESSION_DISCONNECTED,  /* the connection is gone; error < 0 says why */
        _DPS_SESSION_EVENT_MAX,
} DpsSessionEventType;

typedef struct DpsSessionEvent {
        DpsSessionEventType type;
        int connack;                    /* REFUSED */
        int error;                      /* DISCONNECTED: -ECONNRESET, -EPROTO (TLS), -ETIMEDOUT ... */
        const char *detail;             /* DISCONNECTED: human detail (e.g. the TLS error) or NULL */
        const DpsResponseTopic *topic;  /* RESPONSE */
        const char *body;               /* RESPONSE, NUL-terminated */
        size_t body_len;
} DpsSessionEvent;

/* The handler may call any dps_session_*() function on the session, including
 * dps_session_free(): the free is then completed after the handler returns. */
typedef void (*dps_session_handler_t)(DpsSession *s, const DpsSessionEvent *ev, void *userdata);

typedef struct DpsSessionParams {
        const char *host;
        uint16_t port;
        const char *client_id;
        const char *username;
        const char *password;           /* secret, may be NULL (X.509) */
        unsigned keepalive_sec;
        bool websocket;                 /* MQTT over WebSocket (mqtt-ws) */
        const DpsProxy *proxy;          /* NULL or host NULL: direct */
} DpsSessionParams;

/* Takes a reference on ssl_ctx (the caller keeps its own). The SSL_CTX must
 * verify the server (SSL_VERIFY_PEER and a host set on its X509_VERIFY_PARAM):
 * libmosquitto applies none of its defaults to a caller's context. */
int dps_session_new(sd_event *event, SSL_CTX *ssl_ctx, dps_session_handler_t handler, void *userdata,
                    DpsSession **ret);
DpsSession *dps_session_free(DpsSession *s);
static inline void dps_session_freep(DpsSession **s) { if (*s) dps_session_free(*s); }

/* Starts a non-blocking connect through the tunnel (dps-tunnel.c): the name
 * lookup does not block the loop and every address is tried in turn. */
int dps_session_connect(DpsSession *s, const DpsSessionParams *p);

/* SUBSCRIBE $dps/registrations/res/# at QoS 1. */
int dps_session_subscribe(DpsSession *s);

/* PUBLISH at QoS 0 (DPS answers on the response topic; nothing to ack). */
int dps_session_publish(DpsSession *s, const char *topic, const char *body);

/* Sends DISCONNECT (when connected) and closes. No event is reported. */
void dps_session_disconnect(DpsSession *s);

bool dps_session_is_connected(DpsSession *s);

/* Translates a MOSQ_ERR_* code to a negative errno. */
int dps_session_errno_from_mosq(int rc);
