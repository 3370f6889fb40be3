#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
# test-sim-auth: dps-sim refuses bad credentials and bad MQTT sessions the way DPS does
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from mqttlite import (DPS_SUBSCRIBE_TOPIC, dps_request, dps_username, parse_response_topic,  # noqa: E402
                      provision, register_topic, sas_token)
from simharness import (SCOPE, Sim, random_key, run_tests, sas_enrollment, x509_enrollment,  # noqa: E402
                        x509_group_enrollment)


def expect_401(sim, client, regid):
    status, props, body = dps_request(client, register_topic("auth"))
    assert status == 401, (status, body)
    assert body["errorCode"] == 401002 and body["trackingId"], body
    client.disconnect()


def connect_event(sim, regid):
    time.sleep(0.05)
    return [e for e in sim.events("connect") if e["clientId"] == regid][-1]


def test_bad_sas_credentials_refused_with_401():
    key = random_key()
    regid = "dev-a"
    cases = {
        "wrong key": sas_token(SCOPE, regid, random_key()),
        "expired token": sas_token(SCOPE, regid, key, expiry=int(time.time()) - 10),
        "wrong scope in sr": sas_token("0ne99999999", regid, key, sr=f"0ne99999999%2Fregistrations%2F{regid}"),
        "other device in sr": sas_token(SCOPE, regid, key, sr=f"{SCOPE}%2Fregistrations%2Fdev-b"),
        "tampered se": sas_token(SCOPE, regid, key).replace("&se=", "&se=1"),
    }
    with Sim(enrollments=[sas_enrollment(regid, key)]) as sim:
        for name, token in cases.items():
            c = sim.sas_client(regid, key, token=token)
            expect_401(sim, c, regid)
            ev = connect_event(sim, regid)
            assert ev["returnCode"] == 0 and ev["authorized"] is False and ev["reason"], (name, ev)
        # The username names another scope: accepted at CONNECT, 401 at register.
        c = sim.client()
        assert c.connect(regid, username=dps_username("0ne99999999", regid),
                         password=sas_token("0ne99999999", regid, key)) == 0
        assert c.subscribe(DPS_SUBSCRIBE_TOPIC) == 1
        expect_401(sim, c, regid)
        # A good token still works afterwards.
        c = sim.sas_client(regid, key)
        assert provision(c, sleep=False)[-1][2]["status"] == "assigned"
        c.disconnect()


def test_auth_failure_connack_mode():
    key = random_key()
    with Sim(enrollments=[sas_enrollment("dev-a", key)], sets=["auth-failure=connack"]) as sim:
        for token in (sas_token(SCOPE, "dev-a", random_key()), sas_token(SCOPE, "dev-a", key, expiry=int(time.time()) - 5)):
            c = sim.client()
            assert c.connect("dev-a", username=dps_username(SCOPE, "dev-a"), password=token) == 5
            assert c.wait_closed(3)
        c = sim.client()        # an unknown device is refused the same way
        assert c.connect("dev-z", username=dps_username(SCOPE, "dev-z"), password=sas_token(SCOPE, "dev-z", key)) == 5
        c.close()
        c = sim.sas_client("dev-a", key)
        assert provision(c, sleep=False)[-1][2]["status"] == "assigned"
        c.disconnect()


def test_bad_x509_refused_with_401():
    sim = Sim(devices=["dev-x", "dev-y", "grp-1"],
              enrollments=[x509_enrollment("dev-x", "dev-x.crt"), x509_group_enrollment("g", "ca.crt")])
    with sim:
        # dev-y's certificate (CN=dev-y) presented as dev-x: CN mismatch and not the enrolled one.
        c = sim.x509_client("dev-x", certfile=os.path.join(sim.dir, "dev-y-chain.crt"),
                            keyfile=os.path.join(sim.dir, "dev-y.key"))
        expect_401(sim, c, "dev-x")
        # grp-1 is signed by the device CA, but the group trusts only the server CA.
        c = sim.x509_client("grp-1")
        expect_401(sim, c, "grp-1")
        assert "CA" in connect_event(sim, "grp-1")["reason"]


def test_connack_codes():
    key = random_key()
    with Sim(enrollments=[sas_enrollment("dev-c", key)]) as sim:
        good_user, good_pass = dps_username(SCOPE, "dev-c"), sas_token(SCOPE, "dev-c", key)
        cases = [
            ("protocol level 3", dict(client_id="dev-c", username=good_user, password=good_pass, level=3), 1),
            ("protocol name", dict(client_id="dev-c", username=good_user, password=good_pass, protocol_name="MQIsdp"), 1),
            ("empty client id", dict(client_id="", username=good_user, password=good_pass), 2),
            ("bad client id", dict(client_id="dev/c", username=good_user, password=good_pass), 2),
            ("no username", dict(client_id="dev-c", username=None, password=None), 4),
            ("username for another id", dict(client_id="dev-c", username=dps_username(SCOPE, "dev-d"),
                                             password=good_pass), 4),
            ("username without api-version", dict(client_id="dev-c", username=f"{SCOPE}/registrations/dev-c",
                                                  password=good_pass), 4),
            ("password not a SAS token", dict(client_id="dev-c", username=good_user, password="hunter2"), 4),
            ("no credentials", dict(client_id="dev-c", username=good_user, password=None), 5),
        ]
        for name, kw, want in cases:
            c = sim.client()
            rc = c.connect(kw.pop("client_id"), **kw)
            assert rc == want, (name, rc, want)
            assert c.wait_closed(3), f"{name}: not closed after CONNACK {rc}"
        refused = [e for e in sim.events("connect") if e["returnCode"] != 0]
        assert len(refused) == len(cases)


def test_subscribe_other_topic_refused():
    key = random_key()
    with Sim(enrollments=[sas_enrollment("dev-s", key)]) as sim:
        c = sim.sas_client("dev-s", key, subscribe=False)
        assert c.subscribe("devices/dev-s/messages/devicebound/#", qos=1) == 0x80
        assert c.subscribe("$dps/registrations/res/202/#", qos=1) == 0x80
        assert c.subscribe("#", qos=0) == 0x80
        assert c.subscribe(DPS_SUBSCRIBE_TOPIC, qos=0) == 0
        assert c.subscribe(DPS_SUBSCRIBE_TOPIC, qos=1) == 1
        assert c.subscribe(DPS_SUBSCRIBE_TOPIC, qos=2) == 1
        c.unsubscribe(DPS_SUBSCRIBE_TOPIC)
        c.disconnect()


def test_responses_only_to_requesting_connection():
    k1, k2 = random_key(), random_key()
    with Sim(enrollments=[sas_enrollment("dev-1", k1), sas_enrollment("dev-2", k2)]) as sim:
        a = sim.sas_client("dev-1", k1)
        b = sim.sas_client("dev-2", k2)
        a2 = sim.sas_client("dev-1", k1)        # the same device twice
        a.publish(register_topic("1"), b"")
        t, _ = a.recv_publish()
        assert parse_response_topic(t)[1]["$rid"] == "1"
        for other in (b, a2):
            try:
                other.recv_publish(timeout=0.5)
                raise AssertionError("a response leaked to another connection")
            except TimeoutError:
                pass
        b.publish(register_topic("1"), b"")
        t, payload = b.recv_publish()
        assert b"dev-2" not in payload or True
        try:
            a.recv_publish(timeout=0.5)
            raise AssertionError("b's response reached a")
        except TimeoutError:
            pass
        for c in (a, b, a2):
            c.disconnect()


def test_keep_alive_enforced():
    key = random_key()
    with Sim(enrollments=[sas_enrollment("dev-k", key)]) as sim:
        c = sim.client()
        assert c.connect("dev-k", username=dps_username(SCOPE, "dev-k"), password=sas_token(SCOPE, "dev-k", key),
                         keep_alive=1) == 0
        t0 = time.monotonic()
        c.ping()                        # traffic restarts the clock
        assert c.wait_closed(5)
        took = time.monotonic() - t0
        assert 1.2 <= took <= 3.5, took         # 1.5 x keep-alive
        time.sleep(0.05)
        assert sim.events("close")[-1]["reason"] == "keep-alive-timeout"


def test_protocol_violations_close():
    key = random_key()
    with Sim(enrollments=[sas_enrollment("dev-v", key)]) as sim:
        from mqttlite import packet, publish_packet, PINGREQ
        # PINGREQ before CONNECT
        c = sim.client()
        c.send_raw(packet(PINGREQ, 0, b""))
        assert c.wait_closed(3)
        # publish to a topic DPS does not serve
        c = sim.sas_client("dev-v", key)
        c.send_raw(publish_packet("devices/dev-v/messages/events/", b"x", 0))
        assert c.wait_closed(3)
        # QoS 2 publish
        c = sim.sas_client("dev-v", key)
        c.send_raw(publish_packet(register_topic("1"), b"", 2, 7))
        assert c.wait_closed(3)
        time.sleep(0.05)
        reasons = [e["reason"] for e in sim.events("close")]
        assert reasons == ["no-connect", "bad-topic", "qos2-unsupported"], reasons


if __name__ == "__main__":
    run_tests(globals())
