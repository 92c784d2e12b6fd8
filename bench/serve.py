"""`hookctl serve`'s intake: events/s accepted and committed, and the 202's p99 latency, next to a
bare aiohttp server that reads the body and answers 202 without storing it (same run).

    python bench/serve.py [--requests 4000] [--concurrency 50] [--rounds 3] [--src DIR]
                          [--no-send [--no-worker]] [--no-match]

Both servers run as their own process on 127.0.0.1 and get the same load, interleaved (bare,
serve, bare, serve, ...): POSTs of one ~1 KB `ticket.created` event each from one aiohttp
client session holding `--concurrency` connections (50 concurrent posters). `serve` stores
every event before its 202 (SQLite, synchronous=FULL) and then sends its delivery to
bench/receiver.py, as in production: the sending runs on the same two cores. Throughput is
202s over the client's wall-clock time, first request to last answer; p99 is over every
request's own time. The median of the rounds counts. Goal: serve >= 0.5x the bare server's
throughput at a p99 under 50 ms. During a burst serve sends only a share of what it commits
(intake first: hookctl/serve/budget.py), so each serve round also says how many deliveries
went out during the load and how long after it the last one did. With --no-send, serve only
stores (`serve --no-send`, the deployment where `retry-loop` workers send) and a `retry-loop
--every` process beside it, started with serve, sends on the same two cores; with
--no-worker as well, nothing sends (intake alone: events stored, deliveries made and left
due). --no-match points the rule at another event, so events are stored and nothing is
rendered or sent: what intake costs before any rule matches. Nothing here asserts on timing.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import Receiver

BARE = """
import sys
from aiohttp import web

async def events(request):
    await request.read()
    return web.Response(status=202, body=b'{"accepted": 1}', content_type="application/json")

app = web.Application()
app.router.add_post("/events", events)
runner = web.AppRunner(app, access_log=None)

async def main():
    import asyncio, socket
    await runner.setup()
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    site = web.SockSite(runner, sock)
    await site.start()
    sys.stderr.write(f"listening on http://127.0.0.1:{sock.getsockname()[1]}\\n")
    sys.stderr.flush()
    await asyncio.Event().wait()

import asyncio
asyncio.run(main())
"""
RULE = """name: bench
on: [ticket.created]
webhook:
  method: POST
  url: "{url}"
  body:
    ticket: "{{{{ ticket.id }}}}"
    subject: "{{{{ ticket.subject }}}}"
retry: none
"""
MAX_SECONDS = 300  # a round that takes longer is stopped


def body(n: int) -> bytes:
    return json.dumps(
        {
            "event": "ticket.created",
            "id": f"evt_{n}",
            "ticket": {"id": n, "subject": "Printer on fire " * 20, "tags": ["a", "b"]},
            "text": "x" * 600,
        }
    ).encode()


def start(cmd: list[str], env: dict[str, str]) -> tuple[subprocess.Popen[bytes], str]:
    """Start a server; return it and its URL (from the line saying where it listens)."""
    proc = subprocess.Popen(
        cmd, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env
    )
    assert proc.stderr is not None
    deadline = time.monotonic() + 60
    seen = ""
    while time.monotonic() < deadline:
        line = proc.stderr.readline().decode()
        seen += line
        match = re.search(r"listening on (http://127\.0\.0\.1:\d+)", line)
        if match:
            return proc, match[1]
        if not line:
            break
    proc.kill()
    raise SystemExit(f"server did not start: {seen}")


async def load(url: str, requests: int, concurrency: int, offset: int) -> tuple[float, float]:
    """Post `requests` events, `concurrency` at a time: (202s per second, p99 in ms)."""
    import aiohttp

    connector = aiohttp.TCPConnector(limit=concurrency)
    latencies: list[float] = []
    codes: dict[int, int] = {}
    bodies = [body(offset + n) for n in range(requests)]
    async with aiohttp.ClientSession(connector=connector) as session:
        queue = iter(bodies)

        async def worker() -> None:
            for data in queue:
                sent = time.perf_counter()
                async with session.post(
                    url + "/events", data=data, headers={"Content-Type": "application/json"}
                ) as response:
                    await response.read()
                latencies.append(time.perf_counter() - sent)
                codes[response.status] = codes.get(response.status, 0) + 1

        started = time.perf_counter()
        await asyncio.wait_for(
            asyncio.gather(*(worker() for _ in range(concurrency))), timeout=MAX_SECONDS
        )
        took = time.perf_counter() - started
    if codes != {202: requests}:
        raise SystemExit(f"unexpected answers: {codes}")
    latencies.sort()
    p99 = latencies[max(0, int(len(latencies) * 0.99) - 1)]
    return requests / took, p99 * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=4000)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--src", type=Path, help="run the hookctl package in this directory")
    parser.add_argument(
        "--no-send", action="store_true", help="serve --no-send, a retry-loop process sending"
    )
    parser.add_argument(
        "--no-worker", action="store_true", help="with --no-send: no retry-loop, nothing sent"
    )
    parser.add_argument(
        "--no-match", action="store_true", help="the rule matches no posted event: stored only"
    )
    args = parser.parse_args()
    if args.no_worker and not args.no_send:
        parser.error("--no-worker goes with --no-send")
    sends = not (args.no_worker or args.no_match)  # whether every event's delivery must arrive
    env = dict(os.environ, HOOKCTL_ALLOW_NET="127.0.0.1")
    if args.src:
        env["PYTHONPATH"] = str(args.src.resolve()) + os.pathsep + env.get("PYTHONPATH", "")
    names = ("bare aiohttp", "hookctl serve")
    rate: dict[str, list[float]] = {n: [] for n in names}
    p99: dict[str, list[float]] = {n: [] for n in names}
    catch_up: dict[int, tuple[int, float]] = {}  # round: (sent during the load, s to send all)
    with tempfile.TemporaryDirectory() as work, Receiver() as receiver:
        rules = Path(work) / "rules.yaml"
        rule = RULE.format(url=receiver.url)
        if args.no_match:
            rule = rule.replace("on: [ticket.created]", "on: [ticket.closed]")
        rules.write_text(rule, encoding="utf-8")
        db = Path(work) / "serve.db"
        cmds = {
            "bare aiohttp": [sys.executable, "-c", BARE],
            "hookctl serve": [sys.executable, "-m", "hookctl", "serve", "--port", "0",
                              "-r", str(rules), "--db", str(db),
                              *(["--no-send"] if args.no_send else [])],
        }  # fmt: skip
        worker_cmd = [sys.executable, "-m", "hookctl", "retry-loop", "--every", "0.2s",
                      "--quiet", "--db", str(db)]  # fmt: skip
        for round_no in range(args.rounds):
            for name, cmd in cmds.items():
                proc, url = start(cmd, env)
                worker = (
                    subprocess.Popen(worker_cmd, env=env, stderr=subprocess.DEVNULL)
                    if args.no_send and not args.no_worker and name == "hookctl serve"
                    else None
                )
                try:
                    r, p = asyncio.run(
                        load(url, args.requests, args.concurrency, round_no * args.requests)
                    )
                    if name == "hookctl serve" and sends:
                        # Sends wait during the burst (intake first): time the catch-up too.
                        ended = time.perf_counter()
                        sent_before = receiver.stats()["count"]
                        want = (round_no + 1) * args.requests
                        while receiver.stats()["count"] < want:
                            if time.perf_counter() - ended > MAX_SECONDS:
                                break
                            time.sleep(0.05)
                        catch_up[round_no] = (
                            sent_before - round_no * args.requests,
                            time.perf_counter() - ended,
                        )
                finally:
                    for running in (proc, worker):
                        if running is None:
                            continue
                        running.terminate()
                        try:
                            running.wait(timeout=60)
                        except subprocess.TimeoutExpired:
                            running.kill()
                            running.wait()
                rate[name].append(r)
                p99[name].append(p)
                extra = ""
                if name == "hookctl serve" and round_no in catch_up:
                    during, after = catch_up[round_no]
                    extra = f" ({during} sent during the load, all sent {after:.1f} s after it)"
                print(
                    f"round {round_no + 1} {name}: {r:,.0f} events/s, p99 {p:.1f} ms{extra}",
                    flush=True,
                )
        sent = receiver.stats()["count"]
    bare, serve = (statistics.median(rate[n]) for n in names)
    bare_p99, serve_p99 = (statistics.median(p99[n]) for n in names)
    ratio = serve / bare
    ok = ratio >= 0.5 and serve_p99 < 50
    print()
    print("| server | events/s (202s) | p99 of the 202 |")
    print("| --- | --- | --- |")
    print(f"| bare aiohttp (reads, answers 202) | {bare:,.0f} | {bare_p99:.1f} ms |")
    how = (
        "stored, no rule matches"
        if args.no_match
        else "stored, nothing sent"
        if args.no_worker
        else "stored; a retry-loop sends"
        if args.no_send
        else "stored, then sent"
    )
    print(f"| hookctl serve ({how}) | {serve:,.0f} | {serve_p99:.1f} ms |")
    print(
        f"\nratio {ratio:.2f}x (goal >= 0.5x at p99 < 50 ms): {'pass' if ok else 'FAIL'}; "
        f"{args.requests} posts x {args.rounds} rounds at concurrency {args.concurrency}; "
        f"the receiver got {sent} deliveries from serve"
    )


if __name__ == "__main__":
    main()
