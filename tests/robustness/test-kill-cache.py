#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
# test-kill-cache.py: SIGKILL dpsd at random moments while it re-provisions and writes its cache; the cache is always old or new, never partial
"""dpsd alternates between two enrolled identities A and B that share one
cache path: started with A over a cache of B, it re-provisions against
dps-sim (answering at once) and writes its cache; it is killed with SIGKILL
at a random moment of that, the next start uses B, and so on. After every
kill the cache on disk must be the previous complete file or the new one
(valid JSON, expected fields, mode 0600), never partial or empty, and
identity.env complete or absent. Every few kills a start with the identity
the cache holds must use it ("no network needed") without registering.

Short (CI) mode: 100 kills or 25 s. Long mode (--long, or
DPSD_ROBUST_LONG=1): at least 1,000 kills and two minutes."""

import json
import os
import random
import re
import signal
import stat
import subprocess
import sys
import time

from robust import DPSD, World, cache_problem, check, lc_file, main, stop_proc, wait_for

LONG = "--long" in sys.argv or os.environ.get("DPSD_ROBUST_LONG") == "1"
if "--long" in sys.argv:
    sys.argv.remove("--long")
ENV_RE = re.compile(r"^DPS_ASSIGNED_HUB='[^'\n]+'\nDPS_DEVICE_ID='[^'\n]+'\n$")


def test_kill_while_writing_cache():
    seed = int(os.environ.get("DPSD_ROBUST_SEED", str(int(time.time()))))
    print("kill delays from seed %d (DPSD_ROBUST_SEED=%d repeats them)" % (seed, seed))
    rng = random.Random(seed)
    with World(devices=(), sas=("dev-a", "dev-b"), groups=()) as w:
        sim = w.sim([w.sas_enrollment("dev-a", hubs=["hub-a.azure-devices.net"]),
                     w.sas_enrollment("dev-b", hubs=["hub-b.azure-devices.net"])],
                    defaults={"assigning-polls": 0, "retry-after": 1})
        confs = {}
        for regid in ("dev-a", "dev-b"):
            p = w.path(regid + ".conf")
            with open(p, "w") as f:
                f.write(lc_file(w.dpsd_conf(sim, regid=regid, retry={"min-sec": 1, "max-sec": 2})))
            confs[regid] = p
        cache, envf = w.path("state/cache.json"), w.path("run/identity.env")
        env = dict(os.environ, DBUS_SYSTEM_BUS_ADDRESS="unix:path=" + w.path("no-bus"))
        for k in ("NOTIFY_SOCKET", "STATE_DIRECTORY", "RUNTIME_DIRECTORY", "CREDENTIALS_DIRECTORY"):
            env.pop(k, None)

        def read(p):
            try:
                with open(p) as f:
                    return f.read()
            except FileNotFoundError:
                return None

        def start(regid, log=subprocess.DEVNULL):
            p = subprocess.Popen([DPSD, "--config", confs[regid]], env=env, stdin=subprocess.DEVNULL,
                                 stdout=log, stderr=log)
            w.procs.append(p)
            return p

        # calibration: how long one start-to-cache takes here
        t0 = time.monotonic()
        with open(w.path("calibration.log"), "wb") as log:
            p = start("dev-a", log)
        try:
            wait_for(lambda: read(cache), 15, "the first cache")
        except Exception:
            print(read(w.path("calibration.log")))
            raise
        window = max(0.05, (time.monotonic() - t0) * 1.5)
        stop_proc(p, signal.SIGKILL)

        kills = changed = verified = 0
        prev = read(cache)
        begin = time.monotonic()
        while True:
            elapsed = time.monotonic() - begin
            if LONG and kills >= 1000 and elapsed >= 120:
                break
            if not LONG and (kills >= 100 or elapsed >= 25):
                break
            cur = json.loads(prev)["registrationId"]
            regid = "dev-b" if cur == "dev-a" else "dev-a"
            p = start(regid)
            time.sleep(rng.uniform(0, window))
            os.kill(p.pid, signal.SIGKILL)
            p.wait()
            w.procs.remove(p)
            kills += 1

            text = read(cache)
            check(text is not None, "kill %d: the cache disappeared" % kills)
            why = cache_problem(text)
            check(why is None, "kill %d: the cache is %s:\n%r" % (kills, why, text))
            c = json.loads(text)
            if text != prev:
                check(c["registrationId"] == regid and c.get("assignedHub") == "hub-%s.azure-devices.net" % regid[-1],
                      "kill %d: the cache is neither the old one nor the new one: %r" % (kills, text))
                changed += 1
            check(stat.S_IMODE(os.stat(cache).st_mode) == 0o600, "kill %d: cache mode %o" % (kills, os.stat(cache).st_mode))
            e = read(envf)
            check(e is None or ENV_RE.match(e), "kill %d: identity.env is partial: %r" % (kills, e))
            prev = text

            if kills % 10 == 0 and c.get("assignedHub"):
                # the next start with the cached identity uses the cache, no network
                regs = len(sim.events("register"))
                logp = w.path("verify-%d.log" % kills)
                with open(logp, "wb") as log:
                    v = start(c["registrationId"], log)
                    try:
                        wait_for(lambda: "Using the cached assignment" in read(logp), 10,
                                 "dpsd to use the cache after kill %d" % kills)
                        time.sleep(0.1)
                    finally:
                        check(stop_proc(v) == 0, "dpsd did not exit 0 on SIGTERM after using the cache")
                        w.procs.remove(v)
                check(len(sim.events("register")) == regs, "a start with a valid cache registered again")
                check(read(cache) == text, "a start from the cache rewrote it")
                verified += 1

        leftovers = [n for n in os.listdir(w.path("state")) if n != "cache.json"]
        print("kills: %d in %.1f s (kill window %.0f ms), cache replaced by a kill-interrupted run: %d, "
              "cache used by the next start: %d checks, temp files left: %d"
              % (kills, time.monotonic() - begin, window * 1000, changed, verified, len(leftovers)))
        check(kills >= 100 or time.monotonic() - begin >= 20, "too few kills: %d" % kills)
        check(changed > 0, "no kill came after a write: the window is wrong")
        check(len(leftovers) <= 1, "temporary files pile up in the state directory: %r" % leftovers[:5])
        check(sim.proc.poll() is None, "dps-sim died")


if __name__ == "__main__":
    main([test_kill_while_writing_cache])
