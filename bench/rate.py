"""Requests per second at a receiver against a rule's `rate:`, with several retry-loop workers.

    python bench/rate.py [--rate 5] [--deliveries 200] [--workers 4] [--db URL]

Seeds `--deliveries` due deliveries for a rule with `rate: N/s` (made as `fire` makes them),
starts `--workers` `retry-loop --every 0.5s` processes on one database (a SQLite file in a
temporary directory, or `--db postgresql://...`), and records every arrival at a receiver
process that answers 429 (Retry-After: 1) to a request arriving when N or more arrived in the
second before it. Prints JSON: requests, 429s, the most arrivals in any 1 s window (and in
any window of 0.95 s: the documented slack), the achieved rate over the run, the smallest gap.
Only loopback traffic; the receiver stops when its stdin closes.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from hookctl.delivery.prepare import Planner
from hookctl.events.read import Event
from hookctl.rules.load import load_rules
from hookctl.store import open_store

RECEIVER = """
import asyncio, sys, time
from aiohttp import web
limit, arrivals = int(sys.argv[1]), []
async def hook(request):
    await request.read()
    now = time.time()
    status = 429 if sum(1 for t, _ in arrivals if now - t < 1.0) >= limit else 200
    arrivals.append((now, status))
    return web.Response(status=status, headers={"Retry-After": "1"} if status == 429 else {})
async def log(request):
    return web.json_response(arrivals)
async def main():
    app = web.Application()
    app.add_routes([web.post("/hook", hook), web.get("/_log", log)])
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    print(site._server.sockets[0].getsockname()[1], flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
asyncio.run(main())
"""


def most_in(times: list[float], width: float) -> int:
    """The most arrivals in any window [t, t + width)."""
    most, start = 0, 0
    for end, at in enumerate(times):
        while at - times[start] >= width:
            start += 1
        most = max(most, end - start + 1)
    return most


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=int, default=5)
    parser.add_argument("--deliveries", type=int, default=200)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--db", default=None)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="hookctl-rate-"))
    db = args.db or str(work / "rate.db")
    receiver = subprocess.Popen(
        [sys.executable, "-c", RECEIVER, str(args.rate)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert receiver.stdout is not None and receiver.stdin is not None
    base = f"http://127.0.0.1:{int(receiver.stdout.readline())}"
    rules = work / "rate.yaml"
    rules.write_text(
        f"name: limited\non: [ticket.created]\nrate: {args.rate}/s\n"
        f"webhook: {{method: POST, url: '{base}/hook'}}\nretry: {{every: 1s, retries: 30}}\n"
    )
    (rule,) = load_rules([rules])
    planner = Planner({}, time.time)
    batch = []
    for n in range(args.deliveries):
        item = Event(
            data={"event": "ticket.created", "id": f"e{n}", "ticket": {"id": n}}, source="-", line=n
        )
        request, ticket, error = planner.render(rule, item)
        batch.append(planner.delivery(rule, item, None, request, ticket, error))
    with open_store(db) as store:
        store.enqueue(batch, now=time.time())
    env = {**os.environ, "HOOKCTL_ALLOW_NET": "127.0.0.1"}
    command = [sys.executable, "-m", "hookctl", "retry-loop", "--db", db, "--every", "0.5s"]
    workers = [
        subprocess.Popen([*command, "--quiet"], env=env, stdout=subprocess.DEVNULL)
        for _ in range(args.workers)
    ]
    deadline = time.monotonic() + 30 + 3 * args.deliveries / args.rate
    try:
        while time.monotonic() < deadline:
            with open_store(db) as store:
                by_status = store.stats(since=None).by_status
            if not by_status.get("pending"):
                break
            time.sleep(0.2)
    finally:
        for w in workers:
            w.send_signal(signal.SIGTERM)
        for w in workers:
            w.wait(timeout=60)
    with urllib.request.urlopen(base + "/_log", timeout=30) as answer:
        arrivals = json.loads(answer.read())
    receiver.stdin.close()
    receiver.wait(timeout=30)
    times = sorted(t for t, _ in arrivals)
    span = times[-1] - times[0] if len(times) > 1 else 0.0
    print(
        json.dumps(
            {
                "rate": args.rate,
                "workers": args.workers,
                "backend": "postgresql" if db.startswith("postgres") else "sqlite",
                "deliveries": by_status,
                "requests": len(arrivals),
                "answered_429": sum(1 for _, s in arrivals if s == 429),
                "most_in_1s": most_in(times, 1.0),
                "most_in_0.95s": most_in(times, 0.95),
                "achieved_per_s": round((len(times) - 1) / span, 2) if span else None,
                "smallest_gap_s": round(min(b - a for a, b in itertools.pairwise(times)), 4)
                if len(times) > 1
                else None,
            }
        )
    )


if __name__ == "__main__":
    main()
