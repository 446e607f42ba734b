"""An independent Sparkplug B subscriber for the telemetry tests.

Decodes every message under spBv1.0/<group>/# with pysparkplug (the Eclipse Sparkplug
B payload definition, not Kensa's) and prints one JSON object per message, so a test
can check what a box published without trusting the box's own decoder.

    python3 sparkplug_listen.py HOST PORT GROUP
"""

import json
import sys
import time

import pysparkplug as spb


def value_of(metric):
    if metric.is_null or metric.value is None:
        return None
    if isinstance(metric.value, (bytes, bytearray)):
        return {"bytes": len(metric.value), "png": bytes(metric.value[:4]) == b"\x89PNG"}
    return metric.value


def main():
    host, port, group = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    client = spb.Client(client_id=f"kensa-test-listener-{time.time_ns()}")

    def on_message(_client, message):
        topic = message.topic
        payload = message.payload
        metrics = {}
        historical = False
        if isinstance(payload, spb.NDeath):
            # pysparkplug gives a death certificate its bdSeq metric as a field.
            metrics["bdSeq"] = value_of(payload.bd_seq_metric)
        for m in getattr(payload, "metrics", ()):
            metrics[m.name] = value_of(m)
            historical = historical or m.is_historical
        line = {
            "type": str(topic.message_type),
            "node": topic.edge_node_id,
            "device": topic.device_id,
            "seq": getattr(payload, "seq", None),
            "historical": historical,
            "metrics": metrics,
        }
        print(json.dumps(line, default=str), flush=True)

    def on_connect(c):
        c.subscribe(spb.Topic(group_id=group, message_type=spb.MULTI_LEVEL_WILDCARD), spb.QoS.AT_LEAST_ONCE, on_message)
        print(json.dumps({"type": "LISTENING"}), flush=True)

    client.connect(host, port=port, blocking=True, callback=on_connect)


if __name__ == "__main__":
    main()
