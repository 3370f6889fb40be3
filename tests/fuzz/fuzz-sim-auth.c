/* SPDX-License-Identifier: MIT */
/* fuzz-sim-auth.c: libFuzzer harness for dps-sim's CONNECT username and SAS token checks */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "dps-macro.h"
#include "sim-auth.h"
#include "fuzz-util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define SCOPE "0ne00000A0A"
#define REGID "dev-sas"
/* base64 of 32 bytes, as dps-sim-certs writes them */
#define KEY "dGhpcyBpcyBhIHRlc3Qga2V5IGZvciBkcHMtc2ltIQ=="

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        static const char *const keys[] = { "not base64!", KEY, NULL };
        _cleanup_free_ char *s = NULL;
        const char *reason = NULL;
        SimUsername u = {};
        int r;

        if (size > 16384)
                return 0;
        s = fuzz_string(data, size);
        if (!s)
                return 0;

        /* The input as a username: the parts are non-empty and come from it. */
        r = sim_auth_parse_username(s, &u);
        if (r == 0) {
                if (strempty(u.id_scope) || strempty(u.registration_id) || strempty(u.api_version) ||
                    !strstr(s, u.registration_id) || strchr(u.registration_id, '/'))
                        abort();
                sim_username_done(&u);
        } else if (r != -EBADMSG && r != -ENOMEM)
                abort();

        /* The input as a password: a token is never valid unless it carries
         * a signature made with the key, which a fuzzer cannot forge; a
         * failure always gives a reason. */
        r = sim_auth_check_sas(s, SCOPE, REGID, keys, 1700000000, &reason);
        if (r == 0) {
                /* accepted: it must then be the signature of the same sr/se */
                if (!strstr(s, "sig="))
                        abort();
        } else if (!reason && r != -ENOMEM)
                abort();
        else if (r != -EBADMSG && r != -EKEYEXPIRED && r != -EPERM && r != -EACCES && r != -ENOMEM)
                abort();
        return 0;
}
