#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
# test-sim-provision: dps-sim provisions every enrollment kind and accepts every client variant of the protocol doc
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from mqttlite import (derive_key, dps_request, dps_username, parse_response_topic, poll_topic,  # noqa: E402
                      provision, register_topic, sas_token, url_encode)
from simharness import (SCOPE, Sim, group_sas_enrollment, random_key, run_tests, sas_enrollment,  # noqa: E402
                        x509_enrollment, x509_group_enrollment)

HUBS = ("hub-a.azure-devices.net", "hub-b.azure-devices.net")


def final(answers):
    status, props, body = answers[-1]
    assert status == 200, answers
    return body


def test_individual_sas_primary_and_secondary():
    k1, k2 = random_key(), random_key()
    with Sim(enrollments=[sas_enrollment("dev-sas", k1, k2, hubs=HUBS[:1], extra='device-id = "the-device";')]) as sim:
        for key in (k1, k2):
            c = sim.sas_client("dev-sas", key)
            answers = provision(c, sleep=False)
            assert [a[0] for a in answers] == [202, 200], answers
            assert answers[0][2]["status"] == "assigning"
            assert answers[0][1]["retry-after"] == "1"
            body = final(answers)
            assert body["status"] == "assigned"
            st = body["registrationState"]
            assert st["assignedHub"] == HUBS[0] and st["deviceId"] == "the-device", st
            assert st["registrationId"] == "dev-sas" and st["status"] == "assigned"
            assert st["substatus"] == "initialAssignment"
            for k in ("createdDateTimeUtc", "lastUpdatedDateTimeUtc", "etag"):
                assert st[k], k
            assert body["operationId"] == answers[0][2]["operationId"]
            c.disconnect()


def test_group_sas_derived_key_and_round_robin():
    gk = random_key(64)
    with Sim(enrollments=[group_sas_enrollment("grp", gk, hubs=HUBS, extra='allocation = "round-robin";')]) as sim:
        hubs = []
        for i in range(4):
            regid = f"grp-dev-{i}"
            c = sim.sas_client(regid, derive_key(gk, regid))
            st = final(provision(c, sleep=False))["registrationState"]
            assert st["deviceId"] == regid
            hubs.append(st["assignedHub"])
            c.disconnect()
        assert hubs == [HUBS[0], HUBS[1], HUBS[0], HUBS[1]], hubs
        # The group key itself is not a device key.
        c = sim.sas_client("grp-dev-9", gk)
        status, _, body = dps_request(c, register_topic("x"))
        assert status == 401 and body["errorCode"] == 401002, body
        c.close()


def test_hashed_allocation_is_stable():
    gk = random_key(64)
    with Sim(enrollments=[group_sas_enrollment("grp", gk, hubs=HUBS, extra='allocation = "hashed";')]) as sim:
        seen = {}
        for rnd in range(2):
            for i in range(6):
                regid = f"h-{i}"
                c = sim.sas_client(regid, derive_key(gk, regid))
                hub = final(provision(c, sleep=False))["registrationState"]["assignedHub"]
                c.disconnect()
                assert seen.setdefault(regid, hub) == hub
        assert set(seen.values()) <= set(HUBS)


def test_x509_individual_and_group():
    sim = Sim(devices=["dev-x509", "grp-x509-1"],
              enrollments=[x509_enrollment("dev-x509", "dev-x509.crt"),
                           x509_group_enrollment("grp-ca", "device-ca.crt", hubs=HUBS[1:])])
    with sim:
        c = sim.x509_client("dev-x509")
        st = final(provision(c, sleep=False))["registrationState"]
        assert st["assignedHub"] == HUBS[0] and st["deviceId"] == "dev-x509"
        c.disconnect()
        c = sim.x509_client("grp-x509-1")
        st = final(provision(c, sleep=False))["registrationState"]
        assert st["assignedHub"] == HUBS[1] and st["deviceId"] == "grp-x509-1"
        c.disconnect()
        ev = [e for e in sim.events("connect")]
        assert all(e["auth"] == "x509" and e["authorized"] for e in ev), ev


def test_client_variants_accepted():
    key = random_key()
    regid = "dev-var"
    sr = f"{SCOPE}/registrations/{regid}"
    exp = int(time.time()) + 600
    tokens = {
        "upper-hex": sas_token(SCOPE, regid, key, exp),
        "lower-hex": sas_token(SCOPE, regid, key, exp, sr=url_encode(sr).replace("%2F", "%2f")),
        "unencoded-sr": sas_token(SCOPE, regid, key, exp, sr=sr),
        "any-order": sas_token(SCOPE, regid, key, exp, order=["se", "skn", "sig", "sr"]),
        "no-skn": sas_token(SCOPE, regid, key, exp, skn=None),
    }
    usernames = [dps_username(SCOPE, regid),
                 dps_username(SCOPE, regid, "2021-06-01", client_version="azure-iot-provisioning-device/1.9.1 (node)"),
                 dps_username(SCOPE, regid, "2025-07-01-preview") + "&unknown=1"]
    with Sim(enrollments=[sas_enrollment(regid, key, extra='payload = "echo";')], throttle="polls-per-10s = 0;") as sim:
        for name, tok in tokens.items():
            for i, user in enumerate(usernames):
                c = sim.client()
                rc = c.connect(regid, username=user, password=tok, clean=bool(i % 2))
                assert rc == 0, (name, user, rc)
                assert c.subscribe("$dps/registrations/res/#", qos=2) == 1     # QoS 2 granted as 1
                # Register body: empty, blank, or JSON with a payload; $rid any string.
                for body, rid in ((b"", "1"), (b" ", "1"),
                                  (json.dumps({"registrationId": regid, "payload": {"k": [1, 2]}}).encode(),
                                   "0f8fad5b-d9cb-469f-a165-70867728950e")):
                    c.publish(register_topic(rid), body, qos=i % 2)
                    t, payload = c.recv_publish()
                    status, props = parse_response_topic(t)
                    assert status == 202 and props["$rid"] == rid, (t, payload)
                    assert t.startswith(f"$dps/registrations/res/202/?$rid={rid}&"), t   # $rid first
                    op = json.loads(payload)["operationId"]
                    # Poll bodies vary; the server ignores them.
                    c.publish(poll_topic(rid, op), body)
                    t, payload = c.recv_publish()
                    res = json.loads(payload)
                    assert parse_response_topic(t)[0] == 200 and res["status"] == "assigned"
                    if body.startswith(b"{"):
                        assert res["registrationState"]["payload"] == {"k": [1, 2]}, res
                    else:
                        assert "payload" not in res["registrationState"]
                c.ping()
                c.disconnect()


def test_fixed_payload_and_reregistration_keeps_hub():
    key = random_key()
    with Sim(enrollments=[sas_enrollment("dev-p", key, hubs=HUBS, extra='payload-json = "{\\"tier\\":\\"gold\\"}";')]) as sim:
        c = sim.sas_client("dev-p", key)
        st1 = final(provision(c, sleep=False))["registrationState"]
        assert st1["payload"] == {"tier": "gold"}
        st2 = final(provision(c, rid_base="again", sleep=False))["registrationState"]
        assert st2["assignedHub"] == st1["assignedHub"] and st2["deviceId"] == st1["deviceId"]
        assert st2["substatus"] == "initialAssignment"
        assert st2["createdDateTimeUtc"] == st1["createdDateTimeUtc"]
        assert st2["etag"] != st1["etag"]
        c.disconnect()
        # Registration ids are case-insensitive: same record.
        c = sim.sas_client("DEV-P", key)
        st3 = final(provision(c, sleep=False))["registrationState"]
        assert st3["assignedHub"] == st1["assignedHub"]
        c.disconnect()


def test_disabled_enrollment():
    key = random_key()
    with Sim(enrollments=[sas_enrollment("dev-off", key, extra="enabled = false;")]) as sim:
        c = sim.sas_client("dev-off", key)
        status, _, body = final_answer = provision(c, sleep=False)[-1]
        assert status == 200 and body["status"] == "disabled", final_answer
        assert body["registrationState"]["status"] == "disabled"
        assert "assignedHub" not in body["registrationState"]
        c.disconnect()


def test_unknown_registration_gets_401():
    key = random_key()
    with Sim(enrollments=[sas_enrollment("dev-known", key)]) as sim:
        c = sim.sas_client("dev-unknown", key)
        status, props, body = dps_request(c, register_topic("u"))
        assert status == 401 and body["errorCode"] == 401002, body
        for k in ("trackingId", "message", "timestampUtc"):
            assert body[k], k
        c.disconnect()


if __name__ == "__main__":
    run_tests(globals())
