"""Crash recovery: time from `kill -9` of a `fire` to every stored delivery delivered, and re-sends.

    python bench/crash.py [--root CHECKOUT] [--runs 3] [--events 300] [--concurrency 20]
                          [--delay 2.0] [--kill-after 30]

Each run: a local receiver that answers after --delay seconds; `fire` of --events events
(rule timeout 10s, so the default lease is 10s + 2 min); SIGKILL once --kill-after requests
have arrived; the receiver made fast; at once a `retry-loop --every 1s` (a service, as the
README's systemd recipe runs it) until every delivery the dead fire stored has succeeded.
Reports, per run and as medians: seconds from the kill to everything delivered, and re-sends
(requests whose webhook-id had arrived before: receivers can drop them).

--root runs another checkout's hookctl (e.g. /work/main) for a before/after in one run; its
state is read through its own CLI (`log --json`), so nothing here touches its database.
Everything runs on 127.0.0.1; each run stops by itself (--max-seconds per run).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any


class Receiver:
    """A threaded receiver on 127.0.0.1 that records each request's webhook-id on arrival."""

    def __init__(self) -> None:
        self.delay = 0.0
        self.ids: list[str] = []
        self.lock = threading.Lock()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("content-length") or 0))
                with owner.lock:
                    owner.ids.append(self.headers.get("webhook-id") or "")
                    delay = owner.delay
                if delay:
                    time.sleep(delay)
                self.send_response(200)
                self.send_header("content-length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args: Any) -> None:
                pass

        class Server(ThreadingHTTPServer):
            daemon_threads = True

            def handle_error(self, request: Any, client_address: Any) -> None:
                pass  # the killed fire's connections reset mid-answer: expected here

        self.server = Server(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def arrived(self) -> int:
        with self.lock:
            return len(self.ids)

    def stop(self) -> None:
        self.server.shutdown()


def hookctl(root: Path, env: dict[str, str], *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "hookctl", *args],
        cwd=root,
        env={**os.environ, **env, "PYTHONPATH": str(root)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def statuses(root: Path, env: dict[str, str]) -> Counter[str]:
    out = subprocess.run(
        [sys.executable, "-m", "hookctl", "log", "--json", "--limit", "0"],
        cwd=root,
        env={**os.environ, **env, "PYTHONPATH": str(root)},
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return Counter(json.loads(line)["status"] for line in out.splitlines() if line.strip())


def one_run(root: Path, args: argparse.Namespace) -> dict[str, Any]:
    receiver = Receiver()
    receiver.delay = args.delay
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        rule = work / "rule.yaml"
        url = f"http://127.0.0.1:{receiver.port}/hook"
        rule.write_text(
            f"name: crash\non: [ticket.created]\nwebhook: {{method: POST, url: {url!r}}}\n"
            "timeout: 10s\n",
            encoding="utf-8",
        )
        events = work / "events.ndjson"
        events.write_text(
            "".join(
                json.dumps({"event": "ticket.created", "id": f"evt_{n}", "ticket": {"id": n}})
                + "\n"
                for n in range(args.events)
            ),
            encoding="utf-8",
        )
        env = {
            "HOOKCTL_DB": str(work / "hookctl.db"),
            "HOOKCTL_HOME": str(work / "home"),
            "HOOKCTL_ALLOW_NET": "127.0.0.1",
        }
        fire = hookctl(
            root, env, "fire", "-r", str(rule), str(events), "-c", str(args.concurrency), "-q"
        )
        deadline = time.monotonic() + args.max_seconds
        while receiver.arrived() < args.kill_after:
            if fire.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"fire ended or stalled before the kill: {fire.communicate()[1]}")
            time.sleep(0.005)
        fire.send_signal(signal.SIGKILL)
        killed = time.monotonic()
        fire.communicate()
        receiver.delay = 0.0
        before_kill = receiver.arrived()
        loop = hookctl(root, env, "retry-loop", "--every", "1s", "-c", str(args.concurrency))
        try:
            stored = statuses(root, env)
            while True:
                counts = statuses(root, env)
                if counts and set(counts) == {"succeeded"}:
                    delivered = time.monotonic()
                    break
                if time.monotonic() > deadline:
                    raise SystemExit(f"not delivered within --max-seconds: {dict(counts)}")
                time.sleep(0.2)
        finally:
            loop.send_signal(signal.SIGTERM)
            loop.communicate(timeout=60)
        seen = Counter(receiver.ids)
        receiver.stop()
        return {
            "stored": sum(stored.values()),
            "requests_before_kill": before_kill,
            "seconds_to_delivered": round(delivered - killed, 2),
            "resends": sum(n - 1 for n in seen.values() if n > 1),
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=Path(__file__).resolve().parent.parent)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--events", type=int, default=300)
    parser.add_argument("--concurrency", type=int, default=20)
    parser.add_argument("--delay", type=float, default=2.0)
    parser.add_argument("--kill-after", type=int, default=30)
    parser.add_argument("--max-seconds", type=float, default=400.0)
    args = parser.parse_args()
    runs = [one_run(args.root.resolve(), args) for _ in range(args.runs)]
    summary = {
        "root": str(args.root),
        "runs": runs,
        "median_seconds_to_delivered": statistics.median(r["seconds_to_delivered"] for r in runs),
        "median_resends": statistics.median(r["resends"] for r in runs),
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
