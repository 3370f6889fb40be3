/* SPDX-License-Identifier: MIT */
/* sim-server.c: dps-sim's listeners, TLS context and the set of live connections */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>

#include <openssl/err.h>

#include "dps-macro.h"
#include "sim-conn.h"
#include "sim-server.h"

/* The state file is written this long after the first change of a burst. */
#define SAVE_DELAY_USEC (200 * 1000ULL)

/* Accept any client chain at the TLS layer: credentials are checked against
 * the enrollments at CONNECT, where DPS checks them too. */
static int verify_any(int ok, X509_STORE_CTX *ctx) {
        return 1;
}

static int tls_context(const SimConfig *cfg, SSL_CTX **ret) {
        static const unsigned char sid_ctx[] = "dps-sim";
        SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
        if (!ctx)
                return -ENOMEM;
        /* "TLS 1.2 or newer" */
        if (SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION) != 1 ||
            SSL_CTX_use_certificate_chain_file(ctx, cfg->tls_certificate) != 1 ||
            SSL_CTX_use_PrivateKey_file(ctx, cfg->tls_key, SSL_FILETYPE_PEM) != 1 ||
            SSL_CTX_check_private_key(ctx) != 1) {
                unsigned long e = ERR_peek_last_error();
                fprintf(stderr, "dps-sim: %s: cannot use the TLS certificate %s with key %s: %s\n",
                        cfg->path, cfg->tls_certificate, cfg->tls_key, e ? ERR_reason_error_string(e) : "unknown error");
                SSL_CTX_free(ctx);
                return -EINVAL;
        }
        SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_CIPHER_SERVER_PREFERENCE);
        /* Ask for a client certificate, never require one. */
        SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, verify_any);
        SSL_CTX_set_session_id_context(ctx, sid_ctx, sizeof sid_ctx - 1);
        /* Devices provision once and go: TLS 1.3 session tickets (two per
         * handshake by default) would cost CPU for resumptions that never come. */
        SSL_CTX_set_num_tickets(ctx, 0);
        *ret = ctx;
        return 0;
}

/* "127.0.0.1:0", "[::1]:8883", "localhost:0" (loopback names only). */
static int parse_address(const char *s, struct sockaddr_storage *ret, socklen_t *ret_len) {
        char host[256];
        const char *colon;
        if (s[0] == '[') {
                const char *end = strchr(s, ']');
                if (!end || end[1] != ':' || (size_t) (end - s - 1) >= sizeof host)
                        return -EINVAL;
                memcpy(host, s + 1, end - s - 1);
                host[end - s - 1] = 0;
                colon = end + 1;
        } else {
                colon = strrchr(s, ':');
                if (!colon || (size_t) (colon - s) >= sizeof host)
                        return -EINVAL;
                memcpy(host, s, colon - s);
                host[colon - s] = 0;
        }
        char *end;
        errno = 0;
        unsigned long port = strtoul(colon + 1, &end, 10);
        if (errno || end == colon + 1 || *end || port > 65535)
                return -EINVAL;
        if (streq(host, "localhost"))
                strcpy(host, "127.0.0.1");
        memset(ret, 0, sizeof *ret);
        struct sockaddr_in *a4 = (struct sockaddr_in *) ret;
        struct sockaddr_in6 *a6 = (struct sockaddr_in6 *) ret;
        if (inet_pton(AF_INET, host, &a4->sin_addr) == 1) {
                a4->sin_family = AF_INET;
                a4->sin_port = htons((uint16_t) port);
                *ret_len = sizeof *a4;
        } else if (inet_pton(AF_INET6, host, &a6->sin6_addr) == 1) {
                a6->sin6_family = AF_INET6;
                a6->sin6_port = htons((uint16_t) port);
                *ret_len = sizeof *a6;
        } else
                return -EINVAL;
        return 0;
}

static int on_retry(sd_event_source *s, uint64_t usec, void *userdata) {
        SimListener *l = userdata;
        sd_event_source_set_enabled(l->source, SD_EVENT_ON);
        return 0;
}

static int on_accept(sd_event_source *s, int fd, uint32_t revents, void *userdata) {
        SimListener *l = userdata;
        for (int i = 0; i < 64; i++) {
                struct sockaddr_storage sa;
                socklen_t len = sizeof sa;
                int cfd = accept4(fd, (struct sockaddr *) &sa, &len, SOCK_NONBLOCK | SOCK_CLOEXEC);
                if (cfd < 0) {
                        if (errno == EAGAIN || errno == EINTR || errno == ECONNABORTED)
                                return 0;
                        if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
                                /* Out of descriptors: pause this listener briefly
                                 * instead of spinning on a level-triggered fd. */
                                fprintf(stderr, "dps-sim: accept: %s; pausing the listener for 100 ms\n", strerror(errno));
                                sd_event_source_set_enabled(l->source, SD_EVENT_OFF);
                                sd_event_source_set_time_relative(l->retry, 100000);
                                sd_event_source_set_enabled(l->retry, SD_EVENT_ONESHOT);
                                return 0;
                        }
                        fprintf(stderr, "dps-sim: accept: %s\n", strerror(errno));
                        return 0;
                }
                int one = 1;
                setsockopt(cfd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
                char host[INET6_ADDRSTRLEN] = "?", peer[INET6_ADDRSTRLEN + 16];
                unsigned port = 0;
                if (sa.ss_family == AF_INET) {
                        struct sockaddr_in *a = (struct sockaddr_in *) &sa;
                        inet_ntop(AF_INET, &a->sin_addr, host, sizeof host);
                        port = ntohs(a->sin_port);
                        snprintf(peer, sizeof peer, "%s:%u", host, port);
                } else {
                        struct sockaddr_in6 *a = (struct sockaddr_in6 *) &sa;
                        inet_ntop(AF_INET6, &a->sin6_addr, host, sizeof host);
                        port = ntohs(a->sin6_port);
                        snprintf(peer, sizeof peer, "[%s]:%u", host, port);
                }
                sim_conn_new(&l->server->hub, cfd, l->websocket, peer, NULL);
        }
        return 0;
}

static int listener_open(SimServer *s, SimListener *l, const char *address, bool websocket) {
        struct sockaddr_storage sa;
        socklen_t len;
        int r, one = 1;

        l->server = s;
        l->websocket = websocket;
        l->fd = -1;
        if (parse_address(address, &sa, &len) < 0) {
                fprintf(stderr, "dps-sim: %s: listen.%s: '%s' is not valid; use \"127.0.0.1:PORT\" or \"[::1]:PORT\" "
                        "(port 0 picks a free one)\n", s->cfg->path, websocket ? "websocket" : "mqtt", address);
                return -EINVAL;
        }
        l->fd = socket(sa.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (l->fd < 0)
                return -errno;
        setsockopt(l->fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        if (sa.ss_family == AF_INET6)
                setsockopt(l->fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
        if (bind(l->fd, (struct sockaddr *) &sa, len) < 0 || listen(l->fd, 4096) < 0) {
                r = -errno;
                fprintf(stderr, "dps-sim: cannot listen on %s: %s\n", address, strerror(-r));
                return r;
        }
        len = sizeof sa;
        if (getsockname(l->fd, (struct sockaddr *) &sa, &len) < 0)
                return -errno;
        l->port = ntohs(sa.ss_family == AF_INET ? ((struct sockaddr_in *) &sa)->sin_port
                                                : ((struct sockaddr_in6 *) &sa)->sin6_port);
        r = sd_event_add_io(s->hub.event, &l->source, l->fd, EPOLLIN, on_accept, l);
        if (r < 0)
                return r;
        r = sd_event_add_time_relative(s->hub.event, &l->retry, CLOCK_MONOTONIC, 100000, 10000, on_retry, l);
        if (r < 0)
                return r;
        return sd_event_source_set_enabled(l->retry, SD_EVENT_OFF);
}

static void listener_close(SimListener *l) {
        l->source = sd_event_source_disable_unref(l->source);
        l->retry = sd_event_source_disable_unref(l->retry);
        if (l->fd >= 0)
                close(l->fd);
        l->fd = -1;
}

static int on_save(sd_event_source *src, uint64_t usec, void *userdata) {
        SimServer *s = userdata;
        int r = sim_dps_save_state(s->hub.dps);
        if (r < 0)
                fprintf(stderr, "dps-sim: cannot write the state file %s: %s\n", s->cfg->state_file, strerror(-r));
        return 0;
}

/* Writes the state file soon after a change, coalescing bursts. */
static void state_changed(void *userdata) {
        SimServer *s = userdata;
        int enabled = SD_EVENT_OFF;
        if (!s->cfg->state_file)
                return;
        sd_event_source_get_enabled(s->save_timer, &enabled);
        if (enabled != SD_EVENT_OFF)
                return;         /* a write is already due */
        sd_event_source_set_time_relative(s->save_timer, SAVE_DELAY_USEC);
        sd_event_source_set_enabled(s->save_timer, SD_EVENT_ONESHOT);
}

SimServer *sim_server_free(SimServer *s) {
        if (!s)
                return NULL;
        while (s->hub.conns)
                sim_conn_free(s->hub.conns, "shutdown");
        listener_close(&s->mqtt);
        listener_close(&s->ws);
        sd_event_source_disable_unref(s->save_timer);
        if (s->hub.dps && sim_dps_state_dirty(s->hub.dps))
                on_save(NULL, 0, s);
        SSL_CTX_free(s->hub.ssl_ctx);
        free(s);
        return NULL;
}

int sim_server_new(sd_event *event, const SimConfig *cfg, SimDps *dps, SimEvents *events, SimServer **ret) {
        SimServer *s = calloc(1, sizeof *s);
        int r;
        if (!s)
                return -ENOMEM;
        s->hub.event = event;
        s->cfg = cfg;
        s->hub.dps = dps;
        s->hub.events = events;
        s->hub.state_changed = state_changed;
        s->hub.userdata = s;
        s->mqtt.fd = s->ws.fd = -1;
        r = tls_context(cfg, &s->hub.ssl_ctx);
        if (r >= 0)
                r = listener_open(s, &s->mqtt, cfg->listen_mqtt, false);
        if (r >= 0 && cfg->listen_ws)
                r = listener_open(s, &s->ws, cfg->listen_ws, true);
        if (r >= 0)
                r = sd_event_add_time_relative(event, &s->save_timer, CLOCK_MONOTONIC, SAVE_DELAY_USEC, 10000, on_save, s);
        if (r >= 0)
                r = sd_event_source_set_enabled(s->save_timer, SD_EVENT_OFF);
        if (r < 0) {
                sim_server_free(s);
                return r;
        }
        *ret = s;
        return 0;
}
