#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
# test-sim-robustness: truncated and random MQTT packets over many connections never stop dps-sim serving
import os
import random
import re
import socket
import ssl
import struct
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from mqttlite import (connect_packet, dps_username, encode_remaining_length, packet, provision,  # noqa: E402
                      publish_packet, register_topic, sas_token, subscribe_packet, tls_context)
from simharness import SCOPE, Sim, random_key, run_tests, sas_enrollment  # noqa: E402

SEED = 20261126
CASES = 300


def valid_packets(key):
    conn = connect_packet("dev-good", dps_username(SCOPE, "dev-good"), sas_token(SCOPE, "dev-good", key))
    return [conn, subscribe_packet(1, [("$dps/registrations/res/#", 1)]),
            publish_packet(register_topic("1"), b'{"registrationId":"dev-good"}', 1, 2),
            publish_packet("$dps/registrations/GET/iotdps-get-operationstatus/?$rid=2&operationId=x", b" ", 0),
            bytes([0xc0, 0]), bytes([0xe0, 0])]


def mutate(rng, key):
    """One hostile byte string: truncated, bit-flipped, random, or lying about its length."""
    pk = valid_packets(key)
    kind = rng.randrange(7)
    if kind == 0:       # truncated valid stream
        s = b"".join(pk[:rng.randrange(1, len(pk) + 1)])
        return s[:rng.randrange(0, len(s))]
    if kind == 1:       # flipped bytes in a valid stream
        s = bytearray(b"".join(pk[:3]))
        for _ in range(rng.randrange(1, 8)):
            s[rng.randrange(len(s))] ^= 1 << rng.randrange(8)
        return bytes(s)
    if kind == 2:       # pure noise
        return bytes(rng.randrange(256) for _ in range(rng.randrange(1, 400)))
    if kind == 3:       # a remaining length over 4 bytes, or huge
        return bytes([0x10]) + bytes([0xff] * rng.randrange(4, 7)) + b"\x01"
    if kind == 4:       # claims 200 MB then stops
        return bytes([0x30]) + encode_remaining_length(200 * 1024 * 1024) + b"abc"
    if kind == 5:       # valid CONNECT, then garbage packet types and strings with bad lengths
        body = struct.pack("!H", 0xffff) + b"x" * rng.randrange(0, 50)
        return pk[0] + packet(rng.choice([3, 8, 10, 15]), rng.choice([0, 2, 6]), body)
    # kind 6: a random packet type with random flags and a random body
    return bytes([rng.randrange(256)]) + encode_remaining_length(n := rng.randrange(0, 300)) + \
        bytes(rng.randrange(256) for _ in range(n))


def attack(port, cafile, payloads, errors):
    ctx = tls_context(cafile)
    for data in payloads:
        try:
            s = ctx.wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=5), server_hostname="localhost")
            s.sendall(data)
            s.settimeout(0.3)
            try:
                while s.recv(4096):
                    pass
            except (socket.timeout, ssl.SSLError, ConnectionResetError):
                pass
            s.close()
        except (OSError, ssl.SSLError) as e:
            errors.append(repr(e))


def test_random_packets_while_a_good_client_provisions():
    key = random_key()
    rng = random.Random(SEED)
    payloads = [mutate(rng, key) for _ in range(CASES)]
    with Sim(enrollments=[sas_enrollment("dev-good", key)], sets=["assigning-polls=2"],
             throttle="polls-per-10s = 0;") as sim:
        errors = []
        threads = [threading.Thread(target=attack, args=(sim.mqtt_port, sim.cafile, payloads[i::6], errors))
                   for i in range(6)]
        for t in threads:
            t.start()
        provisioned = 0
        t0 = time.monotonic()
        while any(t.is_alive() for t in threads) or provisioned < 3:
            c = sim.sas_client("dev-good", key)
            status, _, body = provision(c, rid_base=f"g{provisioned}", sleep=False)[-1]
            assert status == 200 and body["status"] == "assigned", body
            c.disconnect()
            provisioned += 1
            assert time.monotonic() - t0 < 60
        for t in threads:
            t.join()
        assert sim.alive(), sim.log()
        assert not errors, errors[:5]     # every hostile connection got its TLS session
        # The server closed the hostile connections itself, for the right reasons.
        time.sleep(0.3)
        reasons = {e["reason"] for e in sim.events("close")}
        assert reasons & {"malformed", "packet-too-large", "no-connect"}, reasons
        assert sim.stop() == 0


def test_half_open_and_idle_connections_do_not_block():
    key = random_key()
    with Sim(enrollments=[sas_enrollment("dev-good", key)], sets=["assigning-polls=0"]) as sim:
        idle = [socket.create_connection(("127.0.0.1", sim.mqtt_port)) for _ in range(50)]   # no TLS hello
        half = []
        for _ in range(20):     # TLS, then half a CONNECT
            s = tls_context(sim.cafile).wrap_socket(socket.create_connection(("127.0.0.1", sim.mqtt_port)),
                                                    server_hostname="localhost")
            s.sendall(connect_packet("dev-good", "u", "p")[:7])
            half.append(s)
        c = sim.sas_client("dev-good", key)
        assert provision(c, sleep=False)[-1][2]["status"] == "assigned"
        c.disconnect()
        for s in idle + half:
            s.close()
        assert sim.alive()


def test_more_than_1024_connections():
    """dps-sim raises its descriptor limit: 1,100 open connections, and a device still provisions."""
    import resource
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = 1100
    if hard != resource.RLIM_INFINITY and hard < want + 200:
        print(f"skipping: hard RLIMIT_NOFILE {hard} is too low")
        return
    resource.setrlimit(resource.RLIMIT_NOFILE, (want + 200, hard))
    key = random_key()
    socks = []
    try:
        # dps-sim inherits the low soft limit and must raise it itself.
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(soft, 1024), hard))
        sim = Sim(enrollments=[sas_enrollment("dev-good", key)], sets=["assigning-polls=0"])
        sim.start()
        resource.setrlimit(resource.RLIMIT_NOFILE, (want + 200, hard))
        try:
            for _ in range(want):
                socks.append(socket.create_connection(("127.0.0.1", sim.mqtt_port)))
            deadline = time.monotonic() + 20
            while len(sim.events("accept")) < want and time.monotonic() < deadline:
                time.sleep(0.1)
            assert len(sim.events("accept")) >= want, len(sim.events("accept"))
            c = sim.sas_client("dev-good", key)
            assert provision(c, sleep=False)[-1][2]["status"] == "assigned"
            c.disconnect()
            assert sim.alive()
        finally:
            for s in socks:
                s.close()
            assert sim.stop() == 0
            m = re.search(r"connections \d+ \(max (\d+)\)", sim.log())
            assert m and int(m.group(1)) > want, sim.log()
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_flooding_client_that_never_reads():
    """A client that floods PINGREQs and reads nothing is cut off; others keep being served."""
    key = random_key()
    with Sim(enrollments=[sas_enrollment("dev-good", key)], sets=["assigning-polls=0"]) as sim:
        flood = sim.sas_client("dev-good", key)
        flood.stream.setblocking(False)
        stop = threading.Event()
        sent = [0]

        def pump():
            chunk = bytes([0xc0, 0]) * 32768
            while not stop.is_set():
                try:
                    sent[0] += flood.stream.send(chunk)
                except (ssl.SSLWantWriteError, BlockingIOError):
                    time.sleep(0.001)
                except OSError:
                    return
        t = threading.Thread(target=pump)
        t.start()
        try:
            t0 = time.monotonic()
            for i in range(3):
                c = sim.sas_client("dev-good", key)
                assert provision(c, rid_base=f"f{i}", sleep=False)[-1][2]["status"] == "assigned"
                c.disconnect()
            assert time.monotonic() - t0 < 10
            deadline = time.monotonic() + 15
            while "slow-client" not in [e["reason"] for e in sim.events("close")] and time.monotonic() < deadline:
                time.sleep(0.1)
        finally:
            stop.set()
            t.join()
            flood.close()
        assert "slow-client" in [e["reason"] for e in sim.events("close")], (sent, sim.events("close"))
        assert sim.alive()


if __name__ == "__main__":
    run_tests(globals())
