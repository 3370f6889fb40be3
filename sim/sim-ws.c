/* SPDX-License-Identifier: MIT */
/* sim-ws.c: MQTT over WebSocket for dps-sim: the HTTP upgrade and RFC 6455 framing (libwslay) */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <openssl/sha.h>
#include <wslay/wslay.h>

#include "dps-macro.h"
#include "dps-util.h"
#include "sim-mqtt.h"
#include "sim-ws.h"

/* An upgrade request larger than this is refused. */
#define WS_MAX_REQUEST 8192

struct SimWs {
        wslay_event_context_ptr ctx;
        bool upgraded;
        char *path;
        SimBuf request;                 /* HTTP request bytes, then frame bytes */
        /* valid during sim_ws_feed()/sim_ws_send() */
        SimBuf *mqtt_in, *wire_out;
        int error;
};

static ssize_t ws_recv(wslay_event_context_ptr ctx, uint8_t *buf, size_t len, int flags, void *userdata) {
        SimWs *ws = userdata;
        size_t n = sim_buf_size(&ws->request);
        if (n == 0) {
                wslay_event_set_error(ctx, WSLAY_ERR_WOULDBLOCK);
                return -1;
        }
        if (n > len)
                n = len;
        memcpy(buf, sim_buf_head(&ws->request), n);
        sim_buf_consume(&ws->request, n);
        return (ssize_t) n;
}

static ssize_t ws_send(wslay_event_context_ptr ctx, const uint8_t *data, size_t len, int flags, void *userdata) {
        SimWs *ws = userdata;
        if (!ws->wire_out || sim_buf_put(ws->wire_out, data, len) < 0) {
                ws->error = -ENOMEM;
                wslay_event_set_error(ctx, WSLAY_ERR_CALLBACK_FAILURE);
                return -1;
        }
        return (ssize_t) len;
}

static void ws_on_msg(wslay_event_context_ptr ctx, const struct wslay_event_on_msg_recv_arg *arg, void *userdata) {
        SimWs *ws = userdata;
        /* MQTT rides in binary messages; text is tolerated as bytes. Ping,
         * pong and close are answered by wslay itself. */
        if (arg->opcode == WSLAY_BINARY_FRAME || arg->opcode == WSLAY_TEXT_FRAME)
                if (!ws->mqtt_in || sim_buf_put(ws->mqtt_in, arg->msg, arg->msg_length) < 0)
                        ws->error = -ENOMEM;
}

static const struct wslay_event_callbacks callbacks = {
        .recv_callback = ws_recv,
        .send_callback = ws_send,
        .on_msg_recv_callback = ws_on_msg,
};

int sim_ws_new(SimWs **ret) {
        SimWs *ws = calloc(1, sizeof *ws);
        if (!ws)
                return -ENOMEM;
        if (wslay_event_context_server_init(&ws->ctx, &callbacks, ws) != 0) {
                free(ws);
                return -ENOMEM;
        }
        /* A whole MQTT packet fits in one message, with room for several. */
        wslay_event_config_set_max_recv_msg_length(ws->ctx, 2 * SIM_MQTT_MAX_PACKET);
        *ret = ws;
        return 0;
}

SimWs *sim_ws_free(SimWs *ws) {
        if (!ws)
                return NULL;
        if (ws->ctx)
                wslay_event_context_free(ws->ctx);
        sim_buf_done(&ws->request);
        free(ws->path);
        free(ws);
        return NULL;
}

bool sim_ws_upgraded(const SimWs *ws) {
        return ws->upgraded;
}

const char *sim_ws_path(const SimWs *ws) {
        return ws->path;
}

/* Finds header name in the request head (case-insensitive name), returns a
 * malloc'd, trimmed value or NULL. */
static char *header_get(const char *head, const char *name) {
        size_t nl = strlen(name);
        for (const char *l = strstr(head, "\r\n"); l && l[2]; l = strstr(l + 2, "\r\n")) {
                const char *p = l + 2;
                if (strncasecmp(p, name, nl) == 0 && p[nl] == ':') {
                        const char *v = p + nl + 1, *e = strstr(v, "\r\n");
                        if (!e)
                                return NULL;
                        while (v < e && (*v == ' ' || *v == '\t'))
                                v++;
                        while (e > v && (e[-1] == ' ' || e[-1] == '\t'))
                                e--;
                        return strndup(v, e - v);
                }
        }
        return NULL;
}

/* True when the comma-separated list holds token (case-insensitive); if
 * ret_exact is given it gets the token as the client spelled it. */
static bool list_has(const char *list, const char *token, char **ret_exact) {
        size_t tl = strlen(token);
        const char *p = list;
        while (p && *p) {
                while (*p == ' ' || *p == '\t' || *p == ',')
                        p++;
                size_t n = strcspn(p, ",");
                size_t m = n;
                while (m > 0 && (p[m - 1] == ' ' || p[m - 1] == '\t'))
                        m--;
                if (m == tl && strncasecmp(p, token, tl) == 0) {
                        if (ret_exact)
                                *ret_exact = strndup(p, m);
                        return true;
                }
                p += n;
        }
        return false;
}

static int refuse(SimWs *ws, SimBuf *wire_out, const char *status) {
        char buf[256];
        int n = snprintf(buf, sizeof buf, "HTTP/1.1 %s\r\nConnection: close\r\nContent-Length: 0\r\n\r\n", status);
        sim_buf_put(wire_out, buf, (size_t) n);
        return -EPROTO;
}

static int handshake(SimWs *ws, SimBuf *wire_out) {
        const char *data = (const char *) sim_buf_head(&ws->request);
        size_t len = sim_buf_size(&ws->request);
        const char *end = memmem(data, len, "\r\n\r\n", 4);
        if (!end) {
                if (len > WS_MAX_REQUEST)
                        return refuse(ws, wire_out, "431 Request Header Fields Too Large");
                return 0;
        }
        size_t head_len = (size_t) (end - data) + 4;
        _cleanup_free_ char *head = strndup(data, head_len);
        if (!head || strlen(head) != head_len)
                return head ? refuse(ws, wire_out, "400 Bad Request") : -ENOMEM;
        sim_buf_consume(&ws->request, head_len);

        /* "GET /$iothub/websocket HTTP/1.1" */
        char method[8], target[1024], version[16];
        if (sscanf(head, "%7s %1023s %15s", method, target, version) != 3 || !streq(method, "GET") ||
            strncmp(version, "HTTP/1.", 7) != 0)
                return refuse(ws, wire_out, "400 Bad Request");
        target[strcspn(target, "?")] = 0;
        if (!streq(target, DPS_WS_PATH) && !streq(target, "/"))
                return refuse(ws, wire_out, "404 Not Found");
        ws->path = strdup(target);

        _cleanup_free_ char *upgrade = header_get(head, "Upgrade"), *connection = header_get(head, "Connection"),
                *key = header_get(head, "Sec-WebSocket-Key"), *wsv = header_get(head, "Sec-WebSocket-Version"),
                *protocols = header_get(head, "Sec-WebSocket-Protocol"), *chosen = NULL;
        if (!upgrade || !list_has(upgrade, "websocket", NULL) || !connection || !list_has(connection, "upgrade", NULL) ||
            strempty(key))
                return refuse(ws, wire_out, "400 Bad Request");
        if (!wsv || !streq(wsv, "13"))
                return refuse(ws, wire_out, "426 Upgrade Required\r\nSec-WebSocket-Version: 13");
        /* Subprotocol "mqtt" in any case; echo it as the client wrote it. */
        if (!protocols || !list_has(protocols, "mqtt", &chosen) || !chosen)
                return refuse(ws, wire_out, "400 Bad Request");

        /* RFC 6455 section 4.2.2: base64(SHA-1(key + GUID)). */
        _cleanup_free_ char *concat = NULL, *accept = NULL, *resp = NULL;
        uint8_t digest[SHA_DIGEST_LENGTH];
        if (asprintf(&concat, "%s258EAFA5-E914-47DA-95CA-C5AB0DC85B11", key) < 0)
                return -ENOMEM;
        SHA1((const unsigned char *) concat, strlen(concat), digest);
        if (dps_base64_encode(digest, sizeof digest, &accept) < 0)
                return -ENOMEM;
        int n = asprintf(&resp, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                         "Sec-WebSocket-Accept: %s\r\nSec-WebSocket-Protocol: %s\r\n\r\n", accept, chosen);
        if (n < 0)
                return -ENOMEM;
        int r = sim_buf_put(wire_out, resp, (size_t) n);
        if (r < 0)
                return r;
        ws->upgraded = true;
        return 1;
}

int sim_ws_feed(SimWs *ws, const void *data, size_t len, SimBuf *mqtt_in, SimBuf *wire_out) {
        int r = sim_buf_put(&ws->request, data, len);
        if (r < 0)
                return r;
        if (!ws->upgraded) {
                r = handshake(ws, wire_out);
                if (r <= 0)
                        return r;
        }
        if (sim_buf_size(&ws->request) == 0)
                return 0;

        ws->mqtt_in = mqtt_in;
        ws->wire_out = wire_out;
        ws->error = 0;
        r = wslay_event_recv(ws->ctx);
        if (r == 0)
                r = wslay_event_send(ws->ctx);
        ws->mqtt_in = ws->wire_out = NULL;
        if (ws->error < 0)
                return ws->error;
        if (r != 0)
                return -EPROTO;
        /* A close frame (answered above), or a protocol error wslay turned
         * into one: nothing more to read. */
        if (wslay_event_get_close_received(ws->ctx) || !wslay_event_want_read(ws->ctx))
                return -ECONNRESET;
        return 0;
}

int sim_ws_send(SimWs *ws, const void *data, size_t len, SimBuf *wire_out) {
        struct wslay_event_msg msg = { .opcode = WSLAY_BINARY_FRAME, .msg = data, .msg_length = len };
        if (!ws->upgraded)
                return -ENOTCONN;
        if (wslay_event_queue_msg(ws->ctx, &msg) != 0)
                return -EPIPE;
        ws->wire_out = wire_out;
        ws->error = 0;
        int r = wslay_event_send(ws->ctx);
        ws->wire_out = NULL;
        if (ws->error < 0)
                return ws->error;
        return r == 0 ? 0 : -EPIPE;
}
