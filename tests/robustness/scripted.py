# SPDX-License-Identifier: MIT
# scripted.py: a tiny scripted DPS service (MQTT 3.1.1 over TLS, loopback) whose answers a test chooses, including wrong ones
"""dps-sim answers correctly or with the faults it knows; some hostile
answers need a server that says exactly what a test wants: a response for
another $rid, the same response twice, an unsolicited one, an unknown
status, a hub name that is no host name, a device id with control
characters. ScriptedDps accepts any CONNECT, grants any SUBSCRIBE, and for
each register or poll PUBLISH calls script(kind, rid, n) -> a list of
(topic, body) it sends back (n counts the requests). It listens on
127.0.0.1, port 0, and is stopped by close()."""

import json
import os
import socket
import ssl
import struct
import sys
import threading
import urllib.parse

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "sim"))
from mqttlite import encode_remaining_length, mqtt_str  # noqa: E402


def topic(status, rid, retry_after=None, extra=""):
    t = "$dps/registrations/res/%d/?$rid=%s" % (status, rid)
    if retry_after is not None:
        t += "&retry-after=%d" % retry_after
    return t + extra


def assigning(op="op-1"):
    return json.dumps({"operationId": op, "status": "assigning"}).encode()


def assigned(hub="hub-s.azure-devices.net", device_id="dev-sas", op="op-1", status="assigned"):
    return json.dumps({"operationId": op, "status": status,
                       "registrationState": {"registrationId": "dev-sas", "assignedHub": hub, "deviceId": device_id,
                                             "status": status, "substatus": "initialAssignment"}}).encode()


class ScriptedDps:
    def __init__(self, certfile, keyfile, script):
        self.script = script
        self.requests = []          # (kind, rid)
        self.connects = 0
        self.lock = threading.Lock()
        self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.ctx.load_cert_chain(certfile, keyfile)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.port = self.sock.getsockname()[1]
        self.running = True
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        while self.running:
            try:
                raw, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._conn, args=(raw,), daemon=True).start()

    def _conn(self, raw):
        try:
            s = self.ctx.wrap_socket(raw, server_side=True)
            s.settimeout(30)
            buf = b""
            while self.running:
                while True:
                    pkt, buf = self._frame(buf)
                    if pkt is not None:
                        break
                    data = s.recv(65536)
                    if not data:
                        return
                    buf += data
                ptype, flags, body = pkt
                if ptype == 1:          # CONNECT
                    with self.lock:
                        self.connects += 1
                    s.sendall(bytes([0x20, 2, 0, 0]))
                elif ptype == 8:        # SUBSCRIBE: grant QoS 1
                    s.sendall(bytes([0x90, 3]) + body[:2] + b"\x01")
                elif ptype == 12:       # PINGREQ
                    s.sendall(bytes([0xd0, 0]))
                elif ptype == 14:       # DISCONNECT
                    return
                elif ptype == 3:
                    qos = (flags >> 1) & 3
                    tl = struct.unpack("!H", body[:2])[0]
                    t = body[2:2 + tl].decode()
                    if qos:
                        pid = body[2 + tl:4 + tl]
                        s.sendall(bytes([0x40, 2]) + pid)
                    q = urllib.parse.parse_qs(t.split("?", 1)[1])
                    rid = q["$rid"][0]
                    kind = "poll" if "iotdps-get-operationstatus" in t else "register"
                    with self.lock:
                        self.requests.append((kind, rid))
                        n = len(self.requests)
                    for rt, rb in self.script(kind, rid, n):
                        tb = mqtt_str(rt)
                        s.sendall(bytes([0x30]) + encode_remaining_length(len(tb) + len(rb)) + tb + rb)
        except (OSError, ssl.SSLError, ValueError, KeyError, IndexError):
            return
        finally:
            raw.close()

    @staticmethod
    def _frame(buf):
        if len(buf) < 2:
            return None, buf
        n, mult, i = 0, 1, 1
        while True:
            if i >= len(buf):
                return None, buf
            b = buf[i]
            n += (b & 0x7f) * mult
            mult *= 128
            i += 1
            if not b & 0x80:
                break
        if len(buf) < i + n:
            return None, buf
        return (buf[0] >> 4, buf[0] & 0x0f, buf[i:i + n]), buf[i + n:]

    def close(self):
        self.running = False
        self.sock.close()
