"""The baseline: a bare aiohttp client making the same POSTs as hookctl, at the same concurrency.

    python bench/reference.py --url http://127.0.0.1:PORT/hook --events events.ndjson -c 50

For every NDJSON line it POSTs the JSON body the benchmark rule renders (see BODY_FIELDS),
through one aiohttp session with a connection limit equal to the concurrency, and prints one
JSON object: {"sent", "ok", "seconds"} (seconds: from the first request to the last answer).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time

import aiohttp


def body_of(event: dict) -> bytes:
    """The body the benchmark rule's template produces for an event (see run.RULE)."""
    ticket = event["ticket"]
    return json.dumps(
        {
            "event": event["event"],
            "id": event["id"],
            "ticket": ticket["id"],
            "subject": ticket["subject"],
            "urgency": ticket["urgency"],
            "tags": ticket["tags"],
            "requester": ticket["requester"]["email"],
            "text": f"Ticket {ticket['id']} ({ticket['urgency']}): {ticket['subject']}",
        },
        ensure_ascii=False,
    ).encode()


async def run(url: str, path: str, concurrency: int) -> dict[str, float | int]:
    """POST one request per event line with `concurrency` workers; returns the counts."""
    connector = aiohttp.TCPConnector(limit=concurrency, limit_per_host=concurrency)
    headers = {"Content-Type": "application/json", "X-Source": "hookctl-bench"}
    sent = ok = 0
    with open(path, encoding="utf-8") as lines:
        async with aiohttp.ClientSession(connector=connector) as session:

            async def worker() -> None:
                nonlocal sent, ok
                for line in lines:  # one shared iterator: each line goes to one worker
                    if not line.strip():
                        continue
                    data = body_of(json.loads(line))
                    async with session.post(url, data=data, headers=headers) as response:
                        await response.read()
                        sent += 1
                        ok += 200 <= response.status < 400

            t0 = time.perf_counter()
            await asyncio.gather(*(worker() for _ in range(concurrency)))
            seconds = time.perf_counter() - t0
    return {"sent": sent, "ok": ok, "seconds": seconds}


def main() -> None:
    """Parse options, send, print the result as JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True)
    parser.add_argument("--events", required=True, help="NDJSON file of events")
    parser.add_argument("-c", "--concurrency", type=int, default=50)
    args = parser.parse_args()
    result = asyncio.run(run(args.url, args.events, args.concurrency))
    sys.stdout.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
