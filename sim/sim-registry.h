/* SPDX-License-Identifier: MIT */
/* sim-registry.h: dps-sim's registration records, by case-insensitive registration id, and their state file */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include "dps.h"
#include "sim-conf.h"

/* Operations a device may still poll: a device that registers again from
 * another connection does not make the first one's operation vanish. */
#define SIM_OPS_KEPT 8u
#define SIM_REGISTRY_BUCKETS 4096u

typedef struct SimOperation {
        char *id;
        int polls_left;                 /* "assigning" answers still due */
} SimOperation;

typedef struct SimRegistration {
        struct SimRegistration *next;
        char *key;                      /* lower-cased registration id */
        char *registration_id;          /* as first seen */
        /* the registration state, as the last final answer had it */
        DpsStatus status;
        char *assigned_hub, *device_id, *substatus, *created, *updated, *etag, *payload;
        int64_t error_code;
        char *error_message;
        unsigned generation;
        /* fault and throttle bookkeeping */
        unsigned requests;              /* register + poll requests, for fail-first */
        uint64_t poll_window;           /* start of the 10 s poll window, usec */
        unsigned polls_in_window;
        /* recent operations, newest at ops[(ops_next - 1) % SIM_OPS_KEPT] */
        SimOperation ops[SIM_OPS_KEPT];
        unsigned ops_next;
} SimRegistration;

typedef struct SimRegistry {
        SimRegistration *buckets[SIM_REGISTRY_BUCKETS];
} SimRegistry;

int sim_registry_new(SimRegistry **ret);
SimRegistry *sim_registry_free(SimRegistry *r);

/* The record of a registration id (case-insensitive); with create, a new
 * "unassigned" one when there is none. NULL when absent or out of memory. */
SimRegistration *sim_registry_get(SimRegistry *r, const char *registration_id, bool create);

/* Writes the "assigned" records to path: temp file, fsync, rename, fsync
 * of the directory. The file is bound to id_scope. */
int sim_registry_save(SimRegistry *r, const char *path, const char *id_scope);
/* Loads what sim_registry_save() wrote. 0 when path does not exist;
 * -EBADMSG for a corrupt file, -ESTALE for another id scope's. */
int sim_registry_load(SimRegistry *r, const char *path, const char *id_scope);

/* FNV-1a, for buckets, hashed allocation and etags. */
uint32_t sim_hash(const char *s);
/* Replaces *p by a copy of v (NULL allowed). */
int sim_strset(char **p, const char *v);
