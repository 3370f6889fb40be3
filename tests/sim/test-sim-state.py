#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
# test-sim-state: dps-sim keeps registrations across restarts, and its event log and counters tell the truth
import json
import os
import re
import signal
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from mqttlite import derive_key, provision  # noqa: E402
from simharness import Sim, group_sas_enrollment, random_key, run_tests, sas_enrollment  # noqa: E402

HUBS = ("hub-a.azure-devices.net", "hub-b.azure-devices.net")


def assigned(c, rid="r"):
    status, _, body = provision(c, rid_base=rid, sleep=False)[-1]
    assert status == 200 and body["status"] == "assigned", body
    return body["registrationState"]


def test_state_file_survives_restart():
    gk = random_key(64)
    k1, k2 = derive_key(gk, "dev-1"), derive_key(gk, "dev-2")
    enr = [group_sas_enrollment("grp", gk, hubs=HUBS)]
    sim = Sim(enrollments=enr, state_file="sim-state.json", sets=["assigning-polls=0"])
    with sim:
        c = sim.sas_client("dev-1", k1)
        st1 = assigned(c)
        c.disconnect()
        # dev-2 is the second of a fresh round-robin: hub-b. The round-robin
        # cursor restarts with the process, so after a restart a new device
        # would get hub-a again; dev-2 must keep hub-b.
        c = sim.sas_client("dev-2", k2)
        st2 = assigned(c)
        c.disconnect()
        assert st1["assignedHub"] == HUBS[0] and st2["assignedHub"] == HUBS[1], (st1, st2)
        time.sleep(0.5)         # the state file is written within 200 ms
        with open(os.path.join(sim.dir, "sim-state.json")) as f:
            saved = json.load(f)
        assert {r["registrationId"] for r in saved["registrations"]} == {"dev-1", "dev-2"}, saved
        assert sim.stop() == 0

        sim.start()
        c = sim.sas_client("dev-2", k2)
        again = assigned(c, "again")
        c.disconnect()
        assert again["assignedHub"] == HUBS[1] and again["deviceId"] == "dev-2"
        assert again["createdDateTimeUtc"] == st2["createdDateTimeUtc"]
        assert again["substatus"] == "initialAssignment"
        assert sim.stop() == 0

        # The enrollment moves to another hub: the device migrates.
        sim.enrollments = [sas_enrollment("dev-1", k1, hubs=("hub-c.azure-devices.net",)), enr[0]]
        sim.start()
        c = sim.sas_client("dev-1", k1)
        moved = assigned(c, "moved")
        c.disconnect()
        assert moved["assignedHub"] == "hub-c.azure-devices.net" and moved["substatus"] == "deviceDataMigrated", moved


def test_corrupt_state_file_is_not_fatal():
    k = random_key()
    sim = Sim(enrollments=[sas_enrollment("dev-1", k)], state_file="sim-state.json", sets=["assigning-polls=0"])
    with open(os.path.join(sim.dir, "sim-state.json"), "w") as f:
        f.write("{ this is not json")
    with sim:
        c = sim.sas_client("dev-1", k)
        assigned(c)
        c.disconnect()
        assert "ignoring the state file" in sim.log()


def test_event_log_lines_and_retry_after_timing():
    k = random_key()
    with Sim(enrollments=[sas_enrollment("dev-t", k)], sets=["assigning-polls=3", "retry-after=1"],
             throttle="polls-per-10s = 0;") as sim:
        c = sim.sas_client("dev-t", k)
        provision(c, sleep=True)         # honours retry-after
        c.disconnect()
        time.sleep(0.1)
        with open(sim.events_file) as f:
            raw = f.read().splitlines()
        events = [json.loads(line) for line in raw]
        # Every line: ts with microseconds first, then conn and event.
        for line, e in zip(raw, events):
            assert re.match(r'^\{"ts":\d{10}\.\d{6},"conn":\d+,"event":"[a-z]+"', line), line
            assert abs(e["ts"] - time.time()) < 60
        names = [e["event"] for e in events]
        assert names == ["accept", "connect", "subscribe", "register", "response", "poll", "response",
                         "poll", "response", "poll", "response", "close"], names
        ts = [e["ts"] for e in events]
        assert ts == sorted(ts)
        reg = events[3]
        assert reg["registrationId"] == "dev-t" and reg["rid"] == "r0" and reg["bodyLength"] == 0
        last_response = None
        for e in events:
            if e["event"] == "response":
                for k_ in ("registrationId", "rid", "status", "retryAfter", "bodyStatus"):
                    assert k_ in e, (k_, e)
                last_response = e
            elif e["event"] == "poll":
                # The check the contract promises: no poll before ts + retryAfter.
                assert e["ts"] >= last_response["ts"] + last_response["retryAfter"] - 0.005, (last_response, e)
                assert e["operationId"]
        assert events[-2]["bodyStatus"] == "assigned" and events[-2]["retryAfter"] is None


def test_counters_on_sigusr1_and_exit():
    k = random_key()
    with Sim(enrollments=[sas_enrollment("dev-u", k)], sets=["assigning-polls=0"]) as sim:
        c = sim.sas_client("dev-u", k)
        assigned(c)
        os.kill(sim.pid, signal.SIGUSR1)
        deadline = time.monotonic() + 3
        while "registers 1" not in sim.log() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert "registers 1" in sim.log() and "assigned 1" in sim.log(), sim.log()
        assert sim.alive()
        c.disconnect()
        assert sim.stop() == 0
        assert sim.log().count("dps-sim counters:") == 2


if __name__ == "__main__":
    run_tests(globals())
