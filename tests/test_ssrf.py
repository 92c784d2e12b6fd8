"""The network guard: refused ranges, odd spellings, allow-lists, and connecting to what was checked.

Refused cases never reach a socket: IP literals are refused before connecting, and host names
go through a fake resolver. The only traffic is to the test servers on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import ipaddress
import os
import ssl
from collections.abc import Callable, Iterator, Sequence
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
    config = Path(os.environ["HOOKCTL_HOME"]) / "config.toml"
    expected = (
        "refused by the network guard: 10.0.0.5 is a private address; allow it with "
        f"--allow-net 10.0.0.5, or in allow_net in {config} for every command"
    )
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


# --- Unicode spellings (issue 11.1) ---------------------------------------------------------
# The HTTP client (yarl's IDNA) turns `１２７.０.０.１` into 127.0.0.1 and connects to it without
# resolving: the guard must judge that host, not the one as written.

_DOTS = (
    "\u3002",
    "\uff0e",
    "\uff61",
)  # ideographic, full-width and half-width ideographic full stops
_DIGIT_SETS = {
    "full-width": 0xFF10,
    "math bold": 0x1D7CE,
    "math double-struck": 0x1D7D8,
    "math sans-serif": 0x1D7E2,
    "math monospace": 0x1D7F6,
    "subscript": 0x2080,
    "arabic-indic": 0x0660,  # int() reads these; IDNA does not (a name, never an address)
    "devanagari": 0x0966,
    "thai": 0x0E50,
}
_CIRCLED = {str(n): chr(0x2460 + n - 1) for n in range(1, 10)} | {"0": "\u24ea"}


def _digits(address: str, base: int) -> str:
    return "".join(chr(base + int(c)) if c.isdigit() else c for c in address)


def unicode_spellings(address: str) -> list[str]:
    """Spellings of an IPv4 address that some Unicode normalisation reads as that address."""
    found = [_digits(address, base) for base in _DIGIT_SETS.values()]
    found.append("".join(_CIRCLED.get(c, c) for c in address))
    found += [address.replace(".", dot) for dot in _DOTS]
    found.append(_digits(address, 0xFF10).replace(".", "\uff0e"))  # all full-width
    found.append(address[:-1] + _digits(address[-1], 0xFF10))  # one digit is enough
    found.append(_digits(address, 0xFF10) + ".")  # a trailing dot
    superscripts = dict(
        zip(
            "0123456789",
            "\u2070\u00b9\u00b2\u00b3\u2074\u2075\u2076\u2077\u2078\u2079",
            strict=True,
        )
    )
    found.append("".join(superscripts.get(c, c) for c in address))
    # `⒎` (DIGIT SEVEN FULL STOP) is "7." to IDNA: the dot itself can be a Unicode character.
    first, rest = address.split(".", 1)
    found.append(first[:-1] + chr(0x2487 + int(first[-1]) - 1) + rest)
    return found


LOOPBACK_SPELLINGS = unicode_spellings("127.0.0.1")
GUARDED_SPELLINGS = (
    unicode_spellings("10.0.0.5")
    + unicode_spellings("169.254.169.254")
    + [
        "\u2460\u2465\u2468.\u2461\u2464\u2463.\u2460\u2465\u2468.\u2461\u2464\u2463",  # ①⑥⑨.②⑤④.①⑥⑨.②⑤④
        "\u2491" + "0.0.5",  # ⒑ is "10." to IDNA: ⒑0.0.5 is 10.0.0.5
    ]
)


@pytest.fixture
def counting_listener() -> Iterator[tuple[int, list[int]]]:
    """A real listener on 127.0.0.1 that answers 200 and counts every connection it accepts."""
    import socket
    import threading

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(128)
    server.settimeout(0.2)
    accepted: list[int] = []
    done = threading.Event()

    def serve() -> None:
        while not done.is_set():
            try:
                conn, _ = server.accept()
            except OSError:
                continue
            accepted.append(1)
            with conn:
                conn.settimeout(1.0)
                try:
                    conn.recv(65536)
                    conn.sendall(
                        b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                    )
                except OSError:
                    pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield server.getsockname()[1], accepted
    finally:
        done.set()
        thread.join()
        server.close()


def send_all(guard: Guard, urls: list[str]) -> list[Outcome]:
    async def go() -> list[Outcome]:
        async with Sender(guard=guard) as sender:
            return [await sender.send(ResolvedRequest("GET", u), timeout=3.0) for u in urls]

    return asyncio.run(go())


def _never_reached(outcome: Outcome) -> bool:
    error = outcome.error or ""
    return outcome.status_code is None and (
        error.startswith("refused by the network guard")
        or error.startswith("invalid URL")
        or error == "could not resolve host"
    )


def test_unicode_spellings_of_guarded_addresses_never_connect(
    counting_listener: tuple[int, list[int]],
) -> None:
    port, accepted = counting_listener
    urls = [f"http://{h}:{port}/t" for h in LOOPBACK_SPELLINGS]
    urls += [f"http://{h}/t" for h in GUARDED_SPELLINGS]
    outcomes = send_all(Guard(resolver=fake_dns({})), urls)  # names never leave the machine
    wrong = [
        (u, o.status_code, o.error)
        for u, o in zip(urls, outcomes, strict=True)
        if not _never_reached(o)
    ]
    assert wrong == []
    assert accepted == []  # not one connection reached the loopback listener
    # Those IDNA turns into an address are refused as that address, permanently.
    for url, outcome in zip(urls, outcomes, strict=True):
        if outcome.error != "could not resolve host":
            assert outcome.permanent, url
    full_width = outcomes[0]
    assert full_width.error == (
        "refused by the network guard: 127.0.0.1 is a loopback address; "
        "allow it with --allow-net 127.0.0.1"
    )


def test_an_allowed_address_in_a_unicode_spelling_is_refused_as_an_unusual_spelling(
    counting_listener: tuple[int, list[int]],
) -> None:
    port, accepted = counting_listener
    guard = Guard(AllowList.parse(["127.0.0.1"]))
    (plain, odd) = send_all(
        guard, [f"http://127.0.0.1:{port}/t", f"http://１２７.０.０.１:{port}/t"]
    )
    assert plain.status_code == 200
    assert (
        odd.error
        == "invalid URL: １２７.０.０.１ is an unusual spelling of 127.0.0.1; write 127.0.0.1"
    )
    assert odd.permanent and len(accepted) == 1


def test_the_connect_time_backstop_refuses_a_peer_the_guard_did_not_clear(
    counting_listener: tuple[int, list[int]], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Should some future path skip the checks before the request (simulated here by
    # switching the literal check off), the socket factory still sees the peer and refuses it.
    port, accepted = counting_listener

    async def skipped(self: Sender, url: object, text: str) -> None:
        return None

    monkeypatch.setattr(Sender, "_check_literal", skipped)
    (outcome,) = send_all(Guard(), [f"http://１２７.０.０.１:{port}/t"])
    assert outcome.status_code is None and outcome.permanent
    assert outcome.error == (
        "refused by the network guard: 127.0.0.1 is a loopback address; "
        "allow it with --allow-net 127.0.0.1"
    )
    assert accepted == []
    allowed = send_all(Guard(AllowList.parse(["127.0.0.1"])), [f"http://１２７.０.０.１:{port}/t"])
    assert (
        allowed[0].status_code == 200 and len(accepted) == 1
    )  # the backstop opens what is allowed


def test_a_name_allowed_by_name_passes_the_backstop(httpserver: HTTPServer) -> None:
    httpserver.expect_request("/hook").respond_with_data("ok")
    guard = Guard(AllowList.parse(["crm.intranet"]), fake_dns({"crm.intranet": ["127.0.0.1"]}))
    outcome = send(guard, f"http://crm.intranet:{httpserver.port}/hook")
    assert outcome.status_code == 200, outcome.error


def test_fire_with_a_unicode_host_from_the_event_reaches_nothing(
    cli, rule_file, event_file, counting_listener, monkeypatch: pytest.MonkeyPatch
) -> None:
    port, accepted = counting_listener
    monkeypatch.delenv("HOOKCTL_ALLOW_NET")
    rules = rule_file(rule(f"http://{{{{ ticket.host }}}}:{port}/t", retry="none"))
    events = [
        {"event": "ticket.created", "id": f"e{n}", "ticket": {"id": n, "host": host}}
        for n, host in enumerate(LOOPBACK_SPELLINGS)
    ]
    result = cli("fire", "--json", "-r", rules, event_file(events))
    reports = ndjson(result.stdout)
    assert result.exit_code == 1 and len(reports) == len(events)
    assert all(r["status"] == "failed" for r in reports)
    assert accepted == []
