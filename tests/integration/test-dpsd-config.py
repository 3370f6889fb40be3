#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
# test-dpsd-config.py: dpsd's command line, --check-config and exit codes, TLS verification, clock sanity, credentials
import os
import re
import shutil
import subprocess
import time

from dpsdtest import DPSD, SOURCE, World, check, lc_file, main


def run(args, env=None):
    e = dict(os.environ)
    e.pop("CREDENTIALS_DIRECTORY", None)
    e.update(env or {})
    p = subprocess.run([DPSD] + args, capture_output=True, text=True, timeout=20, env=e)
    return p.returncode, p.stdout, p.stderr


def test_check_config():
    with World() as w:
        sim = w.sim([w.sas_enrollment()])
        conf = w.dpsd_conf(sim)
        w.write("ok.conf", lc_file(conf))
        rc, out, err = run(["--check-config", "--config", w.path("ok.conf")])
        check(rc == 0, (rc, out, err))
        check("configuration OK" in out and "registration id dev-sas" in out, out)
        # without touching the network
        time.sleep(0.3)
        check(sim.events("accept") == [], sim.events("accept"))

        w.write("typo.conf", lc_file(conf) + "retries = { min-sec = 1; };\n")
        rc, out, err = run(["--check-config", "--config", w.path("typo.conf")])
        check(rc == 1, rc)
        n = len(lc_file(conf).splitlines()) + 1
        check("%s:%d: retries: unknown key" % (w.path("typo.conf"), n) in err, err)

        # running with a bad configuration: EX_CONFIG, so systemd does not restart-loop
        rc, out, err = run(["--config", w.path("typo.conf")])
        check(rc == 78, "exit %d, expected 78" % rc)
        check("retries: unknown key" in err, err)

        rc, out, err = run(["--check-config", "--config", w.path("absent.conf")])
        check(rc == 1 and "absent.conf: cannot read the configuration" in err, (rc, err))
        rc, out, err = run(["--config", w.path("absent.conf")])
        check(rc == 78, rc)

        # a key file others can read
        os.chmod(w.path("dev-sas.sas"), 0o644)
        rc, out, err = run(["--check-config", "--config", w.path("ok.conf")])
        check(rc == 1 and ("chmod 600 %s" % w.path("dev-sas.sas")) in err, (rc, err))
        os.chmod(w.path("dev-sas.sas"), 0o600)

        rc, out, err = run(["--help"])
        check(rc == 0 and "--check-config" in out, out)
        rc, out, err = run(["--version"])
        check(rc == 0 and out.startswith("dpsd "), out)
        rc, out, err = run(["--bogus"])
        check(rc == 2, rc)


def sample_options():
    """Every option the sample config/dps.conf shows, commented out or not,
    as config text: one-liners and whole { } blocks."""
    with open(os.path.join(SOURCE, "config", "dps.conf")) as f:
        lines = f.read().splitlines()
    out, block, commented = [], None, False
    for line in lines:
        text = line[1:] if line.startswith("#") and not line.startswith("# ") and line != "#" else line
        if block is not None:
            if commented and line.startswith("#"):
                text = line[1:]
            block.append(text)
            if text.strip() == "};":
                out.append("\n".join(block))
                block = None
            continue
        if re.match(r"^[a-z-]+ = \{$", text):
            block, commented = [text], line.startswith("#")
        elif re.match(r"^[a-z-]+ = .*;$", text):
            out.append(text)
    return out


def test_sample_config_documents_real_options():
    """A typo in the documented sample would be an 'unknown key' for every
    user who copies it: each option shown must be one dpsd knows."""
    opts = sample_options()
    names = {o.split(" ", 1)[0] for o in opts}
    check({"endpoint", "port", "transport", "id-scope", "registration-id", "registration-id-source", "attestation",
           "ca-path", "ca-file", "payload", "payload-file", "retry", "timeouts", "cache-path",
           "identity-env-path"} <= names, sorted(names))
    with World() as w:
        base = lc_file(w.dpsd_conf(None))
        for o in opts:
            name = o.split(" ", 1)[0]
            text = "\n".join(l for l in base.splitlines() if not l.startswith(name + " ")) + "\n" + o + "\n"
            w.write("opt.conf", text)
            rc, out, err = run(["--check-config", "--config", w.path("opt.conf")])
            check("unknown key" not in err, "documented option rejected as unknown: %s\n%s" % (o, err))
            check("syntax error" not in err, "documented option is not valid syntax: %s\n%s" % (o, err))


def test_journal_stream_without_journald():
    """Under systemd stderr is the journal ($JOURNAL_STREAM): dpsd logs
    natively with structured fields. Without a reachable journald it must
    fall back to stderr rather than lose the message."""
    if os.path.exists("/run/systemd/journal/socket"):
        print("  journald is running here: fallback not checked")
        return
    with World() as w:
        w.write("bad.conf", "id-scope = \"0ne00000A0A\";\nfoo = 1;\n")
        errp = w.path("stderr.log")
        with open(errp, "w") as err:
            st = os.fstat(err.fileno())
            e = dict(os.environ)
            e["JOURNAL_STREAM"] = "%d:%d" % (st.st_dev, st.st_ino)
            rc = subprocess.run([DPSD, "--check-config", "--config", w.path("bad.conf")], stdout=subprocess.DEVNULL,
                                stderr=err, env=e, timeout=10).returncode
        check(rc == 1, rc)
        with open(errp) as f:
            text = f.read()
        check("foo: unknown key" in text, text)


def test_credentials_directory():
    with World() as w:
        sim = w.sim([w.sas_enrollment()])
        os.mkdir(w.path("creds"), 0o700)
        shutil.copy(w.path("dev-sas.sas"), w.path("creds/dps-key"))
        os.chmod(w.path("creds/dps-key"), 0o400)
        d = w.dpsd(w.dpsd_conf(sim, key_file="credential:dps-key"), env={"CREDENTIALS_DIRECTORY": w.path("creds")})
        d.wait_provisioned()


def test_wrong_ca_reported():
    with World() as w:
        sim = w.sim([w.sas_enrollment()])
        # the device CA did not sign the server certificate
        d = w.dpsd(w.dpsd_conf(sim, **{"ca-file": "device-ca.crt"}))
        st = d.wait_status("TLS failure")
        check("certificate verification: unable to get local issuer certificate" in st
              and "127.0.0.1:%d" % sim.port in st, st)
        check(sim.events("connect") == [], "a CONNECT went to an unverified server")


def test_wrong_host_name_reported():
    with World() as w:
        # a server certificate from the right CA, for another name
        subprocess.run(["openssl", "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                        "-nodes", "-keyout", w.path("other.key"), "-out", w.path("other.csr"), "-subj", "/CN=other.example"],
                       check=True, capture_output=True)
        ext = w.write("other.ext", "subjectAltName=DNS:other.example\n")
        subprocess.run(["openssl", "x509", "-req", "-in", w.path("other.csr"), "-CA", w.path("ca.crt"),
                        "-CAkey", w.path("ca.key"), "-CAcreateserial", "-days", "2", "-extfile", ext,
                        "-out", w.path("other.crt")], check=True, capture_output=True)
        os.chmod(w.path("other.key"), 0o600)
        sim = w.sim([w.sas_enrollment()], cert="other.crt", key="other.key")
        d = w.dpsd(w.dpsd_conf(sim))
        st = d.wait_status("TLS failure")
        check("certificate verification: IP address mismatch" in st, st)
        check(sim.events("connect") == [], "a CONNECT went to a server with another name")


def test_wrong_clock_waits():
    with World() as w:
        sim = w.sim([w.sas_enrollment()])
        future = int(time.time()) + 10 * 365 * 86400
        d = w.dpsd(w.dpsd_conf(sim), env={"DPSD_MIN_SANE_TIME": str(future)})
        st = d.wait_status("Waiting for the system clock to be set")
        check("it reads " in st and "UTC, before " in st, st)
        check("READY=1" in d.notify.lines(), d.notify.lines())
        time.sleep(1)
        check(sim.events("accept") == [], "connected with a wrong clock")
        check(d.alive(), "dpsd exited")

    # once the clock reaches the sane time (or is set), dpsd goes on by itself
    with World() as w:
        sim = w.sim([w.sas_enrollment()])
        soon = int(time.time()) + 2
        d = w.dpsd(w.dpsd_conf(sim), env={"DPSD_MIN_SANE_TIME": str(soon)})
        d.wait_status("Waiting for the system clock to be set")
        d.wait_provisioned(timeout=15)
        first = sim.events("accept")[0]
        check(first["ts"] >= soon, "connected %.3f s before the clock was sane" % (soon - first["ts"]))


if __name__ == "__main__":
    main([test_check_config, test_sample_config_documents_real_options, test_journal_stream_without_journald, test_credentials_directory, test_wrong_ca_reported, test_wrong_host_name_reported,
          test_wrong_clock_waits])
