/* SPDX-License-Identifier: MIT */
/* test-dps-tunnel.c: the tunnel: WebSocket handshake and framing against an independent codec, HTTP CONNECT against a scripted proxy */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdbool.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <openssl/sha.h>

#include "dps-macro.h"
#include "dps-tunnel.h"
#include "test-util.h"

/* Independent of dps_ws_accept(): EVP_EncodeBlock over SHA1. */
static void ref_accept(const char *key, char out[64]) {
        char in[256];
        uint8_t md[SHA_DIGEST_LENGTH];

        snprintf(in, sizeof(in), "%s258EAFA5-E914-47DA-95CA-C5AB0DC85B11", key);
        SHA1((const unsigned char *) in, strlen(in), md);
        EVP_EncodeBlock((unsigned char *) out, md, sizeof(md));
}

/* ---- an independent RFC 6455 frame codec ----------------------------------- */

typedef struct Frame {
        bool fin, masked;
        unsigned opcode;
        uint8_t mask[4];
        uint8_t *payload;       /* unmasked */
        size_t len;
} Frame;

/* Returns the bytes consumed, 0 when p holds no complete frame. */
static size_t frame_decode(const uint8_t *p, size_t n, Frame *f) {
        size_t h = 2, len;

        if (n < 2)
                return 0;
        f->fin = p[0] & 0x80;
        f->opcode = p[0] & 0x0f;
        f->masked = p[1] & 0x80;
        len = p[1] & 0x7f;
        if (len == 126) {
                if (n < 4)
                        return 0;
                len = ((size_t) p[2] << 8) | p[3];
                h = 4;
        } else if (len == 127) {
                if (n < 10)
                        return 0;
                len = 0;
                for (int i = 0; i < 8; i++)
                        len = (len << 8) | p[2 + i];
                h = 10;
        }
        if (f->masked) {
                if (n < h + 4)
                        return 0;
                memcpy(f->mask, p + h, 4);
                h += 4;
        }
        if (n < h + len)
                return 0;
        f->payload = malloc(len + 1);
        REQUIRE(f->payload);
        for (size_t i = 0; i < len; i++)
                f->payload[i] = p[h + i] ^ (f->masked ? f->mask[i % 4] : 0);
        f->len = len;
        return h + len;
}

/* An unmasked server frame into out; returns its size. */
static size_t frame_encode(bool fin, unsigned opcode, const void *payload, size_t len, uint8_t *out) {
        size_t h = 2;

        out[0] = (uint8_t) ((fin ? 0x80 : 0) | opcode);
        if (len < 126)
                out[1] = (uint8_t) len;
        else if (len <= 0xffff) {
                out[1] = 126;
                out[2] = (uint8_t) (len >> 8);
                out[3] = (uint8_t) len;
                h = 4;
        } else {
                out[1] = 127;
                for (int i = 0; i < 8; i++)
                        out[2 + i] = (uint8_t) ((uint64_t) len >> (56 - 8 * i));
                h = 10;
        }
        memcpy(out + h, payload, len);
        return h + len;
}

/* ---- a peer: a non-blocking fd with an input and an output buffer ------------ */

#define PEER_MAX (512u * 1024u)

typedef struct Peer {
        int fd;
        uint8_t in[PEER_MAX];
        size_t in_len;
        uint8_t out[PEER_MAX];
        size_t out_len;
        bool eof;
} Peer;

static void peer_init(Peer *p, int fd) {
        p->fd = fd;
        p->in_len = p->out_len = 0;
        p->eof = false;
        if (fd >= 0)
                REQUIRE(fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK) == 0);
}

static void peer_io(Peer *p) {
        if (p->fd < 0)
                return;
        while (p->out_len > 0) {
                ssize_t n = send(p->fd, p->out, p->out_len, MSG_NOSIGNAL);
                if (n <= 0)
                        break;
                memmove(p->out, p->out + n, p->out_len - (size_t) n);
                p->out_len -= (size_t) n;
        }
        while (!p->eof && p->in_len < PEER_MAX) {
                ssize_t n = recv(p->fd, p->in + p->in_len, PEER_MAX - p->in_len, 0);
                if (n == 0 || (n < 0 && errno != EAGAIN))
                        p->eof = true;
                if (n <= 0)
                        break;
                p->in_len += (size_t) n;
        }
}

static void peer_queue(Peer *p, const void *data, size_t n) {
        REQUIRE(p->out_len + n <= PEER_MAX);
        memcpy(p->out + p->out_len, data, n);
        p->out_len += n;
}

static void peer_consume(Peer *p, size_t n) {
        memmove(p->in, p->in + n, p->in_len - n);
        p->in_len -= n;
}

/* Takes the next complete frame from a peer's input. */
static bool peer_frame(Peer *p, Frame *f) {
        size_t n = frame_decode(p->in, p->in_len, f);
        if (n == 0)
                return false;
        peer_consume(p, n);
        return true;
}

static Peer srv, cli;   /* the WebSocket server and the MQTT client (mosquitto's role) */

static struct {
        unsigned n_ready, n_error, n_closed;
        int error;
        char message[512];
        char path[108];
} ev;

static void on_event(DpsTunnel *t, DpsTunnelEvent event, int error, const char *message, void *userdata) {
        switch (event) {
        case DPS_TUNNEL_READY:
                ev.n_ready++;
                snprintf(ev.path, sizeof(ev.path), "%s", dps_tunnel_socket_path(t));
                break;
        case DPS_TUNNEL_ERROR:
                ev.n_error++;
                ev.error = error;
                snprintf(ev.message, sizeof(ev.message), "%s", message ?: "");
                break;
        case DPS_TUNNEL_CLOSED:
                ev.n_closed++;
                break;
        case _DPS_TUNNEL_EVENT_MAX:
                break;
        }
}

/* Runs the loop and both peers until cond holds; false after 5 s. */
#define RUN_UNTIL(e, cond) ({                                                   \
                bool _ok = false;                                               \
                for (int _i = 0; _i < 2500; _i++) {                             \
                        peer_io(&srv);                                          \
                        peer_io(&cli);                                          \
                        if (cond) { _ok = true; break; }                        \
                        REQUIRE(sd_event_run((e), 2000) >= 0);                  \
                }                                                               \
                _ok; })

static int connect_unix(const char *path) {
        struct sockaddr_un sa = { .sun_family = AF_UNIX };
        int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);

        REQUIRE(fd >= 0);
        snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path);
        REQUIRE(connect(fd, (struct sockaddr *) &sa, sizeof(sa)) == 0);
        return fd;
}

static bool head_complete(Peer *p) {
        return p->in_len >= 4 && memmem(p->in, p->in_len, "\r\n\r\n", 4);
}

/* Plays the server side of the opening handshake. accept_override: send this
 * Sec-WebSocket-Accept instead of the right one. extra: frames sent in the
 * same write as the 101 (they must not be lost). */
static void serve_handshake(sd_event *e, const char *accept_override, const void *extra, size_t extra_len) {
        char req[4096], accept[64], resp[1024], key[64] = "";

        REQUIRE(RUN_UNTIL(e, head_complete(&srv)));
        size_t n = (size_t) ((uint8_t *) memmem(srv.in, srv.in_len, "\r\n\r\n", 4) - srv.in) + 4;
        REQUIRE(n < sizeof(req));
        memcpy(req, srv.in, n);
        req[n] = 0;
        peer_consume(&srv, n);

        CHECK(strncmp(req, "GET /$iothub/websocket HTTP/1.1\r\n", 33) == 0);
        CHECK(strcasestr(req, "\r\nUpgrade: websocket\r\n"));
        CHECK(strcasestr(req, "\r\nConnection: Upgrade\r\n"));
        CHECK(strcasestr(req, "\r\nSec-WebSocket-Version: 13\r\n"));
        CHECK(strcasestr(req, "\r\nSec-WebSocket-Protocol: mqtt\r\n"));
        CHECK(strcasestr(req, "\r\nHost: dps.test:8443\r\n"));
        const char *k = strcasestr(req, "\r\nSec-WebSocket-Key: ");
        REQUIRE(k);
        sscanf(k + 21, "%63[A-Za-z0-9+/=]", key);
        CHECK_INT(strlen(key), 24);
        ref_accept(key, accept);

        int m = snprintf(resp, sizeof(resp),
                         "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                         "Sec-WebSocket-Accept: %s\r\nSec-WebSocket-Protocol: mqtt\r\n\r\n",
                         accept_override ?: accept);
        peer_queue(&srv, resp, (size_t) m);
        if (extra_len > 0)
                peer_queue(&srv, extra, extra_len);
}

static DpsTunnel *ws_tunnel_new_timeout(sd_event *e, const char *dir, uint64_t timeout_usec) {
        DpsTunnelConfig c = DPS_TUNNEL_CONFIG_INIT;
        DpsTunnel *t = NULL;
        int sv[2];

        REQUIRE(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == 0);
        int big = 1 << 20;
        (void) setsockopt(sv[1], SOL_SOCKET, SO_SNDBUF, &big, sizeof(big));
        c.host = "dps.test";
        c.port = 8443;
        c.websocket = true;
        c.runtime_dir = dir;
        c.timeout_usec = timeout_usec;
        c.fd = sv[0];
        REQUIRE(dps_tunnel_new(e, &c, on_event, NULL, &t) == 0);
        peer_init(&srv, sv[1]);
        peer_init(&cli, -1);
        memset(&ev, 0, sizeof(ev));
        REQUIRE(dps_tunnel_start(t) == 0);
        return t;
}

static DpsTunnel *ws_tunnel_new(sd_event *e, const char *dir) {
        return ws_tunnel_new_timeout(e, dir, 0);
}

static void test_ws_timeout(sd_event *e, const char *dir) {
        _cleanup_(dps_tunnel_freep) _unused_ DpsTunnel *t = ws_tunnel_new_timeout(e, dir, 200000);

        /* the server reads the upgrade request and never answers */
        REQUIRE(RUN_UNTIL(e, head_complete(&srv)));
        CHECK(RUN_UNTIL(e, ev.n_error == 1));
        CHECK_INT(ev.error, -ETIMEDOUT);
        CHECK(strstr(ev.message, "WebSocket handshake"));
        CHECK_INT(ev.n_ready, 0);
        CHECK(RUN_UNTIL(e, srv.eof));
        close(srv.fd);
}

static void test_ws_framing(sd_event *e, const char *dir) {
        _cleanup_(dps_tunnel_freep) DpsTunnel *t = ws_tunnel_new(e, dir);
        uint8_t frame[80 * 1024];
        struct stat st;
        Frame f = {};

        /* an unmasked server frame glued to the 101 must reach the client */
        size_t n = frame_encode(true, 0x2, "early", 5, frame);
        serve_handshake(e, NULL, frame, n);
        REQUIRE(RUN_UNTIL(e, ev.n_ready == 1 || ev.n_error > 0));
        REQUIRE(ev.n_ready == 1);

        CHECK_INT(stat(ev.path, &st), 0);
        CHECK(S_ISSOCK(st.st_mode));
        CHECK_INT(st.st_mode & 0777, 0600);
        peer_init(&cli, connect_unix(ev.path));
        CHECK(RUN_UNTIL(e, cli.in_len >= 5));
        CHECK(cli.in_len == 5 && memcmp(cli.in, "early", 5) == 0);
        peer_consume(&cli, cli.in_len);
        CHECK(stat(ev.path, &st) < 0 && errno == ENOENT);  /* unlinked after accept */

        /* client -> server: masked binary frames, a fresh key each time */
        peer_queue(&cli, "\x10\x0cMQTT-CONNECT", 14);
        CHECK(RUN_UNTIL(e, peer_frame(&srv, &f)));
        CHECK(f.masked && f.fin);
        CHECK_INT(f.opcode, 0x2);
        CHECK(f.len == 14 && memcmp(f.payload, "\x10\x0cMQTT-CONNECT", 14) == 0);
        uint8_t mask1[4];
        memcpy(mask1, f.mask, 4);
        free(f.payload);
        peer_queue(&cli, "second", 6);
        CHECK(RUN_UNTIL(e, peer_frame(&srv, &f)));
        CHECK(f.masked && f.len == 6 && memcmp(f.payload, "second", 6) == 0);
        CHECK(memcmp(mask1, f.mask, 4) != 0);
        free(f.payload);

        /* server -> client: a fragmented message with a ping in the middle */
        n = frame_encode(false, 0x2, "frag-", 5, frame);
        n += frame_encode(true, 0x9, "are-you-there", 13, frame + n);
        n += frame_encode(false, 0x0, "ment", 4, frame + n);
        n += frame_encode(true, 0x0, "ed", 2, frame + n);
        peer_queue(&srv, frame, n);
        CHECK(RUN_UNTIL(e, cli.in_len >= 11));
        CHECK(cli.in_len == 11 && memcmp(cli.in, "frag-mented", 11) == 0);
        peer_consume(&cli, cli.in_len);
        CHECK(RUN_UNTIL(e, peer_frame(&srv, &f)));
        CHECK_INT(f.opcode, 0xa);      /* pong, same payload, masked */
        CHECK(f.masked && f.fin && f.len == 13 && memcmp(f.payload, "are-you-there", 13) == 0);
        free(f.payload);

        /* 70 KB in one frame: the 64-bit length form */
        static uint8_t big[70 * 1024];
        for (size_t i = 0; i < sizeof(big); i++)
                big[i] = (uint8_t) (i * 7 + 3);
        n = frame_encode(true, 0x2, big, sizeof(big), frame);
        CHECK_INT(frame[1], 127);
        peer_queue(&srv, frame, n);
        CHECK(RUN_UNTIL(e, cli.in_len >= sizeof(big)));
        CHECK(cli.in_len == sizeof(big) && memcmp(cli.in, big, sizeof(big)) == 0);
        peer_consume(&cli, cli.in_len);

        /* 200 KB from the client arrive whole and in order, whatever the framing */
        static uint8_t up[200 * 1024], got[200 * 1024];
        size_t got_len = 0;
        for (size_t i = 0; i < sizeof(up); i++)
                up[i] = (uint8_t) (i * 13 + 1);
        peer_queue(&cli, up, sizeof(up));
        CHECK(RUN_UNTIL(e, ({
                while (peer_frame(&srv, &f)) {
                        CHECK(f.masked && f.opcode == 0x2);
                        if (got_len + f.len <= sizeof(got))
                                memcpy(got + got_len, f.payload, f.len);
                        got_len += f.len;
                        free(f.payload);
                }
                got_len >= sizeof(up); })));
        CHECK(got_len == sizeof(up) && memcmp(got, up, sizeof(up)) == 0);
        uint64_t cu = 0, cd = 0;
        dps_tunnel_get_counters(t, &cu, &cd);
        CHECK_INT(cu, 14 + 6 + sizeof(up));
        CHECK_INT(cd, 5 + 11 + sizeof(big));

        /* the server closes: the tunnel answers with a close frame, reports
         * CLOSED, and the MQTT client sees end of file */
        n = frame_encode(true, 0x8, "\x03\xe8", 2, frame);
        peer_queue(&srv, frame, n);
        CHECK(RUN_UNTIL(e, ev.n_closed == 1));
        CHECK(RUN_UNTIL(e, peer_frame(&srv, &f)));
        CHECK_INT(f.opcode, 0x8);
        CHECK(f.masked && f.len >= 2 && f.payload[0] == 0x03 && f.payload[1] == 0xe8);
        free(f.payload);
        CHECK(RUN_UNTIL(e, cli.eof));
        CHECK_INT(ev.n_error, 0);

        close(cli.fd);
        close(srv.fd);
}

static void test_ws_client_hangup(sd_event *e, const char *dir) {
        _cleanup_(dps_tunnel_freep) _unused_ DpsTunnel *t = ws_tunnel_new(e, dir);
        Frame f = {};

        serve_handshake(e, NULL, NULL, 0);
        REQUIRE(RUN_UNTIL(e, ev.n_ready == 1));
        int fd = connect_unix(ev.path);
        REQUIRE(RUN_UNTIL(e, stat(ev.path, &(struct stat) {}) < 0));
        close(fd);      /* mosquitto disconnects: the server gets a normal close */
        CHECK(RUN_UNTIL(e, peer_frame(&srv, &f)));
        CHECK_INT(f.opcode, 0x8);
        CHECK(f.masked && f.len >= 2 && f.payload[0] == 0x03 && f.payload[1] == 0xe8);
        free(f.payload);
        CHECK(RUN_UNTIL(e, ev.n_closed == 1));
        CHECK_INT(ev.n_error, 0);
        close(srv.fd);
}

/* The MQTT client stops reading (its socket refuses our writes): the server
 * gets a normal close and the tunnel reports CLOSED. */
static void test_ws_client_unwritable(sd_event *e, const char *dir) {
        _cleanup_(dps_tunnel_freep) _unused_ DpsTunnel *t = ws_tunnel_new(e, dir);
        uint8_t frame[64];
        Frame f = {};

        serve_handshake(e, NULL, NULL, 0);
        REQUIRE(RUN_UNTIL(e, ev.n_ready == 1));
        int fd = connect_unix(ev.path);
        REQUIRE(RUN_UNTIL(e, stat(ev.path, &(struct stat) {}) < 0));
        REQUIRE(shutdown(fd, SHUT_RD) == 0);
        size_t n = frame_encode(true, 0x2, "\x20\x02\x00\x00", 4, frame);
        peer_queue(&srv, frame, n);
        CHECK(RUN_UNTIL(e, peer_frame(&srv, &f)));
        CHECK(f.masked && f.opcode == 0x8 && f.len >= 2 && f.payload[0] == 0x03 && f.payload[1] == 0xe8);
        free(f.payload);
        CHECK(RUN_UNTIL(e, ev.n_closed == 1));
        CHECK_INT(ev.n_error, 0);
        close(fd);
        close(srv.fd);
}

/* Freed right after the MQTT client wrote its DISCONNECT, without a turn of
 * the loop: the DISCONNECT and a close frame still reach the server. */
static void test_ws_free_farewell(sd_event *e, const char *dir) {
        DpsTunnel *t = ws_tunnel_new(e, dir);
        Frame f = {};

        serve_handshake(e, NULL, NULL, 0);
        REQUIRE(RUN_UNTIL(e, ev.n_ready == 1));
        peer_init(&cli, connect_unix(ev.path));
        REQUIRE(RUN_UNTIL(e, stat(ev.path, &(struct stat) {}) < 0));
        peer_queue(&cli, "\xe0\x00", 2);
        peer_io(&cli);
        CHECK_INT(cli.out_len, 0);
        t = dps_tunnel_free(t);
        CHECK(t == NULL);
        CHECK(RUN_UNTIL(e, peer_frame(&srv, &f)));
        CHECK(f.masked && f.opcode == 0x2 && f.len == 2 && memcmp(f.payload, "\xe0\x00", 2) == 0);
        free(f.payload);
        CHECK(RUN_UNTIL(e, peer_frame(&srv, &f)));
        CHECK(f.masked && f.opcode == 0x8 && f.len >= 2 && f.payload[0] == 0x03 && f.payload[1] == 0xe8);
        free(f.payload);
        CHECK(RUN_UNTIL(e, srv.eof && cli.eof));
        CHECK_INT(ev.n_error + ev.n_closed, 0);   /* no event from a free */
        close(cli.fd);
        close(srv.fd);
}

static void test_ws_bad_accept(sd_event *e, const char *dir) {
        _cleanup_(dps_tunnel_freep) _unused_ DpsTunnel *t = ws_tunnel_new(e, dir);

        serve_handshake(e, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=", NULL, 0);
        CHECK(RUN_UNTIL(e, ev.n_error == 1));
        CHECK_INT(ev.n_ready, 0);
        CHECK_INT(ev.error, -EPROTO);
        CHECK(strstr(ev.message, "Sec-WebSocket-Accept"));
        /* the server sees the connection closed */
        CHECK(RUN_UNTIL(e, srv.eof));
        close(srv.fd);
}

static void test_ws_masked_server_frame(sd_event *e, const char *dir) {
        _cleanup_(dps_tunnel_freep) _unused_ DpsTunnel *t = ws_tunnel_new(e, dir);
        /* RFC 6455 5.1: a client closes on a masked frame from the server */
        static const uint8_t masked[] = { 0x82, 0x83, 1, 2, 3, 4, 'a' ^ 1, 'b' ^ 2, 'c' ^ 3 };

        serve_handshake(e, NULL, NULL, 0);
        REQUIRE(RUN_UNTIL(e, ev.n_ready == 1));
        peer_init(&cli, connect_unix(ev.path));
        peer_queue(&srv, masked, sizeof(masked));
        Frame f = {};
        CHECK(RUN_UNTIL(e, ev.n_error + ev.n_closed > 0 || cli.in_len > 0));
        CHECK_INT(cli.in_len, 0);
        CHECK_INT(ev.n_error, 1);
        CHECK_INT(ev.error, -EPROTO);
        CHECK(strstr(ev.message, "1002"));
        CHECK(RUN_UNTIL(e, peer_frame(&srv, &f)));
        CHECK_INT(f.opcode, 0x8);      /* close, 1002 protocol error */
        CHECK(f.masked && f.len >= 2 && f.payload[0] == 0x03 && f.payload[1] == 0xea);
        free(f.payload);
        CHECK(RUN_UNTIL(e, cli.eof));
        close(cli.fd);
        close(srv.fd);
}

/* ---- HTTP CONNECT against a scripted proxy on loopback ---------------------- */

static int listen_tcp(uint16_t *ret_port) {
        struct sockaddr_in sa = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
        socklen_t sl = sizeof(sa);
        int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);

        REQUIRE(fd >= 0);
        REQUIRE(bind(fd, (struct sockaddr *) &sa, sizeof(sa)) == 0);
        REQUIRE(listen(fd, 4) == 0);
        REQUIRE(getsockname(fd, (struct sockaddr *) &sa, &sl) == 0);
        *ret_port = ntohs(sa.sin_port);
        return fd;
}

/* expect: what the error message must quote, NULL when the proxy lets us through */
static void test_proxy_connect(sd_event *e, const char *dir, const char *answer, const char *expect) {
        bool expect_ready = !expect;
        _cleanup_(dps_tunnel_freep) DpsTunnel *t = NULL;
        DpsTunnelConfig c = DPS_TUNNEL_CONFIG_INIT;
        DpsProxy p = {};
        char url[128];
        uint16_t port;
        int lfd = listen_tcp(&port);

        snprintf(url, sizeof(url), "http://dev%%20user:pa%%3Ass@127.0.0.1:%u", port);
        REQUIRE(dps_proxy_parse(url, &p) == 0);
        c.host = "dps.test";
        c.port = 8883;
        c.proxy = &p;
        c.runtime_dir = dir;
        REQUIRE(dps_tunnel_new(e, &c, on_event, NULL, &t) == 0);
        dps_proxy_done(&p);
        memset(&ev, 0, sizeof(ev));
        peer_init(&srv, -1);
        peer_init(&cli, -1);
        REQUIRE(dps_tunnel_start(t) == 0);

        int afd = -1;
        REQUIRE(RUN_UNTIL(e, (afd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC)) >= 0));
        peer_init(&srv, afd);
        REQUIRE(RUN_UNTIL(e, head_complete(&srv)));
        srv.in[srv.in_len] = 0;
        CHECK(strncmp((char *) srv.in, "CONNECT dps.test:8883 HTTP/1.1\r\n", 32) == 0);
        CHECK(strstr((char *) srv.in, "\r\nHost: dps.test:8883\r\n"));
        /* base64("dev user:pa:ss") */
        CHECK(strstr((char *) srv.in, "\r\nProxy-Authorization: Basic ZGV2IHVzZXI6cGE6c3M=\r\n"));
        peer_consume(&srv, srv.in_len);
        /* the proxy's answer in two pieces (the head is read until its end),
         * the last one together with the first server bytes */
        peer_queue(&srv, answer, 12);
        for (int i = 0; i < 20; i++) {
                peer_io(&srv);
                REQUIRE(sd_event_run(e, 1000) >= 0);
        }
        CHECK_INT(ev.n_ready + ev.n_error, 0);
        peer_queue(&srv, answer + 12, strlen(answer) - 12);
        if (expect_ready)
                peer_queue(&srv, "\x20\x02\x00\x00", 4);     /* a CONNACK */

        REQUIRE(RUN_UNTIL(e, ev.n_ready + ev.n_error > 0));
        if (!expect_ready) {
                CHECK_INT(ev.n_error, 1);
                CHECK_INT(ev.error, strstr(answer, " 502 ") ? -ECONNREFUSED : -EACCES);
                CHECK(strstr(ev.message, "proxy refused CONNECT: "));
                CHECK(strstr(ev.message, expect));
                if (!strstr(ev.message, expect))
                        fprintf(stderr, "message: %s\n", ev.message);
                CHECK(!strstr(ev.message, "pa:ss") && !strstr(ev.message, "dev user"));
                CHECK(strstr(ev.message, "http://***@127.0.0.1:"));
        } else {
                CHECK_INT(ev.n_error, 0);
                /* plain MQTT through the tunnel both ways, nothing of the head leaks */
                peer_init(&cli, connect_unix(ev.path));
                CHECK(RUN_UNTIL(e, cli.in_len >= 4));
                CHECK(cli.in_len == 4 && memcmp(cli.in, "\x20\x02\x00\x00", 4) == 0);
                peer_queue(&cli, "\xc0\x00", 2);
                CHECK(RUN_UNTIL(e, srv.in_len >= 2));
                CHECK(srv.in_len == 2 && memcmp(srv.in, "\xc0\x00", 2) == 0);
                /* the server hangs up: CLOSED, and the client sees EOF */
                shutdown(srv.fd, SHUT_RDWR);
                CHECK(RUN_UNTIL(e, ev.n_closed == 1));
                CHECK(RUN_UNTIL(e, cli.eof));
                close(cli.fd);
        }
        close(srv.fd);
        close(lfd);
}

static void test_connect_refused(sd_event *e, const char *dir) {
        _cleanup_(dps_tunnel_freep) DpsTunnel *t = NULL;
        DpsTunnelConfig c = DPS_TUNNEL_CONFIG_INIT;
        uint16_t port;
        int lfd = listen_tcp(&port);

        close(lfd);     /* nobody listens there now */
        c.host = "127.0.0.1";
        c.port = port;
        c.runtime_dir = dir;
        REQUIRE(dps_tunnel_new(e, &c, on_event, NULL, &t) == 0);
        memset(&ev, 0, sizeof(ev));
        peer_init(&srv, -1);
        peer_init(&cli, -1);
        REQUIRE(dps_tunnel_start(t) == 0);
        CHECK_INT(ev.n_error, 0);      /* never from inside start() */
        CHECK(RUN_UNTIL(e, ev.n_error == 1));
        CHECK_INT(ev.error, -ECONNREFUSED);
        CHECK(strstr(ev.message, "127.0.0.1"));
}

int main(void) {
        char dir[] = "/tmp/test-dps-tunnel-XXXXXX";
        sd_event *e = NULL;
        REQUIRE(mkdtemp(dir));
        REQUIRE(sd_event_new(&e) >= 0);

        test_ws_framing(e, dir);
        test_ws_client_hangup(e, dir);
        test_ws_bad_accept(e, dir);
        test_ws_free_farewell(e, dir);
        test_ws_client_unwritable(e, dir);
        test_ws_timeout(e, dir);
        test_ws_masked_server_frame(e, dir);
        test_proxy_connect(e, dir, "HTTP/1.1 407 Proxy Authentication Required\r\nProxy-Authenticate: Basic realm=\"x\"\r\n\r\n",
                           "proxy refused CONNECT: 407 Proxy Authentication Required");
        test_proxy_connect(e, dir, "HTTP/1.1 403 Forbidden\r\n\r\n", "403 Forbidden");
        test_proxy_connect(e, dir, "HTTP/1.1 401 Unauthorized\r\n\r\n", "401 Unauthorized");
        test_proxy_connect(e, dir, "HTTP/1.0 502 Bad Gateway\r\n\r\n", "502 Bad Gateway");
        test_proxy_connect(e, dir, "HTTP/1.1 200 Connection established\r\n\r\n", NULL);
        test_connect_refused(e, dir);

        sd_event_unref(e);
        CHECK_INT(rmdir(dir), 0);       /* nothing left behind */
        return test_summary("test-dps-tunnel");
}
