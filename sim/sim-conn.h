/* SPDX-License-Identifier: MIT */
/* sim-conn.h: one dps-sim client connection: TLS, optional WebSocket, MQTT session, keep-alive */
#pragma once

#include <stdbool.h>

#include <openssl/ssl.h>
#include <systemd/sd-event.h>

#include "sim-dps.h"
#include "sim-events.h"

typedef struct SimConn SimConn;

/* What connections share, and all they see of the server that owns them:
 * the loop, the DPS logic, the event log, the TLS context and the list of
 * live connections. The server embeds one and frees the connections on it. */
typedef struct SimConnHub {
        sd_event *event;
        SimDps *dps;
        SimEvents *events;
        SSL_CTX *ssl_ctx;
        SimConn *conns;                 /* doubly linked */
        unsigned next_conn_id;
        /* Called after a request may have changed the registration state. */
        void (*state_changed)(void *userdata);
        void *userdata;
} SimConnHub;

/* Takes over fd (non-blocking, accepted on a listener). */
int sim_conn_new(SimConnHub *hub, int fd, bool websocket, const char *peer, SimConn **ret);
/* Frees the connection immediately: logs "close" with reason. */
void sim_conn_free(SimConn *c, const char *reason);
