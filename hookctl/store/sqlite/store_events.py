"""SQLiteStore's stored events (issue 17): reading, searching, purging and restoring them.

A mixin of `SQLiteStore` (store.py); the SQL is in events.py.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from hookctl.store.event_records import RecordedRequest, StoredEvent
from hookctl.store.ids import event_id_floor
from hookctl.store.log_records import Delivery
from hookctl.store.sqlite import events as stored_events
from hookctl.store.sqlite.store_base import PURGE_CHUNK, StoreBase, locked


class EventMethods(StoreBase):
    """The event store of the store contract, in SQLiteStore's transactions."""

    @locked
    def stored_events(
        self, *, since: float | None = None, until: float | None = None
    ) -> Iterator[StoredEvent]:
        """Stored events received in [since, until), oldest first, read a page at a time."""
        return stored_events.iterate(self._read, since=since, until=until)

    @locked
    def stored_event_rules(
        self, *, since: float | None = None, until: float | None = None
    ) -> set[str]:
        """The rules with a delivery on record for an event stored in [since, until)."""
        after, before = stored_events.window_bounds(since, until)
        with self._read() as conn:
            return stored_events.rule_names(conn, after=after, before=before)

    @locked
    def stored_event(self, event_ref: str) -> StoredEvent | None:
        """One stored event by its id ("evt_..."), or None."""
        with self._read() as conn:
            return stored_events.get(conn, event_ref)

    @locked
    def event_of(self, delivery_id: str) -> StoredEvent | None:
        """The stored event a delivery was made for; None if it was not kept (or is purged)."""
        with self._read() as conn:
            ref = stored_events.ref_of(conn, delivery_id)
            return stored_events.get(conn, ref) if ref else None

    @locked
    def find_events(
        self,
        *,
        source: str | None = None,
        event_name: str | None = None,
        ticket: str | None = None,
        event_id: str | None = None,
        since: float | None = None,
        limit: int = 100,
    ) -> list[StoredEvent]:
        """Stored events newest first, each filter an exact match, at most `limit`."""
        filters = {"source": source, "event_name": event_name, "ticket": ticket}
        filters["event_id"] = event_id
        with self._read() as conn:
            return stored_events.search(conn, filters=filters, since=since, limit=limit)

    @locked
    def event_deliveries(self, event_ref: str, *, limit: int = 500) -> list[Delivery]:
        """The deliveries made for one stored event, newest first, at most `limit`."""
        with self._read() as conn:
            return stored_events.deliveries_of(conn, event_ref, limit=limit)

    @locked
    def recorded_requests(self, ids: Sequence[str]) -> dict[str, RecordedRequest]:
        """The stored request of each delivery in `ids` still on record, by id."""
        with self._read() as conn:
            return stored_events.recorded(conn, ids)

    @locked
    def purge_events(self, *, older_than: float) -> int:
        """Delete stored events received before `older_than` (the deliveries' retention)."""
        deleted = 0
        before = event_id_floor(older_than)
        while True:
            with self._write() as conn:
                ids = stored_events.purge_ids(conn, before=before, limit=PURGE_CHUNK)
            deleted += len(ids)
            if len(ids) < PURGE_CHUNK:
                return deleted

    @locked
    def restore_events(self, events: Sequence[StoredEvent]) -> int:
        """Store events read from another store as they were; an id already stored is kept."""
        with self._write() as conn:
            return stored_events.restore(conn, events)
