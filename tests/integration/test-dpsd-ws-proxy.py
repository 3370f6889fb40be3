#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
# test-dpsd-ws-proxy.py: dpsd over MQTT-over-WebSocket and through a real HTTP proxy (tinyproxy) against dps-sim
"""dpsd provisions over transport "mqtt-ws" against dps-sim's WebSocket
listener (SAS and X.509), through tinyproxy with CONNECT for both transports
(from the config and from https_proxy, honouring no_proxy), and reports a
refusing proxy clearly. The proxy password is registered as a secret, so the
harness fails the test if it shows up in any log, event log or cache.

tinyproxy (Debian tinyproxy-bin) runs in the foreground with its own config
on 127.0.0.1 and a port found free at run time, and is stopped by its pid."""

import json
import os
import shutil
import socket
import subprocess
import time

import dpsdtest
from dpsdtest import World, check, main, wait_for

TINYPROXY = shutil.which("tinyproxy") or "/usr/bin/tinyproxy"
PROXY_USER = "dev-proxy"
PROXY_PASSWORD = "pr0xy-S3cret.9_z"   # tinyproxy takes only [-a-z0-9._] in BasicAuth


def url_password():
    return PROXY_PASSWORD.replace("%", "%25").replace(":", "%3A").replace("@", "%40")


def free_port():
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class Tinyproxy:
    """tinyproxy on 127.0.0.1 with BasicAuth; CONNECT allowed to the given
    ports only (anything else gets 403)."""

    def __init__(self, world, connect_ports, name="tinyproxy"):
        self.world = world
        self.conf = world.path(name + ".conf")
        self.log_path = world.path(name + ".log")
        if not os.access(TINYPROXY, os.X_OK):
            raise dpsdtest.Failure("tinyproxy is not installed (Debian: apt-get install tinyproxy-bin)")
        # a port found free now may be taken by the time tinyproxy binds it: retry
        for _ in range(5):
            self.port = free_port()
            lines = [
                "Port %d" % self.port,
                "Listen 127.0.0.1",
                "Timeout 30",
                "MaxClients 20",
                "Allow 127.0.0.1",
                "LogLevel Connect",
                "DisableViaHeader Yes",
                "BasicAuth %s %s" % (PROXY_USER, PROXY_PASSWORD),
            ] + ["ConnectPort %d" % p for p in connect_ports]
            with open(self.conf, "w") as f:
                f.write("\n".join(lines) + "\n")
            self.log = open(self.log_path, "ab")
            self.proc = subprocess.Popen([TINYPROXY, "-d", "-c", self.conf], stdin=subprocess.DEVNULL,
                                         stdout=self.log, stderr=self.log)
            world.procs.append(self.proc)
            if self._wait_listening():
                return
            dpsdtest.stop_proc(self.proc)
        raise dpsdtest.Failure("tinyproxy did not start:\n" + self.output())

    def _wait_listening(self):
        end = time.monotonic() + 5
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                return False
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return True
            except OSError:
                time.sleep(0.05)
        return False

    def url(self, user=PROXY_USER, password=None):
        return "http://%s:%s@127.0.0.1:%d" % (user, url_password() if password is None else password, self.port)

    def output(self):
        with open(self.log_path, errors="replace") as f:
            return f.read()

    def connects(self):
        """The CONNECT request lines tinyproxy logged."""
        return [l for l in self.output().splitlines() if "CONNECT " in l and "Request" in l]


def world():
    w = World()
    w.secrets.append(PROXY_PASSWORD)
    w.secrets.append(url_password())
    return w


def x509_enrollment():
    return {"registration-id": "dev-x509", "attestation": "x509", "certificate": "dev-x509.crt",
            "hubs": ["hub-x.azure-devices.net"]}


def x509_conf(w, sim, **extra):
    conf = w.dpsd_conf(sim, **extra)
    conf["registration-id"] = "dev-x509"
    conf["attestation"] = {"type": "x509", "certificate-file": "dev-x509-chain.crt", "key-file": "dev-x509.key"}
    return conf


def stop_clean(d):
    """dpsd exits 0 on SIGTERM, and (in the sanitizer run of CI) its log has
    no sanitizer report: the tunnel's error paths free what they own."""
    rc = d.stop()
    out = d.output()
    check("Sanitizer" not in out and "runtime error:" not in out, "sanitizer report in dpsd's log:\n" + out)
    check(rc == 0, "dpsd exited with %s on SIGTERM" % rc)


def check_connects_over(sim, listener, n=1):
    accepts = sim.events("accept")
    check(len(accepts) >= n and all(a["listener"] == listener for a in accepts),
          "expected %d connection(s) on the %s listener, dps-sim saw %r" % (n, listener, accepts))


# ---- MQTT over WebSocket ----------------------------------------------------------

def test_ws_sas():
    with world() as w:
        sim = w.sim([w.sas_enrollment()], name="ws-sas", websocket=True)
        d = w.dpsd(w.dpsd_conf(sim, transport="mqtt-ws", port=sim.ws_port))
        status = d.wait_provisioned()
        check(status == "Provisioned to hub hub-a.azure-devices.net as dev-sas", status)
        check_connects_over(sim, "websocket")
        conn = sim.events("connect")
        check(len(conn) == 1 and conn[0]["auth"] == "sas" and conn[0]["clientId"] == "dev-sas", conn)
        check(len(sim.events("register")) == 1, sim.events("register"))
        check(json.loads(w.read("state/cache.json"))["assignedHub"] == "hub-a.azure-devices.net", "cache")
        # provisioned: dpsd said goodbye ("4. DISCONNECT") through the tunnel
        # before closing it, and exits cleanly
        closes = wait_for(lambda: sim.events("close"), 5, "dpsd to close the WebSocket connection")
        check(closes[0]["reason"] == "disconnect", closes)
        stop_clean(d)


def test_ws_x509():
    with world() as w:
        sim = w.sim([x509_enrollment()], name="ws-x509", websocket=True)
        # a name, not an address: the tunnel's asynchronous lookup, SNI and
        # the certificate's DNS:localhost; ::1 (if listed first) is refused,
        # and the next address is tried
        d = w.dpsd(x509_conf(w, sim, transport="mqtt-ws", port=sim.ws_port, endpoint="localhost"))
        status = d.wait_provisioned()
        check(status == "Provisioned to hub hub-x.azure-devices.net as dev-x509", status)
        check_connects_over(sim, "websocket")
        conn = sim.events("connect")[0]
        check(conn["auth"] == "x509" and conn["clientId"] == "dev-x509", conn)
        stop_clean(d)


def test_ws_wrong_port_is_reported():
    """mqtt-ws pointed at the plain MQTT listener: the WebSocket handshake
    fails and the reason reaches the status line."""
    with world() as w:
        sim = w.sim([w.sas_enrollment()], name="ws-wrong", websocket=True)
        d = w.dpsd(w.dpsd_conf(sim, transport="mqtt-ws", port=sim.port))
        st = d.wait_status("WebSocket server 127.0.0.1:%d closed the connection" % sim.port, timeout=15)
        check("Waiting" in st, st)
        check(not sim.events("register"), "a register went through the wrong listener")
        stop_clean(d)


def test_ws_server_drops():
    """The service drops the WebSocket after the register (no close frame):
    dpsd reports the lost connection, retries over a fresh tunnel, and the
    torn-down tunnels leak nothing (checked by the sanitizer run)."""
    with world() as w:
        sim = w.sim([w.sas_enrollment()], name="ws-drop", websocket=True, args=["--set", "drop=after-register"])
        d = w.dpsd(w.dpsd_conf(sim, transport="mqtt-ws", port=sim.ws_port))
        st = d.wait_status("Waiting", timeout=15)
        check("127.0.0.1:%d" % sim.ws_port in st, st)
        wait_for(lambda: len(sim.events("register")) >= 2, 15, "a second attempt over a new WebSocket")
        check(all(a["listener"] == "websocket" for a in sim.events("accept")), sim.events("accept"))
        check(not any("Provisioned" in x for x in d.notify.statuses()), d.notify.statuses())
        stop_clean(d)


# ---- through an HTTP proxy -----------------------------------------------------------

def test_proxy_mqtt():
    with world() as w:
        sim = w.sim([w.sas_enrollment()], name="px-mqtt", websocket=True)
        px = Tinyproxy(w, [sim.port, sim.ws_port])
        d = w.dpsd(w.dpsd_conf(sim, proxy=px.url()))
        status = d.wait_provisioned()
        check(status == "Provisioned to hub hub-a.azure-devices.net as dev-sas", status)
        check_connects_over(sim, "mqtt")
        cs = px.connects()
        check(len(cs) == 1 and ("CONNECT 127.0.0.1:%d " % sim.port) in cs[0], cs)
        # the proxy is named for the operator, without its credentials
        out = d.output()
        check("http://***@127.0.0.1:%d" % px.port in out, "the proxy is not named in dpsd's log:\n" + out)
        check(PROXY_USER not in out, "the proxy user name appears in dpsd's log")
        closes = wait_for(lambda: sim.events("close"), 5, "dpsd to close its connection")
        check(closes[0]["reason"] == "disconnect", closes)
        stop_clean(d)


def test_proxy_ws_x509():
    with world() as w:
        sim = w.sim([x509_enrollment()], name="px-ws", websocket=True)
        px = Tinyproxy(w, [sim.port, sim.ws_port])
        d = w.dpsd(x509_conf(w, sim, transport="mqtt-ws", port=sim.ws_port, proxy=px.url()))
        status = d.wait_provisioned()
        check(status == "Provisioned to hub hub-x.azure-devices.net as dev-x509", status)
        check_connects_over(sim, "websocket")
        cs = px.connects()
        check(len(cs) == 1 and ("CONNECT 127.0.0.1:%d " % sim.ws_port) in cs[0], cs)
        stop_clean(d)


def test_proxy_from_environment():
    """https_proxy applies when the config has no proxy; no_proxy and
    proxy = "none" bypass it."""
    with world() as w:
        sim = w.sim([w.sas_enrollment(), x509_enrollment()], name="px-env", websocket=True)
        px = Tinyproxy(w, [sim.port, sim.ws_port])
        env = {"https_proxy": px.url(), "no_proxy": "", "NO_PROXY": "", "HTTPS_PROXY": ""}
        d = w.dpsd(w.dpsd_conf(sim, transport="mqtt-ws", port=sim.ws_port), env=env, name="env")
        d.wait_provisioned()
        check(len(px.connects()) == 1, px.connects())
        d.stop()

        # no_proxy lists the endpoint: direct
        env2 = dict(env, no_proxy="localhost,127.0.0.1")
        conf2 = x509_conf(w, sim)
        conf2["cache-path"] = "state/cache2.json"
        d2 = w.dpsd(conf2, env=env2, name="noproxy")
        d2.wait_provisioned()
        d2.stop()
        # proxy = "none": direct
        conf3 = w.dpsd_conf(sim, proxy="none")
        conf3["cache-path"] = "state/cache3.json"
        d3 = w.dpsd(conf3, env=env, name="none")
        d3.wait_provisioned()
        check(len(px.connects()) == 1, "no_proxy or proxy = \"none\" still went through the proxy: %r"
              % px.connects())


def test_proxy_refuses_credentials():
    with world() as w:
        sim = w.sim([w.sas_enrollment()], name="px-auth", websocket=True)
        px = Tinyproxy(w, [sim.port, sim.ws_port])
        bus = dpsdtest.PrivateBus(w)
        wrong = "wrong-%s" % url_password()
        w.secrets.append(wrong)
        d = w.dpsd(w.dpsd_conf(sim, transport="mqtt-ws", port=sim.ws_port, proxy=px.url(password=wrong)),
                   env={"DBUS_SYSTEM_BUS_ADDRESS": bus.address})
        # tinyproxy answers a CONNECT with bad credentials 401 (others send 407)
        st = d.wait_status("proxy refused CONNECT: 40", timeout=15)
        check("401 Unauthorized" in st or "407 Proxy Authentication Required" in st, st)
        check(not sim.events("accept"), "the refused CONNECT still reached dps-sim")

        # what a user sees on the bus: the state, the reason, the errno
        check(bus.get("Transport") == "mqtt-ws", bus.get("Transport"))
        last_error = bus.get("LastError")
        check("proxy refused CONNECT: 401 Unauthorized" in last_error or
              "proxy refused CONNECT: 407 Proxy Authentication Required" in last_error, last_error)
        check("http://***@127.0.0.1:%d" % px.port in last_error, last_error)
        check(bus.get("LastErrorCode") == -13, "LastErrorCode %r, expected -EACCES" % bus.get("LastErrorCode"))
        check(bus.get("State") in ("retrying", "connecting"), bus.get("State"))
        out = d.output()
        check("proxy refused CONNECT" in out, "the refusal is not in dpsd's log:\n" + out)
        check("wrong-" not in out, "the proxy password appears in dpsd's log")
        stop_clean(d)


def test_proxy_refuses_port():
    """The proxy's policy forbids the port (tinyproxy: 403 for a port not in
    ConnectPort): reported as a refusal, not as a network error."""
    with world() as w:
        sim = w.sim([w.sas_enrollment()], name="px-403", websocket=True)
        px = Tinyproxy(w, [1])
        d = w.dpsd(w.dpsd_conf(sim, proxy=px.url()))
        st = d.wait_status("proxy refused CONNECT: 403", timeout=15)
        check("cannot reach 127.0.0.1:%d" % sim.port in st, st)
        check(not sim.events("accept"), "the refused CONNECT still reached dps-sim")
        stop_clean(d)


if __name__ == "__main__":
    # no skip without tinyproxy: CI installs it (tools/packages.txt), and a
    # proxy test that silently skips proves nothing
    main([test_ws_sas, test_ws_x509, test_ws_wrong_port_is_reported, test_ws_server_drops, test_proxy_mqtt, test_proxy_ws_x509,
          test_proxy_from_environment, test_proxy_refuses_credentials, test_proxy_refuses_port])
