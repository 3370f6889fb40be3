/* SPDX-License-Identifier: MIT */
/* sim-events.h: dps-sim's JSON-lines event log and its counters */
#pragma once

#include <stdint.h>
#include <stdio.h>

#include <json-c/json.h>

typedef struct SimCounters {
        uint64_t accepts, connects, connacks_refused, subscribes, registers, polls;
        uint64_t responses, responses_2xx, responses_4xx, responses_5xx;
        uint64_t throttled, faults, closes, malformed;
        uint64_t assigned;              /* final "assigned" answers */
        uint64_t connections, max_connections;
} SimCounters;

typedef struct SimEvents {
        FILE *f;                        /* NULL: no event log */
        SimCounters counters;
} SimEvents;

/* Opens path for appending (created 0644). path NULL: counters only. */
int sim_events_open(SimEvents *e, const char *path);
void sim_events_close(SimEvents *e);

/* Writes {"ts":...,"conn":N,"event":"name",<fields of extra>} and flushes.
 * Takes ownership of extra (may be NULL). */
void sim_events_log(SimEvents *e, unsigned conn, const char *event, json_object *extra);

/* Prints the counters to f, one "name value" per line. */
void sim_events_print_counters(const SimEvents *e, FILE *f);
