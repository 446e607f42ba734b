"""An independent Sparkplug B subscriber for the telemetry tests.

Decodes every message under spBv1.0/<group>/# with pysparkplug (the Eclipse Sparkplug
B payload definition, not Kensa's) and prints one JSON object per message, so a test
can check what a box published without trusting the box's own decoder.

    python3 sparkplug_listen.py HOST PORT GROUP CLIENT_ID

The MQTT session is persistent (clean session off, QoS 1 subscription) under
CLIENT_ID: when the broker keeps its state across a restart, messages published while
this listener was reconnecting are queued for it, as for any plant historian.
"""

import json
import sys

import paho.mqtt.client as mqtt
import pysparkplug as spb

DECODERS = {
    spb.MessageType.NBIRTH: spb.NBirth,
    spb.MessageType.DBIRTH: spb.DBirth,
    spb.MessageType.NDATA: spb.NData,
    spb.MessageType.DDATA: spb.DData,
    spb.MessageType.NDEATH: spb.NDeath,
    spb.MessageType.DDEATH: spb.DDeath,
}


def value_of(metric):
    if metric.is_null or metric.value is None:
        return None
    if isinstance(metric.value, (bytes, bytearray)):
        return {"bytes": len(metric.value), "png": bytes(metric.value[:4]) == b"\x89PNG"}
    return metric.value


def emit(line):
    print(json.dumps(line, default=str), flush=True)


def on_message(_client, _userdata, message):
    topic = spb.Topic.from_str(message.topic)
    decoder = DECODERS.get(topic.message_type)
    if decoder is None:
        return
    try:
        payload = decoder.decode(message.payload)
    except Exception as e:  # noqa: BLE001 - a test wants to see any undecodable payload
        emit({"type": "UNDECODABLE", "topic": message.topic, "error": str(e)})
        return
    metrics = {}
    historical = False
    if isinstance(payload, spb.NDeath):
        # pysparkplug gives a death certificate its bdSeq metric as a field.
        metrics["bdSeq"] = value_of(payload.bd_seq_metric)
    for m in getattr(payload, "metrics", ()):
        metrics[m.name] = value_of(m)
        historical = historical or m.is_historical
    emit(
        {
            "type": str(topic.message_type),
            "node": topic.edge_node_id,
            "device": topic.device_id,
            "seq": getattr(payload, "seq", None),
            "historical": historical,
            "metrics": metrics,
        }
    )


def main():
    host, port, group, client_id = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
    client = mqtt.Client(client_id=client_id, clean_session=False)
    client.reconnect_delay_set(min_delay=1, max_delay=1)

    def on_connect(c, _userdata, _flags, rc):
        if rc != 0:
            emit({"type": "REFUSED", "rc": rc})
            return
        c.subscribe(f"spBv1.0/{group}/#", qos=1)

    def on_subscribe(_c, _userdata, _mid, _granted):
        emit({"type": "LISTENING"})

    client.on_connect = on_connect
    client.on_subscribe = on_subscribe
    client.on_message = on_message
    client.connect(host, port=port, keepalive=5)
    client.loop_forever(retry_first_connection=True)


if __name__ == "__main__":
    main()
