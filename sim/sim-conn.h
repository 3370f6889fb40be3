/* SPDX-License-Identifier: MIT */
/* sim-conn.h: one dps-sim client connection: TLS, optional WebSocket, MQTT session, keep-alive */
#pragma once

#include <stdbool.h>

#include "sim-server.h"

/* Takes over fd (non-blocking, accepted on a listener). */
int sim_conn_new(SimServer *s, int fd, bool websocket, const char *peer, SimConn **ret);
/* Frees the connection immediately: logs "close" with reason. */
void sim_conn_free(SimConn *c, const char *reason);
