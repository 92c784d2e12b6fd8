"""Hostile event values in URL and header templates: one event can fail its own delivery, never the batch.

The fuzz drives the real path a delivery takes: render_request (templates), resolve (secrets
filled in) and Sender.send (the request aiohttp builds), against a real receiver on
127.0.0.1. Whatever the value, rendering raises only RenderError (the delivery fails, nothing
is sent) and sending returns an Outcome; a request that can never be sent is a permanent
outcome, not a retry.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Iterator, Sequence
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pytest_httpserver import HTTPServer

from hookctl.errors import RenderError
from hookctl.render.request import resolve
from hookctl.render.webhook import WebhookTemplate, render_request
from hookctl.transport.http import Sender
from hookctl.transport.netguard import AllowList, Guard, Unresolvable
from tests.conftest import ndjson

HOSTILE = [
    "[bad",
    "]",
    "[::1",
    "a]b",
    "::",
    "99999",
    "-1",
    "0x50",
    "%",
    "%zz",
    "%00",
    "@evil.example",
    "user@127.0.0.1",
    "a:b:c",
    "\u200d",
    "a\u200db",
    "xn--",
    "xn--zz",
    "\x00",
    "\r\nX-Injected: 1",
    "\t",
    "ab\udc80",
    "\ufffe",
    "é",
    "\u3002",
    "..",
    "5/../../admin?x=1#frag",
    "?#",
    "#",
    "\\",
    "a" * 300,
    ".".join(["a" * 63] * 5),
    "",
    " ",
]

VALUES = st.one_of(
    st.sampled_from(HOSTILE),
    st.text(max_size=40),
    st.text(alphabet=st.characters(codec="utf-8"), max_size=20),
    st.text(alphabet="[]:@%/?#.\\ \x00\r\n\u3002\uff0e\uff10-\uff19", max_size=12),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.none(),
    st.lists(st.text(max_size=5), max_size=3),
    st.dictionaries(st.text(max_size=3), st.text(max_size=3), max_size=2),
)


def templates(port: int) -> list[WebhookTemplate]:
    """One template per place a value can stand: host, port, userinfo, path, query, fragment, headers."""
    base = f"http://127.0.0.1:{port}"
    urls = [
        "http://{{ ticket.v }}/t",
        "http://{{ ticket.v }}:" + f"{port}/t",
        "http://127.0.0.1:{{ ticket.v }}/t",
        "http://{{ ticket.v }}@127.0.0.1:" + f"{port}/t",
        base + "/t/{{ ticket.v }}",
        base + "/t/{{ ticket.v }}/x?s=1",
        base + "/t?q={{ ticket.v }}&s=1",
        base + "/t#{{ ticket.v }}",
        base + "/{{ ticket.v|raw_url }}",
        "{{ ticket.v }}/t",
    ]
    found = [WebhookTemplate(method="POST", url=url) for url in urls]
    found.append(
        WebhookTemplate(
            method="POST",
            url=base + "/h",
            headers=(("X-Value", "{{ ticket.v }}"), ("X-Other", "a {{ ticket.v }} b")),
        )
    )
    found.append(
        WebhookTemplate(
            method="POST",
            url=base + "/a",
            auth={"type": "bearer", "token": "{{ ticket.v }}"},
        )
    )
    found.append(
        WebhookTemplate(
            method="GET",
            url=base + "/k",
            auth={"type": "api_key", "query": "key", "value": "{{ ticket.v }}"},
        )
    )
    return found


async def no_dns(host: str) -> Sequence[str]:
    """No lookups leave the machine: every name is unresolvable."""
    raise Unresolvable(f"could not resolve host {host}")


@pytest.fixture
def receiver() -> Iterator[HTTPServer]:
    server = HTTPServer(host="127.0.0.1")
    server.expect_request(re.compile(".*")).respond_with_data("ok")
    server.start()
    try:
        yield server
    finally:
        server.stop()


def test_hostile_values_fail_only_their_own_delivery(receiver: HTTPServer) -> None:
    loop = asyncio.new_event_loop()
    sender = Sender(guard=Guard(AllowList.parse(["127.0.0.1"]), no_dns))
    loop.run_until_complete(sender.__aenter__())
    webhooks = templates(receiver.port)
    problems: list[str] = []

    @settings(
        max_examples=120,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
    )
    @given(value=VALUES)
    def check(value: Any) -> None:
        event = {"event": "ticket.created", "id": "e", "ticket": {"id": 1, "v": value}}
        for webhook in webhooks:
            try:
                request = render_request(webhook, event, environ={})
                resolved = resolve(request, {})
            except RenderError:
                continue  # this delivery fails, with its reason; the batch goes on
            except Exception as exc:  # anything else would abort a whole `fire`
                problems.append(f"{webhook.url} {value!r}: {type(exc).__name__}: {exc}")
                continue
            try:
                outcome = loop.run_until_complete(sender.send(resolved, timeout=5.0))
            except Exception as exc:
                problems.append(f"send {resolved.url!r}: {type(exc).__name__}: {exc}")
                continue
            error = outcome.error or ""
            # A request that cannot be built is permanent; a Python exception is no reason.
            if re.match(r"^(ValueError|TypeError|UnicodeEncodeError|AttributeError)", error):
                problems.append(f"send {resolved.url!r}: retried as {error}")
            if error.startswith("invalid URL") and not outcome.permanent:
                problems.append(f"send {resolved.url!r}: {error} is retried")

    try:
        check()
    finally:
        loop.run_until_complete(sender.__aexit__(None, None, None))
        loop.close()
    assert "\n".join(sorted(set(problems))[:20]) == ""


@pytest.mark.parametrize("value", ["[bad", "127.0.0.1:99999", "a\u200db", "]x["])
def test_one_bad_host_fails_its_delivery_and_the_batch_goes_on(
    cli, rule_file, event_file, httpserver: HTTPServer, value: str
) -> None:
    httpserver.expect_request("/t").respond_with_data("ok")
    rules = rule_file(
        "name: r\n"
        "on: [ticket.created]\n"
        "webhook: {url: 'http://{{ ticket.host }}/t'}\n"
        "retry: eddydesk\n"
    )
    good = f"127.0.0.1:{httpserver.port}"
    hosts = [good, good, value, good, good]
    events = "".join(
        json.dumps({"event": "ticket.created", "id": f"e{n}", "ticket": {"id": n, "host": h}})
        + "\n"
        for n, h in enumerate(hosts)
    )
    result = cli("fire", "--json", "-r", rules, event_file(events, "events.ndjson"))
    assert result.exit_code == 1  # one delivery failed for good
    assert "Traceback" not in result.stderr + result.stdout
    reports = {r["event_id"]: r for r in ndjson(result.stdout)}
    assert len(reports) == 5 and len(httpserver.log) == 4  # no event lost to the bad one
    bad = reports["e2"]
    assert bad["status"] == "failed" and bad["next_attempt_at"] is None
    assert bad["attempts"] == 0 and bad["sent"] is False  # not an attempt: nothing was sent
    assert bad["error"].startswith("cannot render: webhook.url: rendered URL is not a valid URL")
    assert all(reports[f"e{n}"]["status"] == "succeeded" for n in (0, 1, 3, 4))
    # Recorded: the log has its reason, and a second run is a duplicate, not a crash.
    shown = ndjson(cli("log", bad["id"], "--json").stdout)[0]
    assert shown["status"] == "failed" and "not a valid URL" in shown["error"]
    again = cli("fire", "--json", "-r", rules, event_file(events, "events.ndjson"))
    assert {r["status"] for r in ndjson(again.stdout)} == {"duplicate"}


def test_a_variable_that_makes_the_url_invalid_holds_without_showing_it(
    cli, rule_file, event_file, monkeypatch: pytest.MonkeyPatch
) -> None:
    rules = rule_file(
        "name: r\non: [ticket.created]\nwebhook: {url: 'http://127.0.0.1:{{ env.CRM_PORT }}/t'}\n"
    )
    monkeypatch.setenv("CRM_PORT", "987654321")
    result = cli(
        "fire", "--json", "-r", rules, event_file({"event": "ticket.created", "ticket": {"id": 1}})
    )
    (report,) = ndjson(result.stdout)
    assert report["status"] == "pending" and report["held"] is True and report["attempts"] == 0
    assert "with the value of CRM_PORT filled in, it is not a valid URL" in report["error"]
    assert "987654321" not in result.stdout + result.stderr
