#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
# test-sim-websocket: dps-sim's MQTT over secure WebSocket listener, with the RFC 6455 framing done by hand
import base64
import hashlib
import os
import socket
import ssl
import struct
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from mqttlite import (MqttClient, connect_packet, dps_username, provision, publish_packet,  # noqa: E402
                      register_topic, sas_token, tls_context)
from simharness import SCOPE, Sim, random_key, run_tests, sas_enrollment  # noqa: E402

GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
OP_CONT, OP_TEXT, OP_BIN, OP_CLOSE, OP_PING, OP_PONG = 0, 1, 2, 8, 9, 10


def frame(opcode, payload, fin=True, mask=True):
    b0 = (0x80 if fin else 0) | opcode
    n = len(payload)
    if n < 126:
        hdr = bytes([b0, (0x80 if mask else 0) | n])
    elif n < 65536:
        hdr = bytes([b0, (0x80 if mask else 0) | 126]) + struct.pack("!H", n)
    else:
        hdr = bytes([b0, (0x80 if mask else 0) | 127]) + struct.pack("!Q", n)
    if not mask:
        return hdr + payload
    key = os.urandom(4)
    return hdr + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


class WsStream:
    """A WebSocket client stream that mqttlite.MqttClient can ride on."""

    def __init__(self, sock):
        self.sock = sock
        self.raw = b""
        self.data = b""
        self.control = []       # (opcode, payload) of control frames received

    @classmethod
    def open(cls, port, cafile, path="/$iothub/websocket", protocol="MQTT", expect=101):
        s = tls_context(cafile).wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=5),
                                            server_hostname="localhost")
        key = base64.b64encode(os.urandom(16)).decode()
        req = (f"GET {path} HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
               f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n")
        if protocol:
            req += f"Sec-WebSocket-Protocol: {protocol}\r\n"
        s.sendall((req + "\r\n").encode())
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = s.recv(4096)
            if not chunk:
                break
            head += chunk
        status_line, _, rest = head.partition(b"\r\n")
        code = int(status_line.split()[1])
        assert code == expect, head
        if code != 101:
            return None
        headers = {}
        for line in rest.split(b"\r\n\r\n")[0].split(b"\r\n"):
            k, _, v = line.decode().partition(":")
            headers[k.strip().lower()] = v.strip()
        want = base64.b64encode(hashlib.sha1((key + GUID).encode()).digest()).decode()
        assert headers["sec-websocket-accept"] == want, headers
        assert headers["sec-websocket-protocol"] == protocol, headers    # echoed as sent
        ws = cls(s)
        ws.raw = head.split(b"\r\n\r\n", 1)[1]
        return ws

    def fileno(self):
        return self.sock.fileno()

    def pending(self):
        return bool(self.data) or self.sock.pending() > 0 or self._parse_one(peek=True)

    def sendall(self, data):
        self.sock.sendall(frame(OP_BIN, data))

    def send_frame(self, opcode, payload, fin=True, mask=True):
        self.sock.sendall(frame(opcode, payload, fin, mask))

    def _parse_one(self, peek=False):
        r = self.raw
        if len(r) < 2:
            return False
        n = r[1] & 0x7f
        off = 2
        if n == 126:
            if len(r) < 4:
                return False
            n, off = struct.unpack("!H", r[2:4])[0], 4
        elif n == 127:
            if len(r) < 10:
                return False
            n, off = struct.unpack("!Q", r[2:10])[0], 10
        assert not r[1] & 0x80, "server frames must not be masked"
        if len(r) < off + n:
            return False
        if peek:
            return True
        opcode, payload = r[0] & 0x0f, r[off:off + n]
        self.raw = r[off + n:]
        if opcode in (OP_BIN, OP_CONT, OP_TEXT):
            self.data += payload
        else:
            self.control.append((opcode, payload))
        return True

    def recv(self, n):
        while not self.data:
            if self._parse_one():
                if self.control and self.control[-1][0] == OP_CLOSE and not self.data:
                    return b""
                continue
            chunk = self.sock.recv(65536)
            if not chunk:
                return b""
            self.raw += chunk
        out, self.data = self.data[:n], self.data[n:]
        return out

    def close(self):
        self.sock.close()


def ws_client(sim, **kw):
    return MqttClient(WsStream.open(sim.ws_port, sim.cafile, **kw))


def test_provision_over_websocket():
    key = random_key()
    with Sim(enrollments=[sas_enrollment("dev-ws", key)], websocket=True) as sim:
        assert sim.ws_port and sim.ws_port != sim.mqtt_port
        for path, proto in (("/$iothub/websocket", "mqtt"), ("/", "MQTT"), ("/$iothub/websocket?iothub-no-client-cert=true", "Mqtt")):
            c = ws_client(sim, path=path, protocol=proto)
            assert c.connect("dev-ws", username=dps_username(SCOPE, "dev-ws"),
                             password=sas_token(SCOPE, "dev-ws", key)) == 0
            assert c.subscribe("$dps/registrations/res/#") == 1
            status, _, body = provision(c, sleep=False)[-1]
            assert status == 200 and body["status"] == "assigned", body
            c.disconnect()
        assert [e["listener"] for e in sim.events("accept")] == ["websocket"] * 3


def test_fragmented_message_ping_large_frame_and_close():
    key = random_key()
    with Sim(enrollments=[sas_enrollment("dev-ws", key, extra='payload = "echo";')], websocket=True,
             sets=["assigning-polls=0"]) as sim:
        ws = WsStream.open(sim.ws_port, sim.cafile)
        c = MqttClient(ws)
        pkt = connect_packet("dev-ws", dps_username(SCOPE, "dev-ws"), sas_token(SCOPE, "dev-ws", key))
        # CONNECT in three fragments, a ping between them (control frames may interleave).
        ws.send_frame(OP_BIN, pkt[:5], fin=False)
        ws.send_frame(OP_PING, b"are-you-there")
        ws.send_frame(OP_CONT, pkt[5:20], fin=False)
        ws.send_frame(OP_CONT, pkt[20:], fin=True)
        _, _, body = c._wait_for(2)     # CONNACK
        assert body[1] == 0
        assert (OP_PONG, b"are-you-there") in ws.control, ws.control
        assert c.subscribe("$dps/registrations/res/#") == 1
        # A register over 64 KiB: a 64-bit frame length, echoed back in the payload.
        big = '{"registrationId":"dev-ws","payload":{"blob":"' + "y" * 70000 + '"}}'
        ws.sendall(publish_packet(register_topic("big"), big.encode(), qos=0))
        topic, payload = c.recv_publish()
        assert topic.startswith("$dps/registrations/res/200/?$rid=big"), topic
        assert len(payload) > 70000
        # Two MQTT packets in one message, and one packet split over two messages.
        ping = bytes([0xc0, 0])
        ws.sock.sendall(frame(OP_BIN, ping + ping[:1]))
        ws.sock.sendall(frame(OP_BIN, ping[1:]))
        c._wait_for(13)
        c._wait_for(13)
        # Close: the server answers with a close frame and ends the connection.
        ws.send_frame(OP_CLOSE, struct.pack("!H", 1000))
        assert c.wait_closed(3)
        assert any(op == OP_CLOSE for op, _ in ws.control), ws.control


def test_bad_upgrades_refused():
    key = random_key()
    with Sim(enrollments=[sas_enrollment("dev-ws", key)], websocket=True) as sim:
        WsStream.open(sim.ws_port, sim.cafile, path="/other", expect=404)
        WsStream.open(sim.ws_port, sim.cafile, protocol="amqp", expect=400)
        WsStream.open(sim.ws_port, sim.cafile, protocol=None, expect=400)
        # Unmasked client frames break RFC 6455: the server fails the connection.
        ws = WsStream.open(sim.ws_port, sim.cafile)
        c = MqttClient(ws)
        ws.sock.sendall(frame(OP_BIN, connect_packet("dev-ws", dps_username(SCOPE, "dev-ws"),
                                                     sas_token(SCOPE, "dev-ws", key)), mask=False))
        assert c.wait_closed(3)
        assert sim.alive()
        assert not sim.events("connect")
        # Plain MQTT on the WebSocket port is not an upgrade.
        s = tls_context(sim.cafile).wrap_socket(socket.create_connection(("127.0.0.1", sim.ws_port), timeout=5),
                                                server_hostname="localhost")
        s.sendall(connect_packet("dev-ws", "u", "p") + b"\r\n\r\n")
        try:
            assert s.recv(100).startswith(b"HTTP/1.1 400")
        except (ssl.SSLError, ConnectionResetError):
            pass
        s.close()


if __name__ == "__main__":
    run_tests(globals())
