#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
# test-dpsd-provision.py: dpsd provisions against dps-sim: individual SAS, group SAS, X.509; notify, cache, identity.env
import json
import os
import stat
import subprocess
import time

from dpsdtest import World, check, main, wait_for


def test_individual_sas():
    with World() as w:
        sim = w.sim([w.sas_enrollment(payload="echo")])
        d = w.dpsd(w.dpsd_conf(sim, payload='{"modelId":"dtmi:x;1","n":[1,2]}'), watchdog_usec=2000000)
        status = d.wait_provisioned()
        check(status == "Provisioned to hub hub-a.azure-devices.net as dev-sas", status)

        # READY=1 once running, STATUS on every state change, watchdog pings
        check("READY=1" in d.notify.lines(), "no READY=1: %r" % d.notify.lines())
        sts = d.notify.statuses()
        check(any(s.startswith("Connecting to 127.0.0.1:%d" % sim.port) for s in sts), sts)
        check(any(s.startswith("Registering dev-sas") for s in sts), sts)
        check(any(s.startswith("Waiting for the assignment of dev-sas") for s in sts), sts)
        wait_for(lambda: "WATCHDOG=1" in d.notify.lines(), 3, "WATCHDOG=1 (WATCHDOG_USEC=2 s)")

        # identity.env and the cache, written atomically with the right modes
        env = w.read("run/identity.env")
        check(env == "DPS_ASSIGNED_HUB='hub-a.azure-devices.net'\nDPS_DEVICE_ID='dev-sas'", env)
        st = os.stat(w.path("state/cache.json"))
        check(stat.S_IMODE(st.st_mode) == 0o600, oct(st.st_mode))
        cache = json.loads(w.read("state/cache.json"))
        check(cache["version"] == 1 and cache["assignedHub"] == "hub-a.azure-devices.net", cache)
        check(cache["deviceId"] == "dev-sas" and cache["registrationId"] == "dev-sas", cache)
        check(cache["payload"] == {"modelId": "dtmi:x;1", "n": [1, 2]}, cache)   # echoed back by dps-sim
        check(len(cache["fingerprint"]) == 64, cache)
        check(sorted(os.listdir(w.path("state"))) == ["cache.json"], os.listdir(w.path("state")))

        # the protocol as dps-sim saw it: SAS auth, one register, polls with new $rids
        conns = sim.events("connect")
        check(len(conns) == 1 and conns[0]["auth"] == "sas" and conns[0]["clientId"] == "dev-sas", conns)
        check(conns[0]["username"].startswith("0ne00000A0A/registrations/dev-sas/api-version="), conns)
        regs, polls = sim.events("register"), sim.events("poll")
        check(len(regs) == 1, regs)
        check(len(polls) >= 1, polls)
        rids = [e["rid"] for e in regs + polls]
        check(len(set(rids)) == len(rids), "a $rid was reused: %r" % rids)
        # a provisioned daemon holds no connection, and it said goodbye ("4. DISCONNECT")
        closes = wait_for(lambda: sim.events("close"), 3, "dpsd to close its connection")
        check(closes[0]["reason"] == "disconnect", closes)

        check(d.stop() == 0, "dpsd did not exit 0 on SIGTERM")
        check("STOPPING=1" in d.notify.lines(), d.notify.lines())


def test_group_sas():
    with World() as w:
        sim = w.sim([{"group": "grp", "attestation": "symmetric-key", "primary-key": w.read("grp.group-sas"),
                      "hubs": ["hub-b.azure-devices.net"]}])
        conf = w.dpsd_conf(sim, regid="grp-device-17")
        conf["attestation"] = {"type": "symmetric-key", "group-key-file": "grp.group-sas"}
        # as under dpsd.service's UMask=0077
        d = w.dpsd(conf, wrap=["/bin/sh", "-c", 'umask 077 && exec "$@"', "sh"])
        status = d.wait_provisioned()
        check(status == "Provisioned to hub hub-b.azure-devices.net as grp-device-17", status)
        # identity.env is for every local consumer; the cache stays private
        env_mode = stat.S_IMODE(os.stat(w.path("run/identity.env")).st_mode)
        check(env_mode == 0o644, "identity.env is %s" % oct(env_mode))
        cache_mode = stat.S_IMODE(os.stat(w.path("state/cache.json")).st_mode)
        check(cache_mode == 0o600, "cache.json is %s" % oct(cache_mode))
        check(sim.events("connect")[0]["auth"] == "sas", sim.events("connect"))
        check("DPS_DEVICE_ID='grp-device-17'" in w.read("run/identity.env"), w.read("run/identity.env"))


def test_payload_file():
    with World() as w:
        sim = w.sim([w.sas_enrollment(payload="echo")])
        w.write("payload.json", '{\n  "modelId": "dtmi:file;2",\n  "tags": {"site": "b7"}\n}\n')
        d = w.dpsd(w.dpsd_conf(sim, **{"payload-file": "payload.json"}))
        d.wait_provisioned()
        # dps-sim echoes the payload it received: it went out as the file said
        cache = json.loads(w.read("state/cache.json"))
        check(cache["payload"] == {"modelId": "dtmi:file;2", "tags": {"site": "b7"}}, cache)


def test_x509():
    with World() as w:
        sim = w.sim([{"registration-id": "dev-x509", "attestation": "x509", "certificate": "dev-x509.crt",
                      "hubs": ["hub-c.azure-devices.net"]}])
        conf = w.dpsd_conf(sim)
        del conf["registration-id"]
        conf["registration-id-source"] = "certificate-cn"
        conf["attestation"] = {"type": "x509", "certificate-file": "dev-x509-chain.crt", "key-file": "dev-x509.key"}
        d = w.dpsd(conf)
        status = d.wait_provisioned()
        check(status == "Provisioned to hub hub-c.azure-devices.net as dev-x509", status)
        conn = sim.events("connect")[0]
        check(conn["auth"] == "x509" and conn["clientId"] == "dev-x509", conn)


def cpu_seconds(pid):
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_endpoint_next_address():
    # The endpoint's first address refuses (::1 sorts first and dps-sim
    # listens on 127.0.0.1 only): dpsd must go on to the next address, as a
    # device behind a broken IPv6 route must. A private mount namespace
    # gives dpsd its own /etc/hosts.
    with World() as w:
        sim = w.sim([w.sas_enrollment()])
        hosts = w.write("hosts", "::1 localhost\n127.0.0.1 localhost\n")
        probe = subprocess.run(["unshare", "-m", "sh", "-c", 'mount --bind "$1" /etc/hosts && getent ahosts localhost',
                                "sh", hosts], capture_output=True, text=True)
        check(probe.returncode == 0, "a private /etc/hosts needs root and unshare: %s" % probe.stderr)
        check(probe.stdout.split()[0] == "::1", "resolver order: %r" % probe.stdout)
        wrap = ["unshare", "-m", "sh", "-c", 'mount --bind "$0" /etc/hosts && exec "$@"', hosts]
        d = w.dpsd(w.dpsd_conf(sim, endpoint="localhost"), wrap=wrap)
        status = d.wait_provisioned()
        check(status == "Provisioned to hub hub-a.azure-devices.net as dev-sas", status)
        check(len(sim.events("connect")) == 1, sim.events("connect"))


def test_slow_network_no_busy_loop():
    """300 ms per hop: the TLS handshake, CONNACK, SUBACK and answers all
    arrive late. dpsd waits on epoll without spinning."""
    with World() as w:
        sim = w.sim([w.sas_enrollment()], defaults={"assigning-polls": 1, "retry-after": 0})
        relay = w.relay(sim.port, 0.3)

        class Slow:
            port = relay.port
        d = w.dpsd(w.dpsd_conf(Slow(), timeouts={"connect-sec": 10, "response-sec": 10, "total-sec": 60}),
                   env={"DPSD_LOG_LEVEL": "info"})
        # Count only the waiting: from READY=1 (start-up and OpenSSL's
        # initialisation are behind us) to provisioned. A loop that spins
        # instead of sleeping on epoll burns about as much CPU as wall time;
        # one that waits needs a few milliseconds for the handshake and the
        # JSON, even under sanitizers. Half the wall time separates the two
        # by a wide margin on a loaded machine too.
        wait_for(lambda: "READY=1" in d.notify.lines(), 10, "READY=1")
        start, cpu0 = time.monotonic(), cpu_seconds(d.proc.pid)
        d.wait_provisioned(timeout=30)
        took, cpu = time.monotonic() - start, cpu_seconds(d.proc.pid) - cpu0
        print("  slow network: provisioned in %.1f s using %.3f s of CPU" % (took, cpu))
        check(took > 1.5, "a 300 ms relay cannot be that fast: %.1f s" % took)
        check(cpu < 0.5 * took, "dpsd used %.2f s of CPU in %.1f s of waiting on a slow network" % (cpu, took))


def test_assigning_several_polls():
    with World() as w:
        sim = w.sim([w.sas_enrollment()], defaults={"assigning-polls": 3, "retry-after": 1})
        d = w.dpsd(w.dpsd_conf(sim))
        d.wait_provisioned(timeout=20)
        polls = sim.events("poll")
        check(len(polls) == 3, "expected 3 polls (2 answered assigning), got %d" % len(polls))
        check(len({p["operationId"] for p in polls}) == 1, polls)
        # polls at the pace of retry-after: never before the previous answer's ts + retry-after
        resp = sim.events("response")
        for p in polls:
            prev = [r for r in resp if r["ts"] < p["ts"]][-1]
            check(prev["retryAfter"] == 1, prev)
            check(p["ts"] >= prev["ts"] + 1.0, "poll %.3f s after a retry-after 1 answer" % (p["ts"] - prev["ts"]))


if __name__ == "__main__":
    main([test_individual_sas, test_group_sas, test_payload_file, test_x509, test_endpoint_next_address,
          test_slow_network_no_busy_loop,
          test_assigning_several_polls])
