# SPDX-License-Identifier: MIT
# robust.py: shared helpers of the robustness suite: the integration harness, a private bus, a tmpfs, cache checks
"""Reuses tests/integration/dpsdtest.py (throw-away credentials, dps-sim and
dpsd on loopback, everything stopped by pid) and adds what the robustness
tests need: a permissive private bus to read dpsd's properties, a small
tmpfs (root) that is always unmounted, and the cache's validity check."""

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "integration"))
from dpsdtest import (BUILD, DPSD, DPS_SIM, SCOPE, SOURCE, Failure, World, check,  # noqa: E402,F401
                      lc_file, main, stop_proc, wait_for)

DPSCTL = os.path.join(BUILD, "daemon", "dpsctl")
BUS_NAME = "org.dpsd.Provisioning1"
BUS_PATH = "/org/dpsd/Provisioning1"

SKIP = 77

BUS_CONF = """<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <listen>unix:path={socket}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <allow own="*"/>
    <allow send_type="method_call"/>
    <allow send_destination="*"/>
    <allow receive_type="*"/>
  </policy>
</busconfig>
"""


class Bus:
    """A private, permissive system-like bus; stopped by pid."""

    def __init__(self, world):
        self.socket = world.path("bus.socket")
        conf = world.path("bus.conf")
        with open(conf, "w") as f:
            f.write(BUS_CONF.format(socket=self.socket))
        self.proc = subprocess.Popen(["dbus-daemon", "--config-file", conf, "--nofork", "--nopidfile"],
                                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        world.procs.append(self.proc)
        wait_for(lambda: os.path.exists(self.socket), 5, "the private bus socket")
        self.address = "unix:path=" + self.socket
        self.env = {"DBUS_SYSTEM_BUS_ADDRESS": self.address}

    def busctl(self, *args, timeout=10):
        return subprocess.run(["busctl", "--system", "--json=short"] + list(args), capture_output=True, text=True,
                              env=dict(os.environ, **self.env), timeout=timeout)

    def prop(self, name):
        r = self.busctl("get-property", BUS_NAME, BUS_PATH, BUS_NAME, name)
        if r.returncode != 0:
            return None
        return json.loads(r.stdout)["data"]

    def all_props(self):
        r = self.busctl("call", BUS_NAME, BUS_PATH, "org.freedesktop.DBus.Properties", "GetAll", "s", BUS_NAME)
        check(r.returncode == 0, "GetAll failed: %s" % r.stderr)
        return {k: v["data"] for k, v in json.loads(r.stdout)["data"][0].items()}


class Tmpfs:
    """A small tmpfs at path (root only); unmounted on exit, whatever happened."""

    def __init__(self, path, size="64k"):
        self.path = path
        os.makedirs(path, exist_ok=True)
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=%s,mode=0755" % size, "tmpfs", path], check=True)

    def remount(self, opts):
        subprocess.run(["mount", "-o", "remount," + opts, self.path], check=True)

    def fill(self):
        """Fills the file system; returns the filler's path."""
        p = os.path.join(self.path, "filler")
        fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            while True:
                os.write(fd, b"\0" * 4096)
        except OSError:
            pass
        finally:
            os.close(fd)
        return p

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        subprocess.run(["umount", "-l", self.path], check=False)
        return False


def is_root():
    return os.geteuid() == 0


FINGERPRINT = re.compile(r"^[0-9a-f]{64}$")


def cache_problem(text):
    """None when text is a complete, valid dpsd cache; else what is wrong."""
    if not text:
        return "empty"
    if not text.endswith("\n"):
        return "no final newline (truncated?)"
    try:
        c = json.loads(text)
    except ValueError as e:
        return "not JSON: %s" % e
    if not isinstance(c, dict) or c.get("version") != 1:
        return "not a version-1 object"
    if not FINGERPRINT.match(str(c.get("fingerprint", ""))):
        return "no fingerprint"
    for k in ("registrationId", "provisionedUsec", "attempts", "nextAttemptUsec"):
        if k not in c:
            return "no %s" % k
    if "assignedHub" in c and "deviceId" not in c:
        return "a hub without a device id"
    return None


def tmp_dir(prefix):
    return tempfile.mkdtemp(prefix=prefix)


TINYPROXY = shutil.which("tinyproxy") or "/usr/sbin/tinyproxy"
PROXY_USER = "dev-proxy"
PROXY_PASSWORD = "pr0xy-S3cret.9_z"   # tinyproxy takes only [-a-z0-9._] in BasicAuth


class Tinyproxy:
    """tinyproxy on 127.0.0.1 (port chosen free, retried if taken) with
    BasicAuth, CONNECT allowed to the given ports; stopped with the world."""

    def __init__(self, world, connect_ports):
        check(os.access(TINYPROXY, os.X_OK), "tinyproxy is not installed (Debian: tinyproxy-bin)")
        self.conf = world.path("tinyproxy.conf")
        self.log_path = world.path("tinyproxy.log")
        for _ in range(5):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
            s.close()
            with open(self.conf, "w") as f:
                f.write("\n".join(["Port %d" % self.port, "Listen 127.0.0.1", "Timeout 30", "MaxClients 20",
                                   "Allow 127.0.0.1", "LogLevel Connect", "DisableViaHeader Yes",
                                   "BasicAuth %s %s" % (PROXY_USER, PROXY_PASSWORD)]
                                  + ["ConnectPort %d" % p for p in connect_ports]) + "\n")
            self.proc = subprocess.Popen([TINYPROXY, "-d", "-c", self.conf], stdin=subprocess.DEVNULL,
                                         stdout=open(self.log_path, "ab"), stderr=subprocess.STDOUT)
            world.procs.append(self.proc)
            end = time.monotonic() + 5
            while time.monotonic() < end and self.proc.poll() is None:
                try:
                    socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                    return
                except OSError:
                    time.sleep(0.05)
            stop_proc(self.proc)
        raise Failure("tinyproxy did not start")

    def url(self):
        return "http://%s:%s@127.0.0.1:%d" % (PROXY_USER, PROXY_PASSWORD, self.port)

    def connects(self):
        with open(self.log_path, errors="replace") as f:
            return [l for l in f.read().splitlines() if "CONNECT " in l and "Request" in l]
