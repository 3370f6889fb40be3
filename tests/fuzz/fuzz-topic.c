/* SPDX-License-Identifier: MIT */
/* fuzz-topic.c: libFuzzer harness for dps_topic_parse_response() and the query-string helpers */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "dps-macro.h"
#include "dps-util.h"
#include "fuzz-util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        _cleanup_free_ char *s = NULL, *enc = NULL, *dec = NULL, *rid = NULL;
        DpsResponseTopic t = { .status = -1 };
        int r;

        if (size > DPS_MAX_MESSAGE_SIZE)
                return 0;
        s = fuzz_string(data, size);
        if (!s)
                return 0;

        r = dps_topic_parse_response(s, &t);
        if (r >= 0) {
                /* the contract: a 3-digit status, a non-empty rid, a bounded retry-after */
                if (t.status < 100 || t.status > 999 || !t.rid || !*t.rid ||
                    t.retry_after < -1 || t.retry_after > 86400 * 7)
                        abort();
                dps_response_topic_done(&t);
                if (t.rid)
                        abort();
        } else if (r != -EBADMSG && r != -ERANGE && r != -ENOMEM)
                abort();

        /* url-encoding round-trips every string without NUL */
        if (dps_url_encode(s, &enc) >= 0) {
                for (const char *c = enc; *c; c++)
                        if (!dps_char_is_unreserved(*c) && *c != '%')
                                abort();
                if (dps_url_decode(enc, strlen(enc), &dec) < 0 || strcmp(dec, s) != 0)
                        abort();
        }

        /* the query helper must never read past the string */
        (void) dps_query_get(s, "$rid", &rid);
        return 0;
}
