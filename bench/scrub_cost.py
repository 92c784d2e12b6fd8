"""What scrubbing echoed secrets costs per reply (render/scrub.py), against main's forms.

Run: .venv/bin/python bench/scrub_cost.py [--rounds 20000]

Each reply is scrubbed as the sender does it (`scrub(text, forms)` on the body; headers and
errors are shorter), for the secrets of one request: two of them, one alphanumeric and one
with every character that gives the encodings work. The baseline is the set of forms main
scrubbed (raw, JSON, XML, a few URL forms, aligned base64), timed in the same run; the ratio
is the one to read on a loaded machine.
"""

from __future__ import annotations

import argparse
import base64
import json
import time
from urllib.parse import quote, quote_plus

from hookctl.render.scrub import forms_of, scrub

SECRETS = ("CANARYapikey-7f3e9c", "s3cr/et+tok=en&<a>\"b' fü")
PLAIN = json.dumps(
    {
        "ok": True,
        "result": {
            "message_id": 4711,
            "chat": {"id": -100123456789, "title": "Support", "type": "supergroup"},
            "date": 1764771234,
            "text": "New ticket #4711: Printer on fire (urgent) — assigned to the on-call team",
            "entities": [{"offset": 0, "length": 10, "type": "bold"}] * 6,
        },
    }
)  # about 600 bytes, as bench/'s receiver answers
BIG = (PLAIN + "\n") * 7  # about 4 KB: what is kept of a reply at most
ECHO = "invalid token " + SECRETS[0] + ' in {"t":"' + json.dumps(SECRETS[1])[1:-1] + '"}' + PLAIN


def main_forms(values: tuple[str, ...]) -> tuple[str, ...]:
    """The forms main's resolve() built (its _echo_forms), for the baseline."""
    found: set[str] = set()
    for text in values:
        found |= {text, json.dumps(text, ensure_ascii=False)[1:-1], json.dumps(text)[1:-1]}
        found |= {quote(text, safe=s) for s in ("", "/", ":@!$'()*,~", "/:@!$'()*,~")}
        found |= {quote_plus(text, safe=s) for s in ("", "/")}
        found.add(base64.b64encode(text.encode()).decode())
    return tuple(sorted((f for f in found if len(f) >= 4), key=len, reverse=True))


def per_call_us(text: str, forms: tuple[str, ...], rounds: int) -> float:
    """Best of five: microseconds per scrub of `text`."""
    best = float("inf")
    for _ in range(5):
        t0 = time.perf_counter()
        for _ in range(rounds):
            scrub(text, forms)
        best = min(best, (time.perf_counter() - t0) / rounds * 1e6)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20000)
    args = parser.parse_args()
    new, old = forms_of(SECRETS), main_forms(SECRETS)
    t0 = time.perf_counter()
    forms_of.cache_clear()
    from hookctl.render.scrub import echo_forms

    echo_forms.cache_clear()
    forms_of(SECRETS)
    first = (time.perf_counter() - t0) * 1e6
    print(f"forms for 2 secrets: main {len(old)}, now {len(new)} (worked out once: {first:.0f} µs)")
    print("| reply | main µs | now µs | ratio |")
    print("| --- | ---: | ---: | ---: |")
    for label, text in (
        ("plain, 600 B", PLAIN),
        ("plain, 4 KB", BIG),
        ("echoing both secrets, 700 B", ECHO),
    ):
        a = per_call_us(text, old, args.rounds)
        b = per_call_us(text, new, args.rounds)
        print(f"| {label} | {a:.2f} | {b:.2f} | {b / a:.2f}× |")


if __name__ == "__main__":
    main()
