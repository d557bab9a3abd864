"""Where the limit counters live: one document per scope, kind and window, written only conditionally.

    {"id": "project:team-a|budget|2026-12", "spent": 12.5, "ttl": 2764800,
     "leases": {"<instance>": {"amount": 0.8, "reserved": 0.2, "expires": 1796640000.0}}}

`spent` is what calls have cost, as the instances flushed it; each lease is
the slice an instance holds (`amount`, of which `reserved` was held by calls in
flight when it wrote) until `expires` (Unix time). Every write is conditional
on the version read (Cosmos: `If-Match` on the ETag; a first write: create,
which conflicts if another instance created it first), so two instances never
both grant the same remainder. The Cosmos container `limits` is partitioned by
`/id`: a partition per counter, and every document expires (`ttl`) a day after its window.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any, Protocol

from .cosmos import CosmosDatabase

#: Seconds a counter document outlives its window.
KEPT_AFTER_WINDOW_SECONDS = 86_400


@dataclass
class CounterState:
    """A counter document as read: `version` is None when there is none yet."""

    spent: float = 0.0
    leases: dict[str, dict[str, float]] = field(default_factory=dict)
    version: str | None = None


class Conflict(Exception):
    """Another instance wrote the counter since it was read."""


class CounterStore(Protocol):
    description: str

    async def read(self, key: str) -> CounterState: ...

    async def write(self, key: str, state: CounterState, ttl_seconds: int) -> str:
        """Store `state` if the counter is still at `state.version`; the new version, or Conflict."""
        ...


class MemoryCounterStore:
    """The counters of one process (file mode: `make run` without Cosmos)."""

    description = "the in-process limit counters"

    def __init__(self) -> None:
        self._documents: dict[str, tuple[CounterState, int]] = {}

    async def read(self, key: str) -> CounterState:
        found = self._documents.get(key)
        if found is None:
            return CounterState()
        state, version = found
        return CounterState(state.spent, copy.deepcopy(state.leases), str(version))

    async def write(self, key: str, state: CounterState, ttl_seconds: int) -> str:
        found = self._documents.get(key)
        current = None if found is None else str(found[1])
        if current != state.version:
            raise Conflict(key)
        version = 1 if found is None else found[1] + 1
        self._documents[key] = (CounterState(state.spent, copy.deepcopy(state.leases)), version)
        return str(version)


class CosmosCounterStore:
    """The Cosmos `limits` container (partition key `/id`)."""

    def __init__(self, database: CosmosDatabase, container_id: str) -> None:
        self.database = database
        self.container_id = container_id
        self.description = f"Cosmos container {container_id}"

    async def read(self, key: str) -> CounterState:
        """A query within the counter's own partition: the npm Cosmos DB server the tests use
        answers a point read of a missing item with a 500 instead of a 404."""
        async with self.database.timeout():
            container = await self.database.container(self.container_id)
            items = container.query_items(
                "SELECT * FROM c WHERE c.id = @id", parameters=[{"name": "@id", "value": key}], partition_key=key
            )
            async for item in items:
                return CounterState(float(item.get("spent", 0.0)), item.get("leases") or {}, item["_etag"])
            return CounterState()

    async def write(self, key: str, state: CounterState, ttl_seconds: int) -> str:
        from azure.core import MatchConditions
        from azure.cosmos.exceptions import CosmosHttpResponseError

        document: dict[str, Any] = {"id": key, "spent": state.spent, "leases": state.leases, "ttl": ttl_seconds}
        async with self.database.timeout():
            container = await self.database.container(self.container_id)
            try:
                if state.version is None:
                    written = await container.create_item(document)
                else:
                    written = await container.replace_item(
                        key, document, etag=state.version, match_condition=MatchConditions.IfNotModified
                    )
            except CosmosHttpResponseError as exc:
                if exc.status_code in (409, 412):
                    raise Conflict(key) from None
                raise
        return str(written["_etag"])
