"""From event sources to the pipeline: batches read off a thread, and what identifies an event."""

from __future__ import annotations

import asyncio
import hashlib
import json
import queue
import threading
from collections.abc import AsyncIterator, Iterable, Mapping
from typing import Any

from hookctl.events.event import BadEvent, Event


def event_ticket(data: Mapping[str, Any], rule_ticket: str | None = None) -> str | None:
    """The ticket number for the log: a rule's `ticket:`, else `ticket.id`, else a bare payload's `Id`."""
    if rule_ticket:
        return rule_ticket
    ticket = data.get("ticket")
    if isinstance(ticket, Mapping) and isinstance(ticket.get("id"), str | int):
        return str(ticket["id"])
    if isinstance(data.get("Id"), str | int):
        return str(data["Id"])
    return None


def dedupe_key(data: Mapping[str, Any]) -> str:
    """Same top-level `id`, or identical content when there is none, is the same event."""
    event_id = data.get("id")
    if isinstance(event_id, str | int) and not isinstance(event_id, bool):
        return f"id:{event_id}"
    canonical = json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return "sha256:" + hashlib.sha256(canonical.encode("utf-8", "surrogatepass")).hexdigest()


_DONE = object()


FIRST_BATCH = 16


async def batches(
    events: Iterable[Event | BadEvent], size: int
) -> AsyncIterator[list[Event | BadEvent]]:
    """Read events in a thread (stdin may block) and yield what is ready, up to `size` at once.

    The first batches are small and double up to `size`, so the first requests go out after a
    few events are rendered and stored, not after a whole batch is. A source that has its own
    `ready_batches(size)` (serve's in-loop feed) is read with it instead, with no thread.
    """
    ready = getattr(events, "ready_batches", None)
    if ready is not None:
        async for prepared in ready(size):
            yield prepared
        return
    q: queue.Queue[Any] = queue.Queue(maxsize=size * 4)
    failure: list[BaseException] = []

    def pump() -> None:
        try:
            for item in events:
                q.put(item)
        except BaseException as exc:  # re-raised in the event loop below
            failure.append(exc)
        finally:
            q.put(_DONE)

    threading.Thread(target=pump, name="hookctl-reader", daemon=True).start()
    finished = False
    limit = min(size, FIRST_BATCH)
    while not finished:
        first = await asyncio.to_thread(q.get)
        batch: list[Event | BadEvent] = []
        item = first
        while True:
            if item is _DONE:
                finished = True
                break
            batch.append(item)
            if len(batch) >= limit:
                break
            try:
                item = q.get_nowait()
            except queue.Empty:
                break
        if batch:
            yield batch
            limit = min(size, limit * 2)
    if failure:
        raise failure[0]
