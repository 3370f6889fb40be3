/* SPDX-License-Identifier: MIT */
/* fuzz-conf.c: libFuzzer harness for dpsd's dps.conf loader (libconfig text, then validation) */
#include <fcntl.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "dps-macro.h"
#include "dpsd-conf.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static char dir[] = "/dev/shm/fuzz-conf-XXXXXX";
static char path[sizeof dir + 16];

static void put(const char *name, const char *text, mode_t mode) {
        char p[sizeof dir + 64];
        int fd;

        snprintf(p, sizeof p, "%s/%s", dir, name);
        fd = open(p, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
        if (fd < 0 || write(fd, text, strlen(text)) != (ssize_t) strlen(text))
                abort();
        close(fd);
}

static void cleanup(void) {
        static const char *const names[] = { "dps.conf", "device.key", "group.key", "short.key", "open.key",
                                             "empty.key", "payload.json", "regid", NULL };
        char p[sizeof dir + 64];

        for (const char *const *n = names; *n; n++) {
                snprintf(p, sizeof p, "%s/%s", dir, *n);
                unlink(p);
        }
        rmdir(dir);
}

/* The files a config may name, relative to it: good and bad keys, a payload. */
static void setup(void) {
        if (!mkdtemp(dir))
                abort();
        snprintf(path, sizeof path, "%s/dps.conf", dir);
        put("device.key", "dGhpcyBpcyBhIHRlc3Qga2V5IGZvciBkcHMtc2ltIQ==\n", 0600);
        put("group.key", "8isrFI1sGsIlvvFSSFRiMfCNzv21fjbE/+ah/lSh3lF8e2YG1Te7w1KpZhJFFXJrqYKi9yegxkqIChbqOS9Egw==\n", 0600);
        put("short.key", "not base64 at all\n", 0600);
        put("open.key", "dGhpcyBpcyBhIHRlc3Qga2V5IGZvciBkcHMtc2ltIQ==\n", 0644);
        put("empty.key", "", 0600);
        put("payload.json", "{\"modelId\":\"dtmi:x;1\"}", 0644);
        put("regid", "dev-from-file\n", 0644);
        atexit(cleanup);
        unsetenv("CREDENTIALS_DIRECTORY");
        unsetenv("https_proxy");
        unsetenv("HTTPS_PROXY");
        unsetenv("STATE_DIRECTORY");
        unsetenv("RUNTIME_DIRECTORY");
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        _cleanup_(config_freep) Config *c = NULL;
        _cleanup_free_ char *err = NULL, *fp = NULL;
        int fd, r;

        if (!path[0])
                setup();
        if (size > 65536)
                return 0;
        /* Only the text is under test, not the files it may name: keep the
         * loader away from devices and fifos (@include and paths to them are
         * covered by tests/robustness) and from files outside the fixture. */
        if (memmem(data, size, "@include", 8) || memmem(data, size, "\"/", 2) || memmem(data, size, "..", 2) ||
            memmem(data, size, "file:/", 6) || memmem(data, size, "\\x", 2) || memmem(data, size, "credential", 10))
                return 0;

        fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
        if (fd < 0 || write(fd, data, size) != (ssize_t) size)
                abort();
        close(fd);

        r = config_load(path, &c, &err);
        if (r < 0) {
                /* every refusal says why, naming the file */
                if (r != -ENOMEM && (!err || !strstr(err, path)))
                        abort();
                return 0;
        }
        /* an accepted config is complete and self-consistent */
        if (strempty(c->endpoint) || strempty(c->id_scope) || strempty(c->registration_id) || !c->key_file ||
            !c->cache_path || !c->identity_env_path || (!c->ca_file && !c->ca_path) || c->port == 0 ||
            (c->attestation == ATTESTATION_X509) != !!c->certificate_file || c->retry_max_usec < c->retry_min_usec ||
            dps_registration_id_validate(c->registration_id, c->attestation == ATTESTATION_X509, NULL) < 0)
                abort();
        if (c->payload && dps_body_register(c->registration_id, c->payload, &err) < 0)
                abort();
        if (config_fingerprint(c, &fp) < 0 || strlen(fp) != 64)
                abort();
        return 0;
}
