/* SPDX-License-Identifier: MIT */
/* dps-loadgen.c: many concurrent DPS devices over MQTT/TLS against dps-sim, for throughput and latency */

/*
 * Each device: TCP connect, TLS handshake, MQTT CONNECT with a SAS token
 * (device key derived from one group enrollment key), SUBSCRIBE, register,
 * poll per retry-after until a final answer, DISCONNECT. Latency runs from
 * the connect start to the final "assigned" answer. One sd-event loop, no
 * threads, non-blocking OpenSSL; a minimal MQTT 3.1.1 client is enough here
 * (a bench tool, not a product: dpsd uses libmosquitto).
 */

#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <math.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <systemd/sd-event.h>

#include "dps-macro.h"

#define USEC_PER_SEC 1000000ULL
#define KEEP_ALIVE_SEC 240          /* SDKs use 60 to 240 s; never reached here */
#define TOKEN_LIFETIME_SEC 3600     /* "sign with a lifetime of about an hour" */

typedef enum DevState {
        DEV_IDLE,
        DEV_TCP_CONNECTING,
        DEV_TLS_HANDSHAKE,
        DEV_WAIT_CONNACK,
        DEV_WAIT_SUBACK,
        DEV_WAIT_RESPONSE,      /* a register or poll is out */
        DEV_WAIT_TIMER,         /* retry-after before the next poll (or a throttled retry) */
        DEV_ASSIGNED,
        DEV_FAILED,
        _DEV_STATE_MAX,
} DevState;

typedef enum Failure {
        FAIL_CONNECT,           /* TCP connect refused or reset */
        FAIL_TLS,               /* handshake or certificate verification */
        FAIL_CONNACK,           /* CONNECT refused */
        FAIL_SUBACK,            /* subscription refused */
        FAIL_CLOSED,            /* the server closed the connection mid-flow */
        FAIL_PROTOCOL,          /* a packet or response we cannot use */
        FAIL_STATUS,            /* a final answer that is not "assigned" */
        FAIL_TIMEOUT,           /* not assigned before --timeout */
        _FAIL_MAX,
} Failure;

static const char *failure_to_string(Failure f) {
        switch (f) {
        case FAIL_CONNECT: return "connect";
        case FAIL_TLS: return "tls";
        case FAIL_CONNACK: return "connack";
        case FAIL_SUBACK: return "suback";
        case FAIL_CLOSED: return "closed";
        case FAIL_PROTOCOL: return "protocol";
        case FAIL_STATUS: return "status";
        case FAIL_TIMEOUT: return "timeout";
        case _FAIL_MAX: break;
        }
        return "?";
}

typedef struct Loadgen Loadgen;

typedef struct Device {
        Loadgen *lg;
        char registration_id[DPS_REGISTRATION_ID_MAX + 1];
        DevState state;
        int fd;
        SSL *ssl;
        sd_event_source *io, *timer;
        uint8_t *in;
        size_t in_len, in_cap;
        uint8_t *out;
        size_t out_len, out_off, out_cap;
        uint16_t packet_id;
        unsigned rid;           /* current $rid, a counter per device */
        bool request_is_poll;
        char *operation_id;
        uint64_t t_start, t_tcp, t_tls, t_connack, t_done;   /* phase ends, CLOCK_MONOTONIC */
} Device;

struct Loadgen {
        sd_event *event;
        SSL_CTX *ctx;
        struct sockaddr_storage addr;
        socklen_t addr_len;
        const char *host;
        bool host_is_ip;
        const char *scope;
        char *group_key;        /* secret */
        const char *prefix;
        unsigned n_devices, concurrency, timeout_sec;
        bool json, verbose;
        Device *devices;
        unsigned next, active, finished, assigned;
        unsigned failures[_FAIL_MAX];
        uint64_t responses_202, responses_429, polls;
        uint64_t t_begin, t_last_assigned;
        sd_event_source *deadline;
};

static uint64_t now_usec(void) {
        struct timespec ts;

        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (uint64_t) ts.tv_sec * USEC_PER_SEC + (uint64_t) ts.tv_nsec / 1000;
}

static void device_start_next(Loadgen *lg);
static bool device_flush(Device *d);

/* ---- buffers and MQTT encoding -------------------------------------------- */

static int buf_reserve(uint8_t **buf, size_t *cap, size_t need) {
        size_t n;
        uint8_t *p;

        if (need <= *cap)
                return 0;
        n = *cap ? *cap : 512;
        while (n < need)
                n *= 2;
        p = realloc(*buf, n);
        if (!p)
                return -ENOMEM;
        *buf = p;
        *cap = n;
        return 0;
}

static int out_append(Device *d, const void *data, size_t len) {
        int r;

        /* Compact what was already written before growing. */
        if (d->out_off > 0 && d->out_off == d->out_len)
                d->out_off = d->out_len = 0;
        r = buf_reserve(&d->out, &d->out_cap, d->out_len + len);
        if (r < 0)
                return r;
        memcpy(d->out + d->out_len, data, len);
        d->out_len += len;
        return 0;
}

/* MQTT 3.1.1 section 2.2.3: remaining length, 7 bits per byte, at most 4 bytes. */
static size_t mqtt_encode_length(size_t len, uint8_t out[static 4]) {
        size_t n = 0;

        do {
                uint8_t b = len % 128;

                len /= 128;
                if (len > 0)
                        b |= 0x80;
                out[n++] = b;
        } while (len > 0 && n < 4);
        return n;
}

static void put_u16(uint8_t *p, uint16_t v) {
        p[0] = v >> 8;
        p[1] = v & 0xff;
}

/* One piece of a packet's variable header or payload. */
typedef struct Part {
        const void *data;
        size_t len;
        bool string;            /* MQTT UTF-8 string: 2-byte length first */
} Part;

static int mqtt_queue(Device *d, uint8_t first, const Part *parts, size_t n_parts) {
        _cleanup_free_ uint8_t *pkt = NULL;
        uint8_t lenbuf[4];
        size_t body = 0, hl, off;
        int r;

        for (size_t i = 0; i < n_parts; i++) {
                if (parts[i].string && parts[i].len > UINT16_MAX)
                        return -EMSGSIZE;
                body += parts[i].len + (parts[i].string ? 2 : 0);
        }
        if (body > 268435455)
                return -EMSGSIZE;
        hl = mqtt_encode_length(body, lenbuf);
        pkt = malloc(1 + hl + body);
        if (!pkt)
                return -ENOMEM;
        pkt[0] = first;
        memcpy(pkt + 1, lenbuf, hl);
        off = 1 + hl;
        for (size_t i = 0; i < n_parts; i++) {
                if (parts[i].string) {
                        put_u16(pkt + off, (uint16_t) parts[i].len);
                        off += 2;
                }
                if (parts[i].len > 0)
                        memcpy(pkt + off, parts[i].data, parts[i].len);
                off += parts[i].len;
        }
        r = out_append(d, pkt, off);
        /* CONNECT carries the SAS token: do not leave it in freed memory. */
        OPENSSL_cleanse(pkt, off);
        return r;
}

static int mqtt_queue_connect(Device *d) {
        Loadgen *lg = d->lg;
        _cleanup_free_ char *username = NULL;
        _cleanup_secret_ char *key = NULL, *token = NULL;
        uint8_t vh[10] = { 0, 4, 'M', 'Q', 'T', 'T', 4, 0xC2 /* user, password, clean */ };
        uint64_t expiry = (uint64_t) time(NULL) + TOKEN_LIFETIME_SEC;
        int r;

        put_u16(vh + 8, KEEP_ALIVE_SEC);
        r = dps_sas_derive_key(lg->group_key, d->registration_id, &key);
        if (r < 0)
                return r;
        r = dps_sas_sign(lg->scope, d->registration_id, key, expiry, &token);
        if (r < 0)
                return r;
        r = dps_username(lg->scope, d->registration_id, NULL, "dps-loadgen/" PACKAGE_VERSION, &username);
        if (r < 0)
                return r;

        return mqtt_queue(d, 0x10, (const Part[]) {
                { vh, sizeof(vh), false },
                { d->registration_id, strlen(d->registration_id), true },
                { username, strlen(username), true },
                { token, strlen(token), true },
        }, 4);
}

static int mqtt_queue_subscribe(Device *d) {
        uint8_t id[2], qos = 1;

        put_u16(id, ++d->packet_id);
        return mqtt_queue(d, 0x82, (const Part[]) {
                { id, 2, false },
                { DPS_SUBSCRIBE_TOPIC, strlen(DPS_SUBSCRIBE_TOPIC), true },
                { &qos, 1, false },
        }, 3);
}

static int mqtt_queue_publish(Device *d, const char *topic, const char *payload) {
        uint8_t id[2];

        if (++d->packet_id == 0)
                d->packet_id = 1;
        put_u16(id, d->packet_id);
        return mqtt_queue(d, 0x32 /* PUBLISH, QoS 1 */, (const Part[]) {
                { topic, strlen(topic), true },
                { id, 2, false },
                { payload, payload ? strlen(payload) : 0, false },
        }, 3);
}

/* The DPS request of the current phase: register, or poll the operation. */
static int device_send_request(Device *d) {
        _cleanup_free_ char *topic = NULL, *body = NULL;
        char rid[16];
        int r;

        snprintf(rid, sizeof(rid), "%u", ++d->rid);
        if (d->request_is_poll) {
                r = dps_topic_poll(rid, d->operation_id, &topic);
                if (r < 0)
                        return r;
                d->lg->polls++;
        } else {
                r = dps_topic_register(rid, &topic);
                if (r < 0)
                        return r;
                r = dps_body_register(d->registration_id, NULL, &body);
                if (r < 0)
                        return r;
        }
        r = mqtt_queue_publish(d, topic, body);
        if (r < 0)
                return r;
        d->state = DEV_WAIT_RESPONSE;
        return 0;
}

/* ---- device life ------------------------------------------------------------ */

static void device_close(Device *d) {
        d->io = sd_event_source_disable_unref(d->io);
        d->timer = sd_event_source_disable_unref(d->timer);
        if (d->ssl) {
                SSL_free(d->ssl);
                d->ssl = NULL;
        }
        if (d->fd >= 0) {
                close(d->fd);
                d->fd = -1;
        }
        free(d->in);
        d->in = NULL;
        d->in_len = d->in_cap = 0;
        free(d->out);
        d->out = NULL;
        d->out_len = d->out_off = d->out_cap = 0;
        free(d->operation_id);
        d->operation_id = NULL;
}

static void device_finished(Device *d) {
        Loadgen *lg = d->lg;

        device_close(d);
        lg->active--;
        lg->finished++;
        if (lg->finished == lg->n_devices) {
                sd_event_exit(lg->event, 0);
                return;
        }
        device_start_next(lg);
}

static void device_fail(Device *d, Failure f, const char *why) {
        Loadgen *lg = d->lg;

        if (d->state == DEV_ASSIGNED || d->state == DEV_FAILED)
                return;
        if (lg->verbose)
                fprintf(stderr, "%s: failed (%s): %s\n", d->registration_id, failure_to_string(f), why);
        d->state = DEV_FAILED;
        lg->failures[f]++;
        device_finished(d);
}

static void device_assigned(Device *d) {
        Loadgen *lg = d->lg;
        static const uint8_t disconnect[2] = { 0xE0, 0x00 };

        d->t_done = now_usec();
        lg->t_last_assigned = d->t_done;
        d->state = DEV_ASSIGNED;
        lg->assigned++;
        /* Say goodbye properly, best effort: DISCONNECT, then close_notify. */
        if (out_append(d, disconnect, sizeof(disconnect)) >= 0 && d->out_len > d->out_off)
                (void) SSL_write(d->ssl, d->out + d->out_off, (int) (d->out_len - d->out_off));
        (void) SSL_shutdown(d->ssl);
        device_finished(d);
}

static int on_timer(sd_event_source *s, uint64_t usec, void *userdata) {
        Device *d = userdata;
        int r;

        d->timer = sd_event_source_disable_unref(d->timer);
        r = device_send_request(d);
        if (r < 0) {
                device_fail(d, FAIL_PROTOCOL, strerror(-r));
                return 0;
        }
        /* Edge-triggered: the socket is writable already, no event will come. */
        (void) device_flush(d);
        return 0;
}

static int device_wait(Device *d, int64_t seconds) {
        return sd_event_add_time_relative(d->lg->event, &d->timer, CLOCK_MONOTONIC,
                                          (uint64_t) seconds * USEC_PER_SEC, 1000, on_timer, d);
}

/* A DPS response on $dps/registrations/res/...: decide the next step. */
static void device_on_response(Device *d, const char *topic, const char *body, size_t body_len) {
        Loadgen *lg = d->lg;
        DpsResponseTopic t = {};
        _cleanup_(dps_response_freep) DpsResponse *resp = NULL;
        char rid[16];
        int64_t wait;
        int r;

        r = dps_topic_parse_response(topic, &t);
        if (r < 0) {
                device_fail(d, FAIL_PROTOCOL, "unparsable response topic");
                return;
        }
        snprintf(rid, sizeof(rid), "%u", d->rid);
        if (d->state != DEV_WAIT_RESPONSE || !streq(t.rid, rid)) {
                /* Not the answer to our request in flight: ignore, as clients do. */
                dps_response_topic_done(&t);
                return;
        }
        r = dps_response_parse(body, body_len, &resp);
        if (r < 0) {
                dps_response_topic_done(&t);
                device_fail(d, FAIL_PROTOCOL, "unparsable response body");
                return;
        }
        wait = t.retry_after;
        switch (dps_classify(t.status, resp)) {
        case DPS_OUTCOME_ASSIGNED:
                if (!resp->has_registration_state || strempty(resp->state.assigned_hub)) {
                        device_fail(d, FAIL_PROTOCOL, "assigned without assignedHub");
                        break;
                }
                device_assigned(d);
                break;
        case DPS_OUTCOME_PENDING:
                lg->responses_202++;
                if (strempty(resp->operation_id)) {
                        device_fail(d, FAIL_PROTOCOL, "assigning without operationId");
                        break;
                }
                if (!d->operation_id || !streq(d->operation_id, resp->operation_id)) {
                        free(d->operation_id);
                        d->operation_id = strdup(resp->operation_id);
                        if (!d->operation_id) {
                                device_fail(d, FAIL_PROTOCOL, "out of memory");
                                break;
                        }
                }
                d->request_is_poll = true;
                /* retry-after is a floor; without it the SDKs poll after 1 to 2 s. */
                if (wait < 0)
                        wait = 2;
                goto wait;
        case DPS_OUTCOME_THROTTLED:
                lg->responses_429++;
                if (wait < 1)
                        wait = 1;
                goto wait;
        case DPS_OUTCOME_TRANSIENT:
        case DPS_OUTCOME_CREDENTIALS:
        case DPS_OUTCOME_PERMANENT: {
                char why[64];

                snprintf(why, sizeof(why), "status %d, body %s", t.status, dps_status_to_string(resp->status));
                device_fail(d, FAIL_STATUS, why);
                break;
        }
        case _DPS_OUTCOME_MAX:
                device_fail(d, FAIL_PROTOCOL, "unclassifiable response");
                break;
        }
        dps_response_topic_done(&t);
        return;

wait:
        dps_response_topic_done(&t);
        if (wait == 0) {
                r = device_send_request(d);
                if (r < 0)
                        device_fail(d, FAIL_PROTOCOL, strerror(-r));
                return;
        }
        d->state = DEV_WAIT_TIMER;
        r = device_wait(d, wait);
        if (r < 0)
                device_fail(d, FAIL_PROTOCOL, strerror(-r));
}

/* One complete MQTT packet from the server. Returns false when the device
 * was finished (and its buffers freed) while handling it. */
static bool device_on_packet(Device *d, const uint8_t *p, size_t hdr, size_t len) {
        const uint8_t *v = p + hdr;
        uint8_t type = p[0] >> 4;
        int r;

        switch (type) {
        case 2: /* CONNACK */
                if (d->state != DEV_WAIT_CONNACK || len != 2) {
                        device_fail(d, FAIL_PROTOCOL, "unexpected CONNACK");
                        return false;
                }
                if (v[1] != 0) {
                        char why[32];

                        snprintf(why, sizeof(why), "return code %u", v[1]);
                        device_fail(d, FAIL_CONNACK, why);
                        return false;
                }
                d->t_connack = now_usec();
                r = mqtt_queue_subscribe(d);
                if (r < 0) {
                        device_fail(d, FAIL_PROTOCOL, strerror(-r));
                        return false;
                }
                d->state = DEV_WAIT_SUBACK;
                return true;
        case 9: /* SUBACK */
                if (d->state != DEV_WAIT_SUBACK || len != 3) {
                        device_fail(d, FAIL_PROTOCOL, "unexpected SUBACK");
                        return false;
                }
                if (v[2] & 0x80) {
                        device_fail(d, FAIL_SUBACK, "subscription refused");
                        return false;
                }
                d->request_is_poll = false;
                r = device_send_request(d);
                if (r < 0) {
                        device_fail(d, FAIL_PROTOCOL, strerror(-r));
                        return false;
                }
                return true;
        case 3: { /* PUBLISH */
                unsigned qos = (p[0] >> 1) & 3;
                size_t tlen, off;
                _cleanup_free_ char *topic = NULL;

                if (len < 2 || qos == 3) {
                        device_fail(d, FAIL_PROTOCOL, "malformed PUBLISH");
                        return false;
                }
                tlen = ((size_t) v[0] << 8) | v[1];
                off = 2 + tlen + (qos > 0 ? 2 : 0);
                if (off > len) {
                        device_fail(d, FAIL_PROTOCOL, "truncated PUBLISH");
                        return false;
                }
                topic = strndup((const char *) v + 2, tlen);
                if (!topic) {
                        device_fail(d, FAIL_PROTOCOL, "out of memory");
                        return false;
                }
                if (qos > 0) {
                        uint8_t ack[4] = { 0x40, 0x02, v[2 + tlen], v[3 + tlen] };

                        if (out_append(d, ack, sizeof(ack)) < 0) {
                                device_fail(d, FAIL_PROTOCOL, "out of memory");
                                return false;
                        }
                }
                device_on_response(d, topic, (const char *) v + off, len - off);
                return d->state != DEV_ASSIGNED && d->state != DEV_FAILED;
        }
        case 4:  /* PUBACK of our request */
        case 13: /* PINGRESP */
                return true;
        default:
                device_fail(d, FAIL_PROTOCOL, "unexpected packet type");
                return false;
        }
}

/* Splits the input buffer into packets. */
static bool device_parse(Device *d) {
        size_t off = 0;

        while (d->in_len - off >= 2) {
                const uint8_t *p = d->in + off;
                size_t avail = d->in_len - off, len = 0, mult = 1, i;

                for (i = 1; i < avail && i <= 4; i++) {
                        len += (p[i] & 0x7f) * mult;
                        mult *= 128;
                        if (!(p[i] & 0x80))
                                break;
                }
                if (i > 4) {
                        device_fail(d, FAIL_PROTOCOL, "bad remaining length");
                        return false;
                }
                if (i >= avail)
                        break;          /* length incomplete */
                if (len > DPS_MAX_MESSAGE_SIZE + 1024) {
                        device_fail(d, FAIL_PROTOCOL, "packet over the DPS maximum message size");
                        return false;
                }
                if (avail < i + 1 + len)
                        break;          /* body incomplete */
                if (!device_on_packet(d, p, i + 1, len))
                        return false;
                off += i + 1 + len;
        }
        if (off > 0) {
                memmove(d->in, d->in + off, d->in_len - off);
                d->in_len -= off;
        }
        return true;
}

static bool device_flush(Device *d) {
        while (d->out_len > d->out_off) {
                int n = SSL_write(d->ssl, d->out + d->out_off, (int) (d->out_len - d->out_off));

                if (n > 0) {
                        d->out_off += (size_t) n;
                        continue;
                }
                switch (SSL_get_error(d->ssl, n)) {
                case SSL_ERROR_WANT_WRITE:
                        return true;
                case SSL_ERROR_WANT_READ:
                        return true;
                default:
                        device_fail(d, FAIL_CLOSED, "write failed");
                        return false;
                }
        }
        d->out_off = d->out_len = 0;
        return true;
}

static bool device_read(Device *d) {
        for (;;) {
                int n, r;

                r = buf_reserve(&d->in, &d->in_cap, d->in_len + 4096);
                if (r < 0) {
                        device_fail(d, FAIL_PROTOCOL, "out of memory");
                        return false;
                }
                n = SSL_read(d->ssl, d->in + d->in_len, (int) (d->in_cap - d->in_len));
                if (n > 0) {
                        d->in_len += (size_t) n;
                        if (!device_parse(d))
                                return false;
                        continue;
                }
                switch (SSL_get_error(d->ssl, n)) {
                case SSL_ERROR_WANT_READ:
                        return true;
                case SSL_ERROR_WANT_WRITE:
                        return true;
                case SSL_ERROR_ZERO_RETURN:
                        device_fail(d, FAIL_CLOSED, "server closed the connection");
                        return false;
                default:
                        device_fail(d, FAIL_CLOSED, "connection lost");
                        return false;
                }
        }
}

static bool device_handshake(Device *d) {
        int r = SSL_connect(d->ssl);

        if (r == 1) {
                d->t_tls = now_usec();
                r = mqtt_queue_connect(d);
                if (r < 0) {
                        device_fail(d, FAIL_PROTOCOL, strerror(-r));
                        return false;
                }
                d->state = DEV_WAIT_CONNACK;
                return true;
        }
        switch (SSL_get_error(d->ssl, r)) {
        case SSL_ERROR_WANT_READ:
                return true;
        case SSL_ERROR_WANT_WRITE:
                return true;
        default: {
                char why[160];
                unsigned long e = ERR_get_error();

                snprintf(why, sizeof(why), "TLS handshake: %s (verify: %s)",
                         e ? ERR_reason_error_string(e) : "connection closed",
                         X509_verify_cert_error_string(SSL_get_verify_result(d->ssl)));
                ERR_clear_error();
                device_fail(d, FAIL_TLS, why);
                return false;
        }
        }
}

/* Edge-triggered (EPOLLET), so every event drains what it can: handshake,
 * reads until WANT_READ, writes until WANT_WRITE. Level-triggered sources
 * cost O(ready sockets) per loop iteration, because sd-event polls the
 * kernel before every dispatch, and a thousand handshaking sockets made
 * that the load generator's main cost. */
static int on_io(sd_event_source *s, int fd, uint32_t revents, void *userdata) {
        Device *d = userdata;

        if (d->state == DEV_TCP_CONNECTING) {
                int err = 0;
                socklen_t l = sizeof(err);

                if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &l) < 0)
                        err = errno;
                if (err != 0) {
                        device_fail(d, FAIL_CONNECT, strerror(err));
                        return 0;
                }
                if (!(revents & (EPOLLOUT | EPOLLERR | EPOLLHUP)))
                        return 0;
                d->t_tcp = now_usec();
                d->state = DEV_TLS_HANDSHAKE;
        }

        if (d->state == DEV_TLS_HANDSHAKE) {
                if (!device_handshake(d))
                        return 0;
                if (d->state == DEV_TLS_HANDSHAKE)
                        return 0;
        }
        /* Read first: it may produce acknowledgements and requests to write. */
        if (!device_read(d))
                return 0;
        (void) device_flush(d);
        return 0;
}

static int device_start(Device *d) {
        Loadgen *lg = d->lg;
        _cleanup_close_ int fd = -1;
        int r, one = 1;

        d->t_start = now_usec();
        fd = socket(lg->addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, IPPROTO_TCP);
        if (fd < 0)
                return negative_errno();
        (void) setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        if (connect(fd, (const struct sockaddr *) &lg->addr, lg->addr_len) < 0 && errno != EINPROGRESS)
                return negative_errno();

        d->ssl = SSL_new(lg->ctx);
        if (!d->ssl)
                return -ENOMEM;
        if (lg->host_is_ip) {
                if (X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(d->ssl), lg->host) != 1)
                        return -EINVAL;
        } else if (SSL_set_tlsext_host_name(d->ssl, lg->host) != 1 || SSL_set1_host(d->ssl, lg->host) != 1)
                return -EINVAL;
        if (SSL_set_fd(d->ssl, fd) != 1)
                return -EIO;
        SSL_set_mode(d->ssl, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);

        r = sd_event_add_io(lg->event, &d->io, fd, EPOLLIN | EPOLLOUT | EPOLLET, on_io, d);
        if (r < 0)
                return r;
        d->fd = TAKE_FD(fd);
        d->state = DEV_TCP_CONNECTING;
        lg->active++;
        return 0;
}

static void device_start_next(Loadgen *lg) {
        while (lg->next < lg->n_devices && lg->active < lg->concurrency) {
                Device *d = &lg->devices[lg->next++];
                int r = device_start(d);

                if (r < 0) {
                        if (lg->verbose)
                                fprintf(stderr, "%s: cannot start: %s\n", d->registration_id, strerror(-r));
                        device_close(d);
                        d->state = DEV_FAILED;
                        lg->failures[FAIL_CONNECT]++;
                        lg->finished++;
                        if (lg->finished == lg->n_devices)
                                sd_event_exit(lg->event, 0);
                }
        }
}

static int on_deadline(sd_event_source *s, uint64_t usec, void *userdata) {
        Loadgen *lg = userdata;

        lg->next = lg->n_devices;       /* start nothing more */
        for (unsigned i = 0; i < lg->n_devices; i++) {
                Device *d = &lg->devices[i];

                if (d->state == DEV_IDLE) {
                        d->state = DEV_FAILED;
                        lg->failures[FAIL_TIMEOUT]++;
                        lg->finished++;
                } else if (d->state != DEV_ASSIGNED && d->state != DEV_FAILED)
                        device_fail(d, FAIL_TIMEOUT, "not assigned in time");
        }
        return sd_event_exit(lg->event, 0);
}

/* ---- report ------------------------------------------------------------------- */

static int cmp_u64(const void *a, const void *b) {
        uint64_t x = *(const uint64_t *) a, y = *(const uint64_t *) b;

        return x < y ? -1 : x > y;
}

/* Nearest-rank percentile of sorted values. */
static double percentile_ms(const uint64_t *v, size_t n, double p) {
        size_t k;

        if (n == 0)
                return 0;
        k = (size_t) ceil(p / 100.0 * (double) n);
        if (k < 1)
                k = 1;
        return (double) v[k - 1] / 1000.0;
}

typedef enum Phase {
        PHASE_TOTAL,            /* connect start to assigned: the latency */
        PHASE_TCP,              /* connect start to TCP established */
        PHASE_TLS,              /* TLS handshake */
        PHASE_CONNACK,          /* CONNECT sent to CONNACK */
        PHASE_DPS,              /* CONNACK to assigned: subscribe, register, polls */
        _PHASE_MAX,
} Phase;

static const char *phase_to_string(Phase p) {
        switch (p) {
        case PHASE_TOTAL: return "total";
        case PHASE_TCP: return "tcp";
        case PHASE_TLS: return "tls";
        case PHASE_CONNACK: return "connack";
        case PHASE_DPS: return "dps";
        case _PHASE_MAX: break;
        }
        return "?";
}

static uint64_t phase_usec(const Device *d, Phase p) {
        switch (p) {
        case PHASE_TOTAL: return d->t_done - d->t_start;
        case PHASE_TCP: return d->t_tcp - d->t_start;
        case PHASE_TLS: return d->t_tls - d->t_tcp;
        case PHASE_CONNACK: return d->t_connack - d->t_tls;
        case PHASE_DPS: return d->t_done - d->t_connack;
        case _PHASE_MAX: break;
        }
        return 0;
}

/* Sorted durations of one phase over the assigned devices; returns how many. */
static size_t phase_collect(const Loadgen *lg, Phase p, uint64_t *v) {
        size_t n = 0;

        for (unsigned i = 0; i < lg->n_devices; i++)
                if (lg->devices[i].state == DEV_ASSIGNED)
                        v[n++] = phase_usec(&lg->devices[i], p);
        qsort(v, n, sizeof(uint64_t), cmp_u64);
        return n;
}

static int report(Loadgen *lg) {
        _cleanup_free_ uint64_t *lat = NULL;
        double p50[_PHASE_MAX], p99[_PHASE_MAX];
        size_t n = 0;
        unsigned failed = 0;
        double secs, rate, max = 0, cpu = 0;
        struct rusage ru;

        lat = calloc(lg->n_devices ? lg->n_devices : 1, sizeof(uint64_t));
        if (!lat)
                return -ENOMEM;
        for (Phase p = _PHASE_MAX; p-- > 0;) {
                n = phase_collect(lg, p, lat);
                p50[p] = percentile_ms(lat, n, 50);
                p99[p] = percentile_ms(lat, n, 99);
        }
        /* lat now holds PHASE_TOTAL, the last collected. */
        if (n > 0)
                max = (double) lat[n - 1] / 1000.0;
        for (Failure f = 0; f < _FAIL_MAX; f++)
                failed += lg->failures[f];

        secs = n > 0 ? (double) (lg->t_last_assigned - lg->t_begin) / 1e6 : 0;
        rate = secs > 0 ? (double) n / secs : 0;
        /* CPU time says more than wall time on a shared machine. */
        if (getrusage(RUSAGE_SELF, &ru) >= 0)
                cpu = (double) ru.ru_utime.tv_sec + (double) ru.ru_utime.tv_usec / 1e6 +
                      (double) ru.ru_stime.tv_sec + (double) ru.ru_stime.tv_usec / 1e6;

        if (lg->json) {
                printf("{\"devices\":%u,\"concurrency\":%u,\"assigned\":%zu,\"failed\":%u,\"seconds\":%.3f,"
                       "\"registrations_per_s\":%.1f,\"p50_ms\":%.1f,\"p99_ms\":%.1f,\"max_ms\":%.1f,"
                       "\"polls\":%" PRIu64 ",\"responses_202\":%" PRIu64 ",\"responses_429\":%" PRIu64 ","
                       "\"loadgen_cpu_s\":%.3f,\"failures\":{",
                       lg->n_devices, lg->concurrency, n, failed, secs, rate, p50[PHASE_TOTAL], p99[PHASE_TOTAL], max,
                       lg->polls, lg->responses_202, lg->responses_429, cpu);
                for (Failure f = 0; f < _FAIL_MAX; f++)
                        printf("%s\"%s\":%u", f ? "," : "", failure_to_string(f), lg->failures[f]);
                printf("},\"phases_ms\":{");
                for (Phase p = 0; p < _PHASE_MAX; p++)
                        printf("%s\"%s\":{\"p50\":%.1f,\"p99\":%.1f}", p ? "," : "", phase_to_string(p), p50[p], p99[p]);
                printf("}}\n");
        } else {
                printf("devices        %u (concurrency %u)\n", lg->n_devices, lg->concurrency);
                printf("assigned       %zu in %.3f s\n", n, secs);
                printf("registrations  %.1f /s\n", rate);
                printf("latency        p50 %.1f ms, p99 %.1f ms, max %.1f ms (connect start to assigned)\n",
                       p50[PHASE_TOTAL], p99[PHASE_TOTAL], max);
                for (Phase p = PHASE_TCP; p < _PHASE_MAX; p++)
                        printf("  %-12s p50 %.1f ms, p99 %.1f ms\n", phase_to_string(p), p50[p], p99[p]);
                printf("polls          %" PRIu64 " (202: %" PRIu64 ", 429: %" PRIu64 ")\n",
                       lg->polls, lg->responses_202, lg->responses_429);
                printf("cpu            %.3f s (dps-loadgen, user + system)\n", cpu);
                printf("failed         %u", failed);
                for (Failure f = 0; f < _FAIL_MAX; f++)
                        if (lg->failures[f])
                                printf(", %s %u", failure_to_string(f), lg->failures[f]);
                printf("\n");
        }
        fflush(stdout);
        return failed == 0 && n == lg->n_devices ? 0 : 1;
}

/* ---- setup ---------------------------------------------------------------------- */

static int read_secret_file(const char *path, char **ret) {
        _cleanup_fclose_ FILE *f = NULL;
        char buf[512];
        size_t n;

        f = fopen(path, "re");
        if (!f)
                return negative_errno();
        n = fread(buf, 1, sizeof(buf) - 1, f);
        if (ferror(f) || n == sizeof(buf) - 1) {
                OPENSSL_cleanse(buf, sizeof(buf));
                return -EINVAL;
        }
        while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == '\r' || buf[n - 1] == ' '))
                n--;
        buf[n] = 0;
        *ret = strdup(buf);
        OPENSSL_cleanse(buf, sizeof(buf));
        return *ret ? 0 : -ENOMEM;
}

static int resolve(Loadgen *lg, const char *host, const char *port) {
        struct addrinfo hints = { .ai_socktype = SOCK_STREAM, .ai_flags = AI_NUMERICSERV };
        struct addrinfo *res = NULL;
        struct in6_addr a6;
        struct in_addr a4;
        int r;

        r = getaddrinfo(host, port, &hints, &res);
        if (r != 0)
                return -EADDRNOTAVAIL;
        memcpy(&lg->addr, res->ai_addr, res->ai_addrlen);
        lg->addr_len = res->ai_addrlen;
        freeaddrinfo(res);
        lg->host_is_ip = inet_pton(AF_INET, host, &a4) == 1 || inet_pton(AF_INET6, host, &a6) == 1;
        return 0;
}

static void raise_fd_limit(unsigned want) {
        struct rlimit rl;

        if (getrlimit(RLIMIT_NOFILE, &rl) < 0)
                return;
        if (rl.rlim_cur >= want + 64)
                return;
        rl.rlim_cur = rl.rlim_max == RLIM_INFINITY || rl.rlim_max > want + 64 ? want + 64 : rl.rlim_max;
        (void) setrlimit(RLIMIT_NOFILE, &rl);
}

static void help(void) {
        printf("Usage: dps-loadgen --port PORT --ca FILE --group-key-file FILE [OPTION]...\n\n"
               "Registers many devices of one symmetric-key group enrollment with dps-sim\n"
               "over MQTT/TLS, all concurrently, and reports registrations per second and\n"
               "latency percentiles (connect start to assigned).\n\n"
               "  --host HOST            server address (default 127.0.0.1)\n"
               "  --port PORT            MQTT/TLS port (required)\n"
               "  --ca FILE              CA certificate that signed the server's (required)\n"
               "  --scope ID             ID scope (default 0ne00000A0A)\n"
               "  --group-key-file FILE  base64 group key; device keys are derived from it\n"
               "  --prefix STRING        registration ids are PREFIX0, PREFIX1, ... (default load-)\n"
               "  -n, --devices N        number of devices (default 1000)\n"
               "  -c, --concurrency N    connections in flight at once (default: all)\n"
               "  --timeout SECONDS      give up on devices not assigned by then (default 60)\n"
               "  --json                 one JSON line instead of the table\n"
               "  -v, --verbose          print each failure\n"
               "Exit status 0 when every device was assigned, 1 otherwise, 2 for usage errors.\n");
}

static int parse_uint(const char *s, unsigned min, unsigned max, unsigned *ret) {
        char *end;
        unsigned long v;

        errno = 0;
        v = strtoul(s, &end, 10);
        if (errno != 0 || end == s || *end || v < min || v > max)
                return -EINVAL;
        *ret = (unsigned) v;
        return 0;
}

int main(int argc, char *argv[]) {
        static const struct option options[] = {
                { "host", required_argument, NULL, 'H' },
                { "port", required_argument, NULL, 'p' },
                { "ca", required_argument, NULL, 'C' },
                { "scope", required_argument, NULL, 's' },
                { "group-key-file", required_argument, NULL, 'k' },
                { "prefix", required_argument, NULL, 'P' },
                { "devices", required_argument, NULL, 'n' },
                { "concurrency", required_argument, NULL, 'c' },
                { "timeout", required_argument, NULL, 't' },
                { "json", no_argument, NULL, 'j' },
                { "verbose", no_argument, NULL, 'v' },
                { "help", no_argument, NULL, 'h' },
                {}
        };
        Loadgen lg = { .host = "127.0.0.1", .scope = "0ne00000A0A", .prefix = "load-",
                       .n_devices = 1000, .timeout_sec = 60 };
        const char *port = NULL, *ca = NULL, *key_file = NULL;
        int c, r, ret = 2;

        while ((c = getopt_long(argc, argv, "n:c:vh", options, NULL)) >= 0) {
                switch (c) {
                case 'H': lg.host = optarg; break;
                case 'p': port = optarg; break;
                case 'C': ca = optarg; break;
                case 's': lg.scope = optarg; break;
                case 'k': key_file = optarg; break;
                case 'P': lg.prefix = optarg; break;
                case 'n':
                        if (parse_uint(optarg, 1, 1000000, &lg.n_devices) < 0) {
                                fprintf(stderr, "dps-loadgen: --devices wants 1..1000000, not '%s'\n", optarg);
                                return 2;
                        }
                        break;
                case 'c':
                        if (parse_uint(optarg, 1, 1000000, &lg.concurrency) < 0) {
                                fprintf(stderr, "dps-loadgen: --concurrency wants 1..1000000, not '%s'\n", optarg);
                                return 2;
                        }
                        break;
                case 't':
                        if (parse_uint(optarg, 1, 86400, &lg.timeout_sec) < 0) {
                                fprintf(stderr, "dps-loadgen: --timeout wants 1..86400 seconds, not '%s'\n", optarg);
                                return 2;
                        }
                        break;
                case 'j': lg.json = true; break;
                case 'v': lg.verbose = true; break;
                case 'h': help(); return 0;
                default: return 2;
                }
        }
        if (!port || !ca || !key_file || optind < argc) {
                fprintf(stderr, "dps-loadgen: --port, --ca and --group-key-file are required (see --help)\n");
                return 2;
        }
        if (lg.concurrency == 0 || lg.concurrency > lg.n_devices)
                lg.concurrency = lg.n_devices;
        if (strlen(lg.prefix) + 7 > DPS_REGISTRATION_ID_MAX) {
                fprintf(stderr, "dps-loadgen: --prefix is too long\n");
                return 2;
        }

        r = read_secret_file(key_file, &lg.group_key);
        if (r < 0) {
                fprintf(stderr, "dps-loadgen: cannot read the group key from %s: %s\n", key_file, strerror(-r));
                return 2;
        }
        r = resolve(&lg, lg.host, port);
        if (r < 0) {
                fprintf(stderr, "dps-loadgen: cannot resolve %s port %s\n", lg.host, port);
                goto finish;
        }
        raise_fd_limit(lg.concurrency);
        signal(SIGPIPE, SIG_IGN);

        lg.ctx = SSL_CTX_new(TLS_client_method());
        if (!lg.ctx || SSL_CTX_set_min_proto_version(lg.ctx, TLS1_2_VERSION) != 1 ||
            SSL_CTX_load_verify_locations(lg.ctx, ca, NULL) != 1) {
                fprintf(stderr, "dps-loadgen: cannot set up TLS with CA %s: %s\n", ca,
                        ERR_reason_error_string(ERR_get_error()));
                goto finish;
        }
        SSL_CTX_set_verify(lg.ctx, SSL_VERIFY_PEER, NULL);

        lg.devices = calloc(lg.n_devices, sizeof(Device));
        if (!lg.devices) {
                fprintf(stderr, "dps-loadgen: out of memory\n");
                goto finish;
        }
        for (unsigned i = 0; i < lg.n_devices; i++) {
                Device *d = &lg.devices[i];

                d->lg = &lg;
                d->fd = -1;
                snprintf(d->registration_id, sizeof(d->registration_id), "%s%u", lg.prefix, i);
                r = dps_registration_id_validate(d->registration_id, false, NULL);
                if (r < 0) {
                        fprintf(stderr, "dps-loadgen: '%s' is not a valid registration id\n", d->registration_id);
                        goto finish;
                }
        }

        r = sd_event_new(&lg.event);
        if (r < 0) {
                fprintf(stderr, "dps-loadgen: cannot create the event loop: %s\n", strerror(-r));
                goto finish;
        }
        r = sd_event_add_time_relative(lg.event, &lg.deadline, CLOCK_MONOTONIC,
                                       (uint64_t) lg.timeout_sec * USEC_PER_SEC, 0, on_deadline, &lg);
        if (r < 0) {
                fprintf(stderr, "dps-loadgen: cannot arm the deadline: %s\n", strerror(-r));
                goto finish;
        }

        lg.t_begin = now_usec();
        device_start_next(&lg);
        if (lg.finished < lg.n_devices) {
                r = sd_event_loop(lg.event);
                if (r < 0) {
                        fprintf(stderr, "dps-loadgen: event loop failed: %s\n", strerror(-r));
                        goto finish;
                }
        }
        r = report(&lg);
        ret = r < 0 ? 2 : r;

finish:
        if (lg.devices)
                for (unsigned i = 0; i < lg.n_devices; i++)
                        device_close(&lg.devices[i]);
        free(lg.devices);
        sd_event_source_disable_unref(lg.deadline);
        sd_event_unref(lg.event);
        SSL_CTX_free(lg.ctx);
        dps_secret_free(lg.group_key);
        return ret;
}
