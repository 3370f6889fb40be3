#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
# test-sim-faults: each dps-sim fault option shows a client exactly the injected behaviour
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from mqttlite import (ConnectionClosed, dps_request, dps_username, parse_response_topic, poll_topic,  # noqa: E402
                      provision, register_topic, sas_token)
from simharness import SCOPE, Sim, random_key, run_tests, sas_enrollment  # noqa: E402

REG = "dev-f"


def sim_with(sets=(), extra="", throttle="polls-per-10s = 0;", **kw):
    key = random_key()
    sim = Sim(enrollments=[sas_enrollment(REG, key, extra=extra)], sets=sets, throttle=throttle, **kw)
    sim.key = key
    return sim


def test_assigning_polls_n():
    for n in (0, 1, 3):
        with sim_with([f"assigning-polls={n}"]) as sim:
            c = sim.sas_client(REG, sim.key)
            answers = provision(c, sleep=False)
            statuses = [a[0] for a in answers]
            assert statuses == [202] * n + [200], (n, statuses)
            assert all(a[2]["status"] == "assigning" for a in answers[:-1])
            assert answers[-1][2]["status"] == "assigned"
            c.disconnect()


def test_retry_after_value_and_none():
    with sim_with(["retry-after=7", "assigning-polls=2"]) as sim:
        c = sim.sas_client(REG, sim.key)
        answers = provision(c, sleep=False)
        assert [a[1].get("retry-after") for a in answers] == ["7", "7", None], answers
        c.disconnect()
        ev = sim.events("response")
        assert [e["retryAfter"] for e in ev] == [7, 7, None], ev
    with sim_with(["retry-after=-1"]) as sim:
        c = sim.sas_client(REG, sim.key)
        answers = provision(c, sleep=False)
        assert answers[0][0] == 202 and "retry-after" not in answers[0][1], answers
        c.disconnect()


def test_fail_first_then_success():
    with sim_with(["fail-first=2", "assigning-polls=0"]) as sim:
        c = sim.sas_client(REG, sim.key)
        for i in range(2):
            status, props, body = dps_request(c, register_topic(str(i)))
            assert status == 503 and body["errorCode"] == 503000, (status, body)
            assert "retry-after" not in props
        status, _, body = dps_request(c, register_topic("2"))
        assert status == 200 and body["status"] == "assigned", body
        c.disconnect()
        kinds = [e["kind"] for e in sim.events("fault")]
        assert kinds == ["fail-first", "fail-first"], kinds


def test_fail_status_429_has_retry_after():
    with sim_with(["fail-first=1", "fail-status=429", "retry-after=4"]) as sim:
        c = sim.sas_client(REG, sim.key)
        status, props, body = dps_request(c, register_topic("a"))
        assert status == 429 and props["retry-after"] == "4", (status, props)
        assert body["errorCode"] // 1000 == 429
        status, props, body = dps_request(c, register_topic("b"))
        assert status == 202
        c.disconnect()


def test_fail_probability_seeded():
    def run():
        with sim_with(["fail-probability=0.5", "assigning-polls=0"], seed=42) as sim:
            c = sim.sas_client(REG, sim.key)
            seq = [dps_request(c, register_topic(str(i)))[0] for i in range(24)]
            c.disconnect()
            return seq
    a, b = run(), run()
    assert a == b, (a, b)                 # the seed decides
    assert set(a) == {200, 503}, a        # both outcomes happen
    assert 4 <= a.count(503) <= 20, a


def test_throttle_polls_per_10s():
    with sim_with(["assigning-polls=50"], throttle="polls-per-10s = 3;") as sim:
        c = sim.sas_client(REG, sim.key)
        status, _, body = dps_request(c, register_topic("r"))
        op = body["operationId"]
        got = [dps_request(c, poll_topic(f"p{i}", op)) for i in range(4)]
        assert [g[0] for g in got] == [202, 202, 202, 429], [g[0] for g in got]
        ra = int(got[3][1]["retry-after"])
        assert 1 <= ra <= 10, ra
        assert got[3][2]["errorCode"] == 429001
        c.disconnect()
        ev = sim.events("throttle")
        assert [e["kind"] for e in ev] == ["polls"], ev


def test_throttle_registrations_per_minute():
    with sim_with(["assigning-polls=0"], throttle="registrations-per-minute = 2; polls-per-10s = 0;") as sim:
        c = sim.sas_client(REG, sim.key)
        got = [dps_request(c, register_topic(str(i))) for i in range(3)]
        assert [g[0] for g in got] == [200, 200, 429], [g[0] for g in got]
        assert 1 <= int(got[2][1]["retry-after"]) <= 60
        c.disconnect()
        assert [e["kind"] for e in sim.events("throttle")] == ["registrations"]


def test_drop_variants():
    # after-connect: CONNACK 0 arrives, then the connection closes.
    with sim_with(["drop=after-connect"]) as sim:
        c = sim.client()
        assert c.connect(REG, username=dps_username(SCOPE, REG), password=sas_token(SCOPE, REG, sim.key)) == 0
        assert c.wait_closed(3)
    # after-subscribe: SUBACK arrives, then close.
    with sim_with(["drop=after-subscribe"]) as sim:
        c = sim.sas_client(REG, sim.key)      # asserts the SUBACK
        assert c.wait_closed(3)
    # after-register: the register gets no answer, the connection closes.
    with sim_with(["drop=after-register"]) as sim:
        c = sim.sas_client(REG, sim.key)
        c.publish(register_topic("1"), b"", qos=0)
        assert c.wait_closed(3)
        assert sim.events("response") == []
    # after-packets 3: CONNECT, SUBSCRIBE, PINGREQ, then close.
    with sim_with(["drop=after-packets", "drop-after-packets=3"]) as sim:
        c = sim.sas_client(REG, sim.key)
        c.send_raw(bytes([0xc0, 0]))            # PINGREQ, the third packet
        assert c.wait_closed(3)
        time.sleep(0.05)
        faults = [e["kind"] for e in sim.events("fault")]
        assert faults == ["drop-after-packets"], faults


def test_silent():
    with sim_with(["silent=true"]) as sim:
        c = sim.sas_client(REG, sim.key)
        c.publish(register_topic("1"), b"")     # PUBACK still comes
        try:
            c.recv_publish(timeout=1.0)
            raise AssertionError("a silent sim answered")
        except TimeoutError:
            pass
        c.disconnect()
        assert sim.events("register") and not sim.events("response")


def test_delay_ms():
    with sim_with(["delay-ms=400", "assigning-polls=0"]) as sim:
        c = sim.sas_client(REG, sim.key)
        t0 = time.monotonic()
        status, _, _ = dps_request(c, register_topic("1"))
        took = time.monotonic() - t0
        assert status == 200 and took >= 0.4, took
        c.disconnect()


def test_malformed_and_oversized_bodies():
    with sim_with(["body=malformed"]) as sim:
        c = sim.sas_client(REG, sim.key)
        c.publish(register_topic("1"), b"")
        t, payload = c.recv_publish()
        assert parse_response_topic(t)[0] == 202
        try:
            json.loads(payload)
            raise AssertionError("the malformed body parsed")
        except ValueError:
            pass
        c.disconnect()
    with sim_with(["body=oversized"]) as sim:
        c = sim.sas_client(REG, sim.key)
        c.publish(register_topic("1"), b"")
        t, payload = c.recv_publish()
        assert len(payload) > 96 * 1024, len(payload)
        assert json.loads(payload)["status"] == "assigning"
        c.disconnect()


def test_failed_with_error_code_and_disabled():
    with sim_with(extra='faults = { final-status = "failed"; error-code = 400209; assigning-polls = 0; };') as sim:
        c = sim.sas_client(REG, sim.key)
        status, _, body = dps_request(c, register_topic("1"))
        assert status == 200 and body["status"] == "failed", body
        st = body["registrationState"]
        assert st["errorCode"] == 400209 and st["errorMessage"] and st["status"] == "failed", st
        c.disconnect()
    with sim_with(["final-status=disabled"]) as sim:
        c = sim.sas_client(REG, sim.key)
        answers = provision(c, sleep=False)
        assert answers[-1][0] == 200 and answers[-1][2]["status"] == "disabled", answers
        c.disconnect()


def test_enrollment_faults_override_defaults():
    other = random_key()
    key = random_key()
    enr = [sas_enrollment(REG, key, extra="faults = { assigning-polls = 3; retry-after = 2; };"),
           sas_enrollment("dev-plain", other)]
    with Sim(enrollments=enr, sets=["assigning-polls=0"], throttle="polls-per-10s = 0;") as sim:
        c = sim.sas_client(REG, key)
        answers = provision(c, sleep=False)
        assert [a[0] for a in answers] == [202, 202, 202, 200]
        assert answers[0][1]["retry-after"] == "2"
        c.disconnect()
        c = sim.sas_client("dev-plain", other)
        assert [a[0] for a in provision(c, sleep=False)] == [200]
        c.disconnect()


def test_bad_set_and_bad_config_rejected():
    import subprocess
    from simharness import DPS_SIM
    sim = sim_with()
    cfg = sim.write_config()
    r = subprocess.run([DPS_SIM, "--config", cfg, "--set", "drop=sometimes"], capture_output=True, text=True, timeout=10)
    assert r.returncode != 0 and "drop" in r.stderr and "after-connect" in r.stderr, r.stderr
    r = subprocess.run([DPS_SIM, "--config", cfg, "--set", "nonsense=1"], capture_output=True, text=True, timeout=10)
    assert r.returncode != 0 and "valid keys" in r.stderr, r.stderr
    with open(cfg, "a") as f:
        f.write("\nbogus-key = 1;\n")
    r = subprocess.run([DPS_SIM, "--config", cfg], capture_output=True, text=True, timeout=10)
    assert r.returncode != 0 and f"{cfg}:" in r.stderr and "bogus-key" in r.stderr, r.stderr


if __name__ == "__main__":
    run_tests(globals())
