/* SPDX-License-Identifier: MIT */
/* sim-main.c: dps-sim, a local Azure IoT Hub Device Provisioning Service over MQTT: command line and main loop */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include <systemd/sd-event.h>

#include "dps-macro.h"
#include "sim-conf.h"
#include "sim-dps.h"
#include "sim-events.h"
#include "sim-server.h"

static void help(void) {
        printf("Usage: dps-sim --config FILE [OPTION]...\n\n"
               "A local Azure IoT Hub Device Provisioning Service over MQTT (TLS, and MQTT over WebSocket).\n\n"
               "  -c, --config FILE       configuration (libconfig), required\n"
               "  -e, --events FILE       append a JSON-lines event log to FILE\n"
               "  -r, --ready-file FILE   once listening, write {\"pid\":..,\"mqtt\":PORT,\"ws\":PORT|null}\n"
               "  -s, --set KEY=VALUE     override a key of the defaults fault block (repeatable)\n"
               "      --seed N            seed for fail-probability (default 1)\n"
               "  -h, --help              show this help\n"
               "      --version           show the version\n\n"
               "Runs in the foreground and logs to stderr. SIGTERM or SIGINT stop it; SIGUSR1 prints the counters.\n");
}

static int write_ready_file(const char *path, pid_t pid, uint16_t mqtt, int ws) {
        _cleanup_free_ char *tmp = NULL;
        char buf[128];
        int n = ws >= 0 ? snprintf(buf, sizeof buf, "{\"pid\":%d,\"mqtt\":%u,\"ws\":%d}\n", (int) pid, mqtt, ws)
                        : snprintf(buf, sizeof buf, "{\"pid\":%d,\"mqtt\":%u,\"ws\":null}\n", (int) pid, mqtt);
        if (asprintf(&tmp, "%s.tmp.%d", path, (int) pid) < 0)
                return -ENOMEM;
        /* temp + rename: a reader never sees half a file */
        int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
        if (fd < 0)
                return -errno;
        if (write(fd, buf, (size_t) n) != n || fsync(fd) < 0) {
                int r = -errno;
                close(fd);
                unlink(tmp);
                return r ? r : -EIO;
        }
        close(fd);
        if (rename(tmp, path) < 0) {
                int r = -errno;
                unlink(tmp);
                return r;
        }
        return 0;
}

static int on_usr1(sd_event_source *s, const struct signalfd_siginfo *si, void *userdata) {
        sim_events_print_counters(userdata, stderr);
        return 0;
}

static int on_term(sd_event_source *s, const struct signalfd_siginfo *si, void *userdata) {
        fprintf(stderr, "dps-sim: %s, exiting\n", strsignal((int) si->ssi_signo));
        return sd_event_exit(sd_event_source_get_event(s), 0);
}

static void raise_nofile(void) {
        struct rlimit rl;
        /* 1,000+ concurrent connections: take the hard limit. */
        if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
                rl.rlim_cur = rl.rlim_max;
                if (setrlimit(RLIMIT_NOFILE, &rl) < 0)
                        fprintf(stderr, "dps-sim: cannot raise RLIMIT_NOFILE: %s\n", strerror(errno));
        }
}

DEFINE_TRIVIAL_CLEANUP_FUNC(SimConfig *, sim_config_free);
DEFINE_TRIVIAL_CLEANUP_FUNC(SimDps *, sim_dps_free);
DEFINE_TRIVIAL_CLEANUP_FUNC(SimServer *, sim_server_free);

int main(int argc, char *argv[]) {
        enum { ARG_SEED = 0x100, ARG_VERSION };
        static const struct option options[] = {
                { "config", required_argument, NULL, 'c' },
                { "events", required_argument, NULL, 'e' },
                { "ready-file", required_argument, NULL, 'r' },
                { "set", required_argument, NULL, 's' },
                { "seed", required_argument, NULL, ARG_SEED },
                { "help", no_argument, NULL, 'h' },
                { "version", no_argument, NULL, ARG_VERSION },
                {}
        };
        _cleanup_(sim_config_freep) SimConfig *cfg = NULL;
        _cleanup_(sim_dps_freep) SimDps *dps = NULL;
        _cleanup_(sd_event_unrefp) sd_event *event = NULL;
        _cleanup_(sim_server_freep) SimServer *server = NULL;
        _cleanup_free_ char *error = NULL;
        const char *config_path = NULL, *events_path = NULL, *ready_path = NULL;
        _cleanup_free_ char **sets = NULL;
        size_t n_sets = 0;
        uint64_t seed = 1;
        int c, r;

        sets = calloc((size_t) argc + 1, sizeof(char *));
        if (!sets)
                return EXIT_FAILURE;
        while ((c = getopt_long(argc, argv, "c:e:r:s:h", options, NULL)) >= 0)
                switch (c) {
                case 'c':
                        config_path = optarg;
                        break;
                case 'e':
                        events_path = optarg;
                        break;
                case 'r':
                        ready_path = optarg;
                        break;
                case 's':
                        sets[n_sets++] = optarg;
                        break;
                case ARG_SEED: {
                        char *end;
                        errno = 0;
                        seed = strtoull(optarg, &end, 0);
                        if (errno || end == optarg || *end) {
                                fprintf(stderr, "dps-sim: --seed: '%s' is not a number\n", optarg);
                                return EXIT_FAILURE;
                        }
                        break;
                }
                case 'h':
                        help();
                        return EXIT_SUCCESS;
                case ARG_VERSION:
                        printf("dps-sim %s\n", PACKAGE_VERSION);
                        return EXIT_SUCCESS;
                default:
                        return EXIT_FAILURE;
                }
        if (optind < argc) {
                fprintf(stderr, "dps-sim: unexpected argument '%s'; see --help\n", argv[optind]);
                return EXIT_FAILURE;
        }
        if (!config_path) {
                fprintf(stderr, "dps-sim: --config FILE is required; see --help\n");
                return EXIT_FAILURE;
        }

        r = sim_config_load(config_path, &cfg, &error);
        if (r < 0) {
                fprintf(stderr, "dps-sim: %s\n", error ? error : strerror(-r));
                return EXIT_FAILURE;
        }
        for (size_t i = 0; i < n_sets; i++) {
                _cleanup_free_ char *e = NULL;
                if (sim_faults_set(&cfg->defaults, sets[i], &e) < 0) {
                        fprintf(stderr, "dps-sim: %s\n", e ? e : "invalid --set");
                        return EXIT_FAILURE;
                }
        }

        raise_nofile();
        signal(SIGPIPE, SIG_IGN);
        sigset_t mask;
        sigemptyset(&mask);
        sigaddset(&mask, SIGTERM);
        sigaddset(&mask, SIGINT);
        sigaddset(&mask, SIGUSR1);
        sigprocmask(SIG_BLOCK, &mask, NULL);

        SimEvents events;
        r = sim_events_open(&events, events_path);
        if (r < 0) {
                fprintf(stderr, "dps-sim: cannot open the event log %s: %s\n", events_path, strerror(-r));
                return EXIT_FAILURE;
        }

        r = sim_dps_new(cfg, seed, &dps);
        if (r < 0)
                goto fail;
        r = sim_dps_load_state(dps);
        if (r < 0)
                /* A corrupt or foreign state file is set aside, never fatal. */
                fprintf(stderr, "dps-sim: ignoring the state file %s: %s\n", cfg->state_file,
                        r == -ESTALE ? "it belongs to another id scope" : strerror(-r));

        r = sd_event_default(&event);
        if (r < 0)
                goto fail;
        r = sd_event_add_signal(event, NULL, SIGTERM, on_term, NULL);
        if (r >= 0)
                r = sd_event_add_signal(event, NULL, SIGINT, on_term, NULL);
        if (r >= 0)
                r = sd_event_add_signal(event, NULL, SIGUSR1, on_usr1, &events);
        if (r < 0)
                goto fail;

        r = sim_server_new(event, cfg, dps, &events, &server);
        if (r < 0) {
                sim_events_close(&events);
                return EXIT_FAILURE;    /* the reason was printed */
        }
        fprintf(stderr, "dps-sim: id scope %s, %zu enrollment(s), MQTT on port %u", cfg->id_scope,
                cfg->n_enrollments, server->mqtt.port);
        if (cfg->listen_ws)
                fprintf(stderr, ", WebSocket on port %u", server->ws.port);
        fprintf(stderr, "\n");
        if (ready_path) {
                r = write_ready_file(ready_path, getpid(), server->mqtt.port, cfg->listen_ws ? server->ws.port : -1);
                if (r < 0) {
                        fprintf(stderr, "dps-sim: cannot write the ready file %s: %s\n", ready_path, strerror(-r));
                        sim_events_close(&events);
                        return EXIT_FAILURE;
                }
        }

        r = sd_event_loop(event);
        server = sim_server_free(server);       /* closes connections, saves the state */
        sim_events_print_counters(&events, stderr);
        sim_events_close(&events);
        return r < 0 ? EXIT_FAILURE : EXIT_SUCCESS;

fail:
        fprintf(stderr, "dps-sim: %s\n", strerror(-r));
        sim_events_close(&events);
        return EXIT_FAILURE;
}
