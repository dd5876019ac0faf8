#!/usr/bin/env python3
"""Interop check of midge against the Python paho-mqtt client (MQTT 3.1.1 and 5).

Usage: paho_check.py PORT
Exits 0 when every check passes, 1 with a message otherwise. Every wait is bounded.
"""
import sys
import threading

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

HOST = "127.0.0.1"
TIMEOUT = 10.0


class Collector:
    """A connected paho client that records what it receives."""

    def __init__(self, port, client_id, protocol, clean=True):
        kwargs = {}
        if protocol == mqtt.MQTTv5:
            self.c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=protocol)
        else:
            self.c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=protocol,
                                 clean_session=clean)
        self.messages = []
        self.cond = threading.Condition()
        self.connected = threading.Event()
        self.subscribed = threading.Event()
        self.published = set()
        self.c.on_connect = self._on_connect
        self.c.on_message = self._on_message
        self.c.on_subscribe = lambda *a: self.subscribed.set()
        self.c.on_publish = self._on_publish
        if protocol == mqtt.MQTTv5:
            props = Properties(PacketTypes.CONNECT)
            props.SessionExpiryInterval = 0
            self.c.connect(HOST, port, keepalive=30, clean_start=clean, properties=props, **kwargs)
        else:
            self.c.connect(HOST, port, keepalive=30)
        self.c.loop_start()
        if not self.connected.wait(TIMEOUT):
            fail(f"{client_id}: no CONNACK")

    def _on_connect(self, client, userdata, flags, reason_code, properties):
        if reason_code != 0:
            fail(f"connect refused: {reason_code}")
        self.connected.set()

    def _on_message(self, client, userdata, msg):
        with self.cond:
            self.messages.append(msg)
            self.cond.notify_all()

    def _on_publish(self, client, userdata, mid, reason_code, properties):
        with self.cond:
            self.published.add(mid)
            self.cond.notify_all()

    def subscribe(self, topic, qos):
        self.subscribed.clear()
        self.c.subscribe(topic, qos)
        if not self.subscribed.wait(TIMEOUT):
            fail(f"no SUBACK for {topic}")

    def publish(self, topic, payload, qos, properties=None, retain=False):
        info = self.c.publish(topic, payload, qos, retain=retain, properties=properties)
        with self.cond:
            if not self.cond.wait_for(lambda: info.mid in self.published, TIMEOUT):
                fail(f"publish {topic} qos {qos} not acknowledged")

    def wait_messages(self, n):
        with self.cond:
            if not self.cond.wait_for(lambda: len(self.messages) >= n, TIMEOUT):
                fail(f"expected {n} messages, got {len(self.messages)}")
            return list(self.messages)

    def close(self):
        self.c.disconnect()
        self.c.loop_stop()


def fail(msg):
    print(f"FAIL: {msg}", flush=True)
    sys.exit(1)


def check_qos_matrix(port, protocol, tag):
    sub = Collector(port, f"paho-sub-{tag}", protocol)
    pub = Collector(port, f"paho-pub-{tag}", protocol)
    for qos in (0, 1, 2):
        sub.subscribe(f"paho/{tag}/{qos}", qos)
    for qos in (0, 1, 2):
        pub.publish(f"paho/{tag}/{qos}", f"m{qos}".encode(), qos)
    msgs = sub.wait_messages(3)
    got = sorted((m.topic, m.payload, m.qos) for m in msgs)
    want = [(f"paho/{tag}/{q}", f"m{q}".encode(), q) for q in (0, 1, 2)]
    if got != want:
        fail(f"{tag}: got {got}, want {want}")
    sub.close()
    pub.close()
    print(f"ok: qos 0/1/2 round trip, {tag}")


def check_retained(port):
    pub = Collector(port, "paho-ret-pub", mqtt.MQTTv311)
    pub.publish("paho/retained", b"kept", 1, retain=True)
    sub = Collector(port, "paho-ret-sub", mqtt.MQTTv5)
    sub.subscribe("paho/#", 1)
    msgs = sub.wait_messages(1)
    if msgs[0].payload != b"kept" or not msgs[0].retain:
        fail(f"retained: {msgs[0].payload!r} retain={msgs[0].retain}")
    pub.close()
    sub.close()
    print("ok: retained message delivered to a v5 subscriber")


def check_v5_properties(port):
    sub = Collector(port, "paho-props-sub", mqtt.MQTTv5)
    sub.subscribe("paho/props", 1)
    pub = Collector(port, "paho-props-pub", mqtt.MQTTv5)
    props = Properties(PacketTypes.PUBLISH)
    props.UserProperty = [("a", "1"), ("b", "2")]
    props.ContentType = "text/plain"
    props.ResponseTopic = "paho/reply"
    props.CorrelationData = b"corr"
    pub.publish("paho/props", b"p", 1, properties=props)
    m = sub.wait_messages(1)[0]
    p = m.properties
    if getattr(p, "UserProperty", None) != [("a", "1"), ("b", "2")]:
        fail(f"user properties: {getattr(p, 'UserProperty', None)}")
    if p.ContentType != "text/plain" or p.ResponseTopic != "paho/reply" or p.CorrelationData != b"corr":
        fail(f"properties not forwarded: {p}")
    sub.close()
    pub.close()
    print("ok: v5 properties forwarded unchanged")


def main():
    port = int(sys.argv[1])
    check_qos_matrix(port, mqtt.MQTTv311, "v311")
    check_qos_matrix(port, mqtt.MQTTv5, "v5")
    check_qos_matrix(port, mqtt.MQTTv31, "v31")
    check_retained(port)
    check_v5_properties(port)
    print("paho interop: all checks passed")


if __name__ == "__main__":
    main()
