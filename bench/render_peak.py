"""Peak memory of template size bombs: each rendered in its own process, its peak RSS read back.

Run: .venv/bin/python bench/render_peak.py [--count 1000] [--only NAME] [--json]

Each construct asks for about `count` MB (1,000 by default: 1 GB) through operations whose
single results stay under the 1 MB output cap, so only a check made *before* building (or one
that counts what a render has built so far) stops it. A child process renders the body with
`render_request` and reports its own peak RSS (`resource.getrusage`, KB on Linux), the time
it took and how the render ended; `baseline` renders an ordinary body, for comparison.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import textwrap

MB = "('x' * 1000000)"

# name -> (body template, ticket data); N is replaced by --count.
CONSTRUCTS: dict[str, tuple[object, dict[str, object]]] = {
    "baseline": ({"text": "{{ ticket.subject | upper }}", "id": "{{ ticket.id }}"}, {}),
    "join": ("{{ range(N) | join(" + MB + ") }}", {}),
    "indent": ("{{ ('a\\n' * N) | indent(1000000) }}", {}),
    "indent-str": ("{{ ('a\\n' * N) | indent(" + MB + ") }}", {}),
    "str-multiply-in-loop": (
        "{% set ns = namespace(l=[]) %}{% for i in range(N) %}"
        "{% set ns.l = ns.l + ['x' * 1000000] %}{% endfor %}{{ ns.l | length }}",
        {},
    ),
    "format": ("{{ ('{0}' * N).format(" + MB + ") }}", {}),
    "format-filter": ("{{ ('%s' * N) | format(*([" + MB + "] * N)) }}", {}),
    "center": ("{{ range(N) | map('string') | map('center', 1000000) | list | length }}", {}),
    "ljust": (
        "{% set ns = namespace(l=[]) %}{% for i in range(N) %}"
        "{% set ns.l = ns.l + [(i | string).ljust(1000000)] %}{% endfor %}{{ ns.l | length }}",
        {},
    ),
    "replace": (
        "{{ range(N) | map('string') | map('replace', '', 'x' * 250000) | list | length }}",
        {},
    ),
    "wordwrap": ("{{ ('a ' * N) | wordwrap(1, true, " + MB + ") }}", {}),
    "list-multiply-join": ("{{ ([" + MB + "] * N) | join }}", {}),
    "list-multiply-leaf": ({"l": "{{ [" + MB + "] * N }}"}, {}),
    "list-multiply-string": ("{{ ([" + MB + "] * N) | string }}", {}),
    "concat-in-loop": (
        "{% set ns = namespace(l=[]) %}{% for i in range(N) %}"
        "{% set ns.l = ns.l + [" + MB + " ~ i] %}{% endfor %}{{ ns.l | length }}",
        {},
    ),
}

CHILD = textwrap.dedent(
    """
    import json, resource, sys, time
    from hookctl.errors import RenderError
    from hookctl.render.webhook import WebhookTemplate, render_request
    body, ticket = json.loads(sys.argv[1])
    event = {"ticket": {"id": 1, "subject": "printer on fire", **ticket}}
    t = time.perf_counter()
    try:
        request = render_request(
            WebhookTemplate("POST", "https://h.example/", body=body), event, environ={}
        )
        outcome = f"rendered {len(request.body or ''):,} chars"
    except RenderError as exc:
        outcome = "RenderError: " + str(exc)[:110]
    except MemoryError:
        outcome = "MemoryError"
    seconds = time.perf_counter() - t
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"peak_mb": peak_kb / 1024, "seconds": seconds, "outcome": outcome}))
    """
)


def measure(name: str, count: int) -> dict[str, object]:
    """Render one construct in a fresh process; its peak RSS, seconds and outcome."""
    body, ticket = CONSTRUCTS[name]
    text = json.dumps([body, ticket]).replace("N", str(count))
    done = subprocess.run(
        [sys.executable, "-c", CHILD, text], capture_output=True, text=True, timeout=300
    )
    if done.returncode != 0:
        return {"name": name, "peak_mb": None, "seconds": None, "outcome": done.stderr[-200:]}
    return {"name": name, **json.loads(done.stdout)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=1000, help="MB each bomb asks for")
    parser.add_argument("--only", action="append", help="construct names (repeatable)")
    parser.add_argument("--json", action="store_true", help="one JSON object per construct")
    args = parser.parse_args()
    names = args.only or list(CONSTRUCTS)
    if not args.json:
        print(f"| construct | peak RSS MB | seconds | outcome |  (count={args.count})")
        print("| --- | ---: | ---: | --- |")
    for name in names:
        row = measure(name, args.count)
        if args.json:
            print(json.dumps(row))
        else:
            peak, secs = row["peak_mb"], row["seconds"]
            peak_s = f"{peak:,.0f}" if isinstance(peak, float) else "-"
            secs_s = f"{secs:.2f}" if isinstance(secs, float) else "-"
            print(f"| {name} | {peak_s} | {secs_s} | {row['outcome']} |")


if __name__ == "__main__":
    main()
