#!/usr/bin/env python3
"""MQTT 5 interop of midge with paho-mqtt (MQTTv5): session expiry, message
expiry, shared subscriptions, subscription identifiers, No Local, Retain
Handling, user properties, request/response.

Usage: paho_v5.py PORT   (the broker runs with `response_information replies/`)
Exits 0 and prints "all v5 checks passed", or exits 1 naming the failed check.
Every wait is bounded by TIMEOUT; absence is checked after a round trip.
"""
import sys
import threading
import time

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

HOST = "127.0.0.1"
TIMEOUT = 10.0
PORT = int(sys.argv[1])


def fail(msg):
    print("FAIL:", msg, flush=True)
    sys.exit(1)


class V5:
    """A connected MQTTv5 paho client recording messages and CONNACKs."""

    def __init__(self, cid, clean=True, expiry=0, request_ri=False):
        self.c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=cid, protocol=mqtt.MQTTv5)
        self.msgs = []
        self.cond = threading.Condition()
        self.connack = None
        self.ready = threading.Event()
        self.subacks = []
        self.c.on_connect = self._on_connect
        self.c.on_message = self._on_message
        self.c.on_subscribe = self._on_subscribe
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = expiry
        if request_ri:
            props.RequestResponseInformation = 1
        self.c.connect(HOST, PORT, keepalive=30, clean_start=clean, properties=props)
        self.c.loop_start()
        if not self.ready.wait(TIMEOUT):
            fail(f"{cid}: no CONNACK")

    def _on_connect(self, client, userdata, flags, rc, props):
        self.connack = (flags, rc, props)
        self.ready.set()

    def _on_message(self, client, userdata, msg):
        with self.cond:
            self.msgs.append(msg)
            self.cond.notify_all()

    def _on_subscribe(self, client, userdata, mid, rcs, props):
        with self.cond:
            self.subacks.append(mid)
            self.cond.notify_all()

    def sub(self, topic, qos=1, sub_id=None, **opts):
        props = None
        if sub_id is not None:
            props = Properties(PacketTypes.SUBSCRIBE)
            props.SubscriptionIdentifier = sub_id
        _, mid = self.c.subscribe(topic, options=SubscribeOptions(qos=qos, **opts), properties=props)
        with self.cond:
            if not self.cond.wait_for(lambda: mid in self.subacks, TIMEOUT):
                fail(f"no SUBACK for {topic}")

    def pub(self, topic, payload, qos=1, retain=False, props=None):
        info = self.c.publish(topic, payload, qos=qos, retain=retain, properties=props)
        info.wait_for_publish(TIMEOUT)
        if not info.is_published():
            fail(f"publish to {topic} not acknowledged")

    def wait(self, n, what):
        with self.cond:
            if not self.cond.wait_for(lambda: len(self.msgs) >= n, TIMEOUT):
                fail(f"{what}: got {len(self.msgs)} of {n} messages")
            return list(self.msgs)

    def round_trip(self):
        """A message to ourselves through the broker: everything sent before it
        has been delivered when it arrives."""
        marker = f"rt/{id(self)}/{time.monotonic_ns()}"
        self.sub(marker, qos=1)
        before = len(self.msgs)
        self.pub(marker, b"rt")
        self.wait(before + 1, "round trip")
        with self.cond:
            self.msgs = [m for m in self.msgs if m.topic != marker]

    def close(self):
        self.c.disconnect()
        self.c.loop_stop()


def session_expiry():
    a = V5("pv5-se", clean=True, expiry=60)
    a.sub("pv5/se", qos=1)
    a.close()
    p = V5("pv5-se-pub")
    p.pub("pv5/se", b"while away")
    b = V5("pv5-se", clean=False, expiry=60)
    if not b.connack[0].session_present:
        fail("session expiry: session not present")
    got = b.wait(1, "session expiry")
    if got[0].payload != b"while away":
        fail("session expiry: wrong message")
    b.close()
    p.close()


def message_expiry():
    s = V5("pv5-me-sub")
    s.sub("pv5/me", qos=1)
    p = V5("pv5-me-pub")
    props = Properties(PacketTypes.PUBLISH)
    props.MessageExpiryInterval = 30
    p.pub("pv5/me", b"x", props=props)
    m = s.wait(1, "message expiry")[0]
    left = getattr(m.properties, "MessageExpiryInterval", None)
    if left is None or left > 30:
        fail(f"message expiry not forwarded: {left}")
    s.close()
    p.close()


def shared():
    m1 = V5("pv5-sh-1")
    m2 = V5("pv5-sh-2")
    m1.sub("$share/grp/pv5/sh", qos=1)
    m2.sub("$share/grp/pv5/sh", qos=1)
    p = V5("pv5-sh-pub")
    for i in range(10):
        p.pub("pv5/sh", str(i).encode())
    m1.round_trip()
    m2.round_trip()
    got = sorted(int(m.payload) for m in m1.msgs + m2.msgs)
    if got != list(range(10)):
        fail(f"shared: each message once, got {got}")
    if not m1.msgs or not m2.msgs:
        fail("shared: one member got nothing")
    for c in (m1, m2, p):
        c.close()


def subscription_ids():
    s = V5("pv5-sid")
    s.sub("pv5/sid/+", qos=1, sub_id=11)
    s.sub("pv5/sid/#", qos=0, sub_id=22)
    s.pub("pv5/sid/x", b"x")
    m = s.wait(1, "subscription ids")[0]
    ids = sorted(getattr(m.properties, "SubscriptionIdentifier", []))
    if ids != [11, 22]:
        fail(f"subscription identifiers: {ids}")
    s.round_trip()
    if len(s.msgs) != 1:
        fail("overlapping subscriptions delivered more than one copy")
    s.close()


def no_local():
    s = V5("pv5-nl")
    s.sub("pv5/nl", qos=1, noLocal=True)
    s.pub("pv5/nl", b"own")
    s.round_trip()
    if s.msgs:
        fail("no local: own message delivered")
    s.close()


def retain_handling():
    p = V5("pv5-rh-pub")
    p.pub("pv5/rh", b"kept", retain=True)
    s = V5("pv5-rh")
    s.sub("pv5/rh", qos=1, retainHandling=SubscribeOptions.RETAIN_DO_NOT_SEND)
    s.round_trip()
    if s.msgs:
        fail("retain handling 2: retained message sent")
    s.sub("pv5/+", qos=1, retainHandling=SubscribeOptions.RETAIN_SEND_IF_NEW_SUB)
    got = s.wait(1, "retain handling 1")
    if got[0].payload != b"kept" or not got[0].retain:
        fail("retain handling 1: retained message missing")
    p.pub("pv5/rh", b"", retain=True)
    p.close()
    s.close()


def user_properties_and_request_response():
    responder = V5("pv5-resp")
    responder.sub("pv5/req", qos=1)
    requester = V5("pv5-req", request_ri=True)
    ri = getattr(requester.connack[2], "ResponseInformation", None)
    if ri != "replies/pv5-req":
        fail(f"response information: {ri}")
    requester.sub(ri, qos=1)
    props = Properties(PacketTypes.PUBLISH)
    props.ResponseTopic = ri
    props.CorrelationData = b"id-42"
    props.UserProperty = [("b", "1"), ("a", "2"), ("b", "3")]
    props.ContentType = "text/plain"
    requester.pub("pv5/req", b"ping", props=props)
    req = responder.wait(1, "request")[0]
    if list(req.properties.UserProperty) != [("b", "1"), ("a", "2"), ("b", "3")]:
        fail(f"user properties changed: {req.properties.UserProperty}")
    if req.properties.ContentType != "text/plain":
        fail("content type lost")
    reply = Properties(PacketTypes.PUBLISH)
    reply.CorrelationData = req.properties.CorrelationData
    responder.pub(req.properties.ResponseTopic, b"pong", props=reply)
    r = requester.wait(1, "response")[0]
    if r.payload != b"pong" or r.properties.CorrelationData != b"id-42":
        fail("request/response: correlation data lost")
    responder.close()
    requester.close()


for check in (session_expiry, message_expiry, shared, subscription_ids, no_local,
              retain_handling, user_properties_and_request_response):
    check()
    print("ok:", check.__name__, flush=True)
print("all v5 checks passed", flush=True)
