"""Usage records: one per completed call, written in the background, never lost.

Records wait in a bounded in-memory queue and are written in batches by one
background task. A store that fails is retried with backoff while records
keep queueing; when the queue is full, or at shutdown when the store still
fails, records are logged as structured `usage-record` lines so they can be
recovered from the logs. Writing never delays a caller's response.
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections import deque
from collections.abc import Callable, Iterable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Protocol

from .cosmos import CosmosDatabase

logger = logging.getLogger(__name__)

#: The project recorded for callers without one (ALLOW_ANONYMOUS).
ANONYMOUS_PROJECT = "anonymous"
#: Marks a log line that carries a usage record that could not be stored.
LOST_RECORD_MARKER = "usage-record"


class UsageStore(Protocol):
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


class CosmosUsageStore:
    """The Cosmos `usage` container (partition key `/project`); upserts are idempotent."""

    def __init__(self, database: CosmosDatabase, container_id: str) -> None:
        self.database = database
        self.container_id = container_id
        self.description = f"Cosmos container {container_id}"

    async def write(self, records: list[dict[str, Any]]) -> None:
        container = await self.database.container(self.container_id)
        for record in records:
            await container.upsert_item(record)

    async def query(self, project: str, start: str, end: str) -> list[dict[str, Any]]:
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
    return (moment or datetime.now(timezone.utc)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class UsageRecorder:
    """The bounded queue in front of a usage store, drained by one background task."""

    def __init__(
        self,
        store: UsageStore,
        capacity: int = 10_000,
        batch_size: int = 50,
        retry_initial_seconds: float = 0.5,
        retry_max_seconds: float = 30.0,
    ) -> None:
        self.store = store
        self.capacity = capacity
        self.batch_size = batch_size
        self.retry_initial_seconds = retry_initial_seconds
        self.retry_max_seconds = retry_max_seconds
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

    async def _drain(self) -> None:
        assert self._wake is not None
        delay = self.retry_initial_seconds
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._pending:
                batch = [self._pending[index] for index in range(min(self.batch_size, len(self._pending)))]
                try:
                    await self.store.write(batch)
                except Exception as exc:
                    logger.warning(
                        "writing %d usage records to %s failed (%s); retrying in %.1f s, %d queued",
                        len(batch), self.store.description, type(exc).__name__, delay, len(self._pending),
                    )  # fmt: skip
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, self.retry_max_seconds)
                    continue
                for _ in batch:
                    self._pending.popleft()
                delay = self.retry_initial_seconds

    async def close(self, timeout: float = 10.0) -> None:
        """Write what is queued (at shutdown); log whatever the store will not take."""
        if self._task is not None:
            self._task.cancel()
        try:
            async with asyncio.timeout(timeout):
                while self._pending:
                    batch = [self._pending.popleft() for _ in range(min(self.batch_size, len(self._pending)))]
                    try:
                        await self.store.write(batch)
                    except Exception:
                        self._pending.extendleft(reversed(batch))
                        raise
        except Exception:
            _log_lost(self._pending, f"{self.store.description} is unavailable at shutdown")
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
        #: Called with the meter and the status when the call ends (telemetry's spans).
        self.observers: list[Callable[[Meter, int], None]] = []
        self._started_at = datetime.now(timezone.utc)
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
