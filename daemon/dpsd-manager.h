/* SPDX-License-Identifier: MIT */
/* dpsd-manager.h: the Manager, dpsd's one owner of provisioning state and its state machine */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include <systemd/sd-event.h>

/*
 * Data flows one way: config -> manager -> lib session -> network; results
 * come back as events to the manager, which alone changes state, writes the
 * cache and tells its observer (the D-Bus layer). The manager never includes
 * the bus: observers register a callback.
 */

typedef struct Manager Manager;
typedef struct Config Config;   /* daemon/dpsd-conf.h */

typedef enum ManagerState {
        MANAGER_UNPROVISIONED,
        MANAGER_WAITING_FOR_CLOCK,
        MANAGER_CONNECTING,
        MANAGER_REGISTERING,
        MANAGER_ASSIGNING,
        MANAGER_PROVISIONED,
        MANAGER_RETRYING,
        MANAGER_FAILED,
        MANAGER_DISABLED,
        _MANAGER_STATE_MAX,
} ManagerState;

/* "unprovisioned", "waiting-for-clock", "connecting", "registering",
 * "assigning", "provisioned", "retrying", "failed", "disabled"; NULL when out
 * of range. */
const char *manager_state_to_string(ManagerState s);

/* Everything the bus exports; no secrets. Pointers are owned by the manager
 * and stay valid until the next return to the event loop. */
typedef struct ManagerInfo {
        ManagerState state;
        const char *registration_id, *id_scope, *endpoint, *transport, *attestation_type;  /* const for the config's life */
        const char *assigned_hub, *device_id, *substatus, *payload; /* NULL -> "" on the bus */
        const char *source;                /* "cache", "service" or NULL */
        uint64_t last_provisioned_usec, next_attempt_usec;  /* CLOCK_REALTIME, 0 if none */
        uint32_t attempts;
        const char *last_error;            /* human, NULL if none */
        int64_t last_error_code;           /* DPS errorCode or negative errno, 0 if none */
        const char *last_tracking_id;
} ManagerInfo;

void manager_get_info(Manager *m, ManagerInfo *ret);

typedef enum ManagerEvent {
        MANAGER_EVENT_CHANGED,
        MANAGER_EVENT_PROVISIONED,
        _MANAGER_EVENT_MAX,
} ManagerEvent;

typedef void (*manager_observer_t)(Manager *m, ManagerEvent ev, void *userdata);

/* One observer; CHANGED once per state change (coalesced: fields that change
 * together with the state produce one CHANGED), PROVISIONED when an
 * assignment (new or cached) becomes current. cb NULL removes it. */
void manager_set_observer(Manager *m, manager_observer_t cb, void *userdata);

/* Starts a fresh registration now, clearing the backoff. 1 = started now,
 * 0 = one already running (nothing done), <0 errno. */
int manager_reprovision(Manager *m);

/* ---- used by dpsd-main.c ------------------------------------------------ */

/* Takes ownership of config (also on failure). config_path is remembered for
 * SIGHUP reloads. */
int manager_new(sd_event *event, Config *config, const char *config_path, Manager **ret);
Manager *manager_free(Manager *m);

/* Reads the cache: a valid cache matching the config makes the manager
 * provisioned at once (no network); otherwise provisioning starts from the
 * event loop (honouring a persisted next-attempt time). Returns 0 or <0. */
int manager_start(Manager *m);

/* Re-reads the config file (SIGHUP). A bad new config is logged and the old
 * one kept (-EINVAL etc. returned); identity-relevant changes start a
 * re-provisioning. */
int manager_reload(Manager *m);

/* Disconnects and stops timers; called on SIGTERM/SIGINT before exit. */
void manager_stop(Manager *m);

sd_event *manager_get_event(Manager *m);

static inline void manager_freep(Manager **m) { if (*m) manager_free(*m); }
