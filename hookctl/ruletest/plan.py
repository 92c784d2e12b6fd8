"""`hookctl plan`: what a rule change would do to real traffic, over the events the store kept.

Each stored event of the window goes through the new rules (match, then render, exactly as
`fire` would, secrets as placeholders: no value is read or needed), and the outcome is compared
with the old side: the deliveries on record for that event (what was sent), or another rule set
(`--against`). Per rule and event the pair is one of

- added:     the new rules send, nothing was sent;
- removed:   something was sent, the new rules no longer send;
- changed:   both send, but the method, URL, headers or body differ (a unified diff shows how);
- unchanged: both send the same request.

Events neither side sends anything for are not counted. Requests are compared as they would
be shown (outcomes.py), so the plan never needs a secret and never prints one. Nothing is sent
or written.

Copies of one event (the same dedupe key, as `fire` recognises duplicates) count once. An event
stored truncated (over the stored-event limit) cannot be replayed: it is counted apart.

A rule that is in the old side but not the new one, while a new one is not in the old side,
may be a rename rather than a delete plus an add: renames.py tells them apart.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from hookctl.events.intake import dedupe_key, event_ticket
from hookctl.rules.load import Rule
from hookctl.ruletest.outcomes import Outcome, Side, recorded_outcome, request_diff
from hookctl.ruletest.renames import record_renames, renames_between
from hookctl.store.event_records import RecordedRequest, StoredEvent

Kind = Literal["added", "removed", "changed", "unchanged"]
KINDS: tuple[Kind, ...] = ("added", "removed", "changed", "unchanged")
Status = Literal["kept", "new", "deleted", "renamed"]
EXAMPLES = 3  # examples of each kind per rule, by default
CHUNK = 500  # events looked at together (one read of their deliveries on record)


@dataclass
class Example:
    """One event of one kind for one rule: enough to run `explain` on it."""

    kind: Kind
    rule: str
    event: str  # the stored event's id (evt_...)
    event_id: str | None  # the event's own id
    ticket: str | None
    source: str
    line: int | None
    delivery_id: str | None = None  # the delivery on record for it, if any
    diff: str | None = None  # changed: unified diff of the request, secrets masked
    error: str | None = None  # the new rules could not render its request


@dataclass
class RulePlan:
    """The plan for one rule: its counts of each kind and a few examples of each."""

    rule: str  # its name in the new rules (the old name for a deleted rule)
    status: Status
    renamed_from: str | None = None
    source: str | None = None  # file:line of the new rule (or the old one, when known)
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(KINDS, 0))
    examples: list[Example] = field(default_factory=list)

    @property
    def differs(self) -> bool:
        """True when the rule would send anything differently."""
        return any(self.counts[k] for k in ("added", "removed", "changed"))


@dataclass
class Plan:
    """Every rule's plan over the window, and what was looked at."""

    rules: list[RulePlan]
    against: str  # "record" or the other rule set's description
    events: int = 0  # distinct events replayed
    duplicates: int = 0  # later copies of an event already counted
    truncated: int = 0  # stored truncated: not replayable
    errors: int = 0  # requests the new rules could not render

    @property
    def differs(self) -> bool:
        """True when the new rules would send anything differently (exit code 2)."""
        return any(r.differs for r in self.rules)

    def totals(self) -> dict[str, int]:
        """Counts of each kind over every rule."""
        return {k: sum(r.counts[k] for r in self.rules) for k in KINDS}


@dataclass
class _Event:
    """A stored event merged with its later copies (same dedupe key)."""

    stored: StoredEvent
    data: dict[str, Any]
    deliveries: dict[str, str]  # rule -> delivery on record (first copy's first)


def _distinct(events: Iterable[StoredEvent], plan: Plan) -> Iterator[list[_Event]]:
    """The window's events in chunks, copies of an already-seen event merged into it."""
    seen: dict[str, _Event] = {}
    chunk: list[_Event] = []
    for stored in events:
        if stored.truncated or stored.data is None:
            plan.truncated += 1
            continue
        key = dedupe_key(stored.data)
        first = seen.get(key)
        if first is not None:
            plan.duplicates += 1
            for rule, delivery_id in stored.deliveries.items():
                first.deliveries.setdefault(rule, delivery_id)
            continue
        item = _Event(stored, stored.data, dict(stored.deliveries))
        seen[key] = item
        chunk.append(item)
        if len(chunk) >= CHUNK:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def make_plan(
    events: Callable[[], Iterable[StoredEvent]],
    new_rules: Sequence[Rule],
    *,
    environ: Mapping[str, str],
    recorded: Callable[[Sequence[str]], Mapping[str, RecordedRequest]] | None = None,
    recorded_rules: Callable[[], set[str]] | None = None,
    against: Sequence[Rule] | None = None,
    against_name: str = "record",
    only_rule: str | None = None,
    examples: int = EXAMPLES,
) -> Plan:
    """Replay the stored events through `new_rules` and compare with the old side.

    The old side is `against` (another rule set) when given, else the deliveries on record,
    read through `recorded` (delivery ids -> their stored requests) and `recorded_rules` (the
    rules with deliveries for the window's events). `events` is called once per pass over the
    window (twice when renames must be told apart from the record).
    """
    if (against is None) == (recorded is None) or (recorded is None) != (recorded_rules is None):
        raise ValueError("give either `against`, or `recorded` and `recorded_rules`")
    new = Side(new_rules, environ)
    old = Side(against, environ) if against is not None else None
    plan = Plan(rules=[], against=against_name)
    rows: dict[str, RulePlan] = {}

    seen_old: set[str] = set()
    if old is not None:
        seen_old = set(old.by_name)
        renames = renames_between(old.rules, new.rules)
    else:
        assert recorded is not None and recorded_rules is not None
        seen_old = {n for n in recorded_rules() if not n.endswith(":on_failure")}
        renames = record_renames(events, new, recorded, seen_old, chunk_size=CHUNK)
    renamed_to = set(renames.values())

    def row(name: str, status: Status, renamed_from: str | None, source: str | None) -> RulePlan:
        if name not in rows:
            rows[name] = RulePlan(name, status, renamed_from, source)
        return rows[name]

    def new_row(rule: Rule) -> RulePlan:
        if rule.name in renamed_to:
            before = next(o for o, n in renames.items() if n == rule.name)
            return row(rule.name, "renamed", before, f"{rule.source}:{rule.line}")
        on_old = old.by_name if old is not None else seen_old
        status: Status = "kept" if rule.name in on_old else "new"
        return row(rule.name, status, None, f"{rule.source}:{rule.line}")

    def old_row(name: str) -> RulePlan:
        if name in renames:
            return new_row(new.by_name[renames[name]])
        if name in new.by_name:
            return new_row(new.by_name[name])
        source = None
        if old is not None and name in old.by_name:
            source = f"{old.by_name[name].source}:{old.by_name[name].line}"
        return row(name, "deleted", None, source)

    def wanted(name: str, old_name: str | None) -> bool:
        return only_rule is None or only_rule in (name, old_name)

    # Rules that are in one set only are listed even when nothing in the window touches them.
    for rule in new.rules:
        if wanted(rule.name, next((o for o, n in renames.items() if n == rule.name), None)):
            new_row(rule)
    for name in sorted(seen_old - set(new.by_name) - set(renames)):
        if wanted(name, None):
            old_row(name)

    for chunk in _distinct(events(), plan):
        on_record: Mapping[str, RecordedRequest] = {}
        if recorded is not None:
            on_record = recorded([i for e in chunk for i in e.deliveries.values()])
        for item in chunk:
            plan.events += 1
            data = item.data
            event_name = data["event"] if isinstance(data.get("event"), str) else None
            now_matched = new.matched(data, event_name)
            then: dict[str, _Was] = {}
            if old is not None:
                then = {n: _Was(n, rule=r) for n, r in old.matched(data, event_name).items()}
            else:
                for n, delivery_id in item.deliveries.items():
                    if not n.endswith(":on_failure"):
                        then[n] = _Was(n, recorded=on_record.get(delivery_id), id=delivery_id)
            pairs: dict[str, tuple[_Was | None, Rule | None]] = {}
            for old_name, before in then.items():
                key = renames.get(old_name, old_name)
                pairs[key] = (before, now_matched.get(key))
            for key, matched in now_matched.items():
                pairs.setdefault(key, (None, matched))
            for key, (was, now_rule) in pairs.items():
                if not wanted(key, was.name if was else None):
                    continue
                target = new_row(now_rule) if now_rule else old_row(was.name if was else key)
                _compare(plan, item, key, was, now_rule, new, old, target, examples)
    plan.rules = sorted(rows.values(), key=lambda r: (r.status == "deleted", r.rule))
    return plan


@dataclass(frozen=True, slots=True)
class _Was:
    """The old side of one event and rule: an old rule that matched, or a delivery on record."""

    name: str
    rule: Rule | None = None
    recorded: RecordedRequest | None = None
    id: str | None = None  # the delivery on record


def _compare(
    plan: Plan,
    item: _Event,
    key: str,
    was: _Was | None,
    rule: Rule | None,
    new: Side,
    old: Side | None,
    target: RulePlan,
    examples: int,
) -> None:
    """Classify one (rule, event) pair, count it, and keep it as an example if room is left."""
    data = item.data
    now = new.outcome(rule, data) if rule is not None else None
    if now is not None and now.error is not None:
        plan.errors += 1
    then: Outcome | None = None
    if was is not None:
        if old is not None and was.rule is not None:
            then = old.outcome(was.rule, data)
        else:
            then = recorded_outcome(was.recorded)
    kind: Kind
    if then is None:
        kind = "added"
    elif now is None:
        kind = "removed"
    elif now.request == then.request:
        # The same request, or none on either side (neither could be rendered: nothing was
        # sent and nothing would be).
        kind = "unchanged"
    else:
        kind = "changed"
    target.counts[kind] += 1
    if sum(1 for e in target.examples if e.kind == kind) >= examples:
        return
    stored = item.stored
    example = Example(
        kind=kind,
        rule=target.rule,
        event=stored.id,
        event_id=stored.event_id,
        ticket=stored.ticket if stored.ticket is not None else event_ticket(data),
        source=stored.source,
        line=stored.line,
        delivery_id=was.id if was is not None else None,
        error=now.error if now is not None else None,
    )
    if kind == "changed" and now is not None and then is not None and was is not None:
        side = "on record" if old is None else plan.against
        example.diff = request_diff(
            then, now, old_name=f"{was.name} ({side})", new_name=f"{key} (new rules)"
        )
    target.examples.append(example)
