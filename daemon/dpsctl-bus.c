/* SPDX-License-Identifier: MIT */
/* dpsctl-bus.c: dpsctl's D-Bus verbs: status, show, wait, reprovision */

#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <json-c/json.h>
#include <systemd/sd-bus.h>

#include "dps-macro.h"
#include "dpsctl.h"
#include "dpsd-bus-config.h"
#include "dpsd-bus.h"

/*
 * Exit codes of the bus verbs, beyond dpsctl's 0, 1 and 2 (dpsctl(1)):
 *   0   success; for wait and reprovision --wait: provisioned
 *   1   dpsd answered with an error; for wait: provisioning failed or disabled
 *   2   invalid command line
 *   3   timeout (wait, reprovision --wait)
 *   4   permission denied (Reprovision needs root or the dpsd group)
 *   69  dpsd is not running, or the bus cannot be reached (EX_UNAVAILABLE)
 */
#define EXIT_TIMEOUT     3
#define EXIT_DENIED      4
#define EXIT_UNAVAILABLE 69

#define USEC_PER_SEC 1000000ULL

typedef struct BusArgs {
        const char *address;    /* NULL: the system bus ($DBUS_SYSTEM_BUS_ADDRESS honoured) */
        bool json;
        bool wait;
        bool value;
        double timeout_sec;     /* < 0: none */
        const char *property;   /* show --property */
} BusArgs;

/* ---- property snapshot -------------------------------------------------- */

typedef enum PropType { PROP_STRING, PROP_U32, PROP_U64, PROP_I64 } PropType;

typedef struct Prop {
        const char *name;
        PropType type;
        bool present;
        char *s;
        uint64_t u;
        int64_t i;
} Prop;

/* In the order of dbus/org.dpsd.Provisioning1.xml. */
#define N_PROPS 17
static const struct { const char *name; PropType type; } prop_table[N_PROPS] = {
        { "State", PROP_STRING },           { "RegistrationId", PROP_STRING },
        { "IdScope", PROP_STRING },         { "Endpoint", PROP_STRING },
        { "Transport", PROP_STRING },       { "AttestationType", PROP_STRING },
        { "AssignedHub", PROP_STRING },     { "DeviceId", PROP_STRING },
        { "Substatus", PROP_STRING },       { "Payload", PROP_STRING },
        { "Source", PROP_STRING },          { "LastProvisioned", PROP_U64 },
        { "NextAttempt", PROP_U64 },        { "Attempts", PROP_U32 },
        { "LastError", PROP_STRING },       { "LastErrorCode", PROP_I64 },
        { "LastTrackingId", PROP_STRING },
};

typedef struct Props {
        Prop p[N_PROPS];
} Props;

static void props_init(Props *ps) {
        *ps = (Props) {};
        for (size_t k = 0; k < N_PROPS; k++) {
                ps->p[k].name = prop_table[k].name;
                ps->p[k].type = prop_table[k].type;
        }
}

static void props_done(Props *ps) {
        for (size_t k = 0; k < N_PROPS; k++)
                free(ps->p[k].s);
}

static Prop *props_find(Props *ps, const char *name) {
        for (size_t k = 0; k < N_PROPS; k++)
                if (strcasecmp(ps->p[k].name, name) == 0)
                        return &ps->p[k];
        return NULL;
}

static const char *props_str(Props *ps, const char *name) {
        Prop *p = props_find(ps, name);
        return p && p->present && p->s ? p->s : "";
}

static uint64_t props_u64(Props *ps, const char *name) {
        Prop *p = props_find(ps, name);
        return p && p->present ? p->u : 0;
}

static int64_t props_i64(Props *ps, const char *name) {
        Prop *p = props_find(ps, name);
        return p && p->present ? p->i : 0;
}

/* Reads one variant whose type the table says; a value of another type is
 * skipped (a newer dpsd must not break an older dpsctl). */
static int prop_read_variant(sd_bus_message *m, Prop *p) {
        static const char sig[] = { [PROP_STRING] = 's', [PROP_U32] = 'u', [PROP_U64] = 't', [PROP_I64] = 'x' };
        const char *contents;
        char type, want[2] = { sig[p->type], 0 };
        int r;

        r = sd_bus_message_peek_type(m, &type, &contents);
        if (r < 0)
                return r;
        if (!streq(contents, want))
                return sd_bus_message_skip(m, "v");

        switch (p->type) {
        case PROP_STRING: {
                const char *s;
                char *copy;

                r = sd_bus_message_read(m, "v", "s", &s);
                if (r < 0)
                        return r;
                copy = strdup(s);
                if (!copy)
                        return -ENOMEM;
                free(p->s);
                p->s = copy;
                break;
        }
        case PROP_U32: {
                uint32_t u;

                r = sd_bus_message_read(m, "v", "u", &u);
                if (r < 0)
                        return r;
                p->u = u;
                break;
        }
        case PROP_U64:
                r = sd_bus_message_read(m, "v", "t", &p->u);
                if (r < 0)
                        return r;
                break;
        case PROP_I64:
                r = sd_bus_message_read(m, "v", "x", &p->i);
                if (r < 0)
                        return r;
                break;
        }
        p->present = true;
        return 0;
}

/* Reads the a{sv} of GetAll or PropertiesChanged into ps; unknown names are
 * skipped. *ret_state_changed tells whether State was in it. */
static int props_read_dict(sd_bus_message *m, Props *ps, bool *ret_state_changed) {
        bool state = false;
        int r;

        r = sd_bus_message_enter_container(m, 'a', "{sv}");
        if (r < 0)
                return r;
        while ((r = sd_bus_message_enter_container(m, 'e', "sv")) > 0) {
                const char *name;
                Prop *p;

                r = sd_bus_message_read(m, "s", &name);
                if (r < 0)
                        return r;
                p = props_find(ps, name);
                if (p && streq(p->name, "State"))
                        state = true;
                r = p ? prop_read_variant(m, p) : sd_bus_message_skip(m, "v");
                if (r < 0)
                        return r;
                r = sd_bus_message_exit_container(m);
                if (r < 0)
                        return r;
        }
        if (r < 0)
                return r;
        r = sd_bus_message_exit_container(m);
        if (r < 0)
                return r;
        if (ret_state_changed)
                *ret_state_changed = state;
        return 0;
}

/* ---- connection and errors ---------------------------------------------- */

static int bus_connect(const BusArgs *a, sd_bus **ret) {
        _cleanup_(sd_bus_flush_close_unrefp) sd_bus *bus = NULL;
        int r;

        if (!a->address) {
                r = sd_bus_open_system(&bus);
                if (r < 0)
                        return dpsctl_error(EXIT_UNAVAILABLE, "cannot connect to the system bus: %s", strerror(-r));
        } else {
                r = sd_bus_new(&bus);
                if (r >= 0)
                        r = sd_bus_set_address(bus, a->address);
                if (r >= 0)
                        r = sd_bus_set_bus_client(bus, true);
                if (r >= 0)
                        r = sd_bus_start(bus);
                if (r < 0)
                        return dpsctl_error(EXIT_UNAVAILABLE, "cannot connect to the bus at %s: %s",
                                            a->address, strerror(-r));
        }
        *ret = TAKE_PTR(bus);
        return 0;
}

/* One line on stderr for a failed call, and the exit code it maps to. */
static int bus_error_exit(const sd_bus_error *e, int r, const char *what) {
        if (sd_bus_error_has_names(e, SD_BUS_ERROR_SERVICE_UNKNOWN, SD_BUS_ERROR_NAME_HAS_NO_OWNER,
                                   SD_BUS_ERROR_UNKNOWN_OBJECT, SD_BUS_ERROR_UNKNOWN_INTERFACE))
                return dpsctl_error(EXIT_UNAVAILABLE,
                                    "dpsd is not running (%s is not on the bus); start it with "
                                    "'systemctl start dpsd'", BUS_NAME);
        /* The bus policy's refusal carries the bus's long rule dump: say it plainly. */
        if (sd_bus_error_has_name(e, SD_BUS_ERROR_ACCESS_DENIED))
                return dpsctl_error(EXIT_DENIED, "%s: permission denied by the bus policy: only root and "
                                    "members of group '%s' may do this", what, DPSD_GROUP);
        if (sd_bus_error_has_name(e, BUS_ERROR_PERMISSION_DENIED))
                return dpsctl_error(EXIT_DENIED, "%s: permission denied: %s", what, e->message ?: e->name);
        if (sd_bus_error_is_set(e))
                return dpsctl_error(DPSCTL_EXIT_FAILURE, "%s: %s", what, e->message ?: e->name);
        return dpsctl_error(DPSCTL_EXIT_FAILURE, "%s: %s", what, strerror(-r));
}

static int get_all(sd_bus *bus, Props *ps) {
        _cleanup_(sd_bus_error_free) sd_bus_error e = SD_BUS_ERROR_NULL;
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        int r;

        r = sd_bus_call_method(bus, BUS_NAME, BUS_PATH, "org.freedesktop.DBus.Properties", "GetAll",
                               &e, &reply, "s", BUS_INTERFACE);
        if (r < 0)
                return bus_error_exit(&e, r, "cannot read dpsd's properties");
        r = props_read_dict(reply, ps, NULL);
        if (r < 0)
                return dpsctl_error(DPSCTL_EXIT_FAILURE, "cannot parse dpsd's properties: %s", strerror(-r));
        return 0;
}

/* ---- options ------------------------------------------------------------ */

enum {
        ARG_ADDRESS = 0x100,
        ARG_SYSTEM,
        ARG_JSON,
        ARG_WAIT,
        ARG_TIMEOUT,
        ARG_PROPERTY,
        ARG_VALUE,
        ARG_HELP,
};

/* Which options a verb takes. */
enum {
        OPT_JSON = 1 << 0,
        OPT_WAIT = 1 << 1,
        OPT_TIMEOUT = 1 << 2,
        OPT_PROPERTY = 1 << 3,
};

static const DpsctlVerb *bus_verb(const char *name);

static int parse_timeout(const char *s, double *ret) {
        char *end = NULL;
        double v;

        errno = 0;
        v = strtod(s, &end);
        if (errno != 0 || !end || end == s || *end || !isfinite(v) || v < 0 || v > 31536000.0)
                return -EINVAL;
        *ret = v;
        return 0;
}

/* Returns -1 to go on, or an exit code (help printed, or usage error). */
static int parse_args(int argc, char *argv[], unsigned allowed, BusArgs *a) {
        static const struct option options[] = {
                { "address",  required_argument, NULL, ARG_ADDRESS },
                { "system",   no_argument,       NULL, ARG_SYSTEM },
                { "json",     no_argument,       NULL, ARG_JSON },
                { "wait",     no_argument,       NULL, ARG_WAIT },
                { "timeout",  required_argument, NULL, ARG_TIMEOUT },
                { "property", required_argument, NULL, ARG_PROPERTY },
                { "value",    no_argument,       NULL, ARG_VALUE },
                { "help",     no_argument,       NULL, ARG_HELP },
                {}
        };
        int c;

        *a = (BusArgs) { .timeout_sec = -1 };
        optind = 0;
        opterr = 0;
        while ((c = getopt_long(argc, argv, ":p:", options, NULL)) >= 0) {
                switch (c) {
                case ARG_ADDRESS:
                        a->address = optarg;
                        continue;
                case ARG_SYSTEM:
                        a->address = NULL;
                        continue;
                case ARG_HELP:
                        dpsctl_verb_usage(bus_verb(argv[0]));
                        return DPSCTL_EXIT_SUCCESS;
                case ARG_JSON:
                        if (allowed & OPT_JSON) {
                                a->json = true;
                                continue;
                        }
                        break;
                case ARG_WAIT:
                        if (allowed & OPT_WAIT) {
                                a->wait = true;
                                continue;
                        }
                        break;
                case ARG_TIMEOUT:
                        if (!(allowed & OPT_TIMEOUT))
                                break;
                        if (parse_timeout(optarg, &a->timeout_sec) < 0)
                                return dpsctl_error(DPSCTL_EXIT_USAGE, "%s: invalid --timeout \"%s\": expected "
                                                    "seconds, e.g. 30 or 0.5", argv[0], optarg);
                        continue;
                case 'p':
                case ARG_PROPERTY:
                        if (!(allowed & OPT_PROPERTY))
                                break;
                        a->property = optarg;
                        continue;
                case ARG_VALUE:
                        if (allowed & OPT_PROPERTY) {
                                a->value = true;
                                continue;
                        }
                        break;
                case ':':
                        return dpsctl_error(DPSCTL_EXIT_USAGE, "%s: option %s needs a value", argv[0],
                                            argv[optind - 1]);
                default:
                        break;
                }
                return dpsctl_error(DPSCTL_EXIT_USAGE, "%s: unknown option '%s' (see 'dpsctl %s --help')",
                                    argv[0], argv[optind - 1], argv[0]);
        }
        if (optind < argc)
                return dpsctl_error(DPSCTL_EXIT_USAGE, "%s: unexpected argument '%s'", argv[0], argv[optind]);
        if (a->timeout_sec >= 0 && (allowed & OPT_WAIT) && !a->wait)
                return dpsctl_error(DPSCTL_EXIT_USAGE, "%s: --timeout needs --wait", argv[0]);
        return -1;
}

/* ---- status and show ---------------------------------------------------- */

static void format_span(uint64_t sec, char *buf, size_t size) {
        if (sec < 120)
                snprintf(buf, size, "%" PRIu64 "s", sec);
        else if (sec < 2 * 3600)
                snprintf(buf, size, "%" PRIu64 "min", sec / 60);
        else if (sec < 2 * 86400)
                snprintf(buf, size, "%" PRIu64 "h", sec / 3600);
        else
                snprintf(buf, size, "%" PRIu64 " days", sec / 86400);
}

/* "Thu 2026-11-26 12:03:37 UTC (5min ago)" or "(in 4s)", as timedatectl. */
static const char *format_time(uint64_t usec, char *buf, size_t size) {
        time_t t = (time_t) (usec / USEC_PER_SEC), now = time(NULL);
        char span[32];
        struct tm tm;
        size_t n;

        if (usec == 0 || !localtime_r(&t, &tm))
                return "n/a";
        n = strftime(buf, size, "%a %Y-%m-%d %H:%M:%S %Z", &tm);
        if (n == 0)
                return "n/a";
        if (now >= t) {
                format_span((uint64_t) (now - t), span, sizeof(span));
                snprintf(buf + n, size - n, " (%s ago)", span);
        } else {
                format_span((uint64_t) (t - now), span, sizeof(span));
                snprintf(buf + n, size - n, " (in %s)", span);
        }
        return buf;
}

static json_object *props_to_json(Props *ps) {
        json_object *o = json_object_new_object();

        if (!o)
                return NULL;
        for (size_t k = 0; k < N_PROPS; k++) {
                Prop *p = &ps->p[k];
                json_object *v = NULL;

                if (!p->present)
                        continue;
                switch (p->type) {
                case PROP_STRING:
                        v = json_object_new_string(p->s ?: "");
                        break;
                case PROP_U32:
                case PROP_U64:
                        v = json_object_new_uint64(p->u);
                        break;
                case PROP_I64:
                        v = json_object_new_int64(p->i);
                        break;
                }
                if (!v || json_object_object_add(o, p->name, v) < 0) {
                        json_object_put(v);
                        json_object_put(o);
                        return NULL;
                }
        }
        return o;
}

static int print_json(Props *ps) {
        json_object *o = props_to_json(ps);

        if (!o)
                return dpsctl_error(DPSCTL_EXIT_FAILURE, "out of memory");
        puts(json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE));
        json_object_put(o);
        return DPSCTL_EXIT_SUCCESS;
}

static void print_field(const char *label, const char *value) {
        if (!strempty(value))
                printf("%16s: %s\n", label, value);
}

static int verb_status(int argc, char *argv[]) {
        _cleanup_(sd_bus_flush_close_unrefp) sd_bus *bus = NULL;
        char buf[128], line[512];
        BusArgs a;
        Props ps;
        int r;

        r = parse_args(argc, argv, OPT_JSON, &a);
        if (r >= 0)
                return r;
        r = bus_connect(&a, &bus);
        if (r != 0)
                return r;

        props_init(&ps);
        r = get_all(bus, &ps);
        if (r == 0 && a.json)
                r = print_json(&ps);
        else if (r == 0) {
                const char *source = props_str(&ps, "Source");
                uint64_t next = props_u64(&ps, "NextAttempt");

                snprintf(line, sizeof(line), "%s%s%s%s", props_str(&ps, "State"),
                         strempty(source) ? "" : " (from ", source, strempty(source) ? "" : ")");
                print_field("State", line);
                print_field("Registration ID", props_str(&ps, "RegistrationId"));
                print_field("ID scope", props_str(&ps, "IdScope"));
                snprintf(line, sizeof(line), "%s (%s)", props_str(&ps, "Endpoint"), props_str(&ps, "Transport"));
                print_field("Endpoint", line);
                print_field("Attestation", props_str(&ps, "AttestationType"));
                print_field("Assigned hub", props_str(&ps, "AssignedHub"));
                print_field("Device ID", props_str(&ps, "DeviceId"));
                print_field("Substatus", props_str(&ps, "Substatus"));
                if (props_u64(&ps, "LastProvisioned") > 0)
                        print_field("Provisioned", format_time(props_u64(&ps, "LastProvisioned"), buf, sizeof(buf)));
                if (next > 0)
                        print_field("Next attempt", format_time(next, buf, sizeof(buf)));
                snprintf(line, sizeof(line), "%" PRIu64, props_u64(&ps, "Attempts"));
                print_field("Attempts", line);
                if (!strempty(props_str(&ps, "LastError"))) {
                        snprintf(line, sizeof(line), "%s (code %" PRIi64 "%s%s)", props_str(&ps, "LastError"),
                                 props_i64(&ps, "LastErrorCode"),
                                 strempty(props_str(&ps, "LastTrackingId")) ? "" : ", tracking id ",
                                 props_str(&ps, "LastTrackingId"));
                        print_field("Last error", line);
                }
                print_field("Payload", props_str(&ps, "Payload"));
        }
        props_done(&ps);
        return r;
}

static void print_prop(Prop *p, bool value_only) {
        if (!value_only)
                printf("%s=", p->name);
        switch (p->type) {
        case PROP_STRING:
                printf("%s\n", p->s ?: "");
                break;
        case PROP_U32:
        case PROP_U64:
                printf("%" PRIu64 "\n", p->u);
                break;
        case PROP_I64:
                printf("%" PRIi64 "\n", p->i);
                break;
        }
}

static int verb_show(int argc, char *argv[]) {
        _cleanup_(sd_bus_flush_close_unrefp) sd_bus *bus = NULL;
        BusArgs a;
        Props ps;
        int r;

        r = parse_args(argc, argv, OPT_PROPERTY | OPT_JSON, &a);
        if (r >= 0)
                return r;
        props_init(&ps);
        if (a.property && !props_find(&ps, a.property))
                return dpsctl_error(DPSCTL_EXIT_USAGE, "show: unknown property '%s' (see 'dpsctl show')",
                                    a.property);
        r = bus_connect(&a, &bus);
        if (r != 0)
                return r;

        r = get_all(bus, &ps);
        if (r == 0 && a.json)
                r = print_json(&ps);
        else if (r == 0)
                for (size_t k = 0; k < N_PROPS; k++) {
                        Prop *p = &ps.p[k];

                        if (!p->present || (a.property && strcasecmp(a.property, p->name) != 0))
                                continue;
                        print_prop(p, a.value);
                }
        props_done(&ps);
        return r;
}

/* ---- wait and reprovision ----------------------------------------------- */

typedef struct Waiter {
        int result;             /* < 0 while waiting, else the exit code */
        bool armed;             /* signals count only once armed */
        bool need_new;          /* only a Provisioned signal counts, not State */
        bool started;           /* Reprovision() started a registration */
        const char *verb;
        Props props;
} Waiter;

static void waiter_state(Waiter *w, const char *state) {
        if (!w->armed || w->result >= 0 || !state)
                return;
        if (streq(state, "provisioned") && !w->need_new)
                w->result = DPSCTL_EXIT_SUCCESS;
        else if (streq(state, "failed") || streq(state, "disabled")) {
                const char *err = props_str(&w->props, "LastError");

                w->result = dpsctl_error(DPSCTL_EXIT_FAILURE, "%s: provisioning %s%s%s", w->verb, state,
                                         strempty(err) ? "" : ": ", err);
        }
}

static int on_properties_changed(sd_bus_message *m, void *userdata, sd_bus_error *ret_error) {
        Waiter *w = userdata;
        const char *iface;
        bool state = false;

        if (sd_bus_message_read(m, "s", &iface) < 0 || !streq(iface, BUS_INTERFACE))
                return 0;
        if (props_read_dict(m, &w->props, &state) < 0 || !state)
                return 0;
        waiter_state(w, props_str(&w->props, "State"));
        return 0;
}

static int on_provisioned(sd_bus_message *m, void *userdata, sd_bus_error *ret_error) {
        Waiter *w = userdata;
        const char *hub, *device;

        if (!w->armed || w->result >= 0 || sd_bus_message_read(m, "ss", &hub, &device) < 0)
                return 0;
        free(props_find(&w->props, "AssignedHub")->s);
        props_find(&w->props, "AssignedHub")->s = strdup(hub);
        free(props_find(&w->props, "DeviceId")->s);
        props_find(&w->props, "DeviceId")->s = strdup(device);
        w->result = DPSCTL_EXIT_SUCCESS;
        return 0;
}

static int add_matches(sd_bus *bus, Waiter *w) {
        int r;

        /* Synchronous AddMatch: once these return, no signal can be missed. */
        r = sd_bus_match_signal(bus, NULL, BUS_NAME, BUS_PATH, "org.freedesktop.DBus.Properties",
                                "PropertiesChanged", on_properties_changed, w);
        if (r >= 0)
                r = sd_bus_match_signal(bus, NULL, BUS_NAME, BUS_PATH, BUS_INTERFACE, "Provisioned",
                                        on_provisioned, w);
        if (r < 0)
                return dpsctl_error(EXIT_UNAVAILABLE, "%s: cannot subscribe to dpsd's signals: %s", w->verb,
                                    strerror(-r));
        return 0;
}

static uint64_t now_mono_usec(void) {
        struct timespec ts;

        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (uint64_t) ts.tv_sec * USEC_PER_SEC + (uint64_t) ts.tv_nsec / 1000;
}

/* Processes the bus until w->result is set or the deadline (0: none). */
static int run_until_done(sd_bus *bus, Waiter *w, uint64_t deadline) {
        for (;;) {
                uint64_t timeout = UINT64_MAX;
                int r;

                r = sd_bus_process(bus, NULL);
                if (r < 0)
                        return dpsctl_error(EXIT_UNAVAILABLE, "%s: lost the bus connection: %s", w->verb,
                                            strerror(-r));
                if (w->result >= 0)
                        return w->result;
                if (r > 0)
                        continue;

                if (deadline > 0) {
                        uint64_t now = now_mono_usec();

                        if (now >= deadline)
                                return dpsctl_error(EXIT_TIMEOUT, "%s: timed out; dpsd is %s", w->verb,
                                                    strempty(props_str(&w->props, "State")) ? "still working"
                                                    : props_str(&w->props, "State"));
                        timeout = deadline - now;
                }
                r = sd_bus_wait(bus, timeout);
                if (r < 0 && r != -EINTR)
                        return dpsctl_error(EXIT_UNAVAILABLE, "%s: lost the bus connection: %s", w->verb,
                                            strerror(-r));
        }
}

static uint64_t deadline_of(const BusArgs *a) {
        if (a->timeout_sec < 0)
                return 0;
        return now_mono_usec() + (uint64_t) (a->timeout_sec * (double) USEC_PER_SEC) + 1;
}

static void print_provisioned(Waiter *w) {
        printf("Provisioned: hub %s, device %s\n", props_str(&w->props, "AssignedHub"),
               props_str(&w->props, "DeviceId"));
}

static int verb_wait(int argc, char *argv[]) {
        _cleanup_(sd_bus_flush_close_unrefp) sd_bus *bus = NULL;
        Waiter w = { .result = -1, .verb = "wait" };
        uint64_t deadline;
        BusArgs a;
        int r;

        r = parse_args(argc, argv, OPT_TIMEOUT, &a);
        if (r >= 0)
                return r;
        deadline = deadline_of(&a);
        r = bus_connect(&a, &bus);
        if (r != 0)
                return r;

        props_init(&w.props);
        r = add_matches(bus, &w);
        if (r == 0)
                /* After the matches: a change between the two is seen either way. */
                r = get_all(bus, &w.props);
        if (r == 0) {
                w.armed = true;
                waiter_state(&w, props_str(&w.props, "State"));
                r = run_until_done(bus, &w, deadline);
        }
        if (r == DPSCTL_EXIT_SUCCESS)
                print_provisioned(&w);
        props_done(&w.props);
        return r;
}

static int on_reprovision_reply(sd_bus_message *m, void *userdata, sd_bus_error *ret_error) {
        Waiter *w = userdata;
        const sd_bus_error *e = sd_bus_message_get_error(m);
        int started = 0, r;

        if (e) {
                w->result = bus_error_exit(e, -sd_bus_message_get_errno(m), "reprovision");
                return 0;
        }
        r = sd_bus_message_read(m, "b", &started);
        if (r < 0) {
                w->result = dpsctl_error(DPSCTL_EXIT_FAILURE, "reprovision: unexpected reply: %s", strerror(-r));
                return 0;
        }
        w->started = started;
        /* Signals dpsd sent before this reply belong to the old registration:
         * they were dispatched before it, in the order they were sent. */
        w->armed = true;
        return 0;
}

static int verb_reprovision(int argc, char *argv[]) {
        _cleanup_(sd_bus_flush_close_unrefp) sd_bus *bus = NULL;
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *call = NULL;
        Waiter w = { .result = -1, .verb = "reprovision", .need_new = true };
        uint64_t deadline;
        BusArgs a;
        int r;

        r = parse_args(argc, argv, OPT_WAIT | OPT_TIMEOUT, &a);
        if (r >= 0)
                return r;
        deadline = deadline_of(&a);
        r = bus_connect(&a, &bus);
        if (r != 0)
                return r;

        props_init(&w.props);
        if (a.wait)
                r = add_matches(bus, &w);
        if (r == 0) {
                r = sd_bus_message_new_method_call(bus, &call, BUS_NAME, BUS_PATH, BUS_INTERFACE, "Reprovision");
                if (r >= 0)
                        r = sd_bus_message_append(call, "t", (uint64_t) 0);
                if (r >= 0)
                        r = sd_bus_call_async(bus, NULL, call, on_reprovision_reply, &w, 0);
                r = r < 0 ? dpsctl_error(DPSCTL_EXIT_FAILURE, "reprovision: cannot send the call: %s", strerror(-r)) : 0;
        }
        if (r == 0 && !a.wait) {
                /* Only the reply: the callback sets armed (success) or result (error). */
                while (!w.armed && w.result < 0) {
                        r = sd_bus_process(bus, NULL);
                        if (r == 0)
                                r = sd_bus_wait(bus, UINT64_MAX);
                        if (r < 0 && r != -EINTR) {
                                w.result = dpsctl_error(EXIT_UNAVAILABLE, "reprovision: lost the bus connection: %s",
                                                        strerror(-r));
                                break;
                        }
                }
                r = w.result >= 0 ? w.result : DPSCTL_EXIT_SUCCESS;
                if (r == DPSCTL_EXIT_SUCCESS)
                        printf(w.started ? "Re-provisioning started.\n"
                                         : "A registration is already running; not starting another.\n");
        } else if (r == 0) {
                r = run_until_done(bus, &w, deadline);
                if (r == DPSCTL_EXIT_SUCCESS)
                        print_provisioned(&w);
        }
        props_done(&w.props);
        return r;
}

const DpsctlVerb dpsctl_bus_verbs[] = {
        { "status", verb_status, "[--json] [--address ADDRESS]",
          "Shows the provisioning state: hub, device id, last error.\n"
          "--json prints one JSON object with every property. Exit status 69 when dpsd\n"
          "is not running." },
        { "show", verb_show, "[-p|--property NAME [--value]] [--json] [--address ADDRESS]",
          "Prints every property of org.dpsd.Provisioning1 as NAME=VALUE.\n"
          "-p prints one property; --value only its value." },
        { "wait", verb_wait, "[--timeout SECONDS] [--address ADDRESS]",
          "Blocks until the device is provisioned.\n"
          "Listens to dpsd's signals (no polling). Exit status 0 provisioned, 1 failed or\n"
          "disabled, 3 timeout, 69 dpsd not running." },
        { "reprovision", verb_reprovision, "[--wait [--timeout SECONDS]] [--address ADDRESS]",
          "Asks dpsd to register with DPS again now.\n"
          "Root and the dpsd group only. With --wait, blocks until the new assignment:\n"
          "exit status 0 provisioned, 1 failed, 3 timeout, 4 permission denied, 69 dpsd\n"
          "not running." },
        {}
};

static const DpsctlVerb *bus_verb(const char *name) {
        for (const DpsctlVerb *v = dpsctl_bus_verbs; name && v->name; v++)
                if (streq(v->name, name))
                        return v;
        return &dpsctl_bus_verbs[0];
}
