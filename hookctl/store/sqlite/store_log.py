"""SQLiteStore's log reads: counts by rule, the deliveries listed and in full, stats, file checks.

A mixin of `SQLiteStore` (store.py); the queries themselves are in history.py.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Sequence
from typing import Any

from hookctl.store.log_records import Delivery, DeliveryDetail, Stats, Unrendered
from hookctl.store.records import STATUSES
from hookctl.store.sqlite import database, history
from hookctl.store.sqlite.store_base import StoreBase, locked


class LogMethods(StoreBase):
    """The execution log of the store contract, read in SQLiteStore's transactions."""

    @locked
    def rule_counts(self) -> dict[str, dict[str, int]]:
        """From indexes, not the table: totals by rule (the rule index alone), the unfinished
        and failed by rule (the status index); succeeded, the bulk of a log, is the rest.
        About 25 ms at 100k deliveries where one GROUP BY over the rows took 110 ms."""
        counts: dict[str, dict[str, int]] = {}
        with self._read() as conn:
            totals = conn.execute(
                "SELECT rule, count(*) FROM deliveries INDEXED BY deliveries_rule GROUP BY rule"
            ).fetchall()
            others = conn.execute(
                "SELECT rule, status, count(*) FROM deliveries "
                "WHERE status IN ('pending', 'failed') GROUP BY rule, status"
            ).fetchall()
        for rule, total in totals:
            counts[rule] = {**dict.fromkeys(STATUSES, 0), "succeeded": int(total)}
        for rule, status, count in others:
            counts[rule][status] = int(count)
            counts[rule]["succeeded"] -= int(count)
        return counts

    def query(
        self,
        *,
        status: str | None = None,
        rule: str | None = None,
        ticket: str | None = None,
        since: float | None = None,
        limit: int | None = 50,
    ) -> Iterator[Delivery]:
        """Deliveries newest first, filtered; `since` is creation time; limit None or 0 = all.

        Read a page at a time: the caller may write to the store between items.
        """
        pages = history.query(
            self._conn, status=status, rule=rule, ticket=ticket, since=since, limit=limit
        )
        while True:
            with self._lock:
                try:
                    item = next(pages)
                except StopIteration:
                    return
                except sqlite3.Error as exc:
                    raise database.error(self.path, exc) from exc
            yield item

    @locked
    def get(self, delivery_id: str) -> DeliveryDetail | None:
        """One delivery by id or unique prefix, with its attempts in order; None if absent."""
        with self._read() as conn:
            return history.get(conn, delivery_id)

    @locked
    def select(
        self,
        *,
        ids: Sequence[str] = (),
        status: str | None = None,
        rule: str | None = None,
        since: float | None = None,
    ) -> list[str]:
        """The full ids a replay selects: by ids (or unique prefixes), or by filters."""
        with self._read() as conn:
            return history.select_ids(conn, ids=ids, status=status, rule=rule, since=since)

    @locked
    def statuses(self, ids: Sequence[str]) -> dict[str, str]:
        """The status of each of `ids` (a duplicate's earlier delivery, say)."""
        with self._read() as conn:
            return history.statuses(conn, ids)

    @locked
    def unrendered(self, ids: Sequence[str]) -> list[Unrendered]:
        """Those of `ids` whose request could not be rendered, with their rule and event."""
        with self._read() as conn:
            return history.unrendered(conn, ids)

    @locked
    def stats(self, *, since: float | None = None) -> Stats:
        """Counts by status and rule, attempt duration percentiles, slowest and failing URLs."""
        with self._read() as conn:
            return history.stats(conn, since=since)

    @locked
    def file_settings(self) -> dict[str, Any]:
        """The file's page size, journal mode and applied migrations (SQLite only)."""
        with self._read() as conn:
            return {
                "page_size": conn.execute("PRAGMA page_size").fetchone()[0],
                "journal_mode": conn.execute("PRAGMA journal_mode").fetchone()[0],
                "migrations": [n for (n,) in conn.execute("SELECT name FROM _migrations")],
            }

    @locked
    def check_integrity(self) -> list[str]:
        """What SQLite's integrity and foreign-key checks find wrong (empty: healthy)."""
        with self._read() as conn:
            found = [row[0] for row in conn.execute("PRAGMA integrity_check")]
            problems = [] if found == ["ok"] else found
            problems += [
                f"{table} row {rowid} refers to a missing {parent} row"
                for table, rowid, parent, _ in conn.execute("PRAGMA foreign_key_check")
            ]
        return problems
