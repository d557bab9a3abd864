"""Usage records: one per completed call, written in the background, never lost.

Records wait in a bounded in-memory queue and are written in batches by one
background task. A store that fails is retried with backoff while records
keep queueing, a bounded number of times: then the batch is written record by
record, so one record the store will never take cannot hold up the others. A
record that is not stored (refused, still failing, the queue full, shutdown
with the store down) is logged in full as a structured `usage-record not
stored` line, from which it can be recovered. Writing never delays a caller's
response.
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections import deque
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from .cosmos import CosmosDatabase

logger = logging.getLogger(__name__)

#: The project recorded for callers without one (ALLOW_ANONYMOUS).
ANONYMOUS_PROJECT = "anonymous"
#: Marks a log line that carries a usage record that could not be stored.
LOST_RECORD_MARKER = "usage-record"


class RecordRefused(Exception):
    """The store refuses one record for good (retrying it cannot help)."""

    def __init__(self, record: dict[str, Any], reason: str) -> None:
        super().__init__(reason)
        self.record = record
        self.reason = reason


class UsageStore(Protocol):
    """Writes records (raising `RecordRefused` for one it will never take) and reads them."""

    description: str

    async def write(self, records: list[dict[str, Any]]) -> None: ...

    async def query(self, project: str, start: str, end: str) -> list[dict[str, Any]]: ...


class FileUsageStore:
    """Usage records as JSON lines in a file (the local default)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.description = f"usage file {self.path}"

    def _append(self, records: list[dict[str, Any]]) -> None:
        with self.path.open("a", encoding="utf-8") as file:
            file.writelines(json.dumps(record) + "\n" for record in records)

    async def write(self, records: list[dict[str, Any]]) -> None:
        await asyncio.to_thread(self._append, records)

    def _read(self) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        return [json.loads(line) for line in self.path.read_text(encoding="utf-8").splitlines() if line]

    async def query(self, project: str, start: str, end: str) -> list[dict[str, Any]]:
        return [
            record
            for record in await asyncio.to_thread(self._read)
            if record["project"] == project and start <= record["timestamp"] < end
        ]


#: Cosmos statuses that refuse a document for good (bad request, too large, conflict...).
_REFUSALS = frozenset({400, 403, 409, 413}) | frozenset(range(415, 428))


class CosmosUsageStore:
    """The Cosmos `usage` container (partition key `/project`); upserts are idempotent."""

    def __init__(self, database: CosmosDatabase, container_id: str) -> None:
        self.database = database
        self.container_id = container_id
        self.description = f"Cosmos container {container_id}"

    async def write(self, records: list[dict[str, Any]]) -> None:
        from azure.cosmos.exceptions import CosmosHttpResponseError

        async with self.database.timeout():
            container = await self.database.container(self.container_id)
            for record in records:
                try:
                    await container.upsert_item(record)
                except CosmosHttpResponseError as exc:
                    if exc.status_code in _REFUSALS:
                        raise RecordRefused(record, f"{self.description} answered {exc.status_code}") from exc
                    raise

    async def query(self, project: str, start: str, end: str) -> list[dict[str, Any]]:
        async with self.database.timeout():
            container = await self.database.container(self.container_id)
            items = container.query_items(
                "SELECT * FROM c WHERE c.project = @project AND c.timestamp >= @start AND c.timestamp < @end",
                parameters=[
                    {"name": "@project", "value": project},
                    {"name": "@start", "value": start},
                    {"name": "@end", "value": end},
                ],
                partition_key=project,
            )
            return [item async for item in items]


def utc_timestamp(moment: datetime | None = None) -> str:
    return (moment or datetime.now(UTC)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class UsageRecorder:
    """The bounded queue in front of a usage store, drained by one background task."""

    def __init__(
        self,
        store: UsageStore,
        capacity: int = 10_000,
        batch_size: int = 50,
        retry_initial_seconds: float = 0.5,
        retry_max_seconds: float = 30.0,
        max_attempts: int = 10,
    ) -> None:
        self.store = store
        self.capacity = capacity
        self.batch_size = batch_size
        self.retry_initial_seconds = retry_initial_seconds
        self.retry_max_seconds = retry_max_seconds
        #: Tries of one batch before it is written record by record (about 2.5 min with the defaults).
        self.max_attempts = max_attempts
        self._pending: deque[dict[str, Any]] = deque()
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def pending(self) -> int:
        return len(self._pending)

    def record(self, record: dict[str, Any]) -> None:
        """Queue a record; never blocks. A full queue logs the record instead."""
        if len(self._pending) >= self.capacity:
            _log_lost([record], "the usage queue is full")
            return
        self._pending.append(record)
        if self._task is None or self._task.done():
            self._wake = asyncio.Event()
            self._task = asyncio.get_running_loop().create_task(self._drain())
        assert self._wake is not None
        self._wake.set()

    def _head(self) -> list[dict[str, Any]]:
        return [self._pending[index] for index in range(min(self.batch_size, len(self._pending)))]

    async def _drain(self) -> None:
        assert self._wake is not None
        delay = self.retry_initial_seconds
        attempts = 0
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._pending:
                batch = self._head()
                try:
                    await self.store.write(batch)
                except RecordRefused as refused:
                    self._pending.remove(refused.record)
                    _log_lost([refused.record], refused.reason)
                    continue
                except Exception as exc:
                    attempts += 1
                    if attempts < self.max_attempts:
                        logger.warning(
                            "writing %d usage records to %s failed (%s); retrying in %.1f s, %d queued",
                            len(batch),
                            self.store.description,
                            type(exc).__name__,
                            delay,
                            len(self._pending),
                        )
                        await asyncio.sleep(delay)
                        delay = min(delay * 2, self.retry_max_seconds)
                        continue
                    await self._write_one_by_one(len(batch))
                else:
                    for _ in batch:
                        self._pending.popleft()
                attempts = 0
                delay = self.retry_initial_seconds

    async def _write_one_by_one(self, count: int) -> None:
        """Write the first `count` queued records singly; log and drop those the store will not take."""
        for _ in range(min(count, len(self._pending))):
            record = self._pending[0]
            try:
                await self.store.write([record])
            except RecordRefused as refused:
                _log_lost([record], refused.reason)
            except Exception as exc:
                _log_lost([record], f"{self.store.description} failed with {type(exc).__name__}")
            self._pending.popleft()

    async def close(self, timeout: float = 10.0) -> None:
        """Write what is queued (at shutdown) within `timeout`; log whatever the store will not take."""
        if self._task is not None:
            self._task.cancel()
        try:
            async with asyncio.timeout(timeout):
                while self._pending:
                    batch = self._head()
                    try:
                        await self.store.write(batch)
                    except Exception:
                        await self._write_one_by_one(len(batch))
                    else:
                        for _ in batch:
                            self._pending.popleft()
        except TimeoutError:
            _log_lost(self._pending, f"{self.store.description} did not take them before shutdown")
            self._pending.clear()


def _log_lost(records: Iterable[dict[str, Any]], reason: str) -> None:
    for record in records:
        logger.error("%s not stored (%s): %s", LOST_RECORD_MARKER, reason, json.dumps(record))


def summarize(records: list[dict[str, Any]], group_by: str | None) -> list[dict[str, Any]]:
    """Totals of calls, tokens and cost, overall or per `model` or per `day`."""
    groups: dict[str, dict[str, Any]] = {}
    for record in records:
        key = "" if group_by is None else (record["model"] if group_by == "model" else record["timestamp"][:10])
        total = groups.setdefault(
            key, {"requests": 0, "prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0, "cost": 0.0}
        )
        total["requests"] += 1
        for field in ("prompt_tokens", "completion_tokens", "total_tokens", "cost"):
            total[field] += record.get(field) or 0
    rows = []
    for key in sorted(groups):
        row = ({group_by: key} if group_by else {}) | groups[key]
        row["cost"] = round(row["cost"], 10)
        rows.append(row)
    return rows


def token_counts(usage: Any) -> tuple[int, int]:
    """(prompt, completion) tokens from a chat, embeddings, images or Responses usage."""
    if usage is None:
        return 0, 0
    if not isinstance(usage, dict):
        usage = usage.model_dump() if hasattr(usage, "model_dump") else dict(usage)
    prompt = usage.get("prompt_tokens") or usage.get("input_tokens") or 0
    completion = usage.get("completion_tokens") or usage.get("output_tokens") or 0
    return int(prompt), int(completion)


class Meter:
    """Measures one call and queues its usage record when it ends."""

    def __init__(
        self,
        recorder: UsageRecorder,
        *,
        request_id: str,
        project: str | None,
        model: Any,
        operation: str,
        stream: bool,
    ) -> None:
        self.recorder = recorder
        self.request_id = request_id
        self.project = project
        self.model = model
        self.operation = operation
        self.stream = stream
        self.prompt_tokens = 0
        self.completion_tokens = 0
        #: The provider's own name for the model that answered, when it gave one.
        self.response_model: str | None = None
        #: Called with the meter and the status when the call ends (telemetry's spans).
        self.observers: list[Callable[[Meter, int], None]] = []
        self._started_at = datetime.now(UTC)
        self._started = asyncio.get_running_loop().time()
        self._done = False

    def count(self, usage: Any) -> None:
        self.prompt_tokens, self.completion_tokens = token_counts(usage)

    def finish(self, status: int) -> None:
        """Queue the record (once); `status` is the HTTP status the caller saw."""
        if self._done:
            return
        self._done = True
        latency = asyncio.get_running_loop().time() - self._started
        self.recorder.record(
            {
                "id": uuid.uuid4().hex,
                "request_id": self.request_id,
                "project": self.project or ANONYMOUS_PROJECT,
                "model": self.model.id,
                "operation": self.operation,
                "timestamp": utc_timestamp(self._started_at),
                "status": status,
                "latency_ms": round(latency * 1000, 1),
                "prompt_tokens": self.prompt_tokens,
                "completion_tokens": self.completion_tokens,
                "total_tokens": self.prompt_tokens + self.completion_tokens,
                "cost": self.model.calculate_cost(self.prompt_tokens, self.completion_tokens),
                "stream": self.stream,
            }
        )
        for observe in self.observers:
            observe(self, status)
