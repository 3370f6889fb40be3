#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
# test-bus.py: dpsd's D-Bus API, policy and dpsctl against a private system-like bus, dpsd and dps-sim
"""Starts a private dbus-daemon with a system-bus-like configuration (deny by
default, dbus/org.dpsd.Provisioning1.conf.in included with the daemon user
set to root), dps-sim on loopback and dpsd, then checks as users would with
busctl and dpsctl: every property, dpsctl wait/status/show, the
introspection against dbus/org.dpsd.Provisioning1.xml, Reprovision as root
(a new registration at dps-sim, PropertiesChanged and Provisioned signals),
denial for an unprivileged user (by the bus policy, and by dpsd itself when
the policy is too loose), success for a member of the group, a second dpsd
refused, and dpsd surviving the loss of the bus. Every process is stopped by
its pid. Needs root (to create the test users); skipped otherwise."""

import grp
import json
import os
import pwd
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "sim"))
from simharness import SCOPE, Sim, random_key, sas_enrollment  # noqa: E402

BUILD = os.environ["DPSD_BUILD_ROOT"]
SOURCE = os.environ["DPSD_SOURCE_ROOT"]
DPSD = os.path.join(BUILD, "daemon", "dpsd")
DPSCTL = os.path.join(BUILD, "daemon", "dpsctl")
GROUP = sys.argv[1] if len(sys.argv) > 1 else "dpsd"

NAME = "org.dpsd.Provisioning1"
PATH = "/org/dpsd/Provisioning1"
IFACE = "org.dpsd.Provisioning1"
REGID = "dev-bus"
DEVICE_ID = "bus-device"
HUBS = ("hub-a.azure-devices.net", "hub-b.azure-devices.net")

USER_PLAIN = "dpsd-test-user"      # no rights: the bus policy denies Reprovision
USER_LOOSE = "dpsd-test-loose"     # a misconfigured policy lets it call: dpsd must deny
USER_MEMBER = "dpsd-test-member"   # in GROUP: allowed
USER_DAEMON = "dpsd-test-daemon"   # runs dpsd unprivileged, as dpsd.service does

failures = []
procs = []


def check(cond, what, detail=""):
    print(("ok   " if cond else "FAIL ") + what + ("" if cond or not detail else f"\n     {detail}"))
    if not cond:
        failures.append(what)
    return cond


def stop(p, sig=signal.SIGTERM, timeout=10):
    """Stops a process we started, by its pid; returns its exit code."""
    if p.poll() is None:
        os.kill(p.pid, sig)
        try:
            p.wait(timeout)
        except subprocess.TimeoutExpired:
            os.kill(p.pid, signal.SIGKILL)
            p.wait()
    return p.returncode


def run(cmd, user=None, env=None, timeout=30):
    if user:
        cmd = ["runuser", "-u", user, "--"] + cmd
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)
    return r


def ensure_group(name):
    try:
        grp.getgrnam(name)
    except KeyError:
        subprocess.run(["groupadd", "--system", name], check=True)


def ensure_user(name, groups=()):
    try:
        pwd.getpwnam(name)
    except KeyError:
        subprocess.run(["useradd", "--system", "--no-create-home", "--home-dir", "/nonexistent",
                        "--shell", "/usr/sbin/nologin", name], check=True)
    for g in groups:
        if name not in grp.getgrnam(g).gr_mem:
            subprocess.run(["usermod", "-a", "-G", g, name], check=True)


# ---- the private bus ----------------------------------------------------

BUS_CONF = """<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <listen>unix:path={socket}</listen>
  <auth>EXTERNAL</auth>
  <!-- As /usr/share/dbus-1/system.conf: deny by default. -->
  <policy context="default">
    <allow user="*"/>
    <deny own="*"/>
    <deny send_type="method_call"/>
    <allow send_type="signal"/>
    <allow send_requested_reply="true" send_type="method_return"/>
    <allow send_requested_reply="true" send_type="error"/>
    <allow receive_type="method_call"/>
    <allow receive_type="method_return"/>
    <allow receive_type="error"/>
    <allow receive_type="signal"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus.Introspectable"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus.Properties"/>
    <deny send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus"
          send_member="UpdateActivationEnvironment"/>
  </policy>
  <policy user="root">
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus.Monitoring"/>
  </policy>
  <include>{policy}</include>
  <!-- A deliberately loose rule for one user, standing for a misconfigured
       policy: dpsd's own caller check must still refuse. -->
  <policy user="{loose}">
    <allow send_destination="org.dpsd.Provisioning1"/>
  </policy>
</busconfig>
"""


def start_bus(tmp, owner="root", name="bus"):
    sock = os.path.join(tmp, name + ".sock")
    policy = os.path.join(tmp, name + "-org.dpsd.Provisioning1.conf")
    with open(os.path.join(SOURCE, "dbus", "org.dpsd.Provisioning1.conf.in")) as f:
        text = f.read().replace("@DPSD_USER@", owner).replace("@DPSD_GROUP@", GROUP)
    with open(policy, "w") as f:
        f.write(text)
    conf = os.path.join(tmp, name + ".conf")
    with open(conf, "w") as f:
        f.write(BUS_CONF.format(socket=sock, policy=policy, loose=USER_LOOSE))
    p = subprocess.Popen(["dbus-daemon", "--config-file=" + conf, "--nofork", "--nosyslog", "--print-address=1"],
                         stdout=subprocess.PIPE, stderr=open(os.path.join(tmp, "bus.log"), "ab"), text=True)
    procs.append(p)
    address = p.stdout.readline().strip()
    if not address:
        raise RuntimeError("dbus-daemon did not start: " + open(os.path.join(tmp, "bus.log")).read())
    # Like the real system bus address: no guid, so a restarted bus on the
    # same socket is the same address (sd-bus refuses a server whose guid
    # differs from the one in the address).
    return p, address.split(",guid=")[0]


# ---- helpers over busctl --------------------------------------------------

def busctl(address, *args, user=None):
    return run(["busctl", "--address=" + address] + list(args), user=user)


def get_property(address, name, user=None):
    r = busctl(address, "--json=short", "get-property", NAME, PATH, IFACE, name, user=user)
    if r.returncode != 0:
        return None, r.stderr.strip()
    v = json.loads(r.stdout)
    return v["type"], v["data"]


def wait_for(cond, timeout=15.0, step=0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(step)
    return cond()


class Monitor:
    """busctl monitor --json=short in the background; signals from dpsd's object."""

    def __init__(self, tmp, address):
        self.path = os.path.join(tmp, "monitor.jsonl")
        self.out = open(self.path, "w")
        self.p = subprocess.Popen(["busctl", "--address=" + address, "--json=short", "monitor"],
                                  stdout=self.out, stderr=subprocess.DEVNULL)
        procs.append(self.p)
        wait_for(lambda: os.path.getsize(self.path) > 0, 5)

    def signals(self):
        out = []
        with open(self.path) as f:
            for line in f:
                try:
                    m = json.loads(line)
                except ValueError:
                    continue
                if m.get("type") == "signal" and m.get("path") == PATH:
                    out.append(m)
        return out


def parse_iface(xml_text):
    """Members of our interface as comparable tuples; a property without an
    EmitsChangedSignal annotation has the default, "true"."""
    root = ET.fromstring(xml_text)
    node = root if root.tag == "interface" else root.find(f"interface[@name='{IFACE}']")
    if node is None:
        return None

    def annotations(e):
        return tuple(sorted((a.get("name"), a.get("value")) for a in e.findall("annotation")))

    props, methods, sigs = {}, {}, {}
    for p in node.findall("property"):
        ann = dict(annotations(p))
        ann.setdefault("org.freedesktop.DBus.Property.EmitsChangedSignal", "true")
        props[p.get("name")] = (p.get("type"), p.get("access"), tuple(sorted(ann.items())))
    for m in node.findall("method"):
        methods[m.get("name")] = (tuple((a.get("name"), a.get("type"), a.get("direction", "in"))
                                        for a in m.findall("arg")), annotations(m))
    for s in node.findall("signal"):
        sigs[s.get("name")] = (tuple((a.get("name"), a.get("type")) for a in s.findall("arg")), annotations(s))
    return props, methods, sigs


def registrations(sim):
    return len([e for e in sim.events("register") if e.get("registrationId") == REGID])


def unprivileged_daemon(tmp, sim, key, dpsctl):
    """dpsd as dpsd.service runs it: an unprivileged user that cannot see
    other users' processes (ProtectProc=invisible, here a private /proc
    mounted with hidepid=invisible). The group check must not depend on
    reading the caller's /proc entry."""
    if not shutil.which("unshare") or not shutil.which("setpriv"):
        print("skip unprivileged dpsd: unshare or setpriv missing")
        return
    pw = pwd.getpwnam(USER_DAEMON)
    d = os.path.join(tmp, "daemon")
    os.mkdir(d, 0o700)
    os.chown(d, pw.pw_uid, pw.pw_gid)
    shutil.copy2(DPSD, os.path.join(tmp, "dpsd"))
    os.chmod(os.path.join(tmp, "dpsd"), 0o755)
    keyfile = os.path.join(d, "device.key")
    fd = os.open(keyfile, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    os.write(fd, key.encode())
    os.close(fd)
    shutil.copy(sim.cafile, os.path.join(d, "ca.crt"))
    with open(os.path.join(d, "dps.conf"), "w") as f:
        f.write(f'id-scope = "{SCOPE}";\nregistration-id = "{REGID}";\nendpoint = "127.0.0.1";\n'
                f'port = {sim.mqtt_port};\nca-file = "ca.crt";\n'
                'attestation = { type = "symmetric-key"; key-file = "device.key"; };\n'
                'cache-path = "cache.json";\nidentity-env-path = "identity.env";\n')
    for f in os.listdir(d):
        os.chown(os.path.join(d, f), pw.pw_uid, pw.pw_gid)

    bus, address = start_bus(tmp, owner=USER_DAEMON, name="bus3")
    env = dict(os.environ, DBUS_SYSTEM_BUS_ADDRESS=address)
    inner = (f"mount -t proc -o hidepid=invisible proc /proc && exec setpriv --reuid={pw.pw_uid} "
             f"--regid={pw.pw_gid} --clear-groups {os.path.join(tmp, 'dpsd')} --config {d}/dps.conf")
    log = open(os.path.join(tmp, "dpsd.log"), "ab")
    dpsd = subprocess.Popen(["unshare", "--mount", "--propagation", "private", "sh", "-c", inner],
                            env=env, stdout=log, stderr=log)
    procs.append(dpsd)
    try:
        check(wait_for(lambda: get_property(address, "State")[0] == "s", 10),
              f"dpsd running as {USER_DAEMON} with a hidden /proc owns the name")
        r = run([dpsctl, "wait", "--timeout", "20", "--address", address])
        check(r.returncode == 0, "it provisions", f"rc={r.returncode} {r.stderr}")
        before = registrations(sim)
        r = run([dpsctl, "reprovision", "--wait", "--timeout", "20", "--address", address], user=USER_MEMBER)
        check(r.returncode == 0 and registrations(sim) == before + 1,
              f"it grants Reprovision to {USER_MEMBER} from the bus's credentials, not /proc",
              f"rc={r.returncode} {r.stderr}")
        r = run([dpsctl, "reprovision", "--wait", "--timeout", "20", "--address", address])
        check(r.returncode == 0 and registrations(sim) == before + 2, "and to root",
              f"rc={r.returncode} {r.stderr}")
        r = run([dpsctl, "reprovision", "--address", address], user=USER_PLAIN)
        check(r.returncode == 4, f"and still refuses {USER_PLAIN}", f"rc={r.returncode} {r.stderr}")
    finally:
        check(stop(dpsd) == 0, "the unprivileged dpsd stops with exit 0")
        stop(bus)


# ---- the test -------------------------------------------------------------

def main():
    if os.geteuid() != 0:
        print("skip: needs root (creates test users, runs commands as them)")
        return 77
    for tool in ("dbus-daemon", "busctl", "runuser", "useradd", "groupadd", "usermod"):
        if not shutil.which(tool):
            print(f"skip: {tool} not found")
            return 77

    ensure_group(GROUP)
    ensure_user(USER_PLAIN)
    ensure_user(USER_LOOSE)
    ensure_user(USER_MEMBER, groups=[GROUP])
    ensure_user(USER_DAEMON)

    tmp = tempfile.mkdtemp(prefix="dpsd-bus-test-")
    os.chmod(tmp, 0o755)    # the test users reach the bus socket and dpsctl here
    dpsctl = os.path.join(tmp, "dpsctl")
    shutil.copy2(DPSCTL, dpsctl)    # the build tree may sit in a directory they cannot enter
    os.chmod(dpsctl, 0o755)
    key = random_key()
    sim = Sim(enrollments=[sas_enrollment(REGID, key, hubs=HUBS,
                                          extra=f'device-id = "{DEVICE_ID}"; payload = "echo";')],
              sets=["assigning-polls=0", "delay-ms=300"])   # slow enough to overlap two calls
    dpsd = None
    try:
        sim.start()
        bus, address = start_bus(tmp)
        env = dict(os.environ, DBUS_SYSTEM_BUS_ADDRESS=address, DPSD_LOG_LEVEL="debug")
        monitor = Monitor(tmp, address)

        keyfile = os.path.join(tmp, "device.key")
        fd = os.open(keyfile, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        os.write(fd, (key + "\n").encode())
        os.close(fd)
        conf = os.path.join(tmp, "dps.conf")
        with open(conf, "w") as f:
            f.write(f'id-scope = "{SCOPE}";\nregistration-id = "{REGID}";\nendpoint = "127.0.0.1";\n'
                    f'port = {sim.mqtt_port};\nca-file = "{sim.cafile}";\n'
                    'attestation = { type = "symmetric-key"; key-file = "device.key"; };\n'
                    'payload = "{\\"k\\":1}";\ncache-path = "cache.json";\nidentity-env-path = "identity.env";\n'
                    'retry = { min-sec = 1; max-sec = 2; };\n')
        started = time.time()
        dpsd_log = open(os.path.join(tmp, "dpsd.log"), "ab")
        dpsd = subprocess.Popen([DPSD, "--config", conf], env=env, stdout=dpsd_log, stderr=dpsd_log)
        procs.append(dpsd)

        # dpsd owns its name before READY=1, as systemd's start job would wait for.
        check(wait_for(lambda: get_property(address, "State")[0] == "s", 10), "dpsd appears on the bus")
        # dpsctl wait: returns once provisioned (through $DBUS_SYSTEM_BUS_ADDRESS).
        r = run([dpsctl, "wait", "--timeout", "20"], env=env)
        check(r.returncode == 0 and "Provisioned: hub hub-" in r.stdout,
              "dpsctl wait returns 0 once provisioned", f"rc={r.returncode} {r.stdout} {r.stderr}")

        # Every property, read with busctl, with the XML's type.
        with open(os.path.join(SOURCE, "dbus", "org.dpsd.Provisioning1.xml")) as f:
            spec = parse_iface(f.read())
        values = {}
        for prop, (ptype, _, _) in spec[0].items():
            t, v = get_property(address, prop)
            check(t == ptype, f"busctl get-property {prop} has type {ptype}", f"got {t} {v}")
            values[prop] = v
        now = time.time()
        check(values.get("State") == "provisioned", "State is provisioned", values.get("State"))
        check(values.get("RegistrationId") == REGID and values.get("IdScope") == SCOPE,
              "RegistrationId and IdScope are the configured ones")
        check(values.get("Endpoint") == "127.0.0.1" and values.get("Transport") == "mqtt",
              "Endpoint and Transport", f"{values.get('Endpoint')} {values.get('Transport')}")
        check(values.get("AttestationType") == "symmetric-key", "AttestationType is symmetric-key")
        check(values.get("AssignedHub") in HUBS, "AssignedHub is one of the enrollment's hubs",
              values.get("AssignedHub"))
        check(values.get("DeviceId") == DEVICE_ID, "DeviceId is the enrollment's device id", values.get("DeviceId"))
        check(values.get("Source") == "service", "Source is service", values.get("Source"))
        check(json.loads(values.get("Payload") or "null") == {"k": 1}, "Payload is the echoed JSON",
              values.get("Payload"))
        lp = (values.get("LastProvisioned") or 0) / 1e6
        check(started - 5 <= lp <= now + 5, "LastProvisioned is a CLOCK_REALTIME usec of this run", str(lp))
        check(values.get("NextAttempt") == 0, "NextAttempt is 0 when provisioned")
        check(values.get("Attempts") == 0, "Attempts is reset to 0 by the success", str(values.get("Attempts")))
        check(values.get("LastError") == "" and values.get("LastErrorCode") == 0, "no LastError")
        everything = busctl(address, "introspect", NAME, PATH).stdout + json.dumps(values)
        check(key not in everything, "the device key appears in no property")

        # dpsctl status, show, --json.
        r = run([dpsctl, "status"], env=env)
        check(r.returncode == 0 and re.search(r"State: provisioned \(from service\)", r.stdout)
              and values["AssignedHub"] in r.stdout and DEVICE_ID in r.stdout,
              "dpsctl status shows state, hub and device", r.stdout + r.stderr)
        r = run([dpsctl, "status", "--json", "--address", address])
        try:
            j = json.loads(r.stdout)
        except ValueError:
            j = {}
        check(r.returncode == 0 and j.get("AssignedHub") == values["AssignedHub"]
              and j.get("LastProvisioned") == values["LastProvisioned"] and j.get("Attempts") == values["Attempts"],
              "dpsctl status --json matches the properties", r.stdout + r.stderr)
        r = run([dpsctl, "show", "-p", "DeviceId", "--value", "--address", address])
        check(r.returncode == 0 and r.stdout.strip() == DEVICE_ID, "dpsctl show -p DeviceId --value", r.stdout)
        r = run([dpsctl, "show", "--address", address])
        check(r.returncode == 0 and len([ln for ln in r.stdout.splitlines() if "=" in ln]) == len(spec[0]),
              "dpsctl show prints every property", r.stdout)

        # Introspection: what dpsd exports is what the XML file says.
        r = busctl(address, "introspect", "--xml-interface", NAME, PATH)
        live = parse_iface(r.stdout) if r.returncode == 0 else None
        check(live is not None and live == spec, "introspection of the running dpsd matches the interface XML",
              f"live={live}\nspec={spec}")

        # Reprovision as root: a new registration, PropertiesChanged and Provisioned.
        before, seen = registrations(sim), len(monitor.signals())
        r = run([dpsctl, "reprovision", "--wait", "--timeout", "20", "--address", address])
        check(r.returncode == 0 and "Provisioned: hub" in r.stdout, "dpsctl reprovision --wait as root returns 0",
              f"rc={r.returncode} {r.stdout} {r.stderr}")
        check(registrations(sim) == before + 1, "Reprovision caused exactly one new registration at dps-sim",
              f"{before} -> {registrations(sim)}")
        wait_for(lambda: any(s["member"] == "Provisioned" for s in monitor.signals()[seen:]), 5)
        new = monitor.signals()[seen:]
        changed = [s for s in new if s["member"] == "PropertiesChanged"]
        states = [s["payload"]["data"][1].get("State", {}).get("data") for s in changed]
        check(len(states) >= 2 and states[-1] == "provisioned" and any(x != "provisioned" for x in states),
              "PropertiesChanged signals went through the registration back to provisioned", str(states))
        attempts = [s["payload"]["data"][1].get("Attempts", {}).get("data") for s in changed]
        check(any(a and a >= 1 for a in attempts), "Attempts counted the registration while it ran", str(attempts))
        check(all(len(s["payload"]["data"][1]) == 12 for s in changed),
              "each PropertiesChanged carries every emits-change property at once (coalesced)")
        check(all(a != b for a, b in zip(states, states[1:])),
              "one PropertiesChanged per state change, no repeats", str(states))
        prov = [s for s in new if s["member"] == "Provisioned"]
        check(len(prov) == 1 and prov[0]["payload"]["data"][1] == DEVICE_ID
              and prov[0]["payload"]["data"][0] in HUBS, "one Provisioned(hub, device_id) signal",
              json.dumps([p["payload"] for p in prov]))

        # A second Reprovision while one runs starts nothing.
        before = registrations(sim)
        r1 = busctl(address, "call", NAME, PATH, IFACE, "Reprovision", "t", "0")
        r2 = busctl(address, "call", NAME, PATH, IFACE, "Reprovision", "t", "0")
        check(r1.stdout.strip() == "b true" and r2.stdout.strip() == "b false",
              "Reprovision returns started=true, then false while that registration runs",
              f"{r1.stdout.strip()!r} {r2.stdout.strip()!r} {r1.stderr} {r2.stderr}")
        r = run([dpsctl, "wait", "--timeout", "20", "--address", address])
        check(r.returncode == 0 and registrations(sim) == before + 1, "and only one registration happened",
              f"rc={r.returncode} {before} -> {registrations(sim)}")

        r = busctl(address, "call", NAME, PATH, IFACE, "Reprovision", "t", "1")
        check(r.returncode != 0 and "Unknown flags" in r.stderr, "Reprovision with unknown flags is refused",
              r.stderr)

        # An unprivileged user reads, but may not re-provision (the bus policy says no).
        before = registrations(sim)
        r = run([dpsctl, "status", "--address", address], user=USER_PLAIN)
        check(r.returncode == 0 and "provisioned" in r.stdout, f"{USER_PLAIN} can run dpsctl status",
              r.stdout + r.stderr)
        t, v = get_property(address, "AssignedHub", user=USER_PLAIN)
        check(t == "s" and v in HUBS, f"{USER_PLAIN} can read AssignedHub with busctl", str(v))
        r = run([dpsctl, "reprovision", "--address", address], user=USER_PLAIN)
        check(r.returncode == 4 and "permission denied" in r.stderr,
              f"dpsctl reprovision as {USER_PLAIN} exits 4 (denied)", f"rc={r.returncode} {r.stderr}")
        r = busctl(address, "call", NAME, PATH, IFACE, "Reprovision", "t", "0", user=USER_PLAIN)
        check(r.returncode != 0 and "denied" in r.stderr.lower(), f"busctl Reprovision as {USER_PLAIN} is denied",
              r.stderr)

        # A policy that lets a user through: dpsd's own check refuses.
        r = run([dpsctl, "reprovision", "--address", address], user=USER_LOOSE)
        check(r.returncode == 4 and f"group '{GROUP}'" in r.stderr,
              "dpsd itself refuses Reprovision to a non-member the policy let through",
              f"rc={r.returncode} {r.stderr}")
        time.sleep(0.5)
        check(registrations(sim) == before, "denied calls caused no registration")

        # A member of the group may.
        r = run([dpsctl, "reprovision", "--wait", "--timeout", "20", "--address", address], user=USER_MEMBER)
        check(r.returncode == 0, f"dpsctl reprovision --wait as {USER_MEMBER} (group {GROUP}) succeeds",
              f"rc={r.returncode} {r.stdout} {r.stderr}")
        check(registrations(sim) == before + 1, "the member's Reprovision registered once more")

        # A second dpsd cannot take the name.
        r = run([DPSD, "--config", conf], env=env, timeout=15)
        check(r.returncode == 1 and "already running" in r.stderr, "a second dpsd exits 1: name already owned",
              f"rc={r.returncode} {r.stderr[-300:]}")

        # The bus goes away: dpsd keeps running, serves a new bus on the same
        # address once it is back, and still stops cleanly.
        stop(bus)
        time.sleep(1.0)
        check(dpsd.poll() is None, "dpsd survives the loss of the bus")
        sock = os.path.join(tmp, "bus.sock")
        if os.path.exists(sock):
            os.unlink(sock)
        bus, address_again = start_bus(tmp)
        check(address_again == address, "a new bus on the same socket")
        check(wait_for(lambda: get_property(address_again, "State") == ("s", "provisioned"), 15),
              "dpsd reconnects to the new bus and serves its state again")
        stop(bus)
        check(stop(dpsd) == 0, "dpsd then stops on SIGTERM with exit 0")

        # dpsd not running: clear message and exit 69.
        bus2, address2 = start_bus(tmp)
        r = run([dpsctl, "status", "--address", address2])
        check(r.returncode == 69 and "not running" in r.stderr, "dpsctl status without dpsd exits 69",
              f"rc={r.returncode} {r.stderr}")
        r = run([dpsctl, "wait", "--timeout", "1", "--address", address2])
        check(r.returncode == 69, "dpsctl wait without dpsd exits 69", f"rc={r.returncode} {r.stderr}")
        stop(bus2)
        r = run([dpsctl, "status", "--address", address2])
        check(r.returncode == 69, "dpsctl status without a bus exits 69", f"rc={r.returncode} {r.stderr}")

        unprivileged_daemon(tmp, sim, key, dpsctl)
    finally:
        for p in procs:
            stop(p)
        sim.stop()
        if failures:
            for name in ("dpsd.log", "bus.log"):
                try:
                    with open(os.path.join(tmp, name), errors="replace") as f:
                        sys.stderr.write(f"--- {name} ---\n{f.read()[-4000:]}\n")
                except OSError:
                    pass
            sys.stderr.write("--- dps-sim ---\n" + sim.log()[-2000:] + "\n")
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(sim.dir, ignore_errors=True)

    print(f"{len(failures)} failure(s)")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
