#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
# test-dpsctl.py: dpsctl's offline key verbs, run as a user would, checked against the openssl CLI
import base64
import os
import re
import shutil
import subprocess
import sys
import time
import unittest
import urllib.parse

DPSCTL = sys.argv.pop(1) if len(sys.argv) > 1 else os.path.join(
    os.environ.get("DPSD_BUILD_ROOT", "build"), "daemon", "dpsctl")

GROUP_KEY = "8isrFI1sGsIlvvFSSFRiMfCNzv21fjbE/+ah/lSh3lF8e2YG1Te7w1KpZhJFFXJrqYKi9yegxkqIChbqOS9Egw=="
REG_ID = "sn-007-888-abc-mac-a1-b2-c3-d4-e5-f6"
DEV_KEY = "Jsm0lyGpjaVYVP2g3FnmnmG9dI/9qU24wNoykUmermc="


def run(args, stdin=""):
    return subprocess.run([DPSCTL] + args, input=stdin.encode(), capture_output=True, timeout=10)


def openssl_hmac_b64(key_b64, message):
    """HMAC-SHA256 computed by the openssl command line, base64-encoded."""
    key_hex = base64.b64decode(key_b64).hex()
    p = subprocess.run(["openssl", "dgst", "-sha256", "-mac", "HMAC", "-macopt", "hexkey:" + key_hex, "-binary"],
                       input=message.encode(), capture_output=True, timeout=10, check=True)
    return base64.b64encode(p.stdout).decode()


def parse_token(token):
    prefix = "SharedAccessSignature "
    assert token.startswith(prefix), token
    fields = {}
    for pair in token[len(prefix):].split("&"):
        k, _, v = pair.partition("=")
        fields[k] = v   # raw, still url-encoded
    return fields


class Base(unittest.TestCase):
    def assertOneLineError(self, p, code, *needles):
        self.assertEqual(p.returncode, code, p.stderr)
        self.assertEqual(p.stdout, b"")
        err = p.stderr.decode()
        self.assertTrue(err.startswith("dpsctl: "), err)
        self.assertEqual(err.count("\n"), 1, err)
        for n in needles:
            self.assertIn(n, err)


class DeriveKey(Base):
    def test_published_vector(self):
        p = run(["derive-key", "--registration-id", REG_ID], GROUP_KEY + "\n")
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(p.stdout.decode(), DEV_KEY + "\n")
        self.assertEqual(p.stderr, b"")

    def test_no_newline_and_equals_form(self):
        p = run(["derive-key", "--registration-id=" + REG_ID], GROUP_KEY)
        self.assertEqual(p.stdout.decode(), DEV_KEY + "\n")

    def test_against_openssl(self):
        key = base64.b64encode(os.urandom(64)).decode()
        p = run(["derive-key", "--registration-id", "dev:line.7_x-9"], key)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(p.stdout.decode().strip(), openssl_hmac_b64(key, "dev:line.7_x-9"))

    def test_not_base64(self):
        p = run(["derive-key", "--registration-id", REG_ID], "this is not base64!")
        self.assertOneLineError(p, 1, "not valid base64")

    def test_bad_padding(self):
        p = run(["derive-key", "--registration-id", REG_ID], GROUP_KEY.rstrip("="))
        self.assertOneLineError(p, 1, "not valid base64")

    def test_empty_key(self):
        self.assertOneLineError(run(["derive-key", "--registration-id", REG_ID], ""), 1, "no key")
        self.assertOneLineError(run(["derive-key", "--registration-id", REG_ID], " \n"), 1, "no key")

    def test_output_error(self):
        with open("/dev/full", "wb") as full:
            p = subprocess.run([DPSCTL, "derive-key", "--registration-id", REG_ID], input=GROUP_KEY.encode(),
                               stdout=full, stderr=subprocess.PIPE, timeout=10)
        self.assertEqual(p.returncode, 1)
        self.assertIn(b"cannot write to standard output", p.stderr)

    def test_key_too_long(self):
        self.assertOneLineError(run(["derive-key", "--registration-id", REG_ID], "A" * 5000), 1, "longer than")

    def test_invalid_registration_id(self):
        p = run(["derive-key", "--registration-id", "dev/1"], GROUP_KEY)
        self.assertOneLineError(p, 2, "invalid registration id", "contains '/' at position 4")
        p = run(["derive-key", "--registration-id", "dev."], GROUP_KEY)
        self.assertOneLineError(p, 2, "ends with '.'")
        p = run(["derive-key", "--registration-id", "a" * 129], GROUP_KEY)
        self.assertOneLineError(p, 2, "129 characters")

    def test_usage_errors(self):
        self.assertOneLineError(run(["derive-key"], GROUP_KEY), 2, "missing --registration-id")
        self.assertOneLineError(run(["derive-key", "--registration-id"], GROUP_KEY), 2, "needs a value")
        self.assertOneLineError(run(["derive-key", "--bogus", "x"], GROUP_KEY), 2, "unknown option '--bogus'")
        # a key on the command line is refused, not used
        p = run(["derive-key", "--registration-id", REG_ID, GROUP_KEY], "")
        self.assertOneLineError(p, 2, "standard input")
        self.assertNotIn(GROUP_KEY.encode(), p.stdout)


class SasToken(Base):
    SCOPE = "0ne00000A0A"

    def check_token(self, token, key, regid, expiry):
        f = parse_token(token)
        self.assertEqual(set(f), {"sr", "sig", "se", "skn"})
        self.assertEqual(f["sr"], urllib.parse.quote(self.SCOPE + "/registrations/" + regid, safe=""))
        self.assertEqual(f["skn"], "registration")
        self.assertEqual(f["se"], str(expiry))
        # sig is url-encoded: only unreserved characters and %XX escapes remain
        self.assertRegex(f["sig"], r"^([A-Za-z0-9._~-]|%[0-9A-F]{2})+$")
        sig = urllib.parse.unquote(f["sig"])
        self.assertEqual(sig, openssl_hmac_b64(key, f["sr"] + "\n" + f["se"]))

    def test_fixed_expiry_exact(self):
        # computed independently with Python's hmac; sig holds + / and =
        p = run(["sas-token", "--id-scope", self.SCOPE, "--registration-id", "dev-1", "--expiry", "1764150001"],
                DEV_KEY + "\n")
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(p.stdout.decode(),
                         "SharedAccessSignature sr=0ne00000A0A%2Fregistrations%2Fdev-1"
                         "&sig=MDxaw%2Fa0L%2BkW9jl1yLcUnNJMLAb%2BxeGr%2FhShL77eYeE%3D"
                         "&se=1764150001&skn=registration\n")

    def test_against_openssl(self):
        for i in range(5):
            key = base64.b64encode(os.urandom(32)).decode()
            regid = "dev:%d.x_y-%d" % (i, i)
            expiry = 1800000000 + i * 7919
            p = run(["sas-token", "--id-scope", self.SCOPE, "--registration-id", regid, "--expiry", str(expiry)], key)
            self.assertEqual(p.returncode, 0, p.stderr)
            self.check_token(p.stdout.decode().rstrip("\n"), key, regid, expiry)

    def test_ttl_and_default(self):
        for args, ttl in ((["--ttl", "120"], 120), ([], 3600)):
            before = int(time.time())
            p = run(["sas-token", "--id-scope", self.SCOPE, "--registration-id", "dev-1"] + args, DEV_KEY)
            after = int(time.time())
            self.assertEqual(p.returncode, 0, p.stderr)
            se = int(parse_token(p.stdout.decode().strip())["se"])
            self.assertGreaterEqual(se, before + ttl)
            self.assertLessEqual(se, after + ttl)
            self.check_token(p.stdout.decode().strip(), DEV_KEY, "dev-1", se)

    def test_bad_key(self):
        base = ["sas-token", "--id-scope", self.SCOPE, "--registration-id", "dev-1", "--expiry", "1"]
        self.assertOneLineError(run(base, "%%%%"), 1, "not valid base64")
        self.assertOneLineError(run(base, ""), 1, "no key")

    def test_usage_errors(self):
        scope = ["--id-scope", self.SCOPE]
        rid = ["--registration-id", "dev-1"]
        cases = [
            (rid, "missing --id-scope"),
            (scope, "missing --registration-id"),
            (scope + rid + ["--expiry", "1", "--ttl", "5"], "exclude each other"),
            (scope + rid + ["--ttl", "abc"], "invalid --ttl"),
            (scope + rid + ["--ttl", "-5"], "invalid --ttl"),
            (scope + rid + ["--ttl", "0"], "invalid --ttl"),
            (scope + rid + ["--expiry", "soon"], "invalid --expiry"),
            (scope + rid + ["--expiry", "99999999999999999999999"], "invalid --expiry"),
            (["--id-scope", "0ne/x"] + rid, "invalid --id-scope"),
            (scope + ["--registration-id", "bad id"], "invalid registration id"),
            (scope + rid + ["--nope"], "unknown option"),
        ]
        for args, needle in cases:
            with self.subTest(args=args):
                self.assertOneLineError(run(["sas-token"] + args, DEV_KEY), 2, needle)


class Global(Base):
    def test_help(self):
        p = run(["--help"])
        self.assertEqual(p.returncode, 0)
        out = p.stdout.decode()
        self.assertIn("derive-key", out)
        self.assertIn("sas-token", out)
        for verb, opt in (("derive-key", "--help"), ("sas-token", "--help"), ("derive-key", "-h"),
                          ("sas-token", "-h")):
            p = run([verb, opt])
            self.assertEqual(p.returncode, 0)
            self.assertIn("Usage: dpsctl " + verb, p.stdout.decode())
            self.assertIn("--registration-id", p.stdout.decode())

    def test_version(self):
        p = run(["--version"])
        self.assertEqual(p.returncode, 0)
        self.assertRegex(p.stdout.decode(), r"^dpsctl \d+\.\d+\.\d+\n$")

    def test_usage(self):
        self.assertOneLineError(run([]), 2, "missing verb")
        self.assertOneLineError(run(["frobnicate"]), 2, "unknown verb 'frobnicate'")
        self.assertOneLineError(run(["--frob"]), 2, "unknown option '--frob'")


if __name__ == "__main__":
    if not shutil.which("openssl"):
        sys.exit("openssl not found on PATH (Debian package 'openssl')")
    if not os.access(DPSCTL, os.X_OK):
        sys.exit("dpsctl not found at " + DPSCTL)
    unittest.main(verbosity=1)
