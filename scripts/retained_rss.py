#!/usr/bin/env python3
"""RSS a broker grows by holding N retained messages (check_retain_source's cost).

Usage: scripts/retained_rss.py BINARY [DIRECTIVE LINE] [N]
Starts BINARY on a free loopback port, publishes N retained QoS 0 messages
(10-byte payloads on `sensors/deviceI/state`) from one client with paho-mqtt,
syncs with a QoS 1 publish, and prints the growth of VmRSS. Set OLD=1 for a
midge without max_retained_messages/max_retained_bytes/sys_interval.
"""
import os
import socket
import subprocess
import sys
import tempfile
import time

import paho.mqtt.client as mqtt

binary = sys.argv[1]
setting = sys.argv[2] if len(sys.argv) > 2 else ""
n = int(sys.argv[3]) if len(sys.argv) > 3 else 100_000
s = socket.socket()
s.bind(("127.0.0.1", 0))
port = s.getsockname()[1]
s.close()
d = tempfile.mkdtemp(prefix="midge-rss-")
conf = os.path.join(d, "m.conf")
limits = "" if os.environ.get("OLD") else "max_retained_messages 0\nmax_retained_bytes 0\nsys_interval 0\n"
with open(conf, "w") as f:
    f.write(f"listener {port} 127.0.0.1\nallow_anonymous true\n{limits}{setting}\n")
p = subprocess.Popen([binary, "-c", conf], stderr=subprocess.DEVNULL)
try:
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", port)).close()
            break
        except OSError:
            time.sleep(0.05)

    def rss():
        with open(f"/proc/{p.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        return 0

    before = rss()
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="pub")
    c.connect("127.0.0.1", port)
    c.loop_start()
    for i in range(n):
        c.publish(f"sensors/device{i}/state", b"0123456789", qos=0, retain=True)
        if i % 5000 == 0:
            time.sleep(0.01)
    c.publish("sync", b"x", qos=1).wait_for_publish()
    time.sleep(0.5)
    after = rss()
    c.loop_stop()
    c.disconnect()
    print(f"{binary} [{setting or 'defaults'}]: {n} retained, RSS +{after - before} kB")
finally:
    p.terminate()
    p.wait()
    for name in os.listdir(d):
        os.remove(os.path.join(d, name))
    os.rmdir(d)
