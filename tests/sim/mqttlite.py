# SPDX-License-Identifier: MIT
"""mqttlite: a minimal MQTT 3.1.1 client over TLS (or any byte stream) for tests, plus DPS helpers.

Python's standard library has no MQTT client; this one speaks just what the
DPS device protocol needs: CONNECT, SUBSCRIBE, UNSUBSCRIBE, PUBLISH (QoS 0/1),
PUBACK, PINGREQ, DISCONNECT. Stdlib only, so any test may import it.

    c = MqttClient.tls("127.0.0.1", port, cafile="ca.crt")
    rc = c.connect("dev-1", username=dps_username(scope, "dev-1"),
                   password=sas_token(scope, "dev-1", key))
    c.subscribe(DPS_SUBSCRIBE_TOPIC)
    c.publish(register_topic("1"), b"")
    topic, payload = c.recv_publish()
"""

import base64
import hashlib
import hmac
import json
import select
import socket
import ssl
import struct
import time
import urllib.parse

CONNECT, CONNACK, PUBLISH, PUBACK = 1, 2, 3, 4
SUBSCRIBE, SUBACK, UNSUBSCRIBE, UNSUBACK = 8, 9, 10, 11
PINGREQ, PINGRESP, DISCONNECT = 12, 13, 14

DPS_SUBSCRIBE_TOPIC = "$dps/registrations/res/#"
DPS_API_VERSION = "2019-03-31"


class ConnectionClosed(Exception):
    """The server closed the connection."""


# ---- packet encoding -------------------------------------------------------

def encode_remaining_length(n):
    out = bytearray()
    while True:
        b = n % 128
        n //= 128
        if n:
            b |= 0x80
        out.append(b)
        if not n:
            return bytes(out)


def packet(ptype, flags, body):
    return bytes([ptype << 4 | flags]) + encode_remaining_length(len(body)) + body


def mqtt_str(s):
    b = s.encode() if isinstance(s, str) else s
    return struct.pack("!H", len(b)) + b


def connect_packet(client_id, username=None, password=None, clean=True, keep_alive=60,
                   protocol_name="MQTT", level=4):
    flags = (0x02 if clean else 0) | (0x80 if username is not None else 0) | (0x40 if password is not None else 0)
    body = mqtt_str(protocol_name) + bytes([level, flags]) + struct.pack("!H", keep_alive) + mqtt_str(client_id)
    if username is not None:
        body += mqtt_str(username)
    if password is not None:
        body += mqtt_str(password)
    return packet(CONNECT, 0, body)


def subscribe_packet(packet_id, topics):
    body = struct.pack("!H", packet_id)
    for topic, qos in topics:
        body += mqtt_str(topic) + bytes([qos])
    return packet(SUBSCRIBE, 2, body)


def unsubscribe_packet(packet_id, topics):
    return packet(UNSUBSCRIBE, 2, struct.pack("!H", packet_id) + b"".join(mqtt_str(t) for t in topics))


def publish_packet(topic, payload, qos=0, packet_id=0):
    body = mqtt_str(topic) + (struct.pack("!H", packet_id) if qos else b"") + payload
    return packet(PUBLISH, qos << 1, body)


# ---- transports --------------------------------------------------------------

def tls_context(cafile=None, certfile=None, keyfile=None):
    ctx = ssl.create_default_context(cafile=cafile)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if certfile:
        ctx.load_cert_chain(certfile, keyfile)
    return ctx


def tls_socket(host, port, cafile=None, certfile=None, keyfile=None, server_hostname="localhost", timeout=5.0):
    raw = socket.create_connection((host, port), timeout=timeout)
    ctx = tls_context(cafile, certfile, keyfile)
    return ctx.wrap_socket(raw, server_hostname=server_hostname)


# ---- the client ----------------------------------------------------------------

class MqttClient:
    """A blocking MQTT client over a connected stream (anything with sendall/recv)."""

    def __init__(self, stream, timeout=5.0):
        self.stream = stream
        self.timeout = timeout
        self.buf = b""
        self.queue = []         # packets read ahead of what a caller waited for
        self.next_id = 0

    @classmethod
    def tls(cls, host, port, cafile=None, certfile=None, keyfile=None, timeout=5.0):
        return cls(tls_socket(host, port, cafile, certfile, keyfile, timeout=timeout), timeout)

    def _packet_id(self):
        self.next_id = self.next_id % 65535 + 1
        return self.next_id

    def send_raw(self, data):
        self.stream.sendall(data)

    def _fill(self, deadline):
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("no packet from the server in time")
            pending = getattr(self.stream, "pending", None)
            if not (pending and pending()):
                # poll(), not select(): descriptors above 1023 happen in load tests.
                p = select.poll()
                p.register(self.stream.fileno(), select.POLLIN)
                if not p.poll(left * 1000):
                    continue
            try:
                data = self.stream.recv(65536)
            except (ssl.SSLWantReadError, BlockingIOError):
                continue
            except (ConnectionResetError, BrokenPipeError, ssl.SSLEOFError, ssl.SSLZeroReturnError) as e:
                raise ConnectionClosed(str(e)) from e
            if not data:
                raise ConnectionClosed("EOF")
            self.buf += data
            return

    def read_packet(self, timeout=None):
        """Returns (type, flags, body) of the next packet."""
        if self.queue:
            return self.queue.pop(0)
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while True:
            if len(self.buf) >= 2:
                mult, length, i = 1, 0, 1
                complete = False
                while i < len(self.buf) and i <= 4:
                    b = self.buf[i]
                    length += (b & 0x7f) * mult
                    mult *= 128
                    i += 1
                    if not b & 0x80:
                        complete = True
                        break
                if complete and len(self.buf) >= i + length:
                    first = self.buf[0]
                    body = self.buf[i:i + length]
                    self.buf = self.buf[i + length:]
                    return first >> 4, first & 0x0f, body
            self._fill(deadline)

    def _wait_for(self, ptype, timeout=None):
        """Reads until a packet of ptype; PUBLISHes met on the way are queued."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        skipped = []
        try:
            while True:
                p = self.read_packet(max(0.0, deadline - time.monotonic()))
                if p[0] == ptype:
                    return p
                skipped.append(p)
        finally:
            self.queue[0:0] = skipped

    def connect(self, client_id, username=None, password=None, clean=True, keep_alive=60, **kw):
        """Sends CONNECT; returns the CONNACK return code."""
        self.send_raw(connect_packet(client_id, username, password, clean, keep_alive, **kw))
        _, _, body = self._wait_for(CONNACK)
        return body[1]

    def subscribe(self, topic, qos=1):
        """Returns the granted QoS (0x80 for a refusal)."""
        pid = self._packet_id()
        self.send_raw(subscribe_packet(pid, [(topic, qos)]))
        _, _, body = self._wait_for(SUBACK)
        assert struct.unpack("!H", body[:2])[0] == pid, "SUBACK for another packet id"
        return body[2]

    def unsubscribe(self, topic):
        pid = self._packet_id()
        self.send_raw(unsubscribe_packet(pid, [topic]))
        _, _, body = self._wait_for(UNSUBACK)
        assert struct.unpack("!H", body[:2])[0] == pid

    def publish(self, topic, payload=b"", qos=1):
        if isinstance(payload, str):
            payload = payload.encode()
        pid = self._packet_id() if qos else 0
        self.send_raw(publish_packet(topic, payload, qos, pid))
        if qos == 1:
            _, _, body = self._wait_for(PUBACK)
            assert struct.unpack("!H", body[:2])[0] == pid, "PUBACK for another packet id"

    def recv_publish(self, timeout=None):
        """Returns (topic, payload) of the next PUBLISH, acknowledging QoS 1."""
        _, flags, body = self._wait_for(PUBLISH, timeout)
        n = struct.unpack("!H", body[:2])[0]
        topic = body[2:2 + n].decode()
        rest = body[2 + n:]
        qos = (flags >> 1) & 3
        if qos:
            pid = rest[:2]
            rest = rest[2:]
            self.send_raw(packet(PUBACK, 0, pid))
        return topic, rest

    def ping(self):
        self.send_raw(packet(PINGREQ, 0, b""))
        self._wait_for(PINGRESP)

    def disconnect(self):
        try:
            self.send_raw(packet(DISCONNECT, 0, b""))
        except OSError:
            pass
        self.close()

    def close(self):
        try:
            self.stream.close()
        except OSError:
            pass

    def wait_closed(self, timeout=None):
        """True when the server closes the connection within timeout."""
        try:
            while True:
                self.read_packet(timeout)
        except ConnectionClosed:
            return True
        except TimeoutError:
            return False


# ---- DPS helpers -------------------------------------------------------------------

def url_encode(s):
    return urllib.parse.quote(s, safe="-_.~")


def dps_username(id_scope, registration_id, api_version=DPS_API_VERSION, client_version=None):
    u = f"{id_scope}/registrations/{registration_id}/api-version={api_version}"
    if client_version is not None:
        u += "&ClientVersion=" + url_encode(client_version)
    return u


def sas_sign(key_b64, message):
    return base64.b64encode(hmac.new(base64.b64decode(key_b64), message.encode(), hashlib.sha256).digest()).decode()


def sas_token(id_scope, registration_id, key_b64, expiry=None, sr=None, skn="registration", order=None):
    """A DPS SAS token; sr (as sent, already encoded) and field order may be overridden."""
    if expiry is None:
        expiry = int(time.time()) + 3600
    if sr is None:
        sr = url_encode(f"{id_scope}/registrations/{registration_id}")
    sig = sas_sign(key_b64, f"{sr}\n{expiry}")
    fields = {"sr": sr, "sig": url_encode(sig), "se": str(expiry)}
    if skn is not None:
        fields["skn"] = skn
    keys = order or list(fields)
    return "SharedAccessSignature " + "&".join(f"{k}={fields[k]}" for k in keys)


def derive_key(group_key_b64, registration_id):
    return sas_sign(group_key_b64, registration_id)


def register_topic(rid):
    return f"$dps/registrations/PUT/iotdps-register/?$rid={rid}"


def poll_topic(rid, operation_id):
    return f"$dps/registrations/GET/iotdps-get-operationstatus/?$rid={rid}&operationId={operation_id}"


def parse_response_topic(topic):
    """'$dps/registrations/res/202/?$rid=1&retry-after=3' -> (202, {'$rid': '1', 'retry-after': '3'})"""
    prefix = "$dps/registrations/res/"
    if not topic.startswith(prefix):
        raise ValueError(f"not a DPS response topic: {topic}")
    status, _, query = topic[len(prefix):].partition("/?")
    props = {}
    for pair in query.split("&"):
        k, _, v = pair.partition("=")
        props[k] = v
    return int(status), props


def dps_request(client, topic, timeout=None):
    """Publishes a request and returns (status, props, body) of its response."""
    client.publish(topic, b" ")
    t, payload = client.recv_publish(timeout)
    status, props = parse_response_topic(t)
    try:
        body = json.loads(payload) if payload else None
    except ValueError:
        body = payload
    return status, props, body


def provision(client, rid_base="r", max_polls=20, body=b"", sleep=True):
    """Runs register + polls; returns the list of (status, props, body), last one final."""
    client.publish(register_topic(f"{rid_base}0"), body)
    t, payload = client.recv_publish()
    status, props = parse_response_topic(t)
    answers = [(status, props, json.loads(payload))]
    for i in range(1, max_polls + 1):
        status, props, body_ = answers[-1]
        if status != 202:
            break
        if sleep:
            time.sleep(float(props.get("retry-after", "1")))
        answers.append(dps_request(client, poll_topic(f"{rid_base}{i}", body_["operationId"])))
    return answers
