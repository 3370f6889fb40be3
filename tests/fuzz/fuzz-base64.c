/* SPDX-License-Identifier: MIT */
/* fuzz-base64.c: libFuzzer harness for the strict base64 codec and the SAS primitives */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "dps-macro.h"
#include "dps-util.h"
#include "fuzz-util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        _cleanup_free_ char *s = NULL, *enc = NULL, *enc2 = NULL;
        _cleanup_secret_ char *key = NULL;
        uint8_t *dec = NULL;
        size_t n = 0;

        if (size > 4096)
                return 0;
        s = fuzz_string(data, size);
        if (!s)
                return 0;

        /* strict means canonical: whatever decodes re-encodes to the same text */
        if (dps_base64_decode(s, &dec, &n) >= 0) {
                if (dps_base64_encode(dec, n, &enc) < 0 || strcmp(enc, s) != 0)
                        abort();
                if (n > 0 && dps_sas_derive_key(s, "dev-1", &key) < 0)
                        abort();
                dps_memory_free(dec, n);
        }

        /* any bytes encode, and the encoding decodes back to them */
        if (dps_base64_encode(data, size, &enc2) < 0)
                abort();
        if (dps_base64_decode(enc2, &dec, &n) < 0 || n != size || memcmp(dec, data, size) != 0)
                abort();
        dps_memory_free(dec, n);
        return 0;
}
