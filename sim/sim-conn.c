/* SPDX-License-Identifier: MIT */
/* sim-conn.c: one dps-sim client connection: TLS, optional WebSocket, MQTT session, keep-alive */
#include <errno.h>
#include <malloc.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <time.h>

#include <json-c/json.h>
#include <openssl/crypto.h>
#include <openssl/err.h>

#include "dps-macro.h"
#include "dps-util.h"
#include "sim-conn.h"
#include "sim-mqtt.h"
#include "sim-ws.h"

/* Limits that keep one client from costing the others. */
#define CONN_HANDSHAKE_USEC     (10 * 1000000ULL)       /* TLS + upgrade + CONNECT */
#define CONN_LINGER_USEC        (2 * 1000000ULL)        /* flushing before a close */
#define CONN_MAX_OUT            (4u * 1024u * 1024u)    /* unsent bytes */
#define CONN_READ_CHUNK         16384
#define CONN_READ_BUDGET        (256u * 1024u)          /* bytes per wakeup, then let others run */
#define CONN_PACKET_BUDGET      256u                    /* packets per wakeup, likewise */

/* Edge-triggered: with a thousand busy sockets, level-triggered epoll
 * reports every unserved one again on each sd-event iteration (one source
 * dispatched per iteration), which costs O(n) per event. Every handler
 * below reads and writes until OpenSSL says WANT_READ/WANT_WRITE. */
#define CONN_EPOLL_BASE         (EPOLLIN | EPOLLET)

static const char response_prefix[] = "$dps/registrations/res/";
static const char register_prefix[] = "$dps/registrations/PUT/iotdps-register/?";
static const char poll_prefix[] = "$dps/registrations/GET/iotdps-get-operationstatus/?";

typedef struct Pending {
        struct Pending *next;
        SimConn *conn;
        sd_event_source *timer;
        char *rid;
        SimReply reply;
} Pending;

typedef enum ConnPhase {
        CONN_TLS,               /* TLS handshake */
        CONN_UPGRADE,           /* WebSocket HTTP upgrade */
        CONN_WAIT_CONNECT,      /* MQTT, before CONNECT */
        CONN_SESSION,           /* MQTT, after an accepted CONNECT */
        _CONN_PHASE_MAX,
} ConnPhase;

struct SimConn {
        SimConn *prev, *next;
        SimConnHub *hub;
        unsigned id;
        int fd;
        SSL *ssl;
        SimWs *ws;
        ConnPhase phase;
        sd_event_source *io, *timer, *resume;
        uint32_t io_events;
        SimBuf in;                      /* MQTT bytes received */
        SimBuf out;                     /* bytes for SSL_write */
        uint64_t deadline;              /* CLOCK_MONOTONIC usec: keep-alive, handshake or linger */
        uint64_t armed;                 /* when the timer fires; 0: not armed */
        unsigned packet_budget;         /* packets left in this wakeup */
        SimBuf scratch;                 /* small packets being built */
        unsigned keep_alive;            /* seconds, 0: none */
        const char *closing;            /* close after the output drained */
        bool lingering;                 /* the linger deadline is armed */
        SimClient client;
        bool connected, subscribed;
        uint16_t next_packet_id;
        unsigned packets;               /* received, for drop after-packets */
        Pending *pending;
};

static void x509_freep(X509 **x) {
        X509_free(*x);
}

static uint64_t now_mono(void) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (uint64_t) ts.tv_sec * 1000000u + (uint64_t) ts.tv_nsec / 1000u;
}

static SimEvents *events(SimConn *c) {
        return c->hub->events;
}

static void log_event(SimConn *c, const char *event, json_object *extra) {
        sim_events_log(events(c), c->id, event, extra);
}

static void log_fault(SimConn *c, const char *kind) {
        json_object *o = json_object_new_object();
        json_object_object_add(o, "kind", json_object_new_string(kind));
        if (c->client.registration_id)
                json_object_object_add(o, "registrationId", json_object_new_string(c->client.registration_id));
        events(c)->counters.faults++;
        log_event(c, "fault", o);
}

static void pending_free(Pending *p) {
        sd_event_source_disable_unref(p->timer);
        free(p->rid);
        sim_reply_done(&p->reply);
        free(p);
}

void sim_conn_free(SimConn *c, const char *reason) {
        if (!c)
                return;
        json_object *o = json_object_new_object();
        json_object_object_add(o, "reason", json_object_new_string(reason ? reason : "unknown"));
        log_event(c, "close", o);
        SimCounters *k = &events(c)->counters;
        k->closes++;
        k->connections--;

        if (c->prev)
                c->prev->next = c->next;
        else
                c->hub->conns = c->next;
        if (c->next)
                c->next->prev = c->prev;
        while (c->pending) {
                Pending *p = c->pending;
                c->pending = p->next;
                pending_free(p);
        }
        sd_event_source_disable_unref(c->io);
        sd_event_source_disable_unref(c->timer);
        sd_event_source_disable_unref(c->resume);
        if (c->ssl) {
                /* Best effort close_notify; never wait for the peer's. */
                if (c->phase != CONN_TLS)
                        SSL_shutdown(c->ssl);
                SSL_free(c->ssl);
        }
        if (c->fd >= 0)
                close(c->fd);
        sim_ws_free(c->ws);
        sim_buf_done(&c->in);
        sim_buf_done(&c->out);
        sim_buf_done(&c->scratch);
        sim_client_done(&c->client);
        free(c);
        /* A burst of connections is over: give its buffers back to the
         * system, so a long-running simulator does not keep its peak. */
        if (k->connections == 0)
                malloc_trim(0);
}

/* ---- output ------------------------------------------------------------- */

static void update_io(SimConn *c) {
        uint32_t want = CONN_EPOLL_BASE | (sim_buf_size(&c->out) > 0 ? EPOLLOUT : 0);
        if (want != c->io_events) {
                sd_event_source_set_io_events(c->io, want);
                c->io_events = want;
        }
}

/* Writes what TLS takes now. <0: the connection is broken. */
static int flush(SimConn *c) {
        while (sim_buf_size(&c->out) > 0) {
                size_t n = sim_buf_size(&c->out);
                ERR_clear_error();
                int k = SSL_write(c->ssl, sim_buf_head(&c->out), (int) (n > 65536 ? 65536 : n));
                if (k > 0) {
                        sim_buf_consume(&c->out, (size_t) k);
                        continue;
                }
                int e = SSL_get_error(c->ssl, k);
                if (e == SSL_ERROR_WANT_WRITE || e == SSL_ERROR_WANT_READ)
                        break;
                return -EPIPE;
        }
        update_io(c);
        return 0;
}

/* Queues MQTT bytes, framed for WebSocket when needed. */
static int send_bytes(SimConn *c, const SimBuf *b) {
        int r;
        if (c->ws)
                r = sim_ws_send(c->ws, sim_buf_head(b), sim_buf_size(b), &c->out);
        else
                r = sim_buf_put(&c->out, sim_buf_head(b), sim_buf_size(b));
        if (r < 0)
                return r;
        if (sim_buf_size(&c->out) > CONN_MAX_OUT)
                return -ENOBUFS;        /* a client that does not read */
        return 0;
}

/* Moves the deadline. The timer is only re-armed when it must fire sooner:
 * when it fires early it finds the later deadline and re-arms then, so a
 * stream of packets costs no timer queue work. */
static void deadline_set(SimConn *c, uint64_t t) {
        c->deadline = t;
        if (c->armed && c->armed <= t)
                return;
        sd_event_source_set_time(c->timer, t);
        sd_event_source_set_enabled(c->timer, SD_EVENT_ONESHOT);
        c->armed = t;
}

static void close_later(SimConn *c, const char *reason) {
        if (!c->closing)
                c->closing = reason;
        if (c->lingering)
                return;
        c->lingering = true;
        /* The linger deadline may be later than a keep-alive one: force it. */
        c->armed = 0;
        deadline_set(c, now_mono() + CONN_LINGER_USEC);
}

/* ---- responses ---------------------------------------------------------- */

static void send_reply(SimConn *c, const char *rid, SimReply *rep) {
        SimCounters *k = &events(c)->counters;
        json_object *o = json_object_new_object();
        json_object_object_add(o, "registrationId", json_object_new_string(c->client.registration_id));
        json_object_object_add(o, "rid", json_object_new_string(rid));
        json_object_object_add(o, "status", json_object_new_int(rep->status));
        json_object_object_add(o, "retryAfter", rep->retry_after >= 0 ? json_object_new_int(rep->retry_after) : NULL);
        json_object_object_add(o, "bodyStatus", rep->body_status ? json_object_new_string(rep->body_status) : NULL);
        json_object_object_add(o, "bodyLength", json_object_new_int64((int64_t) rep->body_len));
        if (!c->subscribed)
                json_object_object_add(o, "delivered", json_object_new_boolean(false));
        log_event(c, "response", o);
        k->responses++;
        if (rep->status < 300)
                k->responses_2xx++;
        else if (rep->status < 500)
                k->responses_4xx++;
        else
                k->responses_5xx++;
        if (rep->body_status && streq(rep->body_status, "assigned"))
                k->assigned++;
        /* MQTT: only subscribers get messages. */
        if (!c->subscribed)
                return;

        /* "$dps/registrations/res/{status}/?$rid={rid}[&retry-after={s}]", $rid first */
        _cleanup_free_ char *topic = NULL;
        int n = rep->retry_after >= 0 ?
                asprintf(&topic, "%s%d/?$rid=%s&retry-after=%d", response_prefix, rep->status, rid, rep->retry_after) :
                asprintf(&topic, "%s%d/?$rid=%s", response_prefix, rep->status, rid);
        if (n < 0) {
                close_later(c, "out-of-memory");
                return;
        }
        SimBuf b = {};
        if (++c->next_packet_id == 0)
                c->next_packet_id = 1;
        int r = sim_mqtt_put_publish(&b, topic, 1, c->next_packet_id, rep->body, rep->body_len);
        if (r >= 0)
                r = send_bytes(c, &b);
        sim_buf_done(&b);
        if (r < 0)
                close_later(c, r == -ENOBUFS ? "slow-client" : r == -ENOMEM ? "out-of-memory" : "reply-too-large");
}

static int pending_fire(sd_event_source *s, uint64_t usec, void *userdata) {
        Pending *p = userdata;
        SimConn *c = p->conn;
        for (Pending **pp = &c->pending; *pp; pp = &(*pp)->next)
                if (*pp == p) {
                        *pp = p->next;
                        break;
                }
        send_reply(c, p->rid, &p->reply);
        pending_free(p);
        if (flush(c) < 0)
                sim_conn_free(c, "write-error");
        else if (c->closing && sim_buf_size(&c->out) == 0)
                sim_conn_free(c, c->closing);
        return 0;
}

static int handle_reply(SimConn *c, const char *rid, SimReply *rep) {
        SimConnHub *s = c->hub;
        if (rep->throttle) {
                json_object *o = json_object_new_object();
                json_object_object_add(o, "kind", json_object_new_string(rep->throttle));
                json_object_object_add(o, "registrationId", json_object_new_string(c->client.registration_id));
                events(c)->counters.throttled++;
                log_event(c, "throttle", o);
        }
        if (rep->fault)
                log_fault(c, rep->fault);
        if (sim_dps_state_dirty(s->dps) && s->state_changed)
                s->state_changed(s->userdata);
        if (rep->silent)
                return 0;
        if (rep->delay_ms <= 0) {
                send_reply(c, rid, rep);
                return 0;
        }
        Pending *p = calloc(1, sizeof *p);
        if (!p)
                return -ENOMEM;
        p->conn = c;
        p->rid = strdup(rid);
        p->reply = *rep;
        *rep = (SimReply) { .retry_after = -1 };
        int r = p->rid ? sd_event_add_time_relative(s->event, &p->timer, CLOCK_MONOTONIC,
                                                    (uint64_t) p->reply.delay_ms * 1000u, 1000, pending_fire, p) : -ENOMEM;
        if (r < 0) {
                pending_free(p);
                return r;
        }
        p->next = c->pending;
        c->pending = p;
        return 0;
}

/* ---- MQTT packets ------------------------------------------------------- */

/* Finds key in "k=v&k=v" and returns its raw value (echoed as received). */
static char *query_raw(const char *query, const char *key) {
        size_t kl = strlen(key);
        for (const char *p = query; p && *p;) {
                size_t n = strcspn(p, "&");
                if (n > kl && strncmp(p, key, kl) == 0 && p[kl] == '=')
                        return strndup(p + kl + 1, n - kl - 1);
                if (n == kl && strncmp(p, key, kl) == 0)
                        return strdup("");
                p += n;
                if (*p)
                        p++;
        }
        return NULL;
}

static int on_connect(SimConn *c, const SimMqttPacket *p) {
        _cleanup_(sim_mqtt_connect_done) SimMqttConnect m = {};
        SimCounters *k = &events(c)->counters;
        SimBuf b = {};
        uint8_t code = 0;
        int r;

        r = sim_mqtt_parse_connect(p, &m);
        if (r == -EPROTONOSUPPORT)
                code = SIM_CONNACK_BAD_PROTOCOL;
        else if (r < 0)
                return r;
        else {
                _cleanup_(x509_freep) X509 *cert = SSL_get1_peer_certificate(c->ssl);
                SimConnectRequest req = {
                        .client_id = m.client_id,
                        .username = m.username,
                        .password = m.password,
                        .cert = cert,
                        .chain = SSL_get_peer_cert_chain(c->ssl),
                };
                if (m.password && strlen(m.password) != m.password_len)
                        req.password = "";      /* binary: no SAS token */
                r = sim_dps_connect(c->hub->dps, &req, &c->client, &code);
                if (r < 0)
                        return r;
        }

        json_object *o = json_object_new_object();
        json_object_object_add(o, "clientId", m.client_id ? json_object_new_string(m.client_id) : NULL);
        json_object_object_add(o, "username", m.username ? json_object_new_string(m.username) : NULL);
        json_object_object_add(o, "cleanSession", json_object_new_boolean(m.clean_session));
        json_object_object_add(o, "keepAlive", json_object_new_int(m.keep_alive));
        json_object_object_add(o, "auth", json_object_new_string(c->client.auth ? c->client.auth : "none"));
        json_object_object_add(o, "returnCode", json_object_new_int(code));
        if (code == 0) {
                json_object_object_add(o, "authorized", json_object_new_boolean(c->client.authorized));
                if (c->client.reason)
                        json_object_object_add(o, "reason", json_object_new_string(c->client.reason));
        } else if (c->client.reason)
                json_object_object_add(o, "reason", json_object_new_string(c->client.reason));
        log_event(c, "connect", o);
        k->connects++;

        /* DPS keeps no session: session present is always 0. */
        r = sim_mqtt_put_connack(&b, false, code);
        if (r >= 0)
                r = send_bytes(c, &b);
        sim_buf_done(&b);
        if (r < 0)
                return r;
        if (code != 0) {
                k->connacks_refused++;
                close_later(c, "connect-refused");
                return 0;
        }
        c->phase = CONN_SESSION;
        c->connected = true;
        c->keep_alive = m.keep_alive;
        if (c->client.faults.drop == SIM_DROP_AFTER_CONNECT) {
                log_fault(c, "drop-after-connect");
                close_later(c, "fault");
        }
        return 0;
}

static int on_subscribe(SimConn *c, const SimMqttPacket *p, bool unsubscribe) {
        _cleanup_(sim_mqtt_subscribe_done) SimMqttSubscribe m = {};
        uint8_t codes[SIM_MQTT_MAX_FILTERS];
        SimBuf b = {};
        int r = sim_mqtt_parse_subscribe(p, unsubscribe, &m);
        if (r < 0)
                return r;
        for (size_t i = 0; i < m.n; i++) {
                bool ours = streq(m.filters[i], DPS_SUBSCRIBE_TOPIC);
                if (unsubscribe) {
                        if (ours)
                                c->subscribed = false;
                        continue;
                }
                /* Only $dps/registrations/res/#; QoS 2 is granted as 1. */
                codes[i] = ours ? (m.qos[i] > 1 ? 1 : m.qos[i]) : 0x80;
                if (ours)
                        c->subscribed = true;
                json_object *o = json_object_new_object();
                json_object_object_add(o, "topic", json_object_new_string(m.filters[i]));
                json_object_object_add(o, "grantedQos", json_object_new_int(codes[i]));
                log_event(c, "subscribe", o);
                events(c)->counters.subscribes++;
        }
        r = unsubscribe ? sim_mqtt_put_unsuback(&b, m.packet_id) : sim_mqtt_put_suback(&b, m.packet_id, codes, m.n);
        if (r >= 0)
                r = send_bytes(c, &b);
        sim_buf_done(&b);
        if (r < 0)
                return r;
        if (!unsubscribe && c->client.faults.drop == SIM_DROP_AFTER_SUBSCRIBE) {
                log_fault(c, "drop-after-subscribe");
                close_later(c, "fault");
        }
        return 0;
}

static int on_publish(SimConn *c, const SimMqttPacket *p) {
        _cleanup_(sim_mqtt_publish_done) SimMqttPublish m = {};
        _cleanup_(sim_reply_done) SimReply rep = { .retry_after = -1 };
        _cleanup_free_ char *rid = NULL, *op = NULL;
        SimBuf *b = &c->scratch;
        bool is_register;
        int r;

        r = sim_mqtt_parse_publish(p, &m);
        if (r < 0)
                return r;
        if (m.qos == 2) {
                c->closing = "qos2-unsupported";        /* DPS does not speak QoS 2 */
                return -EPROTO;
        }
        if (m.qos == 1) {
                sim_buf_clear(b);
                r = sim_mqtt_put_puback(b, m.packet_id);
                if (r >= 0)
                        r = send_bytes(c, b);
                if (r < 0)
                        return r;
        }

        const char *query;
        if (strncmp(m.topic, register_prefix, strlen(register_prefix)) == 0) {
                is_register = true;
                query = m.topic + strlen(register_prefix);
        } else if (strncmp(m.topic, poll_prefix, strlen(poll_prefix)) == 0) {
                is_register = false;
                query = m.topic + strlen(poll_prefix);
        } else {
                c->closing = "bad-topic";
                return -EPROTO;
        }
        rid = query_raw(query, "$rid");
        if (!rid) {
                c->closing = "no-rid";
                return -EPROTO;
        }

        json_object *o = json_object_new_object();
        json_object_object_add(o, "registrationId", json_object_new_string(c->client.registration_id));
        json_object_object_add(o, "rid", json_object_new_string(rid));
        if (is_register) {
                json_object_object_add(o, "bodyLength", json_object_new_int64((int64_t) m.payload_len));
                log_event(c, "register", o);
                events(c)->counters.registers++;
                if (c->client.faults.drop == SIM_DROP_AFTER_REGISTER) {
                        log_fault(c, "drop-after-register");
                        c->closing = "fault";
                        return -ECONNABORTED;
                }
                r = sim_dps_register(c->hub->dps, &c->client, m.payload, m.payload_len, &rep);
        } else {
                op = query_raw(query, "operationId");
                json_object_object_add(o, "operationId", op ? json_object_new_string(op) : NULL);
                log_event(c, "poll", o);
                events(c)->counters.polls++;
                r = sim_dps_poll(c->hub->dps, &c->client, op, &rep);
        }
        if (r < 0)
                return r;
        return handle_reply(c, rid, &rep);
}

static int on_packet(SimConn *c, const SimMqttPacket *p) {
        SimBuf *b = &c->scratch;
        uint16_t id;
        int r = -EPROTO;

        c->packets++;
        if (c->phase == CONN_WAIT_CONNECT && p->type != SIM_MQTT_CONNECT) {
                c->closing = "no-connect";      /* section 3.1: CONNECT comes first */
                return -EPROTO;
        }
        switch ((SimMqttType) p->type) {
        case SIM_MQTT_CONNECT:
                if (c->phase != CONN_WAIT_CONNECT) {
                        c->closing = "second-connect";  /* section 3.1.0-2 */
                        return -EPROTO;
                }
                r = on_connect(c, p);
                break;
        case SIM_MQTT_SUBSCRIBE:
                r = on_subscribe(c, p, false);
                break;
        case SIM_MQTT_UNSUBSCRIBE:
                r = on_subscribe(c, p, true);
                break;
        case SIM_MQTT_PUBLISH:
                r = on_publish(c, p);
                break;
        case SIM_MQTT_PUBACK:
                /* Acknowledges one of our QoS 1 responses: nothing to resend. */
                r = sim_mqtt_parse_packet_id(p, &id);
                break;
        case SIM_MQTT_PINGREQ:
                if (p->body_len != 0)
                        return -EBADMSG;
                sim_buf_clear(b);
                r = sim_mqtt_put_pingresp(b);
                if (r >= 0)
                        r = send_bytes(c, b);
                break;
        case SIM_MQTT_DISCONNECT:
                if (p->body_len != 0)
                        return -EBADMSG;
                c->closing = "disconnect";
                return -ECONNABORTED;
        case SIM_MQTT_CONNACK:
        case SIM_MQTT_PUBREC:
        case SIM_MQTT_PUBREL:
        case SIM_MQTT_PUBCOMP:
        case SIM_MQTT_SUBACK:
        case SIM_MQTT_UNSUBACK:
        case SIM_MQTT_PINGRESP:
                c->closing = "unexpected-packet";       /* server-to-client packets, or QoS 2 flow */
                return -EPROTO;
        }
        if (r < 0)
                return r;
        if (c->client.faults.drop == SIM_DROP_AFTER_PACKETS && c->client.faults.drop_after_packets > 0 &&
            c->packets >= (unsigned) c->client.faults.drop_after_packets && !c->closing) {
                log_fault(c, "drop-after-packets");
                c->closing = "fault";
                return -ECONNABORTED;
        }
        return 0;
}

/* Handles every whole packet in c->in. */
static int process_mqtt(SimConn *c) {
        while (!c->closing && c->packet_budget > 0) {
                SimMqttPacket p;
                int r = sim_mqtt_frame(sim_buf_head(&c->in), sim_buf_size(&c->in), SIM_MQTT_MAX_PACKET, &p);
                if (r == 0)
                        break;
                if (r < 0) {
                        c->closing = r == -EMSGSIZE ? "packet-too-large" : "malformed";
                        events(c)->counters.malformed++;
                        return r;
                }
                r = on_packet(c, &p);
                if (r < 0) {
                        if (r == -EBADMSG) {
                                c->closing = "malformed";
                                events(c)->counters.malformed++;
                        }
                        return r;
                }
                /* The CONNECT carried the password (a SAS token): wipe it. */
                if (p.type == SIM_MQTT_CONNECT)
                        OPENSSL_cleanse((void *) sim_buf_head(&c->in), p.total);
                sim_buf_consume(&c->in, p.total);
                c->packet_budget--;
                /* Any packet restarts the keep-alive clock (section 3.1.2.10). */
                if (c->keep_alive && !c->closing)
                        deadline_set(c, now_mono() + (uint64_t) c->keep_alive * 1500000u);
        }
        return 0;
}

/* ---- I/O ---------------------------------------------------------------- */

static int after_handshake(SimConn *c) {
        c->phase = c->ws ? CONN_UPGRADE : CONN_WAIT_CONNECT;
        return 0;
}

static int on_io(sd_event_source *s, int fd, uint32_t revents, void *userdata);

static int on_resume(sd_event_source *s, void *userdata) {
        SimConn *c = userdata;
        return on_io(NULL, c->fd, EPOLLIN, c);
}

/* Reads until OpenSSL wants more from the socket (edge-triggered), or until
 * the budget is spent: then a defer source resumes after the others ran. */
static int do_read(SimConn *c) {
        uint8_t buf[CONN_READ_CHUNK];
        size_t budget = CONN_READ_BUDGET;
        int r;

        /* Packets left over from the last turn first. */
        c->packet_budget = CONN_PACKET_BUDGET;
        if (c->phase == CONN_WAIT_CONNECT || c->phase == CONN_SESSION) {
                r = process_mqtt(c);
                if (r < 0)
                        return r;
                if (c->closing)
                        close_later(c, c->closing);
        }
        for (;;) {
                if (budget == 0 || c->packet_budget == 0) {
                        r = c->resume ? sd_event_source_set_enabled(c->resume, SD_EVENT_ONESHOT)
                                          : sd_event_add_defer(c->hub->event, &c->resume, on_resume, c);
                        if (r >= 0 && c->resume)
                                r = sd_event_source_set_enabled(c->resume, SD_EVENT_ONESHOT);
                        return r < 0 ? r : 0;
                }
                ERR_clear_error();
                int k = SSL_read(c->ssl, buf, sizeof buf);
                if (k <= 0) {
                        int e = SSL_get_error(c->ssl, k);
                        if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE)
                                return 0;
                        if (!c->closing)
                                c->closing = e == SSL_ERROR_ZERO_RETURN || e == SSL_ERROR_SYSCALL ? "peer-closed" : "tls-error";
                        return -ECONNRESET;
                }
                budget = (size_t) k >= budget ? 0 : budget - (size_t) k;
                if (c->closing)
                        continue;       /* draining; ignore */
                if (c->ws) {
                        bool was = sim_ws_upgraded(c->ws);
                        r = sim_ws_feed(c->ws, buf, (size_t) k, &c->in, &c->out);
                        if (!was && sim_ws_upgraded(c->ws))
                                c->phase = CONN_WAIT_CONNECT;
                        if (r == -EPROTO) {
                                close_later(c, "websocket-refused");
                                return 0;
                        }
                        if (r == -ECONNRESET) {
                                (void) process_mqtt(c);
                                close_later(c, c->closing ? c->closing : "websocket-close");
                                return 0;
                        }
                        if (r < 0)
                                return r;
                } else {
                        r = sim_buf_put(&c->in, buf, (size_t) k);
                        if (r < 0)
                                return r;
                }
                r = process_mqtt(c);
                if (r < 0)
                        return r;
                /* Close once what we queued (e.g. a refusing CONNACK) is out. */
                if (c->closing)
                        close_later(c, c->closing);
        }
}

static int on_io(sd_event_source *s, int fd, uint32_t revents, void *userdata) {
        SimConn *c = userdata;
        int r;

        if (c->phase == CONN_TLS) {
                ERR_clear_error();
                int k = SSL_do_handshake(c->ssl);
                if (k != 1) {
                        int e = SSL_get_error(c->ssl, k);
                        if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
                                uint32_t want = CONN_EPOLL_BASE | (e == SSL_ERROR_WANT_WRITE ? EPOLLOUT : 0);
                                if (want != c->io_events) {
                                        sd_event_source_set_io_events(c->io, want);
                                        c->io_events = want;
                                }
                                return 0;
                        }
                        sim_conn_free(c, "tls-handshake-failed");
                        return 0;
                }
                after_handshake(c);
        }

        r = do_read(c);
        if (r < 0) {
                sim_conn_free(c, c->closing ? c->closing : r == -ENOBUFS ? "slow-client" : "error");
                return 0;
        }
        if (flush(c) < 0) {
                sim_conn_free(c, c->closing ? c->closing : "write-error");
                return 0;
        }
        if (c->closing && sim_buf_size(&c->out) == 0)
                sim_conn_free(c, c->closing);
        return 0;
}

static int on_timer(sd_event_source *s, uint64_t usec, void *userdata) {
        SimConn *c = userdata;
        uint64_t now = now_mono();
        c->armed = 0;
        if (now + 1000 < c->deadline) {         /* moved by later traffic */
                deadline_set(c, c->deadline);
                return 0;
        }
        if (c->closing)
                sim_conn_free(c, c->closing);
        else if (c->phase != CONN_SESSION)
                sim_conn_free(c, "handshake-timeout");
        else if (c->keep_alive)
                sim_conn_free(c, "keep-alive-timeout");        /* section 3.1.2.10: 1.5 x */
        else {
                sd_event_source_set_enabled(s, SD_EVENT_OFF);
        }
        return 0;
}

int sim_conn_new(SimConnHub *s, int fd, bool websocket, const char *peer, SimConn **ret) {
        SimConn *c = calloc(1, sizeof *c);
        int r;
        if (!c) {
                close(fd);
                return -ENOMEM;
        }
        c->hub = s;
        c->fd = fd;
        c->id = ++s->next_conn_id;
        c->phase = CONN_TLS;
        c->next = s->conns;
        if (s->conns)
                s->conns->prev = c;
        s->conns = c;
        SimCounters *k = &events(c)->counters;
        k->accepts++;
        if (++k->connections > k->max_connections)
                k->max_connections = k->connections;

        json_object *o = json_object_new_object();
        json_object_object_add(o, "listener", json_object_new_string(websocket ? "websocket" : "mqtt"));
        json_object_object_add(o, "peer", json_object_new_string(peer));
        log_event(c, "accept", o);

        c->ssl = SSL_new(s->ssl_ctx);
        if (!c->ssl || SSL_set_fd(c->ssl, fd) != 1) {
                sim_conn_free(c, "out-of-memory");
                return -ENOMEM;
        }
        SSL_set_accept_state(c->ssl);
        SSL_set_mode(c->ssl, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER | SSL_MODE_RELEASE_BUFFERS);
        if (websocket && (r = sim_ws_new(&c->ws)) < 0) {
                sim_conn_free(c, "out-of-memory");
                return r;
        }
        c->io_events = CONN_EPOLL_BASE;
        r = sd_event_add_io(s->event, &c->io, fd, CONN_EPOLL_BASE, on_io, c);
        if (r < 0) {
                sim_conn_free(c, "out-of-memory");
                return r;
        }
        c->deadline = c->armed = now_mono() + CONN_HANDSHAKE_USEC;
        r = sd_event_add_time(s->event, &c->timer, CLOCK_MONOTONIC, c->deadline, 10000, on_timer, c);
        if (r < 0) {
                sim_conn_free(c, "out-of-memory");
                return r;
        }
        if (ret)
                *ret = c;
        return 0;
}
