# SPDX-License-Identifier: MIT
# dpsdtest.py: integration harness: throw-away credentials, dps-sim and dpsd on loopback, notify socket, log checks
"""Starts the real dps-sim (port 0 + --ready-file + --events) and the real
dpsd (temp config, fake NOTIFY_SOCKET, cache and identity.env in a temp dir)
and stops both by pid, always. Loopback only; nothing else is contacted."""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

BUILD = os.environ.get("DPSD_BUILD_ROOT") or sys.exit("DPSD_BUILD_ROOT is not set (run through meson test)")
SOURCE = os.environ.get("DPSD_SOURCE_ROOT") or sys.exit("DPSD_SOURCE_ROOT is not set")
DPSD = os.path.join(BUILD, "daemon", "dpsd")
DPS_SIM = os.path.join(BUILD, "sim", "dps-sim")
CERTS = os.path.join(SOURCE, "sim", "dps-sim-certs")
SCOPE = "0ne00000A0A"


class Failure(Exception):
    pass


def check(cond, what):
    if not cond:
        raise Failure(what)


def wait_for(pred, timeout, what, step=0.05):
    """Polls pred() until it returns a true value; returns that value."""
    end = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() > end:
            raise Failure("timed out after %.1f s waiting for %s" % (timeout, what))
        time.sleep(step)


def lc(v):
    """A Python value as libconfig text."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(v, list):
        return "[ " + ", ".join(lc(x) for x in v) + " ]"
    if isinstance(v, tuple):
        return "( " + ", ".join(lc(x) for x in v) + " )"
    if isinstance(v, dict):
        return "{ " + " ".join("%s = %s;" % (k, lc(x)) for k, x in v.items()) + " }"
    raise TypeError(v)


def lc_file(d):
    return "".join("%s = %s;\n" % (k, lc(v)) for k, v in d.items())


BUS_CONF = """<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-BUS Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <listen>unix:path=%s</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <allow own="*"/>
    <allow send_destination="*"/>
    <allow receive_sender="*"/>
  </policy>
</busconfig>
"""


class PrivateBus:
    """A private dbus-daemon (system type, permissive policy) on a Unix
    socket in the test's directory, stopped by its pid."""

    def __init__(self, world):
        self.path = world.path("bus")
        conf = world.write("bus.xml", BUS_CONF % self.path)
        self.address = "unix:path=" + self.path
        self.log = open(world.path("dbus-daemon.log"), "wb")
        self.proc = subprocess.Popen(["dbus-daemon", "--config-file=" + conf, "--nofork", "--nopidfile"],
                                     stdin=subprocess.DEVNULL, stdout=self.log, stderr=self.log)
        world.procs.append(self.proc)
        wait_for(lambda: os.path.exists(self.path), 5, "the private bus socket")

    def get(self, prop):
        r = subprocess.run(["busctl", "--address=" + self.address, "--json=short", "get-property",
                            "org.dpsd.Provisioning1", "/org/dpsd/Provisioning1", "org.dpsd.Provisioning1", prop],
                           capture_output=True, text=True, timeout=10)
        check(r.returncode == 0, "busctl get-property %s: %s" % (prop, r.stderr.strip()))
        return json.loads(r.stdout)["data"]

    def call(self, method, signature="", *args):
        """Calls a method of org.dpsd.Provisioning1; returns busctl's CompletedProcess."""
        return subprocess.run(["busctl", "--address=" + self.address, "call", "org.dpsd.Provisioning1",
                               "/org/dpsd/Provisioning1", "org.dpsd.Provisioning1", method]
                              + ([signature] + [str(a) for a in args] if signature else []),
                              capture_output=True, text=True, timeout=10)



class Sim:
    def __init__(self, world, name, defaults, enrollments, args, cert="server.crt", key="server.key",
                 websocket=False):
        self.world = world
        self.dir = world.dir
        self.conf = os.path.join(self.dir, name + ".conf")
        self.ready = os.path.join(self.dir, name + ".ready")
        self.events_path = os.path.join(self.dir, name + ".events")
        self.log_path = os.path.join(self.dir, name + ".log")
        conf = {
            "id-scope": SCOPE,
            "tls": {"certificate": cert, "key": key},
            "listen": {"mqtt": "127.0.0.1:0", **({"websocket": "127.0.0.1:0"} if websocket else {})},
            "throttle": {"registrations-per-minute": 0, "operations-per-minute": 0, "polls-per-10s": 0},
            "defaults": defaults,
            "enrollments": tuple(enrollments),
        }
        with open(self.conf, "w") as f:
            f.write(lc_file(conf))
        self.log = open(self.log_path, "wb")
        self.proc = subprocess.Popen([DPS_SIM, "--config", self.conf, "--ready-file", self.ready,
                                      "--events", self.events_path] + list(args),
                                     stdin=subprocess.DEVNULL, stdout=self.log, stderr=self.log)
        world.procs.append(self.proc)
        info = wait_for(self._ready, 10, "dps-sim's ready file")
        self.port = info["mqtt"]
        self.ws_port = info["ws"]
        if websocket:
            check(isinstance(self.ws_port, int) and self.ws_port > 0, "no WebSocket port in %r" % info)

    def _ready(self):
        if self.proc.poll() is not None:
            raise Failure("dps-sim exited with %s: %s" % (self.proc.returncode, open(self.log_path).read()))
        try:
            with open(self.ready) as f:
                return json.load(f)
        except (FileNotFoundError, ValueError):
            return None

    def events(self, kind=None):
        out = []
        try:
            with open(self.events_path) as f:
                for line in f:
                    if line.endswith("\n"):
                        e = json.loads(line)
                        if kind is None or e["event"] == kind:
                            out.append(e)
        except FileNotFoundError:
            pass
        return out

    def stop(self):
        stop_proc(self.proc)


def stop_proc(proc, sig=signal.SIGTERM, timeout=5):
    if proc.poll() is None:
        try:
            os.kill(proc.pid, sig)
        except ProcessLookupError:
            pass
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
    return proc.returncode


class Relay:
    """A loopback TCP relay that holds every chunk for `delay` seconds in
    each direction: a slow network in front of dps-sim."""

    def __init__(self, world, target_port, delay):
        self.target = target_port
        self.delay = delay
        self.lsock = socket.socket()
        self.lsock.bind(("127.0.0.1", 0))
        self.lsock.listen(8)
        self.lsock.settimeout(0.2)
        self.port = self.lsock.getsockname()[1]
        self.running = True
        self.threads = [threading.Thread(target=self._accept, daemon=True)]
        self.threads[0].start()
        world.relays.append(self)

    def _accept(self):
        while self.running:
            try:
                c, _ = self.lsock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            u = socket.create_connection(("127.0.0.1", self.target))
            for a, b in ((c, u), (u, c)):
                t = threading.Thread(target=self._pump, args=(a, b), daemon=True)
                t.start()
                self.threads.append(t)

    def _pump(self, src, dst):
        src.settimeout(0.2)
        while self.running:
            try:
                data = src.recv(65536)
            except socket.timeout:
                continue
            except OSError:
                break
            if not data:
                break
            time.sleep(self.delay)
            try:
                dst.sendall(data)
            except OSError:
                break
        for x in (src, dst):
            try:
                x.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def close(self):
        self.running = False
        self.lsock.close()


class Notify:
    """A fake NOTIFY_SOCKET: records every sd_notify() datagram."""

    def __init__(self, path):
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(path)
        self.sock.settimeout(0.2)
        self.messages = []
        self.lock = threading.Lock()
        self.running = True
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while self.running:
            try:
                data = self.sock.recv(65536)
            except socket.timeout:
                continue
            except OSError:
                return
            with self.lock:
                for line in data.decode(errors="replace").split("\n"):
                    if line:
                        self.messages.append((time.monotonic(), line))

    def lines(self, prefix=None):
        with self.lock:
            return [m for _, m in self.messages if prefix is None or m.startswith(prefix)]

    def statuses(self):
        return [m[len("STATUS="):] for m in self.lines("STATUS=")]

    def close(self):
        if not self.running:
            return
        # let the reader drain what the (now stopped) sender queued
        time.sleep(0.3)
        self.running = False
        self.thread.join(2)
        self.sock.close()


class Dpsd:
    def __init__(self, world, name, conf, env=None, args=None, watchdog_usec=None, wrap=None):
        self.world = world
        self.name = name
        self.conf_path = os.path.join(world.dir, name + ".conf")
        self.log_path = os.path.join(world.dir, "%s.%d.log" % (name, len(world.dpsds)))
        self.write_conf(conf)
        self.notify = Notify(os.path.join(world.dir, "%s.%d.notify" % (name, len(world.dpsds))))
        e = dict(os.environ)
        for k in ("STATE_DIRECTORY", "RUNTIME_DIRECTORY", "CREDENTIALS_DIRECTORY", "JOURNAL_STREAM",
                  "WATCHDOG_USEC", "WATCHDOG_PID"):
            e.pop(k, None)
        e.update({
            "NOTIFY_SOCKET": self.notify.path,
            # no system bus in these tests: dpsd must run without one
            "DBUS_SYSTEM_BUS_ADDRESS": "unix:path=" + os.path.join(world.dir, "no-bus"),
            "DPSD_LOG_LEVEL": "debug",
        })
        if env:
            e.update(env)
        cmd = [DPSD, "--config", self.conf_path] + (args or [])
        if watchdog_usec:
            # sd_watchdog_enabled() wants WATCHDOG_PID to be dpsd's own pid
            e["WATCHDOG_USEC"] = str(watchdog_usec)
            cmd = ["/bin/sh", "-c", 'WATCHDOG_PID=$$ exec "$@"', "sh"] + cmd
        if wrap:
            # a command that sets the scene, then execs "$@" (dpsd keeps the pid)
            cmd = list(wrap) + cmd
        self.log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(cmd, env=e, stdin=subprocess.DEVNULL, stdout=self.log, stderr=self.log)
        world.procs.append(self.proc)
        world.dpsds.append(self)

    def write_conf(self, conf):
        if isinstance(conf, dict):
            self.world.note_identity(conf)
        # 0600 as on a device: a proxy password makes dps.conf a secret
        fd = os.open(self.conf_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(conf if isinstance(conf, str) else lc_file(conf))

    def output(self):
        with open(self.log_path, errors="replace") as f:
            return f.read()

    def alive(self):
        return self.proc.poll() is None

    def wait_status(self, fragment, timeout=15):
        def pred():
            if not self.alive():
                raise Failure("dpsd exited with %s while waiting for STATUS ~ %r:\n%s"
                              % (self.proc.returncode, fragment, self.output()))
            return [s for s in self.notify.statuses() if fragment in s]
        return wait_for(pred, timeout, "STATUS containing %r (have %r)" % (fragment, self.notify.statuses()[-3:]))[-1]

    def wait_provisioned(self, timeout=15):
        return self.wait_status("Provisioned to hub", timeout)

    def signal(self, sig):
        os.kill(self.proc.pid, sig)

    def stop(self):
        rc = stop_proc(self.proc)
        self.notify.close()
        return rc


class World:
    """One test's temp dir, credentials and processes. Use as a context
    manager: every process started is stopped by pid, even on failure, and
    every log is checked for secrets."""

    def __init__(self, devices=("dev-x509",), sas=("dev-sas",), groups=("grp",)):
        self.dir = tempfile.mkdtemp(prefix="dpsd-it-")
        self.procs = []
        self.relays = []
        self.dpsds = []
        self.sims = []
        args = [CERTS, self.dir]
        for d in devices:
            args += ["--device", d]
        for s in sas:
            args += ["--sas", s]
        for g in groups:
            args += ["--group-sas", g]
        subprocess.run(args, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.secrets = []
        self.identities = set()     # (key file, registration id, group?) used by a dpsd
        self.start = time.time()
        for s in sas:
            self.secrets.append(self.read(s + ".sas"))
        for g in groups:
            self.secrets.append(self.read(g + ".group-sas"))

    def path(self, name):
        return os.path.join(self.dir, name)

    def read(self, name):
        with open(self.path(name)) as f:
            return f.read().strip()

    def write(self, name, text, mode=0o644):
        p = self.path(name)
        if os.path.exists(p):
            os.unlink(p)
        fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
        with os.fdopen(fd, "w") as f:
            f.write(text)
        return p

    def sim(self, enrollments, defaults=None, args=(), name="sim", **kw):
        """dps-sim on 127.0.0.1; websocket=True opens its WebSocket listener too."""
        s = Sim(self, name + str(len(self.sims)), defaults or {"assigning-polls": 1, "retry-after": 1},
                enrollments, args, **kw)
        self.sims.append(s)
        return s

    def sas_enrollment(self, regid="dev-sas", key=None, **extra):
        e = {"registration-id": regid, "attestation": "symmetric-key",
             "primary-key": key or self.read(regid + ".sas"), "hubs": ["hub-a.azure-devices.net"]}
        e.update(extra)
        return e

    def dpsd_conf(self, sim, regid="dev-sas", key_file=None, **extra):
        c = {
            "endpoint": "127.0.0.1",
            "port": sim.port if sim else 1,
            "id-scope": SCOPE,
            "registration-id": regid,
            "attestation": {"type": "symmetric-key", "key-file": key_file or (regid + ".sas")},
            "ca-file": "ca.crt",
            "retry": {"min-sec": 1, "max-sec": 4},
            "timeouts": {"connect-sec": 5, "response-sec": 5, "total-sec": 60},
            "cache-path": "state/cache.json",
            "identity-env-path": "run/identity.env",
        }
        c.update(extra)
        return c

    def relay(self, port, delay):
        return Relay(self, port, delay)

    def dpsd(self, conf, name="dpsd", **kw):
        return Dpsd(self, name, conf, **kw)

    def all_logs(self):
        out = []
        for name in sorted(os.listdir(self.dir)):
            if name.endswith((".log", ".events")) or name.startswith(("state", "run")):
                p = self.path(name)
                if os.path.isdir(p):
                    for n in os.listdir(p):
                        out.append(os.path.join(p, n))
                else:
                    out.append(p)
        return out

    def check_sanitizers(self):
        """Under -Db_sanitize=address,undefined every report fails the test."""
        for d in self.dpsds:
            out = d.output()
            for marker in ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:"):
                check(marker not in out, "%s in %s" % (marker, d.log_path))

    def note_identity(self, conf):
        a = conf.get("attestation", {})
        regid = conf.get("registration-id")
        if a.get("type") == "symmetric-key" and regid:
            f = a.get("group-key-file") or a.get("key-file")
            if f and not f.startswith("credential:"):
                self.identities.add((f, regid, "group-key-file" in a))

    def signatures(self):
        """Every SAS signature dpsd can have made during the run: the token
        expires about an hour after signing, at a whole second."""
        import base64
        import hashlib
        import hmac
        import urllib.parse
        out = []
        for f, regid, group in self.identities:
            try:
                key = base64.b64decode(self.read(f))
            except (OSError, ValueError):
                continue
            if group:
                key = base64.b64encode(hmac.new(key, regid.encode(), hashlib.sha256).digest())
                self.secrets.append(key.decode())
                key = base64.b64decode(key)
            sr = urllib.parse.quote(SCOPE + "/registrations/" + regid, safe="-_.~")
            for se in range(int(self.start) + 3600 - 2, int(time.time()) + 3600 + 2):
                sig = base64.b64encode(hmac.new(key, ("%s\n%d" % (sr, se)).encode(), hashlib.sha256).digest()).decode()
                out += [sig, urllib.parse.quote(sig, safe="")]
        return out

    def check_no_secrets(self):
        """Keys, derived keys, tokens and signatures never appear in any log,
        event log, cache or identity file of the run."""
        sigs = self.signatures()
        check(not self.identities or sigs, "no signature to look for")
        for p in self.all_logs():
            with open(p, errors="replace") as f:
                text = f.read()
            for s in self.secrets:
                check(s not in text, "a key appears in %s" % p)
            for s in sigs:
                check(s not in text, "a SAS signature appears in %s" % p)
            for marker in ("SharedAccessSignature", "sig=", "&se=", "skn=registration"):
                check(marker not in text, "%r (a SAS token) appears in %s" % (marker, p))
        for d in self.dpsds:
            for m in d.notify.lines():
                for s in self.secrets:
                    check(s not in m, "a key appears in a notify message")
                check("SharedAccessSignature" not in m and "sig=" not in m, "a token appears in a notify message")

    def __enter__(self):
        return self

    def __exit__(self, et, ev, tb):
        for p in reversed(self.procs):
            stop_proc(p)
        for r in self.relays:
            r.close()
        for d in self.dpsds:
            d.notify.close()
        secret_failure = None
        if et is None:
            try:
                self.check_sanitizers()
                self.check_no_secrets()
            except Failure as e:
                secret_failure = e
        if et is not None or secret_failure:
            print("---- logs of %s ----" % self.dir, file=sys.stderr)
            for p in self.all_logs():
                if p.endswith(".log"):
                    with open(p, errors="replace") as f:
                        print("== %s\n%s" % (p, f.read()[-6000:]), file=sys.stderr)
        shutil.rmtree(self.dir, ignore_errors=True)
        if secret_failure:
            raise secret_failure
        return False


def main(tests):
    """Runs the named test functions; exit 1 if any failed."""
    only = sys.argv[1:]
    failed = 0
    for t in tests:
        if only and t.__name__ not in only:
            continue
        start = time.monotonic()
        try:
            t()
            print("ok   %s (%.1f s)" % (t.__name__, time.monotonic() - start))
        except Exception as e:  # noqa: BLE001 - report every failure
            failed += 1
            import traceback
            traceback.print_exc()
            print("FAIL %s: %s" % (t.__name__, e))
        sys.stdout.flush()
    sys.exit(1 if failed else 0)
