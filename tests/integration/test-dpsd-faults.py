#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
# test-dpsd-faults.py: dpsd against a misbehaving dps-sim: throttling, errors, rejected keys, drops, silence, bad bodies, final failures
import os
import re
import time

from dpsdtest import PrivateBus, World, check, main, wait_for


def requests_after(sim):
    """Every register/poll with the response before it (any connection)."""
    reqs = sim.events("register") + sim.events("poll")
    resps = sim.events("response")
    out = []
    for q in sorted(reqs, key=lambda e: e["ts"]):
        prev = [r for r in resps if r["ts"] < q["ts"]]
        out.append((q, prev[-1] if prev else None))
    return out


def test_throttled_429_honours_retry_after():
    with World() as w:
        sim = w.sim([w.sas_enrollment()],
                    defaults={"assigning-polls": 1, "retry-after": 2, "fail-first": 2, "fail-status": 429})
        d = w.dpsd(w.dpsd_conf(sim))
        d.wait_provisioned(timeout=25)
        check(any("throttled by service" in s for s in d.notify.statuses()), d.notify.statuses())
        statuses = [r["status"] for r in sim.events("response")]
        check(statuses.count(429) == 2, statuses)
        # no request came before the previous answer's retry-after elapsed
        for q, prev in requests_after(sim):
            if prev and prev["retryAfter"] is not None:
                gap = q["ts"] - prev["ts"]
                check(gap >= prev["retryAfter"], "%s %.3f s after an answer with retry-after %d"
                      % (q["event"], gap, prev["retryAfter"]))
        # "retry the same request": re-sent on the same connection
        check(len(sim.events("connect")) == 1, sim.events("connect"))


def test_long_retry_after_is_not_a_timeout():
    # The service's wait (3 s) is longer than timeouts.total-sec (2 s): dpsd
    # must poll after it, not give up and register again (a billed request)
    # into the same wait for ever.
    with World() as w:
        sim = w.sim([w.sas_enrollment()], defaults={"assigning-polls": 2, "retry-after": 3})
        conf = w.dpsd_conf(sim, timeouts={"connect-sec": 5, "response-sec": 5, "total-sec": 2})
        d = w.dpsd(conf)
        d.wait_provisioned(timeout=20)
        check(len(sim.events("register")) == 1, sim.events("register"))
        check(len(sim.events("poll")) == 2, sim.events("poll"))


def test_retry_after_zero_does_not_poll_at_once():
    # "retry-after=0" is not an invitation to poll at round-trip speed
    # ("5 polls per 10 s per device"): dpsd leaves at least 1 s.
    with World() as w:
        sim = w.sim([w.sas_enrollment()], defaults={"assigning-polls": 3, "retry-after": 0})
        d = w.dpsd(w.dpsd_conf(sim))
        d.wait_provisioned(timeout=20)
        reqs = sorted(sim.events("register") + sim.events("poll"), key=lambda e: e["ts"])
        check(len(reqs) == 4, reqs)
        for a, b in zip(reqs, reqs[1:]):
            check(b["ts"] - a["ts"] >= 1.0, "polled %.3f s after the previous request" % (b["ts"] - a["ts"]))


def test_reprovision_waits_for_the_services_retry_after():
    # A 429 asks for 31 s (over the 30 s dpsd keeps a connection for), so
    # the attempt ends and dpsd waits. An operator's Reprovision clears
    # dpsd's own back-off, but not the service's wait.
    with World() as w:
        bus = PrivateBus(w)
        sim = w.sim([w.sas_enrollment()],
                    defaults={"assigning-polls": 1, "retry-after": 31, "fail-first": 1, "fail-status": 429})
        d = w.dpsd(w.dpsd_conf(sim), env={"DBUS_SYSTEM_BUS_ADDRESS": bus.address})
        wait_for(lambda: "READY=1" in d.notify.lines(), 10, "READY=1 (the bus name is owned)")
        wait_for(lambda: d.alive() and bus.get("State") == "retrying", 10, "dpsd retrying after the 429")
        throttled_at = sim.events("response")[0]["ts"]
        r = bus.call("Reprovision", "t", 0)
        check(r.returncode == 0 and r.stdout.strip() == "b true", "Reprovision: %s %s" % (r.stdout, r.stderr))
        time.sleep(3)
        check(len(sim.events("register")) == 1, "a request %d s into a 31 s retry-after: %r"
              % (3, sim.events("register")))
        next_attempt = bus.get("NextAttempt") / 1e6
        check(next_attempt >= throttled_at + 31, "NextAttempt %.1f s after the 429, expected >= 31"
              % (next_attempt - throttled_at))
        check(bus.get("State") == "retrying", bus.get("State"))


def test_server_errors_then_success():
    with World() as w:
        sim = w.sim([w.sas_enrollment()],
                    defaults={"assigning-polls": 1, "retry-after": 0, "fail-first": 3, "fail-status": 503})
        conf = w.dpsd_conf(sim, retry={"min-sec": 1, "max-sec": 2})
        d = w.dpsd(conf)
        d.wait_provisioned(timeout=25)
        statuses = [r["status"] for r in sim.events("response")]
        check(statuses[:3] == [503, 503, 503] and statuses[-1] == 200, statuses)
        # the back-off counts up (retry 1, 2, 3) and never retries faster than min/2
        retries = [int(m.group(1)) for s in d.notify.statuses() for m in [re.search(r"before retry (\d+)", s)] if m]
        check(retries == [1, 2, 3], retries)
        regs = sim.events("register")
        check(len(regs) == 4, regs)
        for a, b in zip(regs, regs[1:]):
            check(b["ts"] - a["ts"] >= 0.5, "retried after %.3f s" % (b["ts"] - a["ts"]))


def test_credentials_rejected_backs_off_long():
    with World() as w:
        sim = w.sim([w.sas_enrollment()])
        w.write("wrong.sas", "c3VyZWx5IG5vdCB0aGUgcmlnaHQga2V5IGF0IGFsbCEhIQ==\n", 0o600)
        w.secrets.append("c3VyZWx5IG5vdCB0aGUgcmlnaHQga2V5IGF0IGFsbCEhIQ==")
        d = w.dpsd(w.dpsd_conf(sim, key_file="wrong.sas"))
        st = d.wait_status("credentials rejected")
        m = re.search(r"Waiting (\d+) s before retry 1", st)
        check(m and int(m.group(1)) >= 300, "credentials back-off too short: %r" % st)
        check("check the key" in st, st)
        statuses = [r["status"] for r in sim.events("response")]
        check(statuses == [401], statuses)
        out = d.output()
        check("errorCode 401002" in out, "the DPS errorCode is not logged")
        # and it stays quiet
        time.sleep(1.5)
        check(len(sim.events("register")) == 1, sim.events("register"))
        check(d.alive(), "dpsd exited")


def test_x509_not_enrolled_is_a_credentials_failure():
    with World(devices=("dev-x509", "dev-other")) as w:
        sim = w.sim([{"registration-id": "dev-x509", "attestation": "x509", "certificate": "dev-x509.crt",
                      "hubs": ["hub-a.azure-devices.net"]}])
        conf = w.dpsd_conf(sim, regid="dev-other")
        conf["attestation"] = {"type": "x509", "certificate-file": "dev-other-chain.crt", "key-file": "dev-other.key"}
        d = w.dpsd(conf)
        st = d.wait_status("credentials rejected")
        m = re.search(r"Waiting (\d+) s before retry 1", st)
        check(m and int(m.group(1)) >= 300, st)
        check(d.alive(), "dpsd exited")


def test_connection_dropped_after_register():
    with World() as w:
        sim = w.sim([w.sas_enrollment()], defaults={"assigning-polls": 1, "retry-after": 1, "drop": "after-register"})
        d = w.dpsd(w.dpsd_conf(sim))
        st = d.wait_status("connection lost to 127.0.0.1")
        check("before retry 1" in st, st)
        wait_for(lambda: len(sim.events("register")) >= 2, 10, "a second registration after the drop")
        check(d.alive(), "dpsd exited")


def test_server_silent_times_out():
    with World() as w:
        sim = w.sim([w.sas_enrollment()], defaults={"silent": True})
        conf = w.dpsd_conf(sim, timeouts={"connect-sec": 5, "response-sec": 1, "total-sec": 60})
        d = w.dpsd(conf)
        st = d.wait_status("no answer from the service within 1 s")
        check("before retry 1" in st, st)
        wait_for(lambda: len(sim.events("connect")) >= 2, 10, "a new connection after the timeout")
        check(d.alive(), "dpsd exited")


def test_malformed_and_oversized_bodies():
    for body, word in (("malformed", "malformed response body"), ("oversized", "oversized response body")):
        with World() as w:
            sim = w.sim([w.sas_enrollment()], defaults={"assigning-polls": 1, "retry-after": 1, "body": body})
            d = w.dpsd(w.dpsd_conf(sim))
            st = d.wait_status(word)
            check("before retry 1" in st, st)
            check(d.alive(), "dpsd exited")


def test_hostile_assignment_refused():
    """A hub name with a newline would inject sd_notify fields through
    STATUS= and shell code through identity.env: never accepted."""
    with World() as w:
        sim = w.sim([w.sas_enrollment(hubs=["evil\nREADY=1\nMAINPID=1"])])
        d = w.dpsd(w.dpsd_conf(sim))
        st = d.wait_status("invalid hub or device id")
        check("before retry 1" in st, st)
        check(not any(l.startswith("MAINPID") for l in d.notify.lines()), d.notify.lines())
        check(d.notify.lines().count("READY=1") == 1, d.notify.lines())
        check(not os.path.exists(w.path("run/identity.env")), "identity.env written")


def test_failed_and_disabled():
    with World() as w:
        sim = w.sim([w.sas_enrollment(faults={"final-status": "failed", "error-code": 400209})])
        d = w.dpsd(w.dpsd_conf(sim))
        st = d.wait_status("Registration failed")
        check("errorCode 400209" in st, st)
        check(re.search(r"next try in \d+ s", st), st)
        check(d.alive(), "dpsd exited")

    with World() as w:
        sim = w.sim([w.sas_enrollment(faults={"final-status": "disabled"})])
        d = w.dpsd(w.dpsd_conf(sim))
        st = d.wait_status("is disabled in DPS")
        check(st.startswith("Enrollment of dev-sas is disabled in DPS"), st)
        check(d.alive(), "dpsd exited")


def test_tls_handshake_never_answered():
    """The kernel accepts the TCP connection, nobody speaks TLS: the
    handshake must not block the loop, the connect timeout ends it."""
    import socket
    with World() as w:
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        s.listen(4)
        try:
            class Mute:
                port = s.getsockname()[1]
            d = w.dpsd(w.dpsd_conf(Mute(), timeouts={"connect-sec": 1, "response-sec": 5, "total-sec": 60}),
                       watchdog_usec=1000000)
            st = d.wait_status("no connection to 127.0.0.1:%d within 1 s" % Mute.port)
            check("before retry 1" in st, st)
            # the loop kept running meanwhile: watchdog pings continue
            n = d.notify.lines().count("WATCHDOG=1")
            wait_for(lambda: d.notify.lines().count("WATCHDOG=1") > n, 3, "more WATCHDOG=1")
        finally:
            s.close()


def test_nothing_listening():
    with World() as w:
        import socket
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        s.close()    # a port nothing listens on (loopback refuses at once)

        class Closed:
            pass
        c = Closed()
        c.port = port
        d = w.dpsd(w.dpsd_conf(c))
        st = d.wait_status("before retry 1")
        check("127.0.0.1:%d" % port in st, st)
        d.wait_status("before retry 2", timeout=10)
        check(d.alive(), "dpsd exited")


if __name__ == "__main__":
    main([test_throttled_429_honours_retry_after, test_long_retry_after_is_not_a_timeout,
          test_retry_after_zero_does_not_poll_at_once, test_reprovision_waits_for_the_services_retry_after,
          test_server_errors_then_success,
          test_credentials_rejected_backs_off_long, test_x509_not_enrolled_is_a_credentials_failure,
          test_connection_dropped_after_register,
          test_server_silent_times_out, test_tls_handshake_never_answered, test_malformed_and_oversized_bodies,
          test_hostile_assignment_refused, test_failed_and_disabled,
          test_nothing_listening])
