/* SPDX-License-Identifier: MIT */
/* fuzz-cache.c: libFuzzer harness for dpsd's cache loader, its writer (round trip) and identity.env */
#include <fcntl.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "dps-macro.h"
#include "dpsd-cache.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static char dir[] = "/dev/shm/fuzz-cache-XXXXXX";
static char in_path[sizeof dir + 16], out_path[sizeof dir + 16];

static void cleanup(void) {
        unlink(in_path);
        unlink(out_path);
        rmdir(dir);
}

static bool same(const char *a, const char *b) {
        return (!a && !b) || (a && b && streq(a, b));
}

/* Does the shell word [p, end) read back as exactly want? Only the two
 * forms identity.env uses: '...' (no ' inside), "..." (\ before " \ ` $). */
static bool shell_value_is(const char *p, const char *end, const char *want) {
        size_t n = strlen(want);

        if (end - p < 2 || end[-1] != *p)
                return false;
        if (*p == '\'') {
                if ((size_t) (end - p - 2) != n || memchr(p + 1, '\'', n))
                        return false;
                return memcmp(p + 1, want, n) == 0;
        }
        if (*p != '"')
                return false;
        for (p++, end--; p < end; p++, want++) {
                if (strchr("\"`$", *p) && *p)
                        return false;           /* unescaped: the shell would expand or end here */
                if (*p == '\\') {
                        p++;
                        if (p >= end || !strchr("\"\\`$", *p))
                                return false;
                }
                if (*want != *p)
                        return false;
        }
        return *want == '\0';
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        _cleanup_(cache_data_freep) CacheData *d = NULL, *again = NULL;
        _cleanup_free_ char *env = NULL;
        int fd, r;

        if (!in_path[0]) {
                if (!mkdtemp(dir))
                        abort();
                snprintf(in_path, sizeof in_path, "%s/in.json", dir);
                snprintf(out_path, sizeof out_path, "%s/out.json", dir);
                atexit(cleanup);
        }
        if (size > CACHE_SIZE_MAX + 16)
                return 0;
        fd = open(in_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
        if (fd < 0 || write(fd, data, size) != (ssize_t) size)
                abort();
        close(fd);

        r = cache_load(in_path, &d);
        if (r < 0) {
                if (r != -EBADMSG && r != -EPROTONOSUPPORT && r != -EFBIG && r != -ENOMEM)
                        abort();
                return 0;
        }
        if (!d->fingerprint || (d->assigned_hub && !d->device_id))
                abort();

        /* what was loaded is saved and loads back the same */
        r = cache_save(out_path, d);
        if (r < 0) {
                if (r != -ENOMEM && r != -EINVAL)
                        abort();
                return 0;
        }
        if (cache_load(out_path, &again) < 0)
                abort();
        if (!same(d->fingerprint, again->fingerprint) || !same(d->registration_id, again->registration_id) ||
            !same(d->assigned_hub, again->assigned_hub) || !same(d->device_id, again->device_id) ||
            !same(d->substatus, again->substatus) || !same(d->tracking_id, again->tracking_id) ||
            !same(d->payload, again->payload) || d->provisioned_usec != again->provisioned_usec ||
            d->attempts != again->attempts || d->next_attempt_usec != again->next_attempt_usec)
                abort();

        /* values from a cache reach identity.env only when a shell reads them back as they are */
        if (d->assigned_hub && identity_env_format(d->assigned_hub, d->device_id, &env) == 0) {
                const char *line2 = strchr(env, '\n');
                if (!line2 || strncmp(env, "DPS_ASSIGNED_HUB=", 17) != 0 || strncmp(line2 + 1, "DPS_DEVICE_ID=", 14) != 0 ||
                    !shell_value_is(env + 17, line2, d->assigned_hub) ||
                    !shell_value_is(line2 + 15, env + strlen(env) - 1, d->device_id) || env[strlen(env) - 1] != '\n')
                        abort();
        }
        return 0;
}
