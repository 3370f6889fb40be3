/* SPDX-License-Identifier: MIT */
/* fuzz-sim-ws.c: libFuzzer harness for dps-sim's WebSocket upgrade and RFC 6455 frame decoding */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "dps-macro.h"
#include "sim-mqtt.h"
#include "sim-ws.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char upgrade[] =
        "GET /$iothub/websocket HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\n"
        "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: mqtt\r\n\r\n";

/* First byte: bit 0 set = prepend a valid upgrade request (to reach the
 * frame decoder quickly); bits 1..7 = chunk size, so requests and frames
 * arrive split at arbitrary points as TLS records deliver them. */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        SimWs *ws = NULL;
        SimBuf in = {}, out = {};
        size_t chunk, off = 0;
        int r = 0;

        if (size < 1 || size > 4 * SIM_MQTT_MAX_PACKET)
                return 0;
        chunk = (data[0] >> 1) ? (size_t) (data[0] >> 1) * 7 : size;
        if (sim_ws_new(&ws) < 0)
                return 0;
        if (data[0] & 1) {
                r = sim_ws_feed(ws, upgrade, strlen(upgrade), &in, &out);
                if (r < 0 || !sim_ws_upgraded(ws) || sim_buf_size(&out) == 0 ||
                    memcmp(sim_buf_head(&out), "HTTP/1.1 101 ", 13) != 0)
                        abort();
                sim_buf_clear(&out);
        }
        data++, size--;
        while (off < size && r >= 0) {
                size_t n = size - off < chunk ? size - off : chunk;
                bool was = sim_ws_upgraded(ws);
                r = sim_ws_feed(ws, data + off, n, &in, &out);
                /* a refused upgrade always answers with an HTTP status */
                if (!was && r == -EPROTO && (sim_buf_size(&out) < 12 || memcmp(sim_buf_head(&out), "HTTP/1.1 ", 9) != 0))
                        abort();
                /* nothing reaches MQTT before the upgrade */
                if (!sim_ws_upgraded(ws) && sim_buf_size(&in) > 0)
                        abort();
                off += n;
        }
        if (r < 0 && r != -EPROTO && r != -ECONNRESET && r != -ENOMEM)
                abort();
        if (sim_ws_upgraded(ws) && (!sim_ws_path(ws) || (sim_buf_size(&in) > 0 && sim_buf_size(&in) > 2 * size)))
                abort();
        sim_buf_done(&in);
        sim_buf_done(&out);
        sim_ws_free(ws);
        return 0;
}
