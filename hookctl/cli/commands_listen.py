"""`listen`: a local receiver to watch deliveries (and retries) arrive."""

import contextlib
import json
import os
import signal
import sys
from collections.abc import Iterator
from typing import TYPE_CHECKING, Annotated

import typer

from hookctl.cli.app import JsonOption, app, duration, handle_errors
from hookctl.errors import UsageError

if TYPE_CHECKING:
    from hookctl.devserver import Receiver


@app.command()
@handle_errors
def listen(
    port: Annotated[
        int,
        typer.Option(
            "--port", "-p", min=0, max=65535, help="Port to listen on (0: any free port)."
        ),
    ] = 8080,
    host: Annotated[
        str,
        typer.Option("--host", help="Address to bind. Loopback by default; 0.0.0.0 exposes it."),
    ] = "127.0.0.1",
    status: Annotated[
        int, typer.Option("--status", min=100, max=599, help="Status to answer with.")
    ] = 200,
    fail_first: Annotated[
        int,
        typer.Option(
            "--fail-first", min=0, help="Answer the first N requests with 500, to watch retries."
        ),
    ] = 0,
    delay: Annotated[
        str,
        typer.Option(
            "--delay", help="Wait this long before answering, e.g. 1s or 5s (to see timeouts)."
        ),
    ] = "0s",
    count: Annotated[
        int,
        typer.Option("--count", min=0, help="Exit after this many requests (0: run until Ctrl-C)."),
    ] = 0,
    secrets: Annotated[
        list[str] | None,
        typer.Option(
            "--secret",
            envvar="HOOKCTL_LISTEN_SECRET",
            help="Verify Standard Webhooks signatures with this whsec_ secret (repeatable); answer 401 when one does not hold.",
            show_default=False,
        ),
    ] = None,
    json_lines: JsonOption = False,
) -> None:
    """Receive webhooks locally and print each request: method, path, headers and body.

    Answers every request with --status, or fails the first N with 500 (--fail-first) so you can watch retries, or answers slowly (--delay) so you can watch timeouts. With --secret, checks each request's webhook-signature and says whether it holds. Binds to 127.0.0.1 unless --host says otherwise. With --count N it answers exactly N requests (any arriving after the Nth get 503) and exits. Exit code 0 on Ctrl-C (at any moment, start-up included) or after --count requests, 130 on a second Ctrl-C while it stops, 2 when the port cannot be bound.

    Example: hookctl listen --port 8765 --fail-first 2
    """
    from hookctl.cli.output import iso, json_line, safe
    from hookctl.devserver import Behaviour, Received, Receiver

    wait = duration(delay, "--delay") or 0.0
    keys = tuple(_key(secret) for secret in secrets or ())

    def show(request: Received) -> None:
        text = request.body.decode("utf-8", errors="replace")
        parsed = _json_or_none(text)
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
                "signature": request.signature,
            }
            sys.stdout.write(json_line(record) + "\n")
        else:
            # What senders sent is shown, never obeyed: control characters come out escaped.
            lines = [f"#{request.number} {request.method} {request.path} -> {request.answered}"]
            lines += [f"  {k}: {v}" for k, v in request.headers]
            if request.signature is not None:
                lines.append(f"  (signature: {request.signature})")
            if text:
                lines += ["", *("  " + line for line in _pretty(text, parsed, request.headers))]
            sys.stdout.write("\n".join(safe(line) for line in lines) + "\n\n")

    try:
        receiver = Receiver(
            host, port, Behaviour(status=status, fail_first=fail_first, delay=wait, keys=keys), show
        )
    except OSError as exc:
        raise UsageError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    receiver.on_idle = sys.stdout.flush  # once a burst of requests is printed, not per request
    try:
        with _stopping_on_ctrl_c(receiver):
            sys.stderr.write(f"listening on http://{host}:{receiver.port}/ (Ctrl-C to stop)\n")
            sys.stderr.flush()
            receiver.serve(limit=count or None)
    except KeyboardInterrupt:  # a Ctrl-C just before the handler was in place
        pass
    finally:
        receiver.close()


@contextlib.contextmanager
def _stopping_on_ctrl_c(receiver: "Receiver") -> Iterator[None]:
    """Ctrl-C (SIGINT) stops `receiver` cleanly whenever it comes; a second one exits 130.

    Not left to asyncio.run: its own SIGINT handler is installed before it resets its count
    of interrupts, so a Ctrl-C in between cancelled the server without being counted, and a
    bare CancelledError (exit 1, a traceback) came out instead of KeyboardInterrupt. With a
    handler of ours in place, asyncio.run installs none, and the stop is the same path as
    --count's, at any point of start-up (Receiver.stop_soon)."""

    def interrupt(signum: int, frame: object) -> None:
        if receiver.stop_asked:
            # A second Ctrl-C: out now. Not KeyboardInterrupt, which raised inside asyncio's
            # own teardown leaves it half done (and in 3.11 fails there with another error).
            os.write(2, b"Interrupted.\n")
            os._exit(130)
        receiver.stop_soon()

    try:
        previous = signal.signal(signal.SIGINT, interrupt)
    except ValueError:  # not the main thread (an embedding caller): Ctrl-C stays as it was
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _key(secret: str) -> bytes:
    from hookctl.render.signing import decode_secret

    try:
        return decode_secret(secret)
    except ValueError as exc:
        raise UsageError(f"--secret: {exc}") from None


def _json_or_none(text: str) -> object:
    try:
        return json.loads(text) if text else None
    except ValueError:
        return None


def _pretty(text: str, parsed: object, headers: tuple[tuple[str, str], ...]) -> list[str]:
    """A body for reading: JSON indented, form fields one per line, anything else as sent."""
    if parsed is not None:
        return json.dumps(parsed, indent=2, ensure_ascii=False).splitlines()
    content_type = next((v for k, v in headers if k.lower() == "content-type"), "")
    if "x-www-form-urlencoded" in content_type:
        from urllib.parse import parse_qsl

        return [f"{k} = {v}" for k, v in parse_qsl(text, keep_blank_values=True)]
    return text.splitlines()
