"""The model catalog: where documents come from, and the in-memory cache."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from .cosmos import CosmosDatabase
from .domain import InvalidCatalogEntry, LLMModel
from .errors import CatalogUnavailable
from .singleflight import SingleFlight

logger = logging.getLogger(__name__)

#: Fields Cosmos adds to every document; not part of the catalog contract.
COSMOS_SYSTEM_FIELDS = frozenset({"_rid", "_self", "_etag", "_attachments"})


class CatalogSource(Protocol):
    """Where catalog documents live. Every method raises when the store fails."""

    description: str

    async def load(self) -> list[dict[str, Any]]: ...

    async def save(self, document: dict[str, Any]) -> None: ...

    async def remove(self, model_id: str) -> bool:
        """Delete a document; False when there was none."""
        ...


class FileCatalogSource:
    """A JSON file holding a list of catalog documents (the local default)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.description = f"catalog file {self.path}"

    async def load(self) -> list[dict[str, Any]]:
        documents = json.loads(await asyncio.to_thread(self.path.read_text, encoding="utf-8"))
        if not isinstance(documents, list):
            raise ValueError(f"{self.path} must hold a JSON list of model documents")
        return documents

    def _write(self, documents: list[dict[str, Any]]) -> None:
        self.path.write_text(json.dumps(documents, indent=2) + "\n", encoding="utf-8")

    async def save(self, document: dict[str, Any]) -> None:
        existing = await self.load() if self.path.exists() else []
        documents = [d for d in existing if d.get("id") != document["id"]]
        await asyncio.to_thread(self._write, [*documents, document])

    async def remove(self, model_id: str) -> bool:
        documents = await self.load()
        kept = [d for d in documents if d.get("id") != model_id]
        if len(kept) == len(documents):
            return False
        await asyncio.to_thread(self._write, kept)
        return True


class CosmosCatalogSource:
    """The `models` container of the Cosmos database."""

    def __init__(self, database: CosmosDatabase, container_id: str) -> None:
        self.database = database
        self.container_id = container_id
        self.description = f"Cosmos container {container_id}"

    async def load(self) -> list[dict[str, Any]]:
        async with self.database.timeout():
            container = await self.database.container(self.container_id)
            return [
                {key: value for key, value in item.items() if key not in COSMOS_SYSTEM_FIELDS}
                async for item in container.query_items("SELECT * FROM c")
            ]

    async def save(self, document: dict[str, Any]) -> None:
        async with self.database.timeout():
            container = await self.database.container(self.container_id)
            await container.upsert_item(document)

    async def remove(self, model_id: str) -> bool:
        from azure.cosmos.exceptions import CosmosResourceNotFoundError

        async with self.database.timeout():
            container = await self.database.container(self.container_id)
            try:
                await container.delete_item(model_id, partition_key=model_id)
            except CosmosResourceNotFoundError:
                return False
            return True


class Catalog:
    """Catalog entries cached in memory.

    The first use waits for a load; after that a stale cache is served while one
    background refresh runs, for up to `stale_seconds` past the TTL while the
    store fails; then callers wait for a load again. A miss triggers at most one
    early refresh (and not more than once per `miss_refresh_interval`), so a
    model added to the store is found before the TTL runs out. A store that
    fails is an error, never an empty catalog.
    """

    def __init__(
        self,
        source: CatalogSource,
        ttl_seconds: float = 60.0,
        *,
        miss_refresh_interval: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
        stale_seconds: float = 900.0,
    ) -> None:
        self.source = source
        self.ttl_seconds = ttl_seconds
        self.stale_seconds = stale_seconds
        self.miss_refresh_interval = miss_refresh_interval
        self._clock = clock
        self._by_id: dict[str, LLMModel] | None = None
        self._by_code: dict[str, LLMModel] = {}
        self._loaded_at = 0.0
        self._loads: SingleFlight[None, None] = SingleFlight(lambda _: self._load())

    async def find(self, model_id: str) -> LLMModel | None:
        """The entry whose `id`, or else whose `code`, is `model_id`."""
        await self._ensure_loaded()
        model = self._lookup(model_id)
        if model is None and self._clock() - self._loaded_at >= self.miss_refresh_interval:
            await self._refresh()
            model = self._lookup(model_id)
        return model

    async def reload(self) -> None:
        """Refresh now (after a change made through this instance)."""
        await self._refresh()

    async def entries(self) -> list[LLMModel]:
        await self._ensure_loaded()
        assert self._by_id is not None
        return list(self._by_id.values())

    def _lookup(self, model_id: str) -> LLMModel | None:
        assert self._by_id is not None
        return self._by_id.get(model_id) or self._by_code.get(model_id)

    async def _ensure_loaded(self) -> None:
        if self._by_id is None or self._clock() - self._loaded_at >= self.ttl_seconds + self.stale_seconds:
            await self._refresh()
        elif self._clock() - self._loaded_at >= self.ttl_seconds:
            self._loads.refresh(None)

    async def _refresh(self) -> None:
        """Wait for a refresh (joining one that runs); raise if the store fails."""
        try:
            await self._loads.get(None)
        except Exception as exc:
            raise CatalogUnavailable(
                f"The model catalog is unavailable ({self.source.description}). Try again later."
            ) from exc

    async def _load(self) -> None:
        try:
            documents = await self.source.load()
        except Exception:
            logger.warning("catalog load from %s failed", self.source.description, exc_info=True)
            raise
        by_id: dict[str, LLMModel] = {}
        for document in documents:
            try:
                model = LLMModel.from_document(document)
            except InvalidCatalogEntry as exc:
                logger.error("skipping invalid %s", exc)
                continue
            by_id[model.id] = model
        self._by_id = by_id
        self._by_code = {}
        for model in by_id.values():
            self._by_code.setdefault(model.code, model)
        self._loaded_at = self._clock()
        logger.info("loaded %d models from %s", len(by_id), self.source.description)
