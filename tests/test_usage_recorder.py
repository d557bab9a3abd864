"""The usage queue: batches, retries, overflow and shutdown never lose a record silently."""

import asyncio
import json
import logging

from shared.usage import LOST_RECORD_MARKER, UsageRecorder, summarize


class FlakyStore:
    description = "flaky store"

    def __init__(self):
        self.failing = False
        self.written = []
        self.attempts = 0

    async def write(self, records):
        self.attempts += 1
        if self.failing:
            raise ConnectionError("store down")
        self.written.extend(records)

    async def query(self, project, start, end):
        return []


def record(number):
    return {
        "id": f"r{number}",
        "request_id": f"q{number}",
        "project": "p",
        "model": "m",
        "timestamp": "2026-11-26T10:00:00.000000Z",
        "total_tokens": number,
        "cost": 0.5,
    }


def lost_records(caplog):
    return [
        json.loads(r.getMessage().split(": ", 1)[1]) for r in caplog.records if LOST_RECORD_MARKER in r.getMessage()
    ]


def test_records_are_written_in_the_background_and_retried_until_the_store_recovers():
    store = FlakyStore()

    async def scenario():
        recorder = UsageRecorder(store, retry_initial_seconds=0.01, retry_max_seconds=0.02)
        store.failing = True
        for number in range(120):
            recorder.record(record(number))
        await asyncio.sleep(0.1)
        assert store.written == [] and recorder.pending == 120
        store.failing = False
        await asyncio.sleep(0.1)
        return recorder.pending

    assert asyncio.run(scenario()) == 0
    assert [r["id"] for r in store.written] == [f"r{n}" for n in range(120)]
    assert store.attempts > 3


def test_a_full_queue_logs_the_overflow_as_structured_records(caplog):
    store = FlakyStore()
    store.failing = True

    async def scenario():
        recorder = UsageRecorder(store, capacity=3, retry_initial_seconds=10)
        for number in range(5):
            recorder.record(record(number))
        return recorder.pending

    with caplog.at_level(logging.ERROR):
        assert asyncio.run(scenario()) == 3
    assert [r["id"] for r in lost_records(caplog)] == ["r3", "r4"]


def test_shutdown_flushes_or_logs_everything_left():
    store = FlakyStore()

    async def scenario():
        recorder = UsageRecorder(store, retry_initial_seconds=10)
        store.failing = True
        recorder.record(record(1))
        recorder.record(record(2))
        await asyncio.sleep(0.01)
        store.failing = False
        await recorder.close()

    asyncio.run(scenario())
    assert {r["id"] for r in store.written} == {"r1", "r2"}


class LandingStore(FlakyStore):
    """A store whose write, once started, lands even if its caller is cancelled
    (a thread, as the file store's; a request already sent, as Cosmos')."""

    def __init__(self):
        super().__init__()
        self.started = asyncio.Event()
        self.release = asyncio.Event()

    async def write(self, records):
        self.started.set()
        await asyncio.shield(self._land(records))

    async def _land(self, records):
        await self.release.wait()
        self.written.extend(records)


def test_a_batch_being_written_at_shutdown_is_stored_once():
    store = LandingStore()

    async def scenario():
        recorder = UsageRecorder(store)
        for number in range(3):
            recorder.record(record(number))
        await store.started.wait()
        closing = asyncio.create_task(recorder.close(timeout=5))
        await asyncio.sleep(0)
        store.release.set()
        await closing
        return recorder.pending

    assert asyncio.run(scenario()) == 0
    assert [written["id"] for written in store.written] == ["r0", "r1", "r2"]


def test_shutdown_with_the_store_down_logs_the_records(caplog):
    store = FlakyStore()
    store.failing = True

    async def scenario():
        recorder = UsageRecorder(store, retry_initial_seconds=10)
        recorder.record(record(7))
        await recorder.close(timeout=0.5)

    with caplog.at_level(logging.ERROR):
        asyncio.run(scenario())
    assert [r["id"] for r in lost_records(caplog)] == ["r7"]


def test_summaries_total_and_group():
    records = [record(1) | {"model": "a"}, record(2) | {"model": "b"}, record(3) | {"model": "a"}]
    assert summarize(records, "model") == [
        {"model": "a", "requests": 2, "prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 4, "cost": 1.0},
        {"model": "b", "requests": 1, "prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 2, "cost": 0.5},
    ]
    assert summarize(records, "day")[0]["day"] == "2026-11-26"


class PoisonStore(FlakyStore):
    """Refuses, every time, any batch holding the poison record."""

    async def write(self, records):
        self.attempts += 1
        if any(r["id"] == "poison" for r in records):
            raise ValueError("the store cannot take this document")
        self.written.extend(records)


def test_a_poison_record_is_logged_and_dropped_and_later_records_are_written(caplog):
    store = PoisonStore()

    async def scenario():
        recorder = UsageRecorder(store, retry_initial_seconds=0.001, retry_max_seconds=0.002, max_attempts=3)
        recorder.record(record(1) | {"id": "poison"})
        for number in range(2, 5):
            recorder.record(record(number))
        for _ in range(500):
            if recorder.pending == 0:
                break
            await asyncio.sleep(0.01)
        return recorder.pending

    with caplog.at_level(logging.ERROR):
        assert asyncio.run(scenario()) == 0
    assert [r["id"] for r in store.written] == ["r2", "r3", "r4"]
    assert [r["id"] for r in lost_records(caplog)] == ["poison"]
