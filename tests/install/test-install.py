#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
# test-install.py: meson install into a DESTDIR puts every file in its place, and keeps an edited dps.conf
"""Installs the build into a temporary DESTDIR (twice) and checks the tree:
binaries, unit files, sysusers.d and tmpfiles.d entries, D-Bus policy,
activation file and interface XML, the sample dps.conf (not overwritten on
the second install), man pages when built, libdps.pc and headers; and that
the installed dpsd.service scores <= 1.0 with systemd-analyze security."""

import configparser
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET

BUILD = os.environ["DPSD_BUILD_ROOT"]
SOURCE = os.environ["DPSD_SOURCE_ROOT"]

failures = []


def check(cond, what):
    print(("ok   " if cond else "FAIL ") + what)
    if not cond:
        failures.append(what)
    return cond


def options():
    out = subprocess.run(["meson", "introspect", "--buildoptions", BUILD],
                         check=True, capture_output=True, text=True).stdout
    return {o["name"]: o["value"] for o in json.loads(out)}


def install(destdir):
    r = subprocess.run(["meson", "install", "-C", BUILD, "--destdir", destdir, "--no-rebuild", "--quiet"],
                       capture_output=True, text=True)
    if r.returncode != 0:
        print(r.stdout, r.stderr, file=sys.stderr)
    return r.returncode == 0


def find(root, suffix):
    """Installed paths ending in suffix (relative to root, with a leading /)."""
    hits = []
    for d, _, files in os.walk(root):
        for f in files:
            p = os.path.join(d, f)[len(root):]
            if p.endswith(suffix):
                hits.append(p)
    return sorted(hits)


def read(root, path):
    with open(root + path, encoding="utf-8") as f:
        return f.read()


def unit(root, path):
    cp = configparser.ConfigParser(strict=False, interpolation=None)
    cp.optionxform = str
    cp.read_string(read(root, path))
    return cp


def main():
    opt = options()
    prefix = opt["prefix"]

    def abs_dir(name):
        v = opt[name]
        return v if v.startswith("/") else os.path.join(prefix, v)

    bindir, sbindir = abs_dir("bindir"), abs_dir("sbindir")
    sysconfdir, mandir = abs_dir("sysconfdir"), abs_dir("mandir")
    includedir, libdir = abs_dir("includedir"), abs_dir("libdir")
    user = opt["user"]

    tmp = tempfile.mkdtemp(prefix="dpsd-install-")
    try:
        D = os.path.join(tmp, "root")
        if not check(install(D), "meson install --destdir succeeds"):
            return 1

        # Binaries.
        dpsd = os.path.join(sbindir, "dpsd")
        dpsctl = os.path.join(bindir, "dpsctl")
        check(os.access(D + dpsd, os.X_OK), f"dpsd installed executable at {dpsd}")
        check(os.access(D + dpsctl, os.X_OK), f"dpsctl installed executable at {dpsctl}")
        if opt.get("sim", True):
            check(os.access(D + os.path.join(bindir, "dps-sim"), os.X_OK), "dps-sim installed")

        # Units: paths substituted and pointing at the installed binaries.
        units = {n: find(D, "systemd/system/" + n)
                 for n in ("dpsd.service", "dpsd-wait-provisioned.service", "dps-provisioned.target")}
        for n, hits in units.items():
            check(len(hits) == 1, f"{n} installed once in a systemd/system directory ({hits})")
        if units["dpsd.service"]:
            path = units["dpsd.service"][0]
            text = read(D, path)
            check(not re.search(r"@[A-Za-z_]+@", text), "dpsd.service has no unsubstituted @VARIABLE@")
            u = unit(D, path)
            s = u["Service"]
            check(s.get("Type") == "notify", "dpsd.service is Type=notify")
            check(s.get("ExecStart", "").split()[0] == dpsd, f"dpsd.service ExecStart= is {dpsd}")
            check(s.get("BusName") == "org.dpsd.Provisioning1", "dpsd.service BusName=org.dpsd.Provisioning1")
            check(s.get("User") == user, f"dpsd.service runs as User={user}")
            check(s.get("StateDirectory") == "dpsd" and s.get("StateDirectoryMode") == "0700",
                  "dpsd.service StateDirectory=dpsd, mode 0700")
            check(s.get("RestartPreventExitStatus") == "78", "dpsd.service does not restart on exit 78")
            check("WatchdogSec" in s, "dpsd.service has WatchdogSec=")
            if shutil.which("systemd-analyze"):
                r = subprocess.run(["systemd-analyze", "security", "--offline=true", D + path],
                                   capture_output=True, text=True)
                m = re.search(r"Overall exposure level for \S+: ([0-9.]+)", r.stdout + r.stderr)
                check(m is not None and float(m.group(1)) <= 1.0,
                      "systemd-analyze security --offline=true scores <= 1.0 (got %s)"
                      % (m.group(1) if m else "no score"))
        if units["dpsd-wait-provisioned.service"]:
            u = unit(D, units["dpsd-wait-provisioned.service"][0])
            check(u["Service"].get("ExecStart", "").split()[:2] == [dpsctl, "wait"],
                  "dpsd-wait-provisioned.service runs 'dpsctl wait'")
            check(u["Unit"].get("Before") == "dps-provisioned.target",
                  "dpsd-wait-provisioned.service orders itself before dps-provisioned.target")

        # sysusers.d and tmpfiles.d.
        sysusers = find(D, "sysusers.d/dpsd.conf")
        if check(len(sysusers) == 1, f"sysusers.d/dpsd.conf installed ({sysusers})"):
            check(re.search(r"^u\s+%s\s" % re.escape(user), read(D, sysusers[0]), re.M) is not None,
                  f"sysusers.d creates user {user}")
        tmpfiles = find(D, "tmpfiles.d/dpsd.conf")
        if check(len(tmpfiles) == 1, f"tmpfiles.d/dpsd.conf installed ({tmpfiles})"):
            check(not re.search(r"@[A-Za-z_]+@", read(D, tmpfiles[0])), "tmpfiles.d entry fully substituted")

        # D-Bus files.
        policy = find(D, "dbus-1/system.d/org.dpsd.Provisioning1.conf")
        if check(len(policy) == 1, f"D-Bus policy installed ({policy})"):
            root = ET.fromstring(read(D, policy[0]))
            owners = [p.get("user") for p in root.iter("policy") if p.find("allow[@own='org.dpsd.Provisioning1']") is not None]
            check(owners == [user], f"only user {user} may own org.dpsd.Provisioning1 (got {owners})")
            default = [p for p in root.iter("policy") if p.get("context") == "default"]
            check(len(default) == 1 and default[0].find("deny[@send_destination='org.dpsd.Provisioning1']") is not None,
                  "default policy denies sending to dpsd, then opens reads")
        activation = find(D, "dbus-1/system-services/org.dpsd.Provisioning1.service")
        if check(len(activation) == 1, f"D-Bus activation file installed ({activation})"):
            text = read(D, activation[0])
            check("SystemdService=dpsd.service" in text and f"User={user}" in text,
                  "activation file names dpsd.service and the user")
        iface = find(D, "dbus-1/interfaces/org.dpsd.Provisioning1.xml")
        if check(len(iface) == 1, f"D-Bus interface XML installed ({iface})"):
            with open(os.path.join(SOURCE, "dbus", "org.dpsd.Provisioning1.xml"), encoding="utf-8") as f:
                check(read(D, iface[0]) == f.read(), "installed interface XML equals dbus/org.dpsd.Provisioning1.xml")

        # Sample configuration.
        conf = os.path.join(sysconfdir, "dps.conf")
        check(os.path.isfile(D + conf), f"sample configuration installed at {conf}")

        # Man pages, when built.
        man = {"dpsd": 8, "dps.conf": 5, "dpsctl": 1}
        if opt.get("sim", True):
            man["dps-sim"] = 1
        if opt.get("man") != "disabled" and shutil.which("scdoc"):
            for page, sect in man.items():
                p = os.path.join(mandir, f"man{sect}", f"{page}.{sect}")
                check(os.path.isfile(D + p) and os.path.getsize(D + p) > 500, f"man page {p} installed")
        else:
            print("skip man pages (not built)")

        # libdps for developers.
        pc = find(D, "pkgconfig/libdps.pc")
        if check(len(pc) == 1, f"libdps.pc installed ({pc})"):
            text = read(D, pc[0])
            check(re.search(r"^Libs:.*-ldps\b", text, re.M) is not None, "libdps.pc links -ldps")
        headers = find(D, "/dps.h")
        check(any(h.startswith(includedir + "/") for h in headers), f"dps.h installed under {includedir} ({headers})")
        check(not find(D, "/dps-macro.h"), "internal dps-macro.h is not installed")
        check(any(os.path.basename(p).startswith("libdps.so") for p in find(D, "")
                  if p.startswith(libdir + "/")), f"libdps.so installed under {libdir}")

        # Nothing secret or generated for tests ends up installed.
        check(not [p for p in find(D, "") if p.endswith((".key", ".sas", ".pem"))], "no key files installed")

        # An admin's edited configuration survives a re-install.
        if os.path.isfile(D + conf):
            edited = "# edited by the administrator\nid-scope = \"0ne0000EDIT\";\n"
            with open(D + conf, "w", encoding="utf-8") as f:
                f.write(edited)
            check(install(D), "second meson install over the tree succeeds")
            check(read(D, conf) == edited, f"an existing {conf} is not overwritten")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    print(f"{len(failures)} failure(s)")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
