#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
# test-hostile-files.py: hostile configs, key files, certificates and caches: a clear error naming the file and key, no hang, nothing lost
"""Every case of docs/robustness.md's "files" table that can be automated:
configs with wrong types, huge values, duplicate keys, non-UTF-8, @include
of a device, symlinks to devices, fifos, missing files and directories;
key files empty, not base64, too short, world-readable, a device; X.509
certificates expired, not yet valid, with a wrong CN, with a key that is not
theirs; caches truncated, empty, from another config, from the future, huge,
with control characters, a fifo, a symlink to a device. dpsd --check-config
must fail with exit 1 and a message naming file:line and the key (the
daemon itself exits 78); a bad cache is set aside and dpsd provisions."""

import json
import os
import re
import subprocess
import time

from robust import DPSD, World, check, lc_file, main, wait_for

CA_CNF = """[ ca ]
default_ca = dca
[ dca ]
dir = {dir}
database = {dir}/index.txt
new_certs_dir = {dir}/newcerts
serial = {dir}/serial
default_md = sha256
policy = any
unique_subject = no
[ any ]
commonName = supplied
"""


def check_config(w, text, name="hostile.conf"):
    p = w.path(name)
    with open(p, "wb") as f:
        f.write(text if isinstance(text, bytes) else text.encode())
    start = time.monotonic()
    r = subprocess.run([DPSD, "--check-config", "--config", p], capture_output=True, timeout=15,
                       env=dict(os.environ, DPSD_LOG_LEVEL="info"))
    return r.returncode, r.stdout.decode(errors="replace") + r.stderr.decode(errors="replace"), time.monotonic() - start


def base(w, **extra):
    c = {"id-scope": "0ne00000A0A", "registration-id": "dev-sas", "endpoint": "127.0.0.1", "ca-file": "ca.crt",
         "attestation": {"type": "symmetric-key", "key-file": "dev-sas.sas"},
         "cache-path": "state/cache.json", "identity-env-path": "run/identity.env"}
    c.update(extra)
    return lc_file(c)


def expect_refused(w, text, *fragments, name="hostile.conf"):
    rc, out, secs = check_config(w, text, name)
    check(rc == 1, "accepted or crashed (rc %d): %r\n%s" % (rc, fragments, out))
    check(secs < 10, "took %.1f s" % secs)
    for f in fragments:
        check(f in out, "%r not in the message:\n%s" % (f, out[:2000]))
    check(len(out) < 4096, "a %d-byte message" % len(out))
    return out


def test_configs():
    with World(devices=(), groups=()) as w:
        ok = base(w)
        rc, out, _ = check_config(w, ok)
        check(rc == 0, "the good config is refused: " + out)
        # wrong types, huge values, duplicates
        expect_refused(w, ok + 'port = "8883";\n', "hostile.conf:8: port:", "expected an integer")
        expect_refused(w, ok + "port = 99999999999L;\n", "port:", "out of range")
        expect_refused(w, ok + "keepalive-sec = 1e300;\n", "keepalive-sec:", "expected an integer")
        expect_refused(w, ok + "retry = { max-sec = 9223372036854775807L; };\n", "retry.max-sec:", "out of range")
        expect_refused(w, ok + "attestation = 1;\n", "duplicate setting")
        expect_refused(w, ok.replace('"0ne00000A0A"', "[1, 2]"), "id-scope:", "expected a string")
        expect_refused(w, ok + "timeouts = ( 1 );\n", "timeouts:", "expected a group")
        expect_refused(w, ok + "unknown-key = true;\n", "unknown-key", "valid keys")
        expect_refused(w, ok.replace('"dev-sas"', '"' + "a" * 200000 + '"'), "registration-id:", "not a valid registration id")
        # non-UTF-8 and characters that would break the user name or topics
        expect_refused(w, ok.replace("0ne00000A0A", "0ne\xff\xfeA0A").encode("latin-1"), "id-scope:", "letters and digits")
        expect_refused(w, ok.replace("0ne00000A0A", "0ne/x&y=1"), "id-scope:")
        expect_refused(w, ok.replace('"dev-sas"', '"dev\\u00e9"'), "registration-id")
        expect_refused(w, ok.encode() + b'payload = "{\\"a\\":\\"\xff\\"}";\n', "payload:", "utf-8")
        expect_refused(w, ok + 'payload = "{\\"a\\":";\n', "payload:", "not valid JSON")
        # syntax errors, @include of a device, the file itself a device or a directory or missing
        expect_refused(w, ok + "endpoint = ;\n", "hostile.conf:8: syntax error")
        expect_refused(w, ok + '@include "/dev/zero"\n', "syntax error")
        os.symlink("/dev/zero", w.path("zero.conf"))
        r = subprocess.run([DPSD, "--check-config", "--config", w.path("zero.conf")], capture_output=True, timeout=15)
        check(r.returncode == 1 and b"syntax error" in r.stderr, r.stderr)
        os.mkdir(w.path("conf.d"))
        r = subprocess.run([DPSD, "--check-config", "--config", w.path("conf.d")], capture_output=True, timeout=15)
        check(r.returncode == 1 and b"conf.d" in r.stderr, r.stderr)
        r = subprocess.run([DPSD, "--check-config", "--config", w.path("missing.conf")], capture_output=True, timeout=15)
        check(r.returncode == 1 and b"No such file" in r.stderr, r.stderr)
        # the daemon (not --check-config) exits EX_CONFIG
        w.write("bad.conf", ok + "port = 0;\n")
        r = subprocess.run([DPSD, "--config", w.path("bad.conf")], capture_output=True, timeout=15)
        check(r.returncode == 78, "dpsd exited %d on a bad config" % r.returncode)
        # files it names: a fifo (used to hang the start), a device, missing
        os.mkfifo(w.path("payload.fifo"))
        expect_refused(w, ok + 'payload-file = "payload.fifo";\n', "payload-file:", "not a regular file")
        expect_refused(w, ok + 'payload-file = "/dev/zero";\n', "payload-file:", "not a regular file")
        expect_refused(w, ok.replace('registration-id = "dev-sas";', 'registration-id-source = "file:payload.fifo";'),
                       "registration-id-source:", "not a regular file")
        expect_refused(w, ok + 'payload-file = "missing.json";\n', "payload-file:", "No such file")
        expect_refused(w, ok + 'ca-file = "missing.crt";\n', "duplicate setting")
        expect_refused(w, ok.replace('"ca.crt"', '"missing.crt"'), "ca-file:", "missing.crt")


def test_key_files():
    with World(devices=(), groups=()) as w:
        def conf(key, kind="key-file"):
            return base(w, attestation={"type": "symmetric-key", kind: key})
        w.write("empty.key", "", 0o600)
        expect_refused(w, conf("empty.key"), "attestation.key-file:", "is empty")
        w.write("blank.key", "\n \t\n", 0o600)
        expect_refused(w, conf("blank.key"), "attestation.key-file:", "is empty")
        w.write("nb.key", "this is not base64!\n", 0o600)
        expect_refused(w, conf("nb.key"), "attestation.key-file:", "not hold a valid base64 key")
        w.write("short.key", "QUJD\n", 0o600)    # 3 bytes
        expect_refused(w, conf("short.key"), "attestation.key-file:", "3 bytes", "16 to 64")
        w.write("short-group.key", "QUJDREVGR0g=\n", 0o600)
        expect_refused(w, conf("short-group.key", "group-key-file"), "attestation.group-key-file:", "16 to 64")
        w.write("long.key", "QUJD" * 40 + "\n", 0o600)   # 120 bytes
        expect_refused(w, conf("long.key"), "120 bytes")
        w.write("open.key", w.read("dev-sas.sas") + "\n", 0o644)
        expect_refused(w, conf("open.key"), "attestation.key-file:", "mode 0644", "chmod 600")
        w.write("group-readable.key", w.read("dev-sas.sas") + "\n", 0o640)
        expect_refused(w, conf("group-readable.key"), "mode 0640")
        os.symlink("/dev/zero", w.path("zero.key"))
        expect_refused(w, conf("zero.key"), "not a regular file")
        os.mkfifo(w.path("fifo.key"), 0o600)
        expect_refused(w, conf("fifo.key"), "not a regular file")
        expect_refused(w, conf("missing.key"), "attestation.key-file:", "No such file")
        w.write("huge.key", "QUJD" * 10000, 0o600)
        expect_refused(w, conf("huge.key"), "attestation.key-file:")
        # a key with CRLF and spaces around it is fine
        w.write("crlf.key", "  " + w.read("dev-sas.sas") + "\r\n", 0o600)
        rc, out, _ = check_config(w, conf("crlf.key"))
        check(rc == 0, out)


def make_cert(w, name, cn, start, end):
    d = w.path("ca")
    if not os.path.isdir(d):
        os.makedirs(os.path.join(d, "newcerts"))
        open(os.path.join(d, "index.txt"), "w").close()
        with open(os.path.join(d, "serial"), "w") as f:
            f.write("1000\n")
        with open(os.path.join(d, "ca.cnf"), "w") as f:
            f.write(CA_CNF.format(dir=d))
    key, csr, crt = w.path(name + ".key"), w.path(name + ".csr"), w.path(name + ".crt")
    subprocess.run(["openssl", "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                    "-keyout", key, "-subj", "/CN=" + cn, "-out", csr], check=True, capture_output=True)
    os.chmod(key, 0o600)
    subprocess.run(["openssl", "ca", "-batch", "-config", os.path.join(d, "ca.cnf"), "-cert", w.path("device-ca.crt"),
                    "-keyfile", w.path("device-ca.key"), "-in", csr, "-out", crt, "-startdate", start,
                    "-enddate", end, "-notext"], check=True, capture_output=True)
    with open(w.path(name + "-chain.crt"), "w") as f:
        f.write(w.read(name + ".crt") + "\n" + w.read("device-ca.crt") + "\n")


def test_certificates():
    with World(devices=("dev-x509", "other"), sas=(), groups=()) as w:
        sim = w.sim([{"group": "grp-ca", "attestation": "x509", "ca": "device-ca.crt",
                      "hubs": ["hub-x.azure-devices.net"]}])
        make_cert(w, "expired", "dev-x509", "20200101000000Z", "20200201000000Z")
        make_cert(w, "future", "dev-x509", "20990101000000Z", "20991231000000Z")
        make_cert(w, "wrongcn", "someone-else", "20200101000000Z", "20991231000000Z")
        w.write("cert-as-key.pem", w.read("dev-x509.crt"), 0o600)

        def conf(cert, key, regid="dev-x509"):
            c = w.dpsd_conf(sim, regid=regid)
            c["attestation"] = {"type": "x509", "certificate-file": cert, "key-file": key}
            return c

        # the good one, as a baseline
        d = w.dpsd(conf("dev-x509-chain.crt", "dev-x509.key"), name="good")
        d.wait_provisioned()
        d.stop()
        os.unlink(w.path("state/cache.json"))

        results = {}
        for name, c, want in [
            ("expired", conf("expired-chain.crt", "expired.key"), "expired"),
            ("not yet valid", conf("future-chain.crt", "future.key"), "before"),
            ("wrong CN", conf("wrongcn-chain.crt", "wrongcn.key"), "someone-else"),
            ("key of another certificate", conf("dev-x509-chain.crt", "other.key"), "not the private key"),
            ("not a key", conf("dev-x509-chain.crt", "cert-as-key.pem"), "no unencrypted PEM private key"),
            ("missing certificate", conf("missing.crt", "dev-x509.key"), "cannot open"),
            ("not a certificate", conf("dev-x509.key", "dev-x509.key"), "no PEM certificate"),
        ]:
            rc, out, _ = check_config(w, lc_file(c))
            if rc != 0:
                results[name] = "refused by --check-config: " + out.strip().splitlines()[-1]
                check(want in out, "%s: %r not in %s" % (name, want, out))
                continue
            d = w.dpsd(c, name="dpsd-" + re.sub(r"\W", "-", name))
            st = d.wait_status(want, timeout=20)
            check(d.alive(), "dpsd died on %s" % name)
            results[name] = "runtime: " + st
            d.stop()
        if os.path.exists(w.path("state/cache.json")):   # only the back-off state of the refused runs
            check("assignedHub" not in json.loads(w.read("state/cache.json")), "a refused identity was cached")
        for k, v in results.items():
            print("  %-28s %s" % (k, v))


def test_caches():
    with World(devices=(), groups=()) as w:
        sim = w.sim([w.sas_enrollment()], defaults={"assigning-polls": 0, "retry-after": 1})
        d = w.dpsd(w.dpsd_conf(sim))
        d.wait_provisioned()
        d.stop()
        good = w.read("state/cache.json") + "\n"
        g = json.loads(good)
        now_us = int(time.time() * 1e6)

        def bad_then_provisions(name, content=None, make=None, expect_aside=True, expect_reg=True):
            p = w.path("state/cache.json")
            if os.path.lexists(p):
                os.unlink(p)
            for n in os.listdir(w.path("state")):
                os.unlink(w.path("state/" + n))
            if make:
                make(p)
            else:
                with open(p, "wb") as f:
                    f.write(content if isinstance(content, bytes) else content.encode())
            regs = len(sim.events("register"))
            dd = w.dpsd(w.dpsd_conf(sim), name="dpsd-cache-" + name)
            dd.wait_provisioned(timeout=20)
            check(dd.alive(), "%s: dpsd died" % name)
            out = dd.output()
            if expect_aside:
                check("unusable cache" in out or "Ignoring the cache" in out,
                      "%s: not reported as unusable:\n%s" % (name, out))
                check(any(n.startswith("cache.json.corrupt-") for n in os.listdir(w.path("state"))),
                      "%s: not set aside: %r" % (name, os.listdir(w.path("state"))))
            if expect_reg:
                wait_for(lambda: len(sim.events("register")) > regs, 5, "%s: a new registration" % name)
            after = json.loads(w.read("state/cache.json"))
            check(after["assignedHub"] == "hub-a.azure-devices.net", "%s: %r" % (name, after))
            check(dd.stop() == 0, "%s: dpsd did not exit 0" % name)

        bad_then_provisions("truncated", good[: len(good) // 2])
        bad_then_provisions("empty", "")
        bad_then_provisions("nul", good.replace("hub-a", "hub\0a"))
        bad_then_provisions("junk-after", good + "}{")
        bad_then_provisions("future-version", good.replace('"version": 1', '"version": 99'))
        bad_then_provisions("wrong-types", good.replace('"attempts": 0', '"attempts": "0"'))
        bad_then_provisions("huge", good[:-2] + ', "x": "' + "a" * 600000 + '" }\n')
        bad_then_provisions("fifo", make=lambda p: os.mkfifo(p, 0o600))
        bad_then_provisions("device", make=lambda p: os.symlink("/dev/zero", p))
        bad_then_provisions("not-utf8", good.encode().replace(b"hub-a", b"hub-\xff"))
        other = dict(g, fingerprint="0" * 64, assignedHub="hub-other.azure-devices.net")
        bad_then_provisions("other-config", json.dumps(other) + "\n", expect_aside=False)
        # from the future: a provisioning time ahead is harmless, a next attempt far ahead is capped
        fut = dict(g, provisionedUsec=now_us + 10 * 365 * 86400 * 10**6)
        bad_then_provisions("provisioned-in-the-future", json.dumps(fut) + "\n", expect_aside=False, expect_reg=False)
        wait = {k: v for k, v in g.items() if k not in ("assignedHub", "deviceId", "substatus", "payload")}
        wait.update(attempts=3, nextAttemptUsec=now_us + 10 * 365 * 86400 * 10**6)
        bad_then_provisions("next-attempt-in-ten-years", json.dumps(wait) + "\n", expect_aside=False)
        ctl = dict(g, deviceId="dev\u001b[31m\nDPS_DEVICE_ID='evil'")
        bad_then_provisions("control-characters", json.dumps(ctl) + "\n")
        bad_then_provisions("hub-not-a-host-name", json.dumps(dict(g, assignedHub="hub a/../x")) + "\n")


if __name__ == "__main__":
    main([test_configs, test_key_files, test_certificates, test_caches])
