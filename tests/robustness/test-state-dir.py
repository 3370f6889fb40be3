#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
# test-state-dir.py: a full or read-only state directory: dpsd stays up, says why, keeps the identity in memory, writes the cache once it can
"""The state directory is a small tmpfs mounted by the test (root; always
unmounted). Full: dpsd provisions, cannot write its cache, stays up and
provisioned with LastError naming the cache and the cause (D-Bus on a
private bus, and the log), identity.env is written; once space is freed the
cache appears without any restart and LastError clears. Read-only: the same,
and a Reprovision on the bus keeps working while the directory is read-only."""

import json
import os
import subprocess
import sys
import tempfile

from robust import SKIP, Bus, Tmpfs, World, cache_problem, check, is_root, main, wait_for


def setup(w, tmpfs_size="64k"):
    bus = Bus(w)
    sim = w.sim([w.sas_enrollment(payload="echo")], defaults={"assigning-polls": 0, "retry-after": 1})
    return bus, sim


def cache_ok(w):
    try:
        with open(w.path("state/cache.json")) as f:
            return cache_problem(f.read()) is None
    except FileNotFoundError:
        return False


def test_state_dir_full():
    with World(devices=(), groups=()) as w:
        bus, sim = setup(w)
        with Tmpfs(w.path("state"), "64k") as fs:
            filler = fs.fill()
            d = w.dpsd(w.dpsd_conf(sim), env=bus.env)
            d.wait_provisioned()
            err = wait_for(lambda: bus.prop("LastError"), 5, "LastError on the bus")
            check("cache.json" in err and "No space left" in err, "LastError: %r" % err)
            check(bus.prop("State") == "provisioned", bus.prop("State"))
            check(bus.prop("AssignedHub") == "hub-a.azure-devices.net", "the identity is not kept in memory")
            check(bus.prop("LastErrorCode") < 0, bus.prop("LastErrorCode"))
            check("Failed to write" in d.output() and "No space left" in d.output(), "the log does not say it")
            check(not cache_ok(w), "a cache was written to a full disk?")
            check("DPS_DEVICE_ID='dev-sas'" in w.read("run/identity.env"), "identity.env not written")

            os.unlink(filler)
            wait_for(lambda: cache_ok(w), 10, "the cache to be written once there is space")
            c = json.loads(w.read("state/cache.json"))
            check(c["assignedHub"] == "hub-a.azure-devices.net" and c["deviceId"] == "dev-sas", c)
            wait_for(lambda: bus.prop("LastError") == "", 5, "LastError to clear")
            check(d.alive(), "dpsd died")
            check(len(sim.events("register")) == 1, "dpsd registered again instead of only writing")
            check(d.stop() == 0, "dpsd did not exit 0")


def test_state_dir_read_only():
    with World(devices=(), groups=()) as w:
        bus, sim = setup(w)
        with Tmpfs(w.path("state"), "1m") as fs:
            fs.remount("ro")
            d = w.dpsd(w.dpsd_conf(sim), env=bus.env)
            d.wait_provisioned()
            err = wait_for(lambda: bus.prop("LastError"), 5, "LastError on the bus")
            check("cache.json" in err and "Read-only" in err, "LastError: %r" % err)

            # a Reprovision while read-only: provisioned again, still saying why
            r = bus.busctl("call", "org.dpsd.Provisioning1", "/org/dpsd/Provisioning1",
                           "org.dpsd.Provisioning1", "Reprovision", "t", "0")
            check(r.returncode == 0, "Reprovision: %s" % r.stderr)
            wait_for(lambda: len(sim.events("register")) == 2, 10, "the second registration")
            wait_for(lambda: bus.prop("State") == "provisioned" and "Read-only" in bus.prop("LastError"), 10,
                     "provisioned again with the write error")
            check(d.alive(), "dpsd died")

            fs.remount("rw")
            wait_for(lambda: cache_ok(w), 12, "the cache once the directory is writable")
            wait_for(lambda: bus.prop("LastError") == "", 5, "LastError to clear")
            check(d.stop() == 0, "dpsd did not exit 0")

            # and the next start uses what was written
            d2 = w.dpsd(w.dpsd_conf(sim), env=bus.env, name="dpsd2")
            d2.wait_status("(from cache)")
            check(len(sim.events("register")) == 2, "a start with the written cache registered again")
            d2.stop()


def can_mount():
    d = tempfile.mkdtemp(prefix="dpsd-mount-probe-")
    try:
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4k", "tmpfs", d], capture_output=True)
        if r.returncode == 0:
            subprocess.run(["umount", d], check=False)
        return r.returncode == 0
    finally:
        os.rmdir(d)


if __name__ == "__main__":
    if not is_root() or not can_mount():
        print("SKIP: needs root and the right to mount a tmpfs")
        sys.exit(SKIP)
    main([test_state_dir_full, test_state_dir_read_only])
