/* SPDX-License-Identifier: MIT */
/* dpsctl.c: the dpsctl command line, its verb table and the offline key verbs */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/uio.h>

#include <openssl/crypto.h>

#include "dps-macro.h"
#include "dpsctl.h"

/* A base64 key is 44 characters (32 bytes) or 88 (64 bytes); 4 KiB leaves
 * room for anything sane and bounds what we wipe. */
#define SECRET_MAX 4096

/* SAS token lifetime when neither --expiry nor --ttl is given: "sign with a
 * lifetime of about an hour from the current time". */
#define DEFAULT_TTL_SEC 3600

int dpsctl_error(int code, const char *format, ...) {
        va_list ap;

        fputs("dpsctl: ", stderr);
        va_start(ap, format);
        vfprintf(stderr, format, ap);
        va_end(ap);
        fputc('\n', stderr);
        return code;
}

void dpsctl_verb_usage(const DpsctlVerb *v) {
        printf("Usage: dpsctl %s %s\n\n%s\n", v->name, v->args, v->summary);
}

int dpsctl_read_secret_stdin(char **ret_secret) {
        char buf[SECRET_MAX + 1];
        size_t n = 0;
        char *s;
        int r = 0;

        /* Read until EOF: a key piped in with or without a final newline. */
        for (;;) {
                ssize_t k = read(STDIN_FILENO, buf + n, sizeof(buf) - n);

                if (k < 0) {
                        if (errno == EINTR)
                                continue;
                        r = -errno;
                        dpsctl_error(0, "cannot read the key from standard input: %s", strerror(errno));
                        goto out;
                }
                if (k == 0)
                        break;
                n += (size_t) k;
                if (n == sizeof(buf)) {
                        r = -EMSGSIZE;
                        dpsctl_error(0, "the key on standard input is longer than %d bytes", SECRET_MAX);
                        goto out;
                }
        }

        while (n > 0 && strchr(" \t\r\n", buf[n - 1]))
                n--;
        if (n == 0) {
                r = -EINVAL;
                dpsctl_error(0, "no key on standard input (pipe the base64 key in, e.g. 'dpsctl ... < key.txt')");
                goto out;
        }
        if (memchr(buf, '\0', n)) {
                r = -EINVAL;
                dpsctl_error(0, "the key on standard input contains a NUL byte; expected base64 text");
                goto out;
        }

        s = strndup(buf, n);
        if (!s) {
                r = -ENOMEM;
                dpsctl_error(0, "out of memory");
                goto out;
        }
        *ret_secret = s;
out:
        OPENSSL_cleanse(buf, sizeof(buf));
        return r;
}

/* Strict decimal: digits only, no sign, no overflow. */
static int parse_u64(const char *s, uint64_t *ret) {
        uint64_t v = 0;

        if (!s || !*s)
                return -EINVAL;
        for (const char *c = s; *c; c++) {
                if (*c < '0' || *c > '9')
                        return -EINVAL;
                if (v > (UINT64_MAX - (uint64_t) (*c - '0')) / 10)
                        return -ERANGE;
                v = v * 10 + (uint64_t) (*c - '0');
        }
        *ret = v;
        return 0;
}

static int check_registration_id(const char *id) {
        const char *reason = NULL;

        if (!id)
                return dpsctl_error(DPSCTL_EXIT_USAGE, "missing --registration-id");
        if (dps_registration_id_validate(id, false, &reason) < 0)
                return dpsctl_error(DPSCTL_EXIT_USAGE, "invalid registration id \"%s\": %s", id, reason);
        return 0;
}

/* The key was read, so it is not a usage error: report what is wrong with it. */
static int key_error(int r, const char *what) {
        if (r == -EINVAL)
                return dpsctl_error(DPSCTL_EXIT_FAILURE,
                                    "the %s on standard input is not valid base64 (standard alphabet with '=' padding, "
                                    "e.g. 44 characters for a 32-byte key)", what);
        return dpsctl_error(DPSCTL_EXIT_FAILURE, "cannot use the %s: %s", what, strerror(-r));
}

/* write(2), not stdio: a copy left in stdout's buffer would never be wiped. */
static int print_secret(const char *s) {
        const struct iovec iov[2] = {
                { .iov_base = (void *) s, .iov_len = strlen(s) },
                { .iov_base = (void *) "\n", .iov_len = 1 },
        };
        size_t total = iov[0].iov_len + 1;
        ssize_t k;

        fflush(stdout);
        do
                k = writev(STDOUT_FILENO, iov, 2);
        while (k < 0 && errno == EINTR);
        if (k < 0)
                return dpsctl_error(DPSCTL_EXIT_FAILURE, "cannot write to standard output: %s", strerror(errno));
        if ((size_t) k != total)
                return dpsctl_error(DPSCTL_EXIT_FAILURE, "short write to standard output");
        return DPSCTL_EXIT_SUCCESS;
}

enum { ARG_HELP = 'h', ARG_REGISTRATION_ID = 0x100, ARG_ID_SCOPE, ARG_EXPIRY, ARG_TTL };

static const DpsctlVerb *find_verb(const char *name);

/* getopt_long over a verb's own options. opterr is off: we print our own
 * one-line errors. Returns 0 or an exit code for a usage error. */
static int bad_option(int argc, char *argv[], int c) {
        if (c == ':')
                return dpsctl_error(DPSCTL_EXIT_USAGE, "%s: option %s needs a value", argv[0], argv[optind - 1]);
        return dpsctl_error(DPSCTL_EXIT_USAGE, "%s: unknown option '%s' (see 'dpsctl %s --help')",
                            argv[0], argv[optind - 1], argv[0]);
}

static int verb_derive_key(int argc, char *argv[]) {
        static const struct option options[] = {
                { "registration-id", required_argument, NULL, ARG_REGISTRATION_ID },
                { "help",            no_argument,       NULL, ARG_HELP },
                {}
        };
        _cleanup_secret_ char *group_key = NULL, *device_key = NULL;
        const char *regid = NULL;
        int c, r;

        optind = 0;
        opterr = 0;
        while ((c = getopt_long(argc, argv, ":h", options, NULL)) >= 0)
                switch (c) {
                case ARG_REGISTRATION_ID:
                        regid = optarg;
                        break;
                case ARG_HELP:
                        dpsctl_verb_usage(find_verb("derive-key"));
                        return DPSCTL_EXIT_SUCCESS;
                default:
                        return bad_option(argc, argv, c);
                }
        if (optind < argc)
                return dpsctl_error(DPSCTL_EXIT_USAGE, "derive-key: unexpected argument '%s' "
                                    "(the group key is read from standard input, never from the command line)",
                                    argv[optind]);

        r = check_registration_id(regid);
        if (r != 0)
                return r;

        r = dpsctl_read_secret_stdin(&group_key);
        if (r < 0)
                return DPSCTL_EXIT_FAILURE;

        r = dps_sas_derive_key(group_key, regid, &device_key);
        if (r < 0)
                return key_error(r, "group key");

        return print_secret(device_key);
}

static int verb_sas_token(int argc, char *argv[]) {
        static const struct option options[] = {
                { "id-scope",        required_argument, NULL, ARG_ID_SCOPE },
                { "registration-id", required_argument, NULL, ARG_REGISTRATION_ID },
                { "expiry",          required_argument, NULL, ARG_EXPIRY },
                { "ttl",             required_argument, NULL, ARG_TTL },
                { "help",            no_argument,       NULL, ARG_HELP },
                {}
        };
        _cleanup_secret_ char *key = NULL, *token = NULL;
        const char *regid = NULL, *scope = NULL;
        uint64_t expiry = 0, ttl = DEFAULT_TTL_SEC;
        bool have_expiry = false, have_ttl = false;
        int c, r;

        optind = 0;
        opterr = 0;
        while ((c = getopt_long(argc, argv, ":h", options, NULL)) >= 0)
                switch (c) {
                case ARG_ID_SCOPE:
                        scope = optarg;
                        break;
                case ARG_REGISTRATION_ID:
                        regid = optarg;
                        break;
                case ARG_EXPIRY:
                        if (parse_u64(optarg, &expiry) < 0 || expiry == 0)
                                return dpsctl_error(DPSCTL_EXIT_USAGE,
                                                    "invalid --expiry \"%s\": expected Unix seconds, e.g. 1893456000", optarg);
                        have_expiry = true;
                        break;
                case ARG_TTL:
                        if (parse_u64(optarg, &ttl) < 0 || ttl == 0 || ttl > UINT32_MAX)
                                return dpsctl_error(DPSCTL_EXIT_USAGE,
                                                    "invalid --ttl \"%s\": expected a number of seconds, e.g. 3600", optarg);
                        have_ttl = true;
                        break;
                case ARG_HELP:
                        dpsctl_verb_usage(find_verb("sas-token"));
                        return DPSCTL_EXIT_SUCCESS;
                default:
                        return bad_option(argc, argv, c);
                }
        if (optind < argc)
                return dpsctl_error(DPSCTL_EXIT_USAGE, "sas-token: unexpected argument '%s' "
                                    "(the key is read from standard input, never from the command line)",
                                    argv[optind]);
        if (have_expiry && have_ttl)
                return dpsctl_error(DPSCTL_EXIT_USAGE, "sas-token: --expiry and --ttl exclude each other");
        if (strempty(scope))
                return dpsctl_error(DPSCTL_EXIT_USAGE, "missing --id-scope (e.g. --id-scope 0ne00000A0A)");
        for (const char *p = scope; *p; p++)
                if (!((*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z')))
                        return dpsctl_error(DPSCTL_EXIT_USAGE,
                                            "invalid --id-scope \"%s\": only letters and digits (e.g. 0ne00000A0A)", scope);
        r = check_registration_id(regid);
        if (r != 0)
                return r;

        if (!have_expiry) {
                time_t now = time(NULL);

                if (now <= 0)
                        return dpsctl_error(DPSCTL_EXIT_FAILURE, "cannot read the clock");
                expiry = (uint64_t) now + ttl;
        }

        r = dpsctl_read_secret_stdin(&key);
        if (r < 0)
                return DPSCTL_EXIT_FAILURE;

        r = dps_sas_sign(scope, regid, key, expiry, &token);
        if (r < 0)
                return key_error(r, "key");

        return print_secret(token);
}

const DpsctlVerb dpsctl_offline_verbs[] = {
        { "derive-key", verb_derive_key, "--registration-id ID < GROUP_KEY",
          "Derives a device key from a group key on standard input.\n"
          "Reads the group enrollment key (base64) from standard input and prints the\n"
          "device key: base64(HMAC-SHA256(group key, registration id))." },
        { "sas-token", verb_sas_token,
          "--id-scope SCOPE --registration-id ID [--expiry UNIX_SECONDS | --ttl SECONDS] < KEY",
          "Signs a DPS SAS token with the device key on standard input.\n"
          "Reads the device key (base64) from standard input and prints the whole\n"
          "\"SharedAccessSignature sr=...\" string. The token expires at --expiry, or\n"
          "--ttl seconds from now (default 3600)." },
        {}
};

static const DpsctlVerb *const verb_tables[] = { dpsctl_offline_verbs, dpsctl_bus_verbs };

static const DpsctlVerb *find_verb(const char *name) {
        for (size_t t = 0; t < ELEMENTSOF(verb_tables); t++)
                for (const DpsctlVerb *v = verb_tables[t]; v && v->name; v++)
                        if (streq(v->name, name))
                                return v;
        return NULL;
}

static void help(void) {
        printf("Usage: dpsctl [--help] [--version] VERB [OPTIONS]\n\n"
               "Controls and inspects dpsd, the Azure IoT Hub Device Provisioning Service agent,\n"
               "and prepares device credentials. Keys are read from standard input, never\n"
               "from the command line.\n\nVerbs:\n");
        for (size_t t = 0; t < ELEMENTSOF(verb_tables); t++)
                for (const DpsctlVerb *v = verb_tables[t]; v && v->name; v++) {
                        const char *nl = strchr(v->summary, '\n');
                        int len = nl ? (int) (nl - v->summary) : (int) strlen(v->summary);

                        printf("  %-12s %.*s\n", v->name, len, v->summary);
                }
        printf("\nRun 'dpsctl VERB --help' for a verb's options.\n"
               "Exit status: 0 success, 1 failure, 2 invalid command line; dpsctl(1) lists\n"
               "the other codes of the D-Bus verbs.\n");
}

int main(int argc, char *argv[]) {
        const DpsctlVerb *v;

        if (argc < 2)
                return dpsctl_error(DPSCTL_EXIT_USAGE, "missing verb (see 'dpsctl --help')");
        if (streq(argv[1], "--help") || streq(argv[1], "-h") || streq(argv[1], "help")) {
                help();
                return DPSCTL_EXIT_SUCCESS;
        }
        if (streq(argv[1], "--version")) {
                printf("dpsctl %s\n", PACKAGE_VERSION);
                return DPSCTL_EXIT_SUCCESS;
        }
        if (argv[1][0] == '-')
                return dpsctl_error(DPSCTL_EXIT_USAGE, "unknown option '%s' (see 'dpsctl --help')", argv[1]);

        v = find_verb(argv[1]);
        if (!v)
                return dpsctl_error(DPSCTL_EXIT_USAGE, "unknown verb '%s' (see 'dpsctl --help')", argv[1]);

        return v->run(argc - 1, argv + 1);
}
