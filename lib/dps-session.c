/* SPDX-License-Identifier: MIT */
/* dps-session.c: one MQTT session to DPS driven from sd-event (libdps internal API) */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>

#include <mosquitto.h>
#include <openssl/ssl.h>

#include "dps-macro.h"
#include "dps-session.h"
#include "dps-tunnel.h"

/* mosquitto_loop_misc() handles keep-alive pings: "should be called fairly
 * frequently, about once per second is sufficient". */
#define MISC_INTERVAL_USEC 1000000ULL
#define DETAIL_MAX 256

struct DpsSession {
        sd_event *event;
        struct mosquitto *mosq;
        SSL_CTX *ssl_ctx;
        sd_event_source *io, *misc;
        int fd;
        bool tcp_pending;       /* non-blocking connect in flight: wait for EPOLLOUT once */
        bool connected;         /* CONNACK accepted */
        bool dispatching;       /* inside a mosquitto call that may run callbacks */
        bool dead;              /* dps_session_free() was called while dispatching */
        bool reported;          /* DISCONNECTED was reported */
        bool closing;           /* dps_session_disconnect() was called: no more io */
        int mid_subscribe;
        DpsTunnel *tunnel;      /* mqtt-ws or proxy: the outer transport, see dps-tunnel.h */
        unsigned keepalive_sec;
        dps_session_handler_t handler;
        void *userdata;
        char detail[DETAIL_MAX];
};

int dps_session_errno_from_mosq(int rc) {
        switch (rc) {
        case MOSQ_ERR_SUCCESS: return 0;
        case MOSQ_ERR_NOMEM: return -ENOMEM;
        case MOSQ_ERR_PROTOCOL: return -EPROTO;
        case MOSQ_ERR_INVAL: return -EINVAL;
        case MOSQ_ERR_NO_CONN: return -ENOTCONN;
        case MOSQ_ERR_CONN_REFUSED: return -ECONNREFUSED;
        case MOSQ_ERR_NOT_FOUND: return -ENOENT;
        case MOSQ_ERR_CONN_LOST: return -ECONNRESET;
        case MOSQ_ERR_TLS: return -EPROTO;
        case MOSQ_ERR_PAYLOAD_SIZE: return -EMSGSIZE;
        case MOSQ_ERR_NOT_SUPPORTED: return -EOPNOTSUPP;
        case MOSQ_ERR_AUTH: return -EACCES;
        case MOSQ_ERR_ACL_DENIED: return -EACCES;
        case MOSQ_ERR_ERRNO: return errno > 0 ? -errno : -EIO;
        case MOSQ_ERR_EAI: return -EHOSTUNREACH;
        case MOSQ_ERR_KEEPALIVE: return -ETIMEDOUT;
        case MOSQ_ERR_OVERSIZE_PACKET: return -EMSGSIZE;
        case MOSQ_ERR_TLS_HANDSHAKE: return -EPROTO;
        case MOSQ_ERR_MALFORMED_PACKET:
        case MOSQ_ERR_MALFORMED_UTF8: return -EBADMSG;
        case MOSQ_ERR_CONN_PENDING: return 0;
        default: return -EIO;
        }
}

static void emit(DpsSession *s, const DpsSessionEvent *ev) {
        if (s->dead || !s->handler)
                return;
        if (ev->type == DPS_SESSION_DISCONNECTED) {
                if (s->reported)
                        return;
                s->reported = true;
        }
        s->handler(s, ev, s->userdata);
}

static void on_connect(struct mosquitto *mosq, void *obj, int rc) {
        DpsSession *s = obj;

        if (rc == 0) {
                s->connected = true;
                emit(s, &(DpsSessionEvent) { .type = DPS_SESSION_CONNECTED });
        } else
                emit(s, &(DpsSessionEvent) { .type = DPS_SESSION_REFUSED, .connack = rc });
}

static void on_subscribe(struct mosquitto *mosq, void *obj, int mid, int qos_count, const int *granted) {
        DpsSession *s = obj;

        if (mid != s->mid_subscribe)
                return;
        if (qos_count < 1 || granted[0] == 0x80) {
                /* SUBACK failure code: the service refused the filter. */
                emit(s, &(DpsSessionEvent) { .type = DPS_SESSION_DISCONNECTED, .error = -EACCES,
                                             .detail = "subscription refused" });
                return;
        }
        emit(s, &(DpsSessionEvent) { .type = DPS_SESSION_SUBSCRIBED });
}

static void on_message(struct mosquitto *mosq, void *obj, const struct mosquitto_message *msg) {
        DpsSession *s = obj;
        DpsResponseTopic t = {};
        _cleanup_free_ char *body = NULL;
        size_t len = msg->payloadlen > 0 ? (size_t) msg->payloadlen : 0;

        if (!msg->topic || dps_topic_parse_response(msg->topic, &t) < 0)
                return;   /* not for us: ignore, like any client */

        body = malloc(len + 1);
        if (!body) {
                dps_response_topic_done(&t);
                return;
        }
        if (len > 0)
                memcpy(body, msg->payload, len);
        body[len] = 0;

        emit(s, &(DpsSessionEvent) { .type = DPS_SESSION_RESPONSE, .topic = &t, .body = body, .body_len = len });
        dps_response_topic_done(&t);
}

static void on_disconnect(struct mosquitto *mosq, void *obj, int rc) {
        DpsSession *s = obj;
        int r = rc == 0 ? -ECONNRESET : dps_session_errno_from_mosq(rc);

        s->connected = false;
        emit(s, &(DpsSessionEvent) { .type = DPS_SESSION_DISCONNECTED, .error = r ?: -ECONNRESET,
                                     .detail = s->detail[0] ? s->detail : NULL });
}

static void on_log(struct mosquitto *mosq, void *obj, int level, const char *str) {
        DpsSession *s = obj;

        /* Keep the last error line (e.g. "OpenSSL Error[0]: ... certificate
         * verify failed") to explain a disconnect. libmosquitto never logs
         * the password. */
        if (level & (MOSQ_LOG_ERR | MOSQ_LOG_WARNING))
                snprintf(s->detail, sizeof s->detail, "%s", str);
}

static void session_destroy(DpsSession *s) {
        /* A DISCONNECT asked for from inside a handler is still queued: give
         * it one non-blocking write ("4. DISCONNECT"), then close. Through a
         * tunnel it lands in the Unix socket, and freeing the tunnel below
         * carries it on (dps_tunnel_free()'s last pass). */
        if (s->mosq && s->closing && mosquitto_socket(s->mosq) >= 0)
                (void) mosquitto_loop_write(s->mosq, 1);
        s->io = sd_event_source_disable_unref(s->io);
        s->misc = sd_event_source_disable_unref(s->misc);
        s->tunnel = dps_tunnel_free(s->tunnel);
        if (s->mosq)
                mosquitto_destroy(s->mosq);
        SSL_CTX_free(s->ssl_ctx);
        sd_event_unref(s->event);
        free(s);
}

DpsSession *dps_session_free(DpsSession *s) {
        if (!s)
                return NULL;
        if (s->dispatching) {
                s->dead = true;
                return NULL;
        }
        session_destroy(s);
        return NULL;
}

static int io_handler(sd_event_source *es, int fd, uint32_t revents, void *userdata);

/* Follows libmosquitto's socket: it closes and replaces it on its own. */
static int sync_io(DpsSession *s) {
        int fd = s->mosq ? mosquitto_socket(s->mosq) : -1;
        uint32_t events;
        int r;

        if (s->closing)
                fd = -1;
        if (fd != s->fd) {
                s->io = sd_event_source_disable_unref(s->io);
                s->fd = fd;
        }
        if (fd < 0)
                return 0;

        events = EPOLLIN;
        if (s->tcp_pending)
                events |= EPOLLOUT;
        else if (mosquitto_want_write(s->mosq))
                events |= EPOLLOUT;

        if (!s->io) {
                r = sd_event_add_io(s->event, &s->io, fd, events, io_handler, s);
                if (r < 0)
                        return r;
                (void) sd_event_source_set_description(s->io, "dps-session-io");
                return 0;
        }
        return sd_event_source_set_io_events(s->io, events);
}

/* Runs the read/write steps, then either completes a deferred free or
 * resynchronizes the io source. Returns false when the session is gone. */
static bool after_dispatch(DpsSession *s, int rc) {
        s->dispatching = false;
        if (s->dead) {
                session_destroy(s);
                return false;
        }
        if (rc != MOSQ_ERR_SUCCESS && rc != MOSQ_ERR_CONN_PENDING) {
                /* libmosquitto calls on_disconnect for most errors; make sure
                 * the owner hears about every one exactly once. */
                s->connected = false;
                s->dispatching = true;
                emit(s, &(DpsSessionEvent) { .type = DPS_SESSION_DISCONNECTED,
                                             .error = dps_session_errno_from_mosq(rc) ?: -ECONNRESET,
                                             .detail = s->detail[0] ? s->detail : NULL });
                s->dispatching = false;
                if (s->dead) {
                        session_destroy(s);
                        return false;
                }
                if (s->mosq && mosquitto_socket(s->mosq) >= 0)
                        (void) mosquitto_disconnect(s->mosq);
        }
        (void) sync_io(s);
        return true;
}

/* A non-blocking connect that failed (refused, unreachable) shows up as
 * EPOLLERR/EPOLLHUP or a first EPOLLOUT with SO_ERROR set; libmosquitto does
 * not look at it in a TLS connect, so we do. */
static int pending_connect_error(int fd, uint32_t revents) {
        int err = 0;
        socklen_t len = sizeof err;

        if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
                return -errno;
        if (err != 0)
                return -err;
        if (revents & (EPOLLERR | EPOLLHUP))
                return -ECONNRESET;
        return 0;
}

static int io_handler(sd_event_source *es, int fd, uint32_t revents, void *userdata) {
        DpsSession *s = userdata;
        int rc = MOSQ_ERR_SUCCESS;

        if (s->tcp_pending && (revents & (EPOLLOUT | EPOLLERR | EPOLLHUP))) {
                int r = pending_connect_error(fd, revents);
                if (r < 0) {
                        s->tcp_pending = false;
                        s->io = sd_event_source_disable_unref(s->io);
                        s->connected = false;
                        s->dispatching = true;
                        emit(s, &(DpsSessionEvent) { .type = DPS_SESSION_DISCONNECTED, .error = r,
                                                     .detail = NULL });
                        (void) after_dispatch(s, MOSQ_ERR_SUCCESS);
                        return 0;
                }
        }

        s->dispatching = true;
        if (revents & EPOLLOUT) {
                s->tcp_pending = false;
                rc = mosquitto_loop_write(s->mosq, 1);
        }
        if (rc == MOSQ_ERR_SUCCESS && !s->dead && mosquitto_socket(s->mosq) >= 0) {
                /* Plain MQTT on the tunnel's Unix socket: what libmosquitto
                 * does not read now stays in the kernel and wakes us again. */
                rc = mosquitto_loop_read(s->mosq, 1);
        }
        if (rc == MOSQ_ERR_SUCCESS && !s->dead && (revents & (EPOLLHUP | EPOLLERR)) && mosquitto_socket(s->mosq) >= 0)
                rc = mosquitto_loop_read(s->mosq, 1);
        if (rc == MOSQ_ERR_SUCCESS && !s->dead && mosquitto_socket(s->mosq) >= 0 && mosquitto_want_write(s->mosq))
                rc = mosquitto_loop_write(s->mosq, 1);
        (void) after_dispatch(s, rc);
        return 0;
}

static int misc_handler(sd_event_source *es, uint64_t usec, void *userdata) {
        DpsSession *s = userdata;
        int rc;

        (void) sd_event_source_set_time(es, usec + MISC_INTERVAL_USEC);
        (void) sd_event_source_set_enabled(es, SD_EVENT_ON);
        if (!s->mosq || s->closing || mosquitto_socket(s->mosq) < 0)
                return 0;
        s->dispatching = true;
        rc = mosquitto_loop_misc(s->mosq);
        if (rc == MOSQ_ERR_NO_CONN)
                rc = MOSQ_ERR_CONN_LOST;
        (void) after_dispatch(s, rc);
        return 0;
}

int dps_session_new(sd_event *event, SSL_CTX *ssl_ctx, dps_session_handler_t handler, void *userdata,
                    DpsSession **ret) {
        DpsSession *s;
        int rc;

        if (!event || !ssl_ctx || !ret)
                return -EINVAL;

        /* Idempotent; initializes libmosquitto's OpenSSL index. */
        mosquitto_lib_init();

        s = calloc(1, sizeof *s);
        if (!s)
                return -ENOMEM;
        s->fd = -1;
        s->mid_subscribe = -1;
        s->event = sd_event_ref(event);
        s->handler = handler;
        s->userdata = userdata;
        SSL_CTX_up_ref(ssl_ctx);
        s->ssl_ctx = ssl_ctx;

        /* clean session = true: "1 is recommended". The client id is set at
         * connect time through mosquitto_reinitialise(). */
        s->mosq = mosquitto_new(NULL, true, s);
        if (!s->mosq) {
                rc = -errno;
                session_destroy(s);
                return rc == 0 ? -ENOMEM : rc;
        }
        *ret = s;
        return 0;
}

static int session_start_mqtt(DpsSession *s, const char *host, uint16_t port, unsigned keepalive_sec);

static void on_tunnel(DpsTunnel *t, DpsTunnelEvent event, int error, const char *message, void *userdata) {
        DpsSession *s = userdata;
        int r;

        switch (event) {
        case DPS_TUNNEL_READY:
                r = session_start_mqtt(s, dps_tunnel_socket_path(t), 0, s->keepalive_sec);
                if (r >= 0)
                        return;
                error = r;
                message = "cannot connect the MQTT client to the tunnel";
                break;
        case DPS_TUNNEL_ERROR:
                break;
        case DPS_TUNNEL_CLOSED:
        case _DPS_TUNNEL_EVENT_MAX:
                /* libmosquitto sees its socket end and reports that */
                return;
        }

        /* e.g. "proxy refused CONNECT: 407 Proxy Authentication Required
         * (proxy http://...)": never holds credentials */
        snprintf(s->detail, sizeof s->detail, "%s", message ?: "the tunnel failed");
        s->connected = false;
        s->dispatching = true;
        emit(s, &(DpsSessionEvent) { .type = DPS_SESSION_DISCONNECTED, .error = error < 0 ? error : -EIO,
                                     .detail = s->detail });
        s->dispatching = false;
        if (s->dead)
                session_destroy(s);     /* frees the tunnel: allowed from its handler */
}

int dps_session_connect(DpsSession *s, const DpsSessionParams *p) {
        int rc, r;

        if (!s || !p || !p->host || !p->client_id || !p->username || s->dispatching)
                return -EINVAL;

        rc = mosquitto_reinitialise(s->mosq, p->client_id, true, s);
        if (rc != MOSQ_ERR_SUCCESS)
                return dps_session_errno_from_mosq(rc);

        mosquitto_connect_callback_set(s->mosq, on_connect);
        mosquitto_subscribe_callback_set(s->mosq, on_subscribe);
        mosquitto_message_callback_set(s->mosq, on_message);
        mosquitto_disconnect_callback_set(s->mosq, on_disconnect);
        mosquitto_log_callback_set(s->mosq, on_log);

        /* "MQTT 3.1.1 (protocol level 4)" */
        rc = mosquitto_int_option(s->mosq, MOSQ_OPT_PROTOCOL_VERSION, MQTT_PROTOCOL_V311);
        if (rc == MOSQ_ERR_SUCCESS)
                rc = mosquitto_username_pw_set(s->mosq, p->username, p->password);
        if (rc != MOSQ_ERR_SUCCESS)
                return dps_session_errno_from_mosq(rc);

        s->detail[0] = 0;
        s->closing = false;
        s->connected = false;
        s->reported = false;
        s->tunnel = dps_tunnel_free(s->tunnel);

        /* Every transport goes through the tunnel, plain "mqtt" included:
         * its name lookup does not block the loop (libmosquitto 2.0's
         * mosquitto_connect_async() calls getaddrinfo() inline), it tries
         * every address of the endpoint in turn (libmosquitto's non-blocking
         * connect tries only the first, so a host whose IPv6 route is broken
         * would never be reached), and TLS has one implementation. */
        DpsTunnelConfig tc = DPS_TUNNEL_CONFIG_INIT;

        tc.host = p->host;
        tc.port = p->port;
        tc.proxy = p->proxy;
        tc.ssl_ctx = s->ssl_ctx;
        tc.websocket = p->websocket;
        s->keepalive_sec = p->keepalive_sec;
        r = dps_tunnel_new(s->event, &tc, on_tunnel, s, &s->tunnel);
        if (r < 0)
                return r;
        /* libmosquitto connects once the tunnel is up (on_tunnel) */
        return dps_tunnel_start(s->tunnel);
}

/* Starts libmosquitto's non-blocking connect to the tunnel's Unix socket
 * (host = path, port = 0). */
static int session_start_mqtt(DpsSession *s, const char *host, uint16_t port, unsigned keepalive_sec) {
        int rc, r;

        /* A Unix socket path: no name lookup, no TLS (both are the tunnel's). */
        rc = mosquitto_connect_async(s->mosq, host, port, (int) (keepalive_sec ?: 60));
        if (rc != MOSQ_ERR_SUCCESS && rc != MOSQ_ERR_CONN_PENDING) {
                r = dps_session_errno_from_mosq(rc);
                return r ?: -EIO;
        }
        s->tcp_pending = true;

        r = sync_io(s);
        if (r < 0)
                return r;
        if (!s->misc) {
                uint64_t now;
                r = sd_event_now(s->event, CLOCK_MONOTONIC, &now);
                if (r < 0)
                        return r;
                r = sd_event_add_time(s->event, &s->misc, CLOCK_MONOTONIC, now + MISC_INTERVAL_USEC, 0,
                                      misc_handler, s);
                if (r < 0)
                        return r;
                (void) sd_event_source_set_enabled(s->misc, SD_EVENT_ON);
        }
        return 0;
}

int dps_session_subscribe(DpsSession *s) {
        int mid = 0, rc;

        if (!s || !s->connected)
                return -ENOTCONN;
        /* "Subscriptions at QoS 2 are granted QoS 1; DPS delivers at QoS 1." */
        rc = mosquitto_subscribe(s->mosq, &mid, DPS_SUBSCRIBE_TOPIC, 1);
        if (rc != MOSQ_ERR_SUCCESS)
                return dps_session_errno_from_mosq(rc);
        s->mid_subscribe = mid;
        if (!s->dispatching)
                (void) sync_io(s);
        return 0;
}

int dps_session_publish(DpsSession *s, const char *topic, const char *body) {
        size_t len = body ? strlen(body) : 0;
        int rc;

        if (!s || !s->connected)
                return -ENOTCONN;
        if (len > DPS_MAX_MESSAGE_SIZE)
                return -EMSGSIZE;
        rc = mosquitto_publish(s->mosq, NULL, topic, (int) len, body, 0, false);
        if (rc != MOSQ_ERR_SUCCESS)
                return dps_session_errno_from_mosq(rc);
        if (!s->dispatching)
                (void) sync_io(s);
        return 0;
}

void dps_session_disconnect(DpsSession *s) {
        if (!s || !s->mosq)
                return;
        s->reported = true;   /* the owner asked: no DISCONNECTED event */
        s->closing = true;
        s->connected = false;
        if (mosquitto_socket(s->mosq) >= 0) {
                (void) mosquitto_disconnect(s->mosq);
                /* Flush the DISCONNECT if the socket takes it right away. */
                if (!s->dispatching)
                        (void) mosquitto_loop_write(s->mosq, 1);
        }
        s->io = sd_event_source_disable_unref(s->io);
        s->fd = -1;
        s->misc = sd_event_source_disable_unref(s->misc);
        /* The DISCONNECT is written (not dispatching): the tunnel's last pass
         * carries it. Otherwise session_destroy() writes it, then frees. */
        if (!s->dispatching)
                s->tunnel = dps_tunnel_free(s->tunnel);
}

bool dps_session_is_connected(DpsSession *s) {
        return s && s->connected;
}
