#!/usr/bin/python3
"""An independent Sparkplug B host for the tests: paho-mqtt and protobuf
from Debian, with the payload schema compiled by protoc from
pkg/north/sparkplug/sproto/sparkplug_b.proto (the directory holding
sparkplug_b_pb2.py is the third argument).

It subscribes to spBv1.0/# and prints each message as one JSON line:
{"topic", "seq", "timestamp", "metrics": [{"name", "alias", "datatype",
"value", "historical", "null"}]}, and {"event": "connected"} when it
(re)connects. From stdin it takes commands, one per line, as JSON:
{"topic": ..., "metrics": [{"name": ..., "datatype": N, "value": ...}]},
published as Sparkplug payloads (a DCMD write, an NCMD rebirth), or
{"topic": ..., "raw": "text", "retain": bool}, published as it is (a
STATE message). STATE messages it receives print as {"topic", "state":
the payload as text}. With SPHOST_PERSISTENT set in the environment its
MQTT session persists (clean session false, a client id fixed by the
port), so a broker with persistence keeps what comes while it is away.

A fourth argument makes it a Sparkplug 3.0 primary host of that id: its
will is spBv1.0/STATE/<id> {"online": false, "timestamp": T} (QoS 1,
retained), and on connecting it publishes {"online": true, "timestamp":
T} there, T being the time it connected, as the specification asks.
"""
import json
import os
import sys
import time

import paho.mqtt.client as mqtt

host, port, protodir = sys.argv[1], int(sys.argv[2]), sys.argv[3]
host_id = sys.argv[4] if len(sys.argv) > 4 else None
birth_ts = int(time.time() * 1000)
sys.path.insert(0, protodir)
import sparkplug_b_pb2 as sp  # noqa: E402

INT = {1, 2, 3, 5, 6}        # int_value: Int8, Int16, Int32, UInt8, UInt16
LONG = {4, 7, 8, 13}         # long_value: Int64, UInt32, UInt64, DateTime


def out(obj):
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def value(m):
    kind = m.WhichOneof("value")
    if kind is None:
        return None
    v = getattr(m, kind)
    # Signed types travel as two's complement (Sparkplug 3.0, 6.4.16).
    if kind == "int_value" and m.datatype in (1, 2, 3) and v >= 1 << 31:
        v -= 1 << 32
    if kind == "long_value" and m.datatype == 4 and v >= 1 << 63:
        v -= 1 << 64
    return v


def on_connect(client, userdata, flags, rc):
    client.subscribe("spBv1.0/#", qos=1)
    client.subscribe("STATE/#", qos=1)
    if host_id:
        client.publish("spBv1.0/STATE/" + host_id, json.dumps({"online": True, "timestamp": birth_ts}), qos=1, retain=True)
    out({"event": "connected", "rc": rc})


def on_message(client, userdata, msg):
    if msg.topic.startswith("STATE/") or msg.topic.startswith("spBv1.0/STATE/"):
        out({"topic": msg.topic, "state": msg.payload.decode("utf-8", "replace")})
        return
    p = sp.Payload()
    p.ParseFromString(msg.payload)
    out({
        "topic": msg.topic,
        "seq": p.seq if p.HasField("seq") else None,
        "timestamp": p.timestamp,
        "metrics": [{
            "name": m.name if m.HasField("name") else None,
            "alias": m.alias if m.HasField("alias") else None,
            "datatype": m.datatype if m.HasField("datatype") else None,
            "value": value(m),
            "historical": m.is_historical,
            "null": m.is_null,
        } for m in p.metrics],
    })


if os.environ.get("SPHOST_PERSISTENT"):
    # A session the broker keeps (with persistence): what is published
    # while this host is away waits for it.
    client = mqtt.Client(client_id="mcpgw-test-host-%d" % port, clean_session=False)
else:
    client = mqtt.Client(client_id="mcpgw-test-host-%d" % time.time_ns(), clean_session=True)
client.on_connect = on_connect
client.on_message = on_message
client.reconnect_delay_set(min_delay=1, max_delay=1)
if host_id:
    client.will_set("spBv1.0/STATE/" + host_id, json.dumps({"online": False, "timestamp": birth_ts}), qos=1, retain=True)
while True:
    try:
        client.connect(host, port, keepalive=10)
        break
    except OSError:
        time.sleep(0.1)
client.loop_start()

for line in sys.stdin:
    cmd = json.loads(line)
    if "raw" in cmd:
        client.publish(cmd["topic"], cmd["raw"], qos=1, retain=cmd.get("retain", False)).wait_for_publish()
        out({"event": "published", "topic": cmd["topic"]})
        continue
    p = sp.Payload()
    p.timestamp = int(time.time() * 1000)
    for c in cmd["metrics"]:
        m = p.metrics.add()
        m.name = c["name"]
        m.datatype = c["datatype"]
        v = c["value"]
        if isinstance(v, bool):
            m.boolean_value = v
        elif c["datatype"] in INT:
            m.int_value = v & 0xFFFFFFFF
        elif c["datatype"] in LONG:
            m.long_value = v & 0xFFFFFFFFFFFFFFFF
        elif c["datatype"] == 9:
            m.float_value = v
        elif c["datatype"] == 10:
            m.double_value = v
        else:
            m.string_value = v
    client.publish(cmd["topic"], p.SerializeToString(), qos=1).wait_for_publish()
    out({"event": "published", "topic": cmd["topic"]})
client.loop_stop()
