"""`serve`'s intake against a receiver that hangs: posts keep getting their 202 (committed), and
the deliveries go out once the receiver answers again."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.receivers import event, rule_yaml, wait_for
from tests.serving import log_json, serving

POSTS = 40
PER_POST = 50  # 2,000 deliveries: far more than the sending side holds claimed for a dead host


HANGING = """
import asyncio, json, socket, sys
from aiohttp import web

opened = asyncio.Event()
received, arrived = [], [0]

async def hook(request):
    body = json.loads(await request.read())
    arrived[0] += 1
    await opened.wait()
    received.append(body["id"])
    return web.Response(text="ok")

async def answer(request):
    opened.set()
    return web.Response(text="answering")

async def state(request):
    return web.json_response({"arrived": arrived[0], "received": received})

async def main():
    app = web.Application()
    app.add_routes([web.post("/hook", hook), web.post("/_answer", answer), web.get("/_state", state)])
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    await web.SockSite(runner, sock).start()
    print(sock.getsockname()[1], flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)  # until the test ends

asyncio.run(main())
"""


class Hanging:
    """A receiver process that takes each request and never answers until `answer()`; then
    it answers 200 to every request held and every one to come."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", HANGING],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        self.base = f"http://127.0.0.1:{int(self.proc.stdout.readline())}"
        self.url = self.base + "/hook"

    def state(self) -> dict[str, Any]:
        return httpx.get(self.base + "/_state", trust_env=False).json()

    def answer(self) -> None:
        httpx.post(self.base + "/_answer", trust_env=False)

    def stop(self) -> None:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.close()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)
        self.proc.stdout.close()


@pytest.fixture
def hanging() -> Iterator[Hanging]:
    receiver = Hanging()
    yield receiver
    receiver.stop()


def test_a_hanging_receiver_never_stalls_intake(cli, rule_file, hanging, db_file):
    # Each attempt runs into its 1 s timeout while the receiver hangs; retried every 200 ms.
    rule = rule_yaml(hanging.url, retry="{every: 200ms, retries: 500}", extra="timeout: 1s\n")
    args = ("-r", rule_file(rule), "--concurrency", "4", "--per-host", "4")
    with (
        serving(*args, "--retry-every", "200ms") as server,
        httpx.Client(base_url=server.url, trust_env=False, timeout=10) as http,
    ):
        answers: list[int | str] = []
        for p in range(POSTS):
            batch = [
                event(n, subject=f"post {p}") | {"id": f"evt_{p * PER_POST + n}"}
                for n in range(PER_POST)
            ]
            try:
                answers.append(http.post("/events", json=batch).status_code)
            except httpx.ReadTimeout:
                answers.append("no answer within 10 s")
                break
        # Before the fix: once the sends held back for the dead host filled the pipeline's
        # admission, intake stopped committing: posts waited for attempts to time out.
        assert answers == [202] * POSTS, answers
        seen = hanging.state()
        assert seen["arrived"] and not seen["received"]  # it really hangs
        stored = log_json(cli, db_file)
        assert len(stored) == POSTS * PER_POST
        assert {row["status"] for row in stored} == {"pending"}

        hanging.answer()  # it answers again: every delivery goes out, nothing else needed

        def all_succeeded() -> bool:
            rows = log_json(cli, db_file)
            return len(rows) == POSTS * PER_POST and all(r["status"] == "succeeded" for r in rows)

        wait_for(all_succeeded, timeout=120, what="every delivery sent once the receiver answers")
    assert set(hanging.state()["received"]) == {f"evt_{n}" for n in range(POSTS * PER_POST)}
