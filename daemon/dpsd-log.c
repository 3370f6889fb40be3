/* SPDX-License-Identifier: MIT */
/* dpsd-log.c: dpsd's logging, to the journal with structured fields or to stderr */
#define SD_JOURNAL_SUPPRESS_LOCATION 1

#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>
#include <systemd/sd-journal.h>

#include "dpsd-log.h"

static int max_level = LOG_INFO;
static int use_journal = -1;   /* -1: not decided yet */
static char ctx_state[32];
static char ctx_regid[DPS_REGISTRATION_ID_MAX + 1];
static unsigned ctx_attempt;

void log_set_context(const char *state, const char *registration_id, unsigned attempt) {
        snprintf(ctx_state, sizeof ctx_state, "%s", state ?: "");
        snprintf(ctx_regid, sizeof ctx_regid, "%s", registration_id ?: "");
        ctx_attempt = attempt;
}

void log_set_max_level(int level) {
        max_level = level;
}

int log_get_max_level(void) {
        return max_level;
}

void log_parse_environment(void) {
        static const struct { const char *name; int level; } levels[] = {
                { "debug", LOG_DEBUG }, { "info", LOG_INFO }, { "notice", LOG_NOTICE },
                { "warning", LOG_WARNING }, { "err", LOG_ERR }, { "error", LOG_ERR },
        };
        const char *e = getenv("DPSD_LOG_LEVEL");

        if (!e)
                return;
        for (size_t i = 0; i < ELEMENTSOF(levels); i++)
                if (streq(e, levels[i].name))
                        max_level = levels[i].level;
}

/* systemd sets $JOURNAL_STREAM to "DEV:INODE" of the stream it connected to
 * stderr: when it still matches, stderr goes to the journal and native
 * structured entries are better than plain lines. */
static bool stderr_is_journal(void) {
        const char *e = getenv("JOURNAL_STREAM");
        unsigned long long dev, ino;
        struct stat st;

        if (!e || sscanf(e, "%llu:%llu", &dev, &ino) != 2)
                return false;
        /* sd_journal_sendv() reports success when journald is not there at
         * all: check, so a message is never lost. */
        if (access("/run/systemd/journal/socket", F_OK) < 0)
                return false;
        if (fstat(STDERR_FILENO, &st) < 0)
                return false;
        return (unsigned long long) st.st_dev == dev && (unsigned long long) st.st_ino == ino;
}

int log_internal(int level, int error, const LogDps *dps, const char *format, ...) {
        char buf[2048];
        va_list ap;
        int e = error < 0 ? -error : error;

        if (level > max_level)
                return error == 0 ? 0 : -e;

        if (use_journal < 0)
                use_journal = stderr_is_journal();

        errno = e;
        va_start(ap, format);
        vsnprintf(buf, sizeof buf, format, ap);
        va_end(ap);

        if (use_journal) {
                char f[10][256 + sizeof buf];
                struct iovec iov[10];
                size_t n = 0;

                snprintf(f[n++], sizeof f[0], "MESSAGE=%s", buf);
                snprintf(f[n++], sizeof f[0], "PRIORITY=%d", level);
                snprintf(f[n++], sizeof f[0], "SYSLOG_IDENTIFIER=dpsd");
                if (ctx_state[0])
                        snprintf(f[n++], sizeof f[0], "DPS_STATE=%s", ctx_state);
                if (ctx_regid[0])
                        snprintf(f[n++], sizeof f[0], "DPS_REGISTRATION_ID=%s", ctx_regid);
                snprintf(f[n++], sizeof f[0], "DPS_ATTEMPT=%u", ctx_attempt);
                if (e != 0)
                        snprintf(f[n++], sizeof f[0], "ERRNO=%d", e);
                if (dps && dps->status > 0)
                        snprintf(f[n++], sizeof f[0], "DPS_STATUS=%d", dps->status);
                if (dps && dps->error_code != 0)
                        snprintf(f[n++], sizeof f[0], "DPS_ERROR_CODE=%lld", (long long) dps->error_code);
                if (dps && dps->tracking_id)
                        snprintf(f[n++], sizeof f[0], "DPS_TRACKING_ID=%.200s", dps->tracking_id);
                for (size_t i = 0; i < n; i++)
                        iov[i] = (struct iovec) { .iov_base = f[i], .iov_len = strlen(f[i]) };
                if (sd_journal_sendv(iov, (int) n) >= 0)
                        return error == 0 ? 0 : -e;
                /* journald went away: fall back to the stream we were given */
                use_journal = 0;
        }
        {
                fprintf(stderr, "dpsd[%s]: %s", level <= LOG_ERR ? "error" :
                                level == LOG_WARNING ? "warning" :
                                level == LOG_NOTICE ? "notice" :
                                level == LOG_INFO ? "info" : "debug", buf);
                if (dps && dps->error_code != 0)
                        fprintf(stderr, " [errorCode %lld]", (long long) dps->error_code);
                if (dps && dps->tracking_id)
                        fprintf(stderr, " [trackingId %s]", dps->tracking_id);
                fputc('\n', stderr);
        }

        return error == 0 ? 0 : -e;
}
