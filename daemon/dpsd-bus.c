/* SPDX-License-Identifier: MIT */
/* dpsd-bus.c: dpsd's system-bus API, org.dpsd.Provisioning1 (one object, one vtable) */

#include <errno.h>
#include <grp.h>
#include <inttypes.h>
#include <pwd.h>
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

/* After losing the bus (a restarted dbus-broker, say): the first try soon,
 * then this often. */
#define BUS_RECONNECT_FIRST_USEC (1ULL * 1000000ULL)
#define BUS_RECONNECT_USEC (5ULL * 1000000ULL)

struct Bus {
        sd_event *event;
        Manager *manager;
        sd_bus *bus;                    /* NULL while disconnected */
        sd_bus_slot *vtable_slot;
        sd_event_source *emit_source;
        sd_event_source *reconnect_source;
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

/* ---- errors ------------------------------------------------------------- */

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

/* ---- privilege ---------------------------------------------------------- */

/*
 * Reprovision is for root and the DPSD_GROUP group. The bus policy says so
 * too; checking here as well means a looser policy does not open the method.
 *
 * The caller's user and groups come from the bus driver's
 * GetConnectionCredentials (UnixUserID, UnixGroupIDs), which the bus took
 * from the socket when the caller connected: no /proc lookup, no PID race.
 * sd_bus_query_sender_creds() is not enough here: the sd-bus of systemd 252
 * does not take UnixGroupIDs from the bus and falls back to reading
 * /proc/PID/status, which ProtectProc=invisible (dpsd.service) hides for
 * other users, so every group member would be refused. The query is
 * asynchronous: the method call is answered from its reply, and the loop
 * never blocks on the bus. A bus that sends no group list (older than D-Bus
 * 1.13) falls back to the user database's membership. Anything unknown
 * denies.
 */

typedef struct PendingCall {
        Bus *bus;
        sd_bus_message *message;        /* the Reprovision() call, answered later */
} PendingCall;

static void pending_call_free(void *p) {
        PendingCall *c = p;

        if (!c)
                return;
        sd_bus_message_unref(c->message);
        free(c);
}

static bool user_in_group_nss(uid_t uid, gid_t gid) {
        struct passwd *pw = getpwuid(uid);
        gid_t groups[256];
        int n = (int) ELEMENTSOF(groups);

        if (!pw)
                return false;
        if (pw->pw_gid == gid)
                return true;
        if (getgrouplist(pw->pw_name, pw->pw_gid, groups, &n) < 0)
                return false;   /* more than 256 groups: deny rather than guess */
        for (int k = 0; k < n; k++)
                if (groups[k] == gid)
                        return true;
        return false;
}

/* Reads GetConnectionCredentials' a{sv}. 1 = allowed, 0 = denied, <0 on a
 * malformed reply. */
static int caller_allowed(sd_bus_message *reply, uid_t *ret_uid) {
        struct group *g;
        bool have_uid = false, have_groups = false, member = false;
        uint32_t uid = 0;
        int r;

        g = getgrnam(DPSD_GROUP);

        r = sd_bus_message_enter_container(reply, 'a', "{sv}");
        if (r < 0)
                return r;
        while ((r = sd_bus_message_enter_container(reply, 'e', "sv")) > 0) {
                const char *key;

                r = sd_bus_message_read(reply, "s", &key);
                if (r < 0)
                        return r;
                if (streq(key, "UnixUserID")) {
                        r = sd_bus_message_read(reply, "v", "u", &uid);
                        have_uid = r >= 0;
                } else if (streq(key, "UnixGroupIDs")) {
                        const uint32_t *gids;
                        size_t size;

                        r = sd_bus_message_enter_container(reply, 'v', "au");
                        if (r >= 0)
                                r = sd_bus_message_read_array(reply, 'u', (const void **) &gids, &size);
                        if (r >= 0) {
                                have_groups = true;
                                for (size_t k = 0; g && k < size / sizeof(uint32_t); k++)
                                        if (gids[k] == (uint32_t) g->gr_gid)
                                                member = true;
                                r = sd_bus_message_exit_container(reply);
                        }
                } else
                        r = sd_bus_message_skip(reply, "v");
                if (r < 0)
                        return r;
                r = sd_bus_message_exit_container(reply);
                if (r < 0)
                        return r;
        }
        if (r < 0)
                return r;

        if (!have_uid)
                return 0;
        *ret_uid = (uid_t) uid;
        if (uid == 0)
                return 1;
        if (!g)
                return 0;
        if (!have_groups)
                member = user_in_group_nss((uid_t) uid, g->gr_gid);
        return member;
}

/* ---- methods ------------------------------------------------------------ */

static int reply_errno(sd_bus_message *call, int r, const char *what) {
        _cleanup_(sd_bus_error_free) sd_bus_error e = SD_BUS_ERROR_NULL;

        bus_error_set_errno(&e, r, what);
        return sd_bus_reply_method_error(call, &e);
}

static int on_caller_credentials(sd_bus_message *reply, void *userdata, sd_bus_error *ret_error) {
        PendingCall *c = userdata;
        uid_t uid = (uid_t) -1;
        int r;

        if (sd_bus_message_is_method_error(reply, NULL)) {
                log_notice("Denied Reprovision() from %s: the bus did not give its credentials: %s",
                           sd_bus_message_get_sender(c->message) ?: "unknown",
                           sd_bus_message_get_error(reply)->message ?: "unknown error");
                return reply_errno(c->message, -EACCES, "Cannot determine the caller's credentials");
        }

        r = caller_allowed(reply, &uid);
        if (r < 0)
                return reply_errno(c->message, -EACCES, "Cannot read the caller's credentials");
        if (r == 0) {
                log_notice("Denied Reprovision() to uid %u: neither root nor in group '%s'.",
                           (unsigned) uid, DPSD_GROUP);
                return sd_bus_reply_method_errorf(c->message, BUS_ERROR_PERMISSION_DENIED,
                                                  "Reprovision is allowed to root and to members of group '%s' only.",
                                                  DPSD_GROUP);
        }

        r = manager_reprovision(c->bus->manager);
        if (r < 0)
                return reply_errno(c->message, r, "Failed to start re-provisioning");

        log_info("Re-provisioning requested over D-Bus by uid %u (%s)%s.", (unsigned) uid,
                 sd_bus_message_get_sender(c->message) ?: "unknown",
                 r > 0 ? "" : "; one is already running");
        return sd_bus_reply_method_return(c->message, "b", r > 0);
}

static int method_reprovision(sd_bus_message *message, void *userdata, sd_bus_error *error) {
        _cleanup_(sd_bus_slot_unrefp) sd_bus_slot *slot = NULL;
        Bus *b = userdata;
        PendingCall *c;
        uint64_t flags;
        int r;

        r = sd_bus_message_read(message, "t", &flags);
        if (r < 0)
                return r;
        /* Reserved so that options can come later without a new signature. */
        if (flags != 0)
                return sd_bus_error_setf(error, BUS_ERROR_INVALID_FLAGS,
                                         "Unknown flags 0x%" PRIx64 "; Reprovision() currently takes 0.", flags);

        /* The privilege check, then the work, continue in on_caller_credentials(). */
        c = calloc(1, sizeof(*c));
        if (!c)
                return -ENOMEM;
        c->bus = b;
        c->message = sd_bus_message_ref(message);

        r = sd_bus_call_method_async(b->bus, &slot, "org.freedesktop.DBus", "/org/freedesktop/DBus",
                                     "org.freedesktop.DBus", "GetConnectionCredentials",
                                     on_caller_credentials, c, "s", sd_bus_message_get_sender(message));
        if (r < 0) {
                pending_call_free(c);
                return bus_error_set_errno(error, r, "Cannot query the caller's credentials");
        }
        /* The slot owns c from now on and lives until the reply or the bus's end. */
        (void) sd_bus_slot_set_destroy_callback(slot, pending_call_free);
        r = sd_bus_slot_set_floating(slot, 1);
        if (r < 0)
                return bus_error_set_errno(error, r, "Cannot query the caller's credentials");
        return 1;       /* answered later */
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
        /* Unprivileged for sd-bus: the check is ours (on_caller_credentials()),
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

        if (!b->bus) {          /* disconnected: nobody to tell */
                b->changed_due = b->provisioned_due = false;
                return 0;
        }

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

static int bus_connect(Bus *b);

static void bus_disconnect(Bus *b) {
        b->vtable_slot = sd_bus_slot_unref(b->vtable_slot);
        b->bus = sd_bus_close_unref(b->bus);
}

static int on_reconnect(sd_event_source *s, uint64_t usec, void *userdata) {
        Bus *b = userdata;
        int r;

        bus_disconnect(b);
        r = bus_connect(b);
        if (r < 0) {
                bus_disconnect(b);
                log_debug_errno(r, "Reconnecting to the system bus failed, retrying: %m");
                r = sd_event_source_set_time_relative(s, BUS_RECONNECT_USEC);
                if (r >= 0)
                        r = sd_event_source_set_enabled(s, SD_EVENT_ONESHOT);
                if (r < 0)
                        log_warning_errno(r, "Failed to schedule reconnecting to the system bus; the D-Bus API stays off: %m");
                return 0;
        }
        log_info("Reconnected to the system bus, serving %s again.", BUS_NAME);
        return 0;
}

/* The bus went away (sd-bus synthesises this signal locally). The old
 * connection is dropped and a new one tried from a timer, not from inside the
 * old connection's own callback. */
static int on_disconnected(sd_bus_message *m, void *userdata, sd_bus_error *ret_error) {
        Bus *b = userdata;
        int r;

        log_warning("Lost the system bus; provisioning goes on, reconnecting every %llu s.",
                    (unsigned long long) (BUS_RECONNECT_USEC / 1000000ULL));
        if (b->reconnect_source)
                r = sd_event_source_set_time_relative(b->reconnect_source, BUS_RECONNECT_FIRST_USEC);
        else
                r = sd_event_add_time_relative(b->event, &b->reconnect_source, CLOCK_MONOTONIC,
                                               BUS_RECONNECT_FIRST_USEC, 0, on_reconnect, b);
        if (r >= 0)
                r = sd_event_source_set_enabled(b->reconnect_source, SD_EVENT_ONESHOT);
        if (r < 0)
                log_warning_errno(r, "Failed to schedule reconnecting to the system bus; the D-Bus API stays off: %m");
        return 0;
}

/* Connects, exports the object and then requests the name. */
static int bus_connect(Bus *b) {
        int r;

        r = sd_bus_open_system(&b->bus);
        if (r < 0)
                return log_debug_errno(r, "Failed to connect to the system bus: %m");
        (void) sd_bus_set_description(b->bus, "dpsd");

        r = sd_bus_attach_event(b->bus, b->event, SD_EVENT_PRIORITY_NORMAL);
        if (r < 0)
                return r;

        r = sd_bus_add_object_vtable(b->bus, &b->vtable_slot, BUS_PATH, BUS_INTERFACE, bus_vtable, b);
        if (r < 0)
                return r;

        r = sd_bus_match_signal(b->bus, NULL, "org.freedesktop.DBus.Local", "/org/freedesktop/DBus/Local",
                                "org.freedesktop.DBus.Local", "Disconnected", on_disconnected, b);
        if (r < 0)
                return r;

        /* The name last, once the object is there to answer. No queueing, no
         * replacing: a second dpsd gets -EEXIST and must not run. A
         * synchronous call: at start-up before the loop runs, and once per
         * reconnection. */
        r = sd_bus_request_name(b->bus, BUS_NAME, 0);
        if (r < 0)
                return log_debug_errno(r, "Failed to acquire bus name %s: %m", BUS_NAME);
        return 0;
}

int bus_new(sd_event *event, Manager *manager, Bus **ret) {
        _cleanup_(bus_freep) Bus *b = NULL;
        ManagerInfo i = {};
        int r;

        b = calloc(1, sizeof(*b));
        if (!b)
                return -ENOMEM;
        b->event = sd_event_ref(event);
        b->manager = manager;

        r = sd_event_add_defer(event, &b->emit_source, on_emit, b);
        if (r < 0)
                return r;
        r = sd_event_source_set_enabled(b->emit_source, SD_EVENT_OFF);
        if (r < 0)
                return r;
        (void) sd_event_source_set_description(b->emit_source, "bus-emit");

        r = bus_connect(b);
        if (r < 0)
                return r;

        manager_set_observer(manager, on_manager_event, b);

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
        sd_event_source_disable_unref(b->reconnect_source);
        sd_bus_slot_unref(b->vtable_slot);
        /* Closing the connection releases the name. */
        sd_bus_flush_close_unref(b->bus);
        sd_event_unref(b->event);
        free(b);
        return NULL;
}
