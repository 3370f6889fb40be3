/* SPDX-License-Identifier: MIT */
/* sim-events.c: dps-sim's JSON-lines event log and its counters */
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <time.h>

#include "dps-macro.h"
#include "sim-events.h"

int sim_events_open(SimEvents *e, const char *path) {
        *e = (SimEvents) {};
        if (!path)
                return 0;
        int fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
        if (fd < 0)
                return -errno;
        e->f = fdopen(fd, "a");
        if (!e->f) {
                int r = -errno;
                close(fd);
                return r;
        }
        return 0;
}

void sim_events_close(SimEvents *e) {
        if (e->f)
                fclose(e->f);
        e->f = NULL;
}

void sim_events_log(SimEvents *e, unsigned conn, const char *event, json_object *extra) {
        if (e->f) {
                struct timespec ts;
                clock_gettime(CLOCK_REALTIME, &ts);
                /* "ts" = CLOCK_REALTIME seconds with microseconds. */
                fprintf(e->f, "{\"ts\":%lld.%06ld,\"conn\":%u,\"event\":\"%s\"",
                        (long long) ts.tv_sec, ts.tv_nsec / 1000, conn, event);
                if (extra) {
                        const char *s = json_object_to_json_string_ext(extra, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE);
                        /* Splice the object's members after ours: drop its '{'. */
                        if (s && s[0] == '{' && s[1] != '}')
                                fprintf(e->f, ",%s\n", s + 1);
                        else
                                fputs("}\n", e->f);
                } else
                        fputs("}\n", e->f);
                fflush(e->f);
        }
        json_object_put(extra);
}

void sim_events_print_counters(const SimEvents *e, FILE *f) {
        const SimCounters *c = &e->counters;
        fprintf(f,
                "dps-sim counters:\n"
                "  accepts %llu\n  connects %llu\n  connacks-refused %llu\n  subscribes %llu\n"
                "  registers %llu\n  polls %llu\n  responses %llu (2xx %llu, 4xx %llu, 5xx %llu)\n"
                "  assigned %llu\n  throttled %llu\n  faults %llu\n  malformed %llu\n  closes %llu\n"
                "  connections %llu (max %llu)\n",
                (unsigned long long) c->accepts, (unsigned long long) c->connects,
                (unsigned long long) c->connacks_refused, (unsigned long long) c->subscribes,
                (unsigned long long) c->registers, (unsigned long long) c->polls,
                (unsigned long long) c->responses, (unsigned long long) c->responses_2xx,
                (unsigned long long) c->responses_4xx, (unsigned long long) c->responses_5xx,
                (unsigned long long) c->assigned, (unsigned long long) c->throttled,
                (unsigned long long) c->faults, (unsigned long long) c->malformed,
                (unsigned long long) c->closes, (unsigned long long) c->connections,
                (unsigned long long) c->max_connections);
        fflush(f);
}
