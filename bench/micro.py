"""Micro-benchmarks of the pure core (absolute numbers, for orientation): reading NDJSON, matching conditions, rendering a body.

Run: .venv/bin/python bench/micro.py
"""

import io
import json
import time

from hookctl.events.read import read_source
from hookctl.render.webhook import WebhookTemplate, render_request
from hookctl.rules.conditions import compile_when, evaluate

ev = {
    "event": "ticket.created",
    "id": "e",
    "ticket": {
        "id": 1,
        "subject": 'Printer <on> fire & "x"',
        "urgency": "Urgent",
        "actions": [{"author": {"type": "end_user"}}],
        "tags": ["a", "vip"],
    },
}
data = ("\n".join(json.dumps({**ev, "id": f"e{i}"}) for i in range(100_000)) + "\n").encode()
t = time.perf_counter()
n = sum(1 for _ in read_source(io.BytesIO(data), "x"))
dt = time.perf_counter() - t
print(f"read NDJSON: {n / dt:,.0f} events/s ({len(data) / dt / 1e6:.0f} MB/s)")
when = compile_when(
    {
        "all": [
            {"field": "ticket.urgency", "op": "in", "value": ["High", "Urgent"]},
            {"field": "ticket.actions[-1].author.type", "op": "eq", "value": "end_user"},
            {"any": [{"field": "ticket.tags", "op": "contains", "value": "vip"}]},
        ]
    }
)
t = time.perf_counter()
k = sum(evaluate(when, ev) for _ in range(200_000))
dt = time.perf_counter() - t
print(f"evaluate 3-condition when: {200_000 / dt:,.0f} events/s")
wh = WebhookTemplate(
    method="POST",
    url="https://h.example/{{ ticket.id }}",
    body={"text": "New {{ ticket.subject }}", "id": "{{ ticket.id }}", "tags": "{{ ticket.tags }}"},
)
t = time.perf_counter()
for _ in range(20_000):
    render_request(wh, ev, environ={})
dt = time.perf_counter() - t
print(f"render 3-leaf JSON body: {dt / 20_000 * 1e6:.0f} µs per request")
