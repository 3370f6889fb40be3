#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
# test-dpsd-cache.py: dpsd's durable state: offline boot, config changes and SIGHUP, corrupt cache, back-off across restarts
import json
import os
import re
import signal
import socket
import time

from dpsdtest import World, check, main, wait_for


def test_offline_boot_from_cache():
    with World() as w:
        sim = w.sim([w.sas_enrollment()])
        conf = w.dpsd_conf(sim)
        d = w.dpsd(conf)
        d.wait_provisioned()
        check(d.stop() == 0, "dpsd did not stop cleanly")
        sim.stop()
        os.unlink(w.path("run/identity.env"))

        # dps-sim is gone: the cached assignment is used, with no network
        start = time.monotonic()
        d2 = w.dpsd(conf)
        st = d2.wait_provisioned(timeout=5)
        check(st == "Provisioned to hub hub-a.azure-devices.net as dev-sas (from cache)", st)
        wait_for(lambda: "READY=1" in d2.notify.lines(), 5, "READY=1")
        print("  offline boot: provisioned from cache in %.3f s" % (time.monotonic() - start))
        check("DPS_ASSIGNED_HUB='hub-a.azure-devices.net'" in w.read("run/identity.env"), "identity.env not rewritten")
        check(not any(s.startswith("Connecting") for s in d2.notify.statuses()), d2.notify.statuses())
        check("Using the cached assignment" in d2.output(), d2.output())


def test_config_change_reprovisions():
    with World(sas=("dev-sas", "dev-two")) as w:
        sim = w.sim([w.sas_enrollment(), w.sas_enrollment("dev-two", hubs=["hub-b.azure-devices.net"])])
        d = w.dpsd(w.dpsd_conf(sim))
        d.wait_provisioned()
        d.stop()

        # another registration id: the cache no longer matches
        d2 = w.dpsd(w.dpsd_conf(sim, regid="dev-two"))
        st = d2.wait_status("Provisioned to hub hub-b.azure-devices.net as dev-two")
        check("(from cache)" not in st, st)
        check("made for another configuration" in d2.output(), d2.output())
        regs = [e["registrationId"] for e in sim.events("register")]
        check(regs == ["dev-sas", "dev-two"], regs)
        cache = json.loads(w.read("state/cache.json"))
        check(cache["deviceId"] == "dev-two", cache)


def test_sighup_reload():
    with World(sas=("dev-sas", "dev-two")) as w:
        sim = w.sim([w.sas_enrollment(), w.sas_enrollment("dev-two", hubs=["hub-b.azure-devices.net"])])
        d = w.dpsd(w.dpsd_conf(sim))
        d.wait_provisioned()

        # not identity-relevant: no new registration
        d.write_conf(w.dpsd_conf(sim, retry={"min-sec": 2, "max-sec": 8}))
        d.signal(signal.SIGHUP)
        wait_for(lambda: "identity is unchanged" in d.output(), 5, "the reload")
        check(len(sim.events("register")) == 1, sim.events("register"))

        # a broken file: logged, the running configuration is kept
        d.write_conf("id-scope = ;\n")
        d.signal(signal.SIGHUP)
        wait_for(lambda: "Reload failed, keeping the running configuration" in d.output(), 5, "the failed reload")
        check(d.alive(), "dpsd exited on a bad reload")

        # identity changed: re-provisioning, identity.env follows
        d.write_conf(w.dpsd_conf(sim, regid="dev-two"))
        d.signal(signal.SIGHUP)
        d.wait_status("Provisioned to hub hub-b.azure-devices.net as dev-two")
        check("DPS_DEVICE_ID='dev-two'" in w.read("run/identity.env"), w.read("run/identity.env"))
        check([e["registrationId"] for e in sim.events("register")] == ["dev-sas", "dev-two"], sim.events("register"))
        check(d.notify.lines().count("READY=1") >= 3 and "RELOADING=1" in d.notify.lines(), d.notify.lines())


def test_corrupt_cache_set_aside():
    with World() as w:
        sim = w.sim([w.sas_enrollment()])
        os.makedirs(w.path("state"))
        w.write("state/cache.json", '{"version":1,"fingerprint":"abc","assignedHub":"evil', 0o600)
        d = w.dpsd(w.dpsd_conf(sim))
        st = d.wait_provisioned()
        check("(from cache)" not in st, st)
        names = sorted(os.listdir(w.path("state")))
        check(len(names) == 2 and names[0] == "cache.json" and re.fullmatch(r"cache\.json\.corrupt-\d+", names[1]), names)
        check("Ignoring the unusable cache" in d.output(), d.output())
        check(json.loads(w.read("state/cache.json"))["assignedHub"] == "hub-a.azure-devices.net", "cache not rewritten")


def test_backoff_survives_restart():
    with World() as w:
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        s.close()

        class Closed:
            pass
        c = Closed()
        c.port = port
        conf = w.dpsd_conf(c, retry={"min-sec": 40, "max-sec": 80})
        d = w.dpsd(conf)
        d.wait_status("before retry 1")
        d.stop()
        cache = json.loads(w.read("state/cache.json"))
        check(cache["attempts"] == 1 and "assignedHub" not in cache, cache)
        left = cache["nextAttemptUsec"] / 1e6 - time.time()
        check(left > 10, "next attempt only %.1f s away" % left)

        # a restart (think Restart=on-failure loop) does not retry at once
        d2 = w.dpsd(conf)
        st = d2.wait_status("Waiting", timeout=5)
        m = re.search(r"Waiting (\d+) s before retry", st)
        check(m and int(m.group(1)) > 5, st)
        time.sleep(1)
        check(not any(x.startswith("Connecting") for x in d2.notify.statuses()), d2.notify.statuses())
        check("Continuing the back-off of a previous run" in d2.output(), d2.output())


if __name__ == "__main__":
    main([test_offline_boot_from_cache, test_config_change_reprovisions, test_sighup_reload,
          test_corrupt_cache_set_aside, test_backoff_survives_restart])
