/* SPDX-License-Identifier: MIT */
/* sim-dps.c: the simulated DPS: enrollments, authentication, allocation, operations, throttling, faults */
#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <json-c/json.h>
#include <openssl/rand.h>

#include "dps-macro.h"
#include "dps-util.h"
#include "sim-auth.h"
#include "sim-dps.h"
#include "sim-registry.h"


struct SimDps {
        const SimConfig *cfg;
        SimRegistry *registry;
        uint64_t rng;
        uint64_t reg_window, op_window;         /* start of the current minute, usec */
        unsigned regs_in_window, ops_in_window;
        uint64_t op_counter;
        unsigned *rr_next;              /* round-robin cursor per enrollment */
        bool dirty;
};

static uint64_t now_usec(clockid_t clock) {
        struct timespec ts;
        clock_gettime(clock, &ts);
        return (uint64_t) ts.tv_sec * 1000000u + (uint64_t) ts.tv_nsec / 1000u;
}

/* xorshift64*: deterministic for a --seed. */
static uint64_t rng_next(SimDps *d) {
        d->rng ^= d->rng >> 12;
        d->rng ^= d->rng << 25;
        d->rng ^= d->rng >> 27;
        return d->rng * 2685821657736338717ULL;
}

static double rng_unit(SimDps *d) {
        return (double) (rng_next(d) >> 11) / (double) (1ULL << 53);
}


static char *utc_now(void) {
        struct timespec ts;
        struct tm tm;
        char buf[64], *s;
        clock_gettime(CLOCK_REALTIME, &ts);
        gmtime_r(&ts.tv_sec, &tm);
        strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%S", &tm);
        /* DPS prints 7 fractional digits: "2019-11-19T21:39:05.1573304Z". */
        if (asprintf(&s, "%s.%07ldZ", buf, ts.tv_nsec / 100) < 0)
                return NULL;
        return s;
}

static char *uuid_new(void) {
        uint8_t b[16];
        char *s;
        if (RAND_bytes(b, sizeof b) != 1)
                return NULL;
        b[6] = (b[6] & 0x0f) | 0x40;
        b[8] = (b[8] & 0x3f) | 0x80;
        if (asprintf(&s, "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x",
                     b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12], b[13],
                     b[14], b[15]) < 0)
                return NULL;
        return s;
}

void sim_client_done(SimClient *c) {
        free(c->registration_id);
        *c = (SimClient) {};
}

void sim_reply_done(SimReply *r) {
        free(r->body);
        free(r->body_status);
        *r = (SimReply) { .retry_after = -1 };
}


SimDps *sim_dps_free(SimDps *d) {
        if (!d)
                return NULL;
        sim_registry_free(d->registry);
        free(d->rr_next);
        free(d);
        return NULL;
}

DEFINE_TRIVIAL_CLEANUP_FUNC(SimDps *, sim_dps_free);

int sim_dps_new(const SimConfig *cfg, uint64_t seed, SimDps **ret) {
        _cleanup_(sim_dps_freep) SimDps *d = calloc(1, sizeof *d);
        if (!d)
                return -ENOMEM;
        d->cfg = cfg;
        d->rng = seed ? seed : 0x9e3779b97f4a7c15ULL;
        d->rr_next = calloc(cfg->n_enrollments + 1, sizeof(unsigned));
        if (!d->rr_next || sim_registry_new(&d->registry) < 0)
                return -ENOMEM;
        *ret = TAKE_PTR(d);
        return 0;
}



/* ---- CONNECT ------------------------------------------------------------ */

static const SimEnrollment *find_individual(const SimDps *d, const char *registration_id) {
        for (size_t i = 0; i < d->cfg->n_enrollments; i++) {
                const SimEnrollment *e = &d->cfg->enrollments[i];
                if (e->registration_id && strcasecmp(e->registration_id, registration_id) == 0)
                        return e;
        }
        return NULL;
}

static int check_sas(const SimDps *d, const SimEnrollment *e, const char *password,
                     const char *registration_id, const char **reason) {
        _cleanup_secret_ char *k1 = NULL, *k2 = NULL;
        const char *keys[3] = {};
        uint64_t now = now_usec(CLOCK_REALTIME) / 1000000u;
        int r;

        if (e->group) {
                /* deviceKey = base64(HMAC-SHA256(base64-decode(groupKey), registrationId)) */
                r = dps_sas_derive_key(e->primary_key, registration_id, &k1);
                if (r < 0)
                        return r;
                if (e->secondary_key) {
                        r = dps_sas_derive_key(e->secondary_key, registration_id, &k2);
                        if (r < 0)
                                return r;
                }
                keys[0] = k1;
                keys[1] = k2;
        } else {
                keys[0] = e->primary_key;
                keys[1] = e->secondary_key;
        }
        return sim_auth_check_sas(password, d->cfg->id_scope, registration_id, keys, now, reason);
}

int sim_dps_connect(SimDps *d, const SimConnectRequest *req, SimClient *ret_client, uint8_t *ret_code) {
        _cleanup_(sim_client_done) SimClient c = {};
        _cleanup_(sim_username_done) SimUsername u = {};
        const SimEnrollment *e;
        const char *reason = NULL;
        int r;

        c.auth = !strempty(req->password) ? "sas" : req->cert ? "x509" : "none";
        c.faults = d->cfg->defaults;
        c.registration_id = strdup(req->client_id);
        if (!c.registration_id)
                return -ENOMEM;

        if (dps_registration_id_validate(req->client_id, false, NULL) < 0) {
                c.reason = "the ClientId is not a valid registration id";
                *ret_code = 2;
                goto done;
        }
        if (!req->username || sim_auth_parse_username(req->username, &u) < 0 ||
            strcasecmp(u.registration_id, req->client_id) != 0) {
                c.reason = "the username is not {idScope}/registrations/{ClientId}/api-version=...";
                *ret_code = 4;
                goto done;
        }
        if (streq(c.auth, "none")) {
                c.reason = "no SAS token and no client certificate";
                *ret_code = 5;
                goto done;
        }
        if (streq(c.auth, "sas") && strncasecmp(req->password, "SharedAccessSignature ", 22) != 0) {
                c.reason = "the password is not a SAS token";
                *ret_code = 4;
                goto done;
        }
        *ret_code = 0;

        /* DPS accepts the CONNECT of a device it will not provision and
         * answers its register with 401. */
        if (strcasecmp(u.id_scope, d->cfg->id_scope) != 0) {
                c.reason = "the username names another id scope";
                goto done;
        }

        e = find_individual(d, req->client_id);
        if (e) {
                c.enrollment = e;
                if (streq(c.auth, "sas")) {
                        if (e->attestation != SIM_ATTESTATION_SYMMETRIC_KEY) {
                                c.reason = "a SAS token for an X.509 enrollment";
                                goto done;
                        }
                        r = check_sas(d, e, req->password, req->client_id, &reason);
                } else {
                        if (e->attestation != SIM_ATTESTATION_X509) {
                                c.reason = "a certificate for a symmetric-key enrollment";
                                goto done;
                        }
                        r = sim_auth_check_x509(req->cert, req->chain, e->certificate, NULL, req->client_id, &reason);
                }
                if (r == -ENOMEM)
                        return r;
                c.authorized = r >= 0;
                c.reason = reason;
                goto done;
        }

        /* Group enrollments: the first whose credentials fit. */
        reason = "no enrollment for this registration id";
        for (size_t i = 0; i < d->cfg->n_enrollments; i++) {
                e = &d->cfg->enrollments[i];
                if (!e->group)
                        continue;
                if (streq(c.auth, "sas") && e->attestation == SIM_ATTESTATION_SYMMETRIC_KEY) {
                        const char *why = NULL;
                        r = check_sas(d, e, req->password, req->client_id, &why);
                        if (r == -ENOMEM)
                                return r;
                        if (r >= 0) {
                                c.enrollment = e;
                                c.authorized = true;
                                break;
                        }
                        /* Keep the most telling reason: an expired or
                         * misdirected token beats "no enrollment". */
                        if (r != -EACCES)
                                reason = why;
                } else if (streq(c.auth, "x509") && e->attestation == SIM_ATTESTATION_X509) {
                        const char *why = NULL;
                        r = sim_auth_check_x509(req->cert, req->chain, NULL, e->ca, req->client_id, &why);
                        if (r == -ENOMEM)
                                return r;
                        if (r >= 0) {
                                c.enrollment = e;
                                c.authorized = true;
                                break;
                        }
                        reason = why;
                }
        }
        if (!c.authorized)
                c.reason = reason;
done:
        if (c.enrollment)
                c.faults = sim_faults_merge(&d->cfg->defaults, &c.enrollment->faults);
        if (*ret_code == 0 && !c.authorized && c.faults.auth_failure == SIM_AUTH_FAILURE_CONNACK)
                *ret_code = 5;          /* refused at CONNECT, on request */
        *ret_client = c;
        c = (SimClient) {};
        return 0;
}

/* ---- bodies ------------------------------------------------------------- */

static int reply_json(SimReply *rep, int status, json_object *o, const char *body_status, SimBody mode) {
        const char *s = json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE);
        size_t n = strlen(s);
        rep->status = status;
        switch (mode) {
        case SIM_BODY_NORMAL:
                rep->body = strdup(s);
                rep->body_len = n;
                break;
        case SIM_BODY_MALFORMED:
                /* Cut the JSON in the middle: no parser accepts it. */
                rep->body = strndup(s, n / 2);
                rep->body_len = n / 2;
                rep->fault = "malformed-body";
                break;
        case SIM_BODY_OVERSIZED: {
                /* Valid JSON, but over the 96 KB a DPS message may have. */
                size_t pad = DPS_MAX_MESSAGE_SIZE + 1024;
                rep->body = malloc(n + pad + 32);
                if (rep->body) {
                        int k = snprintf(rep->body, 32, "{\"padding\":\"");
                        memset(rep->body + k, 'x', pad);
                        k += (int) pad;
                        k += snprintf(rep->body + k, 4, "\",");
                        memcpy(rep->body + k, s + 1, n - 1);
                        rep->body_len = (size_t) k + n - 1;
                        rep->body[rep->body_len] = 0;
                }
                rep->fault = "oversized-body";
                break;
        }
        case _SIM_BODY_MAX:
                break;
        }
        json_object_put(o);
        if (!rep->body)
                return -ENOMEM;
        if (body_status) {
                rep->body_status = strdup(body_status);
                if (!rep->body_status)
                        return -ENOMEM;
        }
        return 0;
}

static const char *error_message(int status) {
        switch (status) {
        case 400: return "Bad request";
        case 401: return "Unauthorized";
        case 403: return "Forbidden";
        case 404: return "Not found";
        case 412: return "Precondition failed";
        case 429: return "Too many requests";
        case 500: return "Internal server error";
        case 503: return "Service unavailable";
        }
        return "Error";
}

/* {"errorCode":401002,"trackingId":"...","message":"...","timestampUtc":"..."} */
static int reply_error(SimReply *rep, int status, int64_t code, const char *message, const SimClient *c) {
        _cleanup_free_ char *tracking = uuid_new(), *ts = utc_now();
        json_object *o = json_object_new_object();
        if (!tracking || !ts || !o) {
                json_object_put(o);
                return -ENOMEM;
        }
        json_object_object_add(o, "errorCode", json_object_new_int64(code ? code : (int64_t) status * 1000));
        json_object_object_add(o, "trackingId", json_object_new_string(tracking));
        json_object_object_add(o, "message", json_object_new_string(message ? message : error_message(status)));
        json_object_object_add(o, "timestampUtc", json_object_new_string(ts));
        return reply_json(rep, status, o, NULL, c->faults.body);
}

static json_object *registration_state_json(const SimRegistration *g) {
        json_object *s = json_object_new_object();
        if (!s)
                return NULL;
        json_object_object_add(s, "registrationId", json_object_new_string(g->registration_id));
        if (g->created)
                json_object_object_add(s, "createdDateTimeUtc", json_object_new_string(g->created));
        if (g->assigned_hub)
                json_object_object_add(s, "assignedHub", json_object_new_string(g->assigned_hub));
        if (g->device_id)
                json_object_object_add(s, "deviceId", json_object_new_string(g->device_id));
        json_object_object_add(s, "status", json_object_new_string(dps_status_to_string(g->status)));
        if (g->substatus)
                json_object_object_add(s, "substatus", json_object_new_string(g->substatus));
        if (g->error_code) {
                json_object_object_add(s, "errorCode", json_object_new_int64(g->error_code));
                json_object_object_add(s, "errorMessage", json_object_new_string(g->error_message ? g->error_message : ""));
        }
        if (g->updated)
                json_object_object_add(s, "lastUpdatedDateTimeUtc", json_object_new_string(g->updated));
        if (g->etag)
                json_object_object_add(s, "etag", json_object_new_string(g->etag));
        if (g->payload) {
                json_object *p = json_tokener_parse(g->payload);
                if (p)
                        json_object_object_add(s, "payload", p);
        }
        return s;
}

static int reply_operation(SimReply *rep, const SimClient *c, const SimRegistration *g, const SimOperation *op,
                           bool final) {
        json_object *o = json_object_new_object();
        if (!o)
                return -ENOMEM;
        json_object_object_add(o, "operationId", json_object_new_string(op->id));
        if (!final) {
                /* 202 {"operationId":"<id>","status":"assigning"} */
                json_object_object_add(o, "status", json_object_new_string("assigning"));
                rep->retry_after = c->faults.retry_after;
                return reply_json(rep, 202, o, "assigning", c->faults.body);
        }
        json_object_object_add(o, "status", json_object_new_string(dps_status_to_string(g->status)));
        json_object_object_add(o, "registrationState", registration_state_json(g));
        return reply_json(rep, 200, o, dps_status_to_string(g->status), c->faults.body);
}

/* ---- allocation --------------------------------------------------------- */

static bool hub_in(const SimEnrollment *e, const char *hub) {
        for (size_t i = 0; i < e->n_hubs; i++)
                if (strcasecmp(e->hubs[i], hub) == 0)
                        return true;
        return false;
}


/* Decides the final state of the new operation, as DPS would once the
 * allocation ran: assigned (same hub and device id as before when the hub
 * still serves the enrollment), failed with errorCode, or disabled. */
static int allocate(SimDps *d, const SimClient *c, SimRegistration *g, const char *device_payload) {
        const SimEnrollment *e = c->enrollment;
        _cleanup_free_ char *now = utc_now(), *etag = NULL;
        int r;

        if (!now)
                return -ENOMEM;
        g->generation++;
        if (asprintf(&etag, "\"%08x-%04x\"", sim_hash(g->key), g->generation & 0xffff) < 0)
                return -ENOMEM;
        if (!g->created && (r = sim_strset(&g->created, now)) < 0)
                return r;
        if ((r = sim_strset(&g->updated, now)) < 0 || (r = sim_strset(&g->etag, etag)) < 0)
                return r;
        g->error_code = 0;
        if ((r = sim_strset(&g->error_message, NULL)) < 0)
                return r;

        if (!e->enabled || c->faults.final_status == SIM_FINAL_DISABLED) {
                g->status = DPS_STATUS_DISABLED;
                /* A disabled device keeps no assignment in the answer. */
                if ((r = sim_strset(&g->substatus, NULL)) < 0)
                        return r;
                d->dirty = true;
                return 0;
        }
        if (c->faults.final_status == SIM_FINAL_FAILED) {
                g->status = DPS_STATUS_FAILED;
                g->error_code = c->faults.error_code ? c->faults.error_code : 400209;
                r = sim_strset(&g->error_message, "Custom allocation failed (injected by dps-sim)");
                if (r < 0)
                        return r;
                return sim_strset(&g->substatus, NULL);
        }

        const char *substatus = "initialAssignment";
        bool keep = g->assigned_hub && g->device_id && g->status == DPS_STATUS_ASSIGNED && hub_in(e, g->assigned_hub);
        if (!keep) {
                const char *hub = e->hubs[0];
                if (g->assigned_hub)            /* the enrollment moved the device */
                        substatus = "deviceDataMigrated";
                switch (e->allocation) {
                case SIM_ALLOCATION_HASHED:
                        hub = e->hubs[sim_hash(g->key) % e->n_hubs];
                        break;
                case SIM_ALLOCATION_ROUND_ROBIN:
                case _SIM_ALLOCATION_MAX:
                        hub = e->hubs[d->rr_next[e - d->cfg->enrollments]++ % e->n_hubs];
                        break;
                }
                if ((r = sim_strset(&g->assigned_hub, hub)) < 0)
                        return r;
                const char *device_id = e->registration_id && e->device_id ? e->device_id : g->registration_id;
                if ((r = sim_strset(&g->device_id, device_id)) < 0)
                        return r;
        } else if (g->substatus && !streq(g->substatus, "initialAssignment"))
                substatus = g->substatus;
        if ((r = sim_strset(&g->substatus, substatus)) < 0)
                return r;

        switch (e->payload) {
        case SIM_PAYLOAD_NONE:
                r = sim_strset(&g->payload, NULL);
                break;
        case SIM_PAYLOAD_ECHO:
                r = sim_strset(&g->payload, device_payload);
                break;
        case SIM_PAYLOAD_JSON:
                r = sim_strset(&g->payload, e->payload_json);
                break;
        case _SIM_PAYLOAD_MAX:
                r = 0;
                break;
        }
        if (r < 0)
                return r;
        g->status = DPS_STATUS_ASSIGNED;
        d->dirty = true;
        return 0;
}

/* ---- requests ----------------------------------------------------------- */

/* Fixed one-minute windows: the count resets when the minute is over. */
static bool window_full(uint64_t *start, unsigned *count, unsigned limit, uint64_t len, uint64_t now, int *ret_wait) {
        if (limit == 0)
                return false;
        if (now - *start >= len) {
                *start = now;
                *count = 0;
        }
        if (*count >= limit) {
                uint64_t left = len - (now - *start);
                *ret_wait = (int) ((left + 999999) / 1000000);
                if (*ret_wait < 1)
                        *ret_wait = 1;
                return true;
        }
        return false;
}

/* Auth, injected failures and throttling, common to register and poll.
 * Returns 1 when *rep holds the answer already. *ret_g is the client's
 * registration (NULL when it is not authorized). */
static int gatekeep(SimDps *d, SimClient *c, bool is_register, SimReply *rep, SimRegistration **ret_g) {
        const SimFaults *f = &c->faults;
        uint64_t now = now_usec(CLOCK_MONOTONIC);
        SimRegistration *g = NULL;
        int wait = 0, r;

        if (c->authorized) {
                g = sim_registry_get(d->registry, c->registration_id, true);
                if (!g)
                        return -ENOMEM;
        }
        *ret_g = g;

        rep->delay_ms = f->delay_ms;
        if (f->silent) {
                rep->silent = true;
                rep->fault = "silent";
                return 1;
        }
        if (!c->authorized) {
                r = reply_error(rep, 401, 401002, "Unauthorized", c);
                return r < 0 ? r : 1;
        }
        g->requests++;
        if ((f->fail_first > 0 && g->requests <= (unsigned) f->fail_first) ||
            (f->fail_probability > 0.0 && rng_unit(d) < f->fail_probability)) {
                r = reply_error(rep, f->fail_status, 0, NULL, c);
                if (r < 0)
                        return r;
                rep->fault = g->requests <= (unsigned) f->fail_first ? "fail-first" : "fail-probability";
                /* 429 carries retry-after, as DPS's throttling does. */
                if (f->fail_status == 429)
                        rep->retry_after = f->retry_after >= 0 ? f->retry_after : 1;
                return 1;
        }

        const SimConfig *cfg = d->cfg;
        if (is_register && window_full(&d->reg_window, &d->regs_in_window, cfg->registrations_per_minute,
                                       60000000u, now, &wait))
                rep->throttle = "registrations";
        else if (window_full(&d->op_window, &d->ops_in_window, cfg->operations_per_minute, 60000000u, now, &wait))
                rep->throttle = "operations";
        else if (!is_register && window_full(&g->poll_window, &g->polls_in_window, cfg->polls_per_10s,
                                             10000000u, now, &wait))
                rep->throttle = "polls";
        if (rep->throttle) {
                r = reply_error(rep, 429, 429001, "Too many requests", c);
                if (r < 0)
                        return r;
                rep->retry_after = wait;
                return 1;
        }
        if (is_register)
                d->regs_in_window++;
        else
                g->polls_in_window++;
        d->ops_in_window++;
        return 0;
}

static int new_operation(SimDps *d, SimRegistration *g, SimOperation **ret) {
        _cleanup_free_ char *u = uuid_new();
        char *id;
        if (!u)
                return -ENOMEM;
        /* Shaped like DPS's: "5.71cf7e385566aa10.4469ed4c-dc19-4af8-8b36-9ef6396ac1b3" */
        if (asprintf(&id, "4.%016" PRIx64 ".%s", ++d->op_counter ^ (uint64_t) sim_hash(g->key) << 32, u) < 0)
                return -ENOMEM;
        SimOperation *op = &g->ops[g->ops_next++ % SIM_OPS_KEPT];
        free(op->id);
        *op = (SimOperation) { .id = id };
        *ret = op;
        return 0;
}

static SimOperation *find_operation(SimRegistration *g, const char *id) {
        for (unsigned i = 0; id && i < SIM_OPS_KEPT; i++)
                if (g->ops[i].id && streq(g->ops[i].id, id))
                        return &g->ops[i];
        return NULL;
}

/* Extracts the device's payload from a register body; an empty or blank
 * body is fine (the registration id comes from CONNECT). */
static int parse_register_body(const void *body, size_t len, char **ret_payload, const char **ret_error) {
        const char *s = body;
        size_t i;
        *ret_payload = NULL;
        for (i = 0; i < len && isspace((unsigned char) s[i]); i++)
                ;
        if (i == len)
                return 0;
        _cleanup_free_ char *copy = strndup(s, len);
        if (!copy || strlen(copy) != len) {
                *ret_error = "the register body holds a NUL byte";
                return copy ? -EBADMSG : -ENOMEM;
        }
        json_object *o = json_tokener_parse(copy);
        if (!o || !json_object_is_type(o, json_type_object)) {
                json_object_put(o);
                *ret_error = "the register body is not a JSON object";
                return -EBADMSG;
        }
        json_object *p;
        if (json_object_object_get_ex(o, "payload", &p) && p) {
                *ret_payload = strdup(json_object_to_json_string_ext(p, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE));
                if (!*ret_payload) {
                        json_object_put(o);
                        return -ENOMEM;
                }
        }
        json_object_put(o);
        return 0;
}

int sim_dps_register(SimDps *d, SimClient *c, const void *body, size_t len, SimReply *ret) {
        _cleanup_(sim_reply_done) SimReply rep = { .retry_after = -1 };
        _cleanup_free_ char *payload = NULL;
        SimRegistration *g = NULL;
        const char *why = NULL;
        int r;

        r = gatekeep(d, c, true, &rep, &g);
        if (r < 0)
                return r;
        if (r == 0) {
                r = parse_register_body(body, len, &payload, &why);
                if (r == -ENOMEM)
                        return r;
                if (r < 0)
                        r = reply_error(&rep, 400, 400004, why, c);
                else {
                        SimOperation *op = NULL;
                        r = new_operation(d, g, &op);
                        if (r >= 0)
                                r = allocate(d, c, g, payload);
                        if (r >= 0) {
                                /* assigning-polls N: N answers say "assigning", the
                                 * register's own included; 0: the register answers
                                 * final at once. */
                                int n = c->faults.assigning_polls;
                                op->polls_left = n > 0 ? n - 1 : 0;
                                r = reply_operation(&rep, c, g, op, n == 0);
                        }
                }
                if (r < 0)
                        return r;
        }
        *ret = rep;
        rep = (SimReply) {};
        return 0;
}

int sim_dps_poll(SimDps *d, SimClient *c, const char *operation_id, SimReply *ret) {
        _cleanup_(sim_reply_done) SimReply rep = { .retry_after = -1 };
        SimRegistration *g = NULL;
        int r;

        r = gatekeep(d, c, false, &rep, &g);
        if (r < 0)
                return r;
        if (r == 0) {
                SimOperation *op = find_operation(g, operation_id);
                if (!op)
                        r = reply_error(&rep, 404, 404001, "Operation not found", c);
                else if (op->polls_left > 0) {
                        op->polls_left--;
                        r = reply_operation(&rep, c, g, op, false);
                } else
                        r = reply_operation(&rep, c, g, op, true);
                if (r < 0)
                        return r;
        }
        *ret = rep;
        rep = (SimReply) {};
        return 0;
}

/* ---- state file ----------------------------------------------------------- */

bool sim_dps_state_dirty(const SimDps *d) {
        return d->dirty;
}

int sim_dps_save_state(SimDps *d) {
        int r = 0;
        if (d->cfg->state_file)
                r = sim_registry_save(d->registry, d->cfg->state_file, d->cfg->id_scope);
        if (r >= 0)
                d->dirty = false;
        return r;
}

int sim_dps_load_state(SimDps *d) {
        if (!d->cfg->state_file)
                return 0;
        return sim_registry_load(d->registry, d->cfg->state_file, d->cfg->id_scope);
}
