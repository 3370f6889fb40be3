/* SPDX-License-Identifier: MIT */
/* sim-conf.c: dps-sim's configuration: listeners, TLS, throttling, faults and enrollments */
#include <errno.h>
#include <inttypes.h>
#include <libconfig.h>
#include <libgen.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include <openssl/pem.h>

#include "dps-macro.h"
#include "dps-util.h"
#include "sim-conf.h"

static const char *const final_names[_SIM_FINAL_MAX] = {
        [SIM_FINAL_ASSIGNED] = "assigned",
        [SIM_FINAL_FAILED] = "failed",
        [SIM_FINAL_DISABLED] = "disabled",
};

static const char *const drop_names[_SIM_DROP_MAX] = {
        [SIM_DROP_NONE] = "none",
        [SIM_DROP_AFTER_CONNECT] = "after-connect",
        [SIM_DROP_AFTER_SUBSCRIBE] = "after-subscribe",
        [SIM_DROP_AFTER_REGISTER] = "after-register",
        [SIM_DROP_AFTER_PACKETS] = "after-packets",
};

static const char *const body_names[_SIM_BODY_MAX] = {
        [SIM_BODY_NORMAL] = "normal",
        [SIM_BODY_MALFORMED] = "malformed",
        [SIM_BODY_OVERSIZED] = "oversized",
};

const char *sim_final_to_string(SimFinal f) {
        return f >= 0 && f < _SIM_FINAL_MAX ? final_names[f] : "unknown";
}

const char *sim_drop_to_string(SimDrop d) {
        return d >= 0 && d < _SIM_DROP_MAX ? drop_names[d] : "unknown";
}

const char *sim_body_to_string(SimBody b) {
        return b >= 0 && b < _SIM_BODY_MAX ? body_names[b] : "unknown";
}

static int lookup_name(const char *const *names, int n, const char *s) {
        for (int i = 0; i < n; i++)
                if (streq(names[i], s))
                        return i;
        return -1;
}

_printf_(2, 3)
static int fail(char **ret_error, const char *fmt, ...) {
        if (ret_error) {
                va_list ap;
                va_start(ap, fmt);
                if (vasprintf(ret_error, fmt, ap) < 0)
                        *ret_error = NULL;
                va_end(ap);
        }
        return -EINVAL;
}

void sim_faults_init(SimFaults *f) {
        *f = (SimFaults) {
                .assigning_polls = 1,
                .retry_after = 1,
                .final_status = SIM_FINAL_ASSIGNED,
                .fail_status = 503,
                .drop = SIM_DROP_NONE,
                .drop_after_packets = 1,        /* drop=after-packets alone: after the CONNECT */
                .body = SIM_BODY_NORMAL,
        };
}

SimFaults sim_faults_merge(const SimFaults *base, const SimFaults *over) {
        SimFaults f = *base;
        unsigned s = over->set;
        if (s & SIM_FAULT_ASSIGNING_POLLS) f.assigning_polls = over->assigning_polls;
        if (s & SIM_FAULT_RETRY_AFTER) f.retry_after = over->retry_after;
        if (s & SIM_FAULT_FINAL_STATUS) f.final_status = over->final_status;
        if (s & SIM_FAULT_ERROR_CODE) f.error_code = over->error_code;
        if (s & SIM_FAULT_FAIL_FIRST) f.fail_first = over->fail_first;
        if (s & SIM_FAULT_FAIL_STATUS) f.fail_status = over->fail_status;
        if (s & SIM_FAULT_FAIL_PROBABILITY) f.fail_probability = over->fail_probability;
        if (s & SIM_FAULT_DROP) f.drop = over->drop;
        if (s & SIM_FAULT_DROP_AFTER_PACKETS) f.drop_after_packets = over->drop_after_packets;
        if (s & SIM_FAULT_DELAY_MS) f.delay_ms = over->delay_ms;
        if (s & SIM_FAULT_SILENT) f.silent = over->silent;
        if (s & SIM_FAULT_BODY) f.body = over->body;
        if (s & SIM_FAULT_AUTH_FAILURE) f.auth_failure = over->auth_failure;
        f.set |= s;
        return f;
}

static int parse_int(const char *v, long long min, long long max, long long *ret) {
        char *end;
        errno = 0;
        long long x = strtoll(v, &end, 10);
        if (errno || end == v || *end || x < min || x > max)
                return -EINVAL;
        *ret = x;
        return 0;
}

#define FAULT_KEYS "assigning-polls, retry-after, final-status, error-code, fail-first, fail-status, " \
        "fail-probability, drop, drop-after-packets, delay-ms, silent, body, auth-failure"

/* Applies one fault key from its textual value; where names the place for
 * the error message ("file:line" or "--set"). */
static int faults_apply(SimFaults *f, const char *key, const char *v, const char *where, char **ret_error) {
        long long x;
        int i;

        if (streq(key, "assigning-polls")) {
                if (parse_int(v, 0, 1000, &x) < 0)
                        return fail(ret_error, "%s: assigning-polls: '%s' is not valid; use an integer 0..1000", where, v);
                f->assigning_polls = (int) x;
                f->set |= SIM_FAULT_ASSIGNING_POLLS;
        } else if (streq(key, "retry-after")) {
                if (parse_int(v, -1, 86400, &x) < 0)
                        return fail(ret_error, "%s: retry-after: '%s' is not valid; use seconds 0..86400, or -1 to omit it", where, v);
                f->retry_after = (int) x;
                f->set |= SIM_FAULT_RETRY_AFTER;
        } else if (streq(key, "final-status")) {
                if ((i = lookup_name(final_names, _SIM_FINAL_MAX, v)) < 0)
                        return fail(ret_error, "%s: final-status: '%s' is not valid; use \"assigned\", \"failed\" or \"disabled\"", where, v);
                f->final_status = (SimFinal) i;
                f->set |= SIM_FAULT_FINAL_STATUS;
        } else if (streq(key, "error-code")) {
                if (parse_int(v, 0, INT64_MAX, &x) < 0)
                        return fail(ret_error, "%s: error-code: '%s' is not valid; use a DPS error code such as 400209", where, v);
                f->error_code = x;
                f->set |= SIM_FAULT_ERROR_CODE;
        } else if (streq(key, "fail-first")) {
                if (parse_int(v, 0, 1000000, &x) < 0)
                        return fail(ret_error, "%s: fail-first: '%s' is not valid; use a count 0..1000000", where, v);
                f->fail_first = (int) x;
                f->set |= SIM_FAULT_FAIL_FIRST;
        } else if (streq(key, "fail-status")) {
                if (parse_int(v, 400, 599, &x) < 0)
                        return fail(ret_error, "%s: fail-status: '%s' is not valid; use a status 400..599 (e.g. 503 or 429)", where, v);
                f->fail_status = (int) x;
                f->set |= SIM_FAULT_FAIL_STATUS;
        } else if (streq(key, "fail-probability")) {
                char *end;
                errno = 0;
                double d = strtod(v, &end);
                if (errno || end == v || *end || !(d >= 0.0 && d <= 1.0))
                        return fail(ret_error, "%s: fail-probability: '%s' is not valid; use a number 0.0..1.0", where, v);
                f->fail_probability = d;
                f->set |= SIM_FAULT_FAIL_PROBABILITY;
        } else if (streq(key, "drop")) {
                if ((i = lookup_name(drop_names, _SIM_DROP_MAX, v)) < 0)
                        return fail(ret_error, "%s: drop: '%s' is not valid; use \"none\", \"after-connect\", \"after-subscribe\", "
                                    "\"after-register\" or \"after-packets\"", where, v);
                f->drop = (SimDrop) i;
                f->set |= SIM_FAULT_DROP;
        } else if (streq(key, "drop-after-packets")) {
                if (parse_int(v, 1, 1000000, &x) < 0)
                        return fail(ret_error, "%s: drop-after-packets: '%s' is not valid; use a count 1..1000000", where, v);
                f->drop_after_packets = (int) x;
                f->set |= SIM_FAULT_DROP_AFTER_PACKETS;
        } else if (streq(key, "delay-ms")) {
                if (parse_int(v, 0, 600000, &x) < 0)
                        return fail(ret_error, "%s: delay-ms: '%s' is not valid; use milliseconds 0..600000", where, v);
                f->delay_ms = (int) x;
                f->set |= SIM_FAULT_DELAY_MS;
        } else if (streq(key, "silent")) {
                if (streq(v, "true") || streq(v, "1"))
                        f->silent = true;
                else if (streq(v, "false") || streq(v, "0"))
                        f->silent = false;
                else
                        return fail(ret_error, "%s: silent: '%s' is not valid; use true or false", where, v);
                f->set |= SIM_FAULT_SILENT;
        } else if (streq(key, "body")) {
                if ((i = lookup_name(body_names, _SIM_BODY_MAX, v)) < 0)
                        return fail(ret_error, "%s: body: '%s' is not valid; use \"normal\", \"malformed\" or \"oversized\"", where, v);
                f->body = (SimBody) i;
                f->set |= SIM_FAULT_BODY;
        } else if (streq(key, "auth-failure")) {
                if (streq(v, "register"))
                        f->auth_failure = SIM_AUTH_FAILURE_REGISTER;
                else if (streq(v, "connack"))
                        f->auth_failure = SIM_AUTH_FAILURE_CONNACK;
                else
                        return fail(ret_error, "%s: auth-failure: '%s' is not valid; use \"register\" (401 at register, "
                                    "as DPS does) or \"connack\" (CONNACK 5)", where, v);
                f->set |= SIM_FAULT_AUTH_FAILURE;
        } else
                return fail(ret_error, "%s: unknown fault key '%s'; valid keys: " FAULT_KEYS, where, key);
        return 0;
}

int sim_faults_set(SimFaults *f, const char *assignment, char **ret_error) {
        const char *eq = strchr(assignment, '=');
        if (!eq || eq == assignment)
                return fail(ret_error, "--set %s: expected KEY=VALUE; valid keys: " FAULT_KEYS, assignment);
        _cleanup_free_ char *key = strndup(assignment, eq - assignment);
        if (!key)
                return -ENOMEM;
        /* Values may be quoted on a shell line: accept "failed" and failed. */
        const char *v = eq + 1;
        _cleanup_free_ char *unq = NULL;
        size_t vl = strlen(v);
        if (vl >= 2 && v[0] == '"' && v[vl - 1] == '"') {
                unq = strndup(v + 1, vl - 2);
                if (!unq)
                        return -ENOMEM;
                v = unq;
        }
        return faults_apply(f, key, v, "--set", ret_error);
}

/* ---- libconfig walking ------------------------------------------------ */

typedef struct Ctx {
        const char *path;
        char *dir;
        char **error;
} Ctx;

static unsigned line_of(const config_setting_t *s) {
        return config_setting_source_line(s);
}

static int get_string(Ctx *x, const config_setting_t *s, const char *ctx_key, char **ret) {
        if (config_setting_type(s) != CONFIG_TYPE_STRING)
                return fail(x->error, "%s:%u: %s: expected a string in double quotes", x->path, line_of(s), ctx_key);
        char *v = strdup(config_setting_get_string(s));
        if (!v)
                return -ENOMEM;
        *ret = v;
        return 0;
}

static int get_uint(Ctx *x, const config_setting_t *s, const char *key, long long max, unsigned *ret) {
        int t = config_setting_type(s);
        if (t != CONFIG_TYPE_INT && t != CONFIG_TYPE_INT64)
                return fail(x->error, "%s:%u: %s: expected an integer 0..%lld", x->path, line_of(s), key, max);
        long long v = config_setting_get_int64(s);
        if (v < 0 || v > max)
                return fail(x->error, "%s:%u: %s: %lld is out of range; use 0..%lld", x->path, line_of(s), key, v, max);
        *ret = (unsigned) v;
        return 0;
}

/* Makes a path from the config relative to the config file's directory. */
static int get_path(Ctx *x, const config_setting_t *s, const char *key, char **ret) {
        _cleanup_free_ char *v = NULL;
        int r = get_string(x, s, key, &v);
        if (r < 0)
                return r;
        if (!v[0])
                return fail(x->error, "%s:%u: %s: empty path", x->path, line_of(s), key);
        if (v[0] == '/') {
                *ret = TAKE_PTR(v);
                return 0;
        }
        if (asprintf(ret, "%s/%s", x->dir, v) < 0)
                return -ENOMEM;
        return 0;
}

static int load_x509(Ctx *x, const config_setting_t *s, const char *key, X509 **ret) {
        _cleanup_free_ char *p = NULL;
        int r = get_path(x, s, key, &p);
        if (r < 0)
                return r;
        _cleanup_fclose_ FILE *f = fopen(p, "re");
        if (!f)
                return fail(x->error, "%s:%u: %s: cannot open %s: %s", x->path, line_of(s), key, p, strerror(errno));
        X509 *c = PEM_read_X509(f, NULL, NULL, NULL);
        if (!c)
                return fail(x->error, "%s:%u: %s: %s holds no PEM certificate", x->path, line_of(s), key, p);
        *ret = c;
        return 0;
}

static int setting_to_text(Ctx *x, const config_setting_t *s, char **ret) {
        int r;
        switch (config_setting_type(s)) {
        case CONFIG_TYPE_STRING:
                return get_string(x, s, config_setting_name(s), ret);
        case CONFIG_TYPE_INT:
        case CONFIG_TYPE_INT64:
                r = asprintf(ret, "%lld", (long long) config_setting_get_int64(s));
                break;
        case CONFIG_TYPE_FLOAT:
                r = asprintf(ret, "%.17g", config_setting_get_float(s));
                break;
        case CONFIG_TYPE_BOOL:
                r = asprintf(ret, "%s", config_setting_get_bool(s) ? "true" : "false");
                break;
        default:        /* libconfig's type codes are plain ints */
                return fail(x->error, "%s:%u: %s: expected a number, string or boolean", x->path, line_of(s),
                            config_setting_name(s));
        }
        return r < 0 ? -ENOMEM : 0;
}

static int parse_faults(Ctx *x, const config_setting_t *g, SimFaults *f) {
        if (!config_setting_is_group(g))
                return fail(x->error, "%s:%u: %s: expected a group { key = value; ... }", x->path, line_of(g),
                            config_setting_name(g));
        for (int i = 0; i < config_setting_length(g); i++) {
                config_setting_t *s = config_setting_get_elem(g, i);
                _cleanup_free_ char *v = NULL, *where = NULL;
                int r = setting_to_text(x, s, &v);
                if (r < 0)
                        return r;
                if (asprintf(&where, "%s:%u", x->path, line_of(s)) < 0)
                        return -ENOMEM;
                r = faults_apply(f, config_setting_name(s), v, where, x->error);
                if (r < 0)
                        return r;
        }
        return 0;
}

static void enrollment_done(SimEnrollment *e) {
        free(e->registration_id);
        free(e->group);
        dps_secret_free(e->primary_key);
        dps_secret_free(e->secondary_key);
        X509_free(e->certificate);
        X509_free(e->ca);
        for (size_t i = 0; i < e->n_hubs; i++)
                free(e->hubs[i]);
        free(e->hubs);
        free(e->device_id);
        free(e->payload_json);
}

static int check_key(Ctx *x, const config_setting_t *s, const char *key, const char *v) {
        uint8_t *d = NULL;
        size_t n = 0;
        int r = dps_base64_decode(v, &d, &n);
        dps_memory_free(d, n);
        if (r < 0 || n == 0)
                return fail(x->error, "%s:%u: %s: not a base64 key; use e.g. the output of 'openssl rand -base64 32'",
                            x->path, line_of(s), key);
        return 0;
}

static int parse_enrollment(Ctx *x, const config_setting_t *g, SimEnrollment *e) {
        const char *where = "enrollment";
        bool have_attestation = false, have_hubs = false;
        int r;

        e->enabled = true;
        e->line = line_of(g);
        sim_faults_init(&e->faults);
        e->faults.set = 0;
        if (!config_setting_is_group(g))
                return fail(x->error, "%s:%u: enrollments: each element must be a group { registration-id = ...; ... }",
                            x->path, line_of(g));

        for (int i = 0; i < config_setting_length(g); i++) {
                config_setting_t *s = config_setting_get_elem(g, i);
                const char *k = config_setting_name(s);
                if (streq(k, "registration-id"))
                        r = get_string(x, s, k, &e->registration_id);
                else if (streq(k, "group"))
                        r = get_string(x, s, k, &e->group);
                else if (streq(k, "attestation")) {
                        _cleanup_free_ char *v = NULL;
                        r = get_string(x, s, k, &v);
                        if (r < 0)
                                return r;
                        if (streq(v, "symmetric-key"))
                                e->attestation = SIM_ATTESTATION_SYMMETRIC_KEY;
                        else if (streq(v, "x509"))
                                e->attestation = SIM_ATTESTATION_X509;
                        else
                                return fail(x->error, "%s:%u: attestation: '%s' is not valid; use \"symmetric-key\" or \"x509\"",
                                            x->path, line_of(s), v);
                        have_attestation = true;
                } else if (streq(k, "primary-key") || streq(k, "secondary-key")) {
                        char **p = streq(k, "primary-key") ? &e->primary_key : &e->secondary_key;
                        r = get_string(x, s, k, p);
                        if (r >= 0)
                                r = check_key(x, s, k, *p);
                } else if (streq(k, "certificate"))
                        r = load_x509(x, s, k, &e->certificate);
                else if (streq(k, "ca"))
                        r = load_x509(x, s, k, &e->ca);
                else if (streq(k, "hubs")) {
                        int n = config_setting_length(s);
                        if (!config_setting_is_array(s) && !config_setting_is_list(s))
                                return fail(x->error, "%s:%u: hubs: expected an array of host names [ \"hub.azure-devices.net\" ]",
                                            x->path, line_of(s));
                        if (n < 1)
                                return fail(x->error, "%s:%u: hubs: give at least one IoT hub host name", x->path, line_of(s));
                        e->hubs = calloc(n, sizeof(char *));
                        if (!e->hubs)
                                return -ENOMEM;
                        for (int j = 0; j < n; j++) {
                                r = get_string(x, config_setting_get_elem(s, j), "hubs", &e->hubs[j]);
                                if (r < 0)
                                        return r;
                                e->n_hubs++;
                                if (!e->hubs[j][0])
                                        return fail(x->error, "%s:%u: hubs: empty host name", x->path, line_of(s));
                        }
                        have_hubs = true;
                        r = 0;
                } else if (streq(k, "allocation")) {
                        _cleanup_free_ char *v = NULL;
                        r = get_string(x, s, k, &v);
                        if (r < 0)
                                return r;
                        if (streq(v, "round-robin"))
                                e->allocation = SIM_ALLOCATION_ROUND_ROBIN;
                        else if (streq(v, "hashed"))
                                e->allocation = SIM_ALLOCATION_HASHED;
                        else
                                return fail(x->error, "%s:%u: allocation: '%s' is not valid; use \"round-robin\" or \"hashed\"",
                                            x->path, line_of(s), v);
                } else if (streq(k, "device-id"))
                        r = get_string(x, s, k, &e->device_id);
                else if (streq(k, "enabled")) {
                        if (config_setting_type(s) != CONFIG_TYPE_BOOL)
                                return fail(x->error, "%s:%u: enabled: expected true or false", x->path, line_of(s));
                        e->enabled = config_setting_get_bool(s);
                        r = 0;
                } else if (streq(k, "payload")) {
                        _cleanup_free_ char *v = NULL;
                        r = get_string(x, s, k, &v);
                        if (r < 0)
                                return r;
                        if (streq(v, "echo"))
                                e->payload = SIM_PAYLOAD_ECHO;
                        else if (streq(v, "none"))
                                e->payload = SIM_PAYLOAD_NONE;
                        else
                                return fail(x->error, "%s:%u: payload: '%s' is not valid; use \"echo\" or \"none\" "
                                            "(or payload-json for a fixed JSON value)", x->path, line_of(s), v);
                } else if (streq(k, "payload-json")) {
                        r = get_string(x, s, k, &e->payload_json);
                        if (r >= 0)
                                e->payload = SIM_PAYLOAD_JSON;
                } else if (streq(k, "faults"))
                        r = parse_faults(x, s, &e->faults);
                else
                        return fail(x->error, "%s:%u: unknown enrollment key '%s'; valid keys: registration-id, group, "
                                    "attestation, primary-key, secondary-key, certificate, ca, hubs, allocation, "
                                    "device-id, enabled, payload, payload-json, faults", x->path, line_of(s), k);
                if (r < 0)
                        return r;
        }

        if (!!e->registration_id == !!e->group)
                return fail(x->error, "%s:%u: %s: set exactly one of registration-id (individual) or group",
                            x->path, e->line, where);
        if (e->registration_id) {
                const char *reason = NULL;
                if (dps_registration_id_validate(e->registration_id, e->attestation == SIM_ATTESTATION_X509, &reason) < 0)
                        return fail(x->error, "%s:%u: registration-id: '%s' is not valid: %s", x->path, e->line,
                                    e->registration_id, reason ? reason : "see the registration id rules");
        }
        if (!have_attestation)
                return fail(x->error, "%s:%u: %s: attestation is missing; use \"symmetric-key\" or \"x509\"",
                            x->path, e->line, where);
        if (!have_hubs)
                return fail(x->error, "%s:%u: %s: hubs is missing; give at least one IoT hub host name",
                            x->path, e->line, where);
        switch (e->attestation) {
        case SIM_ATTESTATION_SYMMETRIC_KEY:
                if (!e->primary_key)
                        return fail(x->error, "%s:%u: %s: primary-key is missing (base64) for symmetric-key attestation",
                                    x->path, e->line, where);
                if (e->certificate || e->ca)
                        return fail(x->error, "%s:%u: %s: certificate and ca belong to x509 attestation", x->path, e->line, where);
                break;
        case SIM_ATTESTATION_X509:
                if (e->registration_id && !e->certificate)
                        return fail(x->error, "%s:%u: %s: certificate is missing (PEM path) for an individual x509 enrollment",
                                    x->path, e->line, where);
                if (e->group && !e->ca)
                        return fail(x->error, "%s:%u: %s: ca is missing (PEM path) for an x509 group enrollment",
                                    x->path, e->line, where);
                if (e->primary_key || e->secondary_key)
                        return fail(x->error, "%s:%u: %s: primary-key and secondary-key belong to symmetric-key attestation",
                                    x->path, e->line, where);
                break;
        case _SIM_ATTESTATION_MAX:
                return -EINVAL;
        }
        if (e->payload_json) {
                /* Checked here so a typo fails at start, not at the first device. */
                _cleanup_free_ char *body = NULL;
                if (dps_body_register("x", e->payload_json, &body) < 0)
                        return fail(x->error, "%s:%u: payload-json: not valid JSON", x->path, e->line);
        }
        return 0;
}

SimConfig *sim_config_free(SimConfig *c) {
        if (!c)
                return NULL;
        free(c->path);
        free(c->id_scope);
        free(c->tls_certificate);
        free(c->tls_key);
        free(c->listen_mqtt);
        free(c->listen_ws);
        free(c->state_file);
        for (size_t i = 0; i < c->n_enrollments; i++)
                enrollment_done(&c->enrollments[i]);
        free(c->enrollments);
        free(c);
        return NULL;
}

DEFINE_TRIVIAL_CLEANUP_FUNC(SimConfig *, sim_config_free);

static void config_destroyp(config_t **c) {
        if (*c)
                config_destroy(*c);
}

int sim_config_load(const char *path, SimConfig **ret, char **ret_error) {
        _cleanup_(sim_config_freep) SimConfig *c = NULL;
        config_t cfg_storage;
        _cleanup_(config_destroyp) config_t *cfg = NULL;
        _cleanup_free_ char *copy = NULL;
        Ctx x = { .path = path, .error = ret_error };
        int r;

        if (ret_error)
                *ret_error = NULL;
        c = calloc(1, sizeof *c);
        copy = strdup(path);
        if (!c || !copy)
                return -ENOMEM;
        c->path = strdup(path);
        x.dir = dirname(copy);
        if (!c->path)
                return -ENOMEM;
        sim_faults_init(&c->defaults);
        c->registrations_per_minute = 1000;     /* DPS's own limits */
        c->operations_per_minute = 1000;
        c->polls_per_10s = 5;

        config_init(&cfg_storage);
        cfg = &cfg_storage;
        if (!config_read_file(cfg, path)) {
                if (config_error_type(cfg) == CONFIG_ERR_FILE_IO)
                        return fail(ret_error, "%s: cannot read the file: %s", path, strerror(errno ? errno : EIO));
                return fail(ret_error, "%s:%d: %s", config_error_file(cfg) ? config_error_file(cfg) : path,
                            config_error_line(cfg), config_error_text(cfg));
        }

        config_setting_t *root = config_root_setting(cfg);
        bool have_scope = false, have_tls = false, have_listen = false;
        for (int i = 0; i < config_setting_length(root); i++) {
                config_setting_t *s = config_setting_get_elem(root, i);
                const char *k = config_setting_name(s);
                if (streq(k, "id-scope")) {
                        r = get_string(&x, s, k, &c->id_scope);
                        have_scope = true;
                } else if (streq(k, "tls")) {
                        config_setting_t *cs = config_setting_get_member(s, "certificate");
                        config_setting_t *ks = config_setting_get_member(s, "key");
                        if (!config_setting_is_group(s) || !cs || !ks || config_setting_length(s) != 2)
                                return fail(ret_error, "%s:%u: tls: expected { certificate = \"server.crt\"; key = \"server.key\"; }",
                                            path, line_of(s));
                        r = get_path(&x, cs, "tls.certificate", &c->tls_certificate);
                        if (r >= 0)
                                r = get_path(&x, ks, "tls.key", &c->tls_key);
                        have_tls = true;
                } else if (streq(k, "listen")) {
                        if (!config_setting_is_group(s))
                                return fail(ret_error, "%s:%u: listen: expected { mqtt = \"127.0.0.1:0\"; websocket = \"127.0.0.1:0\"; }",
                                            path, line_of(s));
                        r = 0;
                        for (int j = 0; r >= 0 && j < config_setting_length(s); j++) {
                                config_setting_t *l = config_setting_get_elem(s, j);
                                if (streq(config_setting_name(l), "mqtt")) {
                                        r = get_string(&x, l, "listen.mqtt", &c->listen_mqtt);
                                        have_listen = true;
                                } else if (streq(config_setting_name(l), "websocket"))
                                        r = get_string(&x, l, "listen.websocket", &c->listen_ws);
                                else
                                        return fail(ret_error, "%s:%u: listen: unknown key '%s'; valid keys: mqtt, websocket",
                                                    path, line_of(l), config_setting_name(l));
                        }
                } else if (streq(k, "state-file"))
                        r = get_path(&x, s, k, &c->state_file);
                else if (streq(k, "throttle")) {
                        if (!config_setting_is_group(s))
                                return fail(ret_error, "%s:%u: throttle: expected a group { registrations-per-minute = 1000; ... }",
                                            path, line_of(s));
                        r = 0;
                        for (int j = 0; r >= 0 && j < config_setting_length(s); j++) {
                                config_setting_t *t = config_setting_get_elem(s, j);
                                const char *tk = config_setting_name(t);
                                if (streq(tk, "registrations-per-minute"))
                                        r = get_uint(&x, t, "throttle.registrations-per-minute", 10000000, &c->registrations_per_minute);
                                else if (streq(tk, "operations-per-minute"))
                                        r = get_uint(&x, t, "throttle.operations-per-minute", 10000000, &c->operations_per_minute);
                                else if (streq(tk, "polls-per-10s"))
                                        r = get_uint(&x, t, "throttle.polls-per-10s", 10000000, &c->polls_per_10s);
                                else
                                        return fail(ret_error, "%s:%u: throttle: unknown key '%s'; valid keys: registrations-per-minute, "
                                                    "operations-per-minute, polls-per-10s (0 turns a limit off)", path, line_of(t), tk);
                        }
                } else if (streq(k, "defaults"))
                        r = parse_faults(&x, s, &c->defaults);
                else if (streq(k, "enrollments")) {
                        if (!config_setting_is_list(s))
                                return fail(ret_error, "%s:%u: enrollments: expected a list ( { ... }, { ... } )", path, line_of(s));
                        int n = config_setting_length(s);
                        c->enrollments = calloc(n ? n : 1, sizeof(SimEnrollment));
                        if (!c->enrollments)
                                return -ENOMEM;
                        r = 0;
                        for (int j = 0; r >= 0 && j < n; j++) {
                                c->n_enrollments++;
                                r = parse_enrollment(&x, config_setting_get_elem(s, j), &c->enrollments[j]);
                        }
                } else
                        return fail(ret_error, "%s:%u: unknown key '%s'; valid keys: id-scope, tls, listen, state-file, "
                                    "throttle, defaults, enrollments", path, line_of(s), k);
                if (r < 0)
                        return r;
        }

        if (!have_scope || strempty(c->id_scope))
                return fail(ret_error, "%s: id-scope is missing; add e.g. id-scope = \"0ne00000A0A\";", path);
        if (!have_tls)
                return fail(ret_error, "%s: tls is missing; add tls = { certificate = \"server.crt\"; key = \"server.key\"; }; "
                            "(sim/dps-sim-certs makes both)", path);
        if (!have_listen)
                return fail(ret_error, "%s: listen.mqtt is missing; add listen = { mqtt = \"127.0.0.1:0\"; };", path);

        /* Registration ids and group names are unique, case-insensitively. */
        for (size_t i = 0; i < c->n_enrollments; i++)
                for (size_t j = 0; j < i; j++) {
                        SimEnrollment *a = &c->enrollments[i], *b = &c->enrollments[j];
                        if ((a->registration_id && b->registration_id && strcasecmp(a->registration_id, b->registration_id) == 0) ||
                            (a->group && b->group && strcasecmp(a->group, b->group) == 0))
                                return fail(ret_error, "%s:%u: enrollment duplicates the one at line %u", path, a->line, b->line);
                }

        *ret = TAKE_PTR(c);
        return 0;
}
