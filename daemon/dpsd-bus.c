/* SPDX-License-Identifier: MIT */
/* dpsd-bus.c: dpsd's system-bus API, org.dpsd.Provisioning1 (one object, one vtable) */

#include <errno.h>
#include <grp.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include <systemd/sd-bus.h>

#include "dpsd-bus-config.h"
#include "dpsd-bus.h"
#include "dpsd-log.h"

/*
 * The bus never talks to the network and never changes state itself: it reads
 * the manager's ManagerInfo for every property get, forwards Reprovision() to
 * the manager, and turns the manager's observer callbacks into signals.
 *
 * Signals are coalesced: the manager's CHANGED and PROVISIONED only mark what
 * is due, and a defer event source emits once per event loop iteration: one
 * PropertiesChanged carrying every emits-change property, then Provisioned.
 * So a client that sees Provisioned and reads the properties reads the state
 * that the signal announced.
 */

struct Bus {
        sd_event *event;
        Manager *manager;
        sd_bus *bus;
        sd_bus_slot *vtable_slot;
        sd_event_source *emit_source;
        bool changed_due;
        bool provisioned_due;
};

/* ---- properties --------------------------------------------------------- */

#define DEFINE_PROPERTY_GET(name, type, expr)                                            \
        static int property_get_##name(sd_bus *bus, const char *path,                     \
                                       const char *interface, const char *property,       \
                                       sd_bus_message *reply, void *userdata,             \
                                       sd_bus_error *error) {                             \
                Bus *b = userdata;                                                        \
                ManagerInfo i = {};                                                       \
                manager_get_info(b->manager, &i);                                         \
                return sd_bus_message_append(reply, type, (expr));                        \
        }

/* "NULL -> "" on the bus" */
#define DEFINE_PROPERTY_GET_STRING(name, field) DEFINE_PROPERTY_GET(name, "s", i.field ?: "")

static const char *state_string(ManagerState s) {
        return manager_state_to_string(s) ?: "unknown";
}

DEFINE_PROPERTY_GET(state, "s", state_string(i.state))
DEFINE_PROPERTY_GET_STRING(registration_id, registration_id)
DEFINE_PROPERTY_GET_STRING(id_scope, id_scope)
DEFINE_PROPERTY_GET_STRING(endpoint, endpoint)
DEFINE_PROPERTY_GET_STRING(transport, transport)
DEFINE_PROPERTY_GET_STRING(attestation_type, attestation_type)
DEFINE_PROPERTY_GET_STRING(assigned_hub, assigned_hub)
DEFINE_PROPERTY_GET_STRING(device_id, device_id)
DEFINE_PROPERTY_GET_STRING(substatus, substatus)
DEFINE_PROPERTY_GET_STRING(payload, payload)
DEFINE_PROPERTY_GET_STRING(source, source)
DEFINE_PROPERTY_GET(last_provisioned, "t", i.last_provisioned_usec)
DEFINE_PROPERTY_GET(next_attempt, "t", i.next_attempt_usec)
DEFINE_PROPERTY_GET(attempts, "u", i.attempts)
DEFINE_PROPERTY_GET_STRING(last_error, last_error)
DEFINE_PROPERTY_GET(last_error_code, "x", i.last_error_code)
DEFINE_PROPERTY_GET_STRING(last_tracking_id, last_tracking_id)

/* Every EMITS_CHANGE property of the vtable below, for the one coalesced
 * PropertiesChanged. */
static const char *const changing_properties[] = {
        "State", "AssignedHub", "DeviceId", "Substatus", "Payload", "Source",
        "LastProvisioned", "NextAttempt", "Attempts", "LastError", "LastErrorCode",
        "LastTrackingId", NULL,
};

/* ---- errors and privilege ---------------------------------------------- */

/* Maps a negative errno to a named error of the API, explicitly. */
static int bus_error_set_errno(sd_bus_error *error, int r, const char *what) {
        const char *name;

        switch (-r) {
        case EPERM:
        case EACCES:
                name = BUS_ERROR_PERMISSION_DENIED;
                break;
        case EINVAL:
                name = SD_BUS_ERROR_INVALID_ARGS;
                break;
        default:
                name = BUS_ERROR_FAILED;
                break;
        }
        return sd_bus_error_setf(error, name, "%s: %s", what, strerror(-r));
}

static bool gid_is_member(gid_t gid, gid_t egid, bool have_egid, const gid_t *gids, int n_gids) {
        if (have_egid && egid == gid)
                return true;
        for (int k = 0; k < n_gids; k++)
                if (gids[k] == gid)
                        return true;
        return false;
}

/* Reprovision is for root and the DPSD_GROUP group. The bus policy says so
 * too; checking here means a looser policy does not open the method. The
 * credentials come from the bus (GetConnectionCredentials), augmented from
 * /proc when the bus does not give them. Anything unknown denies. */
static int bus_check_caller(sd_bus_message *message, sd_bus_error *error) {
        _cleanup_(sd_bus_creds_unrefp) sd_bus_creds *creds = NULL;
        const gid_t *gids = NULL;
        struct group *g;
        uid_t uid;
        gid_t egid = 0;
        bool have_egid;
        int n_gids, r;

        r = sd_bus_query_sender_creds(message,
                                      SD_BUS_CREDS_UID | SD_BUS_CREDS_EUID | SD_BUS_CREDS_EGID |
                                      SD_BUS_CREDS_SUPPLEMENTARY_GIDS | SD_BUS_CREDS_AUGMENT,
                                      &creds);
        if (r < 0)
                return bus_error_set_errno(error, -EACCES, "Cannot determine the caller's credentials");

        r = sd_bus_creds_get_euid(creds, &uid);
        if (r < 0)
                r = sd_bus_creds_get_uid(creds, &uid);
        if (r < 0)
                return bus_error_set_errno(error, -EACCES, "Cannot determine the caller's user");
        if (uid == 0)
                return 0;

        errno = 0;
        g = getgrnam(DPSD_GROUP);
        if (g) {
                have_egid = sd_bus_creds_get_egid(creds, &egid) >= 0;
                n_gids = sd_bus_creds_get_supplementary_gids(creds, &gids);
                if (gid_is_member(g->gr_gid, egid, have_egid, gids, n_gids < 0 ? 0 : n_gids))
                        return 0;
        }

        log_notice("Denied Reprovision() to uid %u: neither root nor in group '%s'.", (unsigned) uid, DPSD_GROUP);
        return sd_bus_error_setf(error, BUS_ERROR_PERMISSION_DENIED,
                                 "Reprovision is allowed to root and to members of group '%s' only.",
                                 DPSD_GROUP);
}

/* ---- methods ------------------------------------------------------------ */

static int method_reprovision(sd_bus_message *message, void *userdata, sd_bus_error *error) {
        Bus *b = userdata;
        uint64_t flags;
        int r;

        r = sd_bus_message_read(message, "t", &flags);
        if (r < 0)
                return r;
        /* Reserved so that options can come later without a new signature. */
        if (flags != 0)
                return sd_bus_error_setf(error, BUS_ERROR_INVALID_FLAGS,
                                         "Unknown flags 0x%" PRIx64 "; Reprovision() currently takes 0.", flags);

        r = bus_check_caller(message, error);
        if (r < 0)
                return r;

        r = manager_reprovision(b->manager);
        if (r < 0)
                return bus_error_set_errno(error, r, "Failed to start re-provisioning");

        log_info("Re-provisioning requested over D-Bus by %s%s.",
                 sd_bus_message_get_sender(message) ?: "unknown",
                 r > 0 ? "" : "; one is already running");
        return sd_bus_reply_method_return(message, "b", r > 0);
}

static const sd_bus_vtable bus_vtable[] = {
        SD_BUS_VTABLE_START(0),
        SD_BUS_PROPERTY("State", "s", property_get_state, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_PROPERTY("RegistrationId", "s", property_get_registration_id, 0, SD_BUS_VTABLE_PROPERTY_CONST),
        SD_BUS_PROPERTY("IdScope", "s", property_get_id_scope, 0, SD_BUS_VTABLE_PROPERTY_CONST),
        SD_BUS_PROPERTY("Endpoint", "s", property_get_endpoint, 0, SD_BUS_VTABLE_PROPERTY_CONST),
        SD_BUS_PROPERTY("Transport", "s", property_get_transport, 0, SD_BUS_VTABLE_PROPERTY_CONST),
        SD_BUS_PROPERTY("AttestationType", "s", property_get_attestation_type, 0, SD_BUS_VTABLE_PROPERTY_CONST),
        SD_BUS_PROPERTY("AssignedHub", "s", property_get_assigned_hub, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_PROPERTY("DeviceId", "s", property_get_device_id, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_PROPERTY("Substatus", "s", property_get_substatus, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_PROPERTY("Payload", "s", property_get_payload, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_PROPERTY("Source", "s", property_get_source, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_PROPERTY("LastProvisioned", "t", property_get_last_provisioned, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_PROPERTY("NextAttempt", "t", property_get_next_attempt, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_PROPERTY("Attempts", "u", property_get_attempts, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_PROPERTY("LastError", "s", property_get_last_error, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_PROPERTY("LastErrorCode", "x", property_get_last_error_code, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_PROPERTY("LastTrackingId", "s", property_get_last_tracking_id, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        /* Unprivileged for sd-bus: the check is ours (bus_check_caller()),
         * since sd-bus's own would admit only root, not the dpsd group. */
        SD_BUS_METHOD_WITH_ARGS("Reprovision",
                                SD_BUS_ARGS("t", flags),
                                SD_BUS_RESULT("b", started),
                                method_reprovision,
                                SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_SIGNAL_WITH_ARGS("Provisioned", SD_BUS_ARGS("s", hub, "s", device_id), 0),
        SD_BUS_VTABLE_END,
};

/* ---- signals ------------------------------------------------------------ */

static int on_emit(sd_event_source *s, void *userdata) {
        Bus *b = userdata;
        int r;

        if (b->changed_due) {
                b->changed_due = false;
                r = sd_bus_emit_properties_changed_strv(b->bus, BUS_PATH, BUS_INTERFACE,
                                                        (char **) changing_properties);
                if (r < 0)
                        log_debug_errno(r, "Failed to emit PropertiesChanged, ignoring: %m");
        }

        if (b->provisioned_due) {
                ManagerInfo i = {};

                b->provisioned_due = false;
                manager_get_info(b->manager, &i);
                r = sd_bus_emit_signal(b->bus, BUS_PATH, BUS_INTERFACE, "Provisioned", "ss",
                                       i.assigned_hub ?: "", i.device_id ?: "");
                if (r < 0)
                        log_debug_errno(r, "Failed to emit Provisioned, ignoring: %m");
        }
        return 0;
}

static void on_manager_event(Manager *m, ManagerEvent ev, void *userdata) {
        Bus *b = userdata;
        int r;

        switch (ev) {
        case MANAGER_EVENT_CHANGED:
                b->changed_due = true;
                break;
        case MANAGER_EVENT_PROVISIONED:
                b->provisioned_due = true;
                break;
        case _MANAGER_EVENT_MAX:
                return;
        }

        r = sd_event_source_set_enabled(b->emit_source, SD_EVENT_ONESHOT);
        if (r < 0)
                log_debug_errno(r, "Failed to schedule bus signals, ignoring: %m");
}

/* ---- life cycle --------------------------------------------------------- */

int bus_new(sd_event *event, Manager *manager, Bus **ret) {
        _cleanup_(bus_freep) Bus *b = NULL;
        ManagerInfo i = {};
        int r;

        b = calloc(1, sizeof(*b));
        if (!b)
                return -ENOMEM;
        b->event = sd_event_ref(event);
        b->manager = manager;

        r = sd_bus_open_system(&b->bus);
        if (r < 0)
                return log_debug_errno(r, "Failed to connect to the system bus: %m");
        (void) sd_bus_set_description(b->bus, "dpsd");

        r = sd_bus_attach_event(b->bus, event, SD_EVENT_PRIORITY_NORMAL);
        if (r < 0)
                return r;

        r = sd_bus_add_object_vtable(b->bus, &b->vtable_slot, BUS_PATH, BUS_INTERFACE, bus_vtable, b);
        if (r < 0)
                return r;

        r = sd_event_add_defer(event, &b->emit_source, on_emit, b);
        if (r < 0)
                return r;
        r = sd_event_source_set_enabled(b->emit_source, SD_EVENT_OFF);
        if (r < 0)
                return r;
        (void) sd_event_source_set_description(b->emit_source, "bus-emit");

        manager_set_observer(manager, on_manager_event, b);

        /* The name last, once the object is there to answer. No queueing, no
         * replacing: a second dpsd gets -EEXIST and must not run. This is a
         * synchronous call, made once at start-up before the loop runs. */
        r = sd_bus_request_name(b->bus, BUS_NAME, 0);
        if (r < 0)
                return log_debug_errno(r, "Failed to acquire bus name %s: %m", BUS_NAME);

        /* An assignment read from the cache before the bus existed: announce
         * it now that there is someone to tell. */
        manager_get_info(manager, &i);
        if (i.state == MANAGER_PROVISIONED)
                on_manager_event(manager, MANAGER_EVENT_PROVISIONED, b);

        *ret = TAKE_PTR(b);
        return 0;
}

Bus *bus_free(Bus *b) {
        if (!b)
                return NULL;

        if (b->manager)
                manager_set_observer(b->manager, NULL, NULL);
        sd_event_source_disable_unref(b->emit_source);
        sd_bus_slot_unref(b->vtable_slot);
        /* Closing the connection releases the name. */
        sd_bus_flush_close_unref(b->bus);
        sd_event_unref(b->event);
        free(b);
        return NULL;
}
