#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
# test-hostile-service.py: wrong answers from the service (other $rid, duplicates, out of order, unknown status, bad hub names, control characters) and D-Bus calls with wrong signatures
"""A scripted DPS (scripted.py) says exactly what each case needs; dpsd
must take only the answer to its own request, never crash, never store or
show a hub that is not a host name or a device id with control characters,
and recover when the service behaves again. Then dpsd's D-Bus API gets
calls with wrong signatures, unknown methods and property writes: named
errors, and dpsd keeps serving."""

import subprocess
import time

from robust import Bus, World, check, main, wait_for
from scripted import ScriptedDps, assigned, assigning, topic


class Port:
    def __init__(self, port):
        self.port = port


def run(w, script, bus=None, name="dpsd"):
    srv = ScriptedDps(w.path("server.crt"), w.path("server.key"), script)
    d = w.dpsd(w.dpsd_conf(Port(srv.port)), name=name, env=bus.env if bus else None)
    return srv, d


def kinds(srv):
    return [k for k, _ in srv.requests]


def test_other_rid_and_out_of_order():
    with World(devices=(), groups=()) as w:
        def script(kind, rid, n):
            if kind == "register":
                # an answer for someone else's request first, then ours
                return [(topic(200, "9999"), assigned(hub="hub-evil.azure-devices.net", device_id="evil")),
                        (topic(202, rid, 1), assigning())]
            # the register's answer again, late (out of order), then the poll's
            first_rid = srv.requests[0][1]
            return [(topic(200, first_rid), assigned(hub="hub-late.azure-devices.net")),
                    (topic(200, rid), assigned())]
        srv, d = run(w, script)
        st = d.wait_provisioned()
        check(st == "Provisioned to hub hub-s.azure-devices.net as dev-sas", st)
        check("evil" not in w.read("run/identity.env") and "late" not in w.read("state/cache.json"), "a foreign answer was used")
        check(kinds(srv) == ["register", "poll"], srv.requests)
        d.stop()
        srv.close()


def test_duplicates():
    with World(devices=(), groups=()) as w:
        def script(kind, rid, n):
            if kind == "register":
                return [(topic(202, rid, 1), assigning())] * 3
            return [(topic(200, rid), assigned())] * 3
        srv, d = run(w, script)
        d.wait_provisioned()
        time.sleep(0.5)   # room for the duplicates to do harm
        check(d.alive(), "dpsd died")
        check(kinds(srv) == ["register", "poll"], "duplicates caused extra requests: %r" % srv.requests)
        out = d.output()
        # a duplicate of the register's answer is not the answer to the poll
        check(out.count("Response to register") == 1 and out.count("Response to poll") == 1,
              "duplicates were taken as answers:\n" + "\n".join(l for l in out.splitlines() if "Response" in l))
        check("failed" not in out, "an attempt failed:\n" + out)
        check(len([s for s in d.notify.statuses() if s.startswith("Provisioned")]) == 1, d.notify.statuses())
        d.stop()
        srv.close()


def hostile_then_good(name, bad_answer, must_not_show):
    with World(devices=(), groups=()) as w:
        bus = Bus(w)

        def script(kind, rid, n):
            if n == 1:
                return [(topic(*bad_answer[0]) if isinstance(bad_answer[0], tuple) else bad_answer[0].replace("RID", rid),
                         bad_answer[1])]
            if kind == "register":
                return [(topic(202, rid, 1), assigning())]
            return [(topic(200, rid), assigned())]
        srv, d = run(w, script, bus)
        st = d.wait_provisioned(timeout=20)
        check(st == "Provisioned to hub hub-s.azure-devices.net as dev-sas", "%s: %s" % (name, st))
        check(d.alive(), "%s: dpsd died" % name)
        check(len([k for k in kinds(srv) if k == "register"]) >= 2, "%s: no retry: %r" % (name, srv.requests))
        props = bus.all_props()
        everything = d.output() + "\n".join(d.notify.lines()) + repr(props) + w.read("state/cache.json") + w.read("run/identity.env")
        for s in must_not_show:
            check(s not in everything, "%s: %r reached the logs, STATUS, D-Bus, cache or identity.env" % (name, s))
        d.stop()
        srv.close()
        return d.output()


def test_unknown_status():
    out = hostile_then_good("unknown status", ("$dps/registrations/res/299/?$rid=RID", b'{"status":"exploded"}'), [])
    check("299" in out, "the odd status is not reported")


def test_hub_not_a_host_name():
    for hub in ("hub a.azure-devices.net", "hub-a.azure-devices.net/../../etc", "x" * 300, "hub-\u00e9.net", ""):
        hostile_then_good("hub %r" % hub[:20], ("$dps/registrations/res/200/?$rid=RID", assigned(hub=hub)),
                          [hub] if len(hub) > 3 else [])


def test_device_id_with_control_characters():
    evil = "dev\x1b[2J\nDPS_DEVICE_ID=owned\x07"
    hostile_then_good("device id", ("$dps/registrations/res/200/?$rid=RID", assigned(device_id=evil)),
                      ["\x1b", "\x07", "DPS_DEVICE_ID=owned"])


def test_unusual_but_legal_device_id():
    """IoT Hub allows - . + % _ # * ? ! ( ) , : = @ $ ' in device ids: they must
    arrive intact on D-Bus and in identity.env as a shell reads it."""
    odd = "dev'$(id)`x`\"+%#*?!(),:=@"
    with World(devices=(), groups=()) as w:
        bus = Bus(w)

        def script(kind, rid, n):
            return [(topic(200, rid), assigned(device_id=odd))]
        srv, d = run(w, script, bus)
        d.wait_provisioned()
        check(bus.prop("DeviceId") == odd, repr(bus.prop("DeviceId")))
        r = subprocess.run(["sh", "-c", '. "$1"; printf %s "$DPS_DEVICE_ID"', "sh", w.path("run/identity.env")],
                           capture_output=True, text=True, timeout=5)
        check(r.stdout == odd, "identity.env read by sh gives %r" % r.stdout)
        d.stop()
        srv.close()


def test_dbus_wrong_signatures():
    with World(devices=(), groups=()) as w:
        bus = Bus(w)
        sim = w.sim([w.sas_enrollment()], defaults={"assigning-polls": 0, "retry-after": 1})
        d = w.dpsd(w.dpsd_conf(sim), env=bus.env)
        d.wait_provisioned()
        name, path = "org.dpsd.Provisioning1", "/org/dpsd/Provisioning1"
        cases = [
            (["call", name, path, name, "Reprovision", "s", "now"], "Invalid arguments"),
            (["call", name, path, name, "Reprovision"], "Invalid arguments"),
            (["call", name, path, name, "Reprovision", "tt", "0", "0"], "Invalid arguments"),
            (["call", name, path, name, "Reprovision", "t", "18446744073709551615"], ""),
            (["call", name, path, name, "SelfDestruct"], "Unknown method"),
            (["set-property", name, path, name, "AssignedHub", "s", "hub-evil"], ""),
            (["set-property", name, path, name, "State", "u", "1"], ""),
            (["get-property", name, path, name, "NoSuchProperty"], ""),
            (["call", name, "/org/dpsd/Other", name, "Reprovision", "t", "0"], "Unknown"),
            (["call", name, path, "org.freedesktop.DBus.Properties", "Get", "s", name], ""),
            (["call", name, path, "org.freedesktop.DBus.Properties", "GetAll", "i", "5"], ""),
        ]
        for args, want in cases:
            r = bus.busctl(*args)
            check(r.returncode != 0, "accepted: %r" % args)
            print("  %-60s -> %s" % (" ".join(args[4:] if len(args) > 4 else args), r.stderr.strip()[:110]))
            check(want in r.stderr or want in r.stdout, "%r: %r" % (args, r.stderr))
            check(d.alive(), "dpsd died on %r" % args)
        check(bus.prop("AssignedHub") == "hub-a.azure-devices.net", "a property was changed from outside")
        check(bus.prop("State") == "provisioned", bus.prop("State"))
        d.stop()


if __name__ == "__main__":
    main([test_other_rid_and_out_of_order, test_duplicates, test_unknown_status, test_hub_not_a_host_name,
          test_device_id_with_control_characters, test_unusual_but_legal_device_id, test_dbus_wrong_signatures])
