"""Usage records: one per completed call, written in the background, never lost.

Records wait in a bounded in-memory queue and are written in batches by one
background task. What the store answers decides what happens to a record:

- written (or already written): it leaves the queue;
- refused for good (`RecordRefused`: Cosmos 400, 413): it is dropped and logged;
- the store cannot take anything now (`StoreBusy`: throttled, no permission
  yet, unreachable): the batch stays at the head of the queue and is retried
  with backoff for as long as it takes;
- this record's partition cannot take it now (`RecordDeferred`: Cosmos 403/1014,
  partition full): it goes to the back of the queue, so the records of other
  partitions are written meanwhile, and is retried with backoff;
- any other failure: retried with backoff a bounded number of times, then the
  batch is written record by record, so one record the store will never take
  cannot hold up the others.

A record that is not stored (refused, failing for an unknown reason, the
queue full, shutdown with the store down) is logged in full as a structured
`usage-record not stored` line, from which it can be recovered. Writing never
delays a caller's response.
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections import deque
from collections.abc import Callable, Iterable
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

from .cosmos import CosmosDatabase

logger = logging.getLogger(__name__)

#: The project recorded for callers without one (ALLOW_ANONYMOUS).
ANONYMOUS_PROJECT = "anonymous"
#: Marks a log line that carries a usage record that could not be stored.
LOST_RECORD_MARKER = "usage-record"


class RecordNotStored(Exception):
    """The store did not take one record, for `reason`."""

    def __init__(self, record: dict[str, Any], reason: str) -> None:
        super().__init__(reason)
        self.record = record
        self.reason = reason


class RecordRefused(RecordNotStored):
    """The store refuses one record for good (retrying it cannot help)."""


class RecordDeferred(RecordNotStored):
    """The store cannot take this record now (its partition is full), but may later; others may go in meanwhile."""


class StoreBusy(Exception):
    """The store takes no record now (throttled, no permission yet, unreachable): retry later, drop nothing."""


class UsageStore(Protocol):
    """Writes records and reads them.

    `write` stores records in order and raises, for the first one it did not
    store, `RecordRefused` (never will), `RecordDeferred` (not now) or
    `StoreBusy` (nothing now): every record before that one is stored.
    """

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


#: What Cosmos answers to a document write mean, by status and substatus (`x-ms-substatus`);
#: substatus None: any other. A status not listed is one the store recovers from (StoreBusy).
#: Kinds: "written" (stored before), "refused" (never), "deferred" (this record, later), "busy" (nothing now).
_COSMOS_ANSWERS: dict[tuple[int, int | None], tuple[str, str]] = {
    (400, None): ("refused", "a malformed document"),
    (413, None): ("refused", "a document larger than Cosmos takes (2 MB)"),
    (409, None): ("written", "already written"),
    (403, 1014): ("deferred", "the record's logical partition reached Cosmos's maximum size (20 GB)"),
    (403, 5301): (
        "busy",
        "the identity lacks a Cosmos data-plane role (a role assignment takes minutes to apply after a deploy)",
    ),
    (403, None): ("busy", "forbidden (a firewall, a missing role, or a write region failing over)"),
    (401, None): ("busy", "the credential was not accepted"),
    (404, None): ("busy", "the database or container does not exist (yet)"),
    (429, None): ("busy", "throttled: more request units asked for than the account gives"),
}


def cosmos_answer(status: int, substatus: int | None) -> tuple[str, str]:
    """What a Cosmos error answer to a document write means: its kind (see _COSMOS_ANSWERS) and why."""
    kind, meaning = _COSMOS_ANSWERS.get((status, substatus)) or _COSMOS_ANSWERS.get(
        (status, None), ("busy", "a failure the service recovers from")
    )
    return kind, f"{status}/{substatus or 0} ({meaning})"


#: The container's indexing policy, fitted to `CosmosUsageStore.query`: only what it filters on is indexed.
USAGE_INDEXING_POLICY: dict[str, Any] = {
    "indexingMode": "consistent",
    "automatic": True,
    "includedPaths": [{"path": "/partition/?"}, {"path": "/timestamp/?"}],
    "excludedPaths": [{"path": "/*"}, {"path": '/"_etag"/?'}],
}
#: Longest period one usage report covers: one Cosmos query per day, so a report costs at most 367 queries.
MAX_REPORT_DAYS = 366
#: Day partitions queried at once by one report.
_QUERY_CONCURRENCY = 16


def usage_partition(project: str, day: date | str) -> str:
    """The partition key of a project's records of one UTC day: `<project>|YYYY-MM-DD`."""
    return f"{project}|{day if isinstance(day, str) else day.isoformat()}"


def report_days(start: str, end: str) -> list[date]:
    """The UTC days a report from `start` (inclusive) to `end` (exclusive) reads."""
    first = _parse(start).date()
    last = (_parse(end) - timedelta(microseconds=1)).date()
    return [first + timedelta(days=offset) for offset in range((last - first).days + 1)]


def _parse(timestamp: str) -> datetime:
    return datetime.fromisoformat(timestamp.replace("Z", "+00:00"))


class CosmosUsageStore:
    """The Cosmos usage container, partitioned by project and UTC day (`partition`: `<project>|YYYY-MM-DD`).

    One logical partition holds at most 20 GB (about 40 million records): with a
    partition per project and day, a project would need about 460 records a second
    around the clock to fill one. A report reads one partition per day of its
    period (targeted queries, never a cross-partition scan). Records are created,
    never replaced: a retry of a record already written (409) counts as written.
    """

    def __init__(self, database: CosmosDatabase, container_id: str, retention_days: int | None = None) -> None:
        self.database = database
        self.container_id = container_id
        #: Days after which Cosmos deletes a record (the container's TTL): older days are not queried.
        self.retention_days = retention_days
        self.description = f"Cosmos container {container_id}"

    async def write(self, records: list[dict[str, Any]]) -> None:
        from azure.core.exceptions import AzureError
        from azure.cosmos.exceptions import CosmosHttpResponseError

        try:
            async with self.database.timeout():
                container = await self.database.container(self.container_id)
                for record in records:
                    document = record | {"partition": usage_partition(record["project"], record["timestamp"][:10])}
                    try:
                        await container.create_item(document)
                    except CosmosHttpResponseError as exc:
                        kind, answer = cosmos_answer(exc.status_code or 0, exc.sub_status)
                        reason = f"{self.description} answered {answer}"
                        if kind == "busy":
                            raise StoreBusy(reason) from exc
                        if kind == "refused":
                            raise RecordRefused(record, reason) from exc
                        if kind == "deferred":
                            raise RecordDeferred(record, reason) from exc
        except (TimeoutError, AzureError) as exc:  # unreachable, or no token for the identity (yet)
            raise StoreBusy(f"{self.description} cannot be reached ({type(exc).__name__})") from exc

    async def query(self, project: str, start: str, end: str) -> list[dict[str, Any]]:
        async with self.database.timeout():
            container = await self.database.container(self.container_id)
            limit = asyncio.Semaphore(_QUERY_CONCURRENCY)

            async def one_day(day: date) -> list[dict[str, Any]]:
                partition = usage_partition(project, day)
                async with limit:
                    items = container.query_items(
                        "SELECT * FROM c WHERE c.partition = @partition"
                        " AND c.timestamp >= @start AND c.timestamp < @end",
                        parameters=[
                            {"name": "@partition", "value": partition},
                            {"name": "@start", "value": start},
                            {"name": "@end", "value": end},
                        ],
                        partition_key=partition,
                    )
                    return [item async for item in items]

            days = report_days(start, end)
            if self.retention_days:
                oldest = datetime.now(UTC).date() - timedelta(days=self.retention_days + 1)
                days = [day for day in days if day >= oldest]
            found = await asyncio.gather(*(one_day(day) for day in days))
            return [record for records in found for record in records]


async def copy_usage(database: CosmosDatabase, source_id: str, target: CosmosUsageStore) -> str:
    """Copy every record of the container `source_id` (read only) into `target`.

    For moving from the former `usage` container (partition key `/project`).
    Running it again copies nothing twice: a record already there counts as copied.
    """
    source = await database.container(source_id)
    copied = 0
    refused: list[str] = []
    async for item in source.query_items("SELECT * FROM c"):  # every partition
        record = {key: value for key, value in item.items() if not key.startswith("_") and key != "partition"}
        try:
            await target.write([record])
        except RecordNotStored as exc:
            refused.append(f"{record.get('id')}: {exc.reason}")
            continue
        copied += 1
    lines = [f"copied {copied} usage records from {source_id} into {target.container_id}"]
    if refused:
        lines += [f"{len(refused)} not copied:", *refused]
    return "\n".join(lines)


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
        #: Tries of one batch failing for an unknown reason before it is written record by record
        #: (about 2.5 min with the defaults); StoreBusy and RecordDeferred are retried without end.
        self.max_attempts = max_attempts
        self._pending: deque[dict[str, Any]] = deque()
        #: Ids of records the store deferred since the last pause.
        self._deferred: set[str] = set()
        self._delay = retry_initial_seconds
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        #: The drain's write under way and how many queued records it holds: it may land
        #: although the drain is cancelled (a thread, a request already sent).
        self._writing: tuple[asyncio.Future[None], int] | None = None

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
        self._delay = self.retry_initial_seconds
        attempts = 0
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._pending:
                if self._pending[0]["id"] in self._deferred:
                    # Every queued record was tried since the last pause: wait before the next round.
                    self._deferred.clear()
                    await self._back_off()
                batch = self._head()
                try:
                    await self._write(batch)
                except RecordDeferred as deferred:
                    self._written_before(batch, deferred.record)
                    self._pending.append(self._pending.popleft())
                    self._deferred.add(deferred.record["id"])
                    logger.warning("a usage record waits: %s; %d queued", deferred.reason, len(self._pending))
                    continue
                except RecordRefused as refused:
                    self._written_before(batch, refused.record)
                    self._pending.popleft()
                    _log_lost([refused.record], refused.reason)
                    continue
                except StoreBusy as busy:
                    logger.warning("%s; retrying %d usage records in %.1f s", busy, len(self._pending), self._delay)
                    await self._back_off()
                    continue
                except Exception as exc:
                    attempts += 1
                    if attempts < self.max_attempts:
                        logger.warning(
                            "writing %d usage records to %s failed (%s); retrying in %.1f s, %d queued",
                            len(batch),
                            self.store.description,
                            type(exc).__name__,
                            self._delay,
                            len(self._pending),
                        )
                        await self._back_off()
                        continue
                    await self._write_one_by_one(len(batch), at_shutdown=False)
                else:
                    self._dequeue(len(batch))
                attempts = 0
                self._delay = self.retry_initial_seconds

    async def _write(self, batch: list[dict[str, Any]]) -> None:
        """Write `batch`, shielded: `close` learns from `_writing` whether it landed."""
        writing = asyncio.ensure_future(self.store.write(batch))
        self._writing = (writing, len(batch))
        try:
            await asyncio.shield(writing)
        finally:
            if self._writing is not None and self._writing[0] is writing:
                self._writing = None

    def _dequeue(self, count: int) -> None:
        """Take the first `count` queued records off the queue (they are stored)."""
        for _ in range(count):
            self._pending.popleft()

    async def _back_off(self) -> None:
        await asyncio.sleep(self._delay)
        self._delay = min(self._delay * 2, self.retry_max_seconds)

    def _written_before(self, batch: list[dict[str, Any]], record: dict[str, Any]) -> None:
        """Take off the queue the records of `batch` the store wrote before it stopped at `record`."""
        for written in batch:
            if written is record:
                return
            self._pending.popleft()

    async def _write_one_by_one(self, count: int, at_shutdown: bool) -> None:
        """Write the first `count` queued records singly; log and drop those the store will not take.

        Before shutdown, a record the store cannot take now (busy, deferred) stays queued and ends the pass.
        """
        for _ in range(min(count, len(self._pending))):
            record = self._pending[0]
            try:
                await self.store.write([record])
            except (RecordDeferred, StoreBusy) as exc:
                if not at_shutdown:
                    return
                _log_lost([record], str(exc))
            except RecordRefused as refused:
                _log_lost([record], refused.reason)
            except Exception as exc:
                _log_lost([record], f"{self.store.description} failed with {type(exc).__name__}")
            self._pending.popleft()

    async def close(self, timeout: float = 10.0) -> None:
        """Write what is queued (at shutdown) within `timeout`; log whatever the store will not take.

        A batch the drain was writing is waited for, not written again: once it lands, it is off the queue."""
        writing, self._writing = self._writing, None
        if self._task is not None:
            self._task.cancel()
        try:
            async with asyncio.timeout(timeout):
                if writing is not None:
                    landed, count = writing
                    try:
                        await landed
                    except Exception:
                        pass  # its records are still queued: written (or logged) below
                    else:
                        self._dequeue(count)
                while self._pending:
                    batch = self._head()
                    try:
                        await self.store.write(batch)
                    except Exception:
                        await self._write_one_by_one(len(batch), at_shutdown=True)
                    else:
                        self._dequeue(len(batch))
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


class Report(Protocol):
    """What a provider reports of a call: a whole answer or a stream
    (`providers.base.Answer`, `providers.base.Upstream`)."""

    @property
    def usage(self) -> Any:
        """Its token counts (OpenAI's `usage` shape), if it gave them."""
        ...

    @property
    def model(self) -> str | None:
        """Its own name for the model that answered, if it gave one."""
        ...


class Meter:
    """Measures one call and queues its usage record when it ends, with the
    token counts of the provider's `report` (a stream's are complete only then)."""

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
        #: What the provider that answered reports (set once an attempt succeeds), read when the call ends.
        self.report: Report | None = None
        #: The provider's own name for the model that answered, when it gave one.
        self.response_model: str | None = None
        #: Called with the meter and the status when the call ends (telemetry's spans).
        self.observers: list[Callable[[Meter, int], None]] = []
        self._started_at = datetime.now(UTC)
        self._started = asyncio.get_running_loop().time()
        self._done = False

    def finish(self, status: int) -> None:
        """Queue the record (once), with what the report holds by now; `status`
        is the HTTP status the caller saw."""
        if self._done:
            return
        self._done = True
        if self.report is not None:
            self.prompt_tokens, self.completion_tokens = token_counts(self.report.usage)
            self.response_model = self.report.model
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
