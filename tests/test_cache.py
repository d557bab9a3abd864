"""The stale-while-revalidate cache on its own: a fake clock, a source that can hang or fail, no sleeps."""

import asyncio
import logging

import pytest

from shared.cache import StaleWhileRevalidate


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


class Source:
    """Values by key; can fail, or hang until released."""

    def __init__(self, **values):
        self.values = values
        self.calls = 0
        self.failing = False
        self.hanging: asyncio.Event | None = None

    async def fetch(self, key):
        self.calls += 1
        if self.hanging is not None:
            await self.hanging.wait()
        if self.failing:
            raise ConnectionError("the store is unreachable")
        return self.values.get(key)


async def settled():
    """Let every background task finish (none may hang)."""
    while tasks := asyncio.all_tasks() - {asyncio.current_task()}:
        await asyncio.wait(tasks)


def cache(source, clock, **options):
    options = {"ttl_seconds": 60.0, "stale_seconds": 600.0} | options
    return StaleWhileRevalidate(source.fetch, clock=clock, **options)


def test_a_miss_waits_for_one_fetch_shared_by_every_caller_and_a_fresh_value_is_not_fetched_again():
    source, clock = Source(a="1"), Clock()
    values = cache(source, clock)

    async def scenario():
        source.hanging = asyncio.Event()
        waiting = [asyncio.ensure_future(values.get("a")) for _ in range(20)]
        await asyncio.sleep(0)
        source.hanging.set()
        first = await asyncio.gather(*waiting)
        clock.now += 59
        return first, await values.get("a")

    first, later = asyncio.run(scenario())
    assert first == ["1"] * 20 and later == "1"
    assert source.calls == 1


def test_a_stale_value_is_answered_at_once_while_one_refresh_hangs_then_the_new_value():
    source, clock = Source(a="old"), Clock()
    values = cache(source, clock)

    async def scenario():
        assert await values.get("a") == "old"
        source.values["a"], source.hanging = "new", asyncio.Event()
        clock.now += 61
        stale = [await asyncio.wait_for(values.get("a"), 1) for _ in range(10)]
        await asyncio.sleep(0)
        assert source.calls == 2  # one refresh for the ten callers
        source.hanging.set()
        await settled()
        return stale, await values.get("a")

    stale, refreshed = asyncio.run(scenario())
    assert stale == ["old"] * 10 and refreshed == "new"
    assert source.calls == 2


def test_a_failed_refresh_keeps_the_value_logs_and_is_tried_again_after_the_retry_period(caplog):
    source, clock = Source(a="known"), Clock()
    values = cache(source, clock, retry_seconds=30, label=lambda key: f"entry {key}")

    async def scenario():
        await values.get("a")
        source.failing = True
        clock.now += 100
        served = [await values.get("a")]
        await settled()
        clock.now += 29
        served.append(await values.get("a"))
        await settled()
        calls_within_retry = source.calls
        clock.now += 1
        served.append(await values.get("a"))
        await settled()
        return served, calls_within_retry

    with caplog.at_level(logging.WARNING, logger="shared.cache"):
        served, calls_within_retry = asyncio.run(scenario())
    assert served == ["known"] * 3
    assert (calls_within_retry, source.calls) == (2, 3)
    assert "entry a could not be refreshed (ConnectionError)" in caplog.text


def test_past_the_stale_period_the_caller_waits_and_a_failure_is_its_error():
    source, clock = Source(a="known"), Clock()
    values = cache(source, clock)

    async def scenario():
        await values.get("a")
        source.failing = True
        clock.now += 60 + 600
        with pytest.raises(ConnectionError):
            await values.get("a")
        source.failing = False
        source.values["a"] = "back"
        return await values.get("a")

    assert asyncio.run(scenario()) == "back"


def test_a_miss_is_kept_for_its_own_period_then_asked_for_while_the_caller_waits():
    source, clock = Source(), Clock()
    values = cache(source, clock, miss_seconds=5)

    async def scenario():
        missing = [await values.get("a") for _ in range(3)]
        calls_within = source.calls
        source.values["a"] = "created"
        clock.now += 5
        return missing, calls_within, await values.get("a")

    missing, calls_within, created = asyncio.run(scenario())
    assert missing == [None] * 3 and calls_within == 1
    assert created == "created"  # found on the first call after the miss period, not one call later


def test_a_miss_is_not_served_through_an_outage_unless_stale_misses():
    async def scenario(values, source, clock):
        assert await values.get("a") is None
        source.failing = True
        clock.now += 6
        try:
            return await values.get("a")
        finally:
            clock.now += 1
            source.calls = 0

    source, clock = Source(), Clock()
    with pytest.raises(ConnectionError):
        asyncio.run(scenario(cache(source, clock, miss_seconds=5), source, clock))

    source, clock = Source(), Clock()
    values = cache(source, clock, miss_seconds=5, stale_misses=True)
    assert asyncio.run(scenario(values, source, clock)) is None
    assert asyncio.run(values.get("a")) is None
    assert source.calls == 0, "not asked again within the retry period"


def test_fresh_waits_for_a_refresh_past_the_ttl_and_falls_back_on_the_stale_value_if_it_fails():
    source, clock = Source(a="old"), Clock()
    values = cache(source, clock)

    async def scenario():
        await values.get("a")
        assert await values.fresh("a") == "old" and source.calls == 1  # fresh already
        source.values["a"] = "new"
        clock.now += 61
        rotated = await values.fresh("a")
        source.failing = True
        clock.now += 61
        through_outage = await values.fresh("a"), await values.fresh("a")
        return rotated, through_outage

    rotated, through_outage = asyncio.run(scenario())
    assert rotated == "new" and through_outage == ("new", "new")
    assert source.calls == 3  # the second call of the outage waited on nothing (retry period)


def test_keys_from_callers_cannot_grow_a_bounded_cache_and_values_are_always_kept():
    source, clock = Source(good="caller"), Clock()
    values = cache(source, clock, miss_seconds=5, max_entries=50)

    async def scenario():
        assert await values.get("good") == "caller"
        for index in range(500):
            assert await values.get(f"random-{index}") is None
        assert len(values) == 50
        calls = source.calls
        assert await values.get("good") == "caller" and source.calls == calls
        clock.now += 5  # every miss is past its period: a full cache drops them first
        assert await values.get("another") is None
        assert await values.get("another") is None
        return calls

    calls = asyncio.run(scenario())
    assert len(values) == 2 and source.calls == calls + 1


def test_without_a_ttl_only_misses_are_kept():
    source, clock = Source(), Clock()
    values = cache(source, clock, ttl_seconds=0, stale_seconds=0, miss_seconds=5)

    async def scenario():
        assert await values.get("a") is None
        assert values.cached("a") is not None
        source.values["a"] = "found"
        clock.now += 5
        assert values.cached("a") is None
        assert await values.get("a") == "found"
        assert values.cached("a") is None
        assert await values.get("a") == "found"

    asyncio.run(scenario())
    assert len(values) == 0 and source.calls == 3
