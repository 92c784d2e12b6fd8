"""`hookctl listen` as a benchmark receiver: its requests/second next to a bare aiohttp receiver's.

    python bench/listen.py [--requests 4000] [--concurrency 50] [--rounds 3] [--src DIR]

Both receivers run as their own process on 127.0.0.1 and get the same load in the same run,
interleaved (bare, listen, bare, listen, ...): POSTs of a ~1 KB JSON body from one aiohttp
client session holding `--concurrency` connections. `hookctl listen --json` writes every
request to a file, as a benchmark's receiver would; the bare one answers and prints nothing.
The figure is requests over the client's wall-clock time, first request to last answer; the
median of the rounds counts. `--src DIR` runs the `hookctl` package in DIR instead (an older
checkout, for a before/after). Nothing here asserts on timing.
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

BARE = """
import sys
from aiohttp import web

async def hook(request):
    await request.read()
    return web.Response(body=b'{"ok": true}', content_type="application/json")

app = web.Application()
app.router.add_route("*", "/{tail:.*}", hook)
runner = web.AppRunner(app, access_log=None)

async def main():
    import asyncio, socket
    await runner.setup()
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    site = web.SockSite(runner, sock)
    await site.start()
    sys.stderr.write(f"listening on http://127.0.0.1:{sock.getsockname()[1]}/\\n")
    sys.stderr.flush()
    await asyncio.Event().wait()

import asyncio
asyncio.run(main())
"""
BODY = json.dumps(
    {
        "event": "ticket.created",
        "id": "evt_1",
        "ticket": {"id": 4711, "subject": "Printer on fire " * 20, "tags": ["a", "b"]},
        "text": "x" * 600,
    }
).encode()


def start(cmd: list[str], env: dict[str, str], out: Path) -> tuple[subprocess.Popen[bytes], str]:
    """Start a receiver; return it and its URL (read from its first stderr line)."""
    with out.open("wb") as sink:
        proc = subprocess.Popen(cmd, stdout=sink, stderr=subprocess.PIPE, env=env)
    assert proc.stderr is not None
    line = proc.stderr.readline().decode()
    match = re.search(r"http://127\.0\.0\.1:\d+/", line)
    if not match:
        proc.kill()
        raise SystemExit(f"receiver did not start: {line}{proc.stderr.read().decode()}")
    return proc, match[0]


async def load(url: str, requests: int, concurrency: int, keepalive: bool = True) -> float:
    """Send `requests` POSTs, `concurrency` at a time; return requests per second."""
    import aiohttp

    connector = aiohttp.TCPConnector(limit=concurrency, force_close=not keepalive)
    async with aiohttp.ClientSession(connector=connector) as session:
        queue = iter(range(requests))
        codes: dict[int, int] = {}

        async def worker() -> None:
            for _ in queue:
                async with session.post(
                    url + "hook", data=BODY, headers={"Content-Type": "application/json"}
                ) as response:
                    await response.read()
                    codes[response.status] = codes.get(response.status, 0) + 1

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        took = time.perf_counter() - started
    if codes != {200: requests}:
        raise SystemExit(f"unexpected answers: {codes}")
    return requests / took


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def records(out: Path, human: bool) -> int:
    """Requests listen has printed so far."""
    text = out.read_bytes()
    return text.count(b"\n#") + text.startswith(b"#") if human else text.count(b"\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=4000)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--src", type=Path, help="run the hookctl package in this directory")
    parser.add_argument("--human", action="store_true", help="listen's human output, not --json")
    parser.add_argument(
        "--no-keepalive", action="store_true", help="a new connection for every request"
    )
    args = parser.parse_args()
    env = dict(os.environ)
    if args.src:
        env["PYTHONPATH"] = str(args.src.resolve()) + os.pathsep + env.get("PYTHONPATH", "")
    results: dict[str, list[float]] = {"bare aiohttp": [], "hookctl listen": []}
    cpu: dict[str, list[float]] = {"bare aiohttp": [], "hookctl listen": []}
    with tempfile.TemporaryDirectory() as work:
        receivers = {
            "bare aiohttp": [sys.executable, "-c", BARE],
            "hookctl listen": [sys.executable, "-m", "hookctl", "listen", "--port", "0"]
            + ([] if args.human else ["--json"]),
        }
        for _ in range(args.rounds):
            for name, cmd in receivers.items():
                out = Path(work) / "out.ndjson"
                proc, url = start(cmd, env, out)
                try:
                    before = cpu_seconds(proc.pid)
                    rate = load(url, args.requests, args.concurrency, not args.no_keepalive)
                    results[name].append(asyncio.run(rate))
                    if name == "hookctl listen":
                        # Its last lines may still be on their way to the file.
                        deadline = time.monotonic() + 10
                        while (seen := records(out, args.human)) < args.requests:
                            if time.monotonic() > deadline:
                                raise SystemExit(f"listen printed {seen} of {args.requests}")
                            time.sleep(0.05)
                    cpu[name].append((cpu_seconds(proc.pid) - before) / args.requests * 1000)
                finally:
                    proc.kill()
                    proc.wait()
    bare = statistics.median(results["bare aiohttp"])
    listen = statistics.median(results["hookctl listen"])
    how = "a new connection each" if args.no_keepalive else "keep-alive"
    print(
        f"{args.requests} requests, concurrency {args.concurrency}, {how}, "
        f"{args.rounds} rounds (median)"
    )
    for name, values in results.items():
        rates = ", ".join(f"{v:,.0f}" for v in values)
        used = statistics.median(cpu[name])
        print(
            f"  {name:<15} {statistics.median(values):8,.0f} req/s  ({rates}); {used:.3f} ms CPU/request"
        )
    print(f"  ratio           {listen / bare:8.2f}x")


if __name__ == "__main__":
    main()
