/* SPDX-License-Identifier: MIT */
/* sim-server.h: dps-sim's listeners, TLS context and the set of live connections */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include <openssl/ssl.h>
#include <systemd/sd-event.h>

#include "sim-conf.h"
#include "sim-conn.h"
#include "sim-dps.h"
#include "sim-events.h"

typedef struct SimListener {
        struct SimServer *server;
        int fd;
        bool websocket;
        uint16_t port;
        sd_event_source *source, *retry;
} SimListener;

typedef struct SimServer {
        const SimConfig *cfg;
        SimConnHub hub;                 /* loop, DPS logic, events, TLS, connections */
        SimListener mqtt, ws;
        sd_event_source *save_timer;
} SimServer;

/* Creates the TLS context and binds the listeners of the config (port 0
 * picks a free port; see SimListener.port). Borrowed objects must outlive
 * the server. */
int sim_server_new(sd_event *event, const SimConfig *cfg, SimDps *dps, SimEvents *events, SimServer **ret);
SimServer *sim_server_free(SimServer *s);

