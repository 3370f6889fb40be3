/* SPDX-License-Identifier: MIT */
/* dps-regid.c: registration id validation with a reason a user can act on */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "dps-macro.h"

/* The reason is formatted into a per-thread buffer so it can name the
 * offending character and position; it stays valid until the next call in
 * the same thread. */
static _Thread_local char reason_buf[160];

static bool char_is_alnum(char c) {
        return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
}

/* "Alphanumerics and - . _ :" */
static bool char_is_allowed(char c) {
        return char_is_alnum(c) || c == '-' || c == '.' || c == '_' || c == ':';
}

static int fail(const char **ret_reason, const char *reason) {
        if (ret_reason)
                *ret_reason = reason;
        return -EINVAL;
}

int dps_registration_id_validate(const char *id, bool x509, const char **ret_reason) {
        /* "up to 128 characters (64 for X.509, the CN limit)" */
        size_t max = x509 ? DPS_REGISTRATION_ID_MAX_X509 : DPS_REGISTRATION_ID_MAX;
        size_t len;

        if (!id || !*id)
                return fail(ret_reason, "is empty");

        len = strlen(id);
        for (size_t i = 0; i < len; i++) {
                unsigned char c = (unsigned char) id[i];

                if (char_is_allowed((char) c))
                        continue;
                if (c > 0x20 && c < 0x7f)
                        snprintf(reason_buf, sizeof(reason_buf),
                                 "contains '%c' at position %zu; only letters, digits and - . _ : are allowed",
                                 c, i + 1);
                else
                        snprintf(reason_buf, sizeof(reason_buf),
                                 "contains byte 0x%02x at position %zu; only letters, digits and - . _ : are allowed",
                                 c, i + 1);
                return fail(ret_reason, reason_buf);
        }

        if (len > max) {
                snprintf(reason_buf, sizeof(reason_buf),
                         "is %zu characters long; at most %zu are allowed%s",
                         len, max, x509 ? " with X.509 attestation (the certificate CN limit)" : "");
                return fail(ret_reason, reason_buf);
        }

        /* "the last character alphanumeric or -" */
        if (!char_is_alnum(id[len - 1]) && id[len - 1] != '-') {
                snprintf(reason_buf, sizeof(reason_buf),
                         "ends with '%c'; the last character must be a letter, a digit or '-'",
                         id[len - 1]);
                return fail(ret_reason, reason_buf);
        }

        return 0;
}
