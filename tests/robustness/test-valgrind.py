#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
# test-valgrind.py: one full provisioning run of dpsd and one of dps-sim under valgrind memcheck: 0 errors, nothing definitely or indirectly lost
"""dpsd (symmetric key, then X.509 over MQTT-over-WebSocket) provisions
against dps-sim and exits on SIGTERM under
valgrind --leak-check=full --errors-for-leak-kinds=definite,indirect
--error-exitcode=1; then dps-sim runs under valgrind while dpsd provisions
against it with SAS and X.509 over both transports, a refused key and a
malformed client. Exit status 0, 'ERROR SUMMARY: 0 errors', no byte
definitely or indirectly lost. Skipped (77) without valgrind."""

import os
import re
import shutil
import signal
import socket
import stat
import subprocess
import sys

from robust import SKIP, check, main, stop_proc
import dpsdtest  # noqa: E402 (robust puts tests/integration on the path)

VALGRIND = shutil.which("valgrind")


def wrapper(w, name, binary):
    log = w.path(name + ".valgrind.%p")
    p = w.path(name + "-valgrind.sh")
    with open(p, "w") as f:
        f.write('#!/bin/sh\nexec %s --quiet --leak-check=full --errors-for-leak-kinds=definite,indirect '
                '--error-exitcode=1 --num-callers=30 --log-file=%s %s "$@"\n' % (VALGRIND, log, binary))
    os.chmod(p, stat.S_IRWXU)
    return p


def check_report(w, name):
    logs = [n for n in os.listdir(w.dir) if n.startswith(name + ".valgrind.")]
    check(logs, "no valgrind log for %s" % name)
    for n in logs:
        with open(w.path(n)) as f:
            text = f.read()
        check("Invalid " not in text and "uninitialised" not in text and "definitely lost in" not in text
              and "indirectly lost in" not in text, "valgrind report for %s:\n%s" % (name, text[-8000:]))
        m = re.search(r"ERROR SUMMARY: (\d+) errors", text)
        check(m is None or m.group(1) == "0", "valgrind errors for %s:\n%s" % (name, text[-8000:]))


def x509(w, sim, **extra):
    conf = w.dpsd_conf(sim, **extra)
    conf["attestation"] = {"type": "x509", "certificate-file": "dev-x509-chain.crt", "key-file": "dev-x509.key"}
    conf["registration-id"] = "dev-x509"
    return conf


def slow(conf):
    conf["timeouts"] = {"connect-sec": 30, "response-sec": 30, "total-sec": 120}
    return conf


def test_dpsd_under_valgrind():
    with dpsdtest.World() as w:
        sim = w.sim([w.sas_enrollment(payload="echo"),
                     {"registration-id": "dev-x509", "attestation": "x509", "certificate": "dev-x509.crt",
                      "hubs": ["hub-x.azure-devices.net"]}])
        orig = dpsdtest.DPSD
        dpsdtest.DPSD = wrapper(w, "dpsd", orig)
        try:
            d = w.dpsd(slow(w.dpsd_conf(sim, payload='{"a":[1,2,{"b":null}]}')))
            d.wait_provisioned(timeout=90)
            check(d.stop() == 0, "dpsd under valgrind exited %s" % d.proc.returncode)
            os.unlink(w.path("state/cache.json"))
            d = w.dpsd(slow(x509(w, sim)), name="dpsd-x509")
            d.wait_provisioned(timeout=90)
            check(d.stop() == 0, "dpsd (x509) under valgrind exited %s" % d.proc.returncode)
        finally:
            dpsdtest.DPSD = orig
        check_report(w, "dpsd")


def test_sim_under_valgrind():
    with dpsdtest.World() as w:
        orig = dpsdtest.DPS_SIM
        dpsdtest.DPS_SIM = wrapper(w, "dps-sim", orig)
        try:
            sim = w.sim([w.sas_enrollment(),
                         {"registration-id": "dev-x509", "attestation": "x509", "certificate": "dev-x509.crt",
                          "hubs": ["hub-x.azure-devices.net"]}])
        finally:
            dpsdtest.DPS_SIM = orig
        d = w.dpsd(slow(w.dpsd_conf(sim)))
        d.wait_provisioned(timeout=90)
        d.stop()
        os.unlink(w.path("state/cache.json"))
        d = w.dpsd(slow(x509(w, sim)), name="dpsd-x509")
        d.wait_provisioned(timeout=90)
        d.stop()
        # a wrong key (refused) and a client that sends garbage
        w.write("wrong.sas", "d3Jvbmcga2V5IGZvciB0aGUgdmFsZ3JpbmQgdGVzdCEhIQ==\n", 0o600)
        d = w.dpsd(slow(w.dpsd_conf(sim, key_file="wrong.sas")), name="dpsd-wrong")
        d.wait_status("credentials", timeout=60)
        d.stop()
        s = socket.create_connection(("127.0.0.1", sim.port), timeout=5)
        s.sendall(b"\x16\x03\x01\x00\x05hello-not-tls")
        try:
            s.recv(100)
        except OSError:
            pass
        s.close()
        rc = stop_proc(sim.proc, signal.SIGTERM, timeout=30)
        check(rc == 0, "dps-sim under valgrind exited %s" % rc)
        check_report(w, "dps-sim")


def sanitized():
    r = subprocess.run(["ldd", dpsdtest.DPSD], capture_output=True, text=True)
    return "libasan" in r.stdout or "libubsan" in r.stdout


if __name__ == "__main__":
    if not VALGRIND:
        print("SKIP: valgrind is not installed (apt-get install valgrind)")
        sys.exit(SKIP)
    if sanitized():
        print("SKIP: an ASan/UBSan build does not run under valgrind")
        sys.exit(SKIP)
    main([test_dpsd_under_valgrind, test_sim_under_valgrind])
