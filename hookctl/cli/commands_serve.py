"""`serve`: receive helpdesk events over HTTP, store them, send and retry them, show the log."""

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from hookctl.cli.app import (
    DbOption,
    RulesOption,
    app,
    duration,
    handle_errors,
    network_guard,
    open_store,
    rule_paths,
)
from hookctl.cli.commands_send import AllowNetOption, ConcurrencyOption, PerHostOption
from hookctl.errors import UsageError

if TYPE_CHECKING:
    from hookctl.serve.auth import Gate, SecretNames

_SIZE = re.compile(r"^\s*(\d+)\s*([kKmM]i?[bB]?|[bB])?\s*$")


def _size(value: str) -> int:
    """A size like 1048576, 512k, 1M (KiB/MiB) in bytes; a usage error naming --max-body."""
    match = _SIZE.match(value)
    if not match:
        raise UsageError(f"--max-body: {value!r} is not a size (e.g. 1M, 512k, 65536)")
    number, unit = int(match.group(1)), (match.group(2) or "b").lower()[0]
    return number * {"b": 1, "k": 1024, "m": 1024 * 1024}[unit]


def _env_name(option: str, name: str | None) -> str | None:
    if name is not None and not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
        raise UsageError(
            f"{option} takes the NAME of an environment variable that holds the secret, "
            f"not the secret itself (got something that is not a variable name)"
        )
    return name


def _gate(
    names: "SecretNames",
    environ: Mapping[str, str],
    sources_file: Path | None,
    host: str,
    allow_unauthenticated: bool,
) -> "Gate":
    """The gate the options and the sources file describe, refused (a usage error) when it
    would leave a route open to the network without --allow-unauthenticated."""
    from hookctl.serve.app import is_loopback
    from hookctl.serve.auth import gate_from_env
    from hookctl.serve.sources import load_sources

    sources = load_sources(sources_file) if sources_file is not None else None
    gate = gate_from_env(names, environ, sources)
    if gate.open and not is_loopback(host) and not allow_unauthenticated:
        routes = "/events and unlisted sources are" if sources is not None else "it is"
        raise UsageError(
            f"refusing to listen on {host} with no authentication: {routes} open, and anyone "
            "who can reach it could post events. Set --token-env, --basic-env, "
            "--header-secret-env, --url-token-env, --zendesk-secret-env or "
            "--standard-webhooks-env"
            + (", or `unlisted: refuse` in the sources file" if sources is not None else "")
            + ", or pass --allow-unauthenticated"
        )
    return gate


@app.command()
@handle_errors
def serve(
    rules_paths: RulesOption = None,
    db: DbOption = None,
    host: Annotated[
        str, typer.Option("--host", help="Address to listen on (loopback unless told).")
    ] = "127.0.0.1",
    port: Annotated[
        int, typer.Option("--port", "-p", min=0, max=65535, help="Port (0: any free one).")
    ] = 8080,
    token_env: Annotated[
        str | None,
        typer.Option(
            "--token-env",
            metavar="NAME",
            help="Require `Authorization: Bearer TOKEN`, the token read from $NAME.",
            show_default=False,
        ),
    ] = None,
    basic_env: Annotated[
        str | None,
        typer.Option(
            "--basic-env",
            metavar="NAME",
            help="Require basic auth; $NAME holds USER:PASSWORD.",
            show_default=False,
        ),
    ] = None,
    header_secret_env: Annotated[
        str | None,
        typer.Option(
            "--header-secret-env",
            metavar="NAME",
            help="Require the header --header-name to carry the secret in $NAME.",
            show_default=False,
        ),
    ] = None,
    header_name: Annotated[
        str, typer.Option("--header-name", help="The shared-secret header's name.")
    ] = "X-Hookctl-Secret",
    url_token_env: Annotated[
        str | None,
        typer.Option(
            "--url-token-env",
            metavar="NAME",
            help="Accept `?token=TOKEN` in the URL, the token read from $NAME (for helpdesks that "
            "take only a URL, like Movidesk; URLs land in access logs).",
            show_default=False,
        ),
    ] = None,
    zendesk_secret_env: Annotated[
        str | None,
        typer.Option(
            "--zendesk-secret-env",
            metavar="NAME",
            help="Require Zendesk's webhook signature (X-Zendesk-Webhook-Signature), keyed with "
            "the webhook's signing secret in $NAME.",
            show_default=False,
        ),
    ] = None,
    standard_webhooks_env: Annotated[
        list[str] | None,
        typer.Option(
            "--standard-webhooks-env",
            metavar="NAME",
            help="Require a Standard Webhooks signature by the whsec_ secret in $NAME "
            "(repeatable, for a rotation).",
            show_default=False,
        ),
    ] = None,
    sources_file: Annotated[
        Path | None,
        typer.Option(
            "--sources",
            metavar="FILE",
            help="A YAML file of per-source intake checks: /events/NAME for a source listed "
            "there must pass one of its own checks (the options above do not apply to it); "
            "`unlisted: global` (the default) leaves /events and other sources to the options "
            "above, `unlisted: refuse` answers them 404. Reloaded on SIGHUP.",
            show_default=False,
        ),
    ] = None,
    admin_env: Annotated[
        str | None,
        typer.Option(
            "--admin-env",
            metavar="NAME",
            help="The log page's admin password (basic auth, any user name) is in $NAME; an "
            "admin may replay deliveries, and reads the log and /metrics off loopback.",
            show_default=False,
        ),
    ] = None,
    allow_unauthenticated: Annotated[
        bool,
        typer.Option(
            "--allow-unauthenticated",
            help="Listen on a non-loopback address with no intake check (behind a proxy that "
            "checks instead).",
        ),
    ] = False,
    public_log: Annotated[
        bool,
        typer.Option(
            "--public-log",
            help="Off loopback, show the log (read-only) and /metrics without the admin password.",
        ),
    ] = False,
    max_body: Annotated[
        str, typer.Option("--max-body", help="Largest request body (413 over it).")
    ] = "1M",
    max_pending: Annotated[
        int,
        typer.Option(
            "--max-pending", min=1, help="Events waiting to be stored before new posts get 503."
        ),
    ] = 10_000,
    retry_every: Annotated[
        str, typer.Option("--retry-every", help="How often due retries are looked for.")
    ] = "2s",
    send: Annotated[
        bool,
        typer.Option(
            "--send/--no-send",
            help="Send and retry in this process. --no-send only stores (the 202 as ever) and "
            "leaves sending to `retry-loop --every` processes on the same database.",
        ),
    ] = True,
    grace: Annotated[
        str,
        typer.Option("--grace", help="On SIGTERM, how long attempts in flight may take to finish."),
    ] = "30s",
    concurrency: ConcurrencyOption = 50,
    per_host: PerHostOption = 20,
    allow_net: AllowNetOption = None,
) -> None:
    """Receive helpdesk events over HTTP: stored before the answer, then sent and retried.

    POST events (a JSON object, an array, or NDJSON, as `fire` reads them) to /events or
    /events/SOURCE: each is committed to the database before the 202, matched against the
    rules, sent, and retried inside the server (`retry-loop` may run beside it). Secrets are
    read from the environment variables the --*-env options name, never from the command line.
    GET / is the execution log; /metrics is for Prometheus; /healthz and /readyz for probes.
    SIGHUP reloads the rules and the --sources file (an invalid one is refused, the old one
    kept); SIGTERM stops.

    With several checks set, a request passes if any one accepts it. --sources FILE gives
    sources checks of their own, under `sources:` with the options' names in snake case
    (token_env, basic_env, header_secret_env, header_name, url_token_env, zendesk_secret_env,
    standard_webhooks_env: a name or a list): a post to /events/NAME for a listed source must
    pass one of that source's checks, and the global options do not apply to it. `unlisted:
    global` (the default) leaves /events and unlisted sources to the global options; `unlisted:
    refuse` answers them 404 (counted as reason unknown_source). Every variable named must be
    set at start. Off loopback, every route that takes events must have a check, unless
    --allow-unauthenticated.

    Example: hookctl serve -r rules/ --host 0.0.0.0 --token-env HOOK_TOKEN

    Exit codes: 0 stopped by a signal; 2 usage (a secret's variable unset, an open network
    address without --allow-unauthenticated, the port taken, no such --sources file); 3
    invalid rules or sources file.
    """
    import asyncio

    from hookctl.rules.load import load_rules
    from hookctl.serve.app import Server, is_loopback, run
    from hookctl.serve.auth import SecretNames
    from hookctl.serve.metrics import Metrics
    from hookctl.serve.runner import Runner, Settings

    names = SecretNames(
        token=_env_name("--token-env", token_env),
        basic=_env_name("--basic-env", basic_env),
        header=_env_name("--header-secret-env", header_secret_env),
        header_name=header_name,
        query_token=_env_name("--url-token-env", url_token_env),
        zendesk=_env_name("--zendesk-secret-env", zendesk_secret_env),
        standard_webhooks=[
            n for n in standard_webhooks_env or () if _env_name("--standard-webhooks-env", n)
        ],
        admin=_env_name("--admin-env", admin_env),
    )
    gate = _gate(names, os.environ, sources_file, host, allow_unauthenticated)
    loopback = is_loopback(host)
    paths = rule_paths(rules_paths)
    rules = load_rules(paths)
    every = duration(retry_every, "--retry-every") or 2.0
    grace_seconds = duration(grace, "--grace")
    limit = _size(max_body)
    guard = network_guard(allow_net)
    store = open_store(db, create=True)
    try:
        metrics = Metrics()
        runner = Runner(
            store,
            rules,
            Settings(
                environ=os.environ,
                concurrency=concurrency,
                per_host=per_host,
                retry_every=every,
                max_pending=max_pending,
                lease_seconds=duration(os.environ.get("HOOKCTL_LEASE"), "HOOKCTL_LEASE"),
                send=send,
            ),
            metrics,
        )
        server = Server(
            runner=runner,
            gate=gate,
            metrics=metrics,
            max_body=limit,
            open_pages=loopback or public_log,
            reload_rules=lambda: load_rules(paths),
            reload_gate=None
            if sources_file is None
            else lambda: _gate(names, os.environ, sources_file, host, allow_unauthenticated),
        )
        asyncio.run(run(server, host, port, guard, grace_seconds or 0.0))
    finally:
        store.close()
