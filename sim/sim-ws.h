/* SPDX-License-Identifier: MIT */
/* sim-ws.h: MQTT over WebSocket for dps-sim: the HTTP upgrade and RFC 6455 framing (libwslay) */
#pragma once

#include <stdbool.h>
#include <stddef.h>

#include "sim-buf.h"

typedef struct SimWs SimWs;

int sim_ws_new(SimWs **ret);
SimWs *sim_ws_free(SimWs *ws);

/* Feeds bytes that came out of TLS. Before the upgrade they are the HTTP
 * request: a valid one (GET /$iothub/websocket or /, Upgrade: websocket,
 * version 13, subprotocol "mqtt" in any case) queues the 101 answer in
 * wire_out; anything else queues a 4xx and returns -EPROTO. After the
 * upgrade, message payloads are appended to mqtt_in and control answers
 * (pong, close) to wire_out. Returns -ECONNRESET once the peer closed. */
int sim_ws_feed(SimWs *ws, const void *data, size_t len, SimBuf *mqtt_in, SimBuf *wire_out);

/* Frames MQTT bytes as one binary message into wire_out. */
int sim_ws_send(SimWs *ws, const void *data, size_t len, SimBuf *wire_out);

bool sim_ws_upgraded(const SimWs *ws);
/* The path and subprotocol of the upgrade, for the event log. */
const char *sim_ws_path(const SimWs *ws);
