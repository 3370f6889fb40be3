/* SPDX-License-Identifier: MIT */
/* dpsd-bus.h: dpsd's system-bus API, org.dpsd.Provisioning1 */
#pragma once

#include <systemd/sd-event.h>

#include "dpsd-manager.h"

#define BUS_NAME      "org.dpsd.Provisioning1"
#define BUS_PATH      "/org/dpsd/Provisioning1"
#define BUS_INTERFACE "org.dpsd.Provisioning1"

/* Named errors of the API (see dbus/org.dpsd.Provisioning1.xml). */
#define BUS_ERROR_PERMISSION_DENIED "org.dpsd.Provisioning1.Error.PermissionDenied"
#define BUS_ERROR_INVALID_FLAGS     "org.dpsd.Provisioning1.Error.InvalidFlags"
#define BUS_ERROR_FAILED            "org.dpsd.Provisioning1.Error.Failed"

typedef struct Bus Bus;

/* Connects to the system bus (sd_bus_open_system(), so
 * DBUS_SYSTEM_BUS_ADDRESS selects another one), attaches it to event,
 * exports the object, becomes the manager's observer and then requests
 * BUS_NAME. Returns 0 once the name is owned: the caller may send READY=1.
 * -EEXIST when another process owns the name, -EACCES when the bus policy
 * denies it, other negative errno when the bus is unreachable. If the bus
 * goes away later, dpsd keeps provisioning and reconnects every 5 s. */
int bus_new(sd_event *event, Manager *manager, Bus **ret);

/* Stops observing the manager, releases the name, flushes and closes the
 * connection. Takes NULL, returns NULL. */
Bus *bus_free(Bus *b);

static inline void bus_freep(Bus **b) { if (*b) bus_free(*b); }
