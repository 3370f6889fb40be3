/* SPDX-License-Identifier: MIT */
/* fuzz-util.h: what every libFuzzer harness needs, the input as a C string */
#pragma once

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* A NUL-terminated copy of the input (which may hold NULs of its own), or
 * NULL when out of memory; free() it. */
static inline char *fuzz_string(const uint8_t *data, size_t size) {
        char *s = malloc(size + 1);

        if (!s)
                return NULL;
        memcpy(s, data, size);
        s[size] = '\0';
        return s;
}
