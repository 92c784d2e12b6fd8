"""The network guard: refused ranges, odd spellings, allow-lists, and connecting to what was checked.

Refused cases never reach a socket: IP literals are refused before connecting, and host names
go through a fake resolver. The only traffic is to the test servers on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import ipaddress
import ssl
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest
import trustme
from pytest_httpserver import HTTPServer

from hookctl.render.request import ResolvedRequest
from hookctl.transport.http import Outcome, Sender
from hookctl.transport.netguard import (
    AllowList,
    Guard,
    Refused,
    Unresolvable,
    blocked_reason,
    parse_literal,
)
from tests.conftest import attempts, deliveries, ndjson

EVENT = {"event": "ticket.created", "id": "evt_1", "ticket": {"id": 1}}


def fake_dns(table: dict[str, Sequence[str]], calls: list[str] | None = None) -> Callable:  # type: ignore[type-arg]
    """A resolver answering from `table`, recording each lookup."""

    async def resolve(host: str) -> Sequence[str]:
        if calls is not None:
            calls.append(host)
        if host not in table:
            raise Unresolvable(f"could not resolve host {host}")
        return table[host]

    return resolve


async def no_dns(host: str) -> Sequence[str]:
    raise AssertionError(f"{host} is an address: it must not be resolved")


def addresses(guard: Guard, host: str) -> list[str]:
    return asyncio.run(guard.addresses(host))


def send(guard: Guard, url: str, timeout: float = 5.0) -> Outcome:
    async def go() -> Outcome:
        async with Sender(guard=guard) as sender:
            return await sender.send(ResolvedRequest("GET", url), timeout=timeout)

    return asyncio.run(go())


@pytest.mark.parametrize(
    ("address", "reason"),
    [
        ("127.0.0.1", "loopback"),
        ("127.255.0.9", "loopback"),
        ("10.0.0.5", "private"),
        ("172.16.3.4", "private"),
        ("192.168.1.1", "private"),
        ("169.254.169.254", "cloud metadata"),
        ("169.254.1.1", "link-local"),
        ("100.64.0.1", "carrier-grade NAT"),
        ("0.0.0.0", "unspecified"),
        ("224.0.0.251", "multicast"),
        ("240.0.0.1", "reserved"),
        ("255.255.255.255", "reserved"),
        ("192.0.2.10", "documentation"),
        ("198.51.100.1", "documentation"),
        ("203.0.113.9", "documentation"),
        ("198.18.0.1", "benchmarking"),
        ("::1", "loopback"),
        ("::", "unspecified"),
        ("fd12:3456::1", "unique local"),
        ("fd00:ec2::254", "cloud metadata"),
        ("fe80::1", "link-local"),
        ("ff02::1", "multicast"),
        ("2001:db8::1", "documentation"),
        ("::ffff:10.0.0.5", "private"),
        ("::ffff:169.254.169.254", "cloud metadata"),
        ("64:ff9b::7f00:1", "loopback"),
        ("64:ff9b::a9fe:a9fe", "cloud metadata"),
        ("2002:a00:5::1", "private"),
        ("2002:7f00:1::", "loopback"),
        ("2001:0:4136:e378:8000:63bf:3fff:fdd2", "IETF"),  # Teredo
    ],
)
def test_refused_ranges(address: str, reason: str) -> None:
    found = blocked_reason(ipaddress.ip_address(address))
    assert found is not None and reason in found


@pytest.mark.parametrize(
    "address",
    ["93.184.216.34", "8.8.8.8", "2606:4700:4700::1111", "64:ff9b::808:808", "2002:808:808::1"],
)
def test_public_addresses_pass(address: str) -> None:
    assert blocked_reason(ipaddress.ip_address(address)) is None


@pytest.mark.parametrize(
    "host",
    [
        "2130706433",
        "0x7f.1",
        "017700000001",
        "0177.0.0.1",
        "127.1",
        "0x7f000001",
        "127.0.0.1.",
        "[::ffff:127.0.0.1]",
        "::ffff:7f00:1",
        "[::1]",
        "0",
        "localhost",
        "localhost.",
        "LOCALHOST",
        "api.localhost",
    ],
)
def test_odd_spellings_of_loopback_are_refused_without_resolving(host: str) -> None:
    # 0.0.0.0 reaches the local machine on Linux; it is refused as "unspecified".
    with pytest.raises(Refused, match=r"loopback|unspecified"):
        addresses(Guard(resolver=no_dns), host)


def test_literal_parsing_reads_what_the_system_resolver_would() -> None:
    assert parse_literal("0x7f.1") == ipaddress.ip_address("127.0.0.1")
    assert parse_literal("10.1") == ipaddress.ip_address("10.0.0.1")
    assert parse_literal("[fe80::1%25eth0]") == ipaddress.ip_address("fe80::1")
    for name in ("example.com", "cafe.be", "1e1", "08.1.2.3", "deadbeef"):
        assert parse_literal(name) is None


def test_a_name_resolving_to_a_private_address_is_refused_with_a_clear_reason() -> None:
    guard = Guard(resolver=fake_dns({"crm.corp.example": ["10.0.0.5"]}))
    with pytest.raises(Refused) as info:
        addresses(guard, "crm.corp.example")
    assert str(info.value) == (
        "refused by the network guard: crm.corp.example resolves to 10.0.0.5, a private address; "
        "allow it with --allow-net 10.0.0.5 (or --allow-net crm.corp.example)"
    )


def test_only_checked_addresses_are_used_when_a_name_resolves_to_several() -> None:
    guard = Guard(resolver=fake_dns({"mixed.example": ["10.0.0.5", "93.184.216.34", "::1"]}))
    assert addresses(guard, "mixed.example") == ["93.184.216.34"]


def test_an_unresolvable_host_is_an_error_not_a_fallback() -> None:
    with pytest.raises(Unresolvable):
        addresses(Guard(resolver=fake_dns({})), "nowhere.example")


def test_an_allowed_range_opens_exactly_that_range() -> None:
    guard = Guard(AllowList.parse(["10.1.2.0/24"]), resolver=no_dns)
    assert addresses(guard, "10.1.2.7") == ["10.1.2.7"]
    for other in ("10.1.3.1", "192.168.1.1", "127.0.0.1", "169.254.169.254"):
        with pytest.raises(Refused):
            addresses(guard, other)


def test_an_allowed_host_name_opens_that_name_only() -> None:
    dns = fake_dns({"crm.intranet": ["10.9.9.9"], "other.intranet": ["10.9.9.9"]})
    guard = Guard(AllowList.parse(["CRM.intranet."]), resolver=dns)
    assert addresses(guard, "crm.intranet") == ["10.9.9.9"]
    with pytest.raises(Refused):
        addresses(guard, "other.intranet")


@pytest.mark.parametrize("allow", [["169.254.0.0/16"], ["0.0.0.0/0"], ["meta.intranet"], ["::/0"]])
def test_metadata_addresses_stay_blocked_unless_named_exactly(allow: list[str]) -> None:
    dns = fake_dns({"meta.intranet": ["169.254.169.254"], "meta6.intranet": ["64:ff9b::a9fe:a9fe"]})
    guard = Guard(AllowList.parse(allow), resolver=dns)
    for host in ("169.254.169.254", "meta.intranet", "meta6.intranet", "[fd00:ec2::254]"):
        with pytest.raises(Refused, match="cloud metadata"):
            addresses(guard, host)
    exact = Guard(AllowList.parse(["169.254.169.254"]), resolver=dns)
    assert addresses(exact, "meta.intranet") == ["169.254.169.254"]


@pytest.mark.parametrize("entry", ["http://10.0.0.1/", "10.0.0.0/33", "a..b", "host name", "x@y"])
def test_malformed_allow_entries_are_errors(entry: str) -> None:
    with pytest.raises(ValueError, match="not a network"):
        AllowList.parse([entry])


def test_lookups_are_cached_briefly_and_shared_by_concurrent_attempts() -> None:
    calls: list[str] = []
    now = [0.0]
    guard = Guard(
        resolver=fake_dns({"hook.example": ["93.184.216.34"]}, calls), clock=lambda: now[0]
    )

    async def many() -> None:
        await asyncio.gather(*(guard.addresses("hook.example") for _ in range(20)))
        await guard.addresses("hook.example")

    asyncio.run(many())
    assert calls == ["hook.example"]
    now[0] = 31.0
    addresses(guard, "hook.example")
    assert calls == ["hook.example", "hook.example"]


# --- through the sender -----------------------------------------------------------------------


def test_the_sender_connects_to_the_checked_address_and_keeps_the_host_header(
    httpserver: HTTPServer,
) -> None:
    httpserver.expect_request("/hook").respond_with_data("ok")
    calls: list[str] = []
    guard = Guard(
        AllowList.parse(["127.0.0.1"]), resolver=fake_dns({"hook.test": ["127.0.0.1"]}, calls)
    )
    outcome = send(guard, f"http://hook.test:{httpserver.port}/hook")
    assert outcome.status_code == 200, outcome.error
    ((request, _),) = httpserver.log
    assert request.headers["Host"] == f"hook.test:{httpserver.port}"
    assert calls == [
        "hook.test"
    ]  # resolved once, by the guard: nothing resolves it again to connect


def test_a_name_that_rebinds_to_a_private_address_is_refused(httpserver: HTTPServer) -> None:
    httpserver.expect_request("/hook").respond_with_data("ok")
    answers = iter([["127.0.0.1"], ["10.0.0.5"]])

    async def rebinding(host: str) -> Sequence[str]:
        return next(answers)

    guard = Guard(AllowList.parse(["127.0.0.1"]), resolver=rebinding, cache_seconds=0)
    url = f"http://rebind.test:{httpserver.port}/hook"
    assert send(guard, url).status_code == 200
    second = send(guard, url)
    assert second.permanent and second.status_code is None
    assert "rebind.test resolves to 10.0.0.5, a private address" in (second.error or "")
    assert len(httpserver.log) == 1


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """An HTTPS server on 127.0.0.1 whose certificate is for hook.test, and the CA file trusting it."""
    ca = trustme.CA()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("hook.test").configure_cert(context)
    ca_file = tmp_path_factory.mktemp("ca") / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    server = HTTPServer(host="127.0.0.1", port=0, ssl_context=context)
    server.expect_request("/hook").respond_with_data("ok")
    server.start()
    try:
        yield server, ca_file
    finally:
        server.clear()
        if server.is_running():
            server.stop()


def test_tls_verifies_the_url_host_name_not_the_address(
    tls_server: tuple[HTTPServer, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    server, ca_file = tls_server
    monkeypatch.setenv(
        "SSL_CERT_FILE", str(ca_file)
    )  # an intranet CA, as a deployment would set it
    dns = fake_dns({"hook.test": ["127.0.0.1"], "other.test": ["127.0.0.1"]})
    guard = Guard(AllowList.parse(["127.0.0.1"]), resolver=dns)
    good = send(guard, f"https://hook.test:{server.port}/hook")
    assert good.status_code == 200, good.error
    for host in ("other.test", "127.0.0.1"):
        wrong = send(guard, f"https://{host}:{server.port}/hook")
        assert wrong.status_code is None and "TLS error" in (wrong.error or "")


# --- through the CLI ------------------------------------------------------------------------


def rule(url: str, retry: str = "eddydesk") -> str:
    return f"name: r\nwebhook:\n  url: {url!r}\nretry: {retry}\n"


def test_a_refusal_is_a_permanent_failure_with_the_reason(
    cli, rule_file, event_file, db_file
) -> None:
    result = cli("fire", "--json", "-r", rule_file(rule("http://10.0.0.5/hook")), event_file(EVENT))
    assert result.exit_code == 1
    (report,) = ndjson(result.stdout)
    assert report["status"] == "failed" and report["next_attempt_at"] is None
    expected = "refused by the network guard: 10.0.0.5 is a private address; allow it with --allow-net 10.0.0.5"
    assert report["error"] == expected
    (row,) = deliveries(db_file)
    assert row["status"] == "failed" and row["attempts"] == 1 and len(attempts(db_file)) == 1


def test_loopback_is_refused_unless_allowed(
    cli, rule_file, event_file, httpserver: HTTPServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("HOOKCTL_ALLOW_NET")
    httpserver.expect_request("/hook").respond_with_data("ok")
    rules = rule_file(rule(httpserver.url_for("/hook")))
    refused = cli("fire", "--json", "-r", rules, event_file(EVENT))
    assert "127.0.0.1 is a loopback address" in ndjson(refused.stdout)[0]["error"]
    assert (
        cli("fire", "--force", "--allow-net", "127.0.0.2", "-r", rules, event_file(EVENT)).exit_code
        == 1
    )
    assert not httpserver.log
    assert (
        cli("fire", "--force", "--allow-net", "127.0.0.1", "-r", rules, event_file(EVENT)).exit_code
        == 0
    )
    monkeypatch.setenv("HOOKCTL_ALLOW_NET", "10.0.0.0/8, 127.0.0.0/30")
    assert cli("fire", "--force", "-r", rules, event_file(EVENT)).exit_code == 0
    assert len(httpserver.log) == 2


@pytest.mark.parametrize("host", ["127.0.0.1", "[::ffff:127.0.0.1]"])
def test_other_spellings_reach_exactly_the_allowed_address(
    cli, rule_file, event_file, httpserver: HTTPServer, monkeypatch: pytest.MonkeyPatch, host: str
) -> None:
    httpserver.expect_request("/hook").respond_with_data("ok")
    rules = rule_file(rule(f"http://{host}:{httpserver.port}/hook"))
    monkeypatch.delenv("HOOKCTL_ALLOW_NET")
    refused = cli("fire", "--json", "-r", rules, event_file(EVENT))
    assert "loopback" in ndjson(refused.stdout)[0]["error"] and not httpserver.log
    assert (
        cli("fire", "--force", "--allow-net", "127.0.0.1", "-r", rules, event_file(EVENT)).exit_code
        == 0
    )
    assert len(httpserver.log) == 1


@pytest.mark.parametrize("host", ["2130706433", "0x7f.1", "017700000001", "127.1", "127.0.0.1."])
def test_old_bsd_spellings_of_an_address_are_never_sent(
    cli, rule_file, event_file, httpserver: HTTPServer, monkeypatch: pytest.MonkeyPatch, host: str
) -> None:
    # aiohttp refuses these forms, so hookctl refuses them up front, allowed or not, saying
    # how to write the address; nothing is sent either way.
    httpserver.expect_request("/hook").respond_with_data("ok")
    rules = rule_file(rule(f"http://{host}:{httpserver.port}/hook"))
    monkeypatch.delenv("HOOKCTL_ALLOW_NET")
    refused = cli("fire", "--json", "-r", rules, event_file(EVENT))
    assert "loopback" in ndjson(refused.stdout)[0]["error"]
    allowed = cli(
        "fire", "--json", "--force", "--allow-net", "127.0.0.1", "-r", rules, event_file(EVENT)
    )
    (report,) = ndjson(allowed.stdout)
    assert allowed.exit_code == 1 and report["next_attempt_at"] is None
    assert (
        report["error"]
        == f"invalid URL: {host} is an unusual spelling of 127.0.0.1; write 127.0.0.1"
    )
    assert not httpserver.log


def test_a_bad_allow_entry_is_a_usage_error(cli, rule_file, event_file) -> None:
    result = cli(
        "fire",
        "--allow-net",
        "10.0.0.0/33",
        "-r",
        rule_file(rule("https://e.com/")),
        event_file(EVENT),
    )
    assert result.exit_code == 2
    assert "--allow-net: not a network" in result.stderr


def test_retry_loop_and_replay_take_the_allow_list_too(
    cli, rule_file, event_file, httpserver: HTTPServer, db_file, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("HOOKCTL_ALLOW_NET")
    httpserver.expect_request("/hook").respond_with_data("ok")
    rules = rule_file(rule(httpserver.url_for("/hook")))
    cli("fire", "-r", rules, event_file(EVENT))
    (row,) = deliveries(db_file)
    assert row["status"] == "failed"
    assert cli("replay", row["id"], "--now").exit_code == 1  # still refused: nothing allowed
    assert cli("replay", row["id"], "--now", "--allow-net", "127.0.0.1").exit_code == 0
    assert len(httpserver.log) == 1
