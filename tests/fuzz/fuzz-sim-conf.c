/* SPDX-License-Identifier: MIT */
/* fuzz-sim-conf.c: libFuzzer harness for dps-sim's config loader and its --set fault assignments */
#include <fcntl.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "dps-macro.h"
#include "sim-conf.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static char dir[] = "/dev/shm/fuzz-sim-conf-XXXXXX";
static char path[sizeof dir + 16];

static void cleanup(void) {
        unlink(path);
        rmdir(dir);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        SimConfig *c = NULL;
        _cleanup_free_ char *err = NULL, *text = NULL;
        int fd, r;

        if (!path[0]) {
                if (!mkdtemp(dir))
                        abort();
                snprintf(path, sizeof path, "%s/sim.conf", dir);
                atexit(cleanup);
        }
        if (size > 65536)
                return 0;

        /* "set:" then one KEY=VALUE per line, as --set gives them */
        if (size >= 4 && memcmp(data, "set:", 4) == 0) {
                SimFaults f;
                char *line, *save = NULL;

                text = strndup((const char *) data + 4, size - 4);
                if (!text)
                        return 0;
                sim_faults_init(&f);
                for (line = strtok_r(text, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
                        _cleanup_free_ char *e = NULL;
                        r = sim_faults_set(&f, line, &e);
                        if (r < 0 && r != -ENOMEM && !e)
                                abort();        /* a refusal says why */
                }
                return 0;
        }

        /* the text is under test, not the files it names (see fuzz-conf.c) */
        if (memmem(data, size, "@include", 8) || memmem(data, size, "\"/", 2) || memmem(data, size, "..", 2) ||
            memmem(data, size, "\\x", 2))
                return 0;
        fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
        if (fd < 0 || write(fd, data, size) != (ssize_t) size)
                abort();
        close(fd);

        r = sim_config_load(path, &c, &err);
        if (r < 0) {
                if (r != -ENOMEM && (!err || !strstr(err, "sim.conf")))
                        abort();
                return 0;
        }
        if (strempty(c->id_scope) || !c->listen_mqtt || (c->n_enrollments > 0 && !c->enrollments))
                abort();
        for (size_t i = 0; i < c->n_enrollments; i++)
                if (c->enrollments[i].n_hubs == 0 || !c->enrollments[i].hubs)
                        abort();
        sim_config_free(c);
        return 0;
}
