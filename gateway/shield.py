"""Limits that keep one client from flooding the auth API through the gateway."""

from __future__ import annotations

import math
import time
from collections import OrderedDict, deque
from collections.abc import Callable

from gateway.config import Rate

MAX_TRACKED_CLIENTS = 100_000


class SlidingWindowLimiter:
    """At most `rate.count` events per client in any window of `rate.period` seconds.

    A sliding log rather than a token bucket: "30/minute" then means no minute ever sees more than
    30 validation calls for one client, which is the promise an operator reads in the config.
    """

    def __init__(self, rate: Rate, clock: Callable[[], float] = time.monotonic) -> None:
        self._rate = rate
        self._clock = clock
        self._events: OrderedDict[str, deque[float]] = OrderedDict()

    def acquire(self, client: str) -> float | None:
        """Record an event; None when allowed, else seconds until one would be."""
        now = self._clock()
        events = self._events.get(client)
        if events is None:
            events = deque(maxlen=self._rate.count)
            self._events[client] = events
            while len(self._events) > MAX_TRACKED_CLIENTS:
                self._events.popitem(last=False)
        else:
            self._events.move_to_end(client)
        if len(events) == self._rate.count and now - events[0] < self._rate.period:
            return max(0.0, self._rate.period - (now - events[0]))
        events.append(now)
        return None


def retry_after(seconds: float) -> str:
    """A Retry-After value: whole seconds, at least 1."""
    return str(max(1, math.ceil(seconds)))
