"""`listen`: a local receiver to watch deliveries (and retries) arrive."""

from __future__ import annotations

import json
import sys
from typing import Annotated

import typer

from hookctl.cli.app import JsonOption, app, handle_errors
from hookctl.errors import UsageError


@app.command()
@handle_errors
def listen(
    port: Annotated[int, typer.Option("--port", "-p", min=0, max=65535, help="Port to listen on (0: any free port).")] = 8080,
    host: Annotated[str, typer.Option("--host", help="Address to bind. Loopback by default; 0.0.0.0 exposes it.")] = "127.0.0.1",
    status: Annotated[int, typer.Option("--status", min=100, max=599, help="Status to answer with.")] = 200,
    fail_first: Annotated[int, typer.Option("--fail-first", min=0, help="Answer the first N requests with 500, to watch retries.")] = 0,
    delay: Annotated[str, typer.Option("--delay", help="Wait this long before answering, e.g. 1s or 5s (to see timeouts).")] = "0s",
    count: Annotated[int, typer.Option("--count", min=0, help="Exit after this many requests (0: run until Ctrl-C).")] = 0,
    json_lines: JsonOption = False,
) -> None:
    """Receive webhooks locally and print each request: method, path, headers and body.

    Example: hookctl listen --port 8765 --fail-first 2
    """
    from hookctl.listen import Behaviour, Received, Receiver
    from hookctl.output import iso
    from hookctl.policy import parse_duration

    try:
        wait = parse_duration(delay)
    except ValueError as exc:
        raise UsageError(f"--delay: {exc}") from None

    def show(request: Received) -> None:
        text = request.body.decode("utf-8", errors="replace")
        try:
            parsed = json.loads(text) if text else None
        except ValueError:
            parsed = None
        if json_lines:
            record = {
                "number": request.number,
                "received_at": iso(request.received_at),
                "method": request.method,
                "path": request.path,
                "headers": dict(request.headers),
                "body": text,
                "json": parsed,
                "answered": request.answered,
            }
            sys.stdout.write(json.dumps(record, ensure_ascii=False) + "\n")
        else:
            lines = [f"#{request.number} {request.method} {request.path} -> {request.answered}"]
            lines += [f"  {k}: {v}" for k, v in request.headers]
            if text:
                pretty = json.dumps(parsed, indent=2, ensure_ascii=False) if parsed is not None else text
                lines += ["", *("  " + line for line in pretty.splitlines())]
            sys.stdout.write("\n".join(lines) + "\n\n")
        sys.stdout.flush()

    try:
        receiver = Receiver(host, port, Behaviour(status=status, fail_first=fail_first, delay=wait), show)
    except OSError as exc:
        raise UsageError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    sys.stderr.write(f"listening on http://{host}:{receiver.port}/ (Ctrl-C to stop)\n")
    sys.stderr.flush()
    try:
        receiver.serve(limit=count or None)
    except KeyboardInterrupt:
        pass
    finally:
        receiver.server.server_close()
