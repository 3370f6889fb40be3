/* SPDX-License-Identifier: MIT */
/* herd.c: N dpsd state machines (the real Manager, libdps sessions) booting at once in one process */

/*
 * A thundering-herd bench: every device is a real dpsd Manager (the same
 * daemon/dpsd-manager.c code, its retry policy: dps_classify() and
 * dps_backoff_next() with retry-after as a floor, jitter seeded per device)
 * with its own config, cache file, TLS context and libmosquitto session, all
 * on one sd-event loop. They start in the same loop iteration, as devices
 * powered on together would. One process instead of N dpsd processes: the
 * per-process cost of dpsd (see bench/README.md, "Memory") times N would
 * measure the machine, not the policy.
 *
 * The config file given is a normal dps.conf for a group enrollment
 * (attestation.group-key-file); each device gets registration id
 * PREFIX-NNNN and its own cache and identity.env under --state-dir.
 * Prints one JSON object: how many were provisioned, when, attempts.
 * Exit 0 when all were provisioned before --timeout, 1 otherwise.
 */

#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include <systemd/sd-event.h>

#include "dps-macro.h"
#include "dpsd-conf.h"
#include "dpsd-log.h"
#include "dpsd-manager.h"

#define USEC_PER_SEC 1000000ULL
#define USEC_PER_MSEC 1000ULL

typedef struct Herd Herd;

typedef struct HerdDevice {
        Herd *herd;
        Manager *manager;
        ManagerState last_state;
        uint64_t t_done;        /* CLOCK_MONOTONIC, 0 while not final */
        unsigned state_changes;
        bool provisioned, failed;
} HerdDevice;

struct Herd {
        sd_event *event;
        HerdDevice *devices;
        unsigned n, provisioned, failed;
        uint64_t t_begin, t_last;
};

static const char *arg_config = NULL;
static const char *arg_state_dir = NULL;
static const char *arg_prefix = "herd";
static unsigned arg_devices = 200;
static unsigned arg_timeout_sec = 300;

static uint64_t now_mono(void) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (uint64_t) ts.tv_sec * USEC_PER_SEC + (uint64_t) ts.tv_nsec / 1000;
}

static void help(void) {
        printf("Usage: dps-herd --config DPS.CONF --state-dir DIR [--devices N] [--prefix P] [--timeout S]\n"
               "Boots N dpsd state machines at once in one process against the endpoint of\n"
               "DPS.CONF (a group-key enrollment); registration ids P-0000, P-0001, ...\n"
               "Prints one JSON line; exit 0 when all were provisioned in time.\n");
}

static int parse_argv(int argc, char *argv[]) {
        static const struct option options[] = {
                { "config",    required_argument, NULL, 'c' },
                { "state-dir", required_argument, NULL, 's' },
                { "devices",   required_argument, NULL, 'n' },
                { "prefix",    required_argument, NULL, 'p' },
                { "timeout",   required_argument, NULL, 't' },
                { "help",      no_argument,       NULL, 'h' },
                {}
        };
        int c;

        while ((c = getopt_long(argc, argv, "c:s:n:p:t:h", options, NULL)) >= 0)
                switch (c) {
                case 'c': arg_config = optarg; break;
                case 's': arg_state_dir = optarg; break;
                case 'p': arg_prefix = optarg; break;
                case 'n': arg_devices = (unsigned) strtoul(optarg, NULL, 10); break;
                case 't': arg_timeout_sec = (unsigned) strtoul(optarg, NULL, 10); break;
                case 'h': help(); return 1;
                default: return -EINVAL;
                }
        if (!arg_config || !arg_state_dir || arg_devices == 0 || arg_devices > 100000 || arg_timeout_sec == 0) {
                fprintf(stderr, "dps-herd: --config, --state-dir and a device count of 1..100000 are needed; see --help\n");
                return -EINVAL;
        }
        return 0;
}

static void device_final(HerdDevice *d, bool ok) {
        Herd *h = d->herd;

        if (d->provisioned || d->failed)
                return;
        d->t_done = now_mono();
        if (ok) {
                d->provisioned = true;
                h->provisioned++;
        } else {
                d->failed = true;
                h->failed++;
        }
        h->t_last = d->t_done;
        if (h->provisioned + h->failed == h->n)
                (void) sd_event_exit(h->event, 0);
}

static void on_manager(Manager *m, ManagerEvent ev, void *userdata) {
        HerdDevice *d = userdata;
        ManagerInfo info;

        manager_get_info(m, &info);
        switch (ev) {
        case MANAGER_EVENT_CHANGED:
                if (info.state != d->last_state)
                        d->state_changes++;
                d->last_state = info.state;
                /* FAILED and DISABLED are final for this config. */
                if (info.state == MANAGER_FAILED || info.state == MANAGER_DISABLED)
                        device_final(d, false);
                break;
        case MANAGER_EVENT_PROVISIONED:
                device_final(d, true);
                break;
        case _MANAGER_EVENT_MAX:
                break;
        }
}

static int on_timeout(sd_event_source *s, uint64_t usec, void *userdata) {
        return sd_event_exit(sd_event_source_get_event(s), 1);
}

static int on_signal(sd_event_source *s, const struct signalfd_siginfo *si, void *userdata) {
        return sd_event_exit(sd_event_source_get_event(s), 2);
}

static int replace_str(char **p, const char *format, ...) _printf_(2, 3);
static int replace_str(char **p, const char *format, ...) {
        va_list ap;
        char *s;
        int r;

        va_start(ap, format);
        r = vasprintf(&s, format, ap);
        va_end(ap);
        if (r < 0)
                return -ENOMEM;
        free(*p);
        *p = s;
        return 0;
}

/* One Config per device: the shared file, with this device's id and files. */
static int device_config(unsigned i, Config **ret) {
        _cleanup_(config_freep) Config *c = NULL;
        _cleanup_free_ char *err = NULL;
        int r;

        r = config_load(arg_config, &c, &err);
        if (r < 0) {
                fprintf(stderr, "dps-herd: %s\n", err ?: strerror(-r));
                return r;
        }
        if (!c->group_key) {
                fprintf(stderr, "dps-herd: %s: the herd needs a group enrollment (attestation.group-key-file)\n",
                        arg_config);
                return -EINVAL;
        }
        if (replace_str(&c->registration_id, "%s-%04u", arg_prefix, i) < 0 ||
            replace_str(&c->cache_path, "%s/cache-%04u.json", arg_state_dir, i) < 0 ||
            replace_str(&c->identity_env_path, "%s/identity-%04u.env", arg_state_dir, i) < 0)
                return -ENOMEM;
        r = dps_registration_id_validate(c->registration_id, false, NULL);
        if (r < 0) {
                fprintf(stderr, "dps-herd: --prefix %s makes an invalid registration id\n", arg_prefix);
                return r;
        }
        *ret = TAKE_PTR(c);
        return 0;
}

static int cmp_u64(const void *a, const void *b) {
        uint64_t x = *(const uint64_t *) a, y = *(const uint64_t *) b;
        return x < y ? -1 : x > y;
}

static void print_result(Herd *h, int loop_result) {
        _cleanup_free_ uint64_t *t = calloc(h->n, sizeof *t);
        unsigned k = 0;
        uint64_t attempts = 0, state_changes = 0;
        struct rusage ru = {};

        for (unsigned i = 0; i < h->n; i++) {
                HerdDevice *d = &h->devices[i];
                ManagerInfo info;

                manager_get_info(d->manager, &info);
                attempts += info.attempts;
                state_changes += d->state_changes;
                if (d->provisioned && t)
                        t[k++] = d->t_done - h->t_begin;
        }
        if (t && k > 0)
                qsort(t, k, sizeof *t, cmp_u64);
        (void) getrusage(RUSAGE_SELF, &ru);

        printf("{\"devices\":%u,\"provisioned\":%u,\"failed\":%u,\"timed_out\":%s,"
               "\"seconds\":%.3f,\"p50_s\":%.3f,\"p90_s\":%.3f,\"max_s\":%.3f,"
               "\"failed_attempts\":%" PRIu64 ",\"state_changes\":%" PRIu64 ","
               "\"cpu_s\":%.3f,\"maxrss_kib\":%ld}\n",
               h->n, h->provisioned, h->failed, loop_result == 1 ? "true" : "false",
               h->t_last > h->t_begin ? (double) (h->t_last - h->t_begin) / USEC_PER_SEC : 0.0,
               k ? (double) t[k / 2] / USEC_PER_SEC : 0.0,
               k ? (double) t[(k * 9) / 10 < k ? (k * 9) / 10 : k - 1] / USEC_PER_SEC : 0.0,
               k ? (double) t[k - 1] / USEC_PER_SEC : 0.0,
               attempts, state_changes,
               (double) (ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
               (double) (ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / USEC_PER_SEC,
               ru.ru_maxrss);
        fflush(stdout);
}

static int run(int argc, char *argv[]) {
        _cleanup_(sd_event_unrefp) sd_event *e = NULL;
        Herd h = {};
        sigset_t mask;
        int r, loop_r;

        log_parse_environment();
        r = parse_argv(argc, argv);
        if (r != 0)
                return r > 0 ? EXIT_SUCCESS : 2;

        (void) signal(SIGPIPE, SIG_IGN);
        sigemptyset(&mask);
        sigaddset(&mask, SIGTERM);
        sigaddset(&mask, SIGINT);
        if (sigprocmask(SIG_BLOCK, &mask, NULL) < 0)
                return EXIT_FAILURE;

        /* Every device holds a socket (and, while connecting, a clock fd). */
        struct rlimit rl;
        if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
                rl.rlim_cur = rl.rlim_max;
                (void) setrlimit(RLIMIT_NOFILE, &rl);
        }

        r = sd_event_new(&e);
        if (r < 0)
                return EXIT_FAILURE;
        h.event = e;
        h.n = arg_devices;
        h.devices = calloc(h.n, sizeof *h.devices);
        if (!h.devices)
                return EXIT_FAILURE;

        for (unsigned i = 0; i < h.n; i++) {
                HerdDevice *d = &h.devices[i];
                Config *c = NULL;

                d->herd = &h;
                d->last_state = _MANAGER_STATE_MAX;
                r = device_config(i, &c);
                if (r < 0)
                        goto finish;
                r = manager_new(e, c, arg_config, &d->manager);   /* takes c, also on failure */
                if (r < 0) {
                        fprintf(stderr, "dps-herd: device %u: %s\n", i, strerror(-r));
                        goto finish;
                }
                manager_set_observer(d->manager, on_manager, d);
        }

        r = sd_event_add_signal(e, NULL, SIGTERM, on_signal, NULL);
        if (r >= 0)
                r = sd_event_add_signal(e, NULL, SIGINT, on_signal, NULL);
        if (r >= 0)
                r = sd_event_add_time_relative(e, NULL, CLOCK_MONOTONIC,
                                               (uint64_t) arg_timeout_sec * USEC_PER_SEC, 100 * USEC_PER_MSEC,
                                               on_timeout, NULL);
        if (r < 0) {
                fprintf(stderr, "dps-herd: event sources: %s\n", strerror(-r));
                goto finish;
        }

        /* All start from the same loop iteration, as devices powered on together. */
        h.t_begin = now_mono();
        for (unsigned i = 0; i < h.n; i++) {
                r = manager_start(h.devices[i].manager);
                if (r < 0) {
                        fprintf(stderr, "dps-herd: device %u failed to start: %s\n", i, strerror(-r));
                        goto finish;
                }
        }

        loop_r = sd_event_loop(e);
        print_result(&h, loop_r);
        r = h.provisioned == h.n ? 0 : -ETIMEDOUT;

finish:
        for (unsigned i = 0; i < h.n; i++)
                if (h.devices[i].manager) {
                        manager_stop(h.devices[i].manager);
                        h.devices[i].manager = manager_free(h.devices[i].manager);
                }
        free(h.devices);
        return r < 0 ? EXIT_FAILURE : EXIT_SUCCESS;
}

int main(int argc, char *argv[]) {
        return run(argc, argv);
}
