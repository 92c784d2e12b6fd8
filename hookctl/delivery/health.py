"""Endpoint health in a pipeline run: the circuit breaker's reading of each attempt, and
what this process does with claims for an endpoint it learns is open.

The breaker's state lives in the store (store/breaker.py advances it in the transaction that
records the outcomes, so every worker shares one breaker); this module is the pipeline's side:

- `mark` reads an attempt for the breaker ("up", "down", "gone") and makes a failed probe, or
  a 410 that pauses its endpoint (`on_gone: pause`), a free attempt: logged, pending, its
  retries and retry window untouched.
- `waiting` says whether a claim must wait for its endpoint's probe instead of going out:
  the pipeline hands it back (`release(until=next probe)`, no attempt spent).
- `disable_notices` are the auto-disable notices (the rule's `on_failure`) a batch carries,
  for the store to enqueue in the one transaction that pauses the endpoint.
- `learn` takes the store's view (read at the start of a run and after a batch with failures).

Nothing here runs per delivery for a healthy endpoint beyond a dictionary lookup or two.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Literal

from hookctl.durations import format_duration
from hookctl.store.endpoint import endpoint_of, open_note
from hookctl.store.endpoint_records import DEFAULT_BREAKER, Breaker, BreakerView
from hookctl.store.records import AttemptResult, Claim, NewDelivery

if TYPE_CHECKING:
    from hookctl.transport.http import Outcome

# Answers that mean the receiver is not coping (a failure for the breaker); any other 4xx is
# the receiver answering: the delivery's problem, not the endpoint's.
_DOWN_CODES = frozenset({408, 429})


def breaker_of(claim: Claim) -> Breaker:
    """The rule's breaker settings, stored with the delivery's policy (absent: the defaults)."""
    data = claim.policy.get("breaker")
    return DEFAULT_BREAKER if data is None else _parsed(data)


_PARSED: dict[str, Breaker] = {}


def _parsed(data: Mapping[str, object]) -> Breaker:
    # A batch's deliveries share a handful of rules: parse each settings dict once.
    key = repr(sorted(data.items()))
    found = _PARSED.get(key)
    if found is None:
        found = _PARSED[key] = Breaker.from_dict(dict(data))
    return found


class Health:
    """This process's view of its endpoints' breakers."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self.clock = clock
        self.views: dict[str, BreakerView] = {}
        self.open: dict[str, BreakerView] = {}  # open and not paused: claims for them wait

    def learn(self, views: Mapping[str, BreakerView]) -> list[str]:
        """Take the store's view; returns the endpoints that are open and were not before."""
        before = self.open
        self.views = dict(views)
        self.open = {e: v for e, v in views.items() if v.open_since is not None and not v.paused}
        return [e for e in self.open if e not in before]

    def waiting(self, claim: Claim) -> tuple[str, float | None] | None:
        """(why, until when) this claim must wait for its endpoint's probe; None: it goes."""
        if not self.open or claim.probe:
            return None
        endpoint = endpoint_of(claim.url)
        view = self.open.get(endpoint)
        if view is None:
            return None
        assert view.open_since is not None
        return open_note(endpoint, view.open_since, view.next_probe_at), view.next_probe_at

    def mark(self, claim: Claim, outcome: Outcome | None, result: AttemptResult) -> None:
        """Add the breaker's reading to an attempt's result; a failed probe or a 410 that
        pauses the endpoint becomes free: logged, pending, not counted by its retry policy."""
        if outcome is None or outcome.permanent:
            return  # nothing reached the receiver (or never will): no news of its health
        settings = breaker_of(claim)
        if not settings.enabled:
            return
        code = outcome.status_code
        health: Literal["up", "down", "gone"]
        if code is None or code >= 500 or code in _DOWN_CODES:
            health = "down"
        elif code == 410 and settings.on_gone == "pause":
            health = "gone"
        else:
            health = "up"
        result.endpoint = endpoint_of(claim.url)
        result.health = health
        result.breaker = settings if settings is not DEFAULT_BREAKER else None
        if health == "gone" or (health == "down" and claim.probe):
            result.free = True
            result.status, result.next_attempt_at = "pending", self.clock()
            if health == "gone":
                result.error = "410 Gone: its endpoint is paused (on_gone: pause); it waits"

    def disable_notices(
        self,
        batch: Sequence[tuple[Claim, AttemptResult]],
        *,
        environ: Mapping[str, str],
        allow_net: tuple[str, ...],
    ) -> tuple[dict[str, NewDelivery | None], list[tuple[NewDelivery, str | None]]]:
        """The endpoints this batch may auto-disable, each with the notice its pause would
        enqueue (its rule's `on_failure`; None: the rule has none), and those notices with
        their render errors. An endpoint is named only once this process's view says it has
        failed long enough, so a notice is rendered only then (the store decides for sure)."""
        now = self.clock()
        candidates: dict[str, tuple[Claim, AttemptResult, Breaker]] = {}
        for claim, result in batch:
            if result.health != "down" or result.endpoint is None:
                continue
            settings = result.breaker or DEFAULT_BREAKER
            current = candidates.get(result.endpoint)
            if current is None or (claim.on_failure and not current[0].on_failure):
                candidates[result.endpoint] = (claim, result, settings)
        notices: dict[str, NewDelivery | None] = {}
        rendered: list[tuple[NewDelivery, str | None]] = []
        for endpoint, (claim, result, settings) in candidates.items():
            if claim.on_failure is None:
                notices[endpoint] = None  # nothing to send: the store may pause it any time
                continue
            view = self.views.get(endpoint)
            limit = settings.disable_after
            if view is None or view.failing_since is None or limit is None:
                continue
            if now - view.failing_since < limit:
                continue
            reason = (
                f"auto: no success for {format_duration(limit)} (failing since "
                f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime(view.failing_since))})"
            )
            from hookctl.delivery.notices import endpoint_notice  # templates: only when needed

            new, error = endpoint_notice(
                claim, result, endpoint=endpoint, reason=reason, environ=environ, now=now
            )
            if allow_net:
                new.request["allow_net"] = list(allow_net)
            notices[endpoint] = new
            rendered.append((new, error))
        return notices, rendered

    def has_news(self, results: Sequence[AttemptResult]) -> bool:
        """A batch that may have changed what this process knows of its endpoints: a
        failure, a 410, or a success where it believed an endpoint was failing."""
        return any(
            r.health is not None and (r.health != "up" or r.endpoint in self.views) for r in results
        )
