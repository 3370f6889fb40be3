/* SPDX-License-Identifier: MIT */
/* dpsd-main.c: dpsd's entry point: arguments, event loop, signals, readiness */
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>

#include <systemd/sd-daemon.h>
#include <systemd/sd-event.h>

#include "config.h"
#include "dps-macro.h"
#include "dpsd-bus.h"
#include "dpsd-conf.h"
#include "dpsd-log.h"
#include "dpsd-manager.h"

static const char *arg_config = CONFIG_DEFAULT_PATH;
static bool arg_check_config = false;

static void help(void) {
        printf("Usage: dpsd [OPTIONS]\n"
               "Azure IoT Hub Device Provisioning Service agent.\n\n"
               "  -c, --config PATH   configuration file (default %s)\n"
               "      --check-config  validate the configuration and exit 0 (valid) or 1,\n"
               "                      without touching the network\n"
               "  -h, --help          show this help\n"
               "      --version       show the version\n\n"
               "Environment: DPSD_LOG_LEVEL=debug|info|notice|warning|err,\n"
               "DPSD_MIN_SANE_TIME=UNIX-SECONDS (clock sanity bar, for tests).\n"
               "Exit status 78 (EX_CONFIG): the configuration is invalid.\n",
               CONFIG_DEFAULT_PATH);
}

/* 0 to run, 1 to exit successfully, <0 on a usage error */
static int parse_argv(int argc, char *argv[]) {
        enum { ARG_CHECK_CONFIG = 0x100, ARG_VERSION };
        static const struct option options[] = {
                { "config",       required_argument, NULL, 'c' },
                { "check-config", no_argument,       NULL, ARG_CHECK_CONFIG },
                { "help",         no_argument,       NULL, 'h' },
                { "version",      no_argument,       NULL, ARG_VERSION },
                {}
        };
        int c;

        while ((c = getopt_long(argc, argv, "c:h", options, NULL)) >= 0)
                switch (c) {
                case 'c':
                        arg_config = optarg;
                        break;
                case ARG_CHECK_CONFIG:
                        arg_check_config = true;
                        break;
                case 'h':
                        help();
                        return 1;
                case ARG_VERSION:
                        printf("dpsd %s\n", PACKAGE_VERSION);
                        return 1;
                case '?':
                        return -EINVAL;
                default:
                        return -EINVAL;
                }
        if (optind < argc) {
                fprintf(stderr, "dpsd: unexpected argument '%s'; see --help\n", argv[optind]);
                return -EINVAL;
        }
        return 0;
}

static int on_terminate(sd_event_source *s, const struct signalfd_siginfo *si, void *userdata) {
        log_info("Received %s, stopping.", strsignal((int) si->ssi_signo));
        (void) sd_notify(false, "STOPPING=1\nSTATUS=Stopping");
        return sd_event_exit(sd_event_source_get_event(s), 0);
}

static int on_reload(sd_event_source *s, const struct signalfd_siginfo *si, void *userdata) {
        Manager *m = userdata;

        log_info("Received SIGHUP, reloading %s.", arg_config);
        (void) sd_notify(false, "RELOADING=1");
        (void) manager_reload(m);
        (void) sd_notify(false, "READY=1");
        return 0;
}

static int run(int argc, char *argv[]) {
        _cleanup_(manager_freep) Manager *m = NULL;
        _cleanup_(bus_freep) Bus *bus = NULL;
        _cleanup_free_ char *err = NULL;
        Config *config = NULL;
        sd_event *e = NULL;
        sigset_t mask;
        int r;

        log_parse_environment();

        r = parse_argv(argc, argv);
        if (r != 0)
                return r > 0 ? EXIT_SUCCESS : 2;

        r = config_load(arg_config, &config, &err);
        if (r < 0) {
                log_error("%s", err ?: strerror(-r));
                return arg_check_config ? EXIT_FAILURE : EXIT_CONFIG;
        }
        if (arg_check_config) {
                printf("%s: configuration OK (registration id %s from %s, scope %s, %s attestation, %s:%u)\n",
                       arg_config, config->registration_id, config->registration_id_source, config->id_scope,
                       attestation_type_to_string(config->attestation), config->endpoint, config->port);
                config_free(config);
                return EXIT_SUCCESS;
        }

        /* libmosquitto writes to sockets through OpenSSL: a peer that closed
         * must be an error code, not a signal. */
        (void) signal(SIGPIPE, SIG_IGN);
        sigemptyset(&mask);
        sigaddset(&mask, SIGTERM);
        sigaddset(&mask, SIGINT);
        sigaddset(&mask, SIGHUP);
        if (sigprocmask(SIG_BLOCK, &mask, NULL) < 0) {
                config_free(config);
                return log_error_errno(errno, "Failed to block signals: %m"), EXIT_FAILURE;
        }

        r = sd_event_default(&e);
        if (r < 0) {
                config_free(config);
                return log_error_errno(r, "Failed to allocate the event loop: %m"), EXIT_FAILURE;
        }

        r = manager_new(e, config, arg_config, &m);
        if (r < 0) {
                sd_event_unref(e);
                return log_error_errno(r, "Failed to set up: %m"), EXIT_FAILURE;
        }

        if (sd_event_add_signal(e, NULL, SIGTERM, on_terminate, NULL) < 0 ||
            sd_event_add_signal(e, NULL, SIGINT, on_terminate, NULL) < 0 ||
            (r = sd_event_add_signal(e, NULL, SIGHUP, on_reload, m)) < 0) {
                sd_event_unref(e);
                return log_error_errno(r < 0 ? r : -EIO, "Failed to watch signals: %m"), EXIT_FAILURE;
        }

        /* Pings the service manager's watchdog from the loop when
         * $WATCHDOG_USEC asks for it. */
        r = sd_event_set_watchdog(e, true);
        if (r < 0)
                log_warning_errno(r, "Failed to enable the watchdog, continuing: %m");

        /* Reads the cache: a valid one makes us provisioned right away. */
        r = manager_start(m);
        if (r < 0) {
                sd_event_unref(e);
                return log_error_errno(r, "Failed to start: %m"), EXIT_FAILURE;
        }

        /* bus: the D-Bus API. Without a reachable bus dpsd still provisions;
         * another owner of the name means another dpsd is running. */
        r = bus_new(e, m, &bus);
        if (r == -EEXIST) {
                sd_event_unref(e);
                return log_error_errno(r, "Another process owns %s: is dpsd already running?", BUS_NAME), EXIT_FAILURE;
        }
        if (r < 0)
                log_warning_errno(r, "D-Bus API not available, continuing without it: %m");

        (void) sd_notify(false, "READY=1");

        r = sd_event_loop(e);

        (void) sd_notify(false, "STOPPING=1");
        bus = bus_free(bus);
        manager_stop(m);
        m = manager_free(m);
        sd_event_unref(e);
        if (r < 0)
                return log_error_errno(r, "Event loop failed: %m"), EXIT_FAILURE;
        return r == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}

int main(int argc, char *argv[]) {
        return run(argc, argv);
}
