/* SPDX-License-Identifier: MIT */
/* dpsd-manager.c: the Manager, dpsd's one owner of provisioning state and its state machine */
#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <malloc.h>
#include <stdarg.h>
#include <string.h>
#include <sys/random.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <systemd/sd-daemon.h>

#include "config.h"
#include "dps-macro.h"
#include "dps-session.h"
#include "dpsd-cache.h"
#include "dpsd-conf.h"
#include "dpsd-log.h"
#include "dpsd-manager.h"
#include "dpsd-tls.h"
#include "dpsd-util.h"

/* "Tokens expire: sign with a lifetime of about an hour from the current time" */
#define SAS_LIFETIME_SEC 3600
/* A throttled or failed request is re-sent on the open connection when the
 * wait is short; a longer wait closes it (and DPS would drop it anyway:
 * "Azure's load balancer drops idle TCP after 4 min"). */
#define KEEP_CONNECTION_MAX_USEC (30 * USEC_PER_SEC)

typedef enum Request {
        REQUEST_NONE,
        REQUEST_REGISTER,
        REQUEST_POLL,
} Request;

struct Manager {
        sd_event *event;
        Config *config;
        char *config_path;
        char *fingerprint;

        ManagerState state;
        bool state_set;
        manager_observer_t observer;
        void *observer_userdata;
        sd_event_source *notify_defer;
        sd_event_source *trim;            /* malloc_trim() once provisioned */
        bool notify_changed, notify_provisioned;

        /* the current assignment and the last outcome (ManagerInfo) */
        char *assigned_hub, *device_id, *substatus, *payload;
        const char *source;
        uint64_t last_provisioned_usec, next_attempt_usec;
        uint32_t attempts;
        char *last_error;
        int64_t last_error_code;
        char *last_tracking_id;
        char *status_detail;      /* why we wait, for STATUS= */

        DpsBackoff backoff;
        DpsSession *session;
        Request request;          /* the request in flight or to re-send */
        char *rid;
        uint64_t rid_counter;
        char *operation_id;
        uint64_t attempt_start_usec;
        /* CLOCK_BOOTTIME: the service's last retry-after ends here. Even a
         * Reprovision() that clears our own back-off waits for it. */
        uint64_t not_before_usec;

        sd_event_source *timer;           /* retry / poll / re-send delay */
        sd_event_source *step_timeout;    /* connect or response timeout */
        sd_event_source *clock_watch;     /* timerfd on CLOCK_REALTIME, cancelled on clock set */
        sd_event_source *write_retry;     /* the cache or identity.env could not be written: try again */
        unsigned write_failures;
        bool cache_dirty, identity_env_dirty, write_error_shown;
        int clock_fd;
};

static const char *const state_table[_MANAGER_STATE_MAX] = {
        [MANAGER_UNPROVISIONED]     = "unprovisioned",
        [MANAGER_WAITING_FOR_CLOCK] = "waiting-for-clock",
        [MANAGER_CONNECTING]        = "connecting",
        [MANAGER_REGISTERING]       = "registering",
        [MANAGER_ASSIGNING]         = "assigning",
        [MANAGER_PROVISIONED]       = "provisioned",
        [MANAGER_RETRYING]          = "retrying",
        [MANAGER_FAILED]            = "failed",
        [MANAGER_DISABLED]          = "disabled",
};

const char *manager_state_to_string(ManagerState s) {
        if ((unsigned) s >= _MANAGER_STATE_MAX)
                return NULL;
        return state_table[s];
}

static void attempt_start(Manager *m);
static void manager_enter_state(Manager *m, ManagerState s);

static int set_str(char **p, const char *v) {
        char *n = NULL;

        if (v && !(n = strdup(v)))
                return -ENOMEM;
        free(*p);
        *p = n;
        return 0;
}

_printf_(2, 3)
static void set_error(Manager *m, const char *format, ...) {
        va_list ap;

        free(m->last_error);
        va_start(ap, format);
        if (vasprintf(&m->last_error, format, ap) < 0)
                m->last_error = NULL;
        va_end(ap);
}

_printf_(2, 3)
static void set_status_detail(Manager *m, const char *format, ...) {
        va_list ap;

        free(m->status_detail);
        m->status_detail = NULL;
        if (!format)
                return;
        va_start(ap, format);
        if (vasprintf(&m->status_detail, format, ap) < 0)
                m->status_detail = NULL;
        va_end(ap);
}

/* ---- observer: coalesced notifications ------------------------------------ */

static int notify_dispatch(sd_event_source *s, void *userdata) {
        Manager *m = userdata;
        bool changed = m->notify_changed, provisioned = m->notify_provisioned;

        m->notify_changed = m->notify_provisioned = false;
        if (!m->observer)
                return 0;
        if (changed)
                m->observer(m, MANAGER_EVENT_CHANGED, m->observer_userdata);
        if (provisioned)
                m->observer(m, MANAGER_EVENT_PROVISIONED, m->observer_userdata);
        return 0;
}

static void notify(Manager *m, bool provisioned) {
        m->notify_changed = true;
        if (provisioned)
                m->notify_provisioned = true;
        if (!m->notify_defer) {
                if (sd_event_add_defer(m->event, &m->notify_defer, notify_dispatch, m) < 0)
                        return;
                (void) sd_event_source_set_description(m->notify_defer, "manager-notify");
        }
        (void) sd_event_source_set_enabled(m->notify_defer, SD_EVENT_ONESHOT);
}

void manager_set_observer(Manager *m, manager_observer_t cb, void *userdata) {
        m->observer = cb;
        m->observer_userdata = userdata;
}

void manager_get_info(Manager *m, ManagerInfo *ret) {
        *ret = (ManagerInfo) {
                .state = m->state,
                .registration_id = m->config->registration_id,
                .id_scope = m->config->id_scope,
                .endpoint = m->config->endpoint,
                .transport = m->config->transport,
                .attestation_type = attestation_type_to_string(m->config->attestation),
                .assigned_hub = m->assigned_hub,
                .device_id = m->device_id,
                .substatus = m->substatus,
                .payload = m->payload,
                .source = m->source,
                .last_provisioned_usec = m->last_provisioned_usec,
                .next_attempt_usec = m->next_attempt_usec,
                .attempts = m->attempts,
                .last_error = m->last_error,
                .last_error_code = m->last_error_code,
                .last_tracking_id = m->last_tracking_id,
        };
}

sd_event *manager_get_event(Manager *m) {
        return m->event;
}

/* ---- persistence ------------------------------------------------------------ */

static int arm(Manager *m, sd_event_source **s, uint64_t delay_usec, sd_event_time_handler_t cb, const char *desc);
static void notify(Manager *m, bool provisioned);
static void write_state(Manager *m);

static int write_retry_handler(sd_event_source *s, uint64_t usec, void *userdata) {
        Manager *m = userdata;

        m->write_retry = sd_event_source_disable_unref(m->write_retry);
        write_state(m);
        return 0;
}

/* Writes what is dirty: the cache, and identity.env when provisioned. A full
 * or read-only state directory must not lose the identity: it stays in
 * memory, LastError says why, and the write is tried again with the retry
 * back-off (retry.min-sec doubling up to retry.max-sec) until it succeeds. */
static void write_state(Manager *m) {
        int r = 0;
        const char *path = NULL;

        if (m->cache_dirty) {
                CacheData d = {
                        .fingerprint = m->fingerprint,
                        .registration_id = m->config->registration_id,
                        .assigned_hub = m->assigned_hub,
                        .device_id = m->device_id,
                        .substatus = m->substatus,
                        .payload = m->payload,
                        .tracking_id = m->last_tracking_id,
                        .provisioned_usec = m->last_provisioned_usec,
                        .attempts = m->attempts,
                        .next_attempt_usec = m->next_attempt_usec,
                };

                path = m->config->cache_path;
                r = cache_save(path, &d);
                if (r >= 0)
                        m->cache_dirty = false;
        }
        if (m->identity_env_dirty) {
                int k = 0;

                if (m->assigned_hub)
                        k = identity_env_write(m->config->identity_env_path, m->assigned_hub, m->device_id);
                if (k == -EINVAL) {
                        /* characters a shell could misread: retrying cannot help */
                        log_error_errno(k, "Refusing to write %s: the assigned hub or device id holds control characters or quotes.",
                                        m->config->identity_env_path);
                        k = 0;
                }
                if (k >= 0)
                        m->identity_env_dirty = false;
                else if (r >= 0) {
                        r = k;
                        path = m->config->identity_env_path;
                }
        }

        if (r >= 0) {
                m->write_retry = sd_event_source_disable_unref(m->write_retry);
                if (m->write_failures > 0)
                        log_notice("Wrote the state to disk again after %u failed attempts.", m->write_failures);
                m->write_failures = 0;
                if (m->write_error_shown) {
                        m->write_error_shown = false;
                        /* unless a newer error replaced ours */
                        if (m->last_error && strncmp(m->last_error, "cannot write ", 13) == 0) {
                                m->last_error = mfree_str(m->last_error);
                                m->last_error_code = 0;
                                notify(m, false);
                        }
                }
                return;
        }

        uint64_t delay = m->config->retry_min_usec ?: USEC_PER_SEC;
        for (unsigned i = 0; i < m->write_failures && delay < m->config->retry_max_usec; i++)
                delay *= 2;
        if (delay > m->config->retry_max_usec)
                delay = m->config->retry_max_usec;
        if (delay < USEC_PER_SEC)
                delay = USEC_PER_SEC;
        m->write_failures++;
        log_warning_errno(r, "Failed to write %s, keeping the state in memory and trying again in %.0f s: %m",
                          path, (double) delay / USEC_PER_SEC);
        set_error(m, "cannot write %s: %s", path, strerror(-r));
        m->last_error_code = r;
        m->write_error_shown = true;
        notify(m, false);
        (void) arm(m, &m->write_retry, delay, write_retry_handler, "write-retry");
}

static void persist(Manager *m) {
        m->cache_dirty = true;
        write_state(m);
}

/* ---- timers ----------------------------------------------------------------- */

static void stop_timers(Manager *m) {
        m->timer = sd_event_source_disable_unref(m->timer);
        m->step_timeout = sd_event_source_disable_unref(m->step_timeout);
}

static int arm(Manager *m, sd_event_source **s, uint64_t delay_usec, sd_event_time_handler_t cb, const char *desc) {
        int r;

        *s = sd_event_source_disable_unref(*s);
        /* CLOCK_BOOTTIME: a suspended device still counts the wait. */
        r = sd_event_add_time_relative(m->event, s, CLOCK_BOOTTIME, delay_usec, 10 * USEC_PER_MSEC, cb, m);
        if (r < 0)
                return log_error_errno(r, "Failed to arm the %s timer: %m", desc);
        (void) sd_event_source_set_description(*s, desc);
        return 0;
}

static void session_close(Manager *m) {
        if (!m->session)
                return;
        dps_session_disconnect(m->session);
        /* Frees libmosquitto and the TLS context: a provisioned daemon holds
         * no connection. Deferred by the session if we are inside its handler. */
        m->session = dps_session_free(m->session);
}

/* ---- state ------------------------------------------------------------------- */

static char *status_line(Manager *m) {
        const Config *c = m->config;
        char *s = NULL;
        int r = -1;

        switch (m->state) {
        case MANAGER_UNPROVISIONED:
                r = asprintf(&s, "Not provisioned");
                break;
        case MANAGER_WAITING_FOR_CLOCK:
                r = asprintf(&s, "Waiting for the system clock to be set (%s)", m->status_detail ?: "it is obviously wrong");
                break;
        case MANAGER_CONNECTING:
                r = asprintf(&s, "Connecting to %s:%u (attempt %" PRIu32 ")", c->endpoint, c->port, m->attempts);
                break;
        case MANAGER_REGISTERING:
                r = asprintf(&s, "Registering %s with DPS (attempt %" PRIu32 ")", c->registration_id, m->attempts);
                break;
        case MANAGER_ASSIGNING:
                r = asprintf(&s, "Waiting for the assignment of %s (%s)", c->registration_id, m->status_detail ?: "polling");
                break;
        case MANAGER_PROVISIONED:
                r = asprintf(&s, "Provisioned to hub %s as %s%s", m->assigned_hub, m->device_id,
                             m->source && streq(m->source, "cache") ? " (from cache)" : "");
                break;
        case MANAGER_RETRYING:
                r = asprintf(&s, "%s", m->status_detail ?: "Waiting before the next attempt");
                break;
        case MANAGER_FAILED:
                r = asprintf(&s, "Registration failed: %s%s%s", m->last_error ?: "unknown error",
                             m->status_detail ? "; " : "", m->status_detail ?: "");
                break;
        case MANAGER_DISABLED:
                r = asprintf(&s, "Enrollment of %s is disabled in DPS%s%s", c->registration_id,
                             m->status_detail ? "; " : "", m->status_detail ?: "");
                break;
        case _MANAGER_STATE_MAX:
                break;
        }
        return r < 0 ? NULL : s;
}

static int clock_watch_arm(Manager *m, uint64_t min_usec);
static void attempt_failed(Manager *m, DpsOutcome outcome, int64_t retry_after, const char *why);

static void enter_connecting(Manager *m);
static void send_request(Manager *m);

/* The only place that assigns m->state. */
static void manager_enter_state(Manager *m, ManagerState s) {
        _cleanup_free_ char *status = NULL;
        ManagerState old = m->state;
        bool first = !m->state_set;

        m->state = s;
        m->state_set = true;
        log_set_context(manager_state_to_string(s), m->config->registration_id, m->attempts);

        status = status_line(m);
        if (first || old != s)
                log_info("State %s -> %s: %s", first ? "start" : manager_state_to_string(old),
                         manager_state_to_string(s), status ?: "");
        else
                log_info("State %s: %s", manager_state_to_string(s), status ?: "");
        if (status)
                (void) sd_notifyf(false, "STATUS=%s", status);

        notify(m, s == MANAGER_PROVISIONED);

        /* entry actions */
        switch (s) {
        case MANAGER_CONNECTING:
                enter_connecting(m);
                break;
        case MANAGER_REGISTERING:
                send_request(m);
                break;
        case MANAGER_PROVISIONED:
        case MANAGER_UNPROVISIONED:
        case MANAGER_WAITING_FOR_CLOCK:
        case MANAGER_ASSIGNING:
        case MANAGER_RETRYING:
        case MANAGER_FAILED:
        case MANAGER_DISABLED:
        case _MANAGER_STATE_MAX:
                break;
        }
}

/* ---- clock sanity ------------------------------------------------------------- */

/* SAS tokens and certificates need a true clock. A clock before the build
 * date, or before the device certificate's notBefore, is obviously wrong.
 * $DPSD_MIN_SANE_TIME (Unix seconds) raises the bar, for tests. */
static uint64_t min_sane_usec(const Manager *m) {
        uint64_t min = (uint64_t) strtoull(BUILD_DATE_EPOCH, NULL, 10) * USEC_PER_SEC;
        const char *e = getenv("DPSD_MIN_SANE_TIME");

        if (m->config->certificate_not_before_usec > min)
                min = m->config->certificate_not_before_usec;
        if (e) {
                uint64_t t = (uint64_t) strtoull(e, NULL, 10) * USEC_PER_SEC;
                if (t > min)
                        min = t;
        }
        return min;
}

static int clock_handler(sd_event_source *s, int fd, uint32_t revents, void *userdata) {
        Manager *m = userdata;
        uint64_t exp;

        /* ECANCELED: the clock was set; otherwise it reached the sane time. */
        (void) read(fd, &exp, sizeof exp);
        m->clock_watch = sd_event_source_disable_unref(m->clock_watch);
        log_info("The system clock was set or reached the sane time, checking it again.");
        attempt_start(m);
        return 0;
}

static int clock_watch_arm(Manager *m, uint64_t min_usec) {
        struct itimerspec its = {
                .it_value.tv_sec = (time_t) (min_usec / USEC_PER_SEC),
                .it_value.tv_nsec = (long) (min_usec % USEC_PER_SEC) * 1000,
        };
        int r;

        m->clock_watch = sd_event_source_disable_unref(m->clock_watch);
        if (m->clock_fd < 0) {
                m->clock_fd = timerfd_create(CLOCK_REALTIME, TFD_NONBLOCK | TFD_CLOEXEC);
                if (m->clock_fd < 0)
                        return log_error_errno(errno, "Failed to create a clock-change timer: %m");
        }
        /* Fires when the clock is set (read fails with ECANCELED) or when it
         * reaches the sane time by itself. */
        if (timerfd_settime(m->clock_fd, TFD_TIMER_ABSTIME | TFD_TIMER_CANCEL_ON_SET, &its, NULL) < 0)
                return log_error_errno(errno, "Failed to arm the clock-change timer: %m");
        r = sd_event_add_io(m->event, &m->clock_watch, m->clock_fd, EPOLLIN, clock_handler, m);
        if (r < 0)
                return log_error_errno(r, "Failed to watch the clock: %m");
        (void) sd_event_source_set_description(m->clock_watch, "clock-change");
        return 0;
}

/* ---- the attempt --------------------------------------------------------------- */

static int retry_timer_handler(sd_event_source *s, uint64_t usec, void *userdata) {
        Manager *m = userdata;

        m->timer = sd_event_source_disable_unref(m->timer);
        attempt_start(m);
        return 0;
}

static int step_timeout_handler(sd_event_source *s, uint64_t usec, void *userdata) {
        Manager *m = userdata;
        _cleanup_free_ char *why = NULL;

        m->step_timeout = sd_event_source_disable_unref(m->step_timeout);
        if (m->state == MANAGER_CONNECTING)
                (void) asprintf(&why, "no connection to %s:%u within %" PRIu64 " s",
                                m->config->endpoint, m->config->port, m->config->connect_timeout_usec / USEC_PER_SEC);
        else
                (void) asprintf(&why, "no answer from the service within %" PRIu64 " s",
                                m->config->response_timeout_usec / USEC_PER_SEC);
        m->last_error_code = -ETIMEDOUT;
        attempt_failed(m, DPS_OUTCOME_TRANSIENT, -1, why ?: "timeout");
        return 0;
}

static const char *outcome_reason(DpsOutcome o) {
        switch (o) {
        case DPS_OUTCOME_THROTTLED:   return "throttled by service";
        case DPS_OUTCOME_CREDENTIALS: return "credentials rejected: check the key or certificate and the enrollment; backing off long";
        case DPS_OUTCOME_PERMANENT:   return "rejected by service";
        case DPS_OUTCOME_TRANSIENT:   return "service or network error";
        case DPS_OUTCOME_ASSIGNED:
        case DPS_OUTCOME_PENDING:
        case _DPS_OUTCOME_MAX:
                break;
        }
        return "retrying";
}

static void schedule_attempt(Manager *m, uint64_t delay, ManagerState state, DpsOutcome outcome) {
        m->next_attempt_usec = now_usec(CLOCK_REALTIME) + delay;
        if (state == MANAGER_RETRYING)
                set_status_detail(m, "Waiting %" PRIu64 " s before retry %u (%s%s%s)",
                                  (delay + USEC_PER_SEC / 2) / USEC_PER_SEC, m->backoff.attempt, outcome_reason(outcome),
                                  m->last_error ? ": " : "", m->last_error ?: "");
        else
                set_status_detail(m, "next try in %" PRIu64 " s", (delay + USEC_PER_SEC / 2) / USEC_PER_SEC);
        persist(m);
        (void) arm(m, &m->timer, delay, retry_timer_handler, "retry");
        manager_enter_state(m, state);
}

/* What ending an attempt, failed or final, always does. */
static void attempt_end(Manager *m, const char *why) {
        session_close(m);
        stop_timers(m);
        m->request = REQUEST_NONE;
        m->operation_id = mfree_str(m->operation_id);
        if (why)
                set_error(m, "%s", why);
}

/* Ends the attempt: closes the connection and waits for the back-off. The
 * daemon never gives up: network and service failures only cost time. */
static void attempt_failed(Manager *m, DpsOutcome outcome, int64_t retry_after, const char *why) {
        uint64_t delay;

        attempt_end(m, why);

        m->not_before_usec = retry_after > 0 ? now_usec(CLOCK_BOOTTIME) + (uint64_t) retry_after * USEC_PER_SEC : 0;
        delay = dps_backoff_next(&m->backoff, outcome, retry_after);
        log_warning("Attempt %" PRIu32 " failed (%s): %s; next attempt in %.1f s.", m->attempts,
                    dps_outcome_to_string(outcome), why ?: "unknown error", (double) delay / USEC_PER_SEC);
        schedule_attempt(m, delay, MANAGER_RETRYING, outcome);
}

static void attempt_final(Manager *m, ManagerState state, const char *why) {
        uint64_t delay;

        attempt_end(m, why);
        /* Final for this configuration, but an operator may fix the
         * enrollment: look again after a long back-off (or on Reprovision,
         * SIGHUP, or a config change). */
        delay = dps_backoff_next(&m->backoff, DPS_OUTCOME_PERMANENT, -1);
        log_error("Registration of %s %s: %s.", m->config->registration_id,
                  state == MANAGER_DISABLED ? "is disabled" : "failed", why ?: "no reason given");
        schedule_attempt(m, delay, state, DPS_OUTCOME_PERMANENT);
}

static void attempt_start(Manager *m) {
        uint64_t now = now_usec(CLOCK_REALTIME), min = min_sane_usec(m);

        session_close(m);
        stop_timers(m);
        m->clock_watch = sd_event_source_disable_unref(m->clock_watch);

        if (now < min) {
                time_t t = (time_t) (now / USEC_PER_SEC), mt = (time_t) (min / USEC_PER_SEC);
                char a[32] = "", b[32] = "";
                struct tm tm;

                strftime(a, sizeof a, "%Y-%m-%d %H:%M:%S", gmtime_r(&t, &tm));
                strftime(b, sizeof b, "%Y-%m-%d %H:%M:%S", gmtime_r(&mt, &tm));
                set_status_detail(m, "it reads %s UTC, before %s UTC", a, b);
                if (clock_watch_arm(m, min) < 0) {
                        /* Without a clock-change watch, look again in a minute. */
                        (void) arm(m, &m->timer, 60 * USEC_PER_SEC, retry_timer_handler, "clock-poll");
                }
                manager_enter_state(m, MANAGER_WAITING_FOR_CLOCK);
                return;
        }

        m->attempts++;
        m->next_attempt_usec = 0;
        m->attempt_start_usec = now_usec(CLOCK_BOOTTIME);
        m->request = REQUEST_REGISTER;
        m->operation_id = mfree_str(m->operation_id);
        set_status_detail(m, NULL);
        manager_enter_state(m, MANAGER_CONNECTING);
}

static bool attempt_overdue(Manager *m) {
        uint64_t now = now_usec(CLOCK_BOOTTIME);

        /* attempt_start_usec moves forward by the waits the service asks
         * for, so it may be ahead of now: not overdue, and no wrap-around. */
        return now > m->attempt_start_usec && now - m->attempt_start_usec > m->config->total_timeout_usec;
}

static void session_handler(DpsSession *s, const DpsSessionEvent *ev, void *userdata);

/* Entry action of CONNECTING: a fresh TLS context, a fresh SAS token, a
 * non-blocking connect. */
static void enter_connecting(Manager *m) {
        const Config *c = m->config;
        _cleanup_secret_ char *key = NULL, *token = NULL;
        _cleanup_free_ char *username = NULL, *err = NULL;
        SSL_CTX *ctx = NULL;
        int r;

        r = tls_context_new(c, &ctx, &err);
        if (r < 0) {
                m->last_error_code = r;
                attempt_failed(m, DPS_OUTCOME_TRANSIENT, -1, err ?: "cannot set up TLS");
                return;
        }

        if (c->attestation == ATTESTATION_SYMMETRIC_KEY) {
                r = config_read_device_key(c, &key, &err);
                if (r < 0) {
                        SSL_CTX_free(ctx);
                        m->last_error_code = r;
                        attempt_failed(m, DPS_OUTCOME_CREDENTIALS, -1, err ?: "cannot read the key");
                        return;
                }
                r = dps_sas_sign(c->id_scope, c->registration_id, key,
                                 now_usec(CLOCK_REALTIME) / USEC_PER_SEC + SAS_LIFETIME_SEC, &token);
                if (r < 0) {
                        SSL_CTX_free(ctx);
                        m->last_error_code = r;
                        attempt_failed(m, DPS_OUTCOME_CREDENTIALS, -1, "cannot sign a SAS token with the configured key");
                        return;
                }
        }

        r = dps_username(c->id_scope, c->registration_id, NULL, "dpsd/" PACKAGE_VERSION, &username);
        if (r >= 0)
                r = dps_session_new(m->event, ctx, session_handler, m, &m->session);
        SSL_CTX_free(ctx);   /* the session holds its own reference */
        if (r >= 0)
                r = dps_session_connect(m->session, &(DpsSessionParams) {
                                .host = c->endpoint,
                                .port = c->port,
                                .client_id = c->registration_id,
                                .username = username,
                                .password = token,
                                .keepalive_sec = c->keepalive_sec,
                                .websocket = streq(c->transport, "mqtt-ws"),
                                .proxy = &c->proxy,
                        });
        if (r < 0) {
                _cleanup_free_ char *why = NULL;
                m->last_error_code = r;
                (void) asprintf(&why, "cannot connect to %s:%u: %s", c->endpoint, c->port, strerror(-r));
                attempt_failed(m, DPS_OUTCOME_TRANSIENT, -1, why);
                return;
        }
        (void) arm(m, &m->step_timeout, c->connect_timeout_usec, step_timeout_handler, "connect-timeout");
}

static void send_request(Manager *m) {
        const Config *c = m->config;
        _cleanup_free_ char *topic = NULL, *body = NULL;
        int r;

        if (attempt_overdue(m)) {
                m->last_error_code = -ETIMEDOUT;
                attempt_failed(m, DPS_OUTCOME_TRANSIENT, -1, "the registration took longer than timeouts.total-sec");
                return;
        }

        /* A new $rid for every request: the answer is matched on it. */
        free(m->rid);
        m->rid = NULL;
        if (asprintf(&m->rid, "%" PRIu64, ++m->rid_counter) < 0) {
                attempt_failed(m, DPS_OUTCOME_TRANSIENT, -1, "out of memory");
                return;
        }

        if (m->request == REQUEST_POLL && m->operation_id) {
                r = dps_topic_poll(m->rid, m->operation_id, &topic);
                /* "Poll bodies vary (empty, one space, or the full register
                 * JSON): a server ignores them." We send none. */
        } else {
                m->request = REQUEST_REGISTER;
                r = dps_topic_register(m->rid, &topic);
                if (r >= 0)
                        r = dps_body_register(c->registration_id, c->payload, &body);
        }
        if (r >= 0)
                r = dps_session_publish(m->session, topic, body ?: "");
        if (r < 0) {
                _cleanup_free_ char *why = NULL;
                m->last_error_code = r;
                (void) asprintf(&why, "cannot send the %s request: %s",
                                m->request == REQUEST_POLL ? "poll" : "register", strerror(-r));
                attempt_failed(m, DPS_OUTCOME_TRANSIENT, -1, why);
                return;
        }
        log_debug("Sent %s request, $rid=%s.", m->request == REQUEST_POLL ? "poll" : "register", m->rid);
        (void) arm(m, &m->step_timeout, c->response_timeout_usec, step_timeout_handler, "response-timeout");
}

static int resend_timer_handler(sd_event_source *s, uint64_t usec, void *userdata) {
        Manager *m = userdata;

        m->timer = sd_event_source_disable_unref(m->timer);
        if (!dps_session_is_connected(m->session)) {
                attempt_failed(m, DPS_OUTCOME_TRANSIENT, -1, "connection lost while waiting");
                return 0;
        }
        if (m->request == REQUEST_POLL) {
                set_status_detail(m, "polling operation %s", m->operation_id);
                manager_enter_state(m, MANAGER_ASSIGNING);
                send_request(m);
        } else
                manager_enter_state(m, MANAGER_REGISTERING);
        return 0;
}

/* Runs on the loop iteration after provisioning, once the session (freed
 * after its handler returned), its TLS context and libmosquitto are gone:
 * hands the freed heap back, so a provisioned daemon keeps only what it
 * needs for months. */
static int trim_handler(sd_event_source *s, void *userdata) {
        (void) malloc_trim(0);
        return 0;
}

static void provisioned(Manager *m, const char *source) {
        int r;

        session_close(m);
        stop_timers(m);
        m->clock_watch = sd_event_source_disable_unref(m->clock_watch);
        m->request = REQUEST_NONE;
        m->operation_id = mfree_str(m->operation_id);
        m->source = source;
        m->next_attempt_usec = 0;
        m->not_before_usec = 0;
        set_status_detail(m, NULL);

        if (streq(source, "service")) {
                dps_backoff_next(&m->backoff, DPS_OUTCOME_ASSIGNED, -1);
                m->last_provisioned_usec = now_usec(CLOCK_REALTIME);
                m->attempts = 0;
                m->last_error = mfree_str(m->last_error);
                m->last_error_code = 0;
                m->cache_dirty = true;
        }

        /* before the state change: whoever sees "provisioned" finds the files */
        m->identity_env_dirty = true;
        write_state(m);

        if (!m->trim) {
                r = sd_event_add_defer(m->event, &m->trim, trim_handler, NULL);
                if (r < 0)
                        log_debug_errno(r, "Failed to schedule the heap trim, ignoring: %m");
        }
        if (m->trim)
                (void) sd_event_source_set_enabled(m->trim, SD_EVENT_ONESHOT);

        manager_enter_state(m, MANAGER_PROVISIONED);
}

/* Text from the service goes into log lines, STATUS= (where a newline would
 * start a new notify field) and D-Bus properties: printable ASCII only,
 * bounded. NULL stays NULL. */
/* An operationId goes back into a topic, STATUS= and the logs: DPS's are
 * like "4.2d6d6fa1d26e3e2f.c38bc5a9-b3b7-4b9c-8b43-8d7f6f3b0f56". */
static bool operation_id_valid(const char *s) {
        size_t n = strlen(s);

        if (n == 0 || n > 128)
                return false;
        for (; *s; s++)
                if (!(isalnum((unsigned char) *s) || *s == '-' || *s == '.' || *s == '_'))
                        return false;
        return true;
}

static char *service_text(const char *s, size_t max) {
        size_t n;
        char *r;

        if (!s)
                return NULL;
        n = strnlen(s, max + 1);
        r = malloc(n > max ? max + 4 : n + 1);
        if (!r)
                return NULL;
        for (size_t i = 0; i < n && i < max; i++)
                r[i] = (s[i] >= 0x20 && s[i] < 0x7f) ? s[i] : '?';
        if (n > max)
                memcpy(r + max, "...", 4);
        else
                r[n] = 0;
        return r;
}

/* "hub-a.azure-devices.net": a host name, nothing else. */
/* Why the service may refuse an X.509 device that the config loader cannot
 * judge (the clock may be wrong when it loads): "" when nothing is known. */
static const char *certificate_note(Manager *m) {
        uint64_t after = m->config->certificate_not_after_usec;

        if (m->config->attestation == ATTESTATION_X509 && after > 0 && now_usec(CLOCK_REALTIME) > after)
                return "; the device certificate has expired: renew it";
        return "";
}

static bool hub_name_valid(const char *s) {
        size_t n = s ? strlen(s) : 0;

        if (n == 0 || n > 253)
                return false;
        for (size_t i = 0; i < n; i++)
                if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= 'A' && s[i] <= 'Z') ||
                      (s[i] >= '0' && s[i] <= '9') || s[i] == '-' || s[i] == '.'))
                        return false;
        return true;
}

/* IoT Hub device ids: up to 128 printable ASCII characters. */
static bool device_id_valid(const char *s) {
        size_t n = s ? strlen(s) : 0;

        if (n == 0 || n > 128)
                return false;
        for (size_t i = 0; i < n; i++)
                if (s[i] <= 0x20 || s[i] >= 0x7f)
                        return false;
        return true;
}

static void handle_response(Manager *m, const DpsSessionEvent *ev) {
        _cleanup_(dps_response_freep) DpsResponse *resp = NULL;
        _cleanup_free_ char *message = NULL, *error_message = NULL, *tracking = NULL;
        const DpsResponseTopic *t = ev->topic;
        LogDps ld = { .status = t->status };
        DpsOutcome outcome;
        uint64_t delay;
        int r;

        if (!m->rid || !streq(t->rid, m->rid)) {
                log_debug("Ignoring a response for $rid=%s (waiting for %s).", t->rid, m->rid ?: "none");
                return;
        }
        /* One answer per request: a duplicate (same $rid, e.g. a QoS 1
         * redelivery) must not be taken for the answer to the next poll. */
        m->rid = mfree_str(m->rid);
        m->step_timeout = sd_event_source_disable_unref(m->step_timeout);

        r = dps_response_parse(ev->body, ev->body_len, &resp);
        if (r < 0) {
                _cleanup_free_ char *why = NULL;
                m->last_error_code = r;
                (void) asprintf(&why, "%s response body (status %d, %zu bytes)",
                                r == -EMSGSIZE ? "oversized" : "malformed", t->status, ev->body_len);
                log_internal(LOG_WARNING, 0, &ld, "Unusable %s.", why ?: "response");
                attempt_failed(m, DPS_OUTCOME_TRANSIENT, t->retry_after, why);
                return;
        }

        message = service_text(resp->message, 200);
        error_message = service_text(resp->state.error_message, 200);
        tracking = service_text(resp->tracking_id, 128);
        ld.error_code = resp->error_code ?: resp->state.error_code;
        ld.tracking_id = tracking;
        if (tracking)
                (void) set_str(&m->last_tracking_id, tracking);

        outcome = dps_classify(t->status, resp);
        log_internal(LOG_INFO, 0, &ld, "Response to %s: status %d, %s%s%s.",
                     m->request == REQUEST_POLL ? "poll" : "register", t->status, dps_outcome_to_string(outcome),
                     resp->status != DPS_STATUS_UNKNOWN ? ", body status " : "",
                     resp->status != DPS_STATUS_UNKNOWN ? dps_status_to_string(resp->status) : "");

        switch (outcome) {
        case DPS_OUTCOME_ASSIGNED: {
                const DpsRegistrationState *st = &resp->state;
                /* "Device id defaults to the registration id." */
                const char *device_id = st->device_id ?: m->config->registration_id;
                _cleanup_free_ char *substatus = NULL;

                if (!hub_name_valid(st->assigned_hub) || !device_id_valid(device_id)) {
                        m->last_error_code = -EBADMSG;
                        attempt_failed(m, DPS_OUTCOME_TRANSIENT, t->retry_after,
                                       "the assignment names an invalid hub or device id");
                        return;
                }
                if (set_str(&m->assigned_hub, st->assigned_hub) < 0 ||
                    set_str(&m->device_id, st->device_id ?: m->config->registration_id) < 0 ||
                    (st->substatus && !(substatus = service_text(st->substatus, 64))) ||
                    set_str(&m->substatus, substatus) < 0 ||
                    set_str(&m->payload, st->payload) < 0) {
                        attempt_failed(m, DPS_OUTCOME_TRANSIENT, -1, "out of memory");
                        return;
                }
                log_info("Assigned to hub %s as device %s%s%s.", m->assigned_hub, m->device_id,
                         m->substatus ? ", substatus " : "", m->substatus ?: "");
                provisioned(m, "service");
                return;
        }

        case DPS_OUTCOME_PENDING:
                if (resp->operation_id && !operation_id_valid(resp->operation_id)) {
                        /* It goes into a topic, STATUS= and the logs. */
                        m->last_error_code = -EBADMSG;
                        attempt_failed(m, DPS_OUTCOME_TRANSIENT, t->retry_after, "the service sent an invalid operationId");
                        return;
                }
                if (resp->operation_id)
                        (void) set_str(&m->operation_id, resp->operation_id);
                if (!m->operation_id) {
                        m->last_error_code = -EBADMSG;
                        attempt_failed(m, DPS_OUTCOME_TRANSIENT, t->retry_after, "the service answered 'assigning' without an operationId");
                        return;
                }
                m->request = REQUEST_POLL;
                delay = dps_backoff_next(&m->backoff, DPS_OUTCOME_PENDING, t->retry_after);
                /* The wait the service asked for is not ours to time out:
                 * timeouts.total-sec counts only the time spent on our side. */
                m->attempt_start_usec += delay;
                set_status_detail(m, "next poll in %.1f s%s", (double) delay / USEC_PER_SEC,
                                  t->retry_after >= 0 ? ", as the service asked" : "");
                (void) arm(m, &m->timer, delay, resend_timer_handler, "poll");
                manager_enter_state(m, MANAGER_ASSIGNING);
                return;

        case DPS_OUTCOME_THROTTLED:
        case DPS_OUTCOME_TRANSIENT: {
                _cleanup_free_ char *why = NULL;

                m->last_error_code = ld.error_code ?: t->status;
                (void) asprintf(&why, "%s %d%s%s", outcome == DPS_OUTCOME_THROTTLED ? "throttled, status" : "service error, status",
                                t->status, message ? ": " : "", message ?: "");
                set_error(m, "%s", why ?: "service error");
                delay = dps_backoff_next(&m->backoff, outcome, t->retry_after);
                if (delay > KEEP_CONNECTION_MAX_USEC || attempt_overdue(m)) {
                        /* attempt_failed() draws its own delay: undo ours. */
                        if (m->backoff.attempt > 0)
                                m->backoff.attempt--;
                        attempt_failed(m, outcome, t->retry_after, why);
                        return;
                }
                /* "wait at least retry-after, then retry the same request" */
                if (outcome == DPS_OUTCOME_THROTTLED)
                        m->attempt_start_usec += delay;   /* the service's wait, as for polls */
                log_warning("Request failed (%s); re-sending it in %.1f s.", why ?: "error", (double) delay / USEC_PER_SEC);
                m->next_attempt_usec = now_usec(CLOCK_REALTIME) + delay;
                set_status_detail(m, "Waiting %" PRIu64 " s before retry %u (%s: %s)",
                                  (delay + USEC_PER_SEC / 2) / USEC_PER_SEC, m->backoff.attempt,
                                  outcome_reason(outcome), why ?: "");
                (void) arm(m, &m->timer, delay, resend_timer_handler, "resend");
                manager_enter_state(m, MANAGER_RETRYING);
                return;
        }

        case DPS_OUTCOME_CREDENTIALS: {
                _cleanup_free_ char *why = NULL;

                m->last_error_code = ld.error_code ?: t->status;
                (void) asprintf(&why, "credentials rejected by the service (status %d%s%s)%s", t->status,
                                message ? ": " : "", message ?: "", certificate_note(m));
                attempt_failed(m, outcome, t->retry_after, why);
                return;
        }

        case DPS_OUTCOME_PERMANENT: {
                _cleanup_free_ char *why = NULL;
                DpsStatus bs = resp->status != DPS_STATUS_UNKNOWN ? resp->status : resp->state.status;
                const char *msg = error_message ?: message;

                m->last_error_code = ld.error_code ?: t->status;
                if (ld.error_code)
                        (void) asprintf(&why, "%s (status %d, errorCode %" PRIi64 "%s%s)",
                                        bs == DPS_STATUS_DISABLED ? "enrollment disabled" :
                                        bs == DPS_STATUS_FAILED ? "registration failed" : "request rejected",
                                        t->status, ld.error_code, msg ? ": " : "", msg ?: "");
                else
                        (void) asprintf(&why, "%s (status %d%s%s)",
                                        bs == DPS_STATUS_DISABLED ? "enrollment disabled" :
                                        bs == DPS_STATUS_FAILED ? "registration failed" : "request rejected",
                                        t->status, msg ? ": " : "", msg ?: "");
                attempt_final(m, bs == DPS_STATUS_DISABLED ? MANAGER_DISABLED : MANAGER_FAILED, why);
                return;
        }

        case _DPS_OUTCOME_MAX:
                break;
        }
        attempt_failed(m, DPS_OUTCOME_TRANSIENT, -1, "unclassified response");
}

static void session_handler(DpsSession *s, const DpsSessionEvent *ev, void *userdata) {
        Manager *m = userdata;
        int r;

        switch (ev->type) {
        case DPS_SESSION_CONNECTED:
                log_debug("Connected to %s:%u, subscribing.", m->config->endpoint, m->config->port);
                r = dps_session_subscribe(s);
                if (r < 0) {
                        m->last_error_code = r;
                        attempt_failed(m, DPS_OUTCOME_TRANSIENT, -1, "cannot subscribe to the response topic");
                }
                return;

        case DPS_SESSION_REFUSED: {
                _cleanup_free_ char *why = NULL;
                /* CONNACK 4 bad user name or password, 5 not authorized */
                DpsOutcome o = ev->connack == 4 || ev->connack == 5 ? DPS_OUTCOME_CREDENTIALS : DPS_OUTCOME_TRANSIENT;

                m->last_error_code = -ECONNREFUSED;
                (void) asprintf(&why, "connection refused by the service (CONNACK %d%s)%s", ev->connack,
                                o == DPS_OUTCOME_CREDENTIALS ? ": credentials rejected" : "",
                                o == DPS_OUTCOME_CREDENTIALS ? certificate_note(m) : "");
                attempt_failed(m, o, -1, why);
                return;
        }

        case DPS_SESSION_SUBSCRIBED:
                m->step_timeout = sd_event_source_disable_unref(m->step_timeout);
                manager_enter_state(m, MANAGER_REGISTERING);
                return;

        case DPS_SESSION_RESPONSE:
                handle_response(m, ev);
                return;

        case DPS_SESSION_DISCONNECTED: {
                _cleanup_free_ char *why = NULL;
                bool tls = (ev->error == -EPROTO && !(ev->detail && strstr(ev->detail, "WebSocket"))) ||
                        (ev->detail && strstr(ev->detail, "SSL"));
                /* dps-tunnel: "proxy refused CONNECT: 407 ...", "Failed to connect to proxy ..." */
                bool proxy = ev->detail && strstr(ev->detail, "proxy ");

                m->last_error_code = ev->error;
                (void) asprintf(&why, "%s %s:%u%s%s",
                                proxy ? "cannot reach" : tls ? "TLS failure with" : "connection lost to",
                                m->config->endpoint, m->config->port,
                                ev->detail || ev->error ? ": " : "",
                                ev->detail ?: strerror(-ev->error));
                attempt_failed(m, DPS_OUTCOME_TRANSIENT, -1, why);
                return;
        }

        case _DPS_SESSION_EVENT_MAX:
                break;
        }
}

/* ---- lifetime -------------------------------------------------------------------- */

int manager_new(sd_event *event, Config *config, const char *config_path, Manager **ret) {
        _cleanup_(config_freep) Config *c = config;
        Manager *m;
        uint64_t seed = 0;
        int r;

        m = calloc(1, sizeof *m);
        if (!m)
                return -ENOMEM;
        m->clock_fd = -1;
        m->event = sd_event_ref(event);
        m->config = TAKE_PTR(c);
        m->state = MANAGER_UNPROVISIONED;
        if (!(m->config_path = strdup(config_path))) {
                manager_free(m);
                return -ENOMEM;
        }
        r = config_fingerprint(m->config, &m->fingerprint);
        if (r < 0) {
                manager_free(m);
                return r;
        }
        /* Devices that boot together must not retry together. */
        if (getrandom(&seed, sizeof seed, GRND_NONBLOCK) != sizeof seed)
                seed = now_usec(CLOCK_REALTIME) ^ (uint64_t) getpid();
        dps_backoff_init(&m->backoff, m->config->retry_min_usec, m->config->retry_max_usec, seed);
        m->backoff.credentials_min_usec = m->config->retry_credentials_usec;

        if (m->config->proxy.host) {
                _cleanup_free_ char *proxy = NULL;   /* user info shown as "***" */
                if (dps_proxy_to_string(&m->config->proxy, &proxy) >= 0)
                        log_info("Reaching %s:%u (%s) through the HTTP proxy %s.", m->config->endpoint,
                                 m->config->port, m->config->transport, proxy);
        }

        *ret = m;
        return 0;
}

Manager *manager_free(Manager *m) {
        if (!m)
                return NULL;
        session_close(m);
        stop_timers(m);
        m->clock_watch = sd_event_source_disable_unref(m->clock_watch);
        m->notify_defer = sd_event_source_disable_unref(m->notify_defer);
        m->write_retry = sd_event_source_disable_unref(m->write_retry);
        m->trim = sd_event_source_disable_unref(m->trim);
        if (m->clock_fd >= 0)
                close(m->clock_fd);
        config_free(m->config);
        free(m->config_path);
        free(m->fingerprint);
        free(m->assigned_hub);
        free(m->device_id);
        free(m->substatus);
        free(m->payload);
        free(m->last_error);
        free(m->last_tracking_id);
        free(m->status_detail);
        free(m->rid);
        free(m->operation_id);
        sd_event_unref(m->event);
        free(m);
        return NULL;
}

void manager_stop(Manager *m) {
        session_close(m);
        stop_timers(m);
        m->clock_watch = sd_event_source_disable_unref(m->clock_watch);
}

static void clear_assignment(Manager *m) {
        m->assigned_hub = mfree_str(m->assigned_hub);
        m->device_id = mfree_str(m->device_id);
        m->substatus = mfree_str(m->substatus);
        m->payload = mfree_str(m->payload);
        m->source = NULL;
        m->last_provisioned_usec = 0;
}

/* Reads the cache and decides how to begin. */
int manager_start(Manager *m) {
        _cleanup_(cache_data_freep) CacheData *d = NULL;
        const char *path = m->config->cache_path;
        uint64_t now = now_usec(CLOCK_REALTIME);
        int r;

        /* A SIGKILL or power cut between creating and renaming a temp file
         * leaves it behind: over years of unclean shutdowns they would pile up. */
        for (unsigned i = 0; i < 2; i++) {
                const char *p = i == 0 ? path : m->config->identity_env_path;
                int k = remove_stale_temp_files(p);
                if (k > 0)
                        log_info("Removed %d temporary file(s) left next to %s by an interrupted write.", k, p);
        }

        r = cache_load(path, &d);
        if (r == -ENOENT)
                log_info("No cache at %s: provisioning.", path);
        else if (r < 0) {
                _cleanup_free_ char *aside = NULL;
                int k = cache_set_aside(path, &aside);
                if (k < 0)
                        log_warning_errno(r, "Ignoring the unusable cache %s (%m); could not set it aside: %s",
                                          path, strerror(-k));
                else
                        log_warning_errno(r, "Ignoring the unusable cache %s (%m); moved it to %s.", path, aside);
        } else if (!streq(d->fingerprint, m->fingerprint)) {
                log_notice("The cache %s was made for another configuration (scope, registration id, attestation or endpoint changed): re-provisioning.", path);
                d = cache_data_free(d);
        } else if (d->assigned_hub && (!hub_name_valid(d->assigned_hub) || !device_id_valid(d->device_id))) {
                /* the same rules as for an answer of the service: the values
                 * reach logs, identity.env and D-Bus */
                _cleanup_free_ char *aside = NULL;
                (void) cache_set_aside(path, &aside);
                log_warning("Ignoring the cache %s: its hub name or device id is not valid; moved it to %s.",
                            path, aside ?: "(could not move it)");
                d = cache_data_free(d);
        } else if (d->assigned_hub) {
                m->assigned_hub = TAKE_PTR(d->assigned_hub);
                m->device_id = TAKE_PTR(d->device_id);
                m->substatus = TAKE_PTR(d->substatus);
                m->payload = TAKE_PTR(d->payload);
                m->last_tracking_id = TAKE_PTR(d->tracking_id);
                m->last_provisioned_usec = d->provisioned_usec;
                log_info("Using the cached assignment from %s: no network needed.", path);
                provisioned(m, "cache");
                return 0;
        }

        if (d && d->attempts > 0) {
                /* Survive restart loops: continue the back-off where it was. */
                m->attempts = d->attempts;
                m->backoff.attempt = d->attempts;
                if (d->next_attempt_usec > now) {
                        uint64_t delay = d->next_attempt_usec - now;
                        if (delay > m->config->retry_max_usec + m->config->retry_credentials_usec)
                                delay = m->config->retry_max_usec;  /* the clock moved back: do not wait for ever */
                        log_info("Continuing the back-off of a previous run: attempt %" PRIu32 " in %.1f s.",
                                 m->attempts + 1, (double) delay / USEC_PER_SEC);
                        set_error(m, "previous run: %" PRIu32 " failed attempts", m->attempts);
                        schedule_attempt(m, delay, MANAGER_RETRYING, DPS_OUTCOME_TRANSIENT);
                        return 0;
                }
        }

        manager_enter_state(m, MANAGER_UNPROVISIONED);
        /* Begin from the loop, after READY=1 and the bus are up. */
        return arm(m, &m->timer, 0, retry_timer_handler, "start");
}

int manager_reprovision(Manager *m) {
        switch (m->state) {
        case MANAGER_CONNECTING:
        case MANAGER_REGISTERING:
        case MANAGER_ASSIGNING:
        case MANAGER_WAITING_FOR_CLOCK:
                return 0;
        case MANAGER_RETRYING:
                /* A re-send on an open connection is part of a running registration. */
                if (m->session)
                        return 0;
                break;
        case MANAGER_UNPROVISIONED:
        case MANAGER_PROVISIONED:
        case MANAGER_FAILED:
        case MANAGER_DISABLED:
        case _MANAGER_STATE_MAX:
                break;
        }
        dps_backoff_reset(&m->backoff);
        m->attempts = 0;
        uint64_t now = now_usec(CLOCK_BOOTTIME);
        if (m->not_before_usec > now) {
                /* "429: wait at least retry-after": an operator's request too */
                uint64_t wait = m->not_before_usec - now;
                log_info("Re-provisioning in %.1f s (back-off cleared; the service asked to wait).",
                         (double) wait / USEC_PER_SEC);
                stop_timers(m);
                schedule_attempt(m, wait, MANAGER_RETRYING, DPS_OUTCOME_THROTTLED);
                return 1;
        }
        log_info("Re-provisioning now (back-off cleared).");
        attempt_start(m);
        return 1;
}

int manager_reload(Manager *m) {
        _cleanup_(config_freep) Config *c = NULL;
        _cleanup_free_ char *err = NULL, *fp = NULL;
        Config *old;
        int r;

        r = config_load(m->config_path, &c, &err);
        if (r < 0)
                return log_error_errno(r, "Reload failed, keeping the running configuration: %s", err ?: strerror(-r));
        r = config_fingerprint(c, &fp);
        if (r < 0)
                return log_error_errno(r, "Reload failed: %m");

        old = m->config;
        m->config = TAKE_PTR(c);
        m->backoff.min_usec = m->config->retry_min_usec;
        m->backoff.max_usec = m->config->retry_max_usec;
        m->backoff.credentials_min_usec = m->config->retry_credentials_usec;

        if (streq(fp, m->fingerprint)) {
                log_info("Configuration reloaded; the identity is unchanged.");
                config_free(old);
                notify(m, false);
                return 0;
        }

        log_notice("Configuration reloaded; scope, registration id, attestation or endpoint changed: re-provisioning.");
        /* The session may point into the old config: close it first. */
        session_close(m);
        stop_timers(m);
        config_free(old);
        free(m->fingerprint);
        m->fingerprint = TAKE_PTR(fp);
        clear_assignment(m);
        m->last_error = mfree_str(m->last_error);
        m->last_error_code = 0;
        if (unlink(m->config->identity_env_path) < 0 && errno != ENOENT)
                log_warning_errno(errno, "Failed to remove %s: %m", m->config->identity_env_path);
        dps_backoff_reset(&m->backoff);
        m->attempts = 0;
        attempt_start(m);
        return 1;
}
