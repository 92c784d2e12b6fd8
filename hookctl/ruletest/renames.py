"""Renames in a plan: which old rule became which new one, rather than a delete plus an add.

A rule that is in the old side but not the new one, while a new one is not in the old side,
is a rename when (against another rule set) both come from a file of the same name and have
the same webhook, or (against the record, which keeps no rule file) the new rule matches
every event the old one's deliveries were made for in the window and sends them to the same
method and URL. Each old rule pairs with at most one new rule.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from itertools import islice
from pathlib import Path
from typing import Any

from hookctl.rules.load import Rule
from hookctl.ruletest.outcomes import Outcome, Side, recorded_outcome
from hookctl.store.event_records import RecordedRequest, StoredEvent


def _pairs(
    old: Sequence[str], new: Sequence[str], same: Callable[[str, str], bool]
) -> dict[str, str]:
    """Old name -> new name for renames: each old rule pairs with the one new rule `same` says."""
    pairs: dict[str, str] = {}
    taken: set[str] = set()
    for o in old:
        candidates = [n for n in new if n not in taken and same(o, n)]
        if len(candidates) == 1:
            pairs[o] = candidates[0]
            taken.add(candidates[0])
    return pairs


def renames_between(old: Sequence[Rule], new: Sequence[Rule]) -> dict[str, str]:
    """Renames between two rule sets: same file name and the same webhook."""
    old_by, new_by = {r.name: r for r in old}, {r.name: r for r in new}
    gone = [n for n in old_by if n not in new_by]
    fresh = [n for n in new_by if n not in old_by]

    def same(o: str, n: str) -> bool:
        a, b = old_by[o], new_by[n]
        return Path(a.source).name == Path(b.source).name and a.webhook == b.webhook

    return _pairs(gone, fresh, same)


class _RenameTally:
    """Against the record: does a new rule send what an old one's deliveries did?"""

    def __init__(self, gone: Sequence[str], fresh: Sequence[str]) -> None:
        self.gone, self.fresh = list(gone), list(fresh)
        self.agree: dict[tuple[str, str], int] = {}
        self.disagree: set[tuple[str, str]] = set()

    def see(self, recorded: Mapping[str, Outcome], new: Side, data: Any, name: Any) -> None:
        for old_name in self.gone:
            was = recorded.get(old_name)
            if was is None or was.request is None:
                continue
            for new_name in self.fresh:
                key = (old_name, new_name)
                if key in self.disagree:
                    continue
                rule = new.by_name[new_name]
                now = new.outcome(rule, data) if rule.matches(name, data) else None
                if (
                    now is None
                    or now.request is None
                    or (
                        (now.request.method, now.request.url)
                        != (was.request.method, was.request.url)
                    )
                ):
                    self.disagree.add(key)
                else:
                    self.agree[key] = self.agree.get(key, 0) + 1

    def pairs(self) -> dict[str, str]:
        def same(o: str, n: str) -> bool:
            return (o, n) not in self.disagree and self.agree.get((o, n), 0) > 0

        return _pairs(self.gone, self.fresh, same)


def record_renames(
    events: Callable[[], Iterable[StoredEvent]],
    new: Side,
    recorded: Callable[[Sequence[str]], Mapping[str, RecordedRequest]],
    on_record: set[str],
    *,
    chunk_size: int,
) -> dict[str, str]:
    """Renames against the record: a pass over the window only when one is possible."""
    gone = sorted(on_record - set(new.by_name))
    fresh = sorted(set(new.by_name) - on_record)
    if not gone or not fresh:
        return {}
    tally = _RenameTally(gone, fresh)
    for chunk in _chunks(events(), chunk_size):
        ids = [i for e in chunk for n, i in e.deliveries.items() if n in gone]
        requests = recorded(ids) if ids else {}
        for stored in chunk:
            if stored.data is None or not any(n in gone for n in stored.deliveries):
                continue
            outcomes = {
                n: recorded_outcome(requests.get(i))
                for n, i in stored.deliveries.items()
                if n in gone
            }
            name = stored.data.get("event") if isinstance(stored.data.get("event"), str) else None
            tally.see(outcomes, new, stored.data, name)
    return tally.pairs()


def _chunks(items: Iterable[StoredEvent], size: int) -> Iterator[list[StoredEvent]]:
    iterator = iter(items)
    while chunk := list(islice(iterator, size)):
        yield chunk
