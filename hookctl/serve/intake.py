"""`serve`'s intake: POST /events[/{source}] reads the body, checks it, stores the events, or
says why not (400 bad JSON with the line named, 401, 404 an unknown source, 413, 503).

A mixin of `Server` (hookctl/serve/app.py), which holds the attributes declared here.
"""

from __future__ import annotations

import io
from typing import TYPE_CHECKING, Any

from aiohttp import web
from multidict import CIMultiDict

from hookctl.events.event import Event
from hookctl.events.read import read_source
from hookctl.serve.auth import QUERY_TOKEN_HEADER
from hookctl.serve.runner import Busy, Unavailable
from hookctl.serve.sources import SOURCE

if TYPE_CHECKING:
    from hookctl.serve.auth import Gate
    from hookctl.serve.metrics import Metrics
    from hookctl.serve.runner import Runner


class Intake:
    """The events route and its refusals, each counted in the metrics."""

    runner: Runner
    gate: Gate
    metrics: Metrics
    max_body: int

    def _refuse(
        self, source: str, reason: str, status: int, error: str, **extra: Any
    ) -> web.Response:
        self.metrics.refused(source, reason)
        headers = {}
        if status == 503:
            headers["Retry-After"] = str(self.runner.retry_after())
        return web.json_response({"error": error, **extra}, status=status, headers=headers)

    async def events(self, request: web.Request) -> web.Response:
        """Take one JSON object, an array of them, or NDJSON; 202 once all are stored."""
        given = request.match_info.get("source")
        source = "http" if given is None else given
        if not SOURCE.match(source):
            return self._refuse("invalid", "bad_request", 404, f"no such source: {source[:64]!r}")
        gate = self.gate  # one set of settings for the whole request, whatever SIGHUP does
        if not gate.listed(given):
            # Labelled `unlisted`, not by the name asked for: a scanner makes no new series.
            # The names listed are not secrets, but telling them helps nobody who should post.
            count = len(gate.sources)
            return self._refuse(
                "unlisted",
                "unknown_source",
                404,
                f"unknown source: {'none given' if given is None else repr(given)}; this "
                f"server takes events for its {count} listed source{'s' if count != 1 else ''} "
                "only (POST /events/SOURCE)",
                sources=count,
            )
        # Until the request has passed its checks, the name in the URL is anyone's: refusals
        # count under it only for /events or a listed source, else under `unverified`.
        unproven = source if given is None or given in gate.sources else "unverified"
        if request.content_length is not None and request.content_length > self.max_body:
            return self._too_big(unproven)
        body = bytearray()
        async for chunk in request.content.iter_chunked(1 << 16):
            body += chunk
            if len(body) > self.max_body:
                return self._too_big(unproven)
        headers = CIMultiDict(request.headers)
        headers.popall(QUERY_TOKEN_HEADER, None)
        if "token" in request.query:
            headers[QUERY_TOKEN_HEADER] = request.query["token"]
        reason = gate.intake(headers, bytes(body), source=given)
        if reason is not None:
            return self._refuse(unproven, "unauthorized", 401, "unauthorized", detail=reason)
        events: list[Event] = []
        problems: list[dict[str, Any]] = []
        for item in read_source(io.BytesIO(bytes(body)), source):
            if isinstance(item, Event):
                events.append(item)
            else:
                problems.append({"line": item.line, "error": item.message})
        if problems:
            first = problems[0]
            return self._refuse(
                source,
                "bad_request",
                400,
                f"line {first['line']}: {first['error']}",
                errors=problems[:20],
                stored=0,
            )
        if not events:
            return self._refuse(source, "bad_request", 400, "no events in the body", stored=0)
        try:
            accepted = await self.runner.submit(events)
        except Busy as exc:
            return self._refuse(source, "busy", 503, f"busy, retry later: {exc}")
        except Unavailable as exc:
            return self._refuse(source, "store", 503, f"the store cannot take events: {exc}")
        self.metrics.received(source, len(events))
        return web.json_response(
            {
                "accepted": len(accepted),
                "events": [
                    {
                        "line": event.line,
                        "id": a.event_id,
                        "deliveries": len(a.delivery_ids),
                        "delivery_ids": list(a.delivery_ids),
                        "duplicates": a.duplicates,
                    }
                    for event, a in zip(events, accepted, strict=True)
                ],
            },
            status=202,
        )

    def _too_big(self, source: str) -> web.Response:
        return self._refuse(
            source, "too_large", 413, f"body over the limit of {self.max_body} bytes", stored=0
        )
