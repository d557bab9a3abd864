"""Projects and their API keys: storage, and authenticating callers.

Only a key's SHA-256 hash is stored. Projects and keys are documents of one
store (the Cosmos `projects` container, or locally a JSON file):

    {"id": "team-a", "type": "project", "name": "Team A", "admin": false}
    {"id": "key-<sha256 hex>", "type": "key", "project": "team-a", "name": "ci",
     "created": "2026-11-26T10:00:00Z", "expires": null, "disabled": false}

Either may carry `limits` (`shared.quota`): a key's apply in addition to its project's.

A key is found by a point read of `key-<hash>`, never by a scan.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import secrets
import time
from collections.abc import Callable, Mapping
from datetime import UTC, date, datetime, timedelta
from datetime import time as dt_time
from pathlib import Path
from typing import Any, Protocol

from . import telemetry
from .cache import StaleWhileRevalidate
from .cosmos import CosmosDatabase
from .domain import Caller
from .errors import AuthenticationFailed, KeyStoreUnavailable
from .quota import scope_of

logger = logging.getLogger(__name__)

KEY_PREFIX = "sk-gw-"
KEY_DOCUMENT_PREFIX = "key-"
#: How long a key look-up is trusted; a disabled key stops working within it.
KEY_CACHE_SECONDS = 60.0
#: How long an unknown key is remembered as unknown.
UNKNOWN_KEY_CACHE_SECONDS = 5.0
#: Most key look-ups remembered at once: random keys must not grow memory without end.
KEY_CACHE_ENTRIES = 10_000


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def new_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def key_document_id(key_hash: str) -> str:
    return KEY_DOCUMENT_PREFIX + key_hash


def utc_now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def expiry(value: Any) -> datetime:
    """The moment a key's `expires` value ends it, or ValueError if it is not a date.

    A date-time without a zone is UTC; a date alone (`2027-01-31`) means the
    end of that day, UTC: the key works through the date it names.
    """
    if not isinstance(value, str):
        raise ValueError(f"'expires' must be an ISO 8601 date or date-time string, got {value!r}")
    try:
        return datetime.combine(date.fromisoformat(value) + timedelta(days=1), dt_time(), UTC)
    except ValueError:
        pass
    except OverflowError:
        return datetime.max.replace(tzinfo=UTC)
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
        return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
    except (ValueError, OverflowError):
        raise ValueError(f"'expires' must be an ISO 8601 date or date-time, got {value!r}") from None


def key_is_usable(document: Mapping[str, Any], now: datetime | None = None) -> bool:
    """Whether a key document lets its caller in. A malformed `expires` is a
    data problem that fails closed: the key is refused, and a warning names
    the key's document id (a hash of the key, never the key)."""
    if document.get("disabled"):
        return False
    expires = document.get("expires")
    if not expires:
        return True
    try:
        ends = expiry(expires)
    except ValueError as exc:
        logger.warning("key %s is refused: %s", document.get("id"), exc)
        return False
    return ends > (now or datetime.now(UTC))


class ProjectStore(Protocol):
    description: str

    async def read(self, document_id: str) -> dict[str, Any] | None: ...

    async def documents(self) -> list[dict[str, Any]]: ...

    async def upsert(self, document: dict[str, Any]) -> None: ...

    async def delete(self, document_id: str) -> None: ...


class FileProjectStore:
    """Projects and keys in a JSON file (the local default), re-read when it changes."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.description = f"projects file {self.path}"
        self._by_id: dict[str, dict[str, Any]] = {}
        self._mtime: float | None = None

    def _load(self) -> dict[str, dict[str, Any]]:
        try:
            mtime = self.path.stat().st_mtime
        except FileNotFoundError:
            return {}
        if mtime != self._mtime:
            documents = json.loads(self.path.read_text(encoding="utf-8"))
            self._by_id = {document["id"]: document for document in documents}
            self._mtime = mtime
        return self._by_id

    def _save(self, by_id: dict[str, dict[str, Any]]) -> None:
        self.path.write_text(json.dumps(list(by_id.values()), indent=2) + "\n", encoding="utf-8")
        self._mtime = None

    async def read(self, document_id: str) -> dict[str, Any] | None:
        return (await asyncio.to_thread(self._load)).get(document_id)

    async def documents(self) -> list[dict[str, Any]]:
        return list((await asyncio.to_thread(self._load)).values())

    async def upsert(self, document: dict[str, Any]) -> None:
        by_id = dict(await asyncio.to_thread(self._load))
        by_id[document["id"]] = document
        await asyncio.to_thread(self._save, by_id)

    async def delete(self, document_id: str) -> None:
        by_id = dict(await asyncio.to_thread(self._load))
        by_id.pop(document_id, None)
        await asyncio.to_thread(self._save, by_id)


class CosmosProjectStore:
    """The Cosmos `projects` container (partition key `/id`)."""

    def __init__(self, database: CosmosDatabase, container_id: str) -> None:
        self.database = database
        self.container_id = container_id
        self.description = f"Cosmos container {container_id}"

    async def read(self, document_id: str) -> dict[str, Any] | None:
        """The document, looked up within its own logical partition (its id).

        A query scoped to one partition rather than `read_item`: as cheap, and the
        npm Cosmos DB server the tests use answers a point read of a missing item
        with a 500 instead of Cosmos' 404.
        """
        async with self.database.timeout():
            container = await self.database.container(self.container_id)
            items = container.query_items(
                "SELECT * FROM c WHERE c.id = @id",
                parameters=[{"name": "@id", "value": document_id}],
                partition_key=document_id,
            )
            async for item in items:
                return item
            return None

    async def documents(self) -> list[dict[str, Any]]:
        async with self.database.timeout():
            container = await self.database.container(self.container_id)
            return [item async for item in container.query_items("SELECT * FROM c")]

    async def upsert(self, document: dict[str, Any]) -> None:
        async with self.database.timeout():
            container = await self.database.container(self.container_id)
            await container.upsert_item(document)

    async def delete(self, document_id: str) -> None:
        async with self.database.timeout():
            container = await self.database.container(self.container_id)
            await container.delete_item(document_id, partition_key=document_id)


def presented_key(headers: Mapping[str, str]) -> str | None:
    """The key from `Authorization: Bearer <key>` or `api-key: <key>`."""
    authorization = headers.get("authorization", "")
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return headers.get("api-key", "").strip() or None


class Authenticator:
    """Turns a request's key into the calling project, with a short cache
    (`StaleWhileRevalidate`).

    A key known good is trusted for `KEY_CACHE_SECONDS`; after that it is
    still served from the cache at once, for up to `stale_seconds`, while one
    background look-up refreshes it, so a key store outage does not stop
    callers the gateway knew a moment ago. An unknown key is remembered as
    unknown for `UNKNOWN_KEY_CACHE_SECONDS`, at most `KEY_CACHE_ENTRIES` look-ups
    at once (callers choose the keys); after that it waits for the store (which
    is bounded by its own timeout) and gets 503 when the store fails.
    """

    def __init__(
        self,
        store: ProjectStore,
        allow_anonymous: bool = False,
        clock: Callable[[], float] = time.monotonic,
        stale_seconds: float = 900.0,
    ) -> None:
        self.store = store
        self.allow_anonymous = allow_anonymous
        #: key hash -> the caller, or None for an unknown key
        self._keys: StaleWhileRevalidate[str, Caller | None] = StaleWhileRevalidate(
            self._read,
            ttl_seconds=KEY_CACHE_SECONDS,
            stale_seconds=stale_seconds,
            miss_seconds=UNKNOWN_KEY_CACHE_SECONDS,
            max_entries=KEY_CACHE_ENTRIES,
            clock=clock,
            label=lambda _: f"a key from {store.description}",
        )

    async def caller(self, headers: Mapping[str, str]) -> Caller:
        """The calling project, also named on the request's span."""
        caller = await self._caller(headers)
        telemetry.set_project(caller.project)
        return caller

    async def _caller(self, headers: Mapping[str, str]) -> Caller:
        key = presented_key(headers)
        found = await self._keys.get(hash_key(key)) if key else None
        if found is not None:
            return found
        if self.allow_anonymous:
            return Caller()
        if key is None:
            raise AuthenticationFailed(
                "No API key provided. Send it as 'Authorization: Bearer <key>' or 'api-key: <key>'."
            )
        raise AuthenticationFailed("The API key is not valid, or it is expired or disabled.")

    async def _read(self, key_hash: str) -> Caller | None:
        try:
            document = await self.store.read(key_document_id(key_hash))
            project = None
            if document is not None and key_is_usable(document):
                project = await self.store.read(document["project"])
        except Exception as exc:
            logger.warning("key look-up in %s failed (%s)", self.store.description, type(exc).__name__)
            raise KeyStoreUnavailable(f"Keys cannot be checked: {self.store.description} is unavailable.") from exc
        if project is None or project.get("disabled"):
            return None
        assert document is not None
        scopes = (scope_of(f"project:{project['id']}", project), scope_of(f"key:{key_hash[:12]}", document))
        return Caller(
            project=project["id"],
            admin=project.get("admin") is True,
            limits=tuple(scope for scope in scopes if scope is not None),
        )
