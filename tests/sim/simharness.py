# SPDX-License-Identifier: MIT
"""simharness: start dps-sim on loopback for a test, wait for its ready file, stop it by pid.

    with Sim(enrollments=[sas_enrollment("dev-1", key)], sets=["assigning-polls=2"]) as sim:
        c = sim.sas_client("dev-1", key)
        ...
        events = sim.events()

Ports are picked by dps-sim (port 0) and read from --ready-file: no races.
Certificates come from sim/dps-sim-certs into a private temporary directory.
"""

import base64
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from mqttlite import MqttClient, dps_username, sas_token  # noqa: E402

BUILD_ROOT = os.environ.get("DPSD_BUILD_ROOT", os.path.join(os.path.dirname(__file__), "../../build"))
SOURCE_ROOT = os.environ.get("DPSD_SOURCE_ROOT", os.path.join(os.path.dirname(__file__), "../.."))
DPS_SIM = os.path.join(BUILD_ROOT, "sim", "dps-sim")
CERTS = os.path.join(SOURCE_ROOT, "sim", "dps-sim-certs")
SCOPE = "0ne00000A0A"


def random_key(n=32):
    return base64.b64encode(os.urandom(n)).decode()


def sas_enrollment(regid, primary, secondary=None, hubs=("hub-a.azure-devices.net",), extra=""):
    s = f'{{ registration-id = "{regid}"; attestation = "symmetric-key"; primary-key = "{primary}"; '
    if secondary:
        s += f'secondary-key = "{secondary}"; '
    s += "hubs = [ " + ", ".join(f'"{h}"' for h in hubs) + " ]; " + extra + " }"
    return s


def group_sas_enrollment(name, key, hubs=("hub-a.azure-devices.net",), extra=""):
    return (f'{{ group = "{name}"; attestation = "symmetric-key"; primary-key = "{key}"; hubs = [ '
            + ", ".join(f'"{h}"' for h in hubs) + " ]; " + extra + " }")


def x509_enrollment(regid, certfile, hubs=("hub-a.azure-devices.net",), extra=""):
    return (f'{{ registration-id = "{regid}"; attestation = "x509"; certificate = "{certfile}"; hubs = [ '
            + ", ".join(f'"{h}"' for h in hubs) + " ]; " + extra + " }")


def x509_group_enrollment(name, cafile, hubs=("hub-a.azure-devices.net",), extra=""):
    return (f'{{ group = "{name}"; attestation = "x509"; ca = "{cafile}"; hubs = [ '
            + ", ".join(f'"{h}"' for h in hubs) + " ]; " + extra + " }")


class Sim:
    def __init__(self, enrollments=(), sets=(), devices=(), defaults="", throttle=None, websocket=False,
                 state_file=None, workdir=None, seed=None, extra_config=""):
        self.own_dir = workdir is None
        self.dir = workdir or tempfile.mkdtemp(prefix="dps-sim-test-")
        self.enrollments = list(enrollments)
        self.sets = list(sets)
        self.defaults = defaults
        self.throttle = throttle
        self.websocket = websocket
        self.state_file = state_file
        self.seed = seed
        self.extra_config = extra_config
        self.proc = None
        self.pid = None
        self.mqtt_port = self.ws_port = None
        args = [CERTS, self.dir]
        for d in devices:
            args += ["--device", d]
        subprocess.run(args, check=True, stdout=subprocess.DEVNULL)
        self.cafile = os.path.join(self.dir, "ca.crt")
        self.events_file = os.path.join(self.dir, "events.jsonl")

    def write_config(self):
        listen = 'mqtt = "127.0.0.1:0";' + (' websocket = "127.0.0.1:0";' if self.websocket else "")
        cfg = [f'id-scope = "{SCOPE}";',
               'tls = { certificate = "server.crt"; key = "server.key"; };',
               f"listen = {{ {listen} }};"]
        if self.state_file:
            cfg.append(f'state-file = "{self.state_file}";')
        if self.throttle is not None:
            cfg.append(f"throttle = {{ {self.throttle} }};")
        if self.defaults:
            cfg.append(f"defaults = {{ {self.defaults} }};")
        cfg.append(self.extra_config)
        cfg.append("enrollments = (\n  " + ",\n  ".join(self.enrollments) + "\n);")
        path = os.path.join(self.dir, "sim.conf")
        with open(path, "w") as f:
            f.write("\n".join(cfg) + "\n")
        return path

    def start(self, timeout=10.0):
        config = self.write_config()
        ready = os.path.join(self.dir, "ready.json")
        if os.path.exists(ready):
            os.unlink(ready)
        cmd = [DPS_SIM, "--config", config, "--events", self.events_file, "--ready-file", ready]
        for s in self.sets:
            cmd += ["--set", s]
        if self.seed is not None:
            cmd += ["--seed", str(self.seed)]
        self.stderr = open(os.path.join(self.dir, "stderr.log"), "ab")
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=self.stderr)
        self.pid = self.proc.pid
        deadline = time.monotonic() + timeout
        while not os.path.exists(ready):
            if self.proc.poll() is not None:
                raise RuntimeError(f"dps-sim exited with {self.proc.returncode}: {self.log()}")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("dps-sim did not write its ready file")
            time.sleep(0.02)
        with open(ready) as f:
            info = json.load(f)
        assert info["pid"] == self.pid, info
        self.mqtt_port, self.ws_port = info["mqtt"], info["ws"]
        return self

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def stop(self):
        """Stops dps-sim by its pid; returns its exit code."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            os.kill(self.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.kill(self.pid, signal.SIGKILL)
                self.proc.wait()
        rc = self.proc.returncode
        self.proc = None
        self.stderr.close()
        return rc

    def log(self):
        try:
            with open(os.path.join(self.dir, "stderr.log"), errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def events(self, name=None):
        out = []
        try:
            with open(self.events_file) as f:
                for line in f:
                    e = json.loads(line)
                    if name is None or e["event"] == name:
                        out.append(e)
        except FileNotFoundError:
            pass
        return out

    def client(self, **kw):
        return MqttClient.tls("127.0.0.1", self.mqtt_port, cafile=self.cafile, **kw)

    def sas_client(self, regid, key, subscribe=True, token=None, **kw):
        c = self.client()
        rc = c.connect(regid, username=dps_username(SCOPE, regid, **kw),
                       password=token if token is not None else sas_token(SCOPE, regid, key))
        assert rc == 0, f"CONNACK {rc}"
        if subscribe:
            assert c.subscribe("$dps/registrations/res/#") == 1
        return c

    def x509_client(self, regid, certfile=None, keyfile=None, subscribe=True):
        certfile = certfile or os.path.join(self.dir, f"{regid}-chain.crt")
        keyfile = keyfile or os.path.join(self.dir, f"{regid}.key")
        c = self.client(certfile=certfile, keyfile=keyfile)
        rc = c.connect(regid, username=dps_username(SCOPE, regid))
        assert rc == 0, f"CONNACK {rc}"
        if subscribe:
            assert c.subscribe("$dps/registrations/res/#") == 1
        return c

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        rc = self.stop()
        if exc[0] is None and rc not in (None, 0):
            # SIGTERM must end dps-sim cleanly; under ASan a leak or error also lands here.
            sys.stderr.write(f"--- dps-sim stderr ---\n{self.log()}\n")
            raise AssertionError(f"dps-sim exited with {rc} after SIGTERM (work dir {self.dir})")
        if self.own_dir and exc[0] is None:
            shutil.rmtree(self.dir, ignore_errors=True)
        elif exc[0] is not None:
            sys.stderr.write(f"dps-sim work dir kept: {self.dir}\n--- dps-sim stderr ---\n{self.log()}\n")
        return False


def run_tests(namespace):
    """Runs every test_* function of a module in order; exit 1 if one fails."""
    import traceback
    tests = [(n, f) for n, f in namespace.items() if n.startswith("test_") and callable(f)]
    only = os.environ.get("SIM_TEST_ONLY")
    failed = ran = 0
    for name, fn in tests:
        if only and only not in name:
            continue
        ran += 1
        t0 = time.monotonic()
        try:
            fn()
            print(f"ok   {name} ({time.monotonic() - t0:.2f}s)", flush=True)
        except Exception:
            failed += 1
            print(f"FAIL {name}", flush=True)
            traceback.print_exc()
    print(f"{ran - failed} passed, {failed} failed")
    sys.exit(1 if failed else 0)
