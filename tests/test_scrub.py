"""Echoed secrets are scrubbed in every common encoding, end to end (issue 11, item 5).

Real receivers read the token from the request they got and echo it back in one encoding
each (PHP's `\\/`, JSON inside JSON, %-encoding, base64 at each alignment, HTML entities);
`fire` records the replies; neither `log ID`, `log ID --json` nor any byte of the database
(with its -wal) may hold the token or that encoding of it.
"""

from __future__ import annotations

import base64
import html
import json
import re
from collections.abc import Callable
from pathlib import Path
from urllib.parse import quote, quote_plus

import pytest
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from hookctl.render.scrub import MASK, echo_forms, forms_of, scrub
from tests.conftest import ndjson

# Every character here makes at least one encoding differ from the raw text.
TOKEN = "s3cr/et+tok=en&<a>\"b' fü"


def _json(text: str) -> str:
    return json.dumps(text)[1:-1]


def _php(text: str) -> str:
    return _json(text).replace("/", "\\/")


def _entities(text: str, style: str, only: str | None = None) -> str:
    return "".join(style.format(ord(c)) if only is None or c in only else c for c in text)


def _base64(
    text: str, offset: int, *, urlsafe: bool = False, at_end: bool = False
) -> tuple[str, str]:
    """What the receiver echoes (the token inside other bytes, at `offset` mod 3), and the part
    of it that is the token's own: the characters no byte around the token contributes to."""
    data = b"QZ"[:offset] + TOKEN.encode() + (b"" if at_end else b"|tail")
    encode = base64.urlsafe_b64encode if urlsafe else base64.b64encode
    echoed = encode(data).decode()
    start = -(-8 * offset // 6)
    end = len(echoed) if at_end else 8 * (offset + len(TOKEN.encode())) // 6
    return echoed, echoed[start:end]


HTML5_NAMED = {"/": "&sol;", "+": "&plus;", "=": "&equals;", "&": "&amp;", "<": "&lt;", ">": "&gt;",
               '"': "&quot;", "'": "&apos;", "ü": "&uuml;"}  # fmt: skip
SPECIALS = "&<>\"'"

# name -> (what the receiver echoes, the encoded token inside it that must not be kept)
ENCODINGS: dict[str, Callable[[], tuple[str, str]]] = {
    "raw": lambda: (TOKEN, TOKEN),
    "json-ascii": lambda: (json.dumps({"token": TOKEN}), _json(TOKEN)),
    "json-utf8": lambda: (json.dumps({"t": TOKEN}, ensure_ascii=False), json.dumps(TOKEN, ensure_ascii=False)[1:-1]),
    "json-php-slash": lambda: ('{"t":"' + _php(TOKEN) + '"}', _php(TOKEN)),
    "json-upper-hex": lambda: ('{"t":"' + _json(TOKEN).replace("\\u00fc", "\\u00FC") + '"}', _json(TOKEN).replace("\\u00fc", "\\u00FC")),
    "json-go-html-safe": lambda: (
        '{"t":"' + _json(TOKEN).replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026") + '"}',
        _json(TOKEN).replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026"),
    ),
    "json-double": lambda: (json.dumps({"detail": json.dumps({"t": TOKEN})}), _json(_json(TOKEN))),
    "json-double-php": lambda: ('{"d":"' + _php('{"t":"' + _php(TOKEN) + '"}') + '"}', _php(_php(TOKEN))),
    "url-pct2F": lambda: ("see /cb?t=" + quote(TOKEN, safe=""), quote(TOKEN, safe="")),
    "url-plus": lambda: ("see /cb?t=" + quote_plus(TOKEN, safe=""), quote_plus(TOKEN, safe="")),
    "url-lower-hex": lambda: (
        "see /cb?t=" + re.sub("%[0-9A-F]{2}", lambda m: m[0].lower(), quote(TOKEN, safe="")),
        re.sub("%[0-9A-F]{2}", lambda m: m[0].lower(), quote(TOKEN, safe="")),
    ),
    "url-keep-slash": lambda: ("see /cb/" + quote(TOKEN, safe="/"), quote(TOKEN, safe="/")),
    "url-plus-keep-slash": lambda: ("see /cb/" + quote_plus(TOKEN, safe="/"), quote_plus(TOKEN, safe="/")),
    "url-encodeURIComponent": lambda: ("t=" + quote(TOKEN, safe="-_.!~*'()"), quote(TOKEN, safe="-_.!~*'()")),
    **{
        f"base64{'-urlsafe' if safe else ''}-offset{k}{'-at-end' if end else ''}": (
            lambda k=k, safe=safe, end=end: _base64(TOKEN, k, urlsafe=safe, at_end=end)
        )
        for k in range(3)
        for safe in (False, True)
        for end in (False, True)
    },
    "html-escape": lambda: ("<p>" + html.escape(TOKEN) + "</p>", html.escape(TOKEN)),
    "html-named-all": lambda: (
        "<p>" + "".join(HTML5_NAMED.get(c, c) for c in TOKEN) + "</p>",
        "".join(HTML5_NAMED.get(c, c) for c in TOKEN),
    ),
    "html-decimal-specials": lambda: ("<p>" + _entities(TOKEN, "&#{};", SPECIALS) + "</p>", _entities(TOKEN, "&#{};", SPECIALS)),
    "html-decimal-all": lambda: ("<p>" + _entities(TOKEN, "&#{};") + "</p>", _entities(TOKEN, "&#{};")),
    "html-hex-specials": lambda: ("<p>" + _entities(TOKEN, "&#x{:x};", SPECIALS) + "</p>", _entities(TOKEN, "&#x{:x};", SPECIALS)),
    "html-hex-upper-all": lambda: ("<p>" + _entities(TOKEN, "&#X{:X};") + "</p>", _entities(TOKEN, "&#X{:X};")),
    "html-hex-slash-owasp": lambda: (
        "<p>" + html.escape(TOKEN).replace("/", "&#x2F;") + "</p>",
        html.escape(TOKEN).replace("/", "&#x2F;"),
    ),
}  # fmt: skip


def _handler(encoding: str) -> Callable[[Request], Response]:
    def echo(request: Request) -> Response:
        got = (request.get_json(silent=True) or {}).get("token", "")
        assert got == TOKEN, "the receiver did not get the token"
        echoed, _ = ENCODINGS[encoding]()
        headers = {"X-Echo": echoed} if echoed.isascii() and "\n" not in echoed else {}
        return Response(f"rejected: {echoed} (end)", status=500, headers=headers)

    return echo


def _kept(db: Path) -> bytes:
    """Every byte of the database: the file, its -wal and -shm."""
    return b"".join(p.read_bytes() for p in sorted(db.parent.glob(db.name + "*")))


def test_echoed_secrets_are_scrubbed_in_every_encoding(
    cli, rule_file, event_file, httpserver: HTTPServer, db_file: Path, monkeypatch
) -> None:
    monkeypatch.setenv("TOKEN", TOKEN)
    rules = []
    for name in ENCODINGS:
        httpserver.expect_request(f"/echo/{name}").respond_with_handler(_handler(name))
        url = httpserver.url_for(f"/echo/{name}")
        rules.append(
            f"- name: {name}\n  webhook: {{url: {url!r}, body: {{token: '{{{{ env.TOKEN }}}}'}}}}\n"
        )
    fired = cli(
        "fire", "--json", "-r", rule_file("".join(rules)), event_file({"event": "e", "id": "e1"})
    )
    reports = {r["rule"]: r for r in ndjson(fired.stdout)}
    assert len(httpserver.log) == len(ENCODINGS), fired.stdout + fired.stderr
    assert set(reports) == set(ENCODINGS)

    leaks: list[str] = []
    kept = _kept(db_file)
    for name, make in ENCODINGS.items():
        _, encoded = make()
        shown = cli("log", reports[name]["id"])
        as_json = cli("log", reports[name]["id"], "--json")
        body = json.loads(as_json.stdout)["attempts_detail"][0]["response_body"]
        found = len(leaks)
        for where, text in (("log ID", shown.stdout), ("log ID --json", as_json.stdout)):
            for form in {TOKEN, encoded}:
                if form in text or _json(form) in text:
                    leaks.append(f"{name} in {where}")
        for form in {TOKEN, encoded}:
            if form.encode() in kept or _json(form).encode() in kept:
                leaks.append(f"{name} in the database")
        # The reply was kept, with the token taken out of it: the test is not vacuous.
        assert body.startswith("rejected: ") and body.endswith(" (end)"), body
        assert MASK in body or len(leaks) > found, body
    assert not leaks, f"{len(set(leak.split()[0] for leak in leaks))} encodings leaked: {leaks}"


@pytest.mark.parametrize("name", sorted(ENCODINGS))
def test_each_encoding_is_one_of_the_forms_scrubbed(name: str) -> None:
    echoed, encoded = ENCODINGS[name]()
    assert TOKEN not in scrub(echoed, forms_of((TOKEN,)))
    assert encoded not in scrub(echoed, forms_of((TOKEN,)))


def test_short_values_keep_unrelated_text_and_plain_replies_pass_unchanged() -> None:
    # A 2-character chat id has base64/URL forms of 4 characters or less: only itself counts.
    assert all(len(form) >= 4 for form in forms_of(("42",)))
    reply = '{"ok": true, "result": {"message_id": 7, "text": "Printer on fire"}}'
    assert scrub(reply, forms_of((TOKEN, "CANARYapikey-7f3e9c"))) == reply
    assert echo_forms(TOKEN) is echo_forms(TOKEN)  # worked out once per value
