/* SPDX-License-Identifier: MIT */
/* sim-server.h: dps-sim's listeners, TLS context and the set of live connections */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include <openssl/ssl.h>
#include <systemd/sd-event.h>

#include "sim-conf.h"
#include "sim-dps.h"
#include "sim-events.h"

typedef struct SimConn SimConn;

typedef struct SimListener {
        struct SimServer *server;
        int fd;
        bool websocket;
        uint16_t port;
        sd_event_source *source, *retry;
} SimListener;

typedef struct SimServer {
        sd_event *event;
        const SimConfig *cfg;
        SimDps *dps;
        SimEvents *events;
        SSL_CTX *ssl_ctx;
        SimListener mqtt, ws;
        sd_event_source *save_timer;
        SimConn *conns;                 /* doubly linked */
        unsigned next_conn_id;
} SimServer;

/* Creates the TLS context and binds the listeners of the config (port 0
 * picks a free port; see SimListener.port). Borrowed objects must outlive
 * the server. */
int sim_server_new(sd_event *event, const SimConfig *cfg, SimDps *dps, SimEvents *events, SimServer **ret);
SimServer *sim_server_free(SimServer *s);

/* Called after a request may have changed the registration state: writes
 * the state file soon, coalescing bursts. */
void sim_server_state_changed(SimServer *s);
