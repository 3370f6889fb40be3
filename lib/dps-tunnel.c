/* SPDX-License-Identifier: MIT */
/* dps-tunnel.c: the outer transport (TCP, HTTP CONNECT, TLS, WebSocket) handed to libmosquitto as a Unix socket */

/*
 * Why a tunnel. libmosquitto 2.0.11 (Debian 12) has no WebSocket client (it
 * arrives in mosquitto 2.1) and cannot use an HTTP proxy, but it connects to
 * a Unix stream socket when given host = path and port = 0. Rather than fork
 * or patch the MQTT client, libdps owns the outer transport and offers
 * libmosquitto a Unix socket that carries plain MQTT bytes:
 *
 *   mosquitto <-unix-> [tunnel: WebSocket frames | TLS | HTTP CONNECT | TCP] <-> DPS
 *
 * It is used for every transport, "mqtt" without a proxy too: TLS is the
 * tunnel's and libmosquitto speaks plain MQTT on the Unix socket. One extra
 * local hop buys a name lookup that does not block the loop and a connect
 * that tries every address (libmosquitto 2.0 does neither), and one TLS path.
 *
 * - One sd-event loop, no threads of our own: every stage is an fd or a timer
 *   event, and the pump moves bytes both ways with bounded buffers. When the
 *   buffer towards one side is full we stop reading the other side, so a slow
 *   peer back-pressures the fast one instead of growing memory.
 * - Name resolution: sd-resolve would be ideal but libsystemd does not export
 *   it. Plain getaddrinfo() blocks the loop (seconds when DNS is down), so we
 *   use glibc's getaddrinfo_a(GAI_NOWAIT), whose helper thread is glibc's, and
 *   poll gai_error() from a backing-off timer (1 ms .. 50 ms). Numeric
 *   addresses skip it. Freeing a tunnel mid-lookup cancels the request, or
 *   waits for it when glibc cannot cancel (the only wait, and only at free).
 *   Without glibc (musl) the lookup is a plain, blocking getaddrinfo().
 * - TLS uses the caller's SSL_CTX (its CA store and client certificate for
 *   X.509 attestation), forces peer verification, TLS 1.2+, SNI and
 *   hostname verification with SSL_set1_host().
 * - WebSocket framing comes from libwslay (Debian's libwslay1, used by
 *   nghttp2 and aria2): a client context masks every frame with a fresh key
 *   from RAND_bytes(), answers pings with pongs, and completes the close
 *   handshake; fragmented messages are reassembled up to WS_MAX_MESSAGE. The
 *   opening handshake is ours (a few lines of HTTP) and validates the 101,
 *   Sec-WebSocket-Accept and the subprotocol.
 * - The Unix socket lives in $RUNTIME_DIRECTORY (or a private 0700 temp
 *   dir), is created 0600, accepts one connection from our own uid and is
 *   unlinked right after accept, so nothing else can ride the tunnel.
 * - Proxy credentials are secrets: the Basic header is built in a buffer
 *   wiped after sending, and messages show the proxy with its user info as "***".
 * - OpenSSL, wslay and getaddrinfo codes stop here: the owner sees a negative
 *   errno and one sentence (e.g. "proxy refused CONNECT: 407 Proxy
 *   Authentication Required (proxy ...)"), and decides what to log.
 */

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <openssl/sha.h>
#include <openssl/x509v3.h>
#include <wslay/wslay.h>

#include "dps-macro.h"
#include "dps-tunnel.h"
#include "dps-util.h"

/* An HTTP response head we accept from a proxy or a WebSocket server. */
#define HTTP_HEAD_MAX (16u * 1024u)
/* Unix -> network: read MQTT bytes only while less than this is queued. */
#define UP_LIMIT (64u * 1024u)
/* Network -> Unix: stop reading the network while this much waits for mosquitto. */
#define DOWN_LIMIT (64u * 1024u)
/* One WebSocket message; a DPS MQTT packet is at most 96 KB, keep headroom. */
#define WS_MAX_MESSAGE (1024u * 1024u)
#define CHUNK 16384u
#define DEFAULT_TIMEOUT_USEC (30ULL * 1000000ULL)

#ifndef MIN
#define MIN(a, b) ((a) < (b) ? (a) : (b))
#endif

static inline void *mfree(void *p) {
        free(p);
        return NULL;
}

static inline const char *strna(const char *s) {
        return s ?: "n/a";
}

static bool is_ipv6_literal(const char *host) {
        return host && strchr(host, ':');
}

/* ---- the tunnel ----------------------------------------------------------- */

typedef enum Stage {
        STAGE_NEW,
        STAGE_RESOLVING,
        STAGE_CONNECTING,
        STAGE_PROXY,
        STAGE_TLS,
        STAGE_WS,
        STAGE_LISTENING,
        STAGE_PUMPING,
        STAGE_DEAD,
        _STAGE_MAX,
} Stage;

static const char *stage_to_string(Stage s) {
        switch (s) {
        case STAGE_NEW:        return "start";
        case STAGE_RESOLVING:  return "resolving";
        case STAGE_CONNECTING: return "connecting";
        case STAGE_PROXY:      return "proxy CONNECT";
        case STAGE_TLS:        return "TLS handshake";
        case STAGE_WS:         return "WebSocket handshake";
        case STAGE_LISTENING:  return "waiting for the MQTT client";
        case STAGE_PUMPING:    return "connected";
        case STAGE_DEAD:       return "closed";
        case _STAGE_MAX:       break;
        }
        return "?";
}

/* Bytes data[start .. start+len). */
typedef struct Buf {
        uint8_t *data;
        size_t start, len, cap;
} Buf;

static void buf_done(Buf *b, bool secret) {
        if (secret)
                dps_memory_free(b->data, b->cap);
        else
                free(b->data);
        *b = (Buf) {};
}

/* The bytes towards the service include MQTT CONNECT and so the SAS token:
 * no buffer is given back to malloc unwiped (no realloc()), and consumed
 * bytes are wiped at once (buf_consume()). A few KB pass here per attempt. */
static int buf_append(Buf *b, const void *p, size_t n) {
        if (n == 0)
                return 0;
        if (b->start > 0 && b->start + b->len + n > b->cap) {
                memmove(b->data, b->data + b->start, b->len);
                OPENSSL_cleanse(b->data + b->len, b->start);
                b->start = 0;
        }
        if (b->len + n > b->cap) {
                size_t cap = b->cap ? b->cap : 4096;
                while (cap < b->len + n)
                        cap *= 2;
                uint8_t *d = malloc(cap);
                if (!d)
                        return -ENOMEM;
                if (b->len > 0)
                        memcpy(d, b->data + b->start, b->len);
                dps_memory_free(b->data, b->cap);
                b->data = d;
                b->start = 0;
                b->cap = cap;
        }
        memcpy(b->data + b->start + b->len, p, n);
        b->len += n;
        return 0;
}

static void buf_consume(Buf *b, size_t n) {
        OPENSSL_cleanse(b->data + b->start, n);
        b->start += n;
        b->len -= n;
        if (b->len == 0)
                b->start = 0;
}

struct DpsTunnel {
        sd_event *event;
        dps_tunnel_handler_t handler;
        void *userdata;

        char *host;
        uint16_t port;
        DpsProxy proxy;
        SSL_CTX *ssl_ctx;
        bool websocket;
        char *ws_path;
        char *runtime_dir;
        bool own_runtime_dir;
        uint64_t timeout_usec;

        Stage stage;
        char *message;
        sd_event_source *timeout_source;
        sd_event_source *kick_source;

        /* resolving */
#ifdef __GLIBC__
        struct gaicb gai;
#endif
        struct addrinfo gai_hints;
        char *gai_node, *gai_service;
        bool gai_pending;
        sd_event_source *gai_timer;
        uint64_t gai_poll_usec;
        struct addrinfo *addrs;         /* owned: freeaddrinfo() */
        const struct addrinfo *addr_next;
        int connect_error;

        /* network side */
        int fd;
        sd_event_source *net_source;
        SSL *ssl;
        uint32_t rd_wait, wr_wait;      /* what the last blocked read/write waits for */
        Buf hs_out;                     /* handshake request still to send (may hold proxy creds) */
        Buf hs_in;                      /* handshake response so far */
        Buf pre;                        /* bytes read past the WebSocket response head */
        char *ws_key;
        wslay_event_context_ptr ws;
        int io_error;                   /* from a wslay callback */
        bool net_eof;

        /* MQTT side */
        char *socket_path;
        int listen_fd;
        sd_event_source *listen_source;
        int ufd;
        sd_event_source *ufd_source;
        Buf up, down;
        bool u_eof;
        bool close_queued;

        uint64_t n_up, n_down, io_progress;
};

static int tunnel_update_events(DpsTunnel *t);
static int run(DpsTunnel *t);

static int set_error(DpsTunnel *t, int error, const char *fmt, ...) _printf_(3, 4);
static int set_error(DpsTunnel *t, int error, const char *fmt, ...) {
        va_list ap;
        char *m = NULL;

        va_start(ap, fmt);
        if (vasprintf(&m, fmt, ap) < 0)
                m = NULL;
        va_end(ap);
        free(t->message);
        t->message = m;
        return error < 0 ? error : -EIO;
}

static const char *ssl_error_string(void) {
        static char buf[256];
        unsigned long e = ERR_peek_last_error();

        if (e == 0)
                return "unknown TLS error";
        ERR_error_string_n(e, buf, sizeof(buf));
        return buf;
}

static void tunnel_close_all(DpsTunnel *t) {
        t->timeout_source = sd_event_source_disable_unref(t->timeout_source);
        t->kick_source = sd_event_source_disable_unref(t->kick_source);
        t->gai_timer = sd_event_source_disable_unref(t->gai_timer);
        t->net_source = sd_event_source_disable_unref(t->net_source);
        t->listen_source = sd_event_source_disable_unref(t->listen_source);
        t->ufd_source = sd_event_source_disable_unref(t->ufd_source);
        if (t->ws) {
                wslay_event_context_free(t->ws);
                t->ws = NULL;
        }
        if (t->ssl) {
                SSL_free(t->ssl);
                t->ssl = NULL;
        }
        if (t->fd >= 0)
                t->fd = (close(t->fd), -1);
        if (t->ufd >= 0)
                t->ufd = (close(t->ufd), -1);
        if (t->listen_fd >= 0)
                t->listen_fd = (close(t->listen_fd), -1);
        if (t->socket_path) {
                (void) unlink(t->socket_path);
                t->socket_path = mfree(t->socket_path);
        }
        buf_done(&t->hs_out, true);
        buf_done(&t->hs_in, false);
        buf_done(&t->pre, false);
        buf_done(&t->up, true);
        buf_done(&t->down, false);
}

/* Emits a final event. The handler may free t: callers return at once. */
static int tunnel_finish(DpsTunnel *t, DpsTunnelEvent ev, int error) {
        if (t->stage == STAGE_DEAD)
                return 1;
        t->stage = STAGE_DEAD;
        tunnel_close_all(t);
        if (t->handler)
                t->handler(t, ev, error, ev == DPS_TUNNEL_READY ? NULL : t->message, t->userdata);
        return 1;
}

static int tunnel_fail(DpsTunnel *t, int r) {
        if (!t->message)
                (void) set_error(t, r, "tunnel to %s:%u failed while %s: %s", t->host, t->port,
                                 stage_to_string(t->stage), strerror(-r));
        return tunnel_finish(t, DPS_TUNNEL_ERROR, r);
}

/* ---- network I/O, plain or TLS -------------------------------------------- */

static ssize_t net_recv(DpsTunnel *t, void *buf, size_t len) {
        if (t->pre.len > 0) {
                size_t n = MIN(len, t->pre.len);
                memcpy(buf, t->pre.data + t->pre.start, n);
                buf_consume(&t->pre, n);
                return (ssize_t) n;
        }
        if (t->ssl) {
                int n;

                ERR_clear_error();
                n = SSL_read(t->ssl, buf, (int) MIN(len, (size_t) INT_MAX));
                if (n > 0)
                        return n;
                switch (SSL_get_error(t->ssl, n)) {
                case SSL_ERROR_WANT_READ:
                        t->rd_wait = EPOLLIN;
                        return -EAGAIN;
                case SSL_ERROR_WANT_WRITE:
                        t->rd_wait = EPOLLOUT;
                        return -EAGAIN;
                case SSL_ERROR_ZERO_RETURN:
                        return 0;
                case SSL_ERROR_SYSCALL:
                        return errno > 0 ? -errno : -ECONNRESET;
                default:
                        return set_error(t, -EPROTO, "TLS error from %s: %s", t->host, ssl_error_string());
                }
        }
        ssize_t n = recv(t->fd, buf, len, 0);
        if (n >= 0)
                return n;
        if (errno == EAGAIN || errno == EINTR) {
                t->rd_wait = EPOLLIN;
                return -EAGAIN;
        }
        return -errno;
}

static ssize_t net_send(DpsTunnel *t, const void *buf, size_t len) {
        if (t->ssl) {
                int n;

                ERR_clear_error();
                n = SSL_write(t->ssl, buf, (int) MIN(len, (size_t) INT_MAX));
                if (n > 0)
                        return n;
                switch (SSL_get_error(t->ssl, n)) {
                case SSL_ERROR_WANT_READ:
                        t->wr_wait = EPOLLIN;
                        return -EAGAIN;
                case SSL_ERROR_WANT_WRITE:
                        t->wr_wait = EPOLLOUT;
                        return -EAGAIN;
                case SSL_ERROR_ZERO_RETURN:
                        return -ECONNRESET;
                case SSL_ERROR_SYSCALL:
                        return errno > 0 ? -errno : -ECONNRESET;
                default:
                        return set_error(t, -EPROTO, "TLS error towards %s: %s", t->host, ssl_error_string());
                }
        }
        ssize_t n = send(t->fd, buf, len, MSG_NOSIGNAL);
        if (n >= 0)
                return n;
        if (errno == EAGAIN || errno == EINTR) {
                t->wr_wait = EPOLLOUT;
                return -EAGAIN;
        }
        return -errno;
}

/* Sends what is left of hs_out: 1 when all is sent, 0 to wait, <0 error. */
static int send_handshake(DpsTunnel *t) {
        while (t->hs_out.len > 0) {
                ssize_t n = net_send(t, t->hs_out.data + t->hs_out.start, t->hs_out.len);
                if (n == -EAGAIN)
                        return 0;
                if (n < 0)
                        return (int) n;
                buf_consume(&t->hs_out, (size_t) n);
        }
        /* the CONNECT request may hold credentials: wipe it now */
        buf_done(&t->hs_out, true);
        return 1;
}

/* ---- stages ------------------------------------------------------------------ */

static int stage_connect_next(DpsTunnel *t);
static int stage_proxy_begin(DpsTunnel *t);
static int stage_tls_begin(DpsTunnel *t);
static int stage_ws_begin(DpsTunnel *t);
static int stage_listen(DpsTunnel *t);
static int pump(DpsTunnel *t);

static const char *target_host(DpsTunnel *t) {
        return t->proxy.host ?: t->host;
}

static uint16_t target_port(DpsTunnel *t) {
        return t->proxy.host ? t->proxy.port : t->port;
}

/* A name for the thing we connect to, never with credentials. */
static const char *target_name(DpsTunnel *t, char *buf, size_t size) {
        if (t->proxy.host) {
                _cleanup_free_ char *s = NULL;
                if (dps_proxy_to_string(&t->proxy, &s) >= 0) {
                        snprintf(buf, size, "proxy %s", s);
                        return buf;
                }
        }
        snprintf(buf, size, "%s:%u", t->host, t->port);
        return buf;
}

/* After the stream to the endpoint exists (TCP, maybe through the proxy). */
static int stage_stream_ready(DpsTunnel *t) {
        if (t->ssl_ctx)
                return stage_tls_begin(t);
        if (t->websocket)
                return stage_ws_begin(t);
        return stage_listen(t);
}

static int on_connected(DpsTunnel *t) {
        int one = 1;

        (void) setsockopt(t->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        freeaddrinfo(t->addrs);
        t->addrs = NULL;
        t->addr_next = NULL;
        if (t->proxy.host)
                return stage_proxy_begin(t);
        return stage_stream_ready(t);
}

static int stage_connect_check(DpsTunnel *t) {
        struct sockaddr_storage ss;
        socklen_t sl = sizeof(ss);
        int err = 0;

        if (t->fd < 0)
                return 0;
        /* connected once the peer has a name; until then SO_ERROR says
         * whether it failed (non-zero) or is still on its way (zero) */
        if (getpeername(t->fd, (struct sockaddr *) &ss, &sl) < 0) {
                sl = sizeof(err);
                if (getsockopt(t->fd, SOL_SOCKET, SO_ERROR, &err, &sl) < 0)
                        err = errno;
                if (err == 0 || err == EINPROGRESS || err == EALREADY)
                        return 0;
        }
        if (err != 0) {
                t->connect_error = -err;
                t->net_source = sd_event_source_disable_unref(t->net_source);
                t->fd = (close(t->fd), -1);
                return stage_connect_next(t);
        }
        return on_connected(t);
}

static int net_io(sd_event_source *s, int fd, uint32_t revents, void *userdata);

static int stage_connect_next(DpsTunnel *t) {
        char name[256];
        int r;

        t->stage = STAGE_CONNECTING;
        for (; t->addr_next; t->addr_next = t->addr_next->ai_next) {
                const struct addrinfo *a = t->addr_next;
                int fd = socket(a->ai_family, a->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, a->ai_protocol);

                if (fd < 0) {
                        t->connect_error = -errno;
                        continue;
                }
                if (connect(fd, a->ai_addr, a->ai_addrlen) < 0 && errno != EINPROGRESS) {
                        t->connect_error = -errno;
                        close(fd);
                        continue;
                }
                t->addr_next = a->ai_next;
                t->fd = fd;
                r = sd_event_add_io(t->event, &t->net_source, fd, EPOLLOUT, net_io, t);
                if (r < 0)
                        return r;
                (void) sd_event_source_set_description(t->net_source, "dps-tunnel-net");
                return 0;
        }
        r = t->connect_error ?: -EHOSTUNREACH;
        return set_error(t, r, "Failed to connect to %s: %s", target_name(t, name, sizeof(name)), strerror(-r));
}

static int gai_to_errno(int e) {
        switch (e) {
        case EAI_NONAME:
#ifdef EAI_NODATA
        case EAI_NODATA:
#endif
        case EAI_FAIL:
                return -EHOSTUNREACH;
        case EAI_AGAIN:
                return -EAGAIN;
        case EAI_MEMORY:
                return -ENOMEM;
        case EAI_SYSTEM:
                return errno > 0 ? -errno : -EIO;
        default:
                return -EINVAL;
        }
}

static int resolved(DpsTunnel *t, int e, struct addrinfo *res) {
        char name[256];

        if (e != 0)
                return set_error(t, gai_to_errno(e), "Failed to resolve %s: %s",
                                 target_name(t, name, sizeof(name)), gai_strerror(e));
        t->addrs = res;
        t->addr_next = res;
        t->connect_error = 0;
        return stage_connect_next(t);
}

#ifdef __GLIBC__
static int gai_poll(sd_event_source *s, uint64_t usec, void *userdata) {
        DpsTunnel *t = userdata;
        int e, r;

        e = gai_error(&t->gai);
        if (e == EAI_INPROGRESS) {
                t->gai_poll_usec = MIN(t->gai_poll_usec * 2, 50000ULL);
                r = sd_event_source_set_time_relative(s, t->gai_poll_usec);
                if (r >= 0)
                        r = sd_event_source_set_enabled(s, SD_EVENT_ONESHOT);
                if (r < 0)
                        return tunnel_fail(t, r), 0;
                return 0;
        }
        t->gai_pending = false;
        t->gai_timer = sd_event_source_disable_unref(t->gai_timer);
        struct addrinfo *res = e == 0 ? t->gai.ar_result : NULL;
        t->gai.ar_result = NULL;
        r = resolved(t, e, res);
        if (r < 0)
                return tunnel_fail(t, r), 0;
        if (r == 0)
                (void) tunnel_update_events(t);
        return 0;
}

#endif

static int stage_resolve(DpsTunnel *t) {
        struct addrinfo *res = NULL;
        int e;

        t->stage = STAGE_RESOLVING;
        if (asprintf(&t->gai_service, "%u", target_port(t)) < 0)
                return -ENOMEM;
        t->gai_node = strdup(target_host(t));
        if (!t->gai_node)
                return -ENOMEM;
        t->gai_hints = (struct addrinfo) { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
                                           .ai_flags = AI_NUMERICHOST | AI_NUMERICSERV };

        /* a numeric address never blocks */
        e = getaddrinfo(t->gai_node, t->gai_service, &t->gai_hints, &res);
        if (e == 0)
                return resolved(t, 0, res);

        t->gai_hints.ai_flags = AI_NUMERICSERV;
#ifdef __GLIBC__
        struct gaicb *list[1] = { &t->gai };
        int r;

        t->gai = (struct gaicb) { .ar_name = t->gai_node, .ar_service = t->gai_service,
                                  .ar_request = &t->gai_hints };
        e = getaddrinfo_a(GAI_NOWAIT, list, 1, NULL);
        if (e != 0)
                return resolved(t, e, NULL);
        t->gai_pending = true;
        t->gai_poll_usec = 1000;
        r = sd_event_add_time_relative(t->event, &t->gai_timer, CLOCK_MONOTONIC, t->gai_poll_usec, 1000,
                                       gai_poll, t);
        if (r < 0)
                return r;
        (void) sd_event_source_set_description(t->gai_timer, "dps-tunnel-resolve");
        return 0;
#else
        /* musl has no getaddrinfo_a(): a blocking lookup (quick with
         * /etc/hosts or a local caching resolver) */
        e = getaddrinfo(t->gai_node, t->gai_service, &t->gai_hints, &res);
        return resolved(t, e, e == 0 ? res : NULL);
#endif
}

static int stage_proxy_begin(DpsTunnel *t) {
        _cleanup_secret_ char *req = NULL, *cred = NULL, *b64 = NULL;
        bool v6 = is_ipv6_literal(t->host);
        int r;

        t->stage = STAGE_PROXY;
        if (t->proxy.user) {
                if (asprintf(&cred, "%s:%s", t->proxy.user, t->proxy.password ?: "") < 0)
                        return -ENOMEM;
                r = dps_base64_encode(cred, strlen(cred), &b64);
                if (r < 0)
                        return r;
        }
        if (asprintf(&req,
                     "CONNECT %s%s%s:%u HTTP/1.1\r\n"
                     "Host: %s%s%s:%u\r\n"
                     "%s%s%s"
                     "User-Agent: dpsd/" PACKAGE_VERSION "\r\n"
                     "\r\n",
                     v6 ? "[" : "", t->host, v6 ? "]" : "", t->port,
                     v6 ? "[" : "", t->host, v6 ? "]" : "", t->port,
                     b64 ? "Proxy-Authorization: Basic " : "", b64 ?: "", b64 ? "\r\n" : "") < 0)
                return -ENOMEM;
        r = buf_append(&t->hs_out, req, strlen(req));
        if (r < 0)
                return r;
        return 0;
}

static bool status_is_2xx(const char *head) {
        int status;
        return dps_http_parse_status(head, &status, NULL) >= 0 && status >= 200 && status <= 299;
}

/* Reads an HTTP response head into hs_in. 1 when complete, with
 * *ret_head_len its length (the head is then a NUL-terminated string at
 * hs_in and the bytes after it, if any, follow); 0 to wait; <0 error with a
 * message naming what (e.g. "proxy http://host:port"). */
static int read_head(DpsTunnel *t, const char *what, size_t *ret_head_len) {
        uint8_t buf[4096];
        const char *end;
        int r;

        for (;;) {
                ssize_t n = net_recv(t, buf, sizeof(buf));
                if (n == -EAGAIN)
                        return 0;
                if (n < 0)
                        return (int) n;
                if (n == 0)
                        return set_error(t, -ECONNRESET, "%s closed the connection before answering", what);
                r = buf_append(&t->hs_in, buf, (size_t) n);
                if (r < 0)
                        return r;
                r = buf_append(&t->hs_in, "", 1);  /* keep it a string; the NUL is not counted */
                if (r < 0)
                        return r;
                t->hs_in.len--;
                end = strstr((const char *) t->hs_in.data + t->hs_in.start, "\r\n\r\n");
                if (end) {
                        *ret_head_len = (size_t) (end - (const char *) t->hs_in.data - t->hs_in.start) + 4;
                        return 1;
                }
                if (t->hs_in.len > HTTP_HEAD_MAX || memchr(t->hs_in.data + t->hs_in.start, 0, t->hs_in.len))
                        return set_error(t, -EBADMSG, "%s sent a malformed or oversized answer", what);
        }
}

static int stage_proxy_step(DpsTunnel *t) {
        _cleanup_free_ char *reason = NULL, *pname = NULL, *what = NULL;
        size_t head_len;
        char *head;
        int r, status;

        r = send_handshake(t);
        if (r <= 0)
                return r;

        (void) dps_proxy_to_string(&t->proxy, &pname);
        if (asprintf(&what, "proxy %s", strna(pname)) < 0)
                return -ENOMEM;
        r = read_head(t, what, &head_len);
        if (r <= 0)
                return r;
        head = (char *) t->hs_in.data + t->hs_in.start;

        /* The endpoint speaks only after us (TLS ClientHello, WebSocket GET,
         * MQTT CONNECT), so nothing may follow a 2xx head. Without TLS
         * (tests) such bytes are kept; TLS reads the socket itself. */
        size_t extra = t->hs_in.len - head_len;
        if (extra > 0 && t->ssl_ctx && status_is_2xx(head))
                return set_error(t, -EPROTO, "%s sent data after its answer to CONNECT", what);
        r = buf_append(&t->pre, head + head_len, extra);
        if (r < 0)
                return r;
        head[head_len] = 0;

        r = dps_http_parse_status(head, &status, &reason);
        buf_done(&t->hs_in, false);
        if (r < 0)
                return set_error(t, -EBADMSG, "%s sent a malformed answer to CONNECT", what);
        /* 407 is the standard answer to missing or wrong credentials, but
         * some proxies (tinyproxy 1.11) answer CONNECT with 401 */
        if (status == 401 || status == 403 || status == 407)
                return set_error(t, -EACCES, "proxy refused CONNECT: %d %s (%s)", status, reason, what);
        if (status < 200 || status > 299)
                return set_error(t, -ECONNREFUSED, "proxy refused CONNECT: %d %s (%s)", status, reason, what);
        return stage_stream_ready(t);
}

static int stage_tls_begin(DpsTunnel *t) {
        t->stage = STAGE_TLS;
        t->ssl = SSL_new(t->ssl_ctx);
        if (!t->ssl)
                return -ENOMEM;
        /* SNI is for names only (RFC 6066 section 3) */
        struct in6_addr a;
        if (inet_pton(AF_INET, t->host, &a) != 1 && inet_pton(AF_INET6, t->host, &a) != 1 &&
            SSL_set_tlsext_host_name(t->ssl, t->host) != 1)
                return -EIO;
        if (SSL_set1_host(t->ssl, t->host) != 1)
                return -EIO;
        SSL_set_verify(t->ssl, SSL_VERIFY_PEER, SSL_CTX_get_verify_callback(t->ssl_ctx));
        if (SSL_set_min_proto_version(t->ssl, TLS1_2_VERSION) != 1)
                return -EIO;
        SSL_set_mode(t->ssl, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
        SSL_set_options(t->ssl, SSL_OP_IGNORE_UNEXPECTED_EOF);
        if (SSL_set_fd(t->ssl, t->fd) != 1)
                return -EIO;
        SSL_set_connect_state(t->ssl);
        return 0;       /* the handshake runs from stage_tls_step() */
}

static int stage_tls_step(DpsTunnel *t) {
        int n;

        ERR_clear_error();
        n = SSL_do_handshake(t->ssl);
        if (n == 1) {
                if (t->websocket)
                        return stage_ws_begin(t);
                return stage_listen(t);
        }
        switch (SSL_get_error(t->ssl, n)) {
        case SSL_ERROR_WANT_READ:
                t->rd_wait = EPOLLIN;
                return 0;
        case SSL_ERROR_WANT_WRITE:
                t->rd_wait = EPOLLOUT;
                return 0;
        default: {
                long v = SSL_get_verify_result(t->ssl);
                if (v != X509_V_OK)
                        return set_error(t, -EPROTO, "TLS handshake with %s:%u failed: certificate verification: %s",
                                         t->host, t->port, X509_verify_cert_error_string(v));
                return set_error(t, -EPROTO, "TLS handshake with %s:%u failed: %s", t->host, t->port,
                                 ERR_peek_last_error() ? ssl_error_string() : "connection closed");
        }
        }
}

static int stage_ws_begin(DpsTunnel *t) {
        _cleanup_free_ char *req = NULL;
        bool v6 = is_ipv6_literal(t->host);
        char port[16] = "";
        int r;

        t->stage = STAGE_WS;
        r = dps_ws_new_key(&t->ws_key);
        if (r < 0)
                return r;
        /* RFC 7230 5.4: the port is omitted when it is the scheme's default */
        if (t->port != 443)
                snprintf(port, sizeof(port), ":%u", t->port);
        if (asprintf(&req,
                     "GET %s HTTP/1.1\r\n"
                     "Host: %s%s%s%s\r\n"
                     "Upgrade: websocket\r\n"
                     "Connection: Upgrade\r\n"
                     "Sec-WebSocket-Key: %s\r\n"
                     "Sec-WebSocket-Version: 13\r\n"
                     "Sec-WebSocket-Protocol: " DPS_WS_PROTOCOL "\r\n"
                     "User-Agent: dpsd/" PACKAGE_VERSION "\r\n"
                     "\r\n",
                     t->ws_path, v6 ? "[" : "", t->host, v6 ? "]" : "", port, t->ws_key) < 0)
                return -ENOMEM;
        r = buf_append(&t->hs_out, req, strlen(req));
        if (r < 0)
                return r;
        return 0;
}

static ssize_t ws_recv_cb(wslay_event_context_ptr ctx, uint8_t *buf, size_t len, int flags, void *userdata) {
        DpsTunnel *t = userdata;
        ssize_t n;

        if (t->down.len >= DOWN_LIMIT) {
                wslay_event_set_error(ctx, WSLAY_ERR_WOULDBLOCK);
                return -1;
        }
        n = net_recv(t, buf, len);
        if (n == -EAGAIN) {
                wslay_event_set_error(ctx, WSLAY_ERR_WOULDBLOCK);
                return -1;
        }
        if (n <= 0) {
                if (n == 0)
                        t->net_eof = true;
                else
                        t->io_error = (int) n;
                wslay_event_set_error(ctx, WSLAY_ERR_CALLBACK_FAILURE);
                return -1;
        }
        t->io_progress += (size_t) n;
        return n;
}

static ssize_t ws_send_cb(wslay_event_context_ptr ctx, const uint8_t *data, size_t len, int flags, void *userdata) {
        DpsTunnel *t = userdata;
        ssize_t n;

        n = net_send(t, data, len);
        if (n == -EAGAIN) {
                wslay_event_set_error(ctx, WSLAY_ERR_WOULDBLOCK);
                return -1;
        }
        if (n < 0) {
                t->io_error = (int) n;
                wslay_event_set_error(ctx, WSLAY_ERR_CALLBACK_FAILURE);
                return -1;
        }
        t->io_progress += (size_t) n;
        return n;
}

/* RFC 6455 5.3: "a fresh masking key ... derived from a strong source of entropy" */
static int ws_genmask_cb(wslay_event_context_ptr ctx, uint8_t *buf, size_t len, void *userdata) {
        if (RAND_bytes(buf, (int) len) != 1) {
                wslay_event_set_error(ctx, WSLAY_ERR_CALLBACK_FAILURE);
                return -1;
        }
        return 0;
}

static void ws_msg_cb(wslay_event_context_ptr ctx, const struct wslay_event_on_msg_recv_arg *arg, void *userdata) {
        DpsTunnel *t = userdata;
        int r;

        switch (arg->opcode) {
        case WSLAY_BINARY_FRAME:
                r = buf_append(&t->down, arg->msg, arg->msg_length);
                if (r < 0)
                        t->io_error = r;
                else
                        t->n_down += arg->msg_length;
                break;
        case WSLAY_TEXT_FRAME:
                /* MQTT over WebSocket is binary only (MQTT 3.1.1 section 6) */
                if (!t->io_error) {
                        (void) set_error(t, -EPROTO, "WebSocket server %s sent a text frame", t->host);
                        t->io_error = -EPROTO;
                }
                break;
        default:        /* ping, pong and close: wslay answers them itself */
                break;
        }
}

static int ws_context_new(DpsTunnel *t) {
        static const struct wslay_event_callbacks cbs = {
                .recv_callback = ws_recv_cb,
                .send_callback = ws_send_cb,
                .genmask_callback = ws_genmask_cb,
                .on_msg_recv_callback = ws_msg_cb,
        };

        if (wslay_event_context_client_init(&t->ws, &cbs, t) != 0)
                return -ENOMEM;
        wslay_event_config_set_max_recv_msg_length(t->ws, WS_MAX_MESSAGE);
        return 0;
}

static int stage_ws_step(DpsTunnel *t) {
        _cleanup_free_ char *what = NULL;
        const char *reason = NULL;
        size_t head_len;
        int r, status = 0;

        r = send_handshake(t);
        if (r <= 0)
                return r;
        if (asprintf(&what, "the WebSocket server %s:%u", t->host, t->port) < 0)
                return -ENOMEM;
        r = read_head(t, what, &head_len);
        if (r <= 0)
                return r;

        const char *head = (const char *) t->hs_in.data + t->hs_in.start;
        /* whatever follows the head is already WebSocket frames */
        r = buf_append(&t->pre, head + head_len, t->hs_in.len - head_len);
        if (r < 0)
                return r;
        ((char *) t->hs_in.data)[t->hs_in.start + head_len] = 0;

        r = dps_ws_check_response(head, t->ws_key, DPS_WS_PROTOCOL, &status, &reason);
        if (r < 0) {
                if (status != 0 && status != 101) {
                        _cleanup_free_ char *phrase = NULL;
                        (void) dps_http_parse_status(head, NULL, &phrase);
                        return set_error(t, status == 401 || status == 403 ? -EACCES : -ECONNREFUSED,
                                         "WebSocket handshake with %s failed: HTTP %d %s", t->host, status,
                                         strempty(phrase) ? "" : phrase);
                }
                return set_error(t, r, "WebSocket handshake with %s failed: %s", t->host, reason ?: strerror(-r));
        }
        buf_done(&t->hs_in, false);

        r = ws_context_new(t);
        if (r < 0)
                return r;
        return stage_listen(t);
}

/* ---- the Unix side ------------------------------------------------------------ */

static int ufd_io(sd_event_source *s, int fd, uint32_t revents, void *userdata);

static int listen_io(sd_event_source *s, int fd, uint32_t revents, void *userdata) {
        DpsTunnel *t = userdata;
        struct ucred cred;
        socklen_t sl = sizeof(cred);
        int cfd, r;

        cfd = accept4(fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (cfd < 0) {
                if (errno == EAGAIN || errno == EINTR || errno == ECONNABORTED)
                        return 0;
                return tunnel_fail(t, -errno), 0;
        }
        /* only our own uid may ride the tunnel */
        if (getsockopt(cfd, SOL_SOCKET, SO_PEERCRED, &cred, &sl) < 0 || cred.uid != geteuid()) {
                close(cfd);
                return 0;
        }

        (void) unlink(t->socket_path);
        t->listen_source = sd_event_source_disable_unref(t->listen_source);
        t->listen_fd = (close(t->listen_fd), -1);
        t->timeout_source = sd_event_source_disable_unref(t->timeout_source);

        t->ufd = cfd;
        t->stage = STAGE_PUMPING;
        r = sd_event_add_io(t->event, &t->ufd_source, cfd, EPOLLIN, ufd_io, t);
        if (r < 0)
                return tunnel_fail(t, r), 0;
        (void) sd_event_source_set_description(t->ufd_source, "dps-tunnel-mqtt");
        (void) run(t);
        return 0;
}

static int runtime_dir_pick(DpsTunnel *t) {
        const char *rd = getenv("RUNTIME_DIRECTORY");
        char tmpl[] = "/tmp/dpsd-tunnel-XXXXXX";

        if (t->runtime_dir)
                return 0;
        if (!strempty(rd)) {
                /* "If multiple directories are set, they are separated by ':'" (systemd.exec(5)) */
                t->runtime_dir = strndup(rd, strcspn(rd, ":"));
                return t->runtime_dir ? 0 : -ENOMEM;
        }
        if (!mkdtemp(tmpl))
                return -errno;
        t->runtime_dir = strdup(tmpl);
        if (!t->runtime_dir) {
                (void) rmdir(tmpl);
                return -ENOMEM;
        }
        t->own_runtime_dir = true;
        return 0;
}

static int stage_listen(DpsTunnel *t) {
        static unsigned counter = 0;
        struct sockaddr_un sa = { .sun_family = AF_UNIX };
        _cleanup_close_ int fd = -1;
        int r;

        t->stage = STAGE_LISTENING;
        /* the network source stays until the pump re-arms it; nothing to read before MQTT CONNECT */
        t->net_source = sd_event_source_disable_unref(t->net_source);

        r = runtime_dir_pick(t);
        if (r < 0)
                return set_error(t, r, "Failed to create a directory for the tunnel socket: %s", strerror(-r));
        if (asprintf(&t->socket_path, "%s/dpsd-tunnel-%d-%u.sock", t->runtime_dir, (int) getpid(), ++counter) < 0)
                return -ENOMEM;
        if (strlen(t->socket_path) >= sizeof(sa.sun_path))
                return set_error(t, -ENAMETOOLONG, "Tunnel socket path %s is too long", t->socket_path);
        strcpy(sa.sun_path, t->socket_path);

        fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (fd < 0)
                return -errno;
        /* the mode given to the socket inode before bind() is the file's mode:
         * created 0600, never chmod-ed after */
        if (fchmod(fd, 0600) < 0)
                return -errno;
        (void) unlink(t->socket_path);
        if (bind(fd, (struct sockaddr *) &sa, sizeof(sa)) < 0) {
                r = -errno;
                t->socket_path = mfree(t->socket_path);
                return set_error(t, r, "Failed to bind the tunnel socket in %s: %s", t->runtime_dir, strerror(-r));
        }
        if (listen(fd, 1) < 0)
                return -errno;
        r = sd_event_add_io(t->event, &t->listen_source, fd, EPOLLIN, listen_io, t);
        if (r < 0)
                return r;
        (void) sd_event_source_set_description(t->listen_source, "dps-tunnel-listen");
        t->listen_fd = TAKE_FD(fd);

        if (t->handler)
                t->handler(t, DPS_TUNNEL_READY, 0, NULL, t->userdata);
        return 1;       /* the handler may have freed t */
}

/* ---- the pump ---------------------------------------------------------------- */

/* The MQTT client hung up or cannot be written to: close the far end politely. */
static void client_gone(DpsTunnel *t) {
        t->u_eof = true;
        if (t->ws && !t->close_queued) {
                t->close_queued = true;
                (void) wslay_event_queue_close(t->ws, WSLAY_CODE_NORMAL_CLOSURE, NULL, 0);
        }
}

static int pump_close(DpsTunnel *t, int r) {
        if (r < 0)
                return r;
        return tunnel_finish(t, DPS_TUNNEL_CLOSED, 0);
}

/* Moves bytes until nothing moves. 0 = wait for events, 1 = finished (t may
 * be gone), <0 = error (message may be set). buf: CHUNK bytes of scratch. */
static int pump_bytes(DpsTunnel *t, uint8_t *buf) {
        bool progress = true;

        while (progress) {
                progress = false;

                /* mosquitto -> network */
                size_t queued = t->ws ? wslay_event_get_queued_msg_length(t->ws) : t->up.len;
                if (!t->u_eof && queued < UP_LIMIT && !(t->ws && wslay_event_get_close_sent(t->ws))) {
                        ssize_t n = read(t->ufd, buf, CHUNK);
                        if (n > 0) {
                                progress = true;
                                t->n_up += (size_t) n;
                                if (t->ws) {
                                        struct wslay_event_msg m = { .opcode = WSLAY_BINARY_FRAME, .msg = buf,
                                                                     .msg_length = (size_t) n };
                                        if (wslay_event_queue_msg(t->ws, &m) != 0)
                                                return -ENOMEM;
                                } else {
                                        int r = buf_append(&t->up, buf, (size_t) n);
                                        if (r < 0)
                                                return r;
                                }
                        } else if (n == 0 || (errno != EAGAIN && errno != EINTR)) {
                                client_gone(t);
                                progress = true;
                        }
                }

                if (t->ws) {
                        uint64_t before = t->io_progress;

                        if (wslay_event_want_write(t->ws) && wslay_event_send(t->ws) < 0) {
                                int e = t->io_error ?: -ECONNRESET;
                                return t->message ? e :
                                        set_error(t, e, "connection to %s lost while sending: %s", t->host, strerror(-e));
                        }
                        if (t->down.len < DOWN_LIMIT && wslay_event_want_read(t->ws)) {
                                int r = wslay_event_recv(t->ws);
                                if (t->io_error)
                                        return t->message ? t->io_error :
                                                set_error(t, t->io_error, "connection to %s lost: %s", t->host,
                                                          strerror(-t->io_error));
                                if (r < 0 && !t->net_eof)
                                        return set_error(t, -EPROTO, "WebSocket protocol error from %s", t->host);
                        }
                        if (t->io_progress != before)
                                progress = true;
                } else {
                        while (t->up.len > 0) {
                                ssize_t n = net_send(t, t->up.data + t->up.start, t->up.len);
                                if (n == -EAGAIN)
                                        break;
                                if (n < 0)
                                        return set_error(t, (int) n, "connection to %s lost while sending: %s",
                                                         t->host, strerror((int) -n));
                                buf_consume(&t->up, (size_t) n);
                                progress = true;
                        }
                        if (!t->net_eof && t->down.len < DOWN_LIMIT) {
                                ssize_t n = net_recv(t, buf, CHUNK);
                                if (n > 0) {
                                        int r = buf_append(&t->down, buf, (size_t) n);
                                        if (r < 0)
                                                return r;
                                        t->n_down += (size_t) n;
                                        progress = true;
                                } else if (n == 0) {
                                        t->net_eof = true;
                                        progress = true;
                                } else if (n != -EAGAIN)
                                        return t->message ? (int) n :
                                                set_error(t, (int) n, "connection to %s lost: %s", t->host,
                                                          strerror((int) -n));
                        }
                }

                /* network -> mosquitto */
                while (t->down.len > 0 && t->ufd >= 0) {
                        ssize_t n = send(t->ufd, t->down.data + t->down.start, t->down.len, MSG_NOSIGNAL);
                        if (n < 0) {
                                if (errno == EAGAIN || errno == EINTR)
                                        break;
                                /* the MQTT client is gone; drop what it will never read */
                                client_gone(t);
                                buf_consume(&t->down, t->down.len);
                                progress = true;
                                break;
                        }
                        buf_consume(&t->down, (size_t) n);
                        progress = true;
                }
        }

        /* when both ends are done, or one end is done and nothing is left to pass on */
        if (t->ws) {
                bool far_done = t->net_eof || (wslay_event_get_close_received(t->ws) && !wslay_event_want_write(t->ws));
                bool near_done = t->u_eof && wslay_event_get_close_sent(t->ws) && !wslay_event_want_write(t->ws);

                if (far_done && t->down.len == 0) {
                        if (!wslay_event_get_close_received(t->ws) && !t->u_eof)
                                return set_error(t, -ECONNRESET, "WebSocket server %s closed the connection", t->host);
                        return pump_close(t, 0);
                }
                if (near_done)
                        return pump_close(t, 0);
                /* wslay found a protocol violation (a masked or malformed
                 * frame, an oversized message): it stopped reading and sent
                 * a close with the reason; there is nothing more to wait for */
                if (!wslay_event_get_read_enabled(t->ws) && !wslay_event_get_close_received(t->ws) &&
                    wslay_event_get_close_sent(t->ws) && !wslay_event_want_write(t->ws) && !t->u_eof)
                        return set_error(t, -EPROTO, "WebSocket protocol error from %s (closed with status %u)",
                                         t->host, wslay_event_get_status_code_sent(t->ws));
        } else {
                if (t->net_eof && t->down.len == 0)
                        return pump_close(t, 0);
                if (t->u_eof && t->up.len == 0) {
                        if (t->ssl)
                                (void) SSL_shutdown(t->ssl);
                        return pump_close(t, 0);
                }
        }
        return 0;
}

static int pump(DpsTunnel *t) {
        uint8_t buf[CHUNK];
        int r = pump_bytes(t, buf);

        OPENSSL_cleanse(buf, sizeof buf);       /* it held MQTT CONNECT, SAS token included */
        return r;
}

/* ---- event plumbing -------------------------------------------------------- */

static int set_io(sd_event_source *s, uint32_t mask) {
        int r;

        if (!s)
                return 0;
        if (mask == 0)
                return sd_event_source_set_enabled(s, SD_EVENT_OFF);
        r = sd_event_source_set_io_events(s, mask);
        if (r < 0)
                return r;
        return sd_event_source_set_enabled(s, SD_EVENT_ON);
}

static int tunnel_update_events(DpsTunnel *t) {
        uint32_t net = 0, u = 0;
        int r;

        switch (t->stage) {
        case STAGE_CONNECTING:
                net = EPOLLOUT;
                break;
        case STAGE_PROXY:
                net = t->hs_out.len > 0 ? EPOLLOUT : EPOLLIN;
                break;
        case STAGE_TLS:
                net = t->rd_wait ?: EPOLLOUT;
                break;
        case STAGE_WS:
                net = t->hs_out.len > 0 ? (t->wr_wait ?: EPOLLOUT) : (t->rd_wait ?: EPOLLIN);
                break;
        case STAGE_PUMPING: {
                bool want_read, want_write;

                if (t->ws) {
                        want_read = t->down.len < DOWN_LIMIT && wslay_event_want_read(t->ws);
                        want_write = wslay_event_want_write(t->ws);
                        if (!t->u_eof && wslay_event_get_queued_msg_length(t->ws) < UP_LIMIT &&
                            !wslay_event_get_close_sent(t->ws))
                                u |= EPOLLIN;
                } else {
                        want_read = !t->net_eof && t->down.len < DOWN_LIMIT;
                        want_write = t->up.len > 0;
                        if (!t->u_eof && t->up.len < UP_LIMIT)
                                u |= EPOLLIN;
                }
                if (want_read)
                        net |= t->rd_wait ?: EPOLLIN;
                if (want_write)
                        net |= t->wr_wait ?: EPOLLOUT;
                if (t->down.len > 0)
                        u |= EPOLLOUT;
                break;
        }
        case STAGE_NEW:
        case STAGE_RESOLVING:
        case STAGE_LISTENING:
        case STAGE_DEAD:
        case _STAGE_MAX:
                break;
        }

        if (t->net_source || (net && t->fd >= 0)) {
                if (!t->net_source && net) {
                        r = sd_event_add_io(t->event, &t->net_source, t->fd, net, net_io, t);
                        if (r < 0)
                                return r;
                        (void) sd_event_source_set_description(t->net_source, "dps-tunnel-net");
                }
                r = set_io(t->net_source, net);
                if (r < 0)
                        return r;
        }
        return set_io(t->ufd_source, u);
}

static int stage_first(DpsTunnel *t) {
        t->kick_source = sd_event_source_disable_unref(t->kick_source);
        if (t->fd >= 0) {
                /* a stream that is already connected (tests) */
                if (fcntl(t->fd, F_SETFL, fcntl(t->fd, F_GETFL) | O_NONBLOCK) < 0)
                        return -errno;
                t->stage = STAGE_CONNECTING;
                return stage_stream_ready(t);
        }
        return stage_resolve(t);
}

static int step(DpsTunnel *t) {
        switch (t->stage) {
        case STAGE_NEW:        return stage_first(t);
        case STAGE_CONNECTING: return stage_connect_check(t);
        case STAGE_PROXY:      return stage_proxy_step(t);
        case STAGE_TLS:        return stage_tls_step(t);
        case STAGE_WS:         return stage_ws_step(t);
        case STAGE_PUMPING:    return pump(t);
        case STAGE_RESOLVING:
        case STAGE_LISTENING:
        case STAGE_DEAD:
        case _STAGE_MAX:
                break;
        }
        return 0;
}

/* Runs the current stage's step, and the next ones as long as a stage
 * completes without waiting, then re-arms the event sources. Every source
 * ends here, so every failure is reported the same way. Returns 1 when an
 * event was emitted (t may be gone), 0 otherwise. */
static int run(DpsTunnel *t) {
        int r;

        for (;;) {
                Stage before = t->stage;

                t->rd_wait = t->wr_wait = 0;
                r = step(t);
                if (r < 0)
                        return tunnel_fail(t, r);
                if (r > 0)
                        return 1;
                if (t->stage == before || t->stage == STAGE_RESOLVING || t->stage == STAGE_CONNECTING)
                        break;
        }
        r = tunnel_update_events(t);
        if (r < 0)
                return tunnel_fail(t, r);
        return 0;
}

static int kick(sd_event_source *s, void *userdata) {
        (void) run(userdata);
        return 0;
}

static int net_io(sd_event_source *s, int fd, uint32_t revents, void *userdata) {
        (void) run(userdata);
        return 0;
}

static int ufd_io(sd_event_source *s, int fd, uint32_t revents, void *userdata) {
        (void) run(userdata);
        return 0;
}

static int on_timeout(sd_event_source *s, uint64_t usec, void *userdata) {
        DpsTunnel *t = userdata;
        char name[256];

        (void) set_error(t, -ETIMEDOUT, "Timed out after %llu s while %s (%s)",
                         (unsigned long long) (t->timeout_usec / 1000000ULL), stage_to_string(t->stage),
                         target_name(t, name, sizeof(name)));
        return tunnel_fail(t, -ETIMEDOUT), 0;
}

/* ---- object ------------------------------------------------------------------ */

int dps_tunnel_new(sd_event *event, const DpsTunnelConfig *config, dps_tunnel_handler_t handler,
                   void *userdata, DpsTunnel **ret) {
        _cleanup_(dps_tunnel_freep) DpsTunnel *t = NULL;
        _cleanup_close_ int fd = config ? config->fd : -1;
        int r;

        if (!event || !config || !ret)
                return -EINVAL;
        if (fd < 0 && (strempty(config->host) || config->port == 0))
                return -EINVAL;

        t = calloc(1, sizeof(*t));
        if (!t)
                return -ENOMEM;
        t->fd = t->ufd = t->listen_fd = -1;
        t->event = sd_event_ref(event);
        t->handler = handler;
        t->userdata = userdata;
        t->host = strdup(strempty(config->host) ? "localhost" : config->host);
        t->ws_path = strdup(config->ws_path ?: DPS_WS_PATH);
        if (!t->host || !t->ws_path)
                return -ENOMEM;
        t->port = config->port ?: DPS_PORT_MQTT_WS;
        if (config->proxy && config->proxy->host) {
                r = dps_proxy_copy(config->proxy, &t->proxy);
                if (r < 0)
                        return r;
        }
        if (config->ssl_ctx) {
                if (SSL_CTX_up_ref(config->ssl_ctx) != 1)
                        return -EIO;
                t->ssl_ctx = config->ssl_ctx;
        }
        t->websocket = config->websocket;
        if (config->runtime_dir) {
                t->runtime_dir = strdup(config->runtime_dir);
                if (!t->runtime_dir)
                        return -ENOMEM;
        }
        t->timeout_usec = config->timeout_usec ?: DEFAULT_TIMEOUT_USEC;
        t->fd = TAKE_FD(fd);

        *ret = TAKE_PTR(t);
        return 0;
}

int dps_tunnel_start(DpsTunnel *t) {
        int r;

        if (!t || t->stage != STAGE_NEW || t->kick_source)
                return -EINVAL;

        r = sd_event_add_time_relative(t->event, &t->timeout_source, CLOCK_MONOTONIC, t->timeout_usec, 0,
                                       on_timeout, t);
        if (r < 0)
                return r;
        (void) sd_event_source_set_description(t->timeout_source, "dps-tunnel-timeout");

        /* Everything, even a failure found at once, happens from the loop:
         * the handler never runs inside this call. */
        r = sd_event_add_defer(t->event, &t->kick_source, kick, t);
        if (r < 0)
                return r;
        (void) sd_event_source_set_description(t->kick_source, "dps-tunnel-start");
        return 0;
}

const char *dps_tunnel_socket_path(DpsTunnel *t) {
        return t && t->stage == STAGE_LISTENING ? t->socket_path : NULL;
}

void dps_tunnel_get_counters(DpsTunnel *t, uint64_t *ret_up, uint64_t *ret_down) {
        if (ret_up)
                *ret_up = t ? t->n_up : 0;
        if (ret_down)
                *ret_down = t ? t->n_down : 0;
}

/* The owner is done: one last non-blocking pass carries what the MQTT
 * client wrote last (its DISCONNECT, "4. DISCONNECT") to the server and
 * says goodbye (a WebSocket close frame, a TLS close_notify). Nothing waits:
 * what the socket does not take at once is dropped. No event is emitted. */
static void tunnel_farewell(DpsTunnel *t) {
        if (t->stage != STAGE_PUMPING)
                return;
        t->handler = NULL;
        t->rd_wait = t->wr_wait = 0;
        if (pump(t) != 0 || t->stage != STAGE_PUMPING)
                return;
        if (t->ws) {
                if (!t->close_queued)
                        (void) wslay_event_queue_close(t->ws, WSLAY_CODE_NORMAL_CLOSURE, NULL, 0);
                t->close_queued = true;
                if (wslay_event_want_write(t->ws))
                        (void) wslay_event_send(t->ws);
        }
        if (t->ssl && t->up.len == 0)
                (void) SSL_shutdown(t->ssl);
}

DpsTunnel *dps_tunnel_free(DpsTunnel *t) {
        if (!t)
                return NULL;
        tunnel_farewell(t);
        tunnel_close_all(t);
#ifdef __GLIBC__
        if (t->gai_pending) {
                const struct gaicb *list[1] = { &t->gai };
                if (gai_cancel(&t->gai) == EAI_NOTCANCELED)
                        while (gai_error(&t->gai) == EAI_INPROGRESS)
                                (void) gai_suspend(list, 1, NULL);
        }
        if (t->gai.ar_result)
                freeaddrinfo(t->gai.ar_result);
#endif
        if (t->addrs)
                freeaddrinfo(t->addrs);
        free(t->gai_node);
        free(t->gai_service);
        if (t->own_runtime_dir)
                (void) rmdir(t->runtime_dir);
        free(t->runtime_dir);
        free(t->ws_path);
        free(t->ws_key);
        free(t->host);
        free(t->message);
        dps_proxy_done(&t->proxy);
        SSL_CTX_free(t->ssl_ctx);
        sd_event_unref(t->event);
        free(t);
        return NULL;
}
