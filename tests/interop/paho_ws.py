#!/usr/bin/env python3
"""paho-mqtt (>= 2) against midge over WebSockets, TCP, or a mix.

A subscriber on PREFIX/# at QoS 2 gets a publisher's QoS 0, 1 and 2 messages
(the QoS 2 one retained); then a late subscriber (on the subscriber's
transport) gets only the retained one, flagged retained. Prints one JSON line
of what arrived, in the same shape as tests/js/roundtrip.js, for the Rust test
to compare exactly.

Usage: paho_ws.py SUB PUB VERSION PREFIX [CA_FILE]
where SUB and PUB are `ws:PORT`, `wss:PORT` or `tcp:PORT` and VERSION is 4 or 5.
Exits 1 with a message on the first failure; every wait is bounded.
"""
import json
import sys
import threading

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

TIMEOUT = 10.0


def fail(msg):
    print(f"FAIL: {msg}", file=sys.stderr, flush=True)
    sys.exit(1)


class Client:
    """A connected paho client on one transport that records what it gets."""

    def __init__(self, endpoint, client_id, version, ca):
        kind, port = endpoint.split(":")
        protocol = mqtt.MQTTv5 if version == 5 else mqtt.MQTTv311
        transport = "tcp" if kind == "tcp" else "websockets"
        self.c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id,
                             protocol=protocol, transport=transport)
        if transport == "websockets":
            self.c.ws_set_options(path="/mqtt")
        if kind == "wss":
            self.c.tls_set(ca_certs=ca)
        self.cond = threading.Condition()
        self.messages = []
        self.acked = set()
        self.granted = None
        self.connected = threading.Event()
        self.c.on_connect = self._on_connect
        self.c.on_message = self._on_message
        self.c.on_publish = self._on_publish
        self.c.on_subscribe = self._on_subscribe
        host = "localhost" if kind == "wss" else "127.0.0.1"
        self.c.connect(host, int(port), keepalive=30)
        self.c.loop_start()
        if not self.connected.wait(TIMEOUT):
            fail(f"{client_id}: no CONNACK over {endpoint}")

    def _on_connect(self, client, userdata, flags, reason_code, properties):
        if reason_code != 0:
            fail(f"connect refused: {reason_code}")
        self.connected.set()

    def _on_message(self, client, userdata, msg):
        with self.cond:
            self.messages.append({"topic": msg.topic, "payload": msg.payload.decode(),
                                  "qos": msg.qos, "retain": bool(msg.retain)})
            self.cond.notify_all()

    def _on_publish(self, client, userdata, mid, reason_code, properties):
        with self.cond:
            self.acked.add(mid)
            self.cond.notify_all()

    def _on_subscribe(self, client, userdata, mid, reason_codes, properties):
        with self.cond:
            self.granted = [rc.value for rc in reason_codes]
            self.cond.notify_all()

    def subscribe(self, topic, qos):
        self.c.subscribe(topic, qos)
        with self.cond:
            if not self.cond.wait_for(lambda: self.granted is not None, TIMEOUT):
                fail(f"no SUBACK for {topic}")
            return self.granted

    def publish(self, topic, payload, qos, retain=False):
        info = self.c.publish(topic, payload, qos, retain=retain)
        if qos == 0:
            info.wait_for_publish(TIMEOUT)
            return
        # on_publish fires on PUBACK (QoS 1) or PUBCOMP (QoS 2).
        with self.cond:
            if not self.cond.wait_for(lambda: info.mid in self.acked, TIMEOUT):
                fail(f"publish {topic} at QoS {qos} not acknowledged")

    def wait_messages(self, n):
        with self.cond:
            if not self.cond.wait_for(lambda: len(self.messages) >= n, TIMEOUT):
                fail(f"expected {n} messages, got {self.messages}")
            return list(self.messages)

    def close(self):
        self.c.disconnect()
        self.c.loop_stop()


def main():
    sub_at, pub_at, version, prefix = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
    ca = sys.argv[5] if len(sys.argv) > 5 else None
    sub = Client(sub_at, f"{prefix}-sub", version, ca)
    granted = sub.subscribe(f"{prefix}/#", 2)
    pub = Client(pub_at, f"{prefix}-pub", version, ca)
    pub.publish(f"{prefix}/q0", b"zero", 0)
    pub.publish(f"{prefix}/q1", b"one", 1)
    pub.publish(f"{prefix}/q2", b"two", 2, retain=True)
    live = sub.wait_messages(3)
    late = Client(sub_at, f"{prefix}-late", version, ca)
    late.subscribe(f"{prefix}/#", 2)
    retained = late.wait_messages(1)
    for c in (sub, pub, late):
        c.close()
    print(json.dumps({"granted": granted, "live": live, "retained": retained},
                     separators=(",", ":")), flush=True)


if __name__ == "__main__":
    main()
