#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
# test-secrets.py: no key, derived key, SAS signature, X.509 private key or proxy password in anything dpsd or dpsctl shows or writes
"""Full runs with every attestation (individual symmetric key, group key,
X.509), through an HTTP proxy with a password (tinyproxy, BasicAuth) over
both transports, with a private bus. Collected: dpsd's whole output at debug
level (what the journal gets too: the same MESSAGE plus DPS_* fields), its
sd_notify messages, every D-Bus property (GetAll), dpsctl status/show
output, the cache, identity.env and dps-sim's event log. Searched for: the
device key, the group key, the derived device key, every SAS signature dpsd
could have made during the run (raw and url-encoded), the proxy password
(raw, url-encoded, and inside a Basic credential), and the X.509 private
key's PEM body. None may appear."""

import base64
import hashlib
import hmac
import os
import subprocess
import time
import urllib.parse

from robust import DPSCTL, PROXY_PASSWORD, PROXY_USER, SCOPE, Bus, Tinyproxy, World, check, main, stop_proc

def b64hmac(key_b64, msg):
    return base64.b64encode(hmac.new(base64.b64decode(key_b64), msg.encode(), hashlib.sha256).digest()).decode()


def forms(s):
    return {s, urllib.parse.quote(s, safe=""), urllib.parse.quote(s, safe="").lower()}


def test_no_secret_anywhere():
    with World() as w:
        w.secrets.append(PROXY_PASSWORD)
        bus = Bus(w)
        sim = w.sim([
            w.sas_enrollment(),
            {"group": "grp", "attestation": "symmetric-key", "primary-key": w.read("grp.group-sas"),
             "hubs": ["hub-g.azure-devices.net"]},
            {"registration-id": "dev-x509", "attestation": "x509", "certificate": "dev-x509.crt",
             "hubs": ["hub-x.azure-devices.net"]}], name="sec", websocket=True)
        px = Tinyproxy(w, [sim.port, sim.ws_port])
        t_begin = int(time.time())

        group_conf = w.dpsd_conf(sim, regid="grp-device-9", transport="mqtt-ws", port=sim.ws_port, proxy=px.url())
        group_conf["attestation"] = {"type": "symmetric-key", "group-key-file": "grp.group-sas"}
        x509_conf = w.dpsd_conf(sim, regid="dev-x509", transport="mqtt-ws", port=sim.ws_port, proxy=px.url())
        x509_conf["attestation"] = {"type": "x509", "certificate-file": "dev-x509-chain.crt", "key-file": "dev-x509.key"}
        runs = [
            ("sas", w.dpsd_conf(sim, proxy=px.url(), payload='{"modelId":"dtmi:x;1"}')),
            ("group", group_conf),
            ("x509", x509_conf),
        ]
        texts = {}
        for name, conf in runs:
            d = w.dpsd(conf, name="dpsd-" + name, env=bus.env)
            d.wait_provisioned()
            env = dict(os.environ, **bus.env)
            for verb in ("status", "show"):
                r = subprocess.run([DPSCTL, verb], capture_output=True, text=True, env=env, timeout=10)
                check(r.returncode == 0, "dpsctl %s: %s" % (verb, r.stderr))
                texts["dpsctl %s (%s)" % (verb, name)] = r.stdout + r.stderr
            props = bus.all_props()
            check(props["State"] == "provisioned", props)
            texts["D-Bus properties (%s)" % name] = repr(props)
            texts["cache (%s)" % name] = w.read("state/cache.json")
            texts["identity.env (%s)" % name] = w.read("run/identity.env")
            check(stop_proc(d.proc) == 0, "dpsd did not exit 0")
            d.notify.close()
            texts["dpsd output (%s)" % name] = d.output()
            texts["notify (%s)" % name] = "\n".join(d.notify.lines())
            os.unlink(w.path("state/cache.json"))
        t_end = int(time.time())
        with open(sim.events_path) as f:
            texts["dps-sim events"] = f.read()

        # a proxy run happened for real, with credentials
        check(len(px.connects()) == 3, "not every run went through the proxy: %r" % px.connects())

        secrets = {}
        dev_key, grp_key = w.read("dev-sas.sas"), w.read("grp.group-sas")
        derived = b64hmac(grp_key, "grp-device-9")
        secrets["device key"] = forms(dev_key)
        secrets["group key"] = forms(grp_key)
        secrets["derived key"] = forms(derived)
        sigs = set()
        for regid, key in (("dev-sas", dev_key), ("grp-device-9", derived)):
            sr = urllib.parse.quote("%s/registrations/%s" % (SCOPE, regid), safe="")
            for se in range(t_begin + 3600 - 5, t_end + 3600 + 6):
                sigs |= forms(b64hmac(key, "%s\n%d" % (sr, se)))
        secrets["SAS signature"] = sigs
        pw = PROXY_PASSWORD
        secrets["proxy password"] = forms(pw) | {base64.b64encode(("%s:%s" % (PROXY_USER, pw)).encode()).decode()}
        pem = [l for l in w.read("dev-x509.key").splitlines() if l and not l.startswith("-----")]
        secrets["X.509 private key"] = {l for l in pem if len(l) >= 32}

        # the search itself works: it finds each secret where it legitimately is
        check(any(v in w.read("dev-sas.sas") for v in secrets["device key"]), "search self-test (key file)")
        check(any(v in w.read("dev-x509.key") for v in secrets["X.509 private key"]), "search self-test (PEM)")
        check(any(v in open(px.conf).read() for v in secrets["proxy password"]), "search self-test (proxy)")

        found = []
        for where, text in texts.items():
            for what, values in secrets.items():
                if any(v and v in text for v in values):
                    found.append("%s in %s" % (what, where))
            for marker in ("SharedAccessSignature", "sig=", "PRIVATE KEY"):
                if marker in text:
                    found.append("%r in %s" % (marker, where))
        check(not found, "secrets leaked: " + "; ".join(found))
        print("searched %d places for %d secret strings (%d possible SAS signatures): none found"
              % (len(texts), sum(len(v) for v in secrets.values()), len(sigs)))


if __name__ == "__main__":
    main([test_no_secret_anywhere])
