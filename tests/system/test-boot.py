#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
# test-boot.py: boots Debian 12 with dpsd installed in systemd-nspawn and checks it as a user would
#
# The container shares the host's network namespace, so dpsd inside reaches
# dps-sim on the host's loopback. Commands run inside with nsenter into the
# container's PID 1. Everything started here is stopped by its pid, and the
# temporary root is removed, whatever happens.
#
# Exit status: 0 passed, 1 failed, 77 skipped (not root, no systemd-nspawn,
# nsenter or debootstrap and no cached root filesystem).

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback

SKIP = 77
SRC = os.environ.get("DPSD_SOURCE_ROOT") or os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BUILD = os.environ.get("DPSD_BUILD_ROOT") or os.path.join(SRC, "build")

ID_SCOPE = "0ne00000B00"
REG_ID = "boot-device-1"
HUB = "hub-boot.azure-devices.net"
X509_ID = "boot-device-x509"
HUB_X509 = "hub-x509.azure-devices.net"
BUS_ARGS = ["org.dpsd.Provisioning1", "/org/dpsd/Provisioning1", "org.dpsd.Provisioning1"]
INSIDE_ENV = ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG=C.UTF-8",
              "SYSTEMD_PAGER=", "SYSTEMD_COLORS=0", "SYSTEMD_LOG_COLOR=0", "TERM=dumb"]
# nobody/nogroup: neither root nor in the dpsd group.
NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--"]


class Failed(Exception):
    pass


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def check(cond, what):
    if not cond:
        raise Failed(what)
    log(f"ok: {what}")


def run(cmd, timeout=120, check_rc=True, **kw):
    try:
        p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                           timeout=timeout, **kw)
    except subprocess.TimeoutExpired as e:
        out = e.output.decode(errors="replace") if isinstance(e.output, bytes) else (e.output or "")
        raise Failed(f"{' '.join(map(str, cmd))} did not finish within {timeout:.0f} s:\n{out[-4000:]}")
    if check_rc and p.returncode != 0:
        raise Failed(f"{' '.join(map(str, cmd))} exited {p.returncode}:\n{p.stdout[-4000:]}")
    return p


def on_sigterm(signum, frame):
    # meson's timeout sends SIGTERM: unwind through the finally blocks.
    raise Failed(f"killed by signal {signum}")


class Timer:
    def __init__(self):
        self.t0 = time.monotonic()
        self.last = self.t0
        self.marks = []

    def mark(self, name):
        now = time.monotonic()
        self.marks.append((name, now - self.last))
        self.last = now

    def report(self):
        parts = ", ".join(f"{n} {s:.1f}s" for n, s in self.marks)
        log(f"timings: {parts}; total {time.monotonic() - self.t0:.1f}s")


# ---- the install tree -------------------------------------------------------

def build_options(builddir):
    p = run(["meson", "introspect", "--buildoptions", builddir])
    return {o["name"]: o["value"] for o in json.loads(p.stdout)}


def install_build():
    """A build whose layout is a distribution's (/usr, /etc, /var): the test
    build itself when it is configured so, else a sibling build configured
    with that layout from the same sources (incremental on later runs)."""
    o = build_options(BUILD)
    if (o.get("prefix"), o.get("sysconfdir"), o.get("localstatedir")) == ("/usr", "/etc", "/var"):
        return BUILD
    sub = os.path.join(BUILD, "system-usr")
    if not os.path.exists(os.path.join(sub, "build.ninja")):
        shutil.rmtree(sub, ignore_errors=True)
        log(f"configuring {sub} with prefix /usr")
        run(["meson", "setup", sub, SRC, "--prefix=/usr", "--sysconfdir=/etc", "--localstatedir=/var",
             "-Dtests=false", "-Dbuildtype=debugoptimized"], timeout=300)
    run(["ninja", "-C", sub], timeout=600)
    return sub


def prepare_root(cached, work, root):
    """A writable copy of the cached tree at root: an overlay over it (no
    copy; the mount lives in this process's private mount namespace, so it
    goes away with the process however that ends), else a plain copy."""
    os.makedirs(root)
    if os.environ.get("DPSD_SYSTEM_MOUNTNS") == str(os.getpid()):
        upper, wd = os.path.join(work, "upper"), os.path.join(work, "overlay-work")
        os.makedirs(upper)
        os.makedirs(wd)
        p = run(["mount", "-t", "overlay", "overlay", "-o", f"lowerdir={cached},upperdir={upper},workdir={wd}", root],
                check_rc=False)
        if p.returncode == 0:
            return "overlay over the cached tree"
        log(f"overlay mount failed, copying instead: {p.stdout.strip()}")
    run(["cp", "-a", "--reflink=auto", cached + "/.", root])
    return "copy of the cached tree"


def passwd_ids(root, user):
    with open(os.path.join(root, "etc/passwd")) as f:
        for line in f:
            fields = line.split(":")
            if fields[0] == user:
                return int(fields[2]), int(fields[3])
    raise Failed(f"user {user} not in {root}/etc/passwd after systemd-sysusers")


def write_file(path, text, mode=0o644, uid=0, gid=0):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, mode)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.chown(path, uid, gid)
    os.chmod(path, mode)


def dps_conf_x509(port):
    # The registration id is the certificate's CN; the key comes in as a
    # systemd credential (LoadCredential= in a drop-in), as dps.conf(5) shows.
    return f"""# dps.conf written by tests/system/test-boot.py: X.509 group enrollment
endpoint = "127.0.0.1";
port = {port};
id-scope = "{ID_SCOPE}";
registration-id-source = "certificate-cn";
attestation = {{ type = "x509"; certificate-file = "/etc/dpsd/x509-chain.crt"; key-file = "credential:dps-key"; }};
ca-file = "/etc/dpsd/dps-sim-ca.crt";
retry = {{ min-sec = 1; max-sec = 5; }};
"""


def dps_conf(port):
    # 127.0.0.1 rather than localhost: dps-sim listens on IPv4 only, and
    # libmosquitto's non-blocking connect tries only the first address (::1).
    return f"""# dps.conf written by tests/system/test-boot.py: symmetric key, individual enrollment
endpoint = "127.0.0.1";
port = {port};
id-scope = "{ID_SCOPE}";
registration-id = "{REG_ID}";
attestation = {{ type = "symmetric-key"; key-file = "/etc/dpsd/device.key"; }};
ca-file = "/etc/dpsd/dps-sim-ca.crt";
retry = {{ min-sec = 1; max-sec = 5; }};
"""


# ---- dps-sim on the host ------------------------------------------------------

class Sim:
    def __init__(self, workdir, certs, key):
        self.dir = workdir
        self.proc = None
        self.events = os.path.join(workdir, "sim-events.jsonl")
        self.ready = os.path.join(workdir, "sim-ready.json")
        self.conf = os.path.join(workdir, "sim.conf")
        self.stderr_path = os.path.join(workdir, "sim.stderr")
        with open(self.conf, "w") as f:
            f.write(f"""# dps-sim for tests/system/test-boot.py
id-scope = "{ID_SCOPE}";
tls = {{ certificate = "{certs}/server.crt"; key = "{certs}/server.key"; }};
listen = {{ mqtt = "127.0.0.1:0"; }};
defaults = {{ assigning-polls = 1; retry-after = 1; }};
enrollments = (
  {{ registration-id = "{REG_ID}"; attestation = "symmetric-key"; primary-key = "{key}";
    hubs = [ "{HUB}" ]; }},
  {{ group = "boot-devices-ca"; attestation = "x509"; ca = "{certs}/device-ca.crt"; hubs = [ "{HUB_X509}" ]; }}
);
""")

    def start(self):
        exe = os.path.join(BUILD, "sim", "dps-sim")
        if not os.access(exe, os.X_OK):
            raise Failed(f"{exe} is not built")
        if os.path.exists(self.ready):
            os.unlink(self.ready)
        self.stderr = open(self.stderr_path, "ab")
        self.proc = subprocess.Popen([exe, "--config", self.conf, "--events", self.events,
                                      "--ready-file", self.ready], stdin=subprocess.DEVNULL,
                                     stdout=self.stderr, stderr=self.stderr)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise Failed(f"dps-sim exited {self.proc.returncode}:\n{self.tail()}")
            try:
                with open(self.ready) as f:
                    info = json.load(f)
                self.port = int(info["mqtt"])
                log(f"dps-sim pid {self.proc.pid} listening on 127.0.0.1:{self.port}")
                return self.port
            except (FileNotFoundError, json.JSONDecodeError, KeyError):
                time.sleep(0.05)
        raise Failed(f"dps-sim wrote no ready file within 20 s:\n{self.tail()}")

    def stop(self):
        if not self.proc:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.stderr.close()

    def tail(self, n=40):
        try:
            with open(self.stderr_path, errors="replace") as f:
                return "".join(f.readlines()[-n:])
        except FileNotFoundError:
            return ""

    def events_of(self, kind):
        out = []
        try:
            with open(self.events) as f:
                for line in f:
                    if line.strip():
                        e = json.loads(line)
                        if e.get("event") == kind:
                            out.append(e)
        except FileNotFoundError:
            pass
        return out


# ---- the container -----------------------------------------------------------

class Container:
    def __init__(self, root, workdir):
        self.root = root
        self.name = f"dpsdtest-{os.getpid()}"
        self.log_path = os.path.join(workdir, "nspawn.log")
        self.proc = None
        self.leader = None

    def boot(self, timeout=60):
        self.boots = getattr(self, "boots", 0) + 1
        self.leader = None
        self.logf = open(f"{self.log_path}.{self.boots}", "wb")
        self.proc = subprocess.Popen(["systemd-nspawn", "--boot", "--directory", self.root, "--keep-unit",
                                      "--register=no", "--console=pipe", "--machine", self.name],
                                     stdin=subprocess.DEVNULL, stdout=self.logf, stderr=self.logf)
        deadline = time.monotonic() + timeout
        my_pidns = os.readlink("/proc/self/ns/pid")
        # PID 1 of the container is nspawn's child, once it runs in its own
        # PID namespace and has exec'ed systemd.
        while self.leader is None:
            if self.proc.poll() is not None:
                raise Failed(f"systemd-nspawn exited {self.proc.returncode}:\n{self.tail()}")
            if time.monotonic() > deadline:
                raise Failed(f"no container PID 1 within {timeout} s:\n{self.tail()}")
            for child in self.children():
                try:
                    with open(f"/proc/{child}/comm") as f:
                        comm = f.read().strip()
                    if os.readlink(f"/proc/{child}/ns/pid") != my_pidns and comm == "systemd":
                        self.leader = child
                except (FileNotFoundError, ProcessLookupError):
                    pass
            if self.leader is None:
                time.sleep(0.05)
        # Wait for the boot to finish: systemctl answers once PID 1's bus is up.
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise Failed(f"the container did not finish booting within {timeout} s:\n{self.tail()}")
            p = self.sh(["systemctl", "is-system-running", "--wait"], timeout=left, check_rc=False)
            state = p.stdout.strip().splitlines()[-1] if p.stdout.strip() else ""
            # "offline" is what systemctl says before PID 1 answers.
            if state in ("running", "degraded", "maintenance", "stopping"):
                return state
            time.sleep(0.1)

    def children(self):
        """The pids whose parent is systemd-nspawn."""
        try:
            with open(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children") as f:
                return [int(x) for x in f.read().split()]
        except FileNotFoundError:
            pass
        out = []
        for d in filter(str.isdigit, os.listdir("/proc")):
            try:
                with open(f"/proc/{d}/stat") as f:
                    # "pid (comm) state ppid ...": comm may hold spaces or parentheses.
                    if int(f.read().rsplit(")", 1)[1].split()[1]) == self.proc.pid:
                        out.append(int(d))
            except (FileNotFoundError, ProcessLookupError, IndexError):
                pass
        return out

    def sh(self, cmd, timeout=60, check_rc=True, user=None):
        prefix = ["nsenter", "-t", str(self.leader), "-a", "--", "/usr/bin/env", "-i"] + INSIDE_ENV
        return run(prefix + (NOBODY if user == "nobody" else []) + list(cmd), timeout=timeout, check_rc=check_rc)

    def show(self, unit, *props):
        p = self.sh(["systemctl", "show", unit] + [f"--property={x}" for x in props])
        return dict(line.split("=", 1) for line in p.stdout.splitlines() if "=" in line)

    def prop(self, name, user=None):
        """One org.dpsd.Provisioning1 property, decoded from busctl's text."""
        p = self.sh(["busctl", "get-property"] + BUS_ARGS + [name], user=user)
        sig, _, value = p.stdout.strip().partition(" ")
        if sig == "s":
            return json.loads(value)
        return int(value)

    def wait_prop(self, name, want, timeout=30):
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            p = self.sh(["busctl", "get-property"] + BUS_ARGS + [name], check_rc=False)
            if p.returncode == 0:
                sig, _, value = p.stdout.strip().partition(" ")
                last = json.loads(value) if sig == "s" else int(value)
                if last == want:
                    return last
            else:
                last = p.stdout.strip()
            time.sleep(0.2)
        raise Failed(f"{name} is {last!r}, not {want!r}, after {timeout} s")

    def tail(self, n=40):
        try:
            with open(f"{self.log_path}.{getattr(self, 'boots', 0)}", errors="replace") as f:
                return "".join(f.readlines()[-n:])
        except FileNotFoundError:
            return ""

    def poweroff(self, timeout=30):
        if not self.proc or self.proc.poll() is not None:
            return None
        t = time.monotonic()
        if self.leader:
            # SIGRTMIN+3 asks systemd for a clean halt; nspawn then exits.
            os.kill(self.leader, signal.SIGRTMIN + 3)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            log(f"container did not halt within {timeout} s, killing it")
            if self.leader:
                try:
                    os.kill(self.leader, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.logf.close()
        return time.monotonic() - t


# ---- the checks ----------------------------------------------------------------

def diagnostics(c, sim):
    log("--- diagnostics")
    if c and c.leader and c.proc.poll() is None:
        for cmd in (["systemctl", "--no-pager", "status", "dpsd", "dpsd-wait-provisioned"],
                    ["systemctl", "--failed", "--no-pager"],
                    ["journalctl", "--no-pager", "-b", "-n", "80", "-u", "dpsd", "-u", "dbus"]):
            try:
                print(c.sh(cmd, check_rc=False, timeout=20).stdout, flush=True)
            except Exception as e:  # diagnostics never mask the failure
                print(f"{cmd}: {e}")
    if sim:
        print("dps-sim stderr:\n" + sim.tail(), flush=True)


def checks(c, sim, root, key, timer):
    # The boot pulled in dpsd (WantedBy=multi-user.target) and the consumer
    # unit ordered after dps-provisioned.target, which saw the hub over the bus.
    s = c.show("dpsd.service", "ActiveState", "SubState", "Type", "MainPID", "User")
    check(s["ActiveState"] == "active" and s["SubState"] == "running", f"dpsd.service started at boot ({s})")
    check(s["Type"] == "notify", "dpsd.service is Type=notify")
    c.wait_prop("State", "provisioned")
    check(c.prop("AssignedHub") == HUB, f"busctl get-property AssignedHub returns {HUB}")
    # /run is the container's own tmpfs: read it from inside.
    got = c.sh(["cat", "/run/consumer-hub"], check_rc=False).stdout
    check(f'"{HUB}"' in got, f"a unit ordered after dps-provisioned.target saw the hub at boot ({got.strip()!r})")
    got = c.sh(["cat", "/run/consumer-env"], check_rc=False).stdout.strip()
    check(got == f"{HUB} {REG_ID}", f"and read DPS_ASSIGNED_HUB and DPS_DEVICE_ID from /run/dpsd/identity.env ({got!r})")
    check(c.show("dps-provisioned.target", "ActiveState")["ActiveState"] == "active", "dps-provisioned.target is active")
    # MainPID is a PID of the container's namespace: look at it from inside.
    owner = c.sh(["stat", "-c", "%U", f"/proc/{s['MainPID']}"]).stdout.strip()
    check(owner == "dpsd", f"dpsd runs as user dpsd, not root ({owner})")
    st = c.sh(["stat", "-c", "%U %a", "/var/lib/dpsd"]).stdout.split()
    check(st == ["dpsd", "700"], f"the state directory /var/lib/dpsd is dpsd's, mode 0700 ({st})")
    timer.mark("boot checks")

    # systemctl start returns after READY=1, which dpsd sends once it owns
    # the bus name: right after start returns the name is owned by MainPID.
    c.sh(["systemctl", "stop", "dpsd.service"])
    t = time.monotonic()
    c.sh(["systemctl", "start", "dpsd.service"])
    took = time.monotonic() - t
    s = c.show("dpsd.service", "ActiveState", "SubState", "MainPID", "StatusText")
    names = c.sh(["busctl", "list", "--no-legend", "--acquired"]).stdout
    owner = [line.split() for line in names.splitlines() if line.startswith("org.dpsd.Provisioning1 ")]
    check(s["ActiveState"] == "active" and owner and owner[0][1] == s["MainPID"],
          f"systemctl start returned ({took:.2f}s) with dpsd running and owning org.dpsd.Provisioning1 (pid {s['MainPID']})")
    c.wait_prop("State", "provisioned")
    st = c.show("dpsd.service", "StatusText")["StatusText"]
    check(st != "", f"dpsd sent a STATUS= text ({st!r})")
    p = c.sh(["systemctl", "status", "--no-pager", "dpsd.service"], check_rc=False)
    check(re.search(r'^\s*Status: "' + re.escape(st) + '"', p.stdout, re.M) is not None,
          "systemctl status dpsd shows the Status: line")

    # Reads are open to everyone; Reprovision only to root and group dpsd.
    check(c.prop("AssignedHub", user="nobody") == HUB, "an unprivileged user can read AssignedHub")
    p = c.sh(["dpsctl", "status"], user="nobody", check_rc=False)
    check(p.returncode == 0 and "provisioned" in p.stdout and HUB in p.stdout,
          "dpsctl status as an unprivileged user shows the state and the hub")
    registers = len(sim.events_of("register"))
    before = c.prop("LastProvisioned")
    p = c.sh(["dpsctl", "reprovision", "--wait"], check_rc=False, timeout=60)
    check(p.returncode == 0, f"dpsctl reprovision --wait as root exits 0 ({p.stdout.strip()!r})")
    check(c.prop("State") == "provisioned" and c.prop("AssignedHub") == HUB and c.prop("Source") == "service",
          "after dpsctl reprovision --wait the device is provisioned from the service")
    check(c.prop("LastProvisioned") > before, "LastProvisioned moved forward")
    check(len(sim.events_of("register")) > registers, "dps-sim saw a new register request")
    registers = len(sim.events_of("register"))
    p = c.sh(["dpsctl", "reprovision", "--wait"], check_rc=False, user="nobody", timeout=60)
    # dpsctl(1): exit status 4 is "permission denied".
    check(p.returncode == 4 and re.search(r"denied|rejected|not allowed|permission|privilege", p.stdout, re.I),
          f"dpsctl reprovision is denied for an unprivileged user (exit {p.returncode}: {p.stdout.strip()!r})")
    time.sleep(1)
    check(len(sim.events_of("register")) == registers, "the denied call sent nothing to DPS")
    timer.mark("start/bus/reprovision checks")

    # The cache carries a restart through an outage of DPS.
    sim.stop()
    s0 = c.show("dpsd.service", "MainPID")["MainPID"]
    c.sh(["systemctl", "restart", "dpsd.service"])
    s = c.show("dpsd.service", "ActiveState", "MainPID")
    check(s["ActiveState"] == "active" and s["MainPID"] != s0, "systemctl restart dpsd with dps-sim stopped succeeds")
    c.wait_prop("State", "provisioned", timeout=10)
    check(c.prop("Source") == "cache" and c.prop("AssignedHub") == HUB,
          "dpsd came back provisioned from the cache with the same hub")
    timer.mark("cache restart")

    # Bus activation: a client asking a stopped dpsd starts it through systemd
    # (org.dpsd.Provisioning1.service names SystemdService=dpsd.service).
    c.sh(["systemctl", "stop", "dpsd.service"])
    check(c.show("dpsd.service", "ActiveState")["ActiveState"] == "inactive", "dpsd stopped")
    state = c.prop("State", user="nobody")
    check(state == "provisioned" and c.show("dpsd.service", "ActiveState")["ActiveState"] == "active",
          "an unprivileged busctl get-property activates dpsd.service, which answers provisioned from the cache")

    # The journal: structured fields, and no secret anywhere in it.
    p = c.sh(["journalctl", "--no-pager", "-b", "-u", "dpsd.service", "-o", "json"])
    entries = [json.loads(line) for line in p.stdout.splitlines() if line.strip()]
    states = {e["DPS_STATE"] for e in entries if "DPS_STATE" in e and isinstance(e["DPS_STATE"], str)}
    check("provisioned" in states, f"journalctl -u dpsd -o json carries DPS_STATE (seen: {sorted(states)})")
    check(any(e.get("DPS_REGISTRATION_ID") == REG_ID and "DPS_ATTEMPT" in e for e in entries),
          "its entries carry DPS_REGISTRATION_ID and DPS_ATTEMPT")
    cache = c.sh(["sh", "-c", "cat /var/lib/dpsd/* 2>/dev/null || true"]).stdout
    check(cache != "" and key not in cache, "the cache in /var/lib/dpsd holds no key")

    # SIGHUP (systemctl reload) keeps the process and the assignment.
    pid = c.show("dpsd.service", "MainPID")["MainPID"]
    c.sh(["systemctl", "reload", "dpsd.service"])
    deadline = time.monotonic() + 5
    while "Configuration reloaded" not in c.sh(["journalctl", "--no-pager", "-b", "-u", "dpsd.service", "-n", "5",
                                                 "-o", "cat"]).stdout:
        if time.monotonic() > deadline:
            raise Failed("dpsd logged no \"Configuration reloaded\" within 5 s of systemctl reload")
        time.sleep(0.1)
    s = c.show("dpsd.service", "ActiveState", "MainPID")
    check(s["ActiveState"] == "active" and s["MainPID"] == pid and c.prop("State") == "provisioned"
          and c.prop("AssignedHub") == HUB, "systemctl reload dpsd keeps the process and the assignment")
    timer.mark("journal, cache and reload checks")

    # A bad config fails the unit with 78 and no restart loop.
    conf = os.path.join(root, "etc/dps.conf")
    with open(conf) as f:
        good = f.read()
    with open(conf, "w") as f:
        f.write(good.replace(f'registration-id = "{REG_ID}";', 'registration-id = "bad/id";'))
    p = c.sh(["systemctl", "restart", "dpsd.service"], check_rc=False)
    check(p.returncode != 0, "systemctl restart dpsd with a bad config fails")
    s = c.show("dpsd.service", "ActiveState", "Result", "ExecMainStatus", "NRestarts", "RestartUSec")
    check(s["ActiveState"] == "failed" and s["ExecMainStatus"] == "78", f"the unit is failed with exit status 78 ({s})")
    m = re.match(r"(?:(\d+)min ?)?(?:([\d.]+)s)?$", s["RestartUSec"].strip())
    wait = (int(m.group(1) or 0) * 60 + float(m.group(2) or 0)) if m else 5.0
    time.sleep(min(wait, 30) + 1.5)
    s2 = c.show("dpsd.service", "ActiveState", "NRestarts", "ExecMainPID")
    check(s2["ActiveState"] == "failed" and s2["NRestarts"] == s["NRestarts"] == "0",
          f"no restart after RestartSec ({wait:g}s): NRestarts={s2['NRestarts']}")
    p = c.sh(["journalctl", "--no-pager", "-b", "-u", "dpsd.service", "-n", "20", "-o", "cat"])
    check("/etc/dps.conf" in p.stdout and "registration-id" in p.stdout,
          "the journal names the file and the key of the bad config")
    # Fixed, it starts again without reset-failed, from the cache (DPS is still down).
    with open(conf, "w") as f:
        f.write(good)
    c.sh(["systemctl", "start", "dpsd.service"])
    c.wait_prop("State", "provisioned", timeout=10)
    check(c.prop("Source") == "cache", "with the config fixed, dpsd starts again provisioned from the cache")
    timer.mark("bad config")

    # X.509 through a credential, DPS back on a new port: a config for another
    # identity invalidates the cache and provisions afresh.
    port = sim.start()
    certs = os.path.join(os.path.dirname(root), "certs")
    shutil.copy(os.path.join(certs, f"{X509_ID}-chain.crt"), os.path.join(root, "etc/dpsd/x509-chain.crt"))
    with open(os.path.join(certs, f"{X509_ID}.key")) as f:
        x509_key = f.read()
    write_file(os.path.join(root, "etc/dpsd/x509.key"), x509_key, 0o600)
    write_file(os.path.join(root, "etc/systemd/system/dpsd.service.d/credential.conf"),
               "[Service]\nLoadCredential=dps-key:/etc/dpsd/x509.key\n")
    write_file(conf, dps_conf_x509(port))
    c.sh(["systemctl", "daemon-reload"])
    c.sh(["systemctl", "restart", "dpsd.service"])
    c.wait_prop("State", "provisioned", timeout=20)
    got = {n: c.prop(n) for n in ("RegistrationId", "AttestationType", "AssignedHub", "Source")}
    check(got == {"RegistrationId": X509_ID, "AttestationType": "x509", "AssignedHub": HUB_X509, "Source": "service"},
          f"X.509 with the key as a systemd credential provisions {X509_ID} ({got})")
    conns = [e for e in sim.events_of("connect") if e.get("clientId") == X509_ID]
    check(conns and conns[-1].get("auth") == "x509", "dps-sim saw an X.509-authenticated CONNECT")
    timer.mark("x509")

    # Last, over everything this boot logged (exported raw, so binary fields
    # are searched too): no key, no SAS token.
    whole = c.sh(["journalctl", "--no-pager", "-o", "export"], timeout=60).stdout
    check(f"DPS_REGISTRATION_ID={REG_ID}" in whole, "the exported journal holds dpsd's entries")
    urlkey = key.replace("+", "%2B").replace("/", "%2F").replace("=", "%3D")
    pem = [line for line in x509_key.splitlines() if line and not line.startswith("-----")]
    for secret, what in ((key, "device key"), (urlkey, "url-encoded device key"),
                         ("SharedAccessSignature", "SAS token"), ("sig=", "SAS signature"),
                         ("PRIVATE KEY", "PEM private key")):
        check(secret not in whole, f"the whole journal holds no {what}")
    check(pem and not any(line in whole for line in pem), "the whole journal holds no line of the X.509 key")
    timer.mark("secret scan")

    # The watchdog, shortened so the test sees pings: an idle, provisioned
    # dpsd keeps pinging from its event loop and is not killed.
    write_file(os.path.join(root, "etc/systemd/system/dpsd.service.d/watchdog.conf"), "[Service]\nWatchdogSec=2s\n")
    c.sh(["systemctl", "daemon-reload"])
    c.sh(["systemctl", "restart", "dpsd.service"])
    c.wait_prop("State", "provisioned", timeout=10)
    w0 = c.show("dpsd.service", "MainPID", "NRestarts", "WatchdogTimestampMonotonic", "WatchdogUSec")
    time.sleep(3)
    w1 = c.show("dpsd.service", "ActiveState", "MainPID", "NRestarts", "WatchdogTimestampMonotonic")
    check(w0["WatchdogUSec"] == "2s" and w1["ActiveState"] == "active" and w1["MainPID"] == w0["MainPID"]
          and w1["NRestarts"] == w0["NRestarts"]
          and int(w1["WatchdogTimestampMonotonic"]) > int(w0["WatchdogTimestampMonotonic"]) > 0,
          "with WatchdogSec=2s an idle dpsd keeps pinging the watchdog and is never restarted")
    timer.mark("watchdog")

    # A reboot without DPS: the cache on disk gives the assignment at boot,
    # and units waiting on dps-provisioned.target start without the network.
    sim.stop()
    took = c.poweroff()
    t = time.monotonic()
    state = c.boot()
    check(state == "running", f"the container rebooted (halt {took:.1f}s, boot {time.monotonic() - t:.1f}s) "
          f"with DPS down and is {state!r}")
    check(c.prop("State") == "provisioned" and c.prop("Source") == "cache" and c.prop("AssignedHub") == HUB_X509,
          "after the reboot dpsd is provisioned from the cache")
    got = c.sh(["cat", "/run/consumer-env"], check_rc=False).stdout.strip()
    check(got == f"{HUB_X509} {X509_ID}", f"the consumer unit got the cached identity at boot ({got!r})")
    timer.mark("reboot")


def main():
    signal.signal(signal.SIGTERM, on_sigterm)
    if os.geteuid() != 0:
        print("SKIP: needs root (systemd-nspawn)")
        return SKIP
    if os.environ.get("DPSD_SYSTEM_MOUNTNS") != str(os.getpid()) and shutil.which("unshare"):
        # Again in a private mount namespace (same pid: unshare execs without
        # forking), so the overlay root cannot outlive the test.
        os.environ["DPSD_SYSTEM_MOUNTNS"] = str(os.getpid())
        sys.stdout.flush()
        os.execvp("unshare", ["unshare", "--mount", "--propagation", "private", "--",
                              sys.executable, os.path.abspath(__file__)] + sys.argv[1:])
    for tool in ("systemd-nspawn", "nsenter", "systemd-sysusers", "systemd-tmpfiles", "systemctl", "ldconfig"):
        if not shutil.which(tool):
            print(f"SKIP: {tool} is not installed")
            return SKIP

    timer = Timer()
    p = subprocess.run([os.path.join(SRC, "tools", "build-rootfs")], stdout=subprocess.PIPE, text=True, timeout=600)
    if p.returncode == SKIP:
        print("SKIP: no cached root filesystem and cannot build one (tools/build-rootfs)")
        return SKIP
    work = tempfile.mkdtemp(prefix="dpsd-system-")
    root = os.path.join(work, "root")
    sim = c = None
    ok = False
    try:
        if p.returncode != 0:
            raise Failed(f"tools/build-rootfs exited {p.returncode}")
        cached = p.stdout.strip().splitlines()[-1]
        with open(os.path.join(cached, ".dpsd-rootfs-complete")) as f:
            built = dict(line.strip().split("=", 1) for line in f if "=" in line)
        log(f"root filesystem {cached} (debootstrap took {built.get('seconds', '?')} s when it was built)")
        timer.mark("rootfs")

        builddir = install_build()
        timer.mark("build")

        how = prepare_root(cached, work, root)
        log(f"container root {root}: {how}")

        certs = os.path.join(work, "certs")
        run([os.path.join(SRC, "sim", "dps-sim-certs"), certs, "--sas", REG_ID, "--device", X509_ID])
        with open(os.path.join(certs, f"{REG_ID}.sas")) as f:
            key = f.read().strip()
        sim = Sim(work, certs, key)
        port = sim.start()

        # What a package's maintainer scripts would do: install, create the
        # user and directories, refresh the linker cache, enable the unit.
        run(["meson", "install", "-C", builddir, "--destdir", root, "--no-rebuild", "--quiet"], timeout=300)
        run(["systemd-sysusers", f"--root={root}"])
        run(["systemd-tmpfiles", f"--root={root}", "--create"])
        run(["ldconfig", "-r", root])
        uid, gid = passwd_ids(root, "dpsd")
        check(os.path.isdir(os.path.join(root, "etc/dpsd")), "tmpfiles created /etc/dpsd")
        write_file(os.path.join(root, "etc/dpsd/device.key"), key + "\n", 0o600, uid, gid)
        shutil.copy(os.path.join(certs, "ca.crt"), os.path.join(root, "etc/dpsd/dps-sim-ca.crt"))
        write_file(os.path.join(root, "etc/dps.conf"), dps_conf(port), 0o644)
        # A consumer of the provisioning, set up the way dps-provisioned.target documents.
        write_file(os.path.join(root, "etc/systemd/system/iot-consumer.service"), """\
[Unit]
Description=Needs the device's IoT Hub identity
Wants=dps-provisioned.target
After=dps-provisioned.target

[Service]
Type=oneshot
RemainAfterExit=yes
EnvironmentFile=/run/dpsd/identity.env
ExecStart=/bin/sh -c 'busctl get-property org.dpsd.Provisioning1 /org/dpsd/Provisioning1 org.dpsd.Provisioning1 AssignedHub > /run/consumer-hub'
ExecStart=/bin/sh -c 'echo "$DPS_ASSIGNED_HUB $DPS_DEVICE_ID" > /run/consumer-env'

[Install]
WantedBy=multi-user.target
""")
        run(["systemctl", f"--root={root}", "enable", "dpsd.service", "iot-consumer.service"])
        timer.mark("install")

        c = Container(root, work)
        state = c.boot()
        timer.mark("boot")
        check(state == "running", f"the container booted and is {state!r}")
        # For the record (the install tests own these goals): the unit as the booted system sees it.
        p = c.sh(["systemd-analyze", "security", "--no-pager", "dpsd.service"], check_rc=False)
        score = re.search(r"Overall exposure level for dpsd.service: (.*)", p.stdout)
        log(f"info: systemd-analyze security dpsd.service: {score.group(1) if score else p.stdout.strip()[-200:]}")
        p = c.sh(["systemd-analyze", "verify", "--man=no", "dpsd.service", "dpsd-wait-provisioned.service",
                  "dps-provisioned.target"], check_rc=False)
        log(f"info: systemd-analyze verify: exit {p.returncode}, output {p.stdout.strip()!r}")
        checks(c, sim, root, key, timer)
        ok = True
    except Failed as e:
        log(f"FAIL: {e}")
    except Exception:
        log("FAIL: the test itself broke:\n" + traceback.format_exc())
    finally:
        # Clean up completely even if meson's timeout signals us again.
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        if not ok:
            diagnostics(c, sim)
        if c:
            took = c.poweroff()
            if took is not None:
                log(f"container halted in {took:.1f}s")
        if sim:
            sim.stop()
        if os.path.ismount(root):
            subprocess.run(["umount", root])
        subprocess.run(["rm", "-rf", "--one-file-system", "--", work])
        timer.mark("shutdown")
        timer.report()
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
