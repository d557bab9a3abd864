"""One stale-while-revalidate cache: for the catalog, API keys and secrets."""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Callable, Coroutine, Hashable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from .singleflight import SingleFlight

logger = logging.getLogger(__name__)

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")

#: After a refresh failed, the value known before is served this long before the source is asked again.
RETRY_SECONDS = 30.0


@dataclass
class Entry(Generic[V]):
    value: V
    fetched_at: float
    #: No refresh is started before this moment (set when one failed).
    retry_at: float = float("-inf")


class StaleWhileRevalidate(Generic[K, V]):
    """Values that `fetch(key)` returns, each kept with the moment it was fetched.

    A value younger than `ttl_seconds` is fresh: served as it is. For
    `stale_seconds` more it is stale: served at once while one background
    refresh runs, so a caller never waits on a refresh of something the cache
    had; a refresh that fails keeps the value (and logs), and the source is
    asked again after `retry_seconds`. A key the cache holds nothing usable
    for is fetched while the caller waits: one fetch per key however many
    callers wait, which a caller who is cancelled does not cancel for the
    others (`SingleFlight`), and its failure is the caller's error.

    A fetched None is a miss: kept `miss_seconds` (0: not kept), then fetched
    again while the caller waits, so something created meanwhile is found at
    once. A miss is not served stale, unless `stale_misses`: then it is served
    when the fetch after it fails, like a value known before. A value is kept
    only for as long as it may be served: with `ttl_seconds` and
    `stale_seconds` 0 only misses are kept.

    With `max_entries` (keys that callers choose, such as API keys), a full
    cache first drops what it may no longer serve; if it is still full, a new
    miss is not kept (values are: they come from the source, not the caller).
    """

    def __init__(
        self,
        fetch: Callable[[K], Coroutine[Any, Any, V]],
        *,
        ttl_seconds: float,
        stale_seconds: float = 0.0,
        miss_seconds: float = 0.0,
        stale_misses: bool = False,
        retry_seconds: float = RETRY_SECONDS,
        max_entries: int | None = None,
        clock: Callable[[], float] = time.monotonic,
        label: Callable[[K], str] = repr,
    ) -> None:
        self._fetch = fetch
        self.ttl_seconds = ttl_seconds
        self.stale_seconds = stale_seconds
        self.miss_seconds = miss_seconds
        self.stale_misses = stale_misses
        self.retry_seconds = retry_seconds
        self.max_entries = max_entries
        self._clock = clock
        self._label = label
        self._entries: dict[K, Entry[V]] = {}
        self._flights: SingleFlight[K, V] = SingleFlight(self._fetch_and_keep)

    def __len__(self) -> int:
        return len(self._entries)

    async def get(self, key: K) -> V:
        """The value of `key`: fresh, or stale while a background refresh runs, or fetched now."""
        entry, now = self._entries.get(key), self._clock()
        if entry is not None and self._is_fresh(entry, now):
            return entry.value
        if entry is not None and self._is_stale(entry, now):
            self._refresh_in_background(key, entry, now)
            return entry.value
        return await self._wait(key, entry)

    async def fresh(self, key: K) -> V:
        """The value of `key` no older than `ttl_seconds`, waiting for a refresh
        if the one held is older; the value held is served only if that refresh
        fails (or failed less than `retry_seconds` ago)."""
        entry = self._entries.get(key)
        if entry is not None and self._is_fresh(entry, self._clock()):
            return entry.value
        return await self._wait(key, entry)

    async def refresh(self, key: K) -> V:
        """Fetch `key` now (or join the fetch under way), whatever the cache holds."""
        return await self._flights.get(key)

    def cached(self, key: K) -> Entry[V] | None:
        """What the cache holds for `key` and may still serve, without a fetch."""
        entry, now = self._entries.get(key), self._clock()
        if entry is not None and (self._is_fresh(entry, now) or self._is_stale(entry, now)):
            return entry
        return None

    def prefetch(self, key: K) -> asyncio.Task[V] | None:
        """Start fetching `key` in the background unless a fetch is under way;
        the task started, whose failure is for the caller to retrieve."""
        if self._flights.running(key):
            return None
        return self._flights.start(key)

    def _is_fresh(self, entry: Entry[V], now: float) -> bool:
        return now < entry.fetched_at + self._fresh_for(entry.value)

    def _is_stale(self, entry: Entry[V], now: float) -> bool:
        """Past its freshness, a value (not a miss) that may still be served while it is refreshed."""
        return entry.value is not None and now < self._served_until(entry)

    def _fresh_for(self, value: V) -> float:
        return self.ttl_seconds if value is not None else self.miss_seconds

    def _served_until(self, entry: Entry[V]) -> float:
        """Until when `entry` is served in place of a fetch that fails."""
        if entry.value is None and not self.stale_misses:
            return entry.fetched_at + self.miss_seconds
        return entry.fetched_at + self._fresh_for(entry.value) + self.stale_seconds

    async def _wait(self, key: K, entry: Entry[V] | None) -> V:
        if entry is not None and self._clock() < min(entry.retry_at, self._served_until(entry)):
            return entry.value
        try:
            return await self._flights.get(key)
        except Exception as exc:
            now = self._clock()
            if entry is None or now >= self._served_until(entry):
                raise
            self._failed(key, entry, exc, now)
            return entry.value

    def _refresh_in_background(self, key: K, entry: Entry[V], now: float) -> None:
        if now >= entry.retry_at and not self._flights.running(key):
            self._flights.start(key).add_done_callback(functools.partial(self._refreshed, key, entry))

    def _refreshed(self, key: K, entry: Entry[V], task: asyncio.Task[V]) -> None:
        if not task.cancelled() and (exc := task.exception()) is not None:
            self._failed(key, entry, exc, self._clock())

    def _failed(self, key: K, entry: Entry[V], exc: BaseException, now: float) -> None:
        entry.retry_at = now + self.retry_seconds
        logger.warning(
            "%s could not be refreshed (%s); the value fetched %.0f s ago is served, and asked for again in %.0f s",
            self._label(key),
            type(exc).__name__,
            now - entry.fetched_at,
            self.retry_seconds,
        )

    async def _fetch_and_keep(self, key: K) -> V:
        value = await self._fetch(key)
        self._keep(key, Entry(value, self._clock()))
        return value

    def _keep(self, key: K, entry: Entry[V]) -> None:
        now = entry.fetched_at
        if self._served_until(entry) <= now:
            self._entries.pop(key, None)
            return
        if self.max_entries is not None and key not in self._entries and len(self._entries) >= self.max_entries:
            self._entries = {k: e for k, e in self._entries.items() if now < self._served_until(e)}
            if entry.value is None and len(self._entries) >= self.max_entries:
                return
        self._entries[key] = entry
