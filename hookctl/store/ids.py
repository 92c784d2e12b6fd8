"""Delivery and stored-event ids: "msg_"/"evt_" + time-sortable ULIDs (Crockford base32)."""

from __future__ import annotations

import math
import os
import re

ID_PREFIX = "msg_"
# Ids carry their creation time so `since` filters can seek the id indexes; enqueue refuses ids
# minted further than this from its clock, which keeps that shortcut exact.
ID_CLOCK_SLACK = 3600.0
_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"  # ASCII-ordered, so string order is numeric order
ID_PATTERN = re.compile(rf"^{ID_PREFIX}[0-7][{_CROCKFORD}]{{25}}$")


def new_delivery_id(now: float) -> str:
    """A new "msg_" + 26-char ULID (48-bit milliseconds, 80 random bits): ids sort by time."""
    millis = math.floor(now * 1000)
    if not 0 <= millis < 1 << 48:
        raise ValueError(f"cannot make a delivery id for time {now!r}")
    return ID_PREFIX + _encode((millis << 80) | int.from_bytes(os.urandom(10), "big"))


def id_floor(when: float) -> str:
    """The smallest id that could have been minted at `when`."""
    millis = min(max(math.floor(when * 1000), 0), (1 << 48) - 1)
    return ID_PREFIX + _encode(millis << 80)


# Two digits per lookup: 13 table reads instead of 26 divisions.
_DIGIT_PAIRS = [a + b for a in _CROCKFORD for b in _CROCKFORD]
_PAIR_SHIFTS = tuple(range(120, -1, -10))


def _encode(value: int) -> str:
    """`value` (< 2**130) as 26 Crockford base32 digits, most significant first."""
    return "".join([_DIGIT_PAIRS[(value >> shift) & 1023] for shift in _PAIR_SHIFTS])


EVENT_ID_PREFIX = "evt_"
EVENT_ID_PATTERN = re.compile(rf"^{EVENT_ID_PREFIX}[0-7][{_CROCKFORD}]{{25}}$")


def new_event_id(now: float) -> str:
    """A new "evt_" + ULID for a stored event: time-sortable like delivery ids."""
    return EVENT_ID_PREFIX + new_delivery_id(now).removeprefix(ID_PREFIX)


class EventIds:
    """Monotonic stored-event ids: within one millisecond each is the last one plus one, so
    events read in the same millisecond keep the order they were read in."""

    def __init__(self) -> None:
        self._last = 0

    def next(self, now: float) -> str:
        """The next id for an event received at `now`."""
        millis = math.floor(now * 1000)
        if not 0 <= millis < 1 << 48:
            raise ValueError(f"cannot make an event id for time {now!r}")
        value = (millis << 80) | int.from_bytes(os.urandom(10), "big")
        if value >> 80 <= self._last >> 80 and self._last + 1 < 1 << 128:
            value = self._last + 1  # same (or an earlier) millisecond: just after the last
        self._last = value
        return EVENT_ID_PREFIX + _encode(value)


def event_id_floor(when: float) -> str:
    """The smallest stored-event id that could have been minted at `when`."""
    return EVENT_ID_PREFIX + id_floor(when).removeprefix(ID_PREFIX)
