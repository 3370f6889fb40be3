/* SPDX-License-Identifier: MIT */
/* fuzz-body.c: libFuzzer harness for dps_response_parse(), dps_classify() and dps_body_register() */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "dps-macro.h"
#include "fuzz-util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        _cleanup_(dps_response_freep) DpsResponse *resp = NULL, *again = NULL;
        _cleanup_free_ char *s = NULL, *body = NULL, *body2 = NULL;
        int r;

        r = dps_response_parse((const char *) data, size, &resp);
        if (r >= 0) {
                static const int codes[] = { 200, 202, 400, 401, 429, 500 };

                for (size_t i = 0; i < ELEMENTSOF(codes); i++) {
                        DpsOutcome o = dps_classify(codes[i], resp);

                        if ((unsigned) o >= _DPS_OUTCOME_MAX || !dps_outcome_to_string(o))
                                abort();
                        /* an assignment is only reported with a hub to connect to */
                        if (o == DPS_OUTCOME_ASSIGNED &&
                            (!resp->has_registration_state || strempty(resp->state.assigned_hub)))
                                abort();
                }
                if ((unsigned) resp->status >= _DPS_STATUS_MAX)
                        abort();
                /* a returned payload is re-serialized JSON: it must be usable as a request payload */
                if (resp->state.payload && dps_body_register("fuzz", resp->state.payload, &body2) < 0)
                        abort();
        } else if (r != -EBADMSG && r != -EMSGSIZE && r != -ENOMEM)
                abort();

        /* the input as a register payload: when accepted, the body is an object we parse back */
        if (size > DPS_MAX_MESSAGE_SIZE / 2)
                return 0;
        s = fuzz_string(data, size);
        if (!s)
                return 0;
        if (dps_body_register("dev-1", s, &body) >= 0) {
                if (dps_response_parse(body, strlen(body), &again) < 0)
                        abort();
        }
        return 0;
}
