"""SQLiteStore's endpoint state (issue 15): pauses, breakers, health, rate slots and holds.

A mixin of `SQLiteStore` (store.py); the SQL is in endpoints.py.
"""

from __future__ import annotations

from hookctl.store.endpoint_records import BreakerView, EndpointHealth, EndpointLimit, Reservation
from hookctl.store.sqlite import endpoints as endpoint_state
from hookctl.store.sqlite.store_base import StoreBase, locked


class EndpointMethods(StoreBase):
    """Endpoint pauses, breakers and rate limits of the store contract."""

    @locked
    def pause_endpoint(self, endpoint: str, *, now: float, reason: str | None = None) -> bool:
        """Hold `endpoint`'s deliveries from `now` (claims skip them); False if already paused."""
        with self._write() as conn:
            return endpoint_state.pause(conn, endpoint, now=now, reason=reason)

    @locked
    def resume_endpoint(self, endpoint: str, *, now: float) -> bool:
        """Release a paused endpoint's deliveries; False if it was not paused."""
        with self._write() as conn:
            return endpoint_state.resume(conn, endpoint, now=now)

    @locked
    def paused_endpoints(self) -> dict[str, tuple[float, str | None]]:
        """Every paused endpoint: (since, reason)."""
        with self._read() as conn:
            return endpoint_state.paused(conn)

    @locked
    def breaker_states(self) -> dict[str, BreakerView]:
        """Every endpoint whose breaker is failing or open, by name."""
        with self._read() as conn:
            return endpoint_state.views(conn)

    @locked
    def endpoint_health(self, *, since: float) -> list[EndpointHealth]:
        """Every endpoint with deliveries or state, by name; attempt figures since `since`."""
        with self._read() as conn:
            return endpoint_state.health(conn, since=since)

    # --- rate limits (issue 15; SQL in endpoints.py) --------------------------------------------

    @locked
    def reserve_slots(
        self,
        endpoint: str,
        *,
        rule: str | None,
        rate: str,
        interval: float,
        count: int,
        now: float,
        horizon: float,
    ) -> Reservation:
        """Take up to `count` send slots for `endpoint` within `horizon` (one write: the file's
        write lock makes it atomic across processes)."""
        with self._write() as conn:
            return endpoint_state.reserve(
                conn,
                endpoint,
                rule=rule,
                rate=rate,
                interval=interval,
                count=count,
                now=now,
                horizon=horizon,
            )

    @locked
    def slow_endpoint(self, endpoint: str, *, until: float, now: float, reason: str) -> None:
        """Hold `endpoint` until `until` (a Retry-After): its schedule and claims start there."""
        with self._write() as conn:
            endpoint_state.slow(conn, endpoint, until=until, now=now, reason=reason)

    @locked
    def endpoint_limits(self, *, now: float) -> dict[str, EndpointLimit]:
        """Endpoints with a rate recorded within RATE_MEMORY or a Retry-After hold past `now`."""
        with self._read() as conn:
            return endpoint_state.limits(conn, now=now)
