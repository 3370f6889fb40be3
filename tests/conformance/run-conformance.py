#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
# run-conformance.py: the official Azure DPS Node SDK provisions against dps-sim, every transport x attestation
#
# Credentials come from sim/dps-sim-certs into a temp directory, once per
# run. For each case: a fresh dps-sim on loopback with port 0 and
# --ready-file/--events, `node provision.js` runs of the pinned SDK, then
# assertions on what the SDK printed and on dps-sim's event log. dps-sim is
# stopped by its pid, also on failure. Cases run a few at a time (-j).
#
# Environment: DPSD_BUILD_ROOT, DPSD_SOURCE_ROOT (set by meson's test_env).
# Exit 0 when every case passes, 1 otherwise, 77 (skip) when node is absent.
# Options: --case NAME (repeatable, run only those), --keep (keep the temp
# directory), -v (print the SDK's output of every run), -j N (parallel cases).

import argparse
import base64
import concurrent.futures
import fcntl
import hashlib
import hmac
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback

SCOPE = "0ne00000A0A"
API_VERSION = "2019-03-31"
SDK_USER_AGENT = "azure-iot-provisioning-device/1.9.1"
UUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")
# dps-protocol.md: a published example of the group key derivation.
DERIVE_EXAMPLE = ("8isrFI1sGsIlvvFSSFRiMfCNzv21fjbE/+ah/lSh3lF8e2YG1Te7w1KpZhJFFXJrqYKi9yegxkqIChbqOS9Egw==",
                  "sn-007-888-abc-mac-a1-b2-c3-d4-e5-f6",
                  "Jsm0lyGpjaVYVP2g3FnmnmG9dI/9qU24wNoykUmermc=")

HUB_SAS = ["hub-sas-a.azure-devices.net", "hub-sas-b.azure-devices.net"]
HUB_X509 = ["hub-x509.azure-devices.net"]
HUB_GRP_SAS = ["hub-grp-sas.azure-devices.net"]
HUB_GRP_CA = ["hub-grp-ca.azure-devices.net"]
HUB_OTHER = ["hub-other.azure-devices.net"]
GROUP_CA_PAYLOAD = {"fw": "1.2", "site": 7}


class CaseFailure(Exception):
    pass


def check(cond, what):
    if not cond:
        raise CaseFailure(what)


# ---- the pinned SDK ----------------------------------------------------------

def ensure_sdk(src_dir, build_root):
    """npm ci the pinned SDK into the build directory when missing or stale;
    returns the node_modules path."""
    cache = os.path.join(build_root, "tests", "conformance", "sdk")
    os.makedirs(cache, exist_ok=True)
    h = hashlib.sha256()
    for name in ("package.json", "package-lock.json"):
        with open(os.path.join(src_dir, name), "rb") as f:
            h.update(f.read())
    h.update(subprocess.run(["node", "--version"], capture_output=True, check=True).stdout)
    stamp_want = h.hexdigest()
    stamp = os.path.join(cache, ".stamp")
    modules = os.path.join(cache, "node_modules")
    with open(os.path.join(cache, ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)   # two test runs may share a build dir
        try:
            with open(stamp) as f:
                if f.read().strip() == stamp_want and os.path.isdir(modules):
                    return modules
        except FileNotFoundError:
            pass
        for name in ("package.json", "package-lock.json"):
            shutil.copyfile(os.path.join(src_dir, name), os.path.join(cache, name))
        if os.path.exists(stamp):
            os.unlink(stamp)
        print("conformance: npm ci of the pinned Azure SDK into " + cache, flush=True)
        npm = shutil.which("npm")
        check(npm is not None, "npm is not installed (Debian: apt-get install npm)")
        r = subprocess.run([npm, "ci", "--no-audit", "--no-fund"], cwd=cache, capture_output=True,
                           text=True, timeout=300)
        if r.returncode != 0:
            sys.stderr.write(r.stdout + r.stderr)
            raise CaseFailure("npm ci failed with exit status %d" % r.returncode)
        with open(stamp, "w") as f:
            f.write(stamp_want + "\n")
    return modules


# ---- credentials -------------------------------------------------------------

def derive_key(group_key, registration_id):
    return base64.b64encode(hmac.new(base64.b64decode(group_key), registration_id.encode(),
                                     hashlib.sha256).digest()).decode()


def dpsctl_derive(build_root, group_key, registration_id):
    """The project's own derivation (`dpsctl derive-key --registration-id ID
    < GROUP_KEY`) when dpsctl is built, None otherwise. It must reproduce the
    published example first; provision.js then checks it against the key it
    derives with node's crypto, as device makers do."""
    dpsctl = os.path.join(build_root, "daemon", "dpsctl")
    if not os.access(dpsctl, os.X_OK):
        return None

    def run(gk, rid):
        r = subprocess.run([dpsctl, "derive-key", "--registration-id", rid], input=gk + "\n",
                           capture_output=True, text=True, timeout=10)
        check(r.returncode == 0 and r.stdout.strip(),
              "dpsctl derive-key failed (exit %d): %s" % (r.returncode, r.stderr.strip()))
        return r.stdout.strip()

    check(run(DERIVE_EXAMPLE[0], DERIVE_EXAMPLE[1]) == DERIVE_EXAMPLE[2],
          "dpsctl derive-key does not reproduce the published example of dps-protocol.md")
    return run(group_key, registration_id)


def make_credentials(src_root, d, devices, sas, groups):
    argv = [os.path.join(src_root, "sim", "dps-sim-certs"), d]
    for x in devices:
        argv += ["--device", x]
    for x in sas:
        argv += ["--sas", x]
    for x in groups:
        argv += ["--group-sas", x]
    subprocess.run(argv, check=True, capture_output=True, timeout=60)


def read(path):
    with open(path) as f:
        return f.read().strip()


# ---- dps-sim -----------------------------------------------------------------

def cfg_str(s):
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def cfg_list(items):
    return "[ " + ", ".join(cfg_str(x) for x in items) + " ]"


def write_config(path, creds):
    """The dps-sim config of every case (per the agreed contract)."""
    k = lambda name: read(os.path.join(creds, name))
    enrollments = [
        "{ registration-id = \"dev-sas\"; attestation = \"symmetric-key\"; primary-key = %s; secondary-key = %s;"
        " hubs = %s; allocation = \"round-robin\"; device-id = \"dev-sas-device\"; payload = \"echo\"; }"
        % (cfg_str(k("dev-sas.sas")), cfg_str(k("dev-sas-2nd.sas")), cfg_list(HUB_SAS)),
        "{ registration-id = \"dev-x509\"; attestation = \"x509\"; certificate = \"dev-x509.crt\"; hubs = %s; }"
        % cfg_list(HUB_X509),
        "{ registration-id = \"dev-disabled\"; attestation = \"symmetric-key\"; primary-key = %s; secondary-key = %s;"
        " hubs = %s; enabled = false; }"
        % (cfg_str(k("dev-disabled.sas")), cfg_str(k("dev-sas-2nd.sas")), cfg_list(HUB_OTHER)),
        "{ registration-id = \"dev-failed\"; attestation = \"symmetric-key\"; primary-key = %s; secondary-key = %s;"
        " hubs = %s; faults = { final-status = \"failed\"; error-code = 400209; }; }"
        % (cfg_str(k("dev-failed.sas")), cfg_str(k("dev-sas-2nd.sas")), cfg_list(HUB_OTHER)),
        "{ group = \"grp-sas\"; attestation = \"symmetric-key\"; primary-key = %s; hubs = %s; }"
        % (cfg_str(k("grp-sas.group-sas")), cfg_list(HUB_GRP_SAS)),
        "{ group = \"grp-ca\"; attestation = \"x509\"; ca = \"device-ca.crt\"; hubs = %s; payload-json = %s; }"
        % (cfg_list(HUB_GRP_CA), cfg_str(json.dumps(GROUP_CA_PAYLOAD))),
    ]
    text = "\n".join([
        "# SPDX-License-Identifier: MIT",
        "# dps-sim config written by run-conformance.py",
        "id-scope = %s;" % cfg_str(SCOPE),
        "tls = { certificate = \"server.crt\"; key = \"server.key\"; };",
        "listen = { mqtt = \"127.0.0.1:0\"; websocket = \"127.0.0.1:0\"; };",
        "throttle = { registrations-per-minute = 1000; operations-per-minute = 1000; polls-per-10s = 5; };",
        "defaults = { assigning-polls = 1; retry-after = 1; };",
        "enrollments = (\n  " + ",\n  ".join(enrollments) + "\n);",
        "",
    ])
    with open(path, "w") as f:
        f.write(text)


class Sim:
    """dps-sim in the foreground, on loopback, ports chosen by the kernel."""

    def __init__(self, binary, config, workdir, name, sets=()):
        self.binary = binary
        self.sets = [a for kv in sets for a in ("--set", kv)]
        self.config = config
        self.ready = os.path.join(workdir, name + ".ready")
        self.events_path = os.path.join(workdir, name + ".events")
        self.log_path = os.path.join(workdir, name + ".stderr")
        self.proc = None
        self.info = None
        self.exit_status = None

    def __enter__(self):
        self.log = open(self.log_path, "w")
        self.proc = subprocess.Popen([self.binary, "--config", self.config, "--events", self.events_path,
                                      "--ready-file", self.ready, "--seed", "1"] + self.sets,
                                     stdin=subprocess.DEVNULL, stdout=self.log, stderr=self.log)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise CaseFailure("dps-sim exited with status %d before it was ready:\n%s"
                                  % (self.proc.returncode, self.stderr()))
            try:
                with open(self.ready) as f:
                    self.info = json.load(f)
                break
            except (FileNotFoundError, json.JSONDecodeError):
                time.sleep(0.02)
        else:
            raise CaseFailure("dps-sim wrote no ready file in 10 s")
        check(self.info.get("pid") == self.proc.pid, "ready file pid %r is not dps-sim's pid %d"
              % (self.info.get("pid"), self.proc.pid))
        return self

    def stop(self):
        """SIGTERM by pid; the contract says dps-sim then exits 0."""
        if self.proc is None or self.exit_status is not None:
            return self.exit_status
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
                self.exit_status = "killed after SIGTERM timed out"
                return self.exit_status
        self.exit_status = self.proc.returncode
        return self.exit_status

    def __exit__(self, exc_type, exc, tb):
        status = self.stop()
        self.log.close()
        # Every case: dps-sim survived the SDK and exits 0 on SIGTERM (under
        # sanitizers, a leak or a memory error shows here).
        if exc_type is None and status != 0:
            raise CaseFailure("dps-sim exit status %r after SIGTERM, expected 0:\n%s" % (status, self.stderr()))
        return False

    def port(self, transport):
        p = self.info.get("ws" if transport == "mqttws" else "mqtt")
        check(isinstance(p, int) and p > 0, "ready file has no %s port: %r" % (transport, self.info))
        return p

    def stderr(self):
        try:
            with open(self.log_path) as f:
                return f.read()[-4000:]
        except OSError:
            return ""

    def events(self):
        out = []
        try:
            with open(self.events_path) as f:
                for n, line in enumerate(f, 1):
                    if line.strip():
                        try:
                            out.append(json.loads(line))
                        except json.JSONDecodeError as e:
                            raise CaseFailure("event log line %d is not JSON (%s): %r" % (n, e, line))
        except FileNotFoundError:
            pass
        return out


# ---- one SDK run -------------------------------------------------------------

class Env:
    def __init__(self, args, modules, build_root, src_root, workdir):
        self.args = args
        self.modules = modules
        self.build_root = build_root
        self.src_root = src_root
        self.workdir = workdir
        self.creds = os.path.join(workdir, "creds")
        self.other = os.path.join(workdir, "other-creds")
        self.config = os.path.join(self.creds, "dps-sim.conf")
        self.sim = os.path.join(build_root, "sim", "dps-sim")
        self.provision_js = os.path.join(src_root, "tests", "conformance", "provision.js")


def provision(env, sim, transport, attestation, registration_id, **extra):
    spec = {
        "modules": env.modules,
        "host": "127.0.0.1:%d" % sim.port(transport),
        "idScope": SCOPE,
        "registrationId": registration_id,
        "transport": transport,
        "attestation": attestation,
        "timeoutMs": 20000,
    }
    spec.update(extra)
    node_env = dict(os.environ)
    node_env["NODE_EXTRA_CA_CERTS"] = os.path.join(env.creds, "ca.crt")
    node_env.pop("NODE_OPTIONS", None)
    node_env["NODE_NO_WARNINGS"] = "1"   # "Setting the TLS ServerName to an IP address" is noise here
    try:
        r = subprocess.run(["node", env.provision_js, json.dumps(spec)], capture_output=True, text=True,
                           timeout=40, env=node_env)
    except subprocess.TimeoutExpired:
        raise CaseFailure("node provision.js did not finish in 40 s")
    lines = [l for l in r.stdout.splitlines() if l.startswith("{")]
    if not lines:
        raise CaseFailure("provision.js printed no result (exit %d):\n%s%s" % (r.returncode, r.stdout, r.stderr))
    out = json.loads(lines[-1])
    out["exit"] = r.returncode
    out["stderr"] = r.stderr
    if env.args.verbose:
        print("    sdk %s %s %s -> %s" % (transport, attestation, registration_id, lines[-1]))
    return out


# ---- assertions on the event log ---------------------------------------------

def conns_of(events, registration_id):
    """conn ids whose CONNECT carried this client id."""
    return [e["conn"] for e in events if e.get("event") == "connect" and e.get("clientId") == registration_id]


def check_connect(ev, registration_id, auth):
    """CONNECT as the SDK sends it: ClientId = registration id, CleanSession 1,
    username with api-version and &ClientVersion=, keep-alive 180 s."""
    want_user = "%s/registrations/%s/api-version=%s&ClientVersion=%s" % (
        SCOPE, registration_id, API_VERSION, SDK_USER_AGENT.replace("/", "%2F"))
    check(ev.get("username") == want_user, "connect username %r, expected %r" % (ev.get("username"), want_user))
    check(ev.get("cleanSession") in (True, 1), "connect cleanSession %r, the SDK sends 1" % ev.get("cleanSession"))
    check(ev.get("keepAlive") == 180, "connect keepAlive %r, the SDK sends 180" % ev.get("keepAlive"))
    check(ev.get("auth") == auth, "connect auth %r, expected %r" % (ev.get("auth"), auth))
    check(ev.get("returnCode") == 0, "connect returnCode %r, expected 0 (accepted)" % ev.get("returnCode"))


def check_flow(events, registration_id, auth, polls=1, retry_after=1, final="assigned", final_status=200,
               listener="mqtt"):
    """The accepted connection's requests and responses, in order:
    connect, subscribe, register, (response 202, poll)*polls, final response."""
    conns = conns_of(events, registration_id)
    check(len(conns) == 1, "expected one connection from %s, the event log has %d" % (registration_id, len(conns)))
    accept = [e for e in events if e.get("conn") == conns[0] and e.get("event") == "accept"]
    check(len(accept) == 1 and accept[0].get("listener") == listener,
          "the connection came in on %r, expected the %s listener" % (accept and accept[0].get("listener"), listener))
    mine = [e for e in events if e.get("conn") == conns[0]
            and e.get("event") in ("connect", "subscribe", "register", "poll", "response")]
    kinds = [e["event"] for e in mine]
    want = ["connect", "subscribe", "register"] + ["response", "poll"] * polls + ["response"]
    check(kinds == want, "event sequence %s, expected %s" % (kinds, want))
    check_connect(mine[0], registration_id, auth)
    sub = mine[1]
    check(sub.get("topic") == "$dps/registrations/res/#", "subscribe topic %r" % sub.get("topic"))
    check(sub.get("grantedQos") == 1, "SDK subscribes at QoS 1, granted %r" % sub.get("grantedQos"))
    reg = mine[2]
    check(reg.get("registrationId") == registration_id, "register registrationId %r" % reg.get("registrationId"))
    check(UUID_RE.match(str(reg.get("rid"))), "the SDK's $rid is a UUID v4, logged %r" % reg.get("rid"))
    check(isinstance(reg.get("bodyLength"), int) and reg["bodyLength"] > 0,
          "the SDK sends a JSON register body, logged bodyLength %r" % reg.get("bodyLength"))
    rids = set()
    req = reg
    for i in range(3, len(mine), 2):
        resp = mine[i]
        check(resp.get("rid") == req.get("rid"), "response rid %r does not echo request rid %r"
              % (resp.get("rid"), req.get("rid")))
        check(req.get("rid") not in rids, "the SDK reused $rid %r" % req.get("rid"))
        rids.add(req.get("rid"))
        last = i == len(mine) - 1
        if not last:
            check(resp.get("status") == 202, "response %d status %r, expected 202" % (i, resp.get("status")))
            check(resp.get("bodyStatus") == "assigning", "response bodyStatus %r, expected assigning"
                  % resp.get("bodyStatus"))
            check(resp.get("retryAfter") == retry_after, "response retryAfter %r, expected %r"
                  % (resp.get("retryAfter"), retry_after))
            poll = mine[i + 1]
            check(poll.get("operationId"), "poll without operationId")
            check(UUID_RE.match(str(poll.get("rid"))), "poll $rid %r is not a UUID" % poll.get("rid"))
            # The SDK waits retry-after * 1000 ms after the response arrived.
            waited = poll["ts"] - resp["ts"]
            check(waited >= retry_after - 0.01, "poll came %.3f s after a response with retry-after %d"
                  % (waited, retry_after))
            req = poll
        else:
            check(resp.get("status") == final_status, "final response status %r, expected %r"
                  % (resp.get("status"), final_status))
            check(resp.get("bodyStatus") == final, "final bodyStatus %r, expected %r"
                  % (resp.get("bodyStatus"), final))
    ops = {e.get("operationId") for e in mine if e["event"] == "poll"}
    check(len(ops) <= 1, "polls carry different operationIds: %s" % ops)


def check_refused(events, registration_id, sdk):
    """The SDK reports a failure, the sim refused the CONNECT (or, for
    unknown ids, answered 401/404) and never assigned anything."""
    check(not sdk["ok"], "the SDK reported success: %r" % sdk.get("result"))
    check(sdk["exit"] == 1, "provision.js exit %d (1 = SDK reported failure, 3 = timeout)" % sdk["exit"])
    check(not any(e.get("event") == "response" and e.get("bodyStatus") == "assigned" for e in events),
          "the sim assigned a hub although it should refuse")
    conns = conns_of(events, registration_id)
    connect_refused = [e for e in events if e.get("event") == "connect" and e.get("clientId") == registration_id
                       and e.get("returnCode") in (4, 5)]
    answered = [e for e in events if e.get("event") == "response" and e.get("conn") in conns
                and e.get("status") in (401, 404)]
    check(connect_refused or answered,
          "the event log shows neither a refused CONNECT (returnCode 4/5) nor a 401/404 for %s" % registration_id)
    if connect_refused:
        check(not any(e.get("event") in ("register", "poll") and e.get("conn") in conns for e in events),
              "the sim handled requests on a refused connection")
        err = sdk["error"]
        check(err.get("code") in (4, 5) or "not authorized" in err.get("message", "").lower()
              or "bad username or password" in err.get("message", "").lower(),
              "the SDK error does not say the CONNECT was refused: %r" % err)
    else:
        err = sdk["error"]
        status = answered[0]["status"]
        want = {401: "UnauthorizedError", 404: "DeviceNotFoundError"}[status]
        check(err.get("status") == status and err.get("name") == want,
              "the sim answered %d but the SDK reports %r" % (status, err))
        code = (err.get("result") or {}).get("errorCode")
        check(isinstance(code, int) and code // 1000 == status,
              "error body errorCode %r does not match status %d" % (code, status))
    if connect_refused:
        return "CONNACK %s" % connect_refused[0]["returnCode"]
    # Real DPS accepts the CONNECT and answers the register with 401
    # (errorCode 401000/401002); the sim logs why it did not authorize.
    accepted = [e for e in events if e.get("event") == "connect" and e.get("conn") in conns]
    check(all(e.get("authorized") is not True for e in accepted),
          "the connect event says authorized although the answer was %d" % answered[0]["status"])
    why = [e.get("reason") for e in accepted if e.get("reason")]
    return "status %s%s" % (answered[0]["status"], " (%s)" % why[0] if why else "")


def check_assigned(sdk, registration_id, hubs, device_id=None):
    check(sdk["ok"], "the SDK failed: %r" % sdk.get("error"))
    r = sdk["result"]
    check(r.get("registrationId") == registration_id, "registrationId %r" % r.get("registrationId"))
    check(r.get("assignedHub") in hubs, "assignedHub %r not one of the enrollment's %s" % (r.get("assignedHub"), hubs))
    want_dev = device_id or registration_id
    check(r.get("deviceId") == want_dev, "deviceId %r, expected %r" % (r.get("deviceId"), want_dev))
    check(r.get("status") == "assigned", "registrationState.status %r" % r.get("status"))
    return r


# ---- the cases ----------------------------------------------------------------

def case_positive(transport, attestation):
    def run(env):
        kw = {}
        note = ""
        if attestation == "sas":
            rid, hubs, dev, auth = "dev-sas", HUB_SAS, "dev-sas-device", "sas"
            kw = {"key": read(os.path.join(env.creds, "dev-sas.sas")), "payload": {"model": "m1", "n": 3}}
        elif attestation == "group-sas":
            rid, hubs, dev, auth = "grp-sas-dev-%s" % transport, HUB_GRP_SAS, None, "sas"
            gk = read(os.path.join(env.creds, "grp-sas.group-sas"))
            kw = {"groupKey": gk}
            derived = dpsctl_derive(env.build_root, gk, rid)
            check(derived is None or derived == derive_key(gk, rid), "dpsctl derive-key differs from HMAC-SHA256")
            if derived:
                kw["derivedKey"] = derived
            note = " (device key: dpsctl derive-key = node crypto)" if derived else " (device key: node crypto)"
        elif attestation == "x509":
            rid, hubs, dev, auth = "dev-x509", HUB_X509, None, "x509"
            kw = {"cert": os.path.join(env.creds, "dev-x509.crt"), "certKey": os.path.join(env.creds, "dev-x509.key")}
        elif attestation == "x509-group":
            rid, hubs, dev, auth = "grp-x509-1", HUB_GRP_CA, None, "x509"
            kw = {"cert": os.path.join(env.creds, "grp-x509-1-chain.crt"),
                  "certKey": os.path.join(env.creds, "grp-x509-1.key")}
        sdk_att = "x509" if attestation.startswith("x509") else attestation
        with Sim(env.sim, env.config, env.workdir, "%s-%s" % (transport, attestation)) as sim:
            try:
                sdk = provision(env, sim, transport, sdk_att, rid, **kw)
                r = check_assigned(sdk, rid, hubs, dev)
                check(r.get("substatus") == "initialAssignment", "substatus %r on a first registration"
                      % r.get("substatus"))
                if attestation == "sas":
                    check(r.get("payload") == kw["payload"], "payload %r, the enrollment echoes %r"
                          % (r.get("payload"), kw["payload"]))
                if attestation == "x509-group":
                    check(r.get("payload") == GROUP_CA_PAYLOAD, "payload %r, the enrollment returns %r"
                          % (r.get("payload"), GROUP_CA_PAYLOAD))
                check_flow(sim.events(), rid, auth, listener="websocket" if transport == "mqttws" else "mqtt")
            except CaseFailure:
                print(sim.stderr(), file=sys.stderr)
                raise
        return "%s %s%s" % (r["assignedHub"], r["deviceId"], note)
    return run


def case_reregister(env):
    """DPS keeps the registration: a second registration gets the same hub and device id."""
    key = read(os.path.join(env.creds, "dev-sas.sas"))
    with Sim(env.sim, env.config, env.workdir, "reregister") as sim:
        first = check_assigned(provision(env, sim, "mqtt", "sas", "dev-sas", key=key), "dev-sas", HUB_SAS,
                               "dev-sas-device")
        second = check_assigned(provision(env, sim, "mqttws", "sas", "dev-sas", key=key), "dev-sas", HUB_SAS,
                                "dev-sas-device")
        check(second["assignedHub"] == first["assignedHub"], "second registration moved %s -> %s"
              % (first["assignedHub"], second["assignedHub"]))
        check(second.get("createdDateTimeUtc") == first.get("createdDateTimeUtc"),
              "createdDateTimeUtc changed on re-registration: %r -> %r"
              % (first.get("createdDateTimeUtc"), second.get("createdDateTimeUtc")))
        check(len(conns_of(sim.events(), "dev-sas")) == 2, "expected two connections in the event log")
    return "same hub %s" % second["assignedHub"]


def case_secondary_key(env):
    """An individual enrollment accepts a token signed with its secondary key."""
    key = read(os.path.join(env.creds, "dev-sas-2nd.sas"))
    with Sim(env.sim, env.config, env.workdir, "secondary") as sim:
        r = check_assigned(provision(env, sim, "mqtt", "sas", "dev-sas", key=key), "dev-sas", HUB_SAS,
                           "dev-sas-device")
        check_flow(sim.events(), "dev-sas", "sas")
    return r["assignedHub"]


def case_wrong_key(transport, connack=False):
    """A valid key of another device. DPS answers the register with 401; with
    auth-failure=connack the sim refuses the CONNECT instead (return code 5),
    the path some clients must also handle."""
    def run(env):
        wrong = read(os.path.join(env.creds, "dev-disabled.sas"))
        sets = ["auth-failure=connack"] if connack else []
        with Sim(env.sim, env.config, env.workdir, "wrong-key-%s%s" % (transport, "-connack" if connack else ""),
                 sets=sets) as sim:
            sdk = provision(env, sim, transport, "sas", "dev-sas", key=wrong)
            how = check_refused(sim.events(), "dev-sas", sdk)
            check(how.startswith("CONNACK") == connack, "refused with %s" % how)
            return how
    return run


def case_wrong_group_key(env):
    """A device key derived from a group key that is not the enrollment's."""
    with Sim(env.sim, env.config, env.workdir, "wrong-group-key") as sim:
        sdk = provision(env, sim, "mqtt", "group-sas", "grp-sas-dev-9",
                        groupKey=read(os.path.join(env.creds, "grp-other.group-sas")))
        return check_refused(sim.events(), "grp-sas-dev-9", sdk)


def case_expired(env):
    key = read(os.path.join(env.creds, "dev-sas.sas"))
    with Sim(env.sim, env.config, env.workdir, "expired") as sim:
        sdk = provision(env, sim, "mqtt", "sas", "dev-sas", key=key, expiry=int(time.time()) - 120)
        return check_refused(sim.events(), "dev-sas", sdk)


def case_unknown(env):
    """No enrollment: DPS cannot verify the token, so it refuses (401) or does not find it (404)."""
    key = read(os.path.join(env.creds, "dev-unknown.sas"))
    with Sim(env.sim, env.config, env.workdir, "unknown") as sim:
        sdk = provision(env, sim, "mqtt", "sas", "dev-unknown", key=key)
        return check_refused(sim.events(), "dev-unknown", sdk)


def case_x509_cn_mismatch(env):
    """A valid device certificate presented for another registration id."""
    with Sim(env.sim, env.config, env.workdir, "x509-cn") as sim:
        sdk = provision(env, sim, "mqtt", "x509", "grp-x509-other",
                        cert=os.path.join(env.creds, "grp-x509-1-chain.crt"),
                        certKey=os.path.join(env.creds, "grp-x509-1.key"))
        return check_refused(sim.events(), "grp-x509-other", sdk)


def case_x509_untrusted(env):
    """CN=dev-x509 but issued by a CA no enrollment knows."""
    with Sim(env.sim, env.config, env.workdir, "x509-untrusted") as sim:
        sdk = provision(env, sim, "mqtt", "x509", "dev-x509",
                        cert=os.path.join(env.other, "dev-x509-chain.crt"),
                        certKey=os.path.join(env.other, "dev-x509.key"))
        check(not sdk["ok"], "the SDK reported success with an untrusted certificate")
        events = sim.events()
        if not any(e.get("event") == "connect" for e in events):
            return "TLS handshake"      # refused before MQTT
        return check_refused(events, "dev-x509", sdk)


def case_retry(status):
    """The first register answers an error the SDK retries (429 with
    retry-after, or 503): the SDK registers again and is assigned."""
    def run(env):
        key = read(os.path.join(env.creds, "dev-sas.sas"))
        with Sim(env.sim, env.config, env.workdir, "retry-%d" % status,
                 sets=["fail-first=1", "fail-status=%d" % status]) as sim:
            sdk = provision(env, sim, "mqtt", "sas", "dev-sas", key=key)
            check_assigned(sdk, "dev-sas", HUB_SAS, "dev-sas-device")
            events = sim.events()
            conns = conns_of(events, "dev-sas")
            check(len(conns) == 1, "the SDK reconnected (%d connections) instead of retrying on its session" % len(conns))
            mine = [e for e in events if e.get("conn") == conns[0] and e.get("event") in ("register", "poll", "response")]
            kinds = [(e["event"], e.get("status")) for e in mine]
            want = [("register", None), ("response", status), ("register", None), ("response", 202),
                    ("poll", None), ("response", 200)]
            check(kinds == want, "sequence %s, expected %s" % (kinds, want))
            err = mine[1]
            if status == 429:
                check(err.get("retryAfter") == 1, "429 without retry-after 1: %r" % err.get("retryAfter"))
            waited = mine[2]["ts"] - err["ts"]
            check(waited >= (err.get("retryAfter") or 0) - 0.01,
                  "the SDK registered again %.3f s after a %d with retry-after %r" % (waited, status, err.get("retryAfter")))
            check(mine[2].get("rid") != mine[0].get("rid"), "the retried register reused its $rid")
        return "registered again after %.1f s, then assigned" % waited
    return run


def case_disabled(env):
    key = read(os.path.join(env.creds, "dev-disabled.sas"))
    with Sim(env.sim, env.config, env.workdir, "disabled") as sim:
        sdk = provision(env, sim, "mqtt", "sas", "dev-disabled", key=key)
        check(not sdk["ok"], "the SDK reported success for a disabled enrollment")
        # The SDK has no 'disabled' case: it fails with SyntaxError('status is disabled').
        check("disabled" in sdk["error"]["message"], "SDK error %r does not mention disabled" % sdk["error"])
        final = [e for e in sim.events() if e.get("event") == "response"][-1:]
        check(final and final[0].get("bodyStatus") == "disabled", "last response %r" % final)
    return sdk["error"]["message"]


def case_failed(env):
    key = read(os.path.join(env.creds, "dev-failed.sas"))
    with Sim(env.sim, env.config, env.workdir, "failed") as sim:
        sdk = provision(env, sim, "mqtt", "sas", "dev-failed", key=key)
        check(not sdk["ok"], "the SDK reported success for final-status failed")
        err = sdk["error"]
        # azure-iot-common's DeviceRegistrationFailedError names itself ProvisioningRegistrationFailedError.
        check(err.get("name") in ("DeviceRegistrationFailedError", "ProvisioningRegistrationFailedError"),
              "SDK error %r" % err)
        state = (err.get("result") or {}).get("registrationState") or {}
        check(state.get("errorCode") == 400209, "registrationState.errorCode %r, expected 400209"
              % state.get("errorCode"))
        check_flow(sim.events(), "dev-failed", "sas", final="failed")
    return "%s errorCode %s" % (err["name"], state.get("errorCode"))


TRANSPORTS = ["mqtt", "mqttws"]
ATTESTATIONS = ["sas", "group-sas", "x509", "x509-group"]


def all_cases():
    cases = []
    for t in TRANSPORTS:
        for a in ATTESTATIONS:
            cases.append(("%s/%s" % (t, a), case_positive(t, a)))
    cases += [
        ("reregister", case_reregister),
        ("secondary-key", case_secondary_key),
        ("mqtt/wrong-key", case_wrong_key("mqtt")),
        ("mqttws/wrong-key", case_wrong_key("mqttws")),
        ("mqtt/wrong-key-connack", case_wrong_key("mqtt", connack=True)),
        ("mqttws/wrong-key-connack", case_wrong_key("mqttws", connack=True)),
        ("wrong-group-key", case_wrong_group_key),
        ("expired-token", case_expired),
        ("unknown-registration", case_unknown),
        ("x509-cn-mismatch", case_x509_cn_mismatch),
        ("x509-untrusted", case_x509_untrusted),
        ("mqtt/throttled-429", case_retry(429)),
        ("mqtt/service-503", case_retry(503)),
        ("disabled", case_disabled),
        ("failed", case_failed),
    ]
    return cases


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--case", action="append", default=[])
    ap.add_argument("--keep", action="store_true")
    ap.add_argument("-v", "--verbose", action="store_true")
    ap.add_argument("-j", "--jobs", type=int, default=4)
    args = ap.parse_args()

    if shutil.which("node") is None:
        print("SKIP: node is not installed")
        return 77
    here = os.path.dirname(os.path.abspath(__file__))
    src_root = os.environ.get("DPSD_SOURCE_ROOT") or os.path.dirname(os.path.dirname(here))
    build_root = os.environ.get("DPSD_BUILD_ROOT")
    if not build_root:
        print("DPSD_BUILD_ROOT is not set (run through meson test)", file=sys.stderr)
        return 1
    env_sim = os.path.join(build_root, "sim", "dps-sim")
    if not os.access(env_sim, os.X_OK):
        print("FAIL: %s is not built" % env_sim, file=sys.stderr)
        return 1

    try:
        modules = ensure_sdk(here, build_root)
    except (CaseFailure, subprocess.SubprocessError, OSError) as e:
        print("FAIL: cannot install the pinned SDK: %s" % e, file=sys.stderr)
        return 1

    workdir = tempfile.mkdtemp(prefix="dpsd-conformance-")
    try:
        env = Env(args, modules, build_root, src_root, workdir)
        make_credentials(src_root, env.creds, ["dev-x509", "grp-x509-1"],
                         ["dev-sas", "dev-sas-2nd", "dev-disabled", "dev-failed", "dev-unknown"],
                         ["grp-sas", "grp-other"])
        make_credentials(src_root, env.other, ["dev-x509"], [], [])
        write_config(env.config, env.creds)

        cases = [c for c in all_cases() if not args.case or c[0] in args.case]
        unknown = set(args.case) - {c[0] for c in all_cases()}
        if unknown:
            print("unknown case(s): %s" % ", ".join(sorted(unknown)), file=sys.stderr)
            return 1

        def run_one(case):
            name, fn = case
            t0 = time.monotonic()
            try:
                return name, True, fn(env), time.monotonic() - t0
            except CaseFailure as e:
                return name, False, str(e), time.monotonic() - t0
            except Exception:   # a bug in the runner or an unexpected sim answer: report, go on
                return name, False, traceback.format_exc(), time.monotonic() - t0

        with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
            results = list(pool.map(run_one, cases))

        failed = 0
        for name, ok, detail, secs in results:
            failed += not ok
            print("%-4s %-26s %5.1fs  %s" % ("ok" if ok else "FAIL", name, secs, detail), flush=True)

        byname = {r[0]: r[1] for r in results}
        if any(("%s/%s" % (t, a)) in byname for t in TRANSPORTS for a in ATTESTATIONS):
            print("\nmatrix        " + "".join("%-12s" % a for a in ATTESTATIONS))
            for t in TRANSPORTS:
                cells = [byname.get("%s/%s" % (t, a)) for a in ATTESTATIONS]
                print("%-14s" % t + "".join("%-12s" % ("-" if c is None else "pass" if c else "FAIL")
                                              for c in cells))
        print("\n%d of %d cases passed" % (len(results) - failed, len(results)))
        return 1 if failed else 0
    finally:
        if args.keep:
            print("kept " + workdir)
        else:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
