/* SPDX-License-Identifier: MIT */
/* dpsd-cache.h: the durable provisioning cache (versioned JSON) and identity.env */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#define CACHE_VERSION 1
/* A cache holds at most the returned payload (<= 96 KB) and a few fields. */
#define CACHE_SIZE_MAX (512u * 1024u)

/* What survives a restart. No secrets, ever. Strings may be NULL. */
typedef struct CacheData {
        char *fingerprint;              /* config_fingerprint() of the config that produced it */
        char *registration_id;
        char *assigned_hub;             /* NULL: not provisioned (only retry state is kept) */
        char *device_id;
        char *substatus;
        char *payload;                  /* returned JSON, compact */
        char *tracking_id;
        uint64_t provisioned_usec;      /* CLOCK_REALTIME */
        uint32_t attempts;              /* failed attempts of the current run */
        uint64_t next_attempt_usec;     /* CLOCK_REALTIME, 0 if none */
} CacheData;

CacheData *cache_data_free(CacheData *d);
static inline void cache_data_freep(CacheData **d) { if (*d) cache_data_free(*d); }

/* 0 and *ret on success; -ENOENT when there is no cache; -EBADMSG for a file
 * that is not our JSON (corrupt, truncated, foreign), -EPROTONOSUPPORT for an
 * unknown version, -EFBIG over CACHE_SIZE_MAX. */
int cache_load(const char *path, CacheData **ret);

/* Atomic write (temp file in the same directory, mode 0600, fsync, rename,
 * fsync of the directory). */
int cache_save(const char *path, const CacheData *d);

/* Renames path to path.corrupt-<usec>; the new name in *ret_new (optional). */
int cache_set_aside(const char *path, char **ret_new);

/* Writes DPS_ASSIGNED_HUB= and DPS_DEVICE_ID= lines, single-quoted for
 * shells and systemd EnvironmentFile=; -EINVAL for values with control
 * characters or quotes (never from a sane service). Same atomic write, 0644. */
int identity_env_write(const char *path, const char *hub, const char *device_id);
int identity_env_format(const char *hub, const char *device_id, char **ret);
