/* SPDX-License-Identifier: MIT */
/* dpsctl.h: the dpsctl command table, shared by the offline verbs and the D-Bus verbs */
#pragma once

#include <stddef.h>

/* Exit codes: 0 success, 1 the operation failed, 2 the command line is wrong
 * (unknown verb or option, missing or invalid argument). */
#define DPSCTL_EXIT_SUCCESS 0
#define DPSCTL_EXIT_FAILURE 1
#define DPSCTL_EXIT_USAGE   2

typedef struct DpsctlVerb {
        const char *name;                       /* "derive-key" */
        int (*run)(int argc, char *argv[]);     /* argv[0] is the verb; returns an exit code */
        const char *args;                       /* "--registration-id ID < KEY", for usage lines */
        const char *summary;                    /* one line for "dpsctl --help" */
} DpsctlVerb;

/* The offline verbs (dpsctl.c). Terminated by an entry with name NULL. */
extern const DpsctlVerb dpsctl_offline_verbs[];

/* The D-Bus verbs (status, show, wait, reprovision), defined in
 * daemon/dpsctl-bus.c and terminated by an entry with name NULL. Weak: when
 * that file is not linked in, &dpsctl_bus_verbs[0] is NULL and dpsctl offers
 * the offline verbs only. Because the reference is weak, dpsctl-bus.c must be
 * listed in dpsctl's own sources, not put into a static library (a weak
 * reference never pulls an object out of an archive). */
extern const DpsctlVerb dpsctl_bus_verbs[] __attribute__((weak));

/* Prints "dpsctl: <message>" to stderr and returns code, for one-line errors:
 *   return dpsctl_error(DPSCTL_EXIT_USAGE, "missing --registration-id");  */
int dpsctl_error(int code, const char *format, ...) __attribute__((format(printf, 2, 3)));

/* Prints the usage of verb v ("Usage: dpsctl NAME ARGS" and its summary) to stdout. */
void dpsctl_verb_usage(const DpsctlVerb *v);

/* Reads a secret (a base64 key) from standard input: at most 4 KiB, one
 * line, trailing whitespace stripped. Returns 0 and a secret to free with
 * dps_secret_free(), or prints a one-line error and returns -EINVAL (empty),
 * -EMSGSIZE (too long) or another negative errno. */
int dpsctl_read_secret_stdin(char **ret_secret);
